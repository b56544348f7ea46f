//! Stochastic gradient descent, with PyTorch's momentum, dampening, Nesterov and weight decay.
//!
//! ```text
//! g ← g + λ·p                                   (weight decay λ)
//! b ← g on the first step, else μ·b + (1 − τ)·g (momentum μ, dampening τ)
//! g ← g + μ·b if Nesterov, else b
//! p ← p − lr·g
//! ```

use tensor::Float;

use super::{
    buffer, check_params, for_each_with_grad, learning_rate, non_negative, or_panic, Optimizer,
    OptimizerState, Slots, StateError,
};
use crate::param::Param;

/// SGD hyperparameters; defaults as `torch.optim.SGD`.
#[derive(Clone, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Momentum μ (default 0).
    pub momentum: f64,
    /// Dampening τ (default 0).
    pub dampening: f64,
    /// L2 weight decay λ (default 0).
    pub weight_decay: f64,
    /// Nesterov momentum (default off; needs momentum > 0 and dampening 0).
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

/// The SGD optimizer.
///
/// ```
/// use autograd::{optim::{Optimizer, Sgd, SgdConfig}, Param, Tape};
/// use tensor::Tensor;
///
/// let w = Param::new("w", Tensor::<f64>::from_vec(vec![1.0], &[1]));
/// let mut opt = Sgd::new(vec![w.clone()], SgdConfig { lr: 0.1, ..Default::default() });
/// let tape = Tape::new();
/// let loss = tape.param(&w).square().sum_all(); // d/dw w² = 2w = 2
/// loss.backward();
/// opt.step();
/// assert_eq!(w.value().to_vec(), vec![1.0 - 0.1 * 2.0]);
/// ```
pub struct Sgd<T: Float> {
    params: Vec<Param<T>>,
    config: SgdConfig,
    slots: Slots<T>,
}

impl SgdConfig {
    /// Checks every hyperparameter as `torch.optim.SGD` does, for parameters of type `T`.
    fn check<T: Float>(&self) -> Result<(), String> {
        non_negative("momentum value", self.momentum)?;
        non_negative("weight_decay value", self.weight_decay)?;
        if !self.dampening.is_finite() {
            return Err(format!(
                "Invalid dampening value: {}",
                super::show(self.dampening)
            ));
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err("Nesterov momentum requires a momentum and zero dampening".into());
        }
        learning_rate::<T>(self.lr, 1.0)
    }
}

impl<T: Float> Sgd<T> {
    /// An optimizer over `params`.
    ///
    /// # Panics
    /// If a hyperparameter is out of range, or Nesterov is asked for without momentum or with
    /// dampening (as PyTorch refuses), or `params` is empty or repeats a parameter.
    #[track_caller]
    pub fn new(params: Vec<Param<T>>, config: SgdConfig) -> Self {
        check_params("Sgd", &params);
        or_panic("Sgd", config.check::<T>());
        let slots = Slots::new(&["momentum_buffer"], params.len());
        Sgd {
            params,
            config,
            slots,
        }
    }
}

impl<T: Float> Optimizer<T> for Sgd<T> {
    fn params(&self) -> &[Param<T>] {
        &self.params
    }

    fn step(&mut self) {
        let c = &self.config;
        let (lr, mu, wd) = (
            T::from_f64(c.lr),
            T::from_f64(c.momentum),
            T::from_f64(c.weight_decay),
        );
        let one_minus_damp = T::from_f64(1.0 - c.dampening);
        let slots = &mut self.slots;
        for_each_with_grad(&self.params, |i, p, g| {
            // PyTorch starts the buffer as g when there is none yet.
            let first = slots.bufs[0][i].is_none();
            slots.steps[i] += 1;
            let buf = (c.momentum != 0.0).then(|| buffer(&mut slots.bufs[0][i], p.len(), T::ZERO));
            let mut buf = buf;
            for j in 0..p.len() {
                let mut d = g[j] + wd * p[j];
                if let Some(b) = buf.as_deref_mut() {
                    b[j] = if first {
                        d
                    } else {
                        mu * b[j] + one_minus_damp * d
                    };
                    d = if c.nesterov { d + mu * b[j] } else { b[j] };
                }
                p[j] -= lr * d;
            }
        });
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }

    #[track_caller]
    fn set_lr(&mut self, lr: f64) {
        or_panic("Sgd", learning_rate::<T>(lr, 1.0));
        self.config.lr = lr;
    }

    fn state(&self) -> OptimizerState<T> {
        self.slots.export("sgd", self.config.lr, &self.params)
    }

    fn load_state(&mut self, state: &OptimizerState<T>) -> Result<(), StateError> {
        learning_rate::<T>(state.lr, 1.0).map_err(StateError::Invalid)?;
        let used = [self.config.momentum != 0.0];
        self.slots.import("sgd", &self.params, state, &used)?;
        self.config.lr = state.lr;
        Ok(())
    }
}
