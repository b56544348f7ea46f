//! The backward of one direction: its steps in reverse, a chunk at a time.
//!
//! ```text
//! for each chunk of steps, the last first:
//!     the kernel's backward loop over the chunk's steps   → dP for those steps, dh (and dc)
//!                                                          carried into the chunk before
//!     dW_ih += dP_cᵀ X_c,  dW_hh += Σ_t dP_tᵀ h_{t−1},  db += Σ_rows dP_c,  dX_c = dP_c W_ih
//! ```
//!
//! Only one chunk's gate gradients are alive ([`chunk_steps`] steps, about 1024 rows), so the
//! backward holds no `[T, B, G·H]` buffer beyond what the forward kept, and the products
//! still have thousands of rows. The input's gradient is written in place, a chunk's rows at
//! a time.
//!
//! With recompute ([`Recompute`](crate::Recompute)) the forward kept only the state entering
//! each segment; before the loop reaches a segment, its forward runs again from that state
//! ([`Segment`]), the training forward's arithmetic on the same inputs, so its activations
//! are the first forward's to the bit. Segments and chunks need not line up: the chunk's
//! gate gradients wait in their buffer while the loop moves from one segment to the next, and
//! the products run per chunk whatever the segments, so the gradients are bit-identical to
//! training without recompute.
//!
//! A batch the forward split in halves ([`forward_by_rows`](super::split::forward_by_rows))
//! runs each half's loop (and recompute) on its own thread, writing its rows of the chunk's
//! gate gradients; the products then run on the whole batch.

use std::borrow::Cow;
use std::ops::Range;

use tensor::ops::packed::PackedMat;
use tensor::pool::Buffer;
use tensor::simd::with_simd;
use tensor::{Float, Tensor};

use super::grads::{input_grad, ParamGrads};
use super::helper::{with_step_helper, StepHelper};
use super::loops::{forward_alone, BackwardWork};
use super::seq::{Acts, Rows, Saved, Seq};
use super::{team, Kind};

/// Rows of gate gradients per chunk (its steps: this many rows of the whole batch, at least
/// one step). The products of a chunk still have a thousand rows; 2048 measured the same
/// speed and 8–13 MB more memory on the large LSTM and GRU (`docs/performance.md`).
pub(super) const CHUNK_ROWS: usize = 1024;

/// Steps per chunk for a batch of `batch` rows.
pub(crate) fn chunk_steps(batch: usize) -> usize {
    (CHUNK_ROWS / batch.max(1)).max(1)
}

/// One direction's backward, from the gradient `g` of its packed result `out` (`[T + parts,
/// B, H]` each) to one gradient per input, in the order `x, init parts.., w_ih, w_hh, [b_ih,
/// b_hh]`; only those in `needs` are computed.
pub(super) fn backward<T: Float>(
    kind: Kind,
    s: &Seq<'_, T>,
    saved: &Saved<T>,
    out: &[T],
    g: &[T],
    needs: &[bool],
) -> Vec<Option<Tensor<T>>> {
    let (parts, cols) = (kind.parts(), kind.gates() * s.hidden);
    let w_hh = s.pack_w_hh(kind.gates());
    let has_bias = s.b_ih.is_some();
    let at = 1 + parts;
    let wanted = [
        needs[at],
        needs[at + 1],
        has_bias && needs[at + 2],
        has_bias && needs[at + 3],
    ];
    // LSTM and RNN: the hidden projection's gate gradients are the input projection's.
    let mut params = ParamGrads::new(s, cols, wanted, kind != Kind::Gru);
    let mut dx = needs[0].then(|| Buffer::zeroed(s.steps * s.step(s.input)).into_vec());
    // Each half (or the whole batch): its sequence, what its forward kept, and the state's
    // gradient carried back through its steps (from the final state's).
    let mut halves: Vec<Half<'_, T>> = match &saved.halves {
        Some(h) => (0..2)
            .map(|i| {
                let rows = [0..h.half, h.half..s.batch][i].clone();
                Half::new(kind, s.rows(rows), &h.saved[i], &w_hh, g)
            })
            .collect(),
        None => vec![Half::new(kind, *s, saved, &w_hh, g)],
    };
    let chunk = s.chunk;
    let dp_count = if kind == Kind::Gru { 2 } else { 1 };
    let mut dps: Vec<Buffer<T>> = (0..dp_count)
        .map(|_| Buffer::for_overwrite(chunk.min(s.steps) * s.step(cols)))
        .collect();
    for c in (0..s.steps.div_ceil(chunk)).rev() {
        let ks = c * chunk..((c + 1) * chunk).min(s.steps);
        let times = s.times(ks.clone());
        let len = times.len() * s.step(cols);
        match &mut halves[..] {
            [whole] => {
                let mut rows: Vec<Rows<'_, T>> = (dps.iter_mut())
                    .map(|dp| Rows::new(&mut dp[..len], s.batch, cols).starting_at(times.start))
                    .collect();
                with_step_helper(&[&w_hh], s.batch, |helper| {
                    whole.steps(kind, ks.clone(), out, g, &mut rows, helper)
                });
            }
            [top, bottom] => {
                let half = top.s.batch;
                let (mut top_rows, mut bottom_rows): (Vec<_>, Vec<_>) = (dps.iter_mut())
                    .map(|dp| {
                        let [a, b] = Rows::split(&mut dp[..len], s.batch, half, cols);
                        (a.starting_at(times.start), b.starting_at(times.start))
                    })
                    .unzip();
                team::join(
                    || top.steps(kind, ks.clone(), out, g, &mut top_rows, None),
                    || bottom.steps(kind, ks.clone(), out, g, &mut bottom_rows, None),
                );
            }
            _ => unreachable!("a batch runs whole or in two halves"),
        }
        let dp_x = &dps[0][..len];
        let dp_h = dps.get(1).map(|dp| &dp[..len]);
        params.add_chunk(s, times.clone(), dp_x, dp_h, out);
        if let Some(dx) = &mut dx {
            let rows = times.start * s.step(s.input)..times.end * s.step(s.input);
            input_grad(s, times.len(), dp_x, &mut dx[rows]);
        }
    }
    let mut grads: Vec<Option<Tensor<T>>> = Vec::with_capacity(needs.len());
    grads.push(dx.map(|dx| Tensor::from_vec(dx, &[s.steps, s.batch, s.input])));
    // The initial state's gradient: the halves' rows one after the other.
    for k in 0..parts {
        let d: Vec<T> = halves.iter().flat_map(|h| h.d[k].iter().copied()).collect();
        grads.push(needs[1 + k].then(|| Tensor::from_vec(d, &[s.batch, s.hidden])));
    }
    let count = if has_bias { 4 } else { 2 };
    grads.extend(params.finish(s).into_iter().take(count));
    grads
}

/// The rows one backward loop runs: the whole batch, or a half of it.
struct Half<'a, T: Float> {
    s: Seq<'a, T>,
    saved: &'a Saved<T>,
    /// The gradient of the state leaving the steps still to run (dh, and the LSTM's dc).
    d: Vec<Vec<T>>,
    /// With recompute: the segment whose activations are in hand.
    segment: Option<Segment<T>>,
}

/// One recompute segment's activations, made again from the state entering it.
struct Segment<T: Float> {
    index: usize,
    times: Range<usize>,
    saved: Saved<T>,
    /// The cell state entering the segment (LSTM).
    c_enter: Vec<T>,
}

impl<'a, T: Float> Half<'a, T> {
    fn new(
        kind: Kind,
        s: Seq<'a, T>,
        saved: &'a Saved<T>,
        w_hh: &'a PackedMat<T>,
        g: &[T],
    ) -> Self {
        // The gradient arriving at the final state: its rows of the blocks after the steps.
        let d = (0..kind.parts())
            .map(|k| g[s.at(s.steps + k, 0)..][..s.step(s.hidden)].to_vec())
            .collect();
        Half {
            s: Seq {
                w_hh_packed: Some(w_hh),
                ..s
            },
            saved,
            d,
            segment: None,
        }
    }

    /// The loop over positions `ks` (of the visiting order), writing their gate gradients to
    /// `dp`; recomputes the activations of each segment it enters first.
    fn steps(
        &mut self,
        kind: Kind,
        ks: Range<usize>,
        out: &[T],
        g: &[T],
        dp: &mut [Rows<'_, T>],
        helper: Option<&StepHelper<'_, T>>,
    ) {
        let s = Seq { helper, ..self.s };
        // The RNN's activations are its outputs: nothing to recompute.
        if s.keeps_all() || matches!(kind, Kind::Rnn(_)) {
            let acts = Acts {
                acts: &self.saved.acts,
                c: &self.saved.c,
                first: 0,
                len: s.steps,
                c_enter: s.c0.unwrap_or(&[]),
            };
            with_simd(BackwardWork(kind, &s, &acts, out, g, ks, &mut self.d, dp));
            return;
        }
        // Pieces of `ks` within one segment each, the last first.
        let seg = s.segment;
        let mut end = ks.end;
        while end > ks.start {
            let index = (end - 1) / seg;
            let start = (index * seg).max(ks.start);
            if self.segment.as_ref().map(|g| g.index) != Some(index) {
                self.segment = None; // its buffers go back to the pool first
                self.segment = Some(self.recompute(kind, index));
            }
            let segment = self.segment.as_ref().expect("just made");
            let acts = Acts {
                acts: &segment.saved.acts,
                c: &segment.saved.c,
                first: segment.times.start,
                len: segment.times.len(),
                c_enter: &segment.c_enter,
            };
            with_simd(BackwardWork(
                kind,
                &s,
                &acts,
                out,
                g,
                start..end,
                &mut self.d,
                dp,
            ));
            end = start;
        }
    }

    /// Segment `index`'s activations: its steps' forward again, from the state the forward
    /// kept at its start, with the training forward's arithmetic.
    fn recompute(&self, kind: Kind, index: usize) -> Segment<T> {
        let s = &self.s;
        let ks = index * s.segment..((index + 1) * s.segment).min(s.steps);
        let times = s.times(ks);
        let n = s.step(s.hidden);
        let (h0, c0) = match index {
            0 => (s.h0, s.c0.unwrap_or(&[])),
            _ => {
                let stride = kind.parts() * n;
                let at = (index - 1) * stride;
                let bound = &self.saved.bounds[at..at + stride];
                (&bound[..n], &bound[n..])
            }
        };
        // The segment's lengths, counted from its first step.
        let lengths: Option<Vec<usize>> = s.lengths.map(|l| {
            l.iter()
                .map(|&l| l.saturating_sub(times.start).min(times.len()))
                .collect()
        });
        // The segment's input rows, as a sequence of their own: the whole batch's where they
        // are, a half's gathered.
        let rows = times.len() * s.step(s.input);
        let x: Cow<'_, [T]> = match s.x_stride == s.step(s.input) {
            true => Cow::Borrowed(&s.x[times.start * s.x_stride..][..rows]),
            false => Cow::Owned(times.clone().flat_map(|t| s.x_t(t)).copied().collect()),
        };
        let sub = Seq {
            x: &x,
            x_stride: s.step(s.input),
            steps: times.len(),
            h0,
            c0: s.c0.map(|_| c0),
            lengths: lengths.as_deref(),
            segment: usize::MAX,
            row0: 0,
            all_rows: s.batch,
            w_hh_packed: None,
            helper: None,
            ..*s
        };
        let (_, saved) = forward_alone(kind, &sub);
        Segment {
            index,
            times,
            saved,
            c_enter: c0.to_vec(),
        }
    }
}
