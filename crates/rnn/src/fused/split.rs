//! Two threads for one sequence by halves of its batch: the rows of a batch are independent
//! sequences, so each thread runs the whole loop for its half, forward and backward.
//!
//! Invariants: each output element is computed as on one thread (a packed product's rows are
//! independent), so the bits are the same; each half writes its own rows of the whole batch's
//! buffers ([`Rows::split`]), so nothing is merged after inference. Sequences below the
//! thresholds here run whole: two threads cost a fork, a join and the gathering of each
//! half's rows.

use std::ops::Range;

use tensor::pool::Buffer;
use tensor::simd::with_simd;
use tensor::Float;

use super::loops::{forward, forward_alone, ForwardWork};
use super::seq::{Forward, Rows, Saved, Seq};
use super::{team, Kind};

/// A batch trained as two sequences of rows `0..half` and `half..`, one per thread: what each
/// half's forward kept, for its backward loop. Their outputs are not kept twice: the
/// backward reads each half's rows from the node's value, where they are.
pub(super) struct Halves<T: Float> {
    pub half: usize,
    pub saved: [Saved<T>; 2],
}

/// Two threads for one sequence by splitting its batch: the rows of a batch are independent
/// sequences, so each thread runs the whole loop for half of them. Unlike sharing each step's
/// product with the helper, nothing is handed over per step and the gate arithmetic is split
/// too; each output element is computed as on one thread (a packed product's rows are
/// independent), so the bits are the same.
///
/// Inference reads the input in place (see [`Seq::rows`]) and each half writes its rows of
/// the whole batch's result (see [`Rows::split`]), so the halves need no merging.
///
/// Training splits as well: each half is a sequence of its own, input gathered, and keeps its
/// own record for its backward loop ([`backward`](super::backward)). The halves then run without
/// meeting once in the sequence, where the helper meets the loop thread twice a step (and
/// copies the step's left side and its half of the result across): 10–20% faster training
/// steps on two threads (`docs/performance.md`).
pub(super) fn forward_by_rows<T: Float>(kind: Kind, s: &Seq<'_, T>) -> Forward<T> {
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

/// Where [`forward_by_rows`] splits `s`'s batch, if it does: at half, on two threads or more,
/// for batches of at least 2 × [`ROWS_SPLIT_MIN`] rows and sequences of at least
/// [`ROWS_SPLIT_MACS`] multiply-adds ([`ROWS_SPLIT_TRAINING_MACS`] in training).
pub(super) fn row_split<T: Float>(kind: Kind, s: &Seq<'_, T>) -> Option<usize> {
    let half = s.batch / 2;
    let split = match s.keep {
        false => kind.macs(s) >= ROWS_SPLIT_MACS,
        true => kind.macs(s) >= ROWS_SPLIT_TRAINING_MACS,
    };
    (split && half >= ROWS_SPLIT_MIN && rayon::current_num_threads() >= 2).then_some(half)
}

/// Batches of fewer than twice this many rows are not split.
pub(super) const ROWS_SPLIT_MIN: usize = 8;

/// Sequences of fewer multiply-adds are not split: two threads cost a fork and a join (and
/// waking the other thread, tens of microseconds when it slept).
pub(super) const ROWS_SPLIT_MACS: usize = 1 << 20;

/// The same for training, which also gathers each half's input, outputs and gradient: the
/// small LSTM and GRU (1.5–2e7 multiply-adds) gain from the split, the small RNN (4.9e6)
/// loses.
pub(super) const ROWS_SPLIT_TRAINING_MACS: usize = 1 << 23;

/// Rows `r` of every step of the `[K, batch, width]` array `m`, as `[K, rows, width]`.
pub(super) fn gather_rows<T: Float>(
    m: &[T],
    batch: usize,
    width: usize,
    r: Range<usize>,
) -> Vec<T> {
    let mut out = Vec::with_capacity(m.len() / batch.max(1) * r.len());
    for step in m.chunks_exact(batch * width) {
        out.extend_from_slice(&step[r.start * width..r.end * width]);
    }
    out
}

/// The inverse of two [`gather_rows`]: `[K, top_rows, width]` and `[K, bottom_rows, width]`
/// interleaved step by step into `[K, top_rows + bottom_rows, width]`.
pub(super) fn merge_rows<T: Float>(
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
