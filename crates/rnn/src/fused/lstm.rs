//! The fused LSTM: equations as in [`LstmCell`](crate::LstmCell).
//!
//! ```text
//! forward, per step:  P_t = x_t W_ihᵀ + h W_hhᵀ + b_ih + b_hh = [i; f; g; o] before activation
//!                     i, f, o = σ(·),  g = tanh(·)
//!                     c_t = f ⊙ c_{t−1} + i ⊙ g,   h_t = o ⊙ tanh(c_t)
//! backward, per step (dh, dc flowing back from t + 1, plus the output's gradient):
//!                     dh  = dh + dout_t
//!                     do  = dh ⊙ tanh(c_t)
//!                     dc  = dc + dh ⊙ o ⊙ (1 − tanh²(c_t))
//!                     di  = dc ⊙ g,   dg = dc ⊙ i,   df = dc ⊙ c_{t−1},   dc_{t−1} = dc ⊙ f
//!                     dP_t = [di·i(1−i); df·f(1−f); dg·(1−g²); do·o(1−o)]
//!                     dh_{t−1} = dP_t W_hh
//! ```
//!
//! Kept per step for training: the activated gates (4H) and c_t (H). The entering h (for dW_hh)
//! is read from the outputs, which the node keeps anyway. Inference keeps nothing per step;
//! with recompute, only `h` and `c` entering each segment.

use tensor::Float;

use tensor::pool::Buffer;

use std::ops::Range;

use super::seq::{Acts, Rows, Saved, Seq};

#[inline(always)]
pub(super) fn forward<T: Float>(s: &Seq<'_, T>, out: &mut Rows<'_, T>) -> Saved<T> {
    let (hid, g4) = (s.hidden, 4 * s.hidden);
    let bias = s.cell_bias(4);
    // Training keeps every step's gates and cell state; inference, and training with
    // recompute, the current step's gates only.
    let keep_all = s.keeps_all();
    let mut gates = s.step_slots(4);
    // Not zeroed: every step writes every row of its c_t.
    let mut c_all = Buffer::for_overwrite(if keep_all { s.steps * s.step(hid) } else { 0 });
    let mut bounds = Vec::new();
    let mut h = s.h0.to_vec();
    let mut c = s.c0.expect("an LSTM has a cell state").to_vec();
    let mut xh = s.gather_room();
    for (k, t) in s.order().enumerate() {
        if s.is_boundary(k) {
            bounds.extend_from_slice(&h);
            bounds.extend_from_slice(&c);
        }
        let slot = s.slot(t);
        let p_t = &mut gates[slot * s.step(g4)..(slot + 1) * s.step(g4)];
        s.step_product(t, &h, &mut xh, p_t);
        for b in 0..s.batch {
            let row = &mut p_t[b * g4..(b + 1) * g4];
            let (h_b, c_b) = (
                &mut h[b * hid..(b + 1) * hid],
                &mut c[b * hid..(b + 1) * hid],
            );
            let at = t * s.step(hid) + b * hid;
            let c_t = match keep_all {
                true => &mut c_all[at..at + hid],
                false => &mut [],
            };
            if !s.valid(t, b) {
                // Past the sequence's end: the state carries over, the output stays zero.
                row.fill(T::ZERO);
                c_t.copy_from_slice(&c_b[..c_t.len()]);
                continue;
            }
            cell_forward(row, &bias, c_b, h_b, c_t, out.row(t, b));
        }
    }
    out.set_block(s.steps, &h);
    out.set_block(s.steps + 1, &c);
    let acts = if keep_all { gates } else { Buffer::zeroed(0) };
    Saved::new(acts, c_all, bounds)
}

/// One row of the forward: activates the gates `[i; f; g; o]` (adding the bias) in place and
/// updates `c` and `h`, writing h_t out and c_t to `c_t` unless that is empty (inference).
/// Taking the slices as arguments tells the compiler they do not overlap, so the loop
/// vectorises.
#[inline(always)]
pub(super) fn cell_forward<T: Float>(
    gates: &mut [T],
    bias: &[T],
    c: &mut [T],
    h: &mut [T],
    c_t: &mut [T],
    out: &mut [T],
) {
    let n = c.len();
    assert!(gates.len() == 4 * n && bias.len() == 4 * n && h.len() == n && out.len() == n);
    // Simple passes over one slice at a time: the shape the vectoriser handles.
    let (ifg, o) = gates.split_at_mut(3 * n);
    let (i_f, g) = ifg.split_at_mut(2 * n);
    activate(i_f, &bias[..2 * n], T::fast_sigmoid);
    activate(g, &bias[2 * n..3 * n], T::fast_tanh);
    activate(o, &bias[3 * n..], T::fast_sigmoid);
    let (i, f) = i_f.split_at(n);
    for j in 0..n {
        c[j] = f[j] * c[j] + i[j] * g[j];
    }
    if !c_t.is_empty() {
        c_t.copy_from_slice(c);
    }
    for j in 0..n {
        out[j] = c[j].fast_tanh();
    }
    for j in 0..n {
        out[j] = o[j] * out[j];
    }
    h.copy_from_slice(out);
}

/// x ← act(x + bias) over a slice.
#[inline(always)]
fn activate<T: Float>(xs: &mut [T], bias: &[T], act: impl Fn(T) -> T) {
    for (x, b) in xs.iter_mut().zip(bias) {
        *x = act(*x + *b);
    }
}

/// One row of the backward: from the gates, c_t, c_{t−1} and the incoming gradients to the
/// gates' pre-activation gradients `dp`; updates `dh` (to dh + dout, consumed) and `dc`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn cell_backward<T: Float>(
    gates: &[T],
    c_t: &[T],
    c_p: &[T],
    dout: &[T],
    dh: &mut [T],
    dc: &mut [T],
    dp: &mut [T],
    tanh_c: &mut [T],
) {
    let n = c_t.len();
    // Every slice cut to exactly `n` up front: with the lengths plain, the loop below has no
    // bounds checks left and vectorises (it ran one lane at a time before).
    let (i, f, gg, o) = (
        &gates[..n],
        &gates[n..2 * n],
        &gates[2 * n..3 * n],
        &gates[3 * n..4 * n],
    );
    let (c_p, dout, dh, dc, tanh_c) = (
        &c_p[..n],
        &dout[..n],
        &mut dh[..n],
        &mut dc[..n],
        &mut tanh_c[..n],
    );
    let (dp_i, rest) = dp[..4 * n].split_at_mut(n);
    let (dp_f, rest) = rest.split_at_mut(n);
    let (dp_g, dp_o) = rest.split_at_mut(n);
    for (tc, c) in tanh_c.iter_mut().zip(c_t) {
        *tc = c.fast_tanh();
    }
    for j in 0..n {
        let dh_j = dh[j] + dout[j];
        let tc = tanh_c[j];
        let d_o = dh_j * tc;
        let dc_j = dc[j] + dh_j * o[j] * (T::ONE - tc * tc);
        let (d_i, d_g, d_f) = (dc_j * gg[j], dc_j * i[j], dc_j * c_p[j]);
        dc[j] = dc_j * f[j];
        dp_i[j] = d_i * i[j] * (T::ONE - i[j]);
        dp_f[j] = d_f * f[j] * (T::ONE - f[j]);
        dp_g[j] = d_g * (T::ONE - gg[j] * gg[j]);
        dp_o[j] = d_o * o[j] * (T::ONE - o[j]);
    }
}

/// The backward over positions `ks` of the visiting order, the last first, reading the
/// activations from `acts`: `d` (`[dh, dc]`, `[B, H]` each) enters as the gradient of the
/// state leaving the last of those steps and leaves as that of the state entering the first;
/// each step's gate gradients go to its block of `dp`.
#[inline(always)]
pub(super) fn backward<T: Float>(
    s: &Seq<'_, T>,
    acts: &Acts<'_, T>,
    g: &[T],
    ks: Range<usize>,
    d: &mut [Vec<T>],
    dp: &mut Rows<'_, T>,
) {
    let (hid, g4) = (s.hidden, 4 * s.hidden);
    let [dh, dc] = d else {
        panic!("an LSTM's state has two parts");
    };
    let mut dh_prev = vec![T::ZERO; s.step(hid)];
    let mut tanh_c = vec![T::ZERO; hid];
    for t in ks.rev().map(|k| s.time(k)) {
        let dp_t = dp.block(t);
        for b in 0..s.batch {
            if !s.valid(t, b) {
                dp_t[b * g4..(b + 1) * g4].fill(T::ZERO); // dh and dc pass through unchanged
                continue;
            }
            let at = s.at(t, b);
            cell_backward(
                acts.row(t, b, s.batch, g4),
                acts.c_t(t, b, s.batch, hid),
                acts.c_prev(s, t, b),
                &g[at..at + hid],
                &mut dh[b * hid..(b + 1) * hid],
                &mut dc[b * hid..(b + 1) * hid],
                &mut dp_t[b * g4..(b + 1) * g4],
                &mut tanh_c,
            );
        }
        s.hidden_grad(dp_t, &mut dh_prev);
        for b in 0..s.batch {
            let range = b * hid..(b + 1) * hid;
            if s.valid(t, b) {
                dh[range.clone()].copy_from_slice(&dh_prev[range]);
            }
            // else: dh passes through to the previous step unchanged
        }
    }
}
