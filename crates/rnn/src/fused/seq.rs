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
    (0..steps).map(move |k| if reverse { steps - 1 - k } else { k })
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
    pub fn order(&self) -> impl DoubleEndedIterator<Item = usize> {
        step_order(self.steps, self.reverse)
    }

    /// Whether sequence `b` is still running at time `t`.
    pub fn valid(&self, t: usize, b: usize) -> bool {
        running(self.lengths, t, b)
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
}

impl<'o, T: Float> Rows<'o, T> {
    /// All of `buffer`, in blocks of `rows` rows of `width`.
    pub(super) fn new(buffer: &'o mut [T], rows: usize, width: usize) -> Self {
        let blocks = buffer.chunks_exact_mut(rows * width).collect();
        Rows { blocks, width }
    }

    /// `buffer`'s blocks of `batch` rows, cut into rows `..half` and `half..`.
    pub(super) fn split(buffer: &'o mut [T], batch: usize, half: usize, width: usize) -> [Self; 2] {
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
    pub(super) halves: Option<Box<Halves<T>>>,
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
