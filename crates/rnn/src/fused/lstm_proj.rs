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
//! after the loop:     dW_hr = Σ_t dh_tᵀ m_t,   dW_hh = Σ_t dP_tᵀ h_{t−1},
//!                     dW_ih = dPᵀ X,   dX = dP W_ih,   db_ih = db_hh = Σ_rows dP
//! ```
//!
//! Kept per step for training: the activated gates (4H), `c_t` and `m_t` (H each) and the
//! entering `h_{t−1}` (P). Past a sequence's end (`lengths`) the state carries over, the
//! output is zero, and the rows of `dP_t` and `dh_t` are zero, so those steps add nothing to
//! the weight gradients.
//!
//! One direction's value on the tape is flat: the outputs `[T, B, P]`, then the final `h`
//! `[B, P]` and `c` `[B, H]` (of two widths, so not one `[T + 2, B, H]` array as for the
//! other kernels). The loops run on the calling thread, compiled for the widest vectors
//! ([`with_simd`]); the two directions of a bidirectional layer run in parallel. (The
//! unprojected kernels' batch split and step helper are not used here.)

use autograd::{Param, Var};
use tensor::ops::matmul::{gemm_into, MatRef};
use tensor::ops::packed::{gemm_packed, gemm_packed_cat, PackedMat};
use tensor::simd::{with_simd, SimdWork};
use tensor::{Float, Tensor};

use super::grads::column_sums;
use super::lstm::{cell_backward, cell_forward};
use super::seq::{add_to_rows, running, step_order};
use super::{node_inputs, slice, Direction};

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

    /// The time steps in the order this direction visits them.
    fn order(&self) -> Vec<usize> {
        step_order(self.dims().steps, self.reverse).collect()
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

/// What the forward keeps for the backward, in time order (see the module doc).
struct Saved<T> {
    gates: Vec<T>,
    c: Vec<T>,
    m: Vec<T>,
    h_in: Vec<T>,
}

/// The forward: the flat result (outputs, final `h`, final `c`) and, when `keep`, what the
/// backward needs.
struct ForwardWork<'a, T: Float>(&'a Inputs<T>, bool);

impl<T: Float> SimdWork for ForwardWork<'_, T> {
    type Output = (Vec<T>, Option<Saved<T>>);

    #[inline(always)]
    fn run(self) -> Self::Output {
        let ForwardWork(s, keep) = self;
        let Dims {
            steps,
            batch,
            input,
            hidden,
            proj,
        } = s.dims();
        let (g4, bias) = (4 * hidden, s.cell_bias());
        let w_step = PackedMat::pack_stacked(&[
            MatRef::new(slice(&s.w_ih), g4, input).t(),
            MatRef::new(slice(&s.w_hh), g4, proj).t(),
        ]);
        let w_hr_t = PackedMat::pack(MatRef::new(slice(&s.w_hr), proj, hidden).t());
        // Training keeps a slot per step of each per-step buffer, inference one.
        let slots = if keep { steps } else { 1 };
        let mut gates = vec![T::ZERO; slots * batch * g4];
        let mut m = vec![T::ZERO; slots * batch * hidden];
        let mut c_all = vec![T::ZERO; if keep { steps * batch * hidden } else { 0 }];
        let mut h_in = vec![T::ZERO; if keep { steps * batch * proj } else { 0 }];
        let (mut h, mut c) = (slice(&s.h0).to_vec(), slice(&s.c0).to_vec());
        let (mut h_t, mut scratch) = (vec![T::ZERO; batch * proj], vec![T::ZERO; hidden]);
        let mut out = vec![T::ZERO; (steps + 1) * batch * proj + batch * hidden];
        let x = slice(&s.x);
        for t in s.order() {
            let slot = if keep { t } else { 0 };
            let p_t = &mut gates[slot * batch * g4..][..batch * g4];
            let x_t = &x[t * batch * input..][..batch * input];
            gemm_packed_cat([x_t, &h], batch, &w_step, T::ZERO, p_t);
            if keep {
                h_in[t * batch * proj..][..batch * proj].copy_from_slice(&h);
            }
            let m_t = &mut m[slot * batch * hidden..][..batch * hidden];
            for b in 0..batch {
                let (row, m_b) = (
                    &mut p_t[b * g4..(b + 1) * g4],
                    &mut m_t[b * hidden..(b + 1) * hidden],
                );
                let c_b = &mut c[b * hidden..(b + 1) * hidden];
                let c_t = match keep {
                    true => &mut c_all[(t * batch + b) * hidden..][..hidden],
                    false => &mut [],
                };
                if !s.valid(t, b) {
                    // Past the sequence's end: the state carries over, the output stays zero.
                    row.fill(T::ZERO);
                    m_b.fill(T::ZERO);
                    c_t.copy_from_slice(&c_b[..c_t.len()]);
                    continue;
                }
                cell_forward(row, &bias, c_b, &mut scratch, c_t, m_b);
            }
            gemm_packed(m_t, batch, &w_hr_t, T::ZERO, &mut h_t);
            for b in (0..batch).filter(|&b| s.valid(t, b)) {
                let row = &h_t[b * proj..(b + 1) * proj];
                h[b * proj..(b + 1) * proj].copy_from_slice(row);
                out[(t * batch + b) * proj..][..proj].copy_from_slice(row);
            }
        }
        let finals = steps * batch * proj;
        out[finals..finals + batch * proj].copy_from_slice(&h);
        out[finals + batch * proj..].copy_from_slice(&c);
        let saved = keep.then_some(Saved {
            gates,
            c: c_all,
            m,
            h_in,
        });
        (out, saved)
    }
}

/// The backward loop's results: the gate gradients `dP` `[T, B, 4H]`, the hidden state's
/// gradients `dh_t` `[T, B, P]` (for `dW_hr`), and the initial `h`'s and `c`'s.
struct LoopGrads<T> {
    dp: Vec<T>,
    dh_all: Vec<T>,
    d_init: [Vec<T>; 2],
}

/// The backward loop over the steps, from the gradient `g` of the flat result.
struct BackwardWork<'a, T: Float>(&'a Inputs<T>, &'a Saved<T>, &'a [T]);

impl<T: Float> SimdWork for BackwardWork<'_, T> {
    type Output = LoopGrads<T>;

    #[inline(always)]
    fn run(self) -> LoopGrads<T> {
        let BackwardWork(s, saved, g) = self;
        let Dims {
            steps,
            batch,
            hidden,
            proj,
            ..
        } = s.dims();
        let g4 = 4 * hidden;
        let w_hr = PackedMat::pack(MatRef::new(slice(&s.w_hr), proj, hidden));
        let w_hh = PackedMat::pack(MatRef::new(slice(&s.w_hh), g4, proj));
        let finals = steps * batch * proj;
        let mut dh = g[finals..finals + batch * proj].to_vec();
        let mut dc = g[finals + batch * proj..].to_vec();
        let mut dp = vec![T::ZERO; steps * batch * g4];
        let mut dh_all = vec![T::ZERO; steps * batch * proj];
        let (mut dm, mut dh_prev) = (vec![T::ZERO; batch * hidden], vec![T::ZERO; batch * proj]);
        let (mut zeros, mut tanh_c) = (vec![T::ZERO; hidden], vec![T::ZERO; hidden]);
        let c0 = slice(&s.c0);
        let order = s.order();
        for (k, &t) in order.iter().enumerate().rev() {
            // c_{t−1}: the cell state after the previous step visited, or c0.
            let c_prev = match k {
                0 => c0,
                _ => &saved.c[order[k - 1] * batch * hidden..][..batch * hidden],
            };
            // dh_t = dh + dout_t on the running rows; zero on the others, whose dh passes by.
            let dh_t = &mut dh_all[t * batch * proj..][..batch * proj];
            for b in (0..batch).filter(|&b| s.valid(t, b)) {
                let at = (t * batch + b) * proj;
                for ((d, carried), out) in (dh_t[b * proj..(b + 1) * proj].iter_mut())
                    .zip(&dh[b * proj..(b + 1) * proj])
                    .zip(&g[at..at + proj])
                {
                    *d = *carried + *out;
                }
            }
            gemm_packed(dh_t, batch, &w_hr, T::ZERO, &mut dm);
            let dp_t = &mut dp[t * batch * g4..][..batch * g4];
            for b in (0..batch).filter(|&b| s.valid(t, b)) {
                let (rows, at) = (b * hidden..(b + 1) * hidden, (t * batch + b) * hidden);
                cell_backward(
                    &saved.gates[(t * batch + b) * g4..][..g4],
                    &saved.c[at..at + hidden],
                    &c_prev[rows.clone()],
                    &dm[rows.clone()],
                    &mut zeros,
                    &mut dc[rows],
                    &mut dp_t[b * g4..(b + 1) * g4],
                    &mut tanh_c,
                );
            }
            gemm_packed(dp_t, batch, &w_hh, T::ZERO, &mut dh_prev);
            for b in (0..batch).filter(|&b| s.valid(t, b)) {
                let rows = b * proj..(b + 1) * proj;
                dh[rows.clone()].copy_from_slice(&dh_prev[rows]);
            }
        }
        LoopGrads {
            dp,
            dh_all,
            d_init: [dh, dc],
        }
    }
}

/// `a` (`[rows, k]`)ᵀ × `b` (`[rows, n]`): `[k, n]`, as a tensor.
fn t_times<T: Float>(a: &[T], b: &[T], rows: usize, k: usize, n: usize) -> Tensor<T> {
    let mut out = vec![T::ZERO; k * n];
    gemm_into(
        T::ONE,
        MatRef::new(a, rows, k).t(),
        MatRef::new(b, rows, n),
        T::ZERO,
        &mut out,
    );
    Tensor::from_vec(out, &[k, n])
}

/// One gradient per input of the node, in the order `x, h0, c0, w_ih, w_hh, [b_ih, b_hh],
/// w_hr`; only those in `needs`.
fn input_grads<T: Float>(
    s: &Inputs<T>,
    saved: &Saved<T>,
    g: &[T],
    needs: &[bool],
) -> Vec<Option<Tensor<T>>> {
    let Dims {
        steps,
        batch,
        input,
        hidden,
        proj,
    } = s.dims();
    let (rows, g4) = (steps * batch, 4 * hidden);
    let LoopGrads { dp, dh_all, d_init } = with_simd(BackwardWork(s, saved, g));
    let [dh0, dc0] = d_init;
    let mut grads = vec![
        needs[0].then(|| {
            let mut dx = vec![T::ZERO; rows * input];
            let (dp, w_ih) = (
                MatRef::new(&dp, rows, g4),
                MatRef::new(slice(&s.w_ih), g4, input),
            );
            gemm_into(T::ONE, dp, w_ih, T::ZERO, &mut dx);
            Tensor::from_vec(dx, &[steps, batch, input])
        }),
        needs[1].then(|| Tensor::from_vec(dh0, &[batch, proj])),
        needs[2].then(|| Tensor::from_vec(dc0, &[batch, hidden])),
        needs[3].then(|| t_times(&dp, slice(&s.x), rows, g4, input)),
        needs[4].then(|| t_times(&dp, &saved.h_in, rows, g4, proj)),
    ];
    if s.b_ih.is_some() {
        let db = (needs[5] || needs[6]).then(|| {
            let mut sums = vec![T::ZERO; g4];
            column_sums(&dp, g4, 0..g4, &mut sums);
            Tensor::from_vec(sums, &[g4])
        });
        grads.push(db.clone().filter(|_| needs[5]));
        grads.push(db.filter(|_| needs[6]));
    }
    let last = needs.len() - 1;
    grads.push(needs[last].then(|| t_times(&dh_all, &saved.m, rows, proj, hidden)));
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
            };
            (inputs, vars, keep)
        })
        .collect();
    // The variables stay on this thread (a tape is not `Send`); the kernels need only the
    // inputs' values.
    let forward = |(inputs, keep): (&Inputs<T>, bool)| with_simd(ForwardWork(inputs, keep));
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
