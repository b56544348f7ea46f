//! A second thread kept awake between the pieces of a training step.
//!
//! On two threads, a recurrent layer splits its batch in halves, one per thread
//! ([`forward_by_rows`](super::forward_by_rows)), in its forward, again in its backward, and
//! splits its weight gradients' products. Each piece takes 0.05–0.2 ms on the small configs,
//! and `rayon::join` hands the second half to a worker that has gone to sleep since the last
//! piece: measured on the 2-core machine, the half started 55–60 µs after the first, a third
//! of what the split saves. OpenMP runtimes (and so PyTorch) avoid this by letting their
//! threads spin a while after a parallel region before they sleep.
//!
//! [`join`] does the same on top of rayon: after a second half, the worker that ran it stays
//! in [`linger`] for up to [`LINGER`], spinning (and running any other rayon work that turns
//! up, so it never holds the pool up), and the next [`join`] hands its second half straight
//! to it. Without a lingering worker, [`join`] is `rayon::join` and starts one for next time.
//!
//! A posted half is an offer: if the lingering worker has not taken it by the time the first
//! half is done, the caller takes it back and runs it itself, so nothing waits on a worker that
//! is busy elsewhere. Which thread runs a half never changes its result.
//!
//! There is one lingering worker per process, whichever pool it came from: a caller in one
//! pool may hand its second half to a worker of another (rayon work inside that half then
//! runs in that pool). Results are the same; only where the threads come from differs.

use std::any::Any;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a worker waits for the next half before going back to rayon (and to sleep).
/// Covers the gaps of a training step (the loss, the tape's other nodes) with room to spare;
/// OpenMP's default spin is of the same order. (Under Miri, whose clock advances 5 µs per
/// interpreted basic block, a millisecond is too few steps for the worker ever to take a
/// half: there it lingers a second of that clock.)
pub(super) const LINGER: Duration = Duration::from_millis(if cfg!(miri) { 1000 } else { 1 });

/// [`LINGERING`]: nobody lingers.
const NONE: u8 = 0;
/// [`LINGERING`]: a lingering worker has been spawned and has not started yet.
const SPAWNED: u8 = 1;
/// [`LINGERING`]: a worker lingers, and takes what is posted.
const AWAKE: u8 = 2;

static LINGERING: AtomicU8 = AtomicU8::new(NONE);
/// The posted half, or null. Whoever swaps a job out of it (the lingering worker to run it,
/// or its caller to take it back) owns it.
static POSTED: AtomicPtr<Job<'static>> = AtomicPtr::new(std::ptr::null_mut());

thread_local! {
    /// Whether this thread is the lingering worker (inside [`linger`]).
    static IN_LINGER: Cell<bool> = const { Cell::new(false) };
}

/// A half posted to the lingering worker, on its caller's stack.
struct Job<'a> {
    work: &'a (dyn Fn() + Sync),
    /// Set by the worker when `work` has returned (or panicked): its last touch of the job.
    done: AtomicBool,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

/// `(a(), b())`, `b` on a second thread if one is free: the lingering worker if there is one,
/// else a rayon worker (as `rayon::join`), which then lingers for the next call. As with
/// `rayon::join`, both halves always run, and a panic in either reaches the caller (the
/// first half's, if both panic) once both are done.
pub(crate) fn join<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    let b = Mutex::new(Some(b));
    let rb = Mutex::new(None);
    let work = || {
        let b = b.lock().expect("never poisoned").take().expect("run once");
        *rb.lock().expect("never poisoned") = Some(b());
    };
    let job = Job {
        work: &work,
        done: AtomicBool::new(false),
        panic: Mutex::new(None),
    };
    // The lingering worker itself (running this from inside `linger`, through
    // `rayon::yield_now`) cannot take what it posts: it goes to rayon like anyone's.
    let lingerer = rayon::current_num_threads() >= 2
        && !IN_LINGER.get()
        && LINGERING.load(Ordering::Acquire) == AWAKE;
    if lingerer {
        if let Some(posted) = Posted::post(&job) {
            let ra = a();
            if posted.finish() {
                work();
            } else if let Some(payload) = job.panic.lock().expect("never poisoned").take() {
                panic::resume_unwind(payload);
            }
            let rb = rb.lock().expect("never poisoned").take();
            return (ra, rb.expect("b ran"));
        }
    }
    start_lingering();
    let b = b.into_inner().expect("never poisoned").expect("not run");
    rayon::join(a, b)
}

/// A job posted in [`POSTED`] (its address kept to take it back): it must be taken back and
/// run, or seen done, before the frame holding the job ends. Declared after the job (and
/// what the job borrows), so it is dropped first.
struct Posted<'j, 'a>(&'j Job<'a>, *mut Job<'static>);

impl<'j, 'a> Posted<'j, 'a> {
    /// Posts `job` if nothing else is posted. From the moment this succeeds the lingering
    /// worker may be running the job: the returned guard is created in the same step, so
    /// nothing can unwind between the two.
    fn post(job: &'j Job<'a>) -> Option<Self> {
        let ptr = (job as *const Job<'a>).cast_mut().cast::<Job<'static>>();
        let null = std::ptr::null_mut();
        // `then`, not `then_some`: a guard made for a failed post would wait, when dropped,
        // for a job nobody has.
        (POSTED.compare_exchange(null, ptr, Ordering::AcqRel, Ordering::Relaxed))
            .is_ok()
            .then(|| Posted(job, ptr))
    }

    /// Takes the job back if the worker has not started it (true: run it here), or waits for
    /// the worker to finish it (false).
    fn finish(self) -> bool {
        let taken_back = self.take_back();
        if !taken_back {
            while !self.0.done.load(Ordering::Acquire) {
                // Help with other rayon work meanwhile (a worker's own pushed jobs included).
                if rayon::yield_now() != Some(rayon::Yield::Executed) {
                    std::hint::spin_loop();
                }
            }
        }
        std::mem::forget(self);
        taken_back
    }

    fn take_back(&self) -> bool {
        (POSTED.compare_exchange(
            self.1,
            std::ptr::null_mut(),
            Ordering::AcqRel,
            Ordering::Acquire,
        ))
        .is_ok()
    }
}

impl Drop for Posted<'_, '_> {
    /// Unwinding from the first half: the second still runs (here, if the worker has not
    /// taken it; its own panic is dropped, the first half's goes on), and the job must not
    /// outlive this frame.
    fn drop(&mut self) {
        if self.take_back() {
            let _ = panic::catch_unwind(AssertUnwindSafe(|| (self.0.work)()));
            return;
        }
        while !self.0.done.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
    }
}

/// Spawns a lingering worker unless one exists (or is on its way).
fn start_lingering() {
    if rayon::current_num_threads() >= 2
        && (LINGERING.compare_exchange(NONE, SPAWNED, Ordering::AcqRel, Ordering::Relaxed)).is_ok()
    {
        // From a worker, `rayon::spawn` queues on that worker's own deque, where the worker
        // might pop it while it waits inside a join of its own: `linger` then returns at once
        // rather than stall the wait by a millisecond or more.
        let spawner = rayon::current_thread_index();
        rayon::spawn(move || {
            if spawner.is_none() || rayon::current_thread_index() != spawner {
                linger();
            } else {
                LINGERING.store(NONE, Ordering::Release);
            }
        });
    }
}

/// Ends the lingering however [`linger`] ends (it cannot unwind today; if it ever did, a
/// stale `AWAKE` would make every later join post, take back and run its halves in turn).
struct Lingering;

impl Drop for Lingering {
    fn drop(&mut self) {
        IN_LINGER.set(false);
        LINGERING.store(NONE, Ordering::Release);
    }
}

/// A rayon job: waits up to [`LINGER`] for a posted half, runs it, and waits again; returns
/// once [`LINGER`] passes with nothing posted (time spent on other rayon work restarts it).
fn linger() {
    IN_LINGER.set(true);
    LINGERING.store(AWAKE, Ordering::Release);
    let lingering = Lingering;
    let mut deadline = Instant::now() + LINGER;
    loop {
        if run_posted() || rayon::yield_now() == Some(rayon::Yield::Executed) {
            deadline = Instant::now() + LINGER;
            continue;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::hint::spin_loop();
    }
    drop(lingering);
    // A half posted between the last look and `NONE` would otherwise wait to be taken back.
    run_posted();
}

/// Takes the posted half, if there is one, and runs it; whether it did.
fn run_posted() -> bool {
    let ptr = POSTED.load(Ordering::Relaxed);
    let null = std::ptr::null_mut();
    if ptr.is_null()
        || (POSTED.compare_exchange(ptr, null, Ordering::AcqRel, Ordering::Relaxed)).is_err()
    {
        return false;
    }
    // SAFETY: `ptr` was stored in `POSTED` by `Posted::post` (a compare-and-swap with
    // Release; the successful one just above acquires it) and points to the `Job` of a live
    // `join` frame. Having swapped it out, this thread owns the job: that frame's `Posted`
    // guard, created in the same step as the post and dropped before the job, can no longer
    // take it back, so `Posted::finish` (or its `Drop`, when unwinding) waits for `done`
    // before the frame ends. So the reference is live until `done` is set below, and no
    // other thread runs the job.
    let job = unsafe { &*ptr };
    #[cfg(test)]
    tests::RAN_POSTED.fetch_add(1, Ordering::Relaxed);
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| (job.work)())) {
        *job.panic.lock().expect("never poisoned") = Some(payload);
    }
    // Last touch of the job: its frame may end as soon as this is seen.
    job.done.store(true, Ordering::Release);
    true
}

#[cfg(test)]
mod tests {
    // These tests also run under Miri, which checks the unsafe handoff above for undefined
    // behaviour and data races: `.ci/miri` (nightly, so not part of `.ci/run`; it says which
    // flags Miri needs and why). Under Miri they run a few joins each (`cfg!(miri)`), and its
    // clock, not the wall's, bounds `LINGER` and the waits.
    use super::*;
    use rayon::prelude::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize};
    use std::sync::mpsc::{self, RecvTimeoutError};
    use std::sync::Once;

    /// Halves the lingering worker took from [`POSTED`] and ran (all tests together).
    pub(super) static RAN_POSTED: AtomicUsize = AtomicUsize::new(0);

    fn two_threads() -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
    }

    /// Waits (up to 100 [`LINGER`]s, 0.1 s) for a worker to linger; false if none did.
    fn wait_for_lingerer() -> bool {
        let start = Instant::now();
        while start.elapsed() < 100 * LINGER {
            if LINGERING.load(Ordering::Acquire) == AWAKE {
                return true;
            }
            std::hint::spin_loop();
        }
        false
    }

    /// Both halves run once and return their results, whether the second goes to a lingering
    /// worker, to rayon, or is taken back; a half that borrows from the caller's frame sees it.
    /// (Tests in this crate run concurrently, so a lingering worker may come from another
    /// test's pool: any thread will do, so long as every half runs exactly once.)
    #[test]
    fn join_runs_both_halves_once_wherever_they_run() {
        let pool = two_threads();
        let (runs_a, runs_b) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let ran_before = RAN_POSTED.load(Ordering::Relaxed);
        let joins = if cfg!(miri) { 30 } else { 300 };
        pool.install(|| {
            for k in 0..joins {
                if k % 3 == 0 {
                    wait_for_lingerer();
                }
                let data: Vec<usize> = (0..100).map(|i| i * k).collect();
                let (a, b) = join(
                    || {
                        runs_a.fetch_add(1, Ordering::Relaxed);
                        // Long enough for a lingering worker to take the second half.
                        std::thread::sleep(Duration::from_micros(200));
                        data[..50].iter().sum::<usize>()
                    },
                    || {
                        runs_b.fetch_add(1, Ordering::Relaxed);
                        data[50..].iter().sum::<usize>()
                    },
                );
                assert_eq!(a + b, 4950 * k, "join {k}");
            }
        });
        assert_eq!(runs_a.load(Ordering::Relaxed), joins);
        assert_eq!(runs_b.load(Ordering::Relaxed), joins);
        // The lingering worker took posted halves (not only `rayon::join`'s path ran).
        assert!(
            RAN_POSTED.load(Ordering::Relaxed) > ran_before,
            "no half was posted and run"
        );
    }

    /// A panic in either half reaches the caller, and only once the other half has run to its
    /// end, as with `rayon::join` (the second half borrows the caller's frame, so it must not
    /// outlive it either); the team still works afterwards.
    #[test]
    fn a_panic_in_either_half_reaches_the_caller_after_both_finished() {
        let pool = two_threads();
        pool.install(|| {
            for first_panics in [true, false, true, false, true, false] {
                wait_for_lingerer();
                let (started, finished) = (AtomicUsize::new(0), AtomicUsize::new(0));
                let result = panic::catch_unwind(AssertUnwindSafe(|| {
                    join(
                        || {
                            if first_panics {
                                // Give a lingering worker time to take the second half.
                                std::thread::sleep(Duration::from_millis(2));
                                panic!("first");
                            }
                            started.fetch_add(1, Ordering::SeqCst);
                            finished.fetch_add(1, Ordering::SeqCst);
                        },
                        || {
                            if !first_panics {
                                panic!("second");
                            }
                            started.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(5));
                            finished.fetch_add(1, Ordering::SeqCst);
                        },
                    )
                }));
                let payload = result.expect_err("the panic reaches the caller");
                let message = payload.downcast_ref::<&str>().copied();
                assert_eq!(message, Some(if first_panics { "first" } else { "second" }));
                // The other half ran, and to its end.
                let (started, finished) = (
                    started.load(Ordering::SeqCst),
                    finished.load(Ordering::SeqCst),
                );
                assert_eq!((started, finished), (1, 1), "first panics: {first_panics}");
            }
            assert_eq!(join(|| 1, || 2), (1, 2));
        });
    }

    /// Runs `body` on a thread of its own and returns its result, failing (rather than
    /// hanging) if it has not finished within `limit`; a panic in `body` is passed on.
    fn watchdog<T: Send + 'static>(
        limit: Duration,
        body: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (done, finished) = mpsc::channel();
        let thread = std::thread::spawn(move || done.send(body()).expect("the test waits"));
        match finished.recv_timeout(limit) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => panic!("joins hung (no end after {limit:?})"),
            Err(RecvTimeoutError::Disconnected) => match thread.join() {
                Err(payload) => panic::resume_unwind(payload),
                Ok(()) => unreachable!("the body sends before it ends"),
            },
        }
    }

    /// The payload of the stress test's panics: whose join, and which half panicked.
    #[derive(Debug, PartialEq)]
    struct Boom {
        caller: usize,
        k: usize,
        half: Half,
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Half {
        A,
        B,
        /// The second half of a `join` nested in the second half.
        Inner,
    }

    /// Keeps the default panic hook from printing the stress test's (thousands of) expected
    /// panics; any other panic, a failed assertion included, is reported as before.
    fn quiet_booms() {
        static QUIET: Once = Once::new();
        QUIET.call_once(|| {
            let default = panic::take_hook();
            panic::set_hook(Box::new(move |info| {
                if info.payload().downcast_ref::<Boom>().is_none() {
                    default(info);
                }
            }));
        });
    }

    /// What each half of one caller's joins did: runs started and finished per join and
    /// half, and the nested halves and spawns that ran inside them.
    struct Log {
        started: Vec<[AtomicUsize; 2]>,
        finished: Vec<[AtomicUsize; 2]>,
        inner: AtomicUsize,
    }

    impl Log {
        fn new(joins: usize) -> Self {
            let zeros = || (0..joins).map(|_| Default::default()).collect();
            Log {
                started: zeros(),
                finished: zeros(),
                inner: AtomicUsize::new(0),
            }
        }

        fn runs(counts: &[AtomicUsize; 2]) -> [usize; 2] {
            counts.each_ref().map(|n| n.load(Ordering::SeqCst))
        }
    }

    /// The sum of `data` plus `h` per element, computed with the kind of rayon work `kind`
    /// (0: none, 1: `par_iter`, 2: `rayon::join`, 3: this module's `join`, nested, 4:
    /// `rayon::scope` spawns). Each nested half or spawn counts itself in `inner`.
    fn half_sum(kind: usize, data: &[u64], h: u64, inner: &AtomicUsize) -> u64 {
        let plain = |xs: &[u64]| xs.iter().map(|x| x + h).sum::<u64>();
        let counted = |xs: &[u64]| {
            inner.fetch_add(1, Ordering::SeqCst);
            plain(xs)
        };
        let (left, right) = data.split_at(data.len() / 2);
        match kind {
            0 => plain(data),
            1 => data.par_iter().map(|x| x + h).sum(),
            2 => {
                let (l, r) = rayon::join(|| counted(left), || counted(right));
                l + r
            }
            3 => {
                let (l, r) = join(
                    || counted(left),
                    || {
                        inner.fetch_add(1, Ordering::SeqCst);
                        right.par_iter().map(|x| x + h).sum::<u64>()
                    },
                );
                l + r
            }
            _ => {
                let total = AtomicU64::new(0);
                rayon::scope(|s| {
                    for chunk in data.chunks(data.len() / 4) {
                        let total = &total;
                        s.spawn(move |_| {
                            total.fetch_add(counted(chunk), Ordering::SeqCst);
                        });
                    }
                });
                total.into_inner()
            }
        }
    }

    /// Nested halves and spawns `half_sum` runs for `kind`.
    const INNER: [usize; 5] = [0, 0, 2, 2, 4];

    /// What join `k` of caller `id` does. It cycles with `k` (offset per caller): each half's
    /// rayon work (`half_sum`'s kinds, for A with period 5 and for B 25), and whether A, B,
    /// both, or a `join` nested in B panics (period 8), so 200 consecutive joins go through
    /// every combination.
    struct Plan {
        kinds: [usize; 2],
        panics: [bool; 2],
        inner_panics: bool,
    }

    impl Plan {
        fn of(id: usize, k: usize) -> Self {
            let shape = k + 37 * id;
            let p = shape % 8;
            Plan {
                kinds: [shape % 5, shape / 5 % 5],
                panics: [p == 1 || p == 5, p == 3 || p == 5],
                inner_panics: p == 7,
            }
        }

        /// Whose panic reaches the caller: the first half's when both panic.
        fn panic(&self) -> Option<Half> {
            match (self.panics, self.inner_panics) {
                ([true, _], _) => Some(Half::A),
                ([_, true], _) => Some(Half::B),
                (_, true) => Some(Half::Inner),
                _ => None,
            }
        }

        /// Which halves run to their end (do not panic).
        fn to_the_end(&self) -> [usize; 2] {
            [!self.panics[0], !self.panics[1] && !self.inner_panics].map(usize::from)
        }

        /// Nested halves and spawns run inside the two halves.
        fn inner(&self) -> usize {
            let b = if self.inner_panics {
                2
            } else {
                INNER[self.kinds[1]]
            };
            INNER[self.kinds[0]] + b
        }
    }

    /// One caller's `joins` joins (see [`Plan`]), checking each as it returns: both halves
    /// ran exactly once and (unless they panicked) to their end, as many nested halves and
    /// spawns ran inside them as they hold, the results are the sums, and a panic reaches
    /// the caller with its own payload.
    fn caller(id: usize, joins: usize, log: &Log) {
        for k in 0..joins {
            let plan = Plan::of(id, k);
            let data: Vec<u64> = (0..64).map(|i| i * (k as u64 + 1)).collect();
            let counted = |xs: &[u64]| {
                log.inner.fetch_add(1, Ordering::SeqCst);
                xs.iter().map(|x| x + 1).sum::<u64>()
            };
            let half = |which: Half| {
                let h = which as usize;
                log.started[k][h].fetch_add(1, Ordering::SeqCst);
                let sum = if plan.inner_panics && which == Half::B {
                    let (left, right) = data.split_at(32);
                    let (l, ()) = join(
                        || counted(left),
                        || {
                            counted(right);
                            panic::panic_any(Boom {
                                caller: id,
                                k,
                                half: Half::Inner,
                            })
                        },
                    );
                    l
                } else {
                    half_sum(plan.kinds[h], &data, h as u64, &log.inner)
                };
                if plan.panics[h] {
                    panic::panic_any(Boom {
                        caller: id,
                        k,
                        half: which,
                    });
                }
                log.finished[k][h].fetch_add(1, Ordering::SeqCst);
                sum
            };
            let inner_before = log.inner.load(Ordering::SeqCst);
            let result = panic::catch_unwind(AssertUnwindSafe(|| {
                join(|| half(Half::A), || half(Half::B))
            }));
            let at = format!("caller {id}, join {k}");
            match (result, plan.panic()) {
                (Ok((a, b)), None) => {
                    let sum = 2016 * (k as u64 + 1);
                    assert_eq!((a, b), (sum, sum + 64), "{at}");
                }
                (Err(payload), Some(half)) => {
                    let raised = Boom {
                        caller: id,
                        k,
                        half,
                    };
                    assert_eq!(payload.downcast_ref::<Boom>(), Some(&raised), "{at}");
                }
                (Ok(_), Some(half)) => panic!("{at}: the panic in {half:?} was lost"),
                (Err(_), None) => panic!("{at}: a panic nobody raised"),
            }
            assert_eq!(Log::runs(&log.started[k]), [1, 1], "{at}: halves started");
            let finished = Log::runs(&log.finished[k]);
            assert_eq!(finished, plan.to_the_end(), "{at}: halves finished");
            let inner = log.inner.load(Ordering::SeqCst) - inner_before;
            assert_eq!(inner, plan.inner(), "{at}: nested halves and spawns");
        }
    }

    /// Many joins from more callers than cores, all at once: two in a pool of two threads,
    /// two in a pool of three, one in a pool of one, one in rayon's global pool and one on a
    /// thread of no pool, racing for the lingering worker (which may come from any of the
    /// pools). Their halves panic (either, both, or in a nested `join`) and do other rayon
    /// work inside (`par_iter`, `rayon::join`, `rayon::scope` spawns, this `join` nested);
    /// `caller` checks every join, and at the end no half has run again since.
    ///
    /// A hang turns into a failure through the watchdog. One such hang: when posts race,
    /// most find the slot taken and fall back to `rayon::join`, and a guard made for a failed
    /// post (once, `bool::then_some` built it eagerly) waited forever for a job nobody had.
    #[test]
    fn stress_many_callers_panics_and_nested_rayon_work() {
        quiet_booms();
        const CALLERS: usize = 7;
        // Fresh pools each round: a worker may still linger from a pool just dropped.
        let (rounds, joins) = if cfg!(miri) { (1, 24) } else { (3, 1000) };
        // Under Miri, `recv_timeout` reads Miri's clock, which runs far faster than the
        // interpreter: no limit there (a hang just never ends).
        let limit = Duration::from_secs(if cfg!(miri) { 1 << 30 } else { 60 });
        let logs = watchdog(limit, move || {
            let logs: Vec<Log> = (0..rounds * CALLERS).map(|_| Log::new(joins)).collect();
            for round in 0..rounds {
                let pools = [1, 2, 3].map(|threads| {
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap()
                });
                let run = |i: usize| {
                    let id = round * CALLERS + i;
                    caller(id, joins, &logs[id]);
                };
                let two_callers = |pool: &rayon::ThreadPool, callers: [usize; 2]| {
                    pool.install(|| {
                        rayon::scope(|s| {
                            for i in callers {
                                s.spawn(move |_| run(i));
                            }
                        })
                    })
                };
                // Start with a worker lingering (from rayon's global pool), as a training loop
                // has from its second step on.
                join(|| (), || ());
                wait_for_lingerer();
                std::thread::scope(|s| {
                    s.spawn(|| pools[0].install(|| run(0)));
                    s.spawn(|| two_callers(&pools[1], [1, 2]));
                    s.spawn(|| two_callers(&pools[2], [3, 4]));
                    s.spawn(|| rayon::scope(|_| run(5)));
                    s.spawn(|| run(6));
                });
            }
            logs
        });
        // No half ran again after its join returned.
        for (id, log) in logs.iter().enumerate() {
            for k in 0..joins {
                let at = format!("caller {id}, join {k}");
                assert_eq!(Log::runs(&log.started[k]), [1, 1], "{at}");
                assert_eq!(
                    Log::runs(&log.finished[k]),
                    Plan::of(id, k).to_the_end(),
                    "{at}"
                );
            }
        }
    }

    /// On one thread nothing lingers, and `join` runs both halves on the caller.
    #[test]
    fn one_thread_runs_both_halves_here() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        pool.install(|| {
            let me = std::thread::current().id();
            for _ in 0..10 {
                let (a, b) = join(
                    || std::thread::current().id(),
                    || std::thread::current().id(),
                );
                assert_eq!((a, b), (me, me));
            }
        });
    }
}
