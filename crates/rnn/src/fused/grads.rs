//! After the backward loop: the input's and the parameters' gradients, each one large product
//! over all steps at once, from the gate gradients `dP` (`[T·B, G·H]`) the loop wrote.
//!
//! ```text
//! dX = dP_x W_ih,   dW_ih = dP_xᵀ X,   dW_hh = Σ_t dP_tᵀ h_{t−1},   db = Σ_rows dP
//! ```
//!
//! Only the gradients the tape asks for are computed.

use std::ops::Range;

use tensor::ops::matmul::{gemm_into, MatRef};
use tensor::ops::packed::{gemm_packed_tn, PackedMat};
use tensor::pool::Buffer;
use tensor::simd::{with_simd, SimdWork};
use tensor::{Float, Tensor};

use super::seq::{LoopGrads, Seq};
use super::{team, Kind};

/// The parameters' gradients, `[dW_ih, dW_hh, db_ih, db_hh]`, those `wanted` (the biases'
/// only for a layer with biases):
///
/// ```text
/// dW_ih = dP_xᵀ X,   dW_hh = Σ_t dP_tᵀ h_{t−1},   db_ih = Σ_rows dP_x,   db_hh = Σ_rows dP_h
/// ```
///
/// with `dP_x`, `dP_h` `[T·B, G·H]` (the same for LSTM and RNN, whose `db_hh` is then `db_ih`).
///
/// Large products run in [`gemm_into`], which blocks for the caches and splits across threads
/// itself. Smaller ones run on the packed kernel ([`gemm_packed_tn`]), reading `dP` where it
/// is (no transposed copy) against `X` and the entering states `H_in` packed once here
/// (`[256, 800] × [800, 64]` with its packing: 215 GFLOP/s against `gemm_into`'s 180); on two
/// threads they split by halves of their rows (gate units) with the bias sums of those units,
/// one half per thread ([`team::join`]: the second thread has just run half the backward loop
/// and is still awake). Each element is computed as on one thread, so the bits are the same.
pub(super) fn parameter_grads<T: Float>(
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

/// `dW_hh = Σ_t dP_tᵀ h_{t−1}` (`dp` is `[T·B, G·H]`) into `acc` with the entering states read
/// from the outputs: one product of `dP` against the outputs shifted by one step (forwards,
/// step t entered with the output of t − 1; in reverse, of t + 1), plus `D₀ᵀ h0` for the rows
/// `D₀` of each sequence's first step. Where a shorter sequence starts in reverse, the shifted
/// output is padding, zero, so it adds nothing there.
pub(super) fn hidden_weight_grad<T: Float>(s: &Seq<'_, T>, dp: &[T], out: &[T], acc: &mut [T]) {
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
pub(super) fn input_grads<T: Float>(
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
