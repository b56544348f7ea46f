//! A probe: what a recurrent layer did at every time step, and what the loss made of it.
//!
//! ```text
//! probe.watch(|| layer.forward(&x))     every Layer forward inside is recorded, per layer,
//!                                       direction and step: the state (h_t, c_t), and every
//!                                       value the cell labelled (LSTM i, f, g, o; GRU r, z, n)
//! loss.backward() → grads
//! probe.backward(&grads)                the total gradients ∂L/∂h_t, ∂L/∂c_t of every step
//! probe.direction(layer, dir)           → a Recording: values, gate statistics, gradient norms
//! ```
//!
//! **Total, not direct, gradients.** `∂L/∂h_t` here is the gradient with respect to the state
//! leaving step t, through every path: the output at t, step t + 1, and the final state.
//! (`retain_grad` on a read of the output `y_t` gives only the first of these.) Each state part
//! is differentiated as it leaves the step, the other parts held fixed: the LSTM's `∂L/∂c_t` is
//! what step t + 1 hands back, `f_{t+1} ⊙ δc_{t+1}`, as `retain_grad` on the `c_t` of a
//! PyTorch `LSTMCell` loop gives it; the `δc_t` of the LSTM's backward equations adds
//! `∂L/∂h_t ⊙ o_t ⊙ (1 − tanh² c_t)` to it.
//!
//! **How.** Whichever path ran the layer (a fused kernel, a compiled program or composed ops),
//! the probe re-runs each direction op by op on a tape of its own, from the same inputs,
//! initial state, weights and random generator state, calling the cell's
//! [`step`](crate::Cell::step) inside [`Tape::capture`](autograd::Tape::capture) to see its
//! labelled values. It reports how far the re-run is from the layer's output
//! ([`Recording::max_diff`]: rounding, 1e-15 in f64; the tests hold it under 1e-12).
//! [`Probe::backward`] seeds that tape with the gradients the real backward gave the layer's
//! outputs and final state, and reads the gradient of every step's state
//! ([`autograd::grad`], which leaves the parameters' gradients alone). So the probe's numbers
//! are the same on every path, and the layer itself runs exactly as it would unwatched.
//!
//! **Cost.** Off (no `watch` running), a layer's forward pays one thread-local lookup. On, a
//! watched forward also runs its layer composed, and keeps every step's values (about what the
//! composed path's tape keeps); `backward` runs that tape's backward once. Until
//! [`Probe::backward`] (or [`Probe::clear`]) a recording also keeps the caller's tape alive:
//! watching a training loop without either keeps every step's tape. Custom cells name
//! what the probe should keep with [`Var::label`](autograd::Var::label) inside `step`; the
//! label costs one store when nothing watches.
//!
//! **Variable lengths.** Past a sequence's end its state carries over (as PyTorch's packed
//! sequences): those rows are marked ([`Recording::running`]), left out of norms and statistics,
//! and reported as `None` by the per-row accessors, never as zeros.
//!
//! ```
//! use autograd::Tape;
//! use rnn::{Layer, LayerConfig, Lstm, Probe};
//! use tensor::{Rng, Tensor};
//!
//! let mut rng = Rng::seed_from_u64(0);
//! let lstm: Lstm<f64> = Layer::lstm(LayerConfig::new(3, 4), &mut rng);
//! let x = Tensor::rand_normal(&[6, 2, 3], 0.0, 1.0, &mut rng); // [T, B, I]
//! let tape = Tape::new();
//! let probe = Probe::new();
//! let out = probe.watch(|| lstm.forward(&tape.constant(x.clone())));
//! let loss = out.output.select(0, 5).sum_all(); // read at the last step only
//! let grads = loss.backward();
//! probe.backward(&grads);
//! let rec = probe.direction(0, 0);
//! let dh = rec.grad_norms(0);       // ‖∂L/∂h_t‖ for t = 0..6
//! assert_eq!(dh.len(), 6);
//! assert!(dh[0].unwrap() > 0.0);    // reaches the first step, through the recurrence
//! assert!(dh[0].unwrap() < dh[5].unwrap());
//! let f = rec.saturation("forget_gate").unwrap();
//! assert!(f.low + f.high <= 1.0);
//! ```

use std::any::Any;
use std::cell::{Cell as Counter, RefCell};
use std::rc::Rc;

use autograd::{grad, l2_norm, Gradients, Var};
use tensor::{Float, Tensor};

/// Which of the three paths ran a direction ([`Layer::explain`](crate::Layer::explain)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ran {
    /// A built-in cell's fused kernel.
    Fused,
    /// A compiled program of the cell's `step`.
    Compiled,
    /// The cell's `step`, op by op.
    Composed,
}

/// The fractions of a gate's activations below 0.1 (left-saturated) and above 0.9
/// (right-saturated), as in Karpathy, Johnson & Fei-Fei 2015, "Visualizing and Understanding
/// Recurrent Networks".
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Saturation {
    /// Fraction of activations < 0.1.
    pub low: f64,
    /// Fraction of activations > 0.9.
    pub high: f64,
    /// How many activations were counted (running rows only).
    pub count: usize,
}

/// One direction of one layer over one watched forward.
///
/// ```
/// use autograd::Tape;
/// use rnn::{Gru, Layer, LayerConfig, Probe, Ran};
/// use tensor::{Rng, Tensor};
///
/// let mut rng = Rng::seed_from_u64(0);
/// let gru: Gru<f32> = Layer::gru(LayerConfig::new(2, 3).bidirectional(true), &mut rng);
/// let x = Tensor::rand_normal(&[4, 2, 2], 0.0, 1.0, &mut rng);
/// let tape = Tape::new();
/// let probe = Probe::<f32>::new();
/// probe.watch(|| gru.forward_with(&tape.constant(x), None, Some(&[4, 2])));
/// let rec = probe.direction(0, 1);                   // layer 0, reverse
/// assert_eq!((rec.ran, rec.reverse), (Ran::Fused, true));
/// assert_eq!(rec.labels(), ["reset_gate", "update_gate", "new_gate"]);
/// assert_eq!(rec.labelled("update_gate").unwrap()[0].shape(), &[2, 3]);
/// let trace = rec.unit_trace("h", 1, 0).unwrap();    // row 1 has length 2
/// assert!(trace[1].is_some() && trace[2].is_none()); // past its end: marked, not zero
/// ```
#[derive(Clone)]
pub struct Recording<T: Float> {
    /// Which [`Layer`](crate::Layer) forward inside the watch this was (0 for the first).
    pub call: usize,
    /// The layer (0 at the bottom).
    pub layer: usize,
    /// The reverse direction of a bidirectional layer.
    pub reverse: bool,
    /// Which path the layer ran.
    pub ran: Ran,
    /// The largest |difference| between the layer's outputs and the probe's re-run of them.
    pub max_diff: f64,
    pub(crate) lengths: Option<Vec<usize>>,
    pub(crate) batch: usize,
    /// `states[t][k]`: state part k leaving step t (`[B, size_k]`), t in time order.
    pub(crate) states: Vec<Vec<Tensor<T>>>,
    /// `labelled[t]`: the values `step` labelled at step t, in the order it made them.
    pub(crate) labelled: Vec<Vec<(&'static str, Tensor<T>)>>,
    /// After [`Probe::backward`]: `grads[t][k]` = ∂L/∂(state part k leaving step t).
    pub(crate) grads: Option<Vec<Vec<Tensor<T>>>>,
    /// After [`Probe::backward`]: ∂L/∂(initial state part k).
    pub(crate) init_grads: Option<Vec<Tensor<T>>>,
}

impl<T: Float> Recording<T> {
    /// The number of time steps.
    pub fn steps(&self) -> usize {
        self.states.len()
    }

    /// The batch size.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Whether row `b` was still running at step `t` (false past its length).
    pub fn running(&self, t: usize, b: usize) -> bool {
        self.lengths.as_ref().is_none_or(|l| t < l[b])
    }

    /// State part `k` (0 = h, 1 = the LSTM's c) leaving each step, `[B, size]` per step; rows
    /// past their end hold the carried state (see [`running`](Self::running)).
    pub fn state(&self, k: usize) -> Vec<&Tensor<T>> {
        self.states.iter().map(|s| &s[k]).collect()
    }

    /// The names the cell labelled, in the order of its first step.
    pub fn labels(&self) -> Vec<&'static str> {
        self.labelled
            .first()
            .map(|l| l.iter().map(|(n, _)| *n).collect())
            .unwrap_or_default()
    }

    /// The values labelled `name` at each step (`[B, width]`), or `None` if the cell has no
    /// such label.
    pub fn labelled(&self, name: &str) -> Option<Vec<&Tensor<T>>> {
        self.labelled
            .iter()
            .map(|step| step.iter().find(|(n, _)| *n == name).map(|(_, v)| v))
            .collect()
    }

    /// ∂L/∂(state part k leaving step t) for every t, `[B, size]`: the total gradient, through
    /// the output at t, the later steps and the final state. `None` before
    /// [`Probe::backward`]. Rows past their end hold the gradient of the carried state.
    pub fn grads(&self, k: usize) -> Option<Vec<&Tensor<T>>> {
        let grads = self.grads.as_ref()?;
        Some(grads.iter().map(|g| &g[k]).collect())
    }

    /// ∂L/∂(initial state part k), after [`Probe::backward`].
    pub fn init_grad(&self, k: usize) -> Option<&Tensor<T>> {
        self.init_grads.as_ref().map(|g| &g[k])
    }

    /// ‖∂L/∂(state part k)‖ at each step, over the running rows (`None` at a step where none
    /// runs); all `None` before [`Probe::backward`]. Part 0 is `h_t`, part 1 the LSTM's `c_t`.
    pub fn grad_norms(&self, k: usize) -> Vec<Option<f64>> {
        (0..self.steps())
            .map(|t| {
                let g = &self.grads.as_ref()?[t][k];
                self.running_norm(t, g)
            })
            .collect()
    }

    /// ‖∂L/∂(state part k)‖ of row `b` at each step, `None` past its end.
    pub fn row_grad_norms(&self, k: usize, b: usize) -> Vec<Option<f64>> {
        (0..self.steps())
            .map(|t| {
                let g = &self.grads.as_ref()?[t][k];
                self.running(t, b)
                    .then(|| l2_norm(&g.select(0, b).contiguous()))
            })
            .collect()
    }

    /// The norm of the running rows of `v` (`[B, W]`) at step `t`.
    fn running_norm(&self, t: usize, v: &Tensor<T>) -> Option<f64> {
        let rows: Vec<usize> = (0..self.batch).filter(|&b| self.running(t, b)).collect();
        if rows.is_empty() {
            return None;
        }
        let sq: f64 = rows
            .iter()
            .map(|&b| l2_norm(&v.select(0, b).contiguous()).powi(2))
            .sum();
        Some(sq.sqrt())
    }

    /// Unit `unit` of row `b` of the value labelled `name` (or, for `"h"` and `"c"`, the state
    /// parts 0 and 1) at each step: `None` past the row's end. `None` if there is no such
    /// value.
    pub fn unit_trace(&self, name: &str, b: usize, unit: usize) -> Option<Vec<Option<f64>>> {
        let values = self.series(name)?;
        Some(
            values
                .iter()
                .enumerate()
                .map(|(t, v)| {
                    let width = v.shape()[1];
                    let at = b * width + unit;
                    (self.running(t, b))
                        .then(|| v.contiguous().as_slice().expect("contiguous")[at].to_f64())
                })
                .collect(),
        )
    }

    /// The labelled values `name`, or the state for `"h"` / `"c"`.
    fn series(&self, name: &str) -> Option<Vec<&Tensor<T>>> {
        match name {
            "h" => Some(self.state(0)),
            "c" if self.states.first().is_some_and(|s| s.len() > 1) => Some(self.state(1)),
            _ => self.labelled(name),
        }
    }

    /// How saturated the gate labelled `name` is, over every step, running row and unit.
    /// `None` if the cell labelled no such value.
    pub fn saturation(&self, name: &str) -> Option<Saturation> {
        let per_unit = self.unit_saturation(name)?;
        let count: usize = per_unit.iter().map(|s| s.count).sum();
        let weighted = |f: fn(&Saturation) -> f64| {
            per_unit.iter().map(|s| f(s) * s.count as f64).sum::<f64>() / count.max(1) as f64
        };
        Some(Saturation {
            low: weighted(|s| s.low),
            high: weighted(|s| s.high),
            count,
        })
    }

    /// [`saturation`](Self::saturation) per unit (over steps and running rows): the scatter of
    /// Karpathy et al.'s figure 4.
    pub fn unit_saturation(&self, name: &str) -> Option<Vec<Saturation>> {
        let values = self.labelled(name)?;
        let width = values.first()?.shape()[1];
        let mut counts = vec![(0usize, 0usize, 0usize); width];
        for (t, v) in values.iter().enumerate() {
            let v = v.contiguous();
            let data = v.as_slice().expect("contiguous");
            for b in (0..self.batch).filter(|&b| self.running(t, b)) {
                for (u, x) in data[b * width..(b + 1) * width].iter().enumerate() {
                    let x = x.to_f64();
                    counts[u].0 += usize::from(x < 0.1);
                    counts[u].1 += usize::from(x > 0.9);
                    counts[u].2 += 1;
                }
            }
        }
        Some(
            counts
                .into_iter()
                .map(|(low, high, n)| Saturation {
                    low: low as f64 / n.max(1) as f64,
                    high: high as f64 / n.max(1) as f64,
                    count: n,
                })
                .collect(),
        )
    }
}

/// The re-run a recording keeps until [`Probe::backward`]: its tape, and the variables to seed
/// and read.
pub(crate) struct Pending<T: Float> {
    /// The re-run's per-step outputs `[B, H]` (zero past a row's end) and final state parts.
    pub outputs: Vec<Var<T>>,
    pub finals: Vec<Var<T>>,
    /// `states[t][k]` and the initial state's parts, on the re-run's tape.
    pub states: Vec<Vec<Var<T>>>,
    pub init: Vec<Var<T>>,
    /// The layer's own output `[T, B, H]` and final state parts, on the caller's tape, whose
    /// gradients seed the re-run's backward.
    pub real_output: Var<T>,
    pub real_finals: Vec<Var<T>>,
}

/// A recording, and its re-run until [`Probe::backward`] has read it.
type Entry<T> = (Recording<T>, Option<Pending<T>>);

struct Inner<T: Float> {
    recordings: RefCell<Vec<Entry<T>>>,
    calls: Counter<usize>,
}

/// Records what [`Layer`](crate::Layer)s do inside [`watch`](Self::watch); see the
/// [module docs](self). Cheap to clone (a shared handle).
pub struct Probe<T: Float> {
    inner: Rc<Inner<T>>,
}

impl<T: Float> Clone for Probe<T> {
    fn clone(&self) -> Self {
        Probe {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Float> Default for Probe<T> {
    fn default() -> Self {
        Self::new()
    }
}

thread_local! {
    /// The probes whose `watch` is running on this thread, innermost last.
    static WATCHING: RefCell<Vec<Rc<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

impl<T: Float> Probe<T> {
    /// An empty probe.
    pub fn new() -> Self {
        Probe {
            inner: Rc::new(Inner {
                recordings: RefCell::new(Vec::new()),
                calls: Counter::new(0),
            }),
        }
    }

    /// Runs `f`, recording every [`Layer`](crate::Layer) forward (of this float type) it makes
    /// on this thread, as the next calls after those already recorded.
    pub fn watch<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Unwatch;
        impl Drop for Unwatch {
            fn drop(&mut self) {
                WATCHING.with(|w| w.borrow_mut().pop());
            }
        }
        let me: Rc<dyn Any> = self.inner.clone();
        WATCHING.with(|w| w.borrow_mut().push(me));
        let _unwatch = Unwatch;
        f()
    }

    /// The probe watching this thread for `T`, if any (what a layer's forward asks).
    pub(crate) fn watching() -> Option<Probe<T>> {
        WATCHING.with(|w| {
            let w = w.borrow();
            let last = w.iter().rev().find(|p| p.is::<Inner<T>>())?;
            let inner = last.clone().downcast::<Inner<T>>().ok()?;
            Some(Probe { inner })
        })
    }

    /// The next call's index.
    pub(crate) fn next_call(&self) -> usize {
        let call = self.inner.calls.get();
        self.inner.calls.set(call + 1);
        call
    }

    pub(crate) fn push(&self, recording: Recording<T>, pending: Option<Pending<T>>) {
        self.inner
            .recordings
            .borrow_mut()
            .push((recording, pending));
    }

    /// Fills in the total gradients of every recording made on `grads`' tape, from `grads`, the
    /// result of the backward that followed the watched forwards. Recordings already filled,
    /// and those of other tapes, are left alone, so it may be called once per backward when
    /// several tapes were watched.
    ///
    /// # Panics
    /// If recordings wait for gradients but none of them is on `grads`' tape (the gradients of
    /// another computation: no numbers would be right).
    #[track_caller]
    pub fn backward(&self, grads: &Gradients<T>) {
        let mut recs = self.inner.recordings.borrow_mut();
        let waiting = recs.iter().filter(|(_, p)| p.is_some()).count();
        let on_this_tape = |p: &Option<Pending<T>>| {
            p.as_ref()
                .is_some_and(|p| grads.same_tape_as(&p.real_output))
        };
        if waiting > 0 && !recs.iter().any(|(_, p)| on_this_tape(p)) {
            panic!(
                "Probe::backward: these gradients come from another tape than the {waiting} \
                 watched forward(s) waiting for theirs"
            );
        }
        for (rec, pending) in recs.iter_mut().filter(|(_, p)| on_this_tape(p)) {
            let Some(p) = pending.take() else { continue };
            let seed = |v: &Var<T>| {
                grads
                    .get(v)
                    .cloned()
                    .unwrap_or_else(|| Tensor::zeros(v.shape()))
            };
            let dy = seed(&p.real_output);
            let mut seeds: Vec<Tensor<T>> = (0..p.outputs.len())
                .map(|t| dy.select(0, t).contiguous())
                .collect();
            seeds.extend(p.real_finals.iter().map(seed));
            let outputs: Vec<&Var<T>> = p.outputs.iter().chain(&p.finals).collect();
            let wrt: Vec<&Var<T>> = p.states.iter().flatten().chain(&p.init).collect();
            let mut got = grad(&outputs, &seeds, &wrt).into_iter();
            let mut next = |v: &Var<T>| {
                got.next()
                    .flatten()
                    .unwrap_or_else(|| Tensor::zeros(v.shape()))
            };
            let per_step = p
                .states
                .iter()
                .map(|parts| parts.iter().map(&mut next).collect())
                .collect();
            rec.grads = Some(per_step);
            rec.init_grads = Some(p.init.iter().map(&mut next).collect());
        }
    }

    /// Every recording, in the order they were made (per call: layer by layer, forward
    /// direction first).
    pub fn recordings(&self) -> Vec<Recording<T>> {
        (self.inner.recordings.borrow().iter())
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// The recording of `layer`, direction `dir` (1 = reverse) of the last watched call.
    ///
    /// # Panics
    /// If nothing was recorded there.
    #[track_caller]
    pub fn direction(&self, layer: usize, dir: usize) -> Recording<T> {
        let recs = self.inner.recordings.borrow();
        let last = recs.iter().map(|(r, _)| r.call).max();
        recs.iter()
            .map(|(r, _)| r)
            .find(|r| Some(r.call) == last && r.layer == layer && usize::from(r.reverse) == dir)
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "Probe::direction: no recording of layer {layer}, direction {dir} (watched \
                     calls: {}; run the layer's forward inside `watch`)",
                    self.inner.calls.get()
                )
            })
    }

    /// Forgets every recording.
    pub fn clear(&self) {
        self.inner.recordings.borrow_mut().clear();
        self.inner.calls.set(0);
    }
}
