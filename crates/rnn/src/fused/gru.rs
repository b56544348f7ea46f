//! The fused GRU: equations as in [`GruCell`](crate::GruCell).
//!
//! ```text
//! forward, per step:  [x_r; x_z; x_n] = X_t W_ihᵀ + b_ih,   [h_r; h_z; h_n] = h W_hhᵀ + b_hh
//!                     r = σ(x_r + h_r),  z = σ(x_z + h_z),  n = tanh(x_n + r ⊙ h_n)
//!                     h_t = n + z ⊙ (h_{t−1} − n)
//! backward, per step: dh = dh + dout_t
//!                     dn = dh ⊙ (1 − z),   dz = dh ⊙ (h_{t−1} − n)
//!                     da = dn ⊙ (1 − n²)            (a = x_n + r ⊙ h_n)
//!                     dr = da ⊙ h_n
//!                     dP_x = [dr·r(1−r); dz·z(1−z); da]
//!                     dP_h = [dr·r(1−r); dz·z(1−z); da ⊙ r]
//!                     dh_{t−1} = dh ⊙ z + dP_h W_hh
//! ```
//!
//! Kept per step for training: r, z, n and h_n (4H). The entering h (for dz and dW_hh) is read
//! from the outputs, which the node keeps anyway. Inference keeps nothing per step; with
//! recompute, only `h` entering each segment. Training projects the inputs a chunk of steps
//! at a time (`X_c W_ihᵀ`, one product of many rows per chunk); inference one step at a time.

use tensor::Float;

use tensor::pool::Buffer;

use std::ops::Range;

use super::seq::{Acts, Rows, Saved, Seq};

#[inline(always)]
pub(super) fn forward<T: Float>(s: &Seq<'_, T>, out: &mut Rows<'_, T>) -> Saved<T> {
    let (hid, g3, g4) = (s.hidden, 3 * s.hidden, 4 * s.hidden);
    // Training projects a chunk of steps' inputs at a time and keeps every step's r, z, n
    // and h_n (with recompute, none); inference projects and keeps the current step's only.
    let keep_all = s.keeps_all();
    let slots = if keep_all { s.steps } else { 1 };
    let mut xp = s.step_inputs(3);
    let mut xp_first = 0; // the step of xp's first slot
                          // Not zeroed: every row of every step is written (zeros past a sequence's end).
    let mut acts = Buffer::for_overwrite(slots * s.step(g4));
    let mut bounds = Vec::new();
    let mut h = s.h0.to_vec();
    let mut hp = vec![T::ZERO; s.step(g3)];
    for (k, t) in s.order().enumerate() {
        if s.is_boundary(k) {
            bounds.extend_from_slice(&h);
        }
        let xp_t = match s.keep {
            true => {
                if k.is_multiple_of(s.chunk) {
                    // x W_ihᵀ + b_ih for this chunk of steps
                    let times = s.times(k..(k + s.chunk).min(s.steps));
                    xp_first = times.start;
                    s.x_projection(times.clone(), &mut xp[..times.len() * s.step(g3)]);
                }
                let at = (t - xp_first) * s.step(g3);
                &mut xp[at..at + s.step(g3)]
            }
            false => {
                s.input_product(t, &mut xp); // x_t W_ihᵀ + b_ih
                &mut xp[..]
            }
        };
        // hp = h W_hhᵀ + b_hh
        match s.b_hh {
            Some(b_hh) => hp
                .chunks_exact_mut(g3)
                .for_each(|row| row.copy_from_slice(b_hh)),
            None => hp.fill(T::ZERO),
        }
        s.add_hidden_projection(&h, &mut hp);
        let slot = s.slot(t);
        let acts_t = &mut acts[slot * s.step(g4)..(slot + 1) * s.step(g4)];
        for b in 0..s.batch {
            if !s.valid(t, b) {
                // The state carries over, the output and the saved gates stay zero.
                acts_t[b * g4..(b + 1) * g4].fill(T::ZERO);
                continue;
            }
            let out_t = out.row(t, b);
            let h_b = &mut h[b * hid..(b + 1) * hid];
            let x_row = &xp_t[b * g3..(b + 1) * g3];
            let h_row = &hp[b * g3..(b + 1) * g3];
            let a_row = &mut acts_t[b * g4..(b + 1) * g4];
            cell_forward(x_row, h_row, a_row, h_b, out_t);
        }
    }
    out.set_block(s.steps, &h);
    let acts = if keep_all { acts } else { Buffer::zeroed(0) };
    Saved::new(acts, Buffer::zeroed(0), bounds)
}

/// One row of the forward, in simple passes the compiler vectorises: `acts` receives
/// `[r; z; n; h_n]`, `h` is updated and written to `out`.
#[inline(always)]
fn cell_forward<T: Float>(x: &[T], hp: &[T], acts: &mut [T], h: &mut [T], out: &mut [T]) {
    let n = h.len();
    // Every slice cut to its exact length up front, so the loops have no bounds checks left.
    let (x_rz, x_n) = (&x[..2 * n], &x[2 * n..3 * n]);
    let (hp_rz, hp_n) = (&hp[..2 * n], &hp[2 * n..3 * n]);
    let (rz, rest) = acts[..4 * n].split_at_mut(2 * n);
    let (nn, h_n) = rest.split_at_mut(n);
    let out = &mut out[..n];
    for j in 0..2 * n {
        rz[j] = x_rz[j] + hp_rz[j];
    }
    for x in rz.iter_mut() {
        *x = x.fast_sigmoid();
    }
    h_n.copy_from_slice(hp_n);
    let (r, z) = rz.split_at(n);
    for j in 0..n {
        nn[j] = x_n[j] + r[j] * h_n[j];
    }
    for x in nn.iter_mut() {
        *x = x.fast_tanh();
    }
    for j in 0..n {
        h[j] = nn[j] + z[j] * (h[j] - nn[j]);
    }
    out.copy_from_slice(h);
}

/// One row of the backward: from `[r; z; n; h_n]`, h_{t−1} and the incoming gradients to the
/// gate gradients of both projections, `dh` updated to its direct path `(dh + dout) ⊙ z`.
/// Every slice is cut to its exact length up front: with the lengths plain, the loop has no
/// bounds checks left and vectorises.
#[inline(always)]
fn cell_backward<T: Float>(
    acts: &[T],
    h_prev: &[T],
    dout: &[T],
    dh: &mut [T],
    dp_x: &mut [T],
    dp_h: &mut [T],
) {
    let n = dh.len();
    let (r, z, nn, h_n) = (
        &acts[..n],
        &acts[n..2 * n],
        &acts[2 * n..3 * n],
        &acts[3 * n..4 * n],
    );
    let (h_prev, dout) = (&h_prev[..n], &dout[..n]);
    let (dx_r, rest) = dp_x[..3 * n].split_at_mut(n);
    let (dx_z, dx_n) = rest.split_at_mut(n);
    let (dh_r, rest) = dp_h[..3 * n].split_at_mut(n);
    let (dh_z, dh_n) = rest.split_at_mut(n);
    for j in 0..n {
        let dh_j = dh[j] + dout[j];
        let dn = dh_j * (T::ONE - z[j]);
        let dz = dh_j * (h_prev[j] - nn[j]);
        let da = dn * (T::ONE - nn[j] * nn[j]);
        let dr = da * h_n[j];
        let dpr = dr * r[j] * (T::ONE - r[j]);
        let dpz = dz * z[j] * (T::ONE - z[j]);
        (dx_r[j], dx_z[j], dx_n[j]) = (dpr, dpz, da);
        (dh_r[j], dh_z[j], dh_n[j]) = (dpr, dpz, da * r[j]);
        dh[j] = dh_j * z[j]; // the direct path h_{t−1} → h_t
    }
}

/// The backward over positions `ks` of the visiting order, the last first, reading the
/// activations from `acts` and the entering states from the outputs `out`: `d` (`[dh]`)
/// enters as the gradient of the state leaving the last of those steps and leaves as that of
/// the state entering the first; each step's gate gradients go to its blocks of `dp` (of the
/// input and of the hidden projection).
#[inline(always)]
pub(super) fn backward<T: Float>(
    s: &Seq<'_, T>,
    acts: &Acts<'_, T>,
    out: &[T],
    g: &[T],
    ks: Range<usize>,
    d: &mut [Vec<T>],
    dp: &mut [Rows<'_, T>],
) {
    let (hid, g3, g4) = (s.hidden, 3 * s.hidden, 4 * s.hidden);
    let [dp_x, dp_h] = dp else {
        panic!("a GRU has gradients for its input and hidden projections");
    };
    let [dh] = d else {
        panic!("a GRU's state has one part");
    };
    let mut dh_rec = vec![T::ZERO; s.step(hid)];
    for t in ks.rev().map(|k| s.time(k)) {
        let (dpx_t, dph_t) = (dp_x.block(t), dp_h.block(t));
        for b in 0..s.batch {
            if !s.valid(t, b) {
                dpx_t[b * g3..(b + 1) * g3].fill(T::ZERO);
                dph_t[b * g3..(b + 1) * g3].fill(T::ZERO);
                continue;
            }
            let at = s.at(t, b);
            cell_backward(
                acts.row(t, b, s.batch, g4),
                s.h_prev(out, t, b),
                &g[at..at + hid],
                &mut dh[b * hid..(b + 1) * hid],
                &mut dpx_t[b * g3..(b + 1) * g3],
                &mut dph_t[b * g3..(b + 1) * g3],
            );
        }
        s.hidden_grad(dph_t, &mut dh_rec);
        for b in 0..s.batch {
            if s.valid(t, b) {
                let row = b * hid..(b + 1) * hid;
                for (dh, &rec) in dh[row.clone()].iter_mut().zip(&dh_rec[row]) {
                    *dh += rec;
                }
            }
        }
    }
}
