//! The fused vanilla RNN: equations as in [`RnnCell`](crate::RnnCell).
//!
//! ```text
//! forward, per step:  P_t = x_t W_ihᵀ + h W_hhᵀ + b_ih + b_hh,   h_t = tanh(P_t) (or relu)
//! backward, per step: dh = dh + dout_t
//!                     dP_t = dh ⊙ (1 − h_t²)          (relu: dh where h_t > 0, else 0)
//!                     dh_{t−1} = dP_t W_hh
//! ```
//!
//! Kept: nothing beyond the outputs h_t, which the node keeps anyway (the backward reads h_t
//! and the entering h there), so recompute has nothing to save here.

use tensor::Float;

use std::ops::Range;

use super::seq::{Rows, Saved, Seq};
use crate::nonlinearity::Nonlinearity;

#[inline(always)]
pub(super) fn forward<T: Float>(
    s: &Seq<'_, T>,
    nl: Nonlinearity,
    out: &mut Rows<'_, T>,
) -> Saved<T> {
    let (hid, n) = (s.hidden, s.step(s.hidden));
    let bias = s.cell_bias(1);
    // One step's P_t at a time: the backward reads h_t from the output, so nothing else is
    // kept.
    let mut p_t = vec![T::ZERO; n];
    let mut xh = s.gather_room();
    let mut h = s.h0.to_vec();
    for t in s.order() {
        s.step_product(t, &h, &mut xh, &mut p_t);
        for b in 0..s.batch {
            if !s.valid(t, b) {
                continue; // the state carries over, the output stays zero
            }
            let row = &mut p_t[b * hid..(b + 1) * hid];
            for (x, &bias) in row.iter_mut().zip(&bias) {
                let a = *x + bias;
                *x = match nl {
                    Nonlinearity::Tanh => a.fast_tanh(),
                    Nonlinearity::Relu => {
                        if a > T::ZERO {
                            a
                        } else {
                            T::ZERO
                        }
                    }
                };
            }
            h[b * hid..(b + 1) * hid].copy_from_slice(row);
            out.row(t, b).copy_from_slice(row);
        }
    }
    out.set_block(s.steps, &h);
    // h_t is the output: the backward reads it there.
    Saved::none()
}

/// The backward over positions `ks` of the visiting order, the last first, reading `h_t`
/// from the outputs `out`: `d` (`[dh]`) enters as the gradient of the state leaving the last
/// of those steps and leaves as that of the state entering the first; each step's gate
/// gradients go to its block of `dp`.
#[inline(always)]
pub(super) fn backward<T: Float>(
    s: &Seq<'_, T>,
    nl: Nonlinearity,
    out: &[T],
    g: &[T],
    ks: Range<usize>,
    d: &mut [Vec<T>],
    dp: &mut Rows<'_, T>,
) {
    let hid = s.hidden;
    let [dh] = d else {
        panic!("an RNN's state has one part");
    };
    let mut dh_rec = vec![T::ZERO; s.step(hid)];
    for t in ks.rev().map(|k| s.time(k)) {
        let dp_t = dp.block(t);
        for b in 0..s.batch {
            if !s.valid(t, b) {
                dp_t[b * hid..(b + 1) * hid].fill(T::ZERO);
                continue;
            }
            let (at, row) = (s.at(t, b), b * hid..(b + 1) * hid);
            let (y, dout) = (&out[at..at + hid], &g[at..at + hid]); // h_t and its gradient
            let (dh_b, dp_b) = (&dh[row.clone()], &mut dp_t[row]);
            // Zipped slices and the nonlinearity chosen outside the loop: no bounds checks,
            // no branch per element, so the loop vectorises.
            let terms = dp_b.iter_mut().zip(dh_b).zip(dout).zip(y);
            match nl {
                Nonlinearity::Tanh => {
                    for (((dp, &dh), &dout), &y) in terms {
                        *dp = (dh + dout) * (T::ONE - y * y);
                    }
                }
                Nonlinearity::Relu => {
                    for (((dp, &dh), &dout), &y) in terms {
                        *dp = if y > T::ZERO { dh + dout } else { T::ZERO };
                    }
                }
            }
        }
        s.hidden_grad(dp_t, &mut dh_rec);
        for b in 0..s.batch {
            if s.valid(t, b) {
                dh[b * hid..(b + 1) * hid].copy_from_slice(&dh_rec[b * hid..(b + 1) * hid]);
            }
        }
    }
}
