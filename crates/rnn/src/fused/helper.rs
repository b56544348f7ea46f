//! Two threads for one sequence's per-step products.
//!
//! A recurrent layer's time steps are sequential, and each step's product
//! (`h_{t−1} · W_hhᵀ` forward, `dP_t · W_hh` backward) is too small to hand to rayon: waking a
//! sleeping worker and joining it costs more than half the product (measured). What pays is
//! what OpenMP runtimes do: keep a second thread *spinning* for the whole sequence, and give it
//! half of every step's product. The loop thread posts the step's left-hand side, computes the
//! first half of the output columns itself, waits for the helper's half and adds it in. Gate
//! arithmetic stays on the loop thread.
//!
//! Each output element is computed exactly as by one thread (the panels of a packed product
//! are independent), so results are bit-identical with or without the helper.
//!
//! A batch of 16 rows or more does without it, in inference and in training: two threads
//! each run the loop for half of the rows (`forward_by_rows` in `mod.rs`), which also splits
//! the gate arithmetic and never meets in the sequence. The helper serves the rest: batches
//! too small to halve, sequences too short to split, and the two directions of a
//! bidirectional layer, which are not split by rows (their forwards run one per thread, and
//! the helper takes part only once one of them is done and a thread is free; their
//! backwards run one after the other, each with the helper).
//!
//! The helper is a rayon job (`rayon::join`'s second half). If no thread is free to take it,
//! the loop thread does every product alone and runs the job itself at the end, which then
//! finds the sequence finished and returns: the helper is an offer, never a dependency, so
//! this cannot deadlock. While waiting for the loop to reach its first step it runs other
//! rayon work (the GRU's input projection's pieces), so it never idles a core the big matmuls need.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use tensor::ops::packed::{gemm_packed, gemm_packed_panels, PackedMat, NR};
use tensor::Float;

/// Per-step products below this many multiply-adds stay on one thread: the hand-off costs
/// about a microsecond, a product of 2²¹ multiply-adds about ten.
const HELPER_MACS: usize = 1 << 21;

/// The shared state of the loop thread and its helper, for products `a · b` with `a` of
/// `m` rows and `b` one of a few right sides fixed for the sequence.
pub(crate) struct StepHelper<'a, T: Float> {
    bs: Vec<&'a PackedMat<T>>,
    m: usize,
    /// Set by the loop thread at its first product: the input projection is done.
    begun: AtomicBool,
    /// Set by the helper once it serves products.
    ready: AtomicBool,
    /// Set by the loop thread when the sequence is done (or unwinding).
    stop: AtomicBool,
    /// Tickets of the products posted by the loop thread, claimed (by the helper, or taken
    /// back by the loop thread) and finished by the helper.
    posted: AtomicUsize,
    claimed: AtomicUsize,
    done: AtomicUsize,
    /// The posted product: which right side, and the left side (`m × k`, at the start of the
    /// buffer); and the helper's columns of the result.
    a: Mutex<(usize, Vec<T>)>,
    c: Mutex<Vec<T>>,
}

/// Runs `work` with a helper for products by the right sides `bs` (`m` rows on the left)
/// when there is a second thread and the products are large enough; `work` gets `None`
/// otherwise.
pub(crate) fn with_step_helper<T: Float, R: Send>(
    bs: &[&PackedMat<T>],
    m: usize,
    work: impl FnOnce(Option<&StepHelper<'_, T>>) -> R + Send,
) -> R {
    let macs: usize = bs.iter().map(|b| m * b.rows() * b.cols()).sum();
    if rayon::current_num_threads() < 2 || macs < HELPER_MACS || bs.iter().any(|b| b.panels() < 2) {
        return work(None);
    }
    let helper = StepHelper::new(bs, m);
    let (result, ()) = rayon::join(
        || {
            let _stop = StopOnDrop(&helper.stop);
            work(Some(&helper))
        },
        || helper.serve(),
    );
    result
}

/// Tells the helper to return when the loop thread's work ends, normally or by a panic.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl<'a, T: Float> StepHelper<'a, T> {
    fn new(bs: &[&'a PackedMat<T>], m: usize) -> Self {
        let most = |size: fn(&PackedMat<T>) -> usize| bs.iter().map(|b| size(b)).max();
        let a_len = m * most(|b| b.rows()).unwrap_or(0);
        let c_len = m * most(|b| b.cols() - split(b) * NR).unwrap_or(0);
        StepHelper {
            bs: bs.to_vec(),
            m,
            begun: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            posted: AtomicUsize::new(0),
            claimed: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            a: Mutex::new((0, vec![T::ZERO; a_len])),
            c: Mutex::new(vec![T::ZERO; c_len]),
        }
    }

    /// `c = a · bs[0] + beta · c` (`c` row-major `m × n`), half of it on the helper if it is
    /// serving and claims the product in time.
    pub fn product(&self, a: &[T], beta: T, c: &mut [T]) {
        self.product_by(0, a, beta, c);
    }

    /// `c = a · bs[which] + beta · c`, like [`product`](Self::product).
    pub fn product_by(&self, which: usize, a: &[T], beta: T, c: &mut [T]) {
        let b = self.bs[which];
        self.begun.store(true, Ordering::Release);
        if !self.ready.load(Ordering::Acquire) {
            gemm_packed(a, self.m, b, beta, c);
            return;
        }
        {
            let mut posted = self.a.lock().expect("helper input");
            posted.0 = which;
            posted.1[..a.len()].copy_from_slice(a);
        }
        let ticket = self.posted.fetch_add(1, Ordering::AcqRel) + 1;
        let (n, split) = (b.cols(), split(b));
        gemm_packed_panels(a, self.m, b, 0..split, beta, c, n);
        // Not claimed yet (the helper is descheduled, say, on a busy machine)? Take it back
        // and do it here, rather than wait.
        if self.claim(ticket) {
            let (first, panels) = (split * NR, split..b.panels());
            gemm_packed_panels(a, self.m, b, panels, beta, &mut c[first..], n);
            return;
        }
        wait(|| self.done.load(Ordering::Acquire) >= ticket);
        let theirs = self.c.lock().expect("helper output");
        let (first, width) = (split * NR, n - split * NR);
        for (c_row, t_row) in c.chunks_exact_mut(n).zip(theirs.chunks_exact(width)) {
            for (x, &v) in c_row[first..].iter_mut().zip(t_row) {
                // The same expression as a one-thread product's store: v + beta · c.
                *x = if beta == T::ZERO { v } else { v + beta * *x };
            }
        }
    }

    /// Claims product `ticket` for whoever calls first; false if the other side has it.
    fn claim(&self, ticket: usize) -> bool {
        self.claimed
            .compare_exchange(ticket - 1, ticket, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The helper's side: run other rayon work until the loop begins, then serve products
    /// until it stops.
    fn serve(&self) {
        while !self.begun.load(Ordering::Acquire) {
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            if rayon::yield_now() != Some(rayon::Yield::Executed) {
                std::thread::yield_now();
            }
        }
        self.ready.store(true, Ordering::Release);
        let mut seen = 0;
        loop {
            wait(|| {
                self.posted.load(Ordering::Acquire) > seen || self.stop.load(Ordering::Acquire)
            });
            if self.posted.load(Ordering::Acquire) == seen {
                return; // stopped, nothing pending
            }
            seen += 1;
            if !self.claim(seen) {
                continue; // the loop thread took it back
            }
            {
                let posted = self.a.lock().expect("helper input");
                let (b, mut c) = (self.bs[posted.0], self.c.lock().expect("helper output"));
                let (panels, width) = (split(b)..b.panels(), b.cols() - split(b) * NR);
                let a = &posted.1[..self.m * b.rows()];
                gemm_packed_panels(a, self.m, b, panels, T::ZERO, &mut c, width);
            }
            self.done.store(seen, Ordering::Release);
        }
    }
}

/// The loop thread computes panels `..split(b)` of a product by `b`, the helper the rest.
fn split<T: Float>(b: &PackedMat<T>) -> usize {
    b.panels() / 2
}

/// Waits until `ready()`: spins for a few microseconds, then yields the core between checks
/// (on a machine busier than its cores, a spinning wait would only delay the thread it
/// waits for).
fn wait(ready: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !ready() {
        if spins < 1 << 14 {
            spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor::ops::matmul::MatRef;

    fn data(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 31 + seed * 17) % 101) as f32 - 50.0) / 50.0)
            .collect()
    }

    /// A step loop of products `c_t = a_t · b + beta · c_t`, step `t` by `bs[t % bs.len()]`,
    /// with whatever helper it gets.
    fn steps(
        bs: &[&PackedMat<f32>],
        m: usize,
        beta: f32,
        n_steps: usize,
    ) -> (Vec<Vec<f32>>, usize) {
        with_step_helper(bs, m, |helper| {
            let outs = (0..n_steps)
                .map(|t| {
                    let which = t % bs.len();
                    let b = bs[which];
                    let a = data(m * b.rows(), t);
                    let mut c = data(m * b.cols(), t + 1000);
                    match helper {
                        Some(h) => h.product_by(which, &a, beta, &mut c),
                        None => gemm_packed(&a, m, b, beta, &mut c),
                    }
                    c
                })
                .collect();
            (outs, helper.map_or(0, |h| h.done.load(Ordering::Acquire)))
        })
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool")
    }

    /// Runs the step loop on one thread and on two, and checks they give the same bits; on a
    /// machine busy with other tests the helper thread may miss a whole short run, so this
    /// retries until it has served at least one product.
    fn same_bits_with_the_helper(bs: &[&PackedMat<f32>], m: usize, beta: f32, n_steps: usize) {
        let (alone, none) = pool(1).install(|| steps(bs, m, beta, n_steps));
        assert_eq!(none, 0, "one thread: no helper");
        let two = pool(2);
        for _ in 0..100 {
            let (helped, served) = two.install(|| steps(bs, m, beta, n_steps));
            assert_eq!(alone, helped);
            if served > 0 {
                return;
            }
        }
        panic!("the helper never served a product in 100 runs");
    }

    /// On two threads the helper takes half of the steps' products, and every result has the
    /// bits of a one-thread product, for `beta` 0 and 1 and an odd number of panels.
    #[test]
    fn the_helper_serves_products_with_the_same_bits() {
        let (m, k, n) = (32, 256, 33 * 32 + 5);
        let b = PackedMat::pack(MatRef::new(&data(k * n, 7), k, n));
        for beta in [0.0, 1.0] {
            same_bits_with_the_helper(&[&b], m, beta, 120);
        }
    }

    /// Products by two right sides of different shapes (a GRU's inference: `x_t · W_ihᵀ` and
    /// `h · W_hhᵀ`), alternating: the helper uses the one posted, with the same bits.
    #[test]
    fn the_helper_serves_several_right_sides() {
        let m = 16;
        let (k1, n1, k2, n2) = (64, 3 * 200, 200, 3 * 200);
        let b1 = PackedMat::pack(MatRef::new(&data(k1 * n1, 2), k1, n1));
        let b2 = PackedMat::pack(MatRef::new(&data(k2 * n2, 5), k2, n2));
        same_bits_with_the_helper(&[&b1, &b2], m, 1.0, 100);
    }

    /// A helper that is "ready" but never runs: the loop thread takes every product back and
    /// computes the helper's columns itself, with the same bits.
    #[test]
    fn unclaimed_products_are_taken_back() {
        for (m, k, n) in [(5, 7, 3 * NR + 1), (1000, 32, 4 * 32)] {
            take_back(m, k, n);
        }
    }

    fn take_back(m: usize, k: usize, n: usize) {
        let b = PackedMat::pack(MatRef::new(&data(k * n, 1), k, n));
        let helper = StepHelper::new(&[&b], m);
        helper.ready.store(true, Ordering::Release);
        for (t, beta) in [(0, 0.0), (1, 1.0), (2, 1.0)] {
            let a = data(m * k, t);
            let mut want = data(m * n, t + 50);
            let mut got = want.clone();
            gemm_packed(&a, m, &b, beta, &mut want);
            helper.product(&a, beta, &mut got);
            assert_eq!(got, want);
        }
        assert_eq!(helper.done.load(Ordering::Acquire), 0);
    }

    /// Two sequences at once on two threads (a bidirectional layer): each may find no free
    /// thread for its helper; both finish with the right results, nothing waits forever.
    #[test]
    fn busy_pools_run_without_the_helper() {
        let (m, k, n) = (32, 256, 1024);
        let b = PackedMat::pack(MatRef::new(&data(k * n, 3), k, n));
        let (want, _) = pool(1).install(|| steps(&[&b], m, 1.0, 50));
        let ((x, _), (y, _)) = pool(2)
            .install(|| rayon::join(|| steps(&[&b], m, 1.0, 50), || steps(&[&b], m, 1.0, 50)));
        assert_eq!(x, want);
        assert_eq!(y, want);
    }
}
