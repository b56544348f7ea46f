//! `softmax`, `log_softmax` and `logsumexp` along one dim, all numerically stable: the
//! maximum is subtracted before exponentiating, so inputs of ±1000 give no NaN or Inf.
//!
//! ```text
//! logsumexp(x) = m + log Σ exp(x_i − m),   m = max_i x_i
//! log_softmax(x)_i = x_i − logsumexp(x)
//! softmax(x)_i = exp(x_i − m) / Σ_j exp(x_j − m)
//! ```

use crate::element::Float;
use crate::shape::{resolve_dim, Dim};
use crate::tensor::Tensor;

impl<T: Float> Tensor<T> {
    /// The max along `dim` (kept as size 1), with non-finite maxima replaced by 0 so that a
    /// row of all `-inf` gives `-inf` from `logsumexp` instead of NaN (as in PyTorch). Along an
    /// empty dim there is no max and nothing to shift: the shift is 0, so `logsumexp` is
    /// log 0 = `-inf` and `softmax` is empty, as in PyTorch.
    fn stable_shift(&self, dim: usize) -> Self {
        if self.shape[dim] == 0 {
            let mut shape = self.shape.clone();
            shape[dim] = 1;
            return Self::zeros(&shape);
        }
        self.max(&[dim], true)
            .map(|m| if m.is_finite() { m } else { T::ZERO })
    }

    /// log Σ exp(x) along `dim`, stable for large |x|.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1000.0f32, 1000.0], &[2]);
    /// let lse = x.logsumexp(0, false).item();
    /// assert!((lse - (1000.0 + 2f32.ln())).abs() < 1e-3);
    /// ```
    #[track_caller]
    pub fn logsumexp<D: Dim>(&self, dim: D, keepdim: bool) -> Self {
        let d = resolve_dim("logsumexp", dim, self.rank());
        let m = self.stable_shift(d);
        let lse = (self - &m).exp().sum(&[d], true).log() + m;
        if keepdim {
            lse
        } else {
            lse.squeeze(d)
        }
    }

    /// log softmax along `dim`: x − logsumexp(x).
    #[track_caller]
    pub fn log_softmax<D: Dim>(&self, dim: D) -> Self {
        let d = resolve_dim("log_softmax", dim, self.rank());
        self - &self.logsumexp(d, true)
    }

    /// softmax along `dim`: exp(x − m) / Σ exp(x − m).
    ///
    /// ```
    /// use tensor::Tensor;
    /// let p = Tensor::from_vec(vec![-1000.0f64, 0.0, 1000.0], &[1, 3]).softmax(-1);
    /// assert_eq!(p.to_vec(), vec![0.0, 0.0, 1.0]);
    /// ```
    #[track_caller]
    pub fn softmax<D: Dim>(&self, dim: D) -> Self {
        let d = resolve_dim("softmax", dim, self.rank());
        let e = (self - &self.stable_shift(d)).exp();
        let s = e.sum(&[d], true);
        e / s
    }
}
