//! Fused kernels for the built-in cells: a whole sequence, forward and backward, as one tape
//! node per layer and direction (through the custom-op API).
//!
//! Each kernel is shaped like min-char-rnn: the forward loop keeps, per step, only what the
//! backward equations need (LSTM: the four activated gates and the cell state; GRU: r, z, n
//! and W_hn h + b_hn; RNN: the output), and the backward loop runs the steps in reverse,
//! mirroring the forward line by line. Around the loops, the work is in large matrix products:
//!
//! ```text
//! forward:   P_t = [x_t | h_{t−1}] [W_ih | W_hh]ᵀ   one [B, I + H] × [I + H, G·H] product
//!                                                 per step (LSTM, RNN)
//!            P   = X W_ihᵀ                one [T·B, I] × [I, 3H] product for all steps
//!            P_t = h_{t−1} W_hhᵀ          and one [B, H] × [H, 3H] per step, kept apart (GRU
//!                                         training; its inference makes x_t W_ihᵀ per step)
//! backward:  dh_{t−1} = dP_t W_hh        one [B, G·H] × [G·H, H] product per step
//!            dX = dP W_ih,  dW_ih = dPᵀ X,  dW_hh = dPᵀ H_in,  db = Σ dP   (a chunk of
//!                                         steps at once: about 1024 rows)
//! ```
//!
//! The files, in the order a call meets them:
//!
//! - here: [`run`] takes a layer's directions, runs their forwards and records each as one
//!   node (`record`), whose backward is `backward.rs`;
//! - `seq.rs`: [`Seq`], one direction as plain slices, what every loop reads; [`Rows`], where
//!   a loop writes; [`Saved`], what a forward keeps for its backward;
//! - `loops.rs`: the loops' entry points, compiled for the widest vector instructions;
//! - `rnn.rs`, `lstm.rs`, `gru.rs`, `lstm_proj.rs`: each cell's loops, equations first;
//! - `split.rs`: two threads by halves of the batch; `helper.rs`: a second thread for each
//!   step's product instead, where the batch is too small to halve; `team.rs`: the two-thread
//!   handoff both use;
//! - `backward.rs`: the backward, a chunk of steps at a time: the loop over the chunk's steps
//!   (recomputing a segment's activations first, with [`Recompute`]), then `grads.rs`, the
//!   chunk's share of the weights' gradients and its rows of the input's;
//! - `pack.rs`: the weights packed for the per-step products, and their cache for inference.
//!
//! Invariants:
//!
//! - A node's value is `[T + parts, B, H]`: the outputs, then the final state's parts (flat
//!   for the projected LSTM, whose `h` and `c` differ in width). The backward reads the
//!   entering states from it, so no copy of them is kept.
//! - The backward holds no `[T, B, G·H]` array beyond what the forward kept: one chunk's gate
//!   gradients at a time. With recompute the forward keeps only each segment's entering
//!   state, and the gradients are the same bits as without (`backward.rs`).
//! - Past a sequence's end (`lengths`), the state carries over, the output is zero and the
//!   gate gradients are zero, so those steps add nothing to any gradient.
//! - Wherever work is split across threads (batch halves, weight-gradient rows, the step
//!   helper), each output element is the same chain of operations as on one thread: results
//!   are bit-identical at any thread count (`tests/all/fused.rs`).
//! - Arithmetic is the composed cells' in the same order, with the exact `tanh`/sigmoid for
//!   `f64` (so the two paths agree to ~1e-15) and fast vectorisable ones for `f32`.
//!
//! Why per-step products: inference makes each `P_t` where it is used, in cache, and never
//! holds a `[T, B, G·H]` buffer (105 MB of fresh pages per call on the large LSTM, whose
//! forward went from 249 to 173 ms without it); LSTM and RNN training do the same, because the
//! packed kernel with `k = I + H` runs closer to its peak than one gemm over all inputs with
//! `k = I`. The measurements behind these choices, and the alternatives tried, are in
//! `docs/performance.md`.

mod backward;
mod grads;
mod gru;
mod helper;
mod loops;
mod lstm;
mod lstm_proj;
mod pack;
mod rnn;
mod seq;
mod split;
pub(crate) mod team;

use std::sync::Arc;

use autograd::{Param, Var};
use tensor::ops::packed::PackedMat;
use tensor::{Float, Tensor};

use crate::init::GateParams;
use crate::layer::Recompute;
use crate::nonlinearity::Nonlinearity;
use backward::backward;
pub(crate) use backward::chunk_steps;
use loops::forward;
pub(crate) use pack::PackCache;
use pack::{pack_step_weights, pack_t, Packs};
pub(crate) use seq::{running, step_order, time_at, times_at};
use seq::{Forward, Saved, Seq};
use split::forward_by_rows;
pub use tensor::pool::release_buffers;

/// Which fused kernel a built-in cell uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Kind {
    Rnn(Nonlinearity),
    Lstm,
    Gru,
}

impl Kind {
    /// Gates per hidden unit: the rows of `weight_ih` are `gates · hidden`.
    fn gates(self) -> usize {
        match self {
            Kind::Rnn(_) => 1,
            Kind::Lstm => 4,
            Kind::Gru => 3,
        }
    }

    /// State components: (h) or (h, c).
    fn parts(self) -> usize {
        match self {
            Kind::Lstm => 2,
            _ => 1,
        }
    }

    /// Multiply-adds of one forward pass over `s`: the input and recurrent products.
    fn macs<T: Float>(self, s: &Seq<'_, T>) -> usize {
        s.steps * s.batch * self.gates() * s.hidden * (s.input + s.hidden)
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Rnn(_) => "rnn_sequence",
            Kind::Lstm => "lstm_sequence",
            Kind::Gru => "gru_sequence",
        }
    }
}

/// A built-in cell's offer of a fused kernel (see [`Cell::fused`](crate::Cell::fused)).
/// Opaque: only the built-in cells make one.
pub struct Fused<'a, T: Float> {
    pub(crate) kind: Kind,
    pub(crate) params: &'a GateParams<T>,
    pub(crate) packs: &'a PackCache<T>,
}

/// Owned copies of one direction's inputs, so its forward can run on another thread and its
/// backward later.
struct Inputs<T: Float> {
    x: Tensor<T>,
    init: Vec<Tensor<T>>,
    w_ih: Tensor<T>,
    w_hh: Tensor<T>,
    /// Dropped once the forward has run, unless a recompute needs it again.
    w_step: Option<Arc<PackedMat<T>>>,
    w_in: Option<Arc<PackedMat<T>>>,
    b_ih: Option<Tensor<T>>,
    b_hh: Option<Tensor<T>>,
    lengths: Option<Vec<usize>>,
    reverse: bool,
    keep: bool,
    /// Steps per recompute segment (all of them: keep every step's activations).
    segment: usize,
}

fn slice<T: Float>(t: &Tensor<T>) -> &[T] {
    t.as_slice().expect("made contiguous")
}

impl<T: Float> Inputs<T> {
    fn seq(&self) -> Seq<'_, T> {
        let [steps, batch, input] = <[usize; 3]>::try_from(self.x.shape()).expect("3-D input");
        Seq {
            x: slice(&self.x),
            x_stride: batch * input,
            steps,
            batch,
            input,
            hidden: self.w_hh.shape()[1],
            w_ih: slice(&self.w_ih),
            w_hh: slice(&self.w_hh),
            w_step: self.w_step.as_deref(),
            w_in: self.w_in.as_deref(),
            b_ih: self.b_ih.as_ref().map(slice),
            b_hh: self.b_hh.as_ref().map(slice),
            h0: slice(&self.init[0]),
            c0: self.init.get(1).map(slice),
            lengths: self.lengths.as_deref(),
            reverse: self.reverse,
            keep: self.keep,
            segment: self.segment,
            chunk: chunk_steps(batch),
            row0: 0,
            all_rows: batch,
            w_hh_packed: None,
            helper: None,
        }
    }
}

/// Below this many multiply-adds per sequence, [`in_pool`] runs the work where it is.
const IN_POOL_MACS: usize = 1 << 25;

/// Runs `work` on one of rayon's worker threads when the pool has several and the caller is
/// not one of them; the caller sleeps until it is done.
///
/// Why: with glibc, the large buffers a sequence allocates on a thread outside the pool, and
/// the workers fill, were handed back to the kernel after each call and faulted in again on
/// the next (a GRU forward at [32, 100, 128, 256] from `main`: 23 ms on 2 threads against 12
/// on 1; allocated on a worker, they are reused and it takes 12 ms). Small sequences split
/// nothing across threads, so they stay put and skip the hop.
fn in_pool<R: Send>(macs: usize, work: impl FnOnce() -> R + Send) -> R {
    if macs >= IN_POOL_MACS
        && rayon::current_num_threads() > 1
        && rayon::current_thread_index().is_none()
    {
        rayon::scope(|_| work())
    } else {
        work()
    }
}

/// One direction to run: the cell's kernel and the variables it reads.
pub(crate) struct Direction<'a, T: Float> {
    pub fused: Fused<'a, T>,
    pub init: Vec<Var<T>>,
    pub reverse: bool,
    /// The [scope](autograd::Tape::scoped) its node is recorded in (`"layer 0 reverse"`).
    pub group: String,
    /// What its training forward keeps ([`Recompute`]).
    pub recompute: Recompute,
}

/// The inputs of one direction's tape node, in the order its backward returns their
/// gradients: `x`, the initial state's parts, `w_ih`, `w_hh`, [`b_ih`, `b_hh`], [`w_hr`]; and
/// whether a backward may follow (the forward then keeps what it needs).
fn node_inputs<T: Float>(x: &Var<T>, d: &Direction<'_, T>) -> (Vec<Var<T>>, bool) {
    let (p, tape) = (d.fused.params, x.tape());
    let params = [
        Some(&p.w_ih),
        Some(&p.w_hh),
        p.b_ih.as_ref(),
        p.b_hh.as_ref(),
        p.w_hr.as_ref(),
    ];
    let mut vars = vec![x.clone()];
    vars.extend(d.init.iter().cloned());
    vars.extend(params.into_iter().flatten().map(|p| tape.param(p)));
    let keep = tape.grad_enabled() && vars.iter().any(Var::requires_grad);
    (vars, keep)
}

/// Runs one or two directions of a layer over `x` (`[T, B, I]`), the forwards in parallel,
/// and records each as one node. Returns each direction's output `[T, B, H]` and final state
/// parts `[B, H]`.
pub(crate) fn run<T: Float>(
    x: &Var<T>,
    directions: Vec<Direction<'_, T>>,
    lengths: Option<&[usize]>,
) -> Vec<(Var<T>, Vec<Var<T>>)> {
    if directions.iter().any(|d| d.fused.params.w_hr.is_some()) {
        return lstm_proj::run(x, directions, lengths);
    }
    let x_value = x.value().contiguous();
    let groups: Vec<String> = directions.iter().map(|d| d.group.clone()).collect();
    let prepared: Vec<(Inputs<T>, Vec<Var<T>>, Kind)> = directions
        .into_iter()
        .map(|d| {
            let p = d.fused.params;
            let (vars, keep) = node_inputs(x, &d);
            let ((w_ih, ih_stamp), (w_hh, hh_stamp)) =
                (p.w_ih.stamped_value(), p.w_hh.stamped_value());
            let kind = d.fused.kind;
            let pack = || Packs {
                stamps: [ih_stamp, hh_stamp],
                w_step: Arc::new(pack_step_weights(kind, &w_ih, &w_hh)),
                w_in: (kind == Kind::Gru && !keep).then(|| {
                    let [rows, input] = <[usize; 2]>::try_from(w_ih.shape()).expect("2-D");
                    Arc::new(pack_t(slice(&w_ih), rows, input))
                }),
            };
            // Training changes the weights before the next call: nothing to keep.
            let packs = match keep {
                true => pack(),
                false => d.fused.packs.get_or_pack([ih_stamp, hh_stamp], pack),
            };
            let inputs = Inputs {
                segment: d.recompute.segment_len(x_value.shape()[0]),
                x: x_value.clone(),
                init: d.init.iter().map(|v| v.value().contiguous()).collect(),
                w_step: Some(packs.w_step),
                w_in: packs.w_in,
                w_ih,
                w_hh,
                b_ih: p.b_ih.as_ref().map(Param::value),
                b_hh: p.b_hh.as_ref().map(Param::value),
                lengths: lengths.map(<[usize]>::to_vec),
                reverse: d.reverse,
                keep,
            };
            (inputs, vars, d.fused.kind)
        })
        .collect();
    let forwards: Vec<Forward<T>> = match &prepared[..] {
        [(a, _, ka), (b, _, kb)] => {
            let (fa, fb) = rayon::join(|| forward(*ka, &a.seq()), || forward(*kb, &b.seq()));
            vec![fa, fb]
        }
        _ => prepared
            .iter()
            .map(|(i, _, k)| {
                let s = i.seq();
                in_pool(k.macs(&s), || forward_by_rows(*k, &s))
            })
            .collect(),
    };
    prepared
        .into_iter()
        .zip(forwards)
        .zip(groups)
        .map(|(((inputs, vars, kind), (packed, saved)), group)| {
            x.tape()
                .scoped(&group, || record(kind, inputs, vars, packed, saved))
        })
        .collect()
}

/// Puts one direction on the tape: a node whose value is the packed `[T + parts, B, H]`
/// result, then views of it for the output and each final state part.
fn record<T: Float>(
    kind: Kind,
    mut inputs: Inputs<T>,
    vars: Vec<Var<T>>,
    packed: Vec<T>,
    saved: Saved<T>,
) -> (Var<T>, Vec<Var<T>>) {
    let s = inputs.seq();
    let (steps, batch, hidden) = (s.steps, s.batch, s.hidden);
    let parts = kind.parts();
    let recompute = s.keep && !s.keeps_all();
    if !recompute {
        inputs.w_step = None; // only a recomputed forward would read it again
    }
    let value = Tensor::from_vec(packed, &[steps + parts, batch, hidden]);
    // The backward reads the outputs (the entering states, and the RNN's activations) from the
    // node's own value: shared, not copied.
    let result = value.clone();
    let needs: Vec<bool> = vars.iter().map(Var::requires_grad).collect();
    let refs: Vec<&Var<T>> = vars.iter().collect();
    let node = Var::custom_op(kind.name(), &refs, value, move |g| {
        let g = g.contiguous();
        let s = inputs.seq();
        let out = slice(&result);
        // The backward stays on the calling thread (its per-step loop gets the batch split or
        // a helper thread, as the forward did): sent to a worker like the forward, it was
        // slower (docs/performance.md).
        backward(
            kind,
            &s,
            &saved,
            out,
            g.as_slice().expect("contiguous"),
            &needs,
        )
    });
    let output = node.narrow(0, 0, steps);
    let finals = (0..parts).map(|k| node.select(0, steps + k)).collect();
    (output, finals)
}
