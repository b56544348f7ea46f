//! The forward pass over a whole sequence: [`Layer::forward`] and
//! [`Layer::forward_with`].
//!
//! Per layer, bottom to top, each direction runs one of three ways over the same inputs:
//!
//! - **fused** (the built-in cells, the switch on, a non-empty batch): the cell's kernel runs
//!   the whole sequence as one tape node per direction ([`fused::run`]);
//! - **compiled** (any other cell whose `step` compiles, the switch on): the traced step runs
//!   the whole sequence as one tape node per direction ([`compiled::run`]);
//! - **composed** (any cell): [`run_direction`] calls [`Cell::step`] once per time step,
//!   forwards or backwards, each step's ops recorded on the tape.
//!
//! All three give the same values and gradients. The directions' outputs are concatenated on the
//! feature axis (forward first), dropout is applied between layers in training mode, and the
//! final states of every layer and direction are stacked in the order l0, l0_reverse, l1, ….
//!
//! Variable lengths follow PyTorch's packed sequences: [`step_masks`] gives a `[batch, 1]`
//! validity mask for each step where some sequence has ended (and `None` where none has, so
//! full batches pay nothing); past its end a sequence keeps its state and outputs zeros, so
//! its final state is the one at its own last step, and the reverse direction starts there.
//! Internally, time is always the first axis: a batch-first input is transposed on the way
//! in and the output on the way out, and an unbatched input runs as a batch of one.

use std::sync::Arc;

use autograd::{Tape, Var};
use tensor::{Float, Tensor};

use super::inspect::{check_inputs, group, locate, Replay, StepLog};
use super::{Layer, LayerOutput};
use crate::cell::{check_step_state, Cell, State};
use crate::compiled;
use crate::dropout::dropout;
use crate::fused::{self, step_order};
use crate::module::{at_rng_state, rng_state};
use crate::probe::{Probe, Ran};

/// What one direction of a layer returns: its output `[T, B, H]` and final state's parts.
type DirOut<T> = (Var<T>, Vec<Var<T>>);

impl<T: Float, C: Cell<T>> Layer<T, C> {
    /// Runs the layer from zero initial states over full-length sequences.
    #[track_caller]
    pub fn forward(&self, x: &Var<T>) -> LayerOutput<T, C::State> {
        self.forward_with(x, None, None)
    }

    /// Runs the layer.
    ///
    /// - `x`: `[seq, batch, input]` (`[batch, seq, input]` if batch_first), or unbatched
    ///   `[seq, input]`, as PyTorch accepts it, which runs as a batch of one.
    /// - `init`: the initial state, each part `[layers·D, batch, hidden]` (zeros if `None`);
    ///   `[layers·D, hidden]` for an unbatched input.
    /// - `lengths`: the length of each sequence in the batch, for padded batches. As with
    ///   PyTorch's packed sequences, steps past a sequence's end leave its state unchanged and
    ///   output zeros, its final state is taken at its own last step, and the reverse direction
    ///   starts at its own end.
    ///
    /// # Panics
    /// If `x` is not 3-D (or 2-D) with `input_size` features, the sequence is empty (as
    /// PyTorch), `init` has the wrong shape, or a length is 0 or longer than the sequence, or
    /// lengths are given for an unbatched input.
    #[track_caller]
    pub fn forward_with(
        &self,
        x: &Var<T>,
        init: Option<&C::State>,
        lengths: Option<&[usize]>,
    ) -> LayerOutput<T, C::State> {
        self.run(x, init, lengths, false)
    }

    /// [`forward_with`](Self::forward_with), where `ended_ok` also allows lengths of 0
    /// (sequences that ended before this chunk of [`tbptt_with`](Self::tbptt_with)): they keep
    /// their initial state and output zeros.
    #[track_caller]
    pub(super) fn run(
        &self,
        x: &Var<T>,
        init: Option<&C::State>,
        lengths: Option<&[usize]>,
        ended_ok: bool,
    ) -> LayerOutput<T, C::State> {
        let cfg = &self.config;
        if !matches!(x.rank(), 2 | 3) || x.shape().last() != Some(&cfg.input_size) {
            panic!(
                "Layer::forward: input of shape {:?} does not fit input_size {} (expected \
                 {}, or [seq, input] unbatched)",
                x.shape(),
                cfg.input_size,
                if cfg.batch_first {
                    "[batch, seq, input]"
                } else {
                    "[seq, batch, input]"
                }
            );
        }
        let time_dim = usize::from(cfg.batch_first && x.rank() == 3);
        if x.shape()[time_dim] == 0 {
            panic!(
                "Layer::forward: the sequence is empty (input of shape {:?})",
                x.shape()
            );
        }
        if x.rank() == 2 {
            return self.forward_unbatched(x, init, lengths);
        }
        let x = if cfg.batch_first {
            x.transpose(0, 1)
        } else {
            x.clone()
        };
        let (seq, batch) = (x.shape()[0], x.shape()[1]);
        let masks = lengths.map(|l| step_masks(l, seq, batch, ended_ok));
        let init_parts = init.map(|s| self.check_init(s, batch));
        let d = cfg.num_directions();

        // An empty batch runs composed: its outputs are empty either way.
        let fused = self.is_fused() && batch > 0;
        let tape = x.tape().clone();
        let probe = Probe::<T>::watching().map(|p| {
            let call = p.next_call();
            (p, call)
        });
        // Anomaly mode, or inside the caller's `catch_anomaly` (which turns it on too).
        let (anomaly, catching) = (tape.anomaly_detection(), tape.catching_anomaly());
        if anomaly && !catching {
            check_inputs(x.value(), init_parts.as_deref(), d);
        }
        let mut input = x.clone();
        let mut finals: Vec<C::State> = Vec::with_capacity(cfg.num_layers * d);
        for (l, layer_cells) in self.cells.iter().enumerate() {
            let init_of = |dir: usize, cell: &C| match &init_parts {
                Some(parts) => {
                    C::State::from_parts(parts.iter().map(|p| p.select(0, l * d + dir)).collect())
                }
                None => cell.zero_state(&tape, batch),
            };
            let inits: Vec<C::State> = (layer_cells.iter().enumerate())
                .map(|(dir, cell)| init_of(dir, cell))
                .collect();
            // The generator's state as each direction starts (the composed path's cells may
            // draw from it), so that a re-run draws what the direction drew.
            let mut rng_at: Vec<Option<[u64; 4]>> = vec![None; layer_cells.len()];
            // The directions as values, for a probe's or an anomaly's re-run.
            let x_value = input.value().clone();
            let replays = |rng_at: &[Option<[u64; 4]>]| -> Vec<Replay<'_, T, C>> {
                (layer_cells.iter().zip(&inits).enumerate())
                    .map(|(dir, (cell, init))| Replay {
                        cell: &**cell,
                        x: &x_value,
                        init: init.parts().iter().map(|v| v.value().clone()).collect(),
                        masks: masks.as_ref(),
                        reverse: dir == 1,
                        group: group(l, dir),
                        rng: rng_at[dir],
                    })
                    .collect()
            };
            // In anomaly mode a kernel's fault is caught, and raised with the re-run's account
            // of where it is; inside the caller's catch_anomaly, that account is added to it.
            let checked = |run: &mut dyn FnMut() -> Vec<DirOut<T>>| match (anomaly, catching) {
                (true, false) => (tape.catch_anomaly(run))
                    .unwrap_or_else(|a| panic!("{a}; {}", locate(&replays(&[None, None])))),
                (true, true) => {
                    tape.annotate_anomaly(run, |_| Some(locate(&replays(&[None, None]))))
                }
                (false, _) => run(),
            };
            let programs: Option<Vec<_>> = match fused || batch == 0 {
                true => None,
                false => (0..layer_cells.len())
                    .map(|dir| self.program(l, dir, batch))
                    .collect(),
            };
            let (ran, mut results): (Ran, Vec<DirOut<T>>) = if fused {
                let results = checked(&mut || {
                    let directions = (layer_cells.iter().zip(&inits).enumerate())
                        .map(|(dir, (cell, init))| fused::Direction {
                            fused: cell.fused().expect("checked by is_fused"),
                            init: init.parts(),
                            reverse: dir == 1,
                            group: group(l, dir),
                            recompute: cfg.recompute,
                        })
                        .collect();
                    fused::run(&input, directions, lengths)
                });
                (Ran::Fused, results)
            } else if let Some(programs) = &programs {
                let results = checked(&mut || {
                    (programs.iter().zip(&inits).enumerate())
                        .map(|(dir, (program, init))| {
                            tape.scoped(&group(l, dir), || {
                                let (inits, reverse) = (init.parts(), dir == 1);
                                compiled::run(
                                    &input,
                                    program,
                                    &inits,
                                    lengths,
                                    reverse,
                                    cfg.recompute,
                                )
                            })
                        })
                        .collect()
                });
                (Ran::Compiled, results)
            } else {
                // With recompute, segments of steps whose saved values the tape frees and
                // makes again in the backward (one segment of all the steps without).
                let segment = match tape.grad_enabled() {
                    true => cfg.recompute.segment_len(seq),
                    false => seq,
                };
                let results = (layer_cells.iter().zip(&inits).enumerate())
                    .map(|(dir, (cell, init))| {
                        rng_at[dir] = Some(rng_state());
                        let (out, last) = tape.scoped(&group(l, dir), || {
                            let (out, last) = run_segments(
                                cell,
                                &input,
                                init.clone(),
                                masks.as_deref(),
                                dir == 1,
                                segment,
                            );
                            (Var::stack(&out.iter().collect::<Vec<_>>(), 0), last)
                        });
                        (out, last.parts())
                    })
                    .collect();
                (Ran::Composed, results)
            };
            if anomaly && ran != Ran::Composed {
                for (replay, (out, _)) in replays(&rng_at).iter().zip(&results) {
                    replay.explain_backward(out);
                }
            }
            if let Some((probe, call)) = &probe {
                // The final state as nodes of its own (on the composed path its parts are the
                // last step's, whose gradient also holds the last output's), so that their
                // gradients are the final state's alone.
                results = (results.into_iter())
                    .map(|(out, last)| (out, last.iter().map(|p| p.reshape(p.shape())).collect()))
                    .collect();
                for (replay, (out, last)) in replays(&rng_at).iter().zip(&results) {
                    replay.record(probe, (*call, l), ran, lengths, out, last);
                }
            }
            let outputs: Vec<Var<T>> = results
                .into_iter()
                .map(|(out, last)| {
                    finals.push(C::State::from_parts(last));
                    out
                })
                .collect();
            input = match &outputs[..] {
                [only] => only.clone(),
                [forward, backward] => Var::concat(&[forward, backward], 2),
                _ => unreachable!("one or two directions"),
            };
            if l + 1 < cfg.num_layers && self.is_training() && cfg.dropout > 0.0 {
                input = dropout(&input, cfg.dropout);
            }
        }
        let mut output = input;
        if cfg.batch_first {
            output = output.transpose(0, 1);
        }
        let parts = (0..C::State::num_parts())
            .map(|k| {
                let per_cell: Vec<Var<T>> = finals.iter().map(|s| s.parts()[k].clone()).collect();
                Var::stack(&per_cell.iter().collect::<Vec<_>>(), 0)
            })
            .collect();
        LayerOutput {
            output,
            state: C::State::from_parts(parts),
        }
    }

    /// An unbatched input `[seq, input]` as a batch of one (as PyTorch runs it).
    #[track_caller]
    fn forward_unbatched(
        &self,
        x: &Var<T>,
        init: Option<&C::State>,
        lengths: Option<&[usize]>,
    ) -> LayerOutput<T, C::State> {
        if lengths.is_some() {
            panic!(
                "Layer::forward: lengths are for a padded batch, not an unbatched input of shape \
                 {:?}",
                x.shape()
            );
        }
        let rows = self.config.num_layers * self.config.num_directions();
        let sizes = self.cells[0][0].state_sizes();
        let init = init.map(|s| {
            let parts = s.parts();
            for (k, (p, size)) in parts.iter().zip(sizes).enumerate() {
                if p.shape() != [rows, size] {
                    panic!(
                        "Layer::forward: for an unbatched input, initial state part {k} must be \
                         [layers·directions, hidden] = [{rows}, {size}], not {:?}",
                        p.shape()
                    );
                }
            }
            C::State::from_parts(parts.iter().map(|p| p.unsqueeze(1)).collect())
        });
        let batch_dim = usize::from(!self.config.batch_first);
        let out = self.forward_with(&x.unsqueeze(batch_dim), init.as_ref(), None);
        let parts = out.state.parts().iter().map(|p| p.squeeze(1)).collect();
        LayerOutput {
            output: out.output.squeeze(batch_dim),
            state: C::State::from_parts(parts),
        }
    }

    #[track_caller]
    fn check_init(&self, init: &C::State, batch: usize) -> Vec<Var<T>> {
        let rows = self.config.num_layers * self.config.num_directions();
        let parts = init.parts();
        for (k, (p, size)) in parts.iter().zip(self.cells[0][0].state_sizes()).enumerate() {
            let expected = [rows, batch, size];
            if p.shape() != expected {
                panic!(
                    "Layer::forward: initial state part {k} has shape {:?}, expected {expected:?} \
                     ([layers·directions, batch, size])",
                    p.shape()
                );
            }
        }
        parts
    }
}

/// Per-step validity masks `[batch, 1]` for variable lengths; `None` at steps where every
/// sequence is still running (so full batches pay nothing).
pub(crate) type StepMasks = Vec<Option<Tensor<bool>>>;

#[track_caller]
pub(super) fn step_masks(lengths: &[usize], seq: usize, batch: usize, ended_ok: bool) -> StepMasks {
    if lengths.len() != batch {
        panic!(
            "Layer::forward: {} lengths for a batch of {batch}",
            lengths.len()
        );
    }
    let shortest = usize::from(!ended_ok);
    if let Some(&bad) = lengths.iter().find(|&&l| l < shortest || l > seq) {
        panic!("Layer::forward: length {bad} is not in {shortest}..={seq} (the sequence length)");
    }
    (0..seq)
        .map(|t| {
            let valid: Vec<bool> = lengths.iter().map(|&l| t < l).collect();
            (!valid.iter().all(|&v| v)).then(|| Tensor::from_vec(valid, &[batch, 1]))
        })
        .collect()
}

/// Unrolls one cell over the steps of `x` (`[T, B, I]`), forwards or backwards. Returns the
/// hidden output at every step (in time order) and the final state.
///
/// Each step's ops are recorded [at its time step](autograd::Tape::at_step) (in the group the
/// caller opened), so anomaly reports and pictures name the step. In anomaly mode each step
/// runs inside [`catch_anomaly`](autograd::Tape::catch_anomaly) and a fault is raised at the
/// step's end, when the cell has [labelled](autograd::Var::label) the value that went wrong.
/// With `log`, every step's state and labelled values are kept there (a probe's re-run).
pub(super) fn run_direction<T: Float, C: Cell<T>>(
    cell: &C,
    x: &Var<T>,
    state: C::State,
    masks: Option<&[Option<Tensor<bool>>]>,
    reverse: bool,
    log: Option<&mut StepLog<T>>,
) -> (Vec<Var<T>>, C::State) {
    let mut outputs: Vec<Option<Var<T>>> = vec![None; x.shape()[0]];
    let all = 0..x.shape()[0];
    let state = run_steps(cell, x, state, masks, reverse, all, &mut outputs, log);
    (
        outputs
            .into_iter()
            .map(|o| o.expect("every step ran"))
            .collect(),
        state,
    )
}

/// [`run_direction`] in segments of `segment` steps (in the order they are visited), each
/// [checkpointed](autograd::Tape::checkpoint): the tape frees what a segment's ops saved, and
/// the backward runs the segment again from the state that entered it (kept here, with the
/// random generator's state, for a cell that draws), so the layer keeps one state per
/// segment. The gradients are the same bits as without segments. One segment of all the
/// steps is [`run_direction`].
fn run_segments<T: Float, C: Cell<T>>(
    cell: &Arc<C>,
    x: &Var<T>,
    mut state: C::State,
    masks: Option<&[Option<Tensor<bool>>]>,
    reverse: bool,
    segment: usize,
) -> (Vec<Var<T>>, C::State) {
    let seq = x.shape()[0];
    if segment >= seq {
        return run_direction(&**cell, x, state, masks, reverse, None);
    }
    let mut outputs: Vec<Option<Var<T>>> = vec![None; seq];
    for start in (0..seq).step_by(segment) {
        let ks = start..(start + segment).min(seq);
        // What the re-run needs: the input, the entering state, the masks, the generator.
        let rng = rng_state();
        let x_value = (x.value().clone(), x.requires_grad());
        let entering: Vec<(Tensor<T>, bool)> = (state.parts().iter())
            .map(|p| (p.value().clone(), p.requires_grad()))
            .collect();
        let masks_owned: Option<Vec<Option<Tensor<bool>>>> = masks.map(<[_]>::to_vec);
        let (again_cell, again_ks) = (cell.clone(), ks.clone());
        let again = move |tape: &Tape<T>| {
            // Leaves where the forward's values were recorded, constants where not, so that
            // the same ops are recorded.
            let leaf = |(v, recorded): (Tensor<T>, bool)| match recorded {
                true => tape.var(v),
                false => tape.constant(v),
            };
            let x = leaf(x_value);
            let state = C::State::from_parts(entering.into_iter().map(leaf).collect());
            let mut outputs = vec![None; seq];
            let masks = masks_owned.as_deref();
            at_rng_state(Some(rng), || {
                run_steps(
                    &*again_cell,
                    &x,
                    state,
                    masks,
                    reverse,
                    again_ks,
                    &mut outputs,
                    None,
                )
            });
        };
        let tape = x.tape();
        state = tape.checkpoint(
            |_| run_steps(&**cell, x, state, masks, reverse, ks, &mut outputs, None),
            again,
        );
    }
    (
        outputs
            .into_iter()
            .map(|o| o.expect("every step ran"))
            .collect(),
        state,
    )
}

/// The steps at positions `ks` of the visiting order of [`run_direction`], from `state`,
/// writing each step's output to `outputs[t]`; returns the state after them.
#[allow(clippy::too_many_arguments)]
fn run_steps<T: Float, C: Cell<T>>(
    cell: &C,
    x: &Var<T>,
    mut state: C::State,
    masks: Option<&[Option<Tensor<bool>>]>,
    reverse: bool,
    ks: std::ops::Range<usize>,
    outputs: &mut [Option<Var<T>>],
    mut log: Option<&mut StepLog<T>>,
) -> C::State {
    let batch = x.shape()[1];
    let zero = Tensor::<T>::zeros(&[]);
    let sizes = cell.state_sizes();
    let tape = x.tape();
    let raise_per_step = tape.anomaly_detection() && !tape.catching_anomaly();
    let logging = log.is_some();
    // The names of the state's parts as they leave a step, in a re-run.
    const NAMES: [&str; 4] = ["state[0] = h_t", "state[1]", "state[2]", "state[3]"];
    let seq = x.shape()[0];
    for t in step_order(seq, reverse).skip(ks.start).take(ks.len()) {
        let step = || {
            let x_t = x.select(0, t);
            let (next, labelled) = match logging {
                true => tape.capture(|| cell.step(&x_t, &state)),
                false => (cell.step(&x_t, &state), vec![]),
            };
            check_step_state(&next, batch, &sizes);
            // Past its end, a sequence keeps its state and outputs zeros.
            let valid = masks.and_then(|m| m[t].as_ref());
            let mut parts = next.parts();
            if let Some(valid) = valid {
                parts = (parts.iter().zip(state.parts()))
                    .map(|(new, old)| Var::where_cond(valid, new, &old))
                    .collect();
            }
            if logging {
                // Nodes of their own for the state leaving the step, so that the gradient a
                // probe reads is the one handed back by the later steps and the output, with
                // the other parts held fixed (not also through h_t = o ⊙ tanh(c_t) inside
                // the step).
                parts = (parts.iter().enumerate())
                    .map(|(k, p)| p.reshape(p.shape()).label(NAMES[k.min(3)]))
                    .collect();
            }
            let next = C::State::from_parts(parts);
            let output = match valid {
                Some(valid) => Var::where_cond(valid, next.hidden(), &zero),
                None => next.hidden().clone(),
            };
            (output, next, labelled)
        };
        let (output, next, labelled) = tape.at_step(t, || match raise_per_step {
            true => tape.catch_anomaly(step).unwrap_or_else(|a| panic!("{a}")),
            false => step(),
        });
        if let Some(log) = log.as_deref_mut() {
            log.states[t] = next.parts();
            log.labelled[t] = labelled;
        }
        outputs[t] = Some(output);
        state = next;
    }
    state
}
