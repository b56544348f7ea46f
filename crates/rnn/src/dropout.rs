//! Dropout: in training, zero each element with probability p and scale the rest by
//! 1/(1 − p) so the expected value is unchanged; in evaluation, the identity.
//!
//! y = x ⊙ m / (1 − p),  m ~ Bernoulli(1 − p).  ∂/∂x = g ⊙ m / (1 − p)

use std::cell::Cell as Flag;

use autograd::Var;
use tensor::{Float, Tensor};

use crate::module::with_rng;

/// Applies dropout with probability `p` to `x` (a no-op when `p` is 0), drawing the mask from
/// this thread's generator (see [`manual_seed`](crate::manual_seed)).
///
/// # Panics
/// If `p` is not in `[0, 1]`.
pub fn dropout<T: Float>(x: &Var<T>, p: f64) -> Var<T> {
    assert!(
        (0.0..=1.0).contains(&p),
        "dropout: p = {p} is not in [0, 1]"
    );
    if p == 0.0 {
        return x.clone();
    }
    if p == 1.0 {
        return x * &Tensor::zeros(&[]);
    }
    let n = x.value().numel();
    let keep = T::from_f64(1.0 / (1.0 - p));
    let mask: Vec<T> = with_rng(|rng| {
        (0..n)
            .map(|_| if rng.next_f64() < p { T::ZERO } else { keep })
            .collect()
    });
    x * &Tensor::from_vec(mask, x.shape())
}

/// A dropout module with a train/eval switch.
pub struct Dropout {
    /// The probability of zeroing an element.
    pub p: f64,
    training: Flag<bool>,
}

impl Dropout {
    /// Dropout with probability `p`, in training mode.
    pub fn new(p: f64) -> Self {
        Dropout {
            p,
            training: Flag::new(true),
        }
    }

    /// Applies dropout in training mode; the identity in evaluation mode.
    pub fn forward<T: Float>(&self, x: &Var<T>) -> Var<T> {
        if self.training.get() {
            dropout(x, self.p)
        } else {
            x.clone()
        }
    }

    /// Training (`true`) or evaluation mode.
    pub fn set_training(&self, training: bool) {
        self.training.set(training);
    }
}
