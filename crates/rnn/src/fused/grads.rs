//! The weight and input gradients of one chunk of steps, from the gate gradients `dP`
//! (`[rows, G·H]`) the backward loop wrote for it ([`backward`](super::backward)):
//!
//! ```text
//! dX_c = dP_x W_ih,   dW_ih += dP_xᵀ X_c,   dW_hh += Σ_t dP_tᵀ h_{t−1},   db += Σ_rows dP
//! ```
//!
//! Only the gradients the tape asks for are computed.

use std::ops::Range;

use tensor::ops::matmul::{gemm_into, MatRef};
use tensor::ops::packed::{gemm_packed_tn, PackedMat};
use tensor::pool::Buffer;
use tensor::simd::{with_simd, SimdWork};
use tensor::{Float, Tensor};

use super::seq::Seq;
use super::team;

/// The parameters' gradients, `[dW_ih, dW_hh, db_ih, db_hh]`, those `wanted` (the biases'
/// only for a layer with biases), summed over the chunks of the backward:
///
/// ```text
/// dW_ih = Σ_c dP_xᵀ X,   dW_hh = Σ_c Σ_t dP_tᵀ h_{t−1},   db_ih = Σ_rows dP_x,   db_hh = Σ_rows dP_h
/// ```
///
/// with `dP_x`, `dP_h` a chunk's `[rows, G·H]` (the same for LSTM and RNN, whose `db_hh` is
/// then `db_ih`).
///
/// Large products run in [`gemm_into`], which blocks for the caches and splits across threads
/// itself. Smaller ones run on the packed kernel ([`gemm_packed_tn`]), reading `dP` where it
/// is (no transposed copy) against `X` and the entering states `H_in` packed once per chunk
/// (`[256, 800] × [800, 64]` with its packing: 215 GFLOP/s against `gemm_into`'s 180); on two
/// threads they split by halves of their rows (gate units) with the bias sums of those units,
/// one half per thread ([`team::join`]: the second thread has just run half the backward loop
/// and is still awake). Each element is computed as on one thread, so the bits are the same.
pub(super) struct ParamGrads<T: Float> {
    /// `[dW_ih, dW_hh, db_ih, db_hh]`, each empty unless computed.
    grads: [Vec<T>; 4],
    /// Which are computed: `wanted`, with the one bias sum serving both biases where `dP_h`
    /// is `dP_x`.
    work: [bool; 4],
    wanted: [bool; 4],
    /// Whether `dP_h` is `dP_x` (LSTM, RNN).
    shared: bool,
    cols: usize,
}

impl<T: Float> ParamGrads<T> {
    pub fn new(s: &Seq<'_, T>, cols: usize, wanted: [bool; 4], shared: bool) -> Self {
        let sum_x = wanted[2] || (shared && wanted[3]);
        let work = [wanted[0], wanted[1], sum_x, wanted[3] && !shared];
        let widths = [s.input, s.hidden, 1, 1];
        let grads = [0, 1, 2, 3].map(|i| {
            let len = if work[i] { cols * widths[i] } else { 0 };
            Buffer::zeroed(len).into_vec()
        });
        ParamGrads {
            grads,
            work,
            wanted,
            shared,
            cols,
        }
    }

    /// Adds the steps `times`' share, from their gate gradients `dp_x`, `dp_h` (`[len, B,
    /// G·H]`, `None` for `dp_h` where it is `dp_x`) and the outputs `out`.
    pub fn add_chunk(
        &mut self,
        s: &Seq<'_, T>,
        times: Range<usize>,
        dp_x: &[T],
        dp_h: Option<&[T]>,
        out: &[T],
    ) {
        let (work, cols) = (self.work, self.cols);
        let k = times.len() * s.batch;
        let dp_h = dp_h.unwrap_or(dp_x);
        let widths = [s.input, s.hidden, 1, 1];
        let macs = [0, 1].map(|i| if work[i] { k * cols * widths[i] } else { 0 });
        let x_rows = &s.x[times.start * s.step(s.input)..times.end * s.step(s.input)];
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
            let [w_ih, w_hh, b_ih, b_hh] = &mut self.grads;
            if work[0] {
                let x = MatRef::new(x_rows, k, s.input);
                gemm_into(T::ONE, MatRef::new(dp_x, k, cols).t(), x, T::ONE, w_ih);
            }
            if work[1] {
                hidden_weight_grad(s, times, dp_h, out, w_hh);
            }
            bias_sums(0..cols, b_ih, b_hh);
            return;
        }
        let x = work[0].then(|| PackedMat::pack(MatRef::new(x_rows, k, s.input)));
        let h_in = work[1].then(|| {
            PackedMat::from_rows(k, s.hidden, |kk| {
                let (t, b) = (times.start + kk / s.batch, kk % s.batch);
                s.valid(t, b).then(|| s.h_prev(out, t, b))
            })
        });
        // Rows `r` (gate units) of each gradient wanted.
        let rows = |r: Range<usize>, [w_ih, w_hh, b_ih, b_hh]: [&mut [T]; 4]| {
            for (dp, packed, acc) in [(dp_x, &x, w_ih), (dp_h, &h_in, w_hh)] {
                if let Some(packed) = packed {
                    gemm_packed_tn(dp, cols, r.clone(), packed, T::ONE, acc);
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
            for (i, (g, w)) in self.grads.iter_mut().zip(widths).enumerate() {
                let at = (half * w).min(g.len()); // unwanted ones are empty
                (top[i], bottom[i]) = g.split_at_mut(at);
            }
            team::join(|| rows(0..half, top), || rows(half..cols, bottom));
        } else {
            let [a, b, c, d] = &mut self.grads;
            rows(0..cols, [a, b, c, d]);
        }
    }

    /// The sums, as tensors: `[dW_ih, dW_hh, db_ih, db_hh]`, `None` where not wanted.
    pub fn finish(self, s: &Seq<'_, T>) -> [Option<Tensor<T>>; 4] {
        let (wanted, cols) = (self.wanted, self.cols);
        let [w_ih, w_hh, b_ih, b_hh] = self.grads;
        let db_x = self.work[2].then(|| Tensor::from_vec(b_ih, &[cols]));
        let db_hh = match self.shared {
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
}

/// Weight gradients of 2²⁴ multiply-adds or more run in [`gemm_into`] (the packed kernel reads
/// the whole `k` of a panel per row block, and falls far behind a blocking gemm on such
/// shapes: see `docs/performance.md`)...
pub(super) const GEMM_SPLITS_MACS: usize = 1 << 24;

/// ...and below that, those of fewer than this many stay on one thread.
pub(super) const WEIGHT_SPLIT_MACS: usize = 1 << 23;

/// Where the weight gradients split, their rows split at a multiple of this.
pub(super) const SPLIT_ROWS: usize = 16;

/// Columns `r` of the sums of the rows of `dp` (`cols` wide) into `sums`, row after row,
/// compiled for the widest vectors.
pub(super) fn column_sums<T: Float>(dp: &[T], cols: usize, r: Range<usize>, sums: &mut [T]) {
    with_simd(ColumnSums(dp, cols, r, sums));
}

pub(super) struct ColumnSums<'a, T>(&'a [T], usize, Range<usize>, &'a mut [T]);

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

/// `acc += Σ_t dP_tᵀ h_{t−1}` over the steps `times` (`dp` is their `[len·B, G·H]`), with the
/// entering states read from the outputs: one product of `dP` against the outputs shifted by
/// one step (forwards, step t entered with the output of t − 1; in reverse, of t + 1), leaving
/// out the direction's first step, plus `D₀ᵀ h0` for the rows `D₀` of each sequence's first
/// step. Where a shorter sequence starts in reverse, the shifted output is padding, zero, so
/// it adds nothing there.
pub(super) fn hidden_weight_grad<T: Float>(
    s: &Seq<'_, T>,
    times: Range<usize>,
    dp: &[T],
    out: &[T],
    acc: &mut [T],
) {
    let (batch, hidden) = (s.batch, s.hidden);
    let cols = dp.len() / (times.len() * batch);
    // The steps entered from another step's output: all but the direction's first.
    let shifted = match s.reverse {
        true => times.start..times.end.min(s.steps - 1),
        false => times.start.max(1)..times.end,
    };
    if !shifted.is_empty() {
        let from = if s.reverse {
            shifted.start + 1
        } else {
            shifted.start - 1
        };
        let dp_rows =
            &dp[(shifted.start - times.start) * batch * cols..][..shifted.len() * batch * cols];
        let out_rows = &out[from * batch * hidden..][..shifted.len() * batch * hidden];
        gemm_into(
            T::ONE,
            MatRef::new(dp_rows, shifted.len() * batch, cols).t(),
            MatRef::new(out_rows, shifted.len() * batch, hidden),
            T::ONE,
            acc,
        );
    }
    // Only the chunks holding some sequence's first step have a `D₀`.
    if (0..batch).any(|b| times.contains(&s.first_step(b))) {
        let mut first = vec![T::ZERO; batch * cols];
        for (b, row) in first.chunks_exact_mut(cols).enumerate() {
            let t = s.first_step(b);
            if times.contains(&t) {
                let at = ((t - times.start) * batch + b) * cols;
                row.copy_from_slice(&dp[at..at + cols]);
            }
        }
        gemm_into(
            T::ONE,
            MatRef::new(&first, batch, cols).t(),
            MatRef::new(s.h0, batch, hidden),
            T::ONE,
            acc,
        );
    }
}

/// `dX = dP_x W_ih` for `steps` steps into `dx` (`[steps·B, I]`), from their gate gradients
/// `dp_x` (`[steps·B, G·H]`).
pub(super) fn input_grad<T: Float>(s: &Seq<'_, T>, steps: usize, dp_x: &[T], dx: &mut [T]) {
    let rows = steps * s.batch;
    let cols = dp_x.len() / rows;
    gemm_into(
        T::ONE,
        MatRef::new(dp_x, rows, cols),
        MatRef::new(s.w_ih, cols, s.input),
        T::ZERO,
        dx,
    );
}
