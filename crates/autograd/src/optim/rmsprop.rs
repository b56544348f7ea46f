//! RMSprop, with PyTorch's update rule (centered and momentum variants).
//!
//! ```text
//! g ← g + λ·p
//! s ← α·s + (1 − α)·g²
//! centered: a ← α·a + (1 − α)·g;  d ← √(s − a²) + ε      else d ← √s + ε
//! momentum μ > 0: b ← μ·b + g/d;  p ← p − lr·b           else p ← p − lr·g/d
//! ```

use tensor::Float;

use super::{
    buffer, check_params, for_each_with_grad, learning_rate, non_negative, or_panic, Optimizer,
    OptimizerState, Slots, StateError,
};
use crate::param::Param;

/// RMSprop hyperparameters; defaults as `torch.optim.RMSprop`.
#[derive(Clone, Debug, PartialEq)]
pub struct RmsPropConfig {
    /// Learning rate (default 1e-2).
    pub lr: f64,
    /// Smoothing α (default 0.99).
    pub alpha: f64,
    /// ε (default 1e-8).
    pub eps: f64,
    /// L2 weight decay λ (default 0).
    pub weight_decay: f64,
    /// Momentum μ (default 0).
    pub momentum: f64,
    /// Normalise by the variance instead of the second moment (default off).
    pub centered: bool,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        RmsPropConfig {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
        }
    }
}

/// The RMSprop optimizer.
pub struct RmsProp<T: Float> {
    params: Vec<Param<T>>,
    config: RmsPropConfig,
    slots: Slots<T>,
}

impl RmsPropConfig {
    /// Checks every hyperparameter as `torch.optim.RMSprop` does, for parameters of type `T`.
    fn check<T: Float>(&self) -> Result<(), String> {
        non_negative("epsilon value", self.eps)?;
        non_negative("momentum value", self.momentum)?;
        non_negative("weight_decay value", self.weight_decay)?;
        non_negative("alpha value", self.alpha)?;
        learning_rate::<T>(self.lr, 1.0)
    }
}

impl<T: Float> RmsProp<T> {
    /// RMSprop over `params`.
    ///
    /// # Panics
    /// If a hyperparameter is out of range (as PyTorch refuses: "Invalid alpha value"), or
    /// `params` is empty or repeats a parameter.
    #[track_caller]
    pub fn new(params: Vec<Param<T>>, config: RmsPropConfig) -> Self {
        check_params("RmsProp", &params);
        or_panic("RmsProp", config.check::<T>());
        let slots = Slots::new(&["square_avg", "grad_avg", "momentum_buffer"], params.len());
        RmsProp {
            params,
            config,
            slots,
        }
    }
}

impl<T: Float> Optimizer<T> for RmsProp<T> {
    fn params(&self) -> &[Param<T>] {
        &self.params
    }

    fn step(&mut self) {
        let c = &self.config;
        let (lr, alpha, eps) = (T::from_f64(c.lr), T::from_f64(c.alpha), T::from_f64(c.eps));
        let (wd, mu) = (T::from_f64(c.weight_decay), T::from_f64(c.momentum));
        let slots = &mut self.slots;
        for_each_with_grad(&self.params, |i, p, g| {
            slots.steps[i] += 1;
            let [sq, avg, mom] = &mut slots.bufs[..] else {
                unreachable!("three RMSprop slots")
            };
            let sq = buffer(&mut sq[i], p.len(), T::ZERO);
            let mut avg = c.centered.then(|| buffer(&mut avg[i], p.len(), T::ZERO));
            let mut mom = (c.momentum > 0.0).then(|| buffer(&mut mom[i], p.len(), T::ZERO));
            for j in 0..p.len() {
                let gj = g[j] + wd * p[j];
                sq[j] = alpha * sq[j] + (T::ONE - alpha) * gj * gj;
                let d = match avg.as_deref_mut() {
                    Some(a) => {
                        a[j] = alpha * a[j] + (T::ONE - alpha) * gj;
                        (sq[j] - a[j] * a[j]).sqrt() + eps
                    }
                    None => sq[j].sqrt() + eps,
                };
                match mom.as_deref_mut() {
                    Some(b) => {
                        b[j] = mu * b[j] + gj / d;
                        p[j] -= lr * b[j];
                    }
                    None => p[j] -= lr * gj / d,
                }
            }
        });
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }

    #[track_caller]
    fn set_lr(&mut self, lr: f64) {
        or_panic("RmsProp", learning_rate::<T>(lr, 1.0));
        self.config.lr = lr;
    }

    fn state(&self) -> OptimizerState<T> {
        self.slots.export("rmsprop", self.config.lr, &self.params)
    }

    fn load_state(&mut self, state: &OptimizerState<T>) -> Result<(), StateError> {
        learning_rate::<T>(state.lr, 1.0).map_err(StateError::Invalid)?;
        let used = [true, self.config.centered, self.config.momentum > 0.0];
        self.slots.import("rmsprop", &self.params, state, &used)?;
        self.config.lr = state.lr;
        Ok(())
    }
}
