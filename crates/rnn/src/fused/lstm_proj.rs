//! The fused LSTM with a projection, as `nn.LSTM(proj_size = P)`: the LSTM kernel's gate
//! arithmetic ([`lstm`](super::lstm)), with the hidden state `h` of P features made from the
//! cell's output `m_t` by `W_hr` (`[P, H]`).
//!
//! ```text
//! forward, per step:  P_t = [x_t | h_{t−1}] [W_ih | W_hh]ᵀ + b_ih + b_hh     W_hh is [4H, P]
//!                     i, f, g, o and c_t as in the LSTM;   m_t = o ⊙ tanh(c_t)   [B, H]
//!                     h_t = m_t W_hrᵀ                                            [B, P]
//! backward, per step (dh [B, P] and dc [B, H] flowing back from t + 1):
//!                     dh_t = dh + dout_t
//!                     dm   = dh_t W_hr                                           [B, H]
//!                     dP_t and dc_{t−1} from dm as the LSTM's cell_backward from its dh
//!                     dh_{t−1} = dP_t W_hh                                       [B, P]
//! after each chunk of steps c (the last first):
//!                     dW_hr += dh_cᵀ M_c,   dW_hh += dP_cᵀ H_c,   dW_ih += dP_cᵀ X_c,
//!                     db_ih = db_hh += Σ_rows dP_c,   dX_c = dP_c W_ih
//! ```
//!
//! Kept per step for training: the activated gates (4H), `c_t` and `m_t` (H each) and the
//! entering `h_{t−1}` (P); with recompute ([`Recompute`](crate::Recompute)) only the state
//! `(h, c)` entering each segment, and the backward runs a segment's forward again (the same
//! code, so the same values) before it reaches it. The backward holds one chunk's `dP` and
//! `dh_t` ([`chunk_steps`] steps, about 1024 rows); chunks do not depend on segments, so the
//! gradients are the same bits with recompute or without. Past a sequence's end
//! (`lengths`) the state carries over, the output is zero, and the rows of `dP_t` and
//! `dh_t` are zero, so those steps add nothing to the weight gradients.
//!
//! One direction's value on the tape is flat: the outputs `[T, B, P]`, then the final `h`
//! `[B, P]` and `c` `[B, H]` (of two widths, so not one `[T + 2, B, H]` array as for the
//! other kernels). The loops run on the calling thread, compiled for the widest vectors
//! ([`with_simd`]); the two directions of a bidirectional layer run in parallel. (The
//! unprojected kernels' batch split and step helper are not used here.)

use std::ops::Range;

use autograd::{Param, Var};
use tensor::ops::matmul::{gemm_into, MatRef};
use tensor::ops::packed::{gemm_packed, gemm_packed_cat, PackedMat};
use tensor::pool::Buffer;
use tensor::simd::{with_simd, SimdWork};
use tensor::{Float, Tensor};

use super::grads::column_sums;
use super::lstm::{cell_backward, cell_forward};
use super::seq::{add_to_rows, running, time_at, times_at};
use super::{chunk_steps, node_inputs, slice, Direction};

/// One direction's inputs, owned so that the backward can read them later.
struct Inputs<T: Float> {
    x: Tensor<T>,
    h0: Tensor<T>,
    c0: Tensor<T>,
    w_ih: Tensor<T>,
    w_hh: Tensor<T>,
    w_hr: Tensor<T>,
    b_ih: Option<Tensor<T>>,
    b_hh: Option<Tensor<T>>,
    lengths: Option<Vec<usize>>,
    reverse: bool,
    /// Steps per recompute segment ([`Recompute::segment_len`](crate::Recompute); `steps`
    /// when off, or when no backward follows).
    segment: usize,
}

/// The sizes of one direction: `steps` T, `batch` B, `input` I, `hidden` H, `proj` P.
#[derive(Clone, Copy)]
struct Dims {
    steps: usize,
    batch: usize,
    input: usize,
    hidden: usize,
    proj: usize,
}

impl<T: Float> Inputs<T> {
    fn dims(&self) -> Dims {
        let [steps, batch, input] = <[usize; 3]>::try_from(self.x.shape()).expect("3-D input");
        let [proj, hidden] = <[usize; 2]>::try_from(self.w_hr.shape()).expect("2-D weight_hr");
        Dims {
            steps,
            batch,
            input,
            hidden,
            proj,
        }
    }

    /// The time step at position `k` of this direction's order.
    fn time(&self, k: usize) -> usize {
        time_at(self.dims().steps, self.reverse, k)
    }

    /// Whether sequence `b` is still running at time `t`.
    fn valid(&self, t: usize, b: usize) -> bool {
        running(self.lengths.as_deref(), t, b)
    }

    /// `b_ih + b_hh` (`[4H]`), zeros without biases.
    fn cell_bias(&self) -> Vec<T> {
        let mut bias = vec![T::ZERO; 4 * self.dims().hidden];
        for b in [&self.b_ih, &self.b_hh].into_iter().flatten() {
            add_to_rows(&mut bias, slice(b));
        }
        bias
    }
}

/// Each step's values the backward reads (see the module doc), for the steps of times
/// `t0..`: row `(t − t0)·B + b` of each.
struct Steps<T> {
    t0: usize,
    gates: Vec<T>,
    c: Vec<T>,
    m: Vec<T>,
    h_in: Vec<T>,
}

impl<T: Float> Steps<T> {
    /// Room for `steps` steps (none: keep nothing).
    fn new(d: Dims, steps: usize) -> Self {
        let rows = steps * d.batch;
        // Every row of every step is written before the backward reads it.
        let room = |n: usize| Buffer::for_overwrite(rows * n).into_vec();
        Steps {
            t0: 0,
            gates: room(4 * d.hidden),
            c: room(d.hidden),
            m: room(d.hidden),
            h_in: room(d.proj),
        }
    }
}

/// What the forward keeps for the backward: every step's values or, with recompute, the
/// state `(h, c)` entering each segment (in this direction's order).
struct Saved<T> {
    steps: Steps<T>,
    bounds: Vec<[Vec<T>; 2]>,
}

/// The weights as the loops read them, packed once.
struct Packs<T: Float> {
    /// `[W_ih | W_hh]ᵀ` and `W_hrᵀ`, for the forward.
    w_step: PackedMat<T>,
    w_hr_t: PackedMat<T>,
    /// `b_ih + b_hh`.
    bias: Vec<T>,
}

impl<T: Float> Packs<T> {
    fn new(s: &Inputs<T>) -> Self {
        let Dims {
            input,
            hidden,
            proj,
            ..
        } = s.dims();
        let g4 = 4 * hidden;
        Packs {
            w_step: PackedMat::pack_stacked(&[
                MatRef::new(slice(&s.w_ih), g4, input).t(),
                MatRef::new(slice(&s.w_hh), g4, proj).t(),
            ]),
            w_hr_t: PackedMat::pack(MatRef::new(slice(&s.w_hr), proj, hidden).t()),
            bias: s.cell_bias(),
        }
    }
}

/// The forward over positions `ks` of this direction's order, from the state `(h, c)`,
/// which it leaves at the state after them: each step's outputs into `out` (the flat
/// result's, when given) and its values into `keep` (when given).
struct StepsWork<'a, T: Float> {
    s: &'a Inputs<T>,
    packs: &'a Packs<T>,
    ks: Range<usize>,
    state: [&'a mut [T]; 2],
    out: Option<&'a mut [T]>,
    keep: Option<&'a mut Steps<T>>,
}

impl<T: Float> SimdWork for StepsWork<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let StepsWork {
            s,
            packs,
            ks,
            state: [h, c],
            mut out,
            mut keep,
        } = self;
        let Dims {
            batch,
            input,
            hidden,
            proj,
            ..
        } = s.dims();
        let g4 = 4 * hidden;
        // Without `keep`, one step's gates and m_t.
        let (mut gates, mut m) = match keep {
            Some(_) => (vec![], vec![]),
            None => (vec![T::ZERO; batch * g4], vec![T::ZERO; batch * hidden]),
        };
        let (mut h_t, mut scratch) = (vec![T::ZERO; batch * proj], vec![T::ZERO; hidden]);
        let x = slice(&s.x);
        for k in ks {
            let t = s.time(k);
            let (p_t, m_t, c_all) = match keep.as_deref_mut() {
                Some(kept) => {
                    let at = t - kept.t0;
                    kept.h_in[at * batch * proj..][..batch * proj].copy_from_slice(h);
                    (
                        &mut kept.gates[at * batch * g4..][..batch * g4],
                        &mut kept.m[at * batch * hidden..][..batch * hidden],
                        &mut kept.c[at * batch * hidden..][..batch * hidden],
                    )
                }
                None => (&mut gates[..], &mut m[..], &mut [][..]),
            };
            let x_t = &x[t * batch * input..][..batch * input];
            gemm_packed_cat([x_t, &*h], batch, &packs.w_step, T::ZERO, p_t);
            for b in 0..batch {
                let (row, m_b) = (
                    &mut p_t[b * g4..(b + 1) * g4],
                    &mut m_t[b * hidden..(b + 1) * hidden],
                );
                let c_b = &mut c[b * hidden..(b + 1) * hidden];
                let c_t = match c_all.is_empty() {
                    false => &mut c_all[b * hidden..][..hidden],
                    true => &mut [],
                };
                if !s.valid(t, b) {
                    // Past the sequence's end: the state carries over, the output stays zero.
                    row.fill(T::ZERO);
                    m_b.fill(T::ZERO);
                    c_t.copy_from_slice(&c_b[..c_t.len()]);
                    continue;
                }
                cell_forward(row, &packs.bias, c_b, &mut scratch, c_t, m_b);
            }
            gemm_packed(m_t, batch, &packs.w_hr_t, T::ZERO, &mut h_t);
            for b in (0..batch).filter(|&b| s.valid(t, b)) {
                let row = &h_t[b * proj..(b + 1) * proj];
                h[b * proj..(b + 1) * proj].copy_from_slice(row);
                if let Some(out) = out.as_deref_mut() {
                    out[(t * batch + b) * proj..][..proj].copy_from_slice(row);
                }
            }
        }
    }
}

/// The forward: the flat result (outputs, final `h`, final `c`) and, when `keep`, what the
/// backward needs.
fn forward<T: Float>(s: &Inputs<T>, keep: bool) -> (Vec<T>, Option<Saved<T>>) {
    let d = s.dims();
    let Dims {
        steps,
        batch,
        hidden,
        proj,
        ..
    } = d;
    let packs = Packs::new(s);
    let recompute = keep && s.segment < steps;
    let mut saved = Saved {
        steps: Steps::new(d, if keep && !recompute { steps } else { 0 }),
        bounds: vec![],
    };
    let (mut h, mut c) = (slice(&s.h0).to_vec(), slice(&s.c0).to_vec());
    let mut out = vec![T::ZERO; (steps + 1) * batch * proj + batch * hidden];
    for first in (0..steps).step_by(s.segment) {
        if recompute {
            saved.bounds.push([h.clone(), c.clone()]);
        }
        with_simd(StepsWork {
            s,
            packs: &packs,
            ks: first..(first + s.segment).min(steps),
            state: [&mut h, &mut c],
            out: Some(&mut out),
            keep: (keep && !recompute).then_some(&mut saved.steps),
        });
    }
    let finals = steps * batch * proj;
    out[finals..finals + batch * proj].copy_from_slice(&h);
    out[finals + batch * proj..].copy_from_slice(&c);
    (out, keep.then_some(saved))
}

/// One chunk's gradients as the backward loop writes them, rows `(t − t0)·B + b` of the
/// chunk's times `t0..`: `dP`, `dh_t`, and with recompute the entering `h` and `m_t` (the
/// segment that held them may be gone when the chunk's products run).
struct ChunkGrads<T> {
    t0: usize,
    dp: Vec<T>,
    dh: Vec<T>,
    h_in: Vec<T>,
    m: Vec<T>,
}

/// The backward loop over positions `ks` of this direction's order (in reverse), reading the
/// steps' values from `kept`, carrying `dh` and `dc` back through the steps, writing the
/// chunk's rows. `c_before` is the cell state entering position `ks.start`.
struct BackwardWork<'a, T: Float> {
    s: &'a Inputs<T>,
    w: [&'a PackedMat<T>; 2],
    kept: &'a Steps<T>,
    c_before: &'a [T],
    ks: Range<usize>,
    g: &'a [T],
    carried: [&'a mut [T]; 2],
    chunk: &'a mut ChunkGrads<T>,
}

impl<T: Float> SimdWork for BackwardWork<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let BackwardWork {
            s,
            w: [w_hr, w_hh],
            kept,
            c_before,
            ks,
            g,
            carried: [dh, dc],
            chunk,
        } = self;
        let Dims {
            batch,
            hidden,
            proj,
            ..
        } = s.dims();
        let g4 = 4 * hidden;
        let (mut dm, mut dh_prev) = (vec![T::ZERO; batch * hidden], vec![T::ZERO; batch * proj]);
        let (mut zeros, mut tanh_c) = (vec![T::ZERO; hidden], vec![T::ZERO; hidden]);
        let copies = !chunk.h_in.is_empty();
        for k in ks.clone().rev() {
            let t = s.time(k);
            let at = t - kept.t0;
            // c_{t−1}: the cell state after the previous step visited.
            let c_prev = match k == ks.start {
                true => c_before,
                false => &kept.c[(s.time(k - 1) - kept.t0) * batch * hidden..][..batch * hidden],
            };
            let row = t - chunk.t0;
            if copies {
                (chunk.h_in[row * batch * proj..][..batch * proj])
                    .copy_from_slice(&kept.h_in[at * batch * proj..][..batch * proj]);
                (chunk.m[row * batch * hidden..][..batch * hidden])
                    .copy_from_slice(&kept.m[at * batch * hidden..][..batch * hidden]);
            }
            // dh_t = dh + dout_t on the running rows; zero on the others, whose dh passes by.
            let dh_t = &mut chunk.dh[row * batch * proj..][..batch * proj];
            dh_t.fill(T::ZERO);
            for b in (0..batch).filter(|&b| s.valid(t, b)) {
                let out = (t * batch + b) * proj;
                for ((d, carried), out) in (dh_t[b * proj..(b + 1) * proj].iter_mut())
                    .zip(&dh[b * proj..(b + 1) * proj])
                    .zip(&g[out..out + proj])
                {
                    *d = *carried + *out;
                }
            }
            gemm_packed(dh_t, batch, w_hr, T::ZERO, &mut dm);
            let dp_t = &mut chunk.dp[row * batch * g4..][..batch * g4];
            dp_t.fill(T::ZERO);
            for b in (0..batch).filter(|&b| s.valid(t, b)) {
                let rows = b * hidden..(b + 1) * hidden;
                let r = at * batch + b; // this row among the kept steps'
                cell_backward(
                    &kept.gates[r * g4..][..g4],
                    &kept.c[r * hidden..][..hidden],
                    &c_prev[rows.clone()],
                    &dm[rows.clone()],
                    &mut zeros,
                    &mut dc[rows],
                    &mut dp_t[b * g4..(b + 1) * g4],
                    &mut tanh_c,
                );
            }
            gemm_packed(dp_t, batch, w_hh, T::ZERO, &mut dh_prev);
            for b in (0..batch).filter(|&b| s.valid(t, b)) {
                let rows = b * proj..(b + 1) * proj;
                dh[rows.clone()].copy_from_slice(&dh_prev[rows]);
            }
        }
    }
}

/// `acc += a (`[rows, k]`)ᵀ × `b` (`[rows, n]`), `[k, n]`.
fn add_t_times<T: Float>(acc: &mut [T], a: &[T], b: &[T], rows: usize, k: usize, n: usize) {
    gemm_into(
        T::ONE,
        MatRef::new(a, rows, k).t(),
        MatRef::new(b, rows, n),
        T::ONE,
        acc,
    );
}

/// One gradient per input of the node, in the order `x, h0, c0, w_ih, w_hh, [b_ih, b_hh],
/// w_hr`; only those in `needs`.
///
/// The steps run in reverse, a chunk of [`chunk_steps`] steps at a time: the loop writes the
/// chunk's `dP` and `dh_t`, then the chunk's products run (`dW_ih += dP_cᵀ X_c`, `dW_hh +=
/// dP_cᵀ H_c`, `dW_hr += dh_cᵀ M_c`, `db += Σ dP_c`, `dX_c = dP_c W_ih`). With recompute, the
/// forward of each segment runs again from the state that entered it before the loop
/// reaches it; the chunks do not depend on the segments, so the gradients are the same bits.
fn input_grads<T: Float>(
    s: &Inputs<T>,
    saved: &Saved<T>,
    g: &[T],
    needs: &[bool],
) -> Vec<Option<Tensor<T>>> {
    let d = s.dims();
    let Dims {
        steps,
        batch,
        input,
        hidden,
        proj,
    } = d;
    let g4 = 4 * hidden;
    let recompute = !saved.bounds.is_empty();
    let w_hr = PackedMat::pack(MatRef::new(slice(&s.w_hr), proj, hidden));
    let w_hh = PackedMat::pack(MatRef::new(slice(&s.w_hh), g4, proj));
    let packs = recompute.then(|| Packs::new(s));
    // What ends in a tensor comes from the pool (a tensor's storage goes back there when
    // dropped: a plain vector would add to it every call).
    let pooled = |n: usize| Buffer::zeroed(n).into_vec();
    let finals = steps * batch * proj;
    let mut dh = pooled(batch * proj);
    dh.copy_from_slice(&g[finals..finals + batch * proj]);
    let mut dc = pooled(batch * hidden);
    dc.copy_from_slice(&g[finals + batch * proj..]);
    let chunk_len = chunk_steps(batch).min(steps);
    let room = |n: usize| vec![T::ZERO; chunk_len * batch * n];
    let mut chunk = ChunkGrads {
        t0: 0,
        dp: room(g4),
        dh: room(proj),
        h_in: if recompute { room(proj) } else { vec![] },
        m: if recompute { room(hidden) } else { vec![] },
    };
    let mut segment = Steps::new(d, if recompute { s.segment } else { 0 });
    let (mut dw_ih, mut dw_hh, mut dw_hr) =
        (pooled(g4 * input), pooled(g4 * proj), pooled(proj * hidden));
    let mut db = pooled(g4);
    let mut dx = needs[0].then(|| pooled(steps * batch * input));
    let x = slice(&s.x);
    // The loop stops where a chunk or a segment starts, whichever comes first going back.
    let mut end = steps;
    while end > 0 {
        let k = end - 1;
        let (seg_start, chunk_start) = (k / s.segment * s.segment, k / chunk_len * chunk_len);
        let start = seg_start.max(chunk_start);
        let times = |ks: Range<usize>| times_at(steps, s.reverse, ks);
        if recompute && (k % s.segment == s.segment - 1 || k == steps - 1) {
            // Entering a segment: its forward again, from the state that entered it.
            let [mut h, mut c] = saved.bounds[k / s.segment].clone();
            segment.t0 = times(seg_start..k + 1).start;
            with_simd(StepsWork {
                s,
                packs: packs.as_ref().expect("made for recompute"),
                ks: seg_start..k + 1,
                state: [&mut h, &mut c],
                out: None,
                keep: Some(&mut segment),
            });
        }
        if k % chunk_len == chunk_len - 1 || k == steps - 1 {
            chunk.t0 = times(chunk_start..k + 1).start;
        }
        let kept = if recompute { &segment } else { &saved.steps };
        // The cell state entering position `start`: the initial one, a segment's, or kept.
        let c_before: &[T] = match start {
            0 => slice(&s.c0),
            _ if recompute && start == seg_start => &saved.bounds[start / s.segment][1],
            _ => {
                let t = s.time(start - 1);
                &kept.c[(t - kept.t0) * batch * hidden..][..batch * hidden]
            }
        };
        with_simd(BackwardWork {
            s,
            w: [&w_hr, &w_hh],
            kept,
            c_before,
            ks: start..end,
            g,
            carried: [&mut dh, &mut dc],
            chunk: &mut chunk,
        });
        end = start;
        if start != chunk_start {
            continue;
        }
        // The chunk's products.
        let ts = times(chunk_start..(chunk_start + chunk_len).min(steps));
        let rows = ts.len() * batch;
        let (dp, dh_c) = (&chunk.dp[..rows * g4], &chunk.dh[..rows * proj]);
        let (h_in, m) = match recompute {
            true => (&chunk.h_in[..rows * proj], &chunk.m[..rows * hidden]),
            false => (
                &saved.steps.h_in[ts.start * batch * proj..][..rows * proj],
                &saved.steps.m[ts.start * batch * hidden..][..rows * hidden],
            ),
        };
        let x_c = &x[ts.start * batch * input..][..rows * input];
        add_t_times(&mut dw_ih, dp, x_c, rows, g4, input);
        add_t_times(&mut dw_hh, dp, h_in, rows, g4, proj);
        add_t_times(&mut dw_hr, dh_c, m, rows, proj, hidden);
        column_sums(dp, g4, 0..g4, &mut db);
        if let Some(dx) = dx.as_mut() {
            gemm_into(
                T::ONE,
                MatRef::new(dp, rows, g4),
                MatRef::new(slice(&s.w_ih), g4, input),
                T::ZERO,
                &mut dx[ts.start * batch * input..][..rows * input],
            );
        }
    }
    let mut grads = vec![
        dx.map(|dx| Tensor::from_vec(dx, &[steps, batch, input])),
        needs[1].then(|| Tensor::from_vec(dh, &[batch, proj])),
        needs[2].then(|| Tensor::from_vec(dc, &[batch, hidden])),
        needs[3].then(|| Tensor::from_vec(dw_ih, &[g4, input])),
        needs[4].then(|| Tensor::from_vec(dw_hh, &[g4, proj])),
    ];
    if s.b_ih.is_some() {
        let db = (needs[5] || needs[6]).then(|| Tensor::from_vec(db, &[g4]));
        grads.push(db.clone().filter(|_| needs[5]));
        grads.push(db.filter(|_| needs[6]));
    }
    let last = needs.len() - 1;
    grads.push(needs[last].then(|| Tensor::from_vec(dw_hr, &[proj, hidden])));
    grads
}

/// Runs one or two directions of a projected LSTM layer over `x` (`[T, B, I]`), the forwards
/// in parallel, and records each as one node. Returns each direction's output `[T, B, P]` and
/// final `(h, c)`.
pub(super) fn run<T: Float>(
    x: &Var<T>,
    directions: Vec<Direction<'_, T>>,
    lengths: Option<&[usize]>,
) -> Vec<(Var<T>, Vec<Var<T>>)> {
    let x_value = x.value().contiguous();
    let groups: Vec<String> = directions.iter().map(|d| d.group.clone()).collect();
    let prepared: Vec<(Inputs<T>, Vec<Var<T>>, bool)> = directions
        .into_iter()
        .map(|d| {
            let p = d.fused.params;
            let w_hr = p.w_hr.as_ref().expect("a projected LSTM");
            let (vars, keep) = node_inputs(x, &d);
            let init = |k: usize| d.init[k].value().contiguous();
            let inputs = Inputs {
                x: x_value.clone(),
                h0: init(0),
                c0: init(1),
                w_ih: p.w_ih.value(),
                w_hh: p.w_hh.value(),
                w_hr: w_hr.value(),
                b_ih: p.b_ih.as_ref().map(Param::value),
                b_hh: p.b_hh.as_ref().map(Param::value),
                lengths: lengths.map(<[usize]>::to_vec),
                reverse: d.reverse,
                segment: match keep {
                    true => d.recompute.segment_len(x.shape()[0]),
                    false => x.shape()[0],
                },
            };
            (inputs, vars, keep)
        })
        .collect();
    // The variables stay on this thread (a tape is not `Send`); the kernels need only the
    // inputs' values.
    let forward = |(inputs, keep): (&Inputs<T>, bool)| forward(inputs, keep);
    let jobs: Vec<(&Inputs<T>, bool)> = prepared.iter().map(|(i, _, k)| (i, *k)).collect();
    let forwards = match jobs[..] {
        [a, b] => {
            let (fa, fb) = rayon::join(|| forward(a), || forward(b));
            vec![fa, fb]
        }
        _ => jobs.into_iter().map(forward).collect(),
    };
    prepared
        .into_iter()
        .zip(forwards)
        .zip(groups)
        .map(|(((inputs, vars, _), (flat, saved)), group)| {
            x.tape()
                .scoped(&group, || record(inputs, vars, flat, saved))
        })
        .collect()
}

/// Puts one direction on the tape: a node whose value is the flat result, then views of it
/// for the output and the final `h` and `c`.
fn record<T: Float>(
    inputs: Inputs<T>,
    vars: Vec<Var<T>>,
    flat: Vec<T>,
    saved: Option<Saved<T>>,
) -> (Var<T>, Vec<Var<T>>) {
    let Dims {
        steps,
        batch,
        hidden,
        proj,
        ..
    } = inputs.dims();
    let len = flat.len();
    let needs: Vec<bool> = vars.iter().map(Var::requires_grad).collect();
    let refs: Vec<&Var<T>> = vars.iter().collect();
    let value = Tensor::from_vec(flat, &[len]);
    let node = Var::custom_op("lstm_proj_sequence", &refs, value, move |g| {
        let saved = saved
            .as_ref()
            .expect("a forward that kept its values for the backward");
        let g = g.contiguous();
        input_grads(&inputs, saved, slice(&g), &needs)
    });
    let outputs = steps * batch * proj;
    let output = node.narrow(0, 0, outputs).reshape(&[steps, batch, proj]);
    let h_n = node
        .narrow(0, outputs, batch * proj)
        .reshape(&[batch, proj]);
    let c_n = (node.narrow(0, outputs + batch * proj, batch * hidden)).reshape(&[batch, hidden]);
    (output, vec![h_n, c_n])
}
