//! What a layer does for those who look inside: a [`Probe`]'s recordings, and anomaly reports
//! that name the layer, direction, time step and gate.
//!
//! Both rest on one tool, the **re-run**: one direction run again op by op
//! ([`run_direction`], the composed path) on a tape of its own, from the same input, initial
//! state and weights, in the group `"layer 1 reverse"`, each step at its time step, keeping
//! every step's state and the values the cell labelled. The composed path is what the fused
//! kernels and compiled programs are tested against (1e-12 in f64), so the re-run sees what
//! they computed, named:
//!
//! - a probe keeps the re-run's values, and seeds its backward with the gradients the real
//!   backward gave the layer's outputs, to read the total gradient of every step's state;
//! - in anomaly mode, a fused kernel or compiled program whose forward made a non-finite value
//!   is re-run with anomaly detection, which names the first op, step and gate that did; and
//!   its node gets an explainer that does the same for its backward.
//!
//! A re-run never moves the thread's random generator: it starts from the state the direction
//! started from (so a cell that draws, e.g. dropout inside `step`, draws the same masks) and
//! puts the generator back as it found it.

use autograd::{grad, Anomaly, Captured, Tape, Var};
use tensor::{Float, Tensor};

use super::forward::{run_direction, StepMasks};
use crate::cell::{Cell, State};
use crate::module::at_rng_state;
use crate::probe::{Pending, Probe, Ran, Recording};

/// The scope group of layer `l`'s direction `dir`: `"layer 0"`, `"layer 1 reverse"`.
pub(super) fn group(l: usize, dir: usize) -> String {
    match dir {
        1 => format!("layer {l} reverse"),
        _ => format!("layer {l}"),
    }
}

/// Every step's state and labelled values, in time order, kept by [`run_direction`].
pub(crate) struct StepLog<T: Float> {
    pub states: Vec<Vec<Var<T>>>,
    pub labelled: Vec<Vec<Captured<T>>>,
}

/// One direction's inputs, as values: what a re-run starts from.
pub(super) struct Replay<'a, T: Float, C: Cell<T>> {
    pub cell: &'a C,
    /// The layer's input, `[T, B, I]`.
    pub x: &'a Tensor<T>,
    pub init: Vec<Tensor<T>>,
    pub masks: Option<&'a StepMasks>,
    pub reverse: bool,
    pub group: String,
    /// The generator's state when the direction started, if its cells may have drawn from it
    /// (the composed path): the re-run starts from it. Either way the re-run leaves the
    /// generator as it found it.
    pub rng: Option<[u64; 4]>,
}

/// A finished re-run: its tape's variables.
struct Rerun<T: Float> {
    outputs: Vec<Var<T>>,
    finals: Vec<Var<T>>,
    init: Vec<Var<T>>,
    log: StepLog<T>,
}

impl<T: Float, C: Cell<T>> Replay<'_, T, C> {
    /// Runs the direction op by op on `tape` (whose modes the caller set).
    fn run(&self, tape: &Tape<T>) -> Rerun<T> {
        at_rng_state(self.rng, || self.run_here(tape))
    }

    /// [`run`](Self::run) with the generator where the caller put it.
    fn run_here(&self, tape: &Tape<T>) -> Rerun<T> {
        let init: Vec<Var<T>> = self.init.iter().map(|v| tape.var(v.clone())).collect();
        let x = tape.constant(self.x.clone());
        let steps = self.x.shape()[0];
        let mut log = StepLog {
            states: vec![vec![]; steps],
            labelled: vec![vec![]; steps],
        };
        let (outputs, last) = tape.scoped(&self.group, || {
            run_direction(
                self.cell,
                &x,
                C::State::from_parts(init.clone()),
                self.masks.map(|m| &m[..]),
                self.reverse,
                Some(&mut log),
            )
        });
        Rerun {
            outputs,
            finals: last.parts(),
            init,
            log,
        }
    }

    /// The first non-finite value of the direction's forward, op by op.
    pub fn first_fault(&self) -> Option<Box<Anomaly>> {
        let tape = Tape::new();
        tape.catch_anomaly(|| self.run(&tape)).err()
    }

    /// Records this direction for `probe`: the re-run's values now, and what its
    /// [`backward`](Probe::backward) needs, seeded from the layer's own `output` (`[T, B, H]`)
    /// and final state `finals`, whose gradients are kept from now on.
    pub fn record(
        &self,
        probe: &Probe<T>,
        (call, layer): (usize, usize),
        ran: Ran,
        lengths: Option<&[usize]>,
        output: &Var<T>,
        finals: &[Var<T>],
    ) {
        let tape = Tape::new();
        let backward = output.tape().grad_enabled() && output.requires_grad();
        let rerun = match backward {
            true => self.run(&tape),
            false => tape.no_grad(|| self.run(&tape)),
        };
        let mut max_diff = 0.0f64;
        for (t, y_t) in rerun.outputs.iter().enumerate() {
            let real = output.value().select(0, t).contiguous().to_vec();
            for (a, b) in real.iter().zip(y_t.value().contiguous().to_vec()) {
                max_diff = max_diff.max((a.to_f64() - b.to_f64()).abs());
            }
        }
        let values = |vars: &Vec<Var<T>>| vars.iter().map(|v| v.value().clone()).collect();
        let states = rerun.log.states.iter().map(values).collect();
        let labelled = (rerun.log.labelled.iter())
            .map(|step| step.iter().map(|c| (c.name, c.value.clone())).collect())
            .collect();
        let rec = Recording {
            call,
            layer,
            reverse: self.reverse,
            ran,
            max_diff,
            lengths: lengths.map(<[usize]>::to_vec),
            batch: self.x.shape()[1],
            states,
            labelled,
            grads: None,
            init_grads: None,
        };
        let pending = backward.then(|| Pending {
            outputs: rerun.outputs,
            finals: rerun.finals,
            states: rerun.log.states,
            init: rerun.init,
            real_output: output.clone().retain_grad(),
            real_finals: finals.iter().map(|f| f.clone().retain_grad()).collect(),
        });
        probe.push(rec, pending);
    }

    /// Gives the tape node that made `output` (a fused kernel's or compiled program's, read
    /// through `narrow`/`reshape` views) an explainer for anomalies in its backward: the
    /// gradient it got, split as its value is (the outputs, then each final state part), seeds
    /// a re-run's backward, which names the first op, step and gate whose gradient is not
    /// finite.
    pub fn explain_backward(&self, output: &Var<T>) {
        let tape = output.tape();
        let Some(node) = kernel_node(tape, output) else {
            return;
        };
        let scratch = Tape::new();
        let rerun = self.run(&scratch);
        tape.on_backward_anomaly(node, move |g| {
            let g = g.contiguous().reshape(&[g.numel()]);
            let mut at = 0;
            let mut take = |shape: &[usize]| {
                let n: usize = shape.iter().product();
                let part = g.narrow(0, at, n).contiguous().reshape(shape);
                at += n;
                part
            };
            let outputs: Vec<&Var<T>> = rerun.outputs.iter().chain(&rerun.finals).collect();
            let seeds: Vec<Tensor<T>> = outputs.iter().map(|v| take(v.shape())).collect();
            let fault = (scratch.catch_anomaly(|| grad(&outputs, &seeds, &[]))).err()?;
            let why = (fault.detail.as_ref()).map_or(String::new(), |d| format!(" ({d})"));
            Some(format!(
                "re-run op by op, the first non-finite gradient comes from the backward of \
                 '{}' at {}{why}",
                fault.op,
                fault.place()
            ))
        });
    }
}

/// The node under `output`'s `narrow`/`reshape` views: the kernel that made it.
fn kernel_node<T: Float>(tape: &Tape<T>, output: &Var<T>) -> Option<usize> {
    let mut node = tape.node(output.id()?)?;
    while matches!(node.op, "narrow" | "reshape" | "select") {
        node = tape.node(*node.inputs.first()?)?;
    }
    Some(node.index)
}

/// Where the re-run of `replays` (a layer's directions) first went non-finite, in words: what a
/// fused kernel's or compiled program's forward anomaly adds to its report.
pub(super) fn locate<T: Float, C: Cell<T>>(replays: &[Replay<'_, T, C>]) -> String {
    match replays.iter().find_map(Replay::first_fault) {
        Some(fault) => format!(
            "re-run op by op, the first non-finite value is made by '{}' at {}",
            fault.op,
            fault.place()
        ),
        None => "re-run op by op, every value is finite: the kernel and the cell's step \
                 disagree here"
            .to_string(),
    }
}

/// In anomaly mode, refuses a non-finite input or initial state before anything runs on it,
/// naming the step and row (or the layer and direction): the root cause, where otherwise the
/// first op to read it would be blamed.
#[track_caller]
pub(super) fn check_inputs<T: Float>(x: &Tensor<T>, init: Option<&[Var<T>]>, directions: usize) {
    let first_bad = |t: &Tensor<T>| t.contiguous().to_vec().iter().position(|v| !v.is_finite());
    let [_, batch, input] = <[usize; 3]>::try_from(x.shape()).expect("[T, B, I]");
    if let Some(at) = first_bad(x) {
        let (t, b) = (at / (batch * input), at / input % batch);
        panic!(
            "anomaly: the input of Layer::forward is NaN or Inf at t = {t}, row {b} (feature {})",
            at % input
        );
    }
    for (k, part) in init.unwrap_or_default().iter().enumerate() {
        let [_, batch, size] = <[usize; 3]>::try_from(part.shape()).expect("[L·D, B, H]");
        if let Some(at) = first_bad(part.value()) {
            let (row, b) = (at / (batch * size), at / size % batch);
            panic!(
                "anomaly: part {k} of the initial state is NaN or Inf for {} (row {b})",
                group(row / directions, row % directions)
            );
        }
    }
}
