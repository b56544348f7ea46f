//! One direction of one layer as the loops see it: [`Seq`] (the input, weights, initial
//! state and lengths as plain slices, and the per-step products every kernel shares),
//! [`Rows`] (where a loop writes its rows of a `[K, B, W]` result) and [`Saved`] (what a
//! forward keeps for its backward).
//!
//! Layout: every per-step array is `[T, B, W]`, step-major, in time order whatever the
//! direction; a reverse direction visits the steps from the end ([`Seq::order`]).

use std::ops::Range;

use tensor::ops::matmul::{gemm_into, MatRef};
use tensor::ops::packed::{gemm_packed, gemm_packed_cat, PackedMat};
use tensor::pool::Buffer;
use tensor::Float;

use super::helper::StepHelper;
use super::split::Halves;

/// The time steps `0..steps` in a direction's order: from the end if `reverse`.
pub(crate) fn step_order(steps: usize, reverse: bool) -> impl DoubleEndedIterator<Item = usize> {
    (0..steps).map(move |k| time_at(steps, reverse, k))
}

/// The time step at position `k` of a direction's order over `steps` steps.
pub(crate) fn time_at(steps: usize, reverse: bool, k: usize) -> usize {
    match reverse {
        true => steps - 1 - k,
        false => k,
    }
}

/// The time steps at positions `ks` of a direction's order, as a range of time.
pub(crate) fn times_at(steps: usize, reverse: bool, ks: Range<usize>) -> Range<usize> {
    match reverse {
        true => steps - ks.end..steps - ks.start,
        false => ks,
    }
}

/// Whether sequence `b` is still running at time `t`, given each sequence's length (all
/// are, without lengths).
pub(crate) fn running(lengths: Option<&[usize]>, t: usize, b: usize) -> bool {
    lengths.is_none_or(|l| t < l[b])
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
    pub w_step: Option<&'a PackedMat<T>>,
    /// GRU inference: `W_ihᵀ` packed for the per-step `x_t W_ihᵀ` (see [`Self::input_product`]).
    pub w_in: Option<&'a PackedMat<T>>,
    pub b_ih: Option<&'a [T]>,
    pub b_hh: Option<&'a [T]>,
    pub h0: &'a [T],
    pub c0: Option<&'a [T]>,
    pub lengths: Option<&'a [usize]>,
    pub reverse: bool,
    /// Whether a backward will follow: the forward then keeps what the backward needs (every
    /// step's activations, or only the states entering each segment, see `segment`), and the
    /// GRU projects its inputs a chunk of steps at a time; otherwise it keeps only the
    /// current step's activations.
    pub keep: bool,
    /// Steps per recompute segment ([`Recompute`](crate::Recompute)), in the order the steps
    /// are visited: `steps` or more keeps every step's activations; fewer keeps only the
    /// state entering each segment, and the backward recomputes the segment's activations.
    pub segment: usize,
    /// Steps per chunk of the backward (and of the GRU's input projection): the gate
    /// gradients of one chunk at a time are alive, and the weight gradients' products run
    /// per chunk ([`chunk_steps`]). Set from the whole batch, so that a half of it chunks as
    /// the whole does.
    pub chunk: usize,
    /// This sequence's first row in the whole batch, and the whole batch's rows: where its
    /// rows are in arrays of the whole batch (`out` and its gradient; see [`Self::at`]).
    pub row0: usize,
    pub all_rows: usize,
    /// `W_hh` packed for the backward's per-step product (set by [`backward`](super::backward)).
    pub w_hh_packed: Option<&'a PackedMat<T>>,
    /// A second thread for the per-step products, when there is one to spare.
    pub helper: Option<&'a StepHelper<'a, T>>,
}

impl<'a, T: Float> Seq<'a, T> {
    /// The time steps in the order this direction visits them.
    pub fn order(&self) -> impl DoubleEndedIterator<Item = usize> {
        step_order(self.steps, self.reverse)
    }

    /// Whether sequence `b` is still running at time `t`.
    pub fn valid(&self, t: usize, b: usize) -> bool {
        running(self.lengths, t, b)
    }

    /// The time step at position `k` of the visiting order.
    pub fn time(&self, k: usize) -> usize {
        time_at(self.steps, self.reverse, k)
    }

    /// The time steps at positions `ks` of the visiting order, as a range of time.
    pub fn times(&self, ks: Range<usize>) -> Range<usize> {
        times_at(self.steps, self.reverse, ks)
    }

    /// Whether the forward keeps every step's activations (training without recompute).
    pub fn keeps_all(&self) -> bool {
        self.keep && self.segment >= self.steps
    }

    /// Whether the forward keeps the state entering position `k` of the visiting order: the
    /// start of a recompute segment (after the first, whose state is the initial one).
    pub fn is_boundary(&self, k: usize) -> bool {
        self.keep && !self.keeps_all() && k > 0 && k.is_multiple_of(self.segment)
    }

    /// Where row `b` of step `t` starts in a `[K, B, H]` array of the whole batch (the
    /// outputs and their gradient).
    pub fn at(&self, t: usize, b: usize) -> usize {
        (t * self.all_rows + self.row0 + b) * self.hidden
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
            row0: self.row0 + r.start,
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

    /// `X_t W_ihᵀ + b_ih` for the steps `times` at once, into `p` (`[len, B, G·H]`; GRU
    /// training, a chunk of steps at a time). Each row is the same chain of operations
    /// however many rows there are, so the chunking does not change the bits.
    pub fn x_projection(&self, times: Range<usize>, p: &mut [T]) {
        let (rows, cols) = (
            times.len() * self.batch,
            p.len() / (times.len() * self.batch),
        );
        assert_eq!(
            self.x_stride,
            self.step(self.input),
            "a whole batch's input"
        );
        // Every row starts as the bias and the product adds onto it (one pass over `P`, not
        // a zeroing and then an addition).
        let beta = match self.b_ih {
            Some(bias) => {
                p.chunks_exact_mut(cols)
                    .for_each(|row| row.copy_from_slice(bias));
                T::ONE
            }
            None => T::ZERO,
        };
        // Many rows: a blocking gemm (which packs `W_ihᵀ` once per call anyway) is the tool.
        let x = &self.x[times.start * self.x_stride..][..rows * self.input];
        gemm_into(
            T::ONE,
            MatRef::new(x, rows, self.input),
            MatRef::new(self.w_ih, cols, self.input).t(),
            beta,
            p,
        );
    }

    /// The GRU's input projections: in training room for a chunk of steps'
    /// ([`x_projection`](Self::x_projection)), in inference for the current step's, which
    /// [`input_product`](Self::input_product) fills.
    pub fn step_inputs(&self, gates: usize) -> Buffer<T> {
        let slots = if self.keep {
            self.chunk.min(self.steps)
        } else {
            1
        };
        Buffer::zeroed(slots * self.step(gates * self.hidden))
    }

    /// Room for the LSTM's `P_t` (`[B, 4H]`), which its forward activates in place: a slot
    /// per step where the forward keeps them all (see [`slot`](Self::slot)), one otherwise.
    /// Not zeroed: each step's product writes all of its slot.
    pub fn step_slots(&self, gates: usize) -> Buffer<T> {
        let slots = if self.keeps_all() { self.steps } else { 1 };
        Buffer::for_overwrite(slots * self.step(gates * self.hidden))
    }

    /// Which step-sized slot of a per-step buffer step `t` uses: its own where the forward
    /// keeps every step's, otherwise the one slot.
    pub fn slot(&self, t: usize) -> usize {
        if self.keeps_all() {
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
            let w_step = self.w_step.expect("packed for the forward");
            return gemm_packed_cat([x_t, h], self.batch, w_step, T::ZERO, p_t);
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
    /// the end of a sequence). `out` is the forward's packed result (of the whole batch), so
    /// the backward keeps no copy of the entering states.
    pub fn h_prev<'o>(&self, out: &'o [T], t: usize, b: usize) -> &'o [T]
    where
        'a: 'o,
    {
        let hid = self.hidden;
        if t == self.first_step(b) {
            return &self.h0[b * hid..(b + 1) * hid];
        }
        let prev = if self.reverse { t + 1 } else { t - 1 };
        let at = self.at(prev, b);
        &out[at..at + hid]
    }

    /// `out += h W_hhᵀ` for one step: `[B, H] × [H, G·H]` (GRU).
    pub fn add_hidden_projection(&self, h: &[T], out: &mut [T]) {
        match self.helper {
            Some(helper) => helper.product(h, T::ONE, out),
            None => {
                let w_step = self.w_step.expect("packed for the forward");
                gemm_packed(h, self.batch, w_step, T::ONE, out)
            }
        }
    }

    /// `W_hh` (`[G·H, H]`) packed for the backward's per-step `dP_t W_hh`.
    pub(super) fn pack_w_hh(&self, gates: usize) -> PackedMat<T> {
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
pub(super) fn add_to_rows<T: Float>(m: &mut [T], bias: &[T]) {
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
    /// The step of the first block (a chunk's blocks are its steps').
    first: usize,
}

impl<'o, T: Float> Rows<'o, T> {
    /// All of `buffer`, in blocks of `rows` rows of `width`.
    pub(super) fn new(buffer: &'o mut [T], rows: usize, width: usize) -> Self {
        let blocks = buffer.chunks_exact_mut(rows * width).collect();
        Rows {
            blocks,
            width,
            first: 0,
        }
    }

    /// The same blocks, the first of them step `first`'s.
    pub(super) fn starting_at(self, first: usize) -> Self {
        Rows { first, ..self }
    }

    /// `buffer`'s blocks of `batch` rows, cut into rows `..half` and `half..`.
    pub(super) fn split(buffer: &'o mut [T], batch: usize, half: usize, width: usize) -> [Self; 2] {
        let (top, bottom) = buffer
            .chunks_exact_mut(batch * width)
            .map(|block| block.split_at_mut(half * width))
            .unzip();
        [top, bottom].map(|blocks| Rows {
            blocks,
            width,
            first: 0,
        })
    }

    /// Block `k`: this kernel's rows of step `k` (or, after the steps, of a final state's
    /// part), one after the other.
    pub fn block(&mut self, k: usize) -> &mut [T] {
        self.blocks[k - self.first]
    }

    /// Row `b` of block `k`.
    pub fn row(&mut self, k: usize, b: usize) -> &mut [T] {
        &mut self.blocks[k - self.first][b * self.width..(b + 1) * self.width]
    }

    /// Block `k` from `rows`: a final state's part.
    pub fn set_block(&mut self, k: usize, rows: &[T]) {
        self.blocks[k - self.first].copy_from_slice(rows);
    }
}

/// What the forward keeps for the backward, all in time order.
pub(crate) struct Saved<T: Float> {
    /// Per-step activations `[T, B, k·H]`, kernel-specific (empty for the vanilla RNN, whose
    /// activations are its outputs, and with recompute).
    pub acts: Buffer<T>,
    /// LSTM: the cell state after each step, `[T, B, H]` (empty with recompute).
    pub c: Buffer<T>,
    /// With recompute: the state entering each segment after the first, in the order they
    /// are visited (`h`, then the LSTM's `c`, each `[B, H]`).
    pub bounds: Vec<T>,
    /// Training split by rows ([`forward_by_rows`]): what each half kept, instead of the above.
    pub(super) halves: Option<Box<Halves<T>>>,
}

impl<T: Float> Saved<T> {
    /// A whole batch's activations, cell states and segment boundaries.
    pub(super) fn new(acts: Buffer<T>, c: Buffer<T>, bounds: Vec<T>) -> Self {
        Saved {
            acts,
            c,
            bounds,
            halves: None,
        }
    }

    /// Nothing kept (inference, or the RNN's forward).
    pub(super) fn none() -> Self {
        Self::new(Buffer::zeroed(0), Buffer::zeroed(0), Vec::new())
    }
}

/// A kernel's forward result: `[T + parts, B, H]` (the outputs, then the final state's
/// parts), and what the backward needs.
pub(crate) type Forward<T> = (Vec<T>, Saved<T>);

/// The activations of the steps `first..first + len` (time order) as the backward loop reads
/// them: all of a sequence's as the forward kept them, or one segment's, recomputed.
pub(crate) struct Acts<'a, T> {
    /// `[len, B, k·H]`, kernel-specific (see [`Saved::acts`]).
    pub acts: &'a [T],
    /// LSTM: `c_t`, `[len, B, H]`.
    pub c: &'a [T],
    pub first: usize,
    pub len: usize,
    /// LSTM: the cell state entering the first of these steps the direction visits (`c0`
    /// for a whole sequence), `[B, H]`.
    pub c_enter: &'a [T],
}

impl<'a, T: Float> Acts<'a, T> {
    /// Row `b` of step `t`'s activations, `width` wide.
    pub fn row(&self, t: usize, b: usize, batch: usize, width: usize) -> &'a [T] {
        let at = ((t - self.first) * batch + b) * width;
        &self.acts[at..at + width]
    }

    /// Row `b` of `c_t` (LSTM).
    pub fn c_t(&self, t: usize, b: usize, batch: usize, hidden: usize) -> &'a [T] {
        let at = ((t - self.first) * batch + b) * hidden;
        &self.c[at..at + hidden]
    }

    /// Row `b` of the cell state entering step `t` (LSTM): `c_enter` at the first step these
    /// activations' direction visits, else `c` of the step visited before.
    pub fn c_prev(&self, s: &Seq<'_, T>, t: usize, b: usize) -> &'a [T] {
        let hid = s.hidden;
        let entry = if s.reverse {
            self.first + self.len - 1
        } else {
            self.first
        };
        match t == entry {
            true => &self.c_enter[b * hid..(b + 1) * hid],
            false => self.c_t(if s.reverse { t + 1 } else { t - 1 }, b, s.batch, hid),
        }
    }
}
