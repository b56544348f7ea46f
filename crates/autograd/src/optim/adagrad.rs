//! Adagrad, with PyTorch's update rule.
//!
//! ```text
//! t ← t + 1
//! g ← g + λ·p
//! lr_t = lr / (1 + (t − 1)·η)        (learning-rate decay η)
//! s ← s + g²                         (s starts at `initial_accumulator_value`)
//! p ← p − lr_t · g / (√s + ε)
//! ```

use tensor::Float;

use super::{
    buffer, check_params, for_each_with_grad, learning_rate, non_negative, or_panic, Optimizer,
    OptimizerState, Slots, StateError,
};
use crate::param::Param;

/// Adagrad hyperparameters; defaults as `torch.optim.Adagrad`.
#[derive(Clone, Debug, PartialEq)]
pub struct AdagradConfig {
    /// Learning rate (default 1e-2).
    pub lr: f64,
    /// Learning-rate decay η (default 0).
    pub lr_decay: f64,
    /// L2 weight decay λ (default 0).
    pub weight_decay: f64,
    /// Starting value of the squared-gradient sum (default 0).
    pub initial_accumulator_value: f64,
    /// ε (default 1e-10).
    pub eps: f64,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        AdagradConfig {
            lr: 1e-2,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
        }
    }
}

/// The Adagrad optimizer.
pub struct Adagrad<T: Float> {
    params: Vec<Param<T>>,
    config: AdagradConfig,
    slots: Slots<T>,
}

impl AdagradConfig {
    /// Checks every hyperparameter as `torch.optim.Adagrad` does, for parameters of type `T`.
    fn check<T: Float>(&self) -> Result<(), String> {
        non_negative("lr_decay value", self.lr_decay)?;
        non_negative("weight_decay value", self.weight_decay)?;
        non_negative(
            "initial_accumulator_value value",
            self.initial_accumulator_value,
        )?;
        non_negative("epsilon value", self.eps)?;
        learning_rate::<T>(self.lr, 1.0)
    }
}

impl<T: Float> Adagrad<T> {
    /// Adagrad over `params`.
    ///
    /// # Panics
    /// If a hyperparameter is out of range (as PyTorch refuses: "Invalid lr_decay value"),
    /// or `params` is empty or repeats a parameter.
    #[track_caller]
    pub fn new(params: Vec<Param<T>>, config: AdagradConfig) -> Self {
        check_params("Adagrad", &params);
        or_panic("Adagrad", config.check::<T>());
        let slots = Slots::new(&["sum"], params.len());
        Adagrad {
            params,
            config,
            slots,
        }
    }
}

impl<T: Float> Optimizer<T> for Adagrad<T> {
    fn params(&self) -> &[Param<T>] {
        &self.params
    }

    fn step(&mut self) {
        let c = &self.config;
        let (wd, eps) = (T::from_f64(c.weight_decay), T::from_f64(c.eps));
        let init = T::from_f64(c.initial_accumulator_value);
        let slots = &mut self.slots;
        for_each_with_grad(&self.params, |i, p, g| {
            slots.steps[i] += 1;
            let lr_t = T::from_f64(c.lr / (1.0 + (slots.steps[i] - 1) as f64 * c.lr_decay));
            let sum = buffer(&mut slots.bufs[0][i], p.len(), init);
            for j in 0..p.len() {
                let gj = g[j] + wd * p[j];
                sum[j] += gj * gj;
                p[j] -= lr_t * gj / (sum[j].sqrt() + eps);
            }
        });
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }

    #[track_caller]
    fn set_lr(&mut self, lr: f64) {
        or_panic("Adagrad", learning_rate::<T>(lr, 1.0));
        self.config.lr = lr;
    }

    fn state(&self) -> OptimizerState<T> {
        self.slots.export("adagrad", self.config.lr, &self.params)
    }

    fn load_state(&mut self, state: &OptimizerState<T>) -> Result<(), StateError> {
        learning_rate::<T>(state.lr, 1.0).map_err(StateError::Invalid)?;
        self.slots.import("adagrad", &self.params, state, &[true])?;
        self.config.lr = state.lr;
        Ok(())
    }
}
