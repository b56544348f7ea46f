//! `logsumexp`, `log_softmax` and `softmax` along one dim, each with its own backward rule
//! (rather than composed from exp/sum/log) for numerical stability.
//!
//! With p = softmax(x) along the dim and Σ the sum along it:
//! - logsumexp:   ∂/∂x = g · p
//! - log_softmax: ∂/∂x = g − p · Σg
//! - softmax:     ∂/∂x = y · (g − Σ(g · y))

use tensor::{resolve_dim, Dim, Float};

use crate::var::Var;

impl<T: Float> Var<T> {
    /// log Σ exp(x) along `dim`.  ∂/∂x = g · softmax(x).
    #[track_caller]
    pub fn logsumexp<D: Dim>(&self, dim: D, keepdim: bool) -> Var<T> {
        let d = resolve_dim("logsumexp", dim, self.rank());
        let p = self.value.softmax(d);
        let mut kept = self.shape().to_vec();
        kept[d] = 1;
        self.unary("logsumexp", self.value.logsumexp(d, keepdim), move |g| {
            g.reshape(&kept).mul(&p)
        })
    }

    /// log softmax along `dim`: x − logsumexp(x).  ∂/∂x = g − softmax(x) · Σg.
    #[track_caller]
    pub fn log_softmax<D: Dim>(&self, dim: D) -> Var<T> {
        let d = resolve_dim("log_softmax", dim, self.rank());
        let y = self.value.log_softmax(d);
        let p = y.exp();
        self.unary("log_softmax", y, move |g| g.sub(&p.mul(&g.sum(&[d], true))))
    }

    /// softmax along `dim`.  ∂/∂x = y · (g − Σ(g · y)).
    #[track_caller]
    pub fn softmax<D: Dim>(&self, dim: D) -> Var<T> {
        let d = resolve_dim("softmax", dim, self.rank());
        let y = self.value.softmax(d);
        let y_out = y.clone();
        self.unary("softmax", y, move |g| {
            y_out.mul(&g.sub(&g.mul(&y_out).sum(&[d], true)))
        })
    }
}
