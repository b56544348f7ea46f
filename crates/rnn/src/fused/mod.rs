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
//!            dX = dP W_ih,  dW_ih = dPᵀ X,  dW_hh = dPᵀ H_in,  db = Σ dP   (all steps at once)
//! ```
//!
//! On two threads, inference and training run each half of the batch's rows on its own thread
//! ([`forward_by_rows`]), and small training steps' weight gradients split by rows as well
//! (`parameter_grads`); the halves are handed over with `team::join` (`team.rs`), which keeps
//! the second thread awake between them. A batch too small to halve, a sequence too short
//! to split and each direction of a bidirectional layer share each step's product with a
//! helper thread instead (`helper.rs`).
//!
//! Inference (no backward to follow) makes each `P_t` where it is used, in cache, and never
//! holds a `[T, B, G·H]` buffer: on the large LSTM, [64, 200, 256, 512], that buffer was
//! 105 MB of fresh pages per call, and the forward went from 249 to 173 ms (the large GRU's,
//! 220 → 135 ms on one thread). LSTM and RNN training make `P_t` per step the same way (the
//! LSTM keeps every step's activated gates in a slot of its own): once the big buffers came
//! from a pool (`tensor::pool`), that beat projecting all inputs up front in one blocking gemm
//! (one thread, probe medians: small LSTM training step 0.62 → 0.59 ms, RNN large 128–131 →
//! 124, 2-layer bidirectional LSTM on medium 218–220 → 208; two threads: LSTM large 287–311 →
//! 269–277, RNN medium 4.6–4.8 → 4.7–5.0), because the packed kernel with `k = I + H` runs
//! closer to its peak than that gemm does with `k = I` (32 on the small configs). The GRU's
//! `h W_hnᵀ` must stay apart from `x_t W_inᵀ`, so its training still projects up front: made
//! per step as in its inference (`x_t W_ihᵀ`, `k = I`, on the packed kernel), its training
//! step was no faster (AVX-512 EPYC, Zen 4, two alternating runs, ms: medium 62–66 → 66–69
//! on one thread, 38–43 → 44–49 on two; large 900–944 → 909–925 and 474–550 → 465–472). Summing
//! `x_t W_ihᵀ` and `h W_hhᵀ` in one chain or in two agrees to rounding (1e-12 in f64, tested).
//!
//! Arithmetic is the composed cells' in the same order, with the exact `tanh`/sigmoid for
//! `f64` (so the two paths agree to ~1e-15) and fast vectorisable ones for `f32`.

mod gru;
mod helper;
mod lstm;
mod lstm_proj;
mod rnn;
mod team;

use std::ops::Range;
use std::sync::{Arc, Mutex};

use autograd::{Param, Var};
use tensor::ops::matmul::{gemm_into, MatRef};
use tensor::ops::packed::{gemm_packed, gemm_packed_cat, gemm_packed_tn, PackedMat};
use tensor::simd::{with_simd, SimdWork};
use tensor::{Float, Tensor};

use crate::init::GateParams;
use crate::rnn_cell::Nonlinearity;
use helper::{with_step_helper, StepHelper};
pub use tensor::pool::release_buffers;
use tensor::pool::Buffer;

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
}

/// One direction of one layer, as plain slices: what a kernel reads.
#[derive(Clone, Copy)]
pub(crate) struct Seq<'a, T: Float> {
    /// The input, from this sequence's first row: step t's rows are
    /// `x[t · x_stride..][..batch · input]` (see [`Self::x_t`]).
    pub x: &'a [T],
    /// The distance between steps in `x`: `batch · input`, unless this is some of a larger
    /// batch's rows (see [`Self::rows`]).
    pub x_stride: usize,
    pub steps: usize,
    pub batch: usize,
    pub input: usize,
    pub hidden: usize,
    pub w_ih: &'a [T],
    pub w_hh: &'a [T],
    /// The right side of the forward's per-step product, packed once per sequence for
    /// [`gemm_packed`] (see [`pack_step_weights`]): `[W_ih | W_hh]ᵀ` for LSTM and RNN,
    /// `W_hhᵀ` for GRU.
    pub w_step: &'a PackedMat<T>,
    /// GRU inference: `W_ihᵀ` packed for the per-step `x_t W_ihᵀ` (see [`Self::input_product`]).
    pub w_in: Option<&'a PackedMat<T>>,
    pub b_ih: Option<&'a [T]>,
    pub b_hh: Option<&'a [T]>,
    pub h0: &'a [T],
    pub c0: Option<&'a [T]>,
    pub lengths: Option<&'a [usize]>,
    pub reverse: bool,
    /// Whether a backward will follow: the forward then keeps every step's activations
    /// (and the GRU projects the inputs of all steps up front); otherwise it keeps only the
    /// current step's.
    pub keep: bool,
    /// `W_hh` packed for the backward's per-step product (set by [`backward_loop`]).
    pub w_hh_packed: Option<&'a PackedMat<T>>,
    /// A second thread for the per-step products, when there is one to spare.
    pub helper: Option<&'a StepHelper<'a, T>>,
}

impl<'a, T: Float> Seq<'a, T> {
    /// The time steps in the order this direction visits them.
    pub fn order(&self) -> impl DoubleEndedIterator<Item = usize> + '_ {
        (0..self.steps).map(move |k| if self.reverse { self.steps - 1 - k } else { k })
    }

    /// Whether sequence `b` is still running at time `t`.
    pub fn valid(&self, t: usize, b: usize) -> bool {
        self.lengths.is_none_or(|l| t < l[b])
    }

    /// The size of one step's block of a `[T, B, n]` buffer.
    pub fn step(&self, n: usize) -> usize {
        self.batch * n
    }

    /// Step `t`'s input rows, `[B, I]`.
    pub fn x_t(&self, t: usize) -> &'a [T] {
        &self.x[t * self.x_stride..][..self.step(self.input)]
    }

    /// Rows `r` of the batch as a sequence of their own, sharing this one's buffers (the
    /// input keeps its step stride).
    pub fn rows(&self, r: Range<usize>) -> Seq<'a, T> {
        let (input, hid) = (self.input, self.hidden);
        Seq {
            x: &self.x[r.start * input..],
            batch: r.len(),
            h0: &self.h0[r.start * hid..r.end * hid],
            c0: self.c0.map(|c| &c[r.start * hid..r.end * hid]),
            lengths: self.lengths.map(|l| &l[r]),
            ..*self
        }
    }

    /// Rows `r` of the batch as a sequence of its own, reading its input from `x`
    /// (`[T, rows, I]`, gathered by [`gather_rows`]).
    pub fn half(&self, r: Range<usize>, x: &'a [T]) -> Seq<'a, T> {
        Seq {
            x,
            x_stride: r.len() * self.input,
            ..self.rows(r)
        }
    }

    /// `X W_ihᵀ + b_ih` for all steps at once: `[T·B, G·H]` (GRU training).
    fn x_projection(&self, gates: usize) -> Buffer<T> {
        let (rows, cols) = (self.steps * self.batch, gates * self.hidden);
        assert_eq!(
            self.x_stride,
            self.step(self.input),
            "a whole batch's input"
        );
        // Every row starts as the bias and the product adds onto it (one pass over `P`, not
        // a zeroing and then an addition).
        let (mut p, beta) = match self.b_ih {
            Some(bias) => {
                let mut p = Buffer::with_capacity(rows * cols);
                (0..rows).for_each(|_| p.extend_from_slice(bias));
                (p, T::ONE)
            }
            None => (Buffer::zeroed(rows * cols), T::ZERO),
        };
        // Many rows: a blocking gemm (which packs `W_ihᵀ` once per call anyway) is the tool.
        gemm_into(
            T::ONE,
            MatRef::new(self.x, rows, self.input),
            MatRef::new(self.w_ih, cols, self.input).t(),
            beta,
            &mut p,
        );
        p
    }

    /// The GRU's input projections: in training every step's, made up front
    /// ([`x_projection`](Self::x_projection)), in inference room for the current step's,
    /// which [`input_product`](Self::input_product) fills.
    pub fn step_inputs(&self, gates: usize) -> Buffer<T> {
        match self.keep {
            true => self.x_projection(gates),
            false => Buffer::zeroed(self.step(gates * self.hidden)),
        }
    }

    /// Room for the LSTM's `P_t` (`[B, 4H]`), which its forward activates in place: a slot
    /// per step in training, which keeps them all (see [`slot`](Self::slot)), one otherwise.
    /// Not zeroed: each step's product writes all of its slot.
    pub fn step_slots(&self, gates: usize) -> Buffer<T> {
        let slots = if self.keep { self.steps } else { 1 };
        Buffer::for_overwrite(slots * self.step(gates * self.hidden))
    }

    /// Which step-sized slot of a per-step buffer step `t` uses: its own in training, the one
    /// slot in inference.
    pub fn slot(&self, t: usize) -> usize {
        if self.keep {
            t
        } else {
            0
        }
    }

    /// The bias the LSTM and RNN gate arithmetic adds to `P_t` (`[G·H]`): `b_ih + b_hh`,
    /// zeros for a layer without biases.
    pub fn cell_bias(&self, gates: usize) -> Vec<T> {
        let mut bias = vec![T::ZERO; gates * self.hidden];
        for b in [self.b_ih, self.b_hh].into_iter().flatten() {
            add_to_rows(&mut bias, b);
        }
        bias
    }

    /// `x_t W_ihᵀ + b_ih` for step `t` into `p_t` (`[B, G·H]`): the GRU's inference, whose
    /// `h W_hnᵀ` must stay apart from `x_t W_inᵀ`, makes its input projection one step at a
    /// time with this.
    pub fn input_product(&self, t: usize, p_t: &mut [T]) {
        let w_in = self.w_in.expect("inference packs W_ih");
        let x_t = self.x_t(t);
        match self.helper {
            Some(helper) => helper.product_by(1, x_t, T::ZERO, p_t),
            None => gemm_packed(x_t, self.batch, w_in, T::ZERO, p_t),
        }
        if let Some(b_ih) = self.b_ih {
            add_to_rows(p_t, b_ih);
        }
    }

    /// `P_t = [x_t | h] [W_ih | W_hh]ᵀ` for step `t` (LSTM, RNN) into `p_t` (`[B, G·H]`):
    /// one product reading `x_t` and `h` where they are; with a helper thread, which takes
    /// its left side as one matrix, `[x_t | h]` gathered into `xh` (`[B, I + H]`) first.
    pub fn step_product(&self, t: usize, h: &[T], xh: &mut [T], p_t: &mut [T]) {
        let x_t = self.x_t(t);
        let Some(helper) = self.helper else {
            return gemm_packed_cat([x_t, h], self.batch, self.w_step, T::ZERO, p_t);
        };
        let (input, hid) = (self.input, self.hidden);
        for ((row, x_b), h_b) in xh
            .chunks_exact_mut(input + hid)
            .zip(x_t.chunks_exact(input))
            .zip(h.chunks_exact(hid))
        {
            row[..input].copy_from_slice(x_b);
            row[input..].copy_from_slice(h_b);
        }
        helper.product(xh, T::ZERO, p_t);
    }

    /// Room for [`step_product`](Self::step_product) to gather `[x_t | h]` in, where it
    /// needs to (with a helper thread).
    pub fn gather_room(&self) -> Vec<T> {
        let len = if self.helper.is_some() {
            self.step(self.input + self.hidden)
        } else {
            0
        };
        vec![T::ZERO; len]
    }

    /// The first step sequence `b` visits: 0 forwards, its last valid step in reverse.
    pub fn first_step(&self, b: usize) -> usize {
        match (self.reverse, self.lengths) {
            (false, _) => 0,
            // A sequence that ended before this chunk (tbptt) has no valid step: any will do.
            (true, Some(l)) => l[b].saturating_sub(1),
            (true, None) => self.steps - 1,
        }
    }

    /// The hidden state entering valid step `t` of sequence `b`: `h0` at its first step,
    /// otherwise the output of the step visited before (which was valid too: lengths cut only
    /// the end of a sequence). `out` is the forward's packed result, so the backward keeps no
    /// copy of the entering states.
    pub fn h_prev<'o>(&self, out: &'o [T], t: usize, b: usize) -> &'o [T]
    where
        'a: 'o,
    {
        let hid = self.hidden;
        if t == self.first_step(b) {
            return &self.h0[b * hid..(b + 1) * hid];
        }
        let prev = if self.reverse { t + 1 } else { t - 1 };
        let at = (prev * self.batch + b) * hid;
        &out[at..at + hid]
    }

    /// `out += h W_hhᵀ` for one step: `[B, H] × [H, G·H]` (GRU).
    pub fn add_hidden_projection(&self, h: &[T], out: &mut [T]) {
        match self.helper {
            Some(helper) => helper.product(h, T::ONE, out),
            None => gemm_packed(h, self.batch, self.w_step, T::ONE, out),
        }
    }

    /// `W_hh` (`[G·H, H]`) packed for the backward's per-step `dP_t W_hh`.
    fn pack_w_hh(&self, gates: usize) -> PackedMat<T> {
        PackedMat::pack(MatRef::new(self.w_hh, gates * self.hidden, self.hidden))
    }

    /// `dh = dP_t W_hh` for one step: `[B, G·H] × [G·H, H]` (backward only).
    pub fn hidden_grad(&self, dp: &[T], dh: &mut [T]) {
        match self.helper {
            Some(helper) => helper.product(dp, T::ZERO, dh),
            None => {
                let w_hh = self.w_hh_packed.expect("the backward packs W_hh");
                gemm_packed(dp, self.batch, w_hh, T::ZERO, dh);
            }
        }
    }
}

/// `m[r] += bias` for every row `r` of the row-major `m` (rows as long as `bias`).
fn add_to_rows<T: Float>(m: &mut [T], bias: &[T]) {
    for row in m.chunks_exact_mut(bias.len()) {
        for (x, b) in row.iter_mut().zip(bias) {
            *x += *b;
        }
    }
}

/// The rows one kernel writes of each step's block of a `[K, B, W]` array: its forward's result
/// `[T + parts, B, H]` (the outputs, then the final state's parts), its backward's gate
/// gradients `[T, B, G·H]`. One slice per block, of which the kernel's rows `b` are
/// `b·W..(b + 1)·W`: the blocks of one buffer, or, where two threads split a batch's rows,
/// each half's rows of the whole batch's blocks, so that the halves need no merging.
pub(crate) struct Rows<'o, T> {
    blocks: Vec<&'o mut [T]>,
    width: usize,
}

impl<'o, T: Float> Rows<'o, T> {
    /// All of `buffer`, in blocks of `rows` rows of `width`.
    fn new(buffer: &'o mut [T], rows: usize, width: usize) -> Self {
        let blocks = buffer.chunks_exact_mut(rows * width).collect();
        Rows { blocks, width }
    }

    /// `buffer`'s blocks of `batch` rows, cut into rows `..half` and `half..`.
    fn split(buffer: &'o mut [T], batch: usize, half: usize, width: usize) -> [Self; 2] {
        let (top, bottom) = buffer
            .chunks_exact_mut(batch * width)
            .map(|block| block.split_at_mut(half * width))
            .unzip();
        [top, bottom].map(|blocks| Rows { blocks, width })
    }

    /// Block `k`: this kernel's rows of step `k` (or, after the steps, of a final state's
    /// part), one after the other.
    pub fn block(&mut self, k: usize) -> &mut [T] {
        self.blocks[k]
    }

    /// Row `b` of block `k`.
    pub fn row(&mut self, k: usize, b: usize) -> &mut [T] {
        &mut self.blocks[k][b * self.width..(b + 1) * self.width]
    }

    /// Block `k` from `rows`: a final state's part.
    pub fn set_block(&mut self, k: usize, rows: &[T]) {
        self.blocks[k].copy_from_slice(rows);
    }
}

/// What the forward keeps for the backward, all in time order.
pub(crate) struct Saved<T: Float> {
    /// Per-step activations `[T, B, k·H]`, kernel-specific (empty for the vanilla RNN, whose
    /// activations are its outputs).
    pub acts: Buffer<T>,
    /// LSTM: the cell state after each step, `[T, B, H]`.
    pub c: Buffer<T>,
    /// Training split by rows ([`forward_by_rows`]): what each half kept, instead of the above.
    halves: Option<Box<Halves<T>>>,
}

impl<T: Float> Saved<T> {
    /// A whole batch's activations and cell states.
    pub(super) fn new(acts: Buffer<T>, c: Buffer<T>) -> Self {
        Saved {
            acts,
            c,
            halves: None,
        }
    }

    /// Nothing kept (inference, or the RNN's forward).
    pub(super) fn none() -> Self {
        Self::new(Buffer::zeroed(0), Buffer::zeroed(0))
    }
}

/// A batch trained as two sequences of rows `0..half` and `half..`, one per thread: what each
/// half's forward kept, for its backward loop. Their outputs are not kept twice: the
/// backward gathers each half's rows again from the node's value.
struct Halves<T: Float> {
    half: usize,
    saved: [Saved<T>; 2],
}

/// A kernel's forward result: `[T + parts, B, H]` (the outputs, then the final state's
/// parts), and what the backward needs.
pub(crate) type Forward<T> = (Vec<T>, Saved<T>);

/// The backward loop's results: the gradients of the input and hidden projections' pre-
/// activations (`[T, B, G·H]` each; `None` for the hidden one means the same as the input
/// one, as for LSTM and RNN), and of the initial state's parts.
pub(crate) struct LoopGrads<T: Float> {
    pub dp_x: Buffer<T>,
    pub dp_h: Option<Buffer<T>>,
    pub d_init: Vec<Vec<T>>,
}

/// The kernels' loops are `#[inline(always)]`, so `with_simd` compiles them for the widest
/// vector instructions the CPU has.
/// Each has a [`StepHelper`] thread for the per-step products when one is free.
fn forward<T: Float>(kind: Kind, s: &Seq<'_, T>) -> Forward<T> {
    let rights: Vec<&PackedMat<T>> = [Some(s.w_step), s.w_in].into_iter().flatten().collect();
    with_step_helper(&rights, s.batch, |helper| {
        forward_alone(kind, &Seq { helper, ..*s })
    })
}

/// A kernel's forward on the calling thread (and its helper, if `s` has one), into a buffer
/// of its own.
fn forward_alone<T: Float>(kind: Kind, s: &Seq<'_, T>) -> Forward<T> {
    let mut out = Buffer::zeroed((s.steps + kind.parts()) * s.step(s.hidden)).into_vec();
    let saved = with_simd(ForwardWork(
        kind,
        s,
        &mut Rows::new(&mut out, s.batch, s.hidden),
    ));
    (out, saved)
}

/// Two threads for one sequence by splitting its batch: the rows of a batch are independent
/// sequences, so each thread runs the whole loop for half of them. Unlike sharing each step's
/// product with the helper, nothing is handed over per step and the gate arithmetic is split
/// too; each output element is computed as on one thread (a packed product's rows are
/// independent), so the bits are the same.
///
/// Inference reads the input in place (see [`Seq::rows`]) and each half writes its rows of
/// the whole batch's result (see [`Rows::split`]). Measured (probe medians, 2 threads,
/// helper → rows): LSTM forward medium 7.17 → 6.32 ms, large 96.6 → 87.6; GRU 5.80 → 5.28,
/// 76.2 → 74.2; RNN 1.75 → 1.64, 27.0 → 24.8; the small forwards, too small for the helper,
/// 25–30% faster (criterion). Writing in place instead of interleaving the halves' results
/// afterwards (26 MB on the large LSTM): large forwards, 2 threads, LSTM 90.5 → 86.6 ms, GRU
/// 72.3 → 69.1, RNN 24.9 → 22.6 (probe medians, alternating runs).
///
/// Training splits as well: each half is a sequence of its own, input gathered, and keeps its
/// own record for its backward loop ([`backward_by_rows`]). The halves then run without
/// meeting once in the sequence, where the helper meets the loop thread twice a step (and
/// copies the step's left side and its half of the result across). On an AVX-512 EPYC
/// (Zen 4), 2 threads, training step, criterion medians over three alternating runs, helper
/// → rows: LSTM medium 55–64 → 48–54 ms, GRU large 553–629 → 498–557, RNN large 181–229 →
/// 164–183 (on an earlier Xeon the two had measured alike, so the split had been kept to the
/// small configs, whose loops the helper does not serve).
fn forward_by_rows<T: Float>(kind: Kind, s: &Seq<'_, T>) -> Forward<T> {
    let Some(half) = row_split(kind, s) else {
        return forward(kind, s);
    };
    let (rest, hid) = (s.batch - half, s.hidden);
    if !s.keep {
        let mut out = Buffer::zeroed((s.steps + kind.parts()) * s.step(hid)).into_vec();
        let [mut top, mut bottom] = Rows::split(&mut out, s.batch, half, hid);
        let run = |rows: Range<usize>, out: &mut Rows<'_, T>| {
            with_simd(ForwardWork(kind, &s.rows(rows), out));
        };
        team::join(
            || run(0..half, &mut top),
            || run(half..s.batch, &mut bottom),
        );
        return (out, Saved::none());
    }
    // Each half gathers its own input: in parallel, and into the cache of the core that
    // reads it.
    let run = |r: Range<usize>| {
        let x = gather_rows(s.x, s.batch, s.input, r.clone());
        forward_alone(kind, &s.half(r, &x))
    };
    let ((top, top_saved), (bottom, bottom_saved)) =
        team::join(|| run(0..half), || run(half..s.batch));
    let out = merge_rows(&top, &bottom, half, rest, hid);
    let halves = Halves {
        half,
        saved: [top_saved, bottom_saved],
    };
    let saved = Saved {
        halves: Some(Box::new(halves)),
        ..Saved::none()
    };
    (out, saved)
}

/// The backward loop of a batch trained by rows: each half's loop on its own thread, on its
/// rows of the outputs `out` and their gradient `g` (`[T + parts, B, H]` each), writing its
/// rows of the whole batch's gate gradients `dps` (see [`Rows::split`]) for the weight
/// gradients' products. Returns the initial state's gradients, the halves' joined.
fn backward_by_rows<T: Float>(
    kind: Kind,
    s: &Seq<'_, T>,
    h: &Halves<T>,
    out: &[T],
    g: &[T],
    w_hh: &PackedMat<T>,
    dps: &mut [Buffer<T>],
) -> Vec<Vec<T>> {
    let (rows, width) = ([0..h.half, h.half..s.batch], kind.gates() * s.hidden);
    // Each half writes its rows of every step's block of the whole batch's gate gradients.
    let (mut top, mut bottom): (Vec<_>, Vec<_>) = (dps.iter_mut())
        .map(|dp| {
            let [top, bottom] = Rows::split(dp, s.batch, h.half, width);
            (top, bottom)
        })
        .unzip();
    let run = |i: usize, dp: &mut [Rows<'_, T>]| {
        // The backward loops do not read the input: the rows' view of it will do.
        let hs = Seq {
            w_hh_packed: Some(w_hh),
            ..s.rows(rows[i].clone())
        };
        let out = gather_rows(out, s.batch, s.hidden, rows[i].clone());
        let g = gather_rows(g, s.batch, s.hidden, rows[i].clone());
        with_simd(BackwardWork(kind, &hs, &h.saved[i], &out, &g, dp))
    };
    let (top, bottom) = team::join(|| run(0, &mut top), || run(1, &mut bottom));
    (top.into_iter().zip(bottom))
        .map(|(mut a, b)| {
            a.extend_from_slice(&b);
            a
        })
        .collect()
}

/// Buffers `[T, B, G·H]` for a backward's gate gradients: of the input projection's
/// pre-activations, and for the GRU, whose hidden projection's differ, of those as well. Not
/// zeroed: the backward loops write every row of every step (zeros past a sequence's end).
fn gate_grad_buffers<T: Float>(kind: Kind, s: &Seq<'_, T>) -> Vec<Buffer<T>> {
    let count = if kind == Kind::Gru { 2 } else { 1 };
    let len = s.steps * s.step(kind.gates() * s.hidden);
    (0..count).map(|_| Buffer::for_overwrite(len)).collect()
}

/// The gate gradients from [`gate_grad_buffers`], filled, and the initial state's.
fn loop_grads<T: Float>(dps: Vec<Buffer<T>>, d_init: Vec<Vec<T>>) -> LoopGrads<T> {
    let mut dps = dps.into_iter();
    LoopGrads {
        dp_x: dps.next().expect("one at least"),
        dp_h: dps.next(),
        d_init,
    }
}

/// Where [`forward_by_rows`] splits `s`'s batch, if it does: at half, on two threads or more,
/// for batches of at least 2 × [`ROWS_SPLIT_MIN`] rows and sequences of at least
/// [`ROWS_SPLIT_MACS`] multiply-adds ([`ROWS_SPLIT_TRAINING_MACS`] in training).
fn row_split<T: Float>(kind: Kind, s: &Seq<'_, T>) -> Option<usize> {
    let half = s.batch / 2;
    let split = match s.keep {
        false => kind.macs(s) >= ROWS_SPLIT_MACS,
        true => kind.macs(s) >= ROWS_SPLIT_TRAINING_MACS,
    };
    (split && half >= ROWS_SPLIT_MIN && rayon::current_num_threads() >= 2).then_some(half)
}

/// Batches of fewer than twice this many rows are not split.
const ROWS_SPLIT_MIN: usize = 8;
/// Sequences of fewer multiply-adds are not split: two threads cost a fork and a join (and
/// waking the other thread, tens of microseconds when it slept).
const ROWS_SPLIT_MACS: usize = 1 << 20;
/// The same for training, which also gathers each half's input, outputs and gradient.
/// Measured on the small configs, 2 threads, probe medians, whole batch → split: LSTM (2.0e7 multiply-adds) 0.84 → 0.76 ms, GRU (1.5e7) 0.67 → 0.61, RNN
/// (4.9e6) 0.26 → 0.38, so the RNN's stays whole.
const ROWS_SPLIT_TRAINING_MACS: usize = 1 << 23;

/// Rows `r` of every step of the `[K, batch, width]` array `m`, as `[K, rows, width]`.
fn gather_rows<T: Float>(m: &[T], batch: usize, width: usize, r: Range<usize>) -> Vec<T> {
    let mut out = Vec::with_capacity(m.len() / batch.max(1) * r.len());
    for step in m.chunks_exact(batch * width) {
        out.extend_from_slice(&step[r.start * width..r.end * width]);
    }
    out
}

/// The inverse of two [`gather_rows`]: `[K, top_rows, width]` and `[K, bottom_rows, width]`
/// interleaved step by step into `[K, top_rows + bottom_rows, width]`.
fn merge_rows<T: Float>(
    top: &[T],
    bottom: &[T],
    top_rows: usize,
    bottom_rows: usize,
    width: usize,
) -> Vec<T> {
    let mut out = Buffer::with_capacity(top.len() + bottom.len()).into_vec();
    for (a, b) in top
        .chunks_exact(top_rows * width)
        .zip(bottom.chunks_exact(bottom_rows * width))
    {
        out.extend_from_slice(a);
        out.extend_from_slice(b);
    }
    out
}

fn backward_loop<T: Float>(
    kind: Kind,
    s: &Seq<'_, T>,
    saved: &Saved<T>,
    out: &[T],
    g: &[T],
) -> LoopGrads<T> {
    let w_hh = s.pack_w_hh(kind.gates());
    let (width, mut dps) = (kind.gates() * s.hidden, gate_grad_buffers(kind, s));
    let d_init = match &saved.halves {
        Some(h) => backward_by_rows(kind, s, h, out, g, &w_hh, &mut dps),
        None => {
            let mut rows: Vec<Rows<'_, T>> = (dps.iter_mut())
                .map(|dp| Rows::new(dp, s.batch, width))
                .collect();
            with_step_helper(&[&w_hh], s.batch, |helper| {
                let s = Seq {
                    helper,
                    w_hh_packed: Some(&w_hh),
                    ..*s
                };
                with_simd(BackwardWork(kind, &s, saved, out, g, &mut rows))
            })
        }
    };
    loop_grads(dps, d_init)
}

/// The kernel, the sequence, and where its result goes.
struct ForwardWork<'a, 'b, 'o, T: Float>(Kind, &'a Seq<'b, T>, &'a mut Rows<'o, T>);

impl<T: Float> SimdWork for ForwardWork<'_, '_, '_, T> {
    type Output = Saved<T>;
    #[inline(always)]
    fn run(self) -> Saved<T> {
        let ForwardWork(kind, s, out) = self;
        match kind {
            Kind::Rnn(nl) => rnn::forward(s, nl, out),
            Kind::Lstm => lstm::forward(s, out),
            Kind::Gru => gru::forward(s, out),
        }
    }
}

/// The kernel, the sequence, what the forward kept, its packed result, the gradient of that
/// result, and where the gate gradients go (see [`gate_grad_buffers`]).
struct BackwardWork<'a, 'b, 'o, T: Float>(
    Kind,
    &'a Seq<'b, T>,
    &'a Saved<T>,
    &'a [T],
    &'a [T],
    &'a mut [Rows<'o, T>],
);

impl<T: Float> SimdWork for BackwardWork<'_, '_, '_, T> {
    /// The gradients of the initial state's parts.
    type Output = Vec<Vec<T>>;
    #[inline(always)]
    fn run(self) -> Vec<Vec<T>> {
        let BackwardWork(kind, s, saved, out, g, dp) = self;
        match kind {
            Kind::Rnn(nl) => rnn::backward(s, nl, out, g, &mut dp[0]),
            Kind::Lstm => lstm::backward(s, saved, g, &mut dp[0]),
            Kind::Gru => gru::backward(s, saved, out, g, dp),
        }
    }
}

/// Owned copies of one direction's inputs, so its forward can run on another thread and its
/// backward later.
struct Inputs<T: Float> {
    x: Tensor<T>,
    init: Vec<Tensor<T>>,
    w_ih: Tensor<T>,
    w_hh: Tensor<T>,
    w_step: Arc<PackedMat<T>>,
    w_in: Option<Arc<PackedMat<T>>>,
    b_ih: Option<Tensor<T>>,
    b_hh: Option<Tensor<T>>,
    lengths: Option<Vec<usize>>,
    reverse: bool,
    keep: bool,
}

/// A layer's packed weights for its inference forward, kept and reused while the weights are
/// unchanged (the stamps of `W_ih` and `W_hh` are the same; see [`Param::stamped_value`]).
/// Packing `[W_ih | W_hh]ᵀ` took 1.75% of the 2-layer bidirectional LSTM's forward (perf, one
/// thread, medium). Training packs on every call: each step changes the weights.
#[derive(Default)]
pub(crate) struct PackCache<T: Float>(Mutex<Option<Packs<T>>>);

/// One direction's packed right sides (see [`Inputs`]) and the stamps of the weights they
/// were packed from.
#[derive(Clone)]
struct Packs<T: Float> {
    stamps: [u64; 2],
    w_step: Arc<PackedMat<T>>,
    w_in: Option<Arc<PackedMat<T>>>,
}

impl<T: Float> PackCache<T> {
    /// The packs kept for weights with `stamps`, or new ones from `pack`, then kept.
    fn get_or_pack(&self, stamps: [u64; 2], pack: impl FnOnce() -> Packs<T>) -> Packs<T> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &*kept {
            Some(packs) if packs.stamps == stamps => packs.clone(),
            _ => kept.insert(pack()).clone(),
        }
    }
}

/// The forward's per-step right side, packed: `[W_ih | W_hh]ᵀ` (`[I + H, G·H]`) for LSTM and
/// RNN, `W_hhᵀ` for GRU (whose inference packs `W_ihᵀ` apart, for [`Seq::input_product`]).
fn pack_step_weights<T: Float>(kind: Kind, w_ih: &Tensor<T>, w_hh: &Tensor<T>) -> PackedMat<T> {
    let [rows, hidden] = <[usize; 2]>::try_from(w_hh.shape()).expect("2-D weight");
    if kind == Kind::Gru {
        return pack_t(slice(w_hh), rows, hidden);
    }
    let input = w_ih.shape()[1];
    PackedMat::pack_stacked(&[
        MatRef::new(slice(w_ih), rows, input).t(),
        MatRef::new(slice(w_hh), rows, hidden).t(),
    ])
}

/// The transpose of the row-major `rows × cols` matrix `w`, packed for [`gemm_packed`].
fn pack_t<T: Float>(w: &[T], rows: usize, cols: usize) -> PackedMat<T> {
    PackedMat::pack(MatRef::new(w, rows, cols).t())
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
            w_step: &self.w_step,
            w_in: self.w_in.as_deref(),
            b_ih: self.b_ih.as_ref().map(slice),
            b_hh: self.b_hh.as_ref().map(slice),
            h0: slice(&self.init[0]),
            c0: self.init.get(1).map(slice),
            lengths: self.lengths.as_deref(),
            reverse: self.reverse,
            keep: self.keep,
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
/// Why, measured on 2 cores with glibc: a GRU forward at [32, 100, 128, 256] called from
/// `main` took 23 ms on 2 threads against 12 ms on 1, and `perf` showed 231 K page faults
/// per 30 forwards against 16 K: the large buffers the sequence allocates on the calling
/// thread and the workers fill were handed back to the kernel after each call and faulted in
/// again on the next. Allocated on a worker, they are reused (25 K faults): the same forward
/// takes 12 ms on 2 threads (the faults vanish as well with `GLIBC_TUNABLES=glibc.malloc.trim_threshold=
/// 268435456:glibc.malloc.mmap_threshold=268435456`, which is how the cause was confirmed).
/// Small sequences split nothing across threads, so they stay put and skip the hop.
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
                false => p.packs.get_or_pack([ih_stamp, hh_stamp], pack),
            };
            let inputs = Inputs {
                x: x_value.clone(),
                init: d.init.iter().map(|v| v.value().contiguous()).collect(),
                w_step: packs.w_step,
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
        .map(|((inputs, vars, kind), (packed, saved))| record(kind, inputs, vars, packed, saved))
        .collect()
}

/// Puts one direction on the tape: a node whose value is the packed `[T + parts, B, H]`
/// result, then views of it for the output and each final state part.
fn record<T: Float>(
    kind: Kind,
    inputs: Inputs<T>,
    vars: Vec<Var<T>>,
    packed: Vec<T>,
    saved: Saved<T>,
) -> (Var<T>, Vec<Var<T>>) {
    let s = inputs.seq();
    let (steps, batch, hidden) = (s.steps, s.batch, s.hidden);
    let parts = kind.parts();
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
        // a helper thread, as the forward did): measured on 2 threads, sending it to a worker
        // like the forward made the RNN medium training step slower (11.9 vs 8.4 ms; 78 K vs 13 K page faults per 30 steps)
        // and left GRU and LSTM unchanged.
        let g = g.as_slice().expect("contiguous");
        let loop_grads = backward_loop(kind, &s, &saved, out, g);
        input_grads(kind, &s, out, loop_grads, &needs)
    });
    let output = node.narrow(0, 0, steps);
    let finals = (0..parts).map(|k| node.select(0, steps + k)).collect();
    (output, finals)
}

/// The parameters' gradients, `[dW_ih, dW_hh, db_ih, db_hh]`, those `wanted` (the biases'
/// only for a layer with biases):
///
/// ```text
/// dW_ih = dP_xᵀ X,   dW_hh = Σ_t dP_tᵀ h_{t−1},   db_ih = Σ_rows dP_x,   db_hh = Σ_rows dP_h
/// ```
///
/// with `dP_x`, `dP_h` `[T·B, G·H]` (the same for LSTM and RNN, whose `db_hh` is then `db_ih`).
///
/// Products too small for [`gemm_into`] to split run on the packed kernel
/// ([`gemm_packed_tn`]), reading `dP` where it is (no transposed copy) against `X` and the
/// entering states `H_in` packed once here: `[256, 800] × [800, 64]` with its packing at 215
/// GFLOP/s against `gemm_into`'s 180 (one thread); the small LSTM training step (probe medians)
/// 0.77 → 0.73 ms on one thread, 0.53 → 0.44 on two. On two threads they split, by halves of
/// their rows (gate units) with the bias sums of those units, one half per thread
/// ([`team::join`]: the second thread has just run half the backward loop and is still
/// awake): 0.62 → 0.51 ms (with `gemm_into`, before the packed kernel). Each element is
/// computed as on one thread, so the bits are the same.
fn parameter_grads<T: Float>(
    s: &Seq<'_, T>,
    (dp_x, dp_h, cols): (&[T], Option<&[T]>, usize),
    out: &[T],
    wanted: [bool; 4],
) -> [Option<Tensor<T>>; 4] {
    let k = s.steps * s.batch;
    // LSTM and RNN: `dP_h` is `dP_x`, and its sums serve both biases.
    let shared = dp_h.is_none();
    let dp_h = dp_h.unwrap_or(dp_x);
    let sum_x = wanted[2] || (shared && wanted[3]);
    let work = [wanted[0], wanted[1], sum_x, wanted[3] && !shared];
    let widths = [s.input, s.hidden, 1, 1];
    let mut grads = [0, 1, 2, 3].map(|i| {
        let len = if work[i] { cols * widths[i] } else { 0 };
        Buffer::zeroed(len).into_vec()
    });
    let macs = [0, 1].map(|i| if work[i] { k * cols * widths[i] } else { 0 });
    // Entries `r` (gate units) of each bias gradient wanted.
    let bias_sums = |r: Range<usize>, b_ih: &mut [T], b_hh: &mut [T]| {
        for (want, dp, sums) in [(work[2], dp_x, b_ih), (work[3], dp_h, b_hh)] {
            if want {
                column_sums(dp, cols, r.clone(), sums);
            }
        }
    };
    if macs[0].max(macs[1]) >= GEMM_SPLITS_MACS {
        // Large: `gemm_into` blocks for the caches and splits across threads itself.
        let [w_ih, w_hh, b_ih, b_hh] = &mut grads;
        if work[0] {
            let x = MatRef::new(s.x, k, s.input);
            gemm_into(T::ONE, MatRef::new(dp_x, k, cols).t(), x, T::ZERO, w_ih);
        }
        if work[1] {
            hidden_weight_grad(s, dp_h, out, w_hh);
        }
        bias_sums(0..cols, b_ih, b_hh);
    } else {
        let x = work[0].then(|| PackedMat::pack(MatRef::new(s.x, k, s.input)));
        let h_in = work[1].then(|| {
            PackedMat::from_rows(k, s.hidden, |kk| {
                let (t, b) = (kk / s.batch, kk % s.batch);
                s.valid(t, b).then(|| s.h_prev(out, t, b))
            })
        });
        // Rows `r` (gate units) of each gradient wanted.
        let rows = |r: Range<usize>, [w_ih, w_hh, b_ih, b_hh]: [&mut [T]; 4]| {
            for (dp, packed, acc) in [(dp_x, &x, w_ih), (dp_h, &h_in, w_hh)] {
                if let Some(packed) = packed {
                    gemm_packed_tn(dp, cols, r.clone(), packed, T::ZERO, acc);
                }
            }
            bias_sums(r, b_ih, b_hh);
        };
        let split = rayon::current_num_threads() >= 2
            && cols >= 2 * SPLIT_ROWS
            && macs[0] + macs[1] >= WEIGHT_SPLIT_MACS;
        if split {
            let half = (cols / 2).next_multiple_of(SPLIT_ROWS);
            let mut top: [&mut [T]; 4] = Default::default();
            let mut bottom: [&mut [T]; 4] = Default::default();
            for (i, (g, w)) in grads.iter_mut().zip(widths).enumerate() {
                let at = (half * w).min(g.len()); // unwanted ones are empty
                (top[i], bottom[i]) = g.split_at_mut(at);
            }
            team::join(|| rows(0..half, top), || rows(half..cols, bottom));
        } else {
            let [a, b, c, d] = &mut grads;
            rows(0..cols, [a, b, c, d]);
        }
    }
    let [w_ih, w_hh, b_ih, b_hh] = grads;
    let db_x = sum_x.then(|| Tensor::from_vec(b_ih, &[cols]));
    let db_hh = match shared {
        true => db_x.clone().filter(|_| wanted[3]),
        false => wanted[3].then(|| Tensor::from_vec(b_hh, &[cols])),
    };
    [
        wanted[0].then(|| Tensor::from_vec(w_ih, &[cols, s.input])),
        wanted[1].then(|| Tensor::from_vec(w_hh, &[cols, s.hidden])),
        db_x.filter(|_| wanted[2]),
        db_hh,
    ]
}

/// Weight gradients of 2²⁴ multiply-adds or more run in [`gemm_into`] (which splits them
/// across threads itself, and blocks for the caches: the packed kernel reads the whole `k`
/// of a panel per row block, which for the medium `[1024, 3200] × [3200, 256]` ran at 24
/// GFLOP/s against `matrixmultiply`'s 75–92 on an AVX-512 EPYC, Zen 4; blocked over `k`
/// and the rows, at 66–78, still behind, so it was left out; `benches/matmul.rs`)...
const GEMM_SPLITS_MACS: usize = 1 << 24;
/// ...and below that, those of fewer than this many stay on one thread.
const WEIGHT_SPLIT_MACS: usize = 1 << 23;
/// Where the weight gradients split, their rows split at a multiple of this.
const SPLIT_ROWS: usize = 16;

/// Columns `r` of the sums of the rows of `dp` (`cols` wide) into `sums`, row after row
/// (compiled for the widest vectors: for the small LSTM's `[800, 256]`, 2.4% → 1.1% of the
/// training step in a profile, about 16 → 7 µs).
fn column_sums<T: Float>(dp: &[T], cols: usize, r: Range<usize>, sums: &mut [T]) {
    with_simd(ColumnSums(dp, cols, r, sums));
}

struct ColumnSums<'a, T>(&'a [T], usize, Range<usize>, &'a mut [T]);

impl<T: Float> SimdWork for ColumnSums<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let ColumnSums(dp, cols, r, sums) = self;
        for row in dp.chunks_exact(cols) {
            for (acc, v) in sums.iter_mut().zip(&row[r.clone()]) {
                *acc += *v;
            }
        }
    }
}

/// `dW_hh = Σ_t dP_tᵀ h_{t−1}` (`dp` is `[T·B, G·H]`) into `acc` with the entering states read
/// from the outputs: one product of `dP` against the outputs shifted by one step (forwards,
/// step t entered with the output of t − 1; in reverse, of t + 1), plus `D₀ᵀ h0` for the rows
/// `D₀` of each sequence's first step. Where a shorter sequence starts in reverse, the shifted
/// output is padding, zero, so it adds nothing there.
fn hidden_weight_grad<T: Float>(s: &Seq<'_, T>, dp: &[T], out: &[T], acc: &mut [T]) {
    let (batch, hidden) = (s.batch, s.hidden);
    let cols = dp.len() / (s.steps * batch);
    let later = (s.steps - 1) * batch; // rows of the steps that are nobody's first
    if later > 0 {
        let (dp_rows, out_rows) = if s.reverse {
            (
                &dp[..later * cols],
                &out[batch * hidden..(s.steps * batch) * hidden],
            )
        } else {
            (&dp[batch * cols..], &out[..later * hidden])
        };
        gemm_into(
            T::ONE,
            MatRef::new(dp_rows, later, cols).t(),
            MatRef::new(out_rows, later, hidden),
            T::ZERO,
            acc,
        );
    }
    let mut first = vec![T::ZERO; batch * cols];
    for (b, row) in first.chunks_exact_mut(cols).enumerate() {
        let at = (s.first_step(b) * batch + b) * cols;
        row.copy_from_slice(&dp[at..at + cols]);
    }
    gemm_into(
        T::ONE,
        MatRef::new(&first, batch, cols).t(),
        MatRef::new(s.h0, batch, hidden),
        T::ONE,
        acc,
    );
}

/// From the loop's gradients to one gradient per input, in the order
/// `x, init parts.., w_ih, w_hh, [b_ih, b_hh]`; only those in `needs` are computed.
fn input_grads<T: Float>(
    kind: Kind,
    s: &Seq<'_, T>,
    out: &[T],
    lg: LoopGrads<T>,
    needs: &[bool],
) -> Vec<Option<Tensor<T>>> {
    let (rows, cols) = (s.steps * s.batch, kind.gates() * s.hidden);
    let mut grads: Vec<Option<Tensor<T>>> = Vec::with_capacity(needs.len());
    let mut k = 0;
    let mut want = || {
        k += 1;
        needs[k - 1]
    };
    // dX = dP_x W_ih
    grads.push(want().then(|| {
        let mut dx = Buffer::zeroed(rows * s.input).into_vec();
        let (dp_x, w_ih) = (
            MatRef::new(&lg.dp_x, rows, cols),
            MatRef::new(s.w_ih, cols, s.input),
        );
        gemm_into(T::ONE, dp_x, w_ih, T::ZERO, &mut dx);
        Tensor::from_vec(dx, &[s.steps, s.batch, s.input])
    }));
    for d in lg.d_init {
        grads.push(want().then(|| Tensor::from_vec(d, &[s.batch, s.hidden])));
    }
    // dW_ih, dW_hh, db_ih, db_hh
    let has_bias = s.b_ih.is_some();
    let wanted = [want(), want(), has_bias && want(), has_bias && want()];
    let dps = (&lg.dp_x[..], lg.dp_h.as_deref().map(|v| &v[..]), cols);
    let params = parameter_grads(s, dps, out, wanted);
    let count = if has_bias { 4 } else { 2 };
    grads.extend(params.into_iter().take(count));
    grads
}
