//! The fused LSTM: equations as in [`LstmCell`](crate::LstmCell).
//!
//! ```text
//! forward, per step:  P_t = X_t W_ihᵀ + b_ih + b_hh + h W_hhᵀ = [i; f; g; o] before activation
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
//! Kept per step: the activated gates (4H) and c_t (H), plus the entering h for dW_hh.

use tensor::Float;

use super::{Forward, LoopGrads, Saved, Seq};

pub(super) fn forward<T: Float>(s: &Seq<'_, T>) -> Forward<T> {
    let (hid, g4) = (s.hidden, 4 * s.hidden);
    let mut gates = s.x_projection(4, true);
    let mut c_all = vec![T::ZERO; s.steps * s.step(hid)];
    let mut h_in = vec![T::ZERO; s.steps * s.step(hid)];
    let mut out = vec![T::ZERO; (s.steps + 2) * s.step(hid)];
    let mut h = s.h0.to_vec();
    let mut c = s.c0.expect("an LSTM has a cell state").to_vec();
    for t in s.order() {
        h_in[t * s.step(hid)..(t + 1) * s.step(hid)].copy_from_slice(&h);
        let p_t = &mut gates[t * s.step(g4)..(t + 1) * s.step(g4)];
        s.add_hidden_projection(&h, p_t);
        for b in 0..s.batch {
            let row = &mut p_t[b * g4..(b + 1) * g4];
            let (h_b, c_b) = (
                &mut h[b * hid..(b + 1) * hid],
                &mut c[b * hid..(b + 1) * hid],
            );
            let at = t * s.step(hid) + b * hid;
            if !s.valid(t, b) {
                // Past the sequence's end: the state carries over, the output stays zero.
                row.fill(T::ZERO);
                c_all[at..at + hid].copy_from_slice(c_b);
                continue;
            }
            let (i, rest) = row.split_at_mut(hid);
            let (f, rest) = rest.split_at_mut(hid);
            let (g, o) = rest.split_at_mut(hid);
            let out_t = &mut out[at..at + hid];
            let c_t = &mut c_all[at..at + hid];
            for j in 0..hid {
                i[j] = i[j].fast_sigmoid();
                f[j] = f[j].fast_sigmoid();
                g[j] = g[j].fast_tanh();
                o[j] = o[j].fast_sigmoid();
                let c_new = f[j] * c_b[j] + i[j] * g[j];
                let h_new = o[j] * c_new.fast_tanh();
                c_b[j] = c_new;
                h_b[j] = h_new;
                c_t[j] = c_new;
                out_t[j] = h_new;
            }
        }
    }
    let n = s.step(hid);
    out[s.steps * n..(s.steps + 1) * n].copy_from_slice(&h);
    out[(s.steps + 1) * n..].copy_from_slice(&c);
    (
        out,
        Saved {
            acts: gates,
            h_in,
            c: c_all,
        },
    )
}

pub(super) fn backward<T: Float>(s: &Seq<'_, T>, saved: &Saved<T>, g: &[T]) -> LoopGrads<T> {
    let (hid, g4, n) = (s.hidden, 4 * s.hidden, s.step(s.hidden));
    let mut dp = vec![T::ZERO; s.steps * s.step(g4)];
    // Gradients arriving at the final state, then carried back step by step.
    let mut dh = g[s.steps * n..(s.steps + 1) * n].to_vec();
    let mut dc = g[(s.steps + 1) * n..(s.steps + 2) * n].to_vec();
    let mut dh_prev = vec![T::ZERO; n];
    let c0 = s.c0.expect("an LSTM has a cell state");
    let order: Vec<usize> = s.order().collect();
    let w_hh = s.pack_w_hh(4);
    for (k, &t) in order.iter().enumerate().rev() {
        // c_{t−1}: the cell state after the previous step visited, or c0.
        let c_prev = match k {
            0 => c0,
            _ => &saved.c[order[k - 1] * n..order[k - 1] * n + n],
        };
        let dp_t = &mut dp[t * s.step(g4)..(t + 1) * s.step(g4)];
        for b in 0..s.batch {
            if !s.valid(t, b) {
                continue; // dP stays 0; dh and dc pass through unchanged
            }
            let at = t * n + b * hid;
            let gates = &saved.acts[t * s.step(g4) + b * g4..t * s.step(g4) + (b + 1) * g4];
            let (i, rest) = gates.split_at(hid);
            let (f, rest) = rest.split_at(hid);
            let (gg, o) = rest.split_at(hid);
            let c_t = &saved.c[at..at + hid];
            let c_p = &c_prev[b * hid..(b + 1) * hid];
            let dout = &g[at..at + hid];
            let (dh_b, dc_b) = (
                &mut dh[b * hid..(b + 1) * hid],
                &mut dc[b * hid..(b + 1) * hid],
            );
            let row = &mut dp_t[b * g4..(b + 1) * g4];
            for j in 0..hid {
                let dh_j = dh_b[j] + dout[j];
                let tc = c_t[j].fast_tanh();
                let d_o = dh_j * tc;
                let dc_j = dc_b[j] + dh_j * o[j] * (T::ONE - tc * tc);
                let (d_i, d_g, d_f) = (dc_j * gg[j], dc_j * i[j], dc_j * c_p[j]);
                dc_b[j] = dc_j * f[j];
                row[j] = d_i * i[j] * (T::ONE - i[j]);
                row[hid + j] = d_f * f[j] * (T::ONE - f[j]);
                row[2 * hid + j] = d_g * (T::ONE - gg[j] * gg[j]);
                row[3 * hid + j] = d_o * o[j] * (T::ONE - o[j]);
            }
        }
        s.hidden_grad(&w_hh, dp_t, &mut dh_prev);
        for b in 0..s.batch {
            let range = b * hid..(b + 1) * hid;
            if s.valid(t, b) {
                dh[range.clone()].copy_from_slice(&dh_prev[range]);
            }
            // else: dh passes through to the previous step unchanged
        }
    }
    LoopGrads {
        dp_x: dp,
        dp_h: None,
        d_init: vec![dh, dc],
    }
}
