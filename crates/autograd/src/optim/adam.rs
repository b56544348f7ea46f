//! Adam and AdamW, with PyTorch's update rules (including AMSGrad).
//!
//! ```text
//! t ← t + 1
//! Adam:  g ← g + λ·p            AdamW:  p ← p·(1 − lr·λ)
//! m ← β₁·m + (1 − β₁)·g
//! v ← β₂·v + (1 − β₂)·g²
//! v̂ ← max(v̂, v) with AMSGrad, else v
//! p ← p − (lr / (1 − β₁ᵗ)) · m / (√v̂ / √(1 − β₂ᵗ) + ε)
//! ```

use tensor::Float;

use super::{
    buffer, check_params, for_each_with_grad, learning_rate, non_negative, or_panic, show,
    Optimizer, OptimizerState, Slots, StateError,
};
use crate::param::Param;

/// Adam's hyperparameters; defaults as `torch.optim.Adam`.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// β₁ (default 0.9).
    pub beta1: f64,
    /// β₂ (default 0.999).
    pub beta2: f64,
    /// ε (default 1e-8).
    pub eps: f64,
    /// L2 weight decay λ, added to the gradient (default 0).
    pub weight_decay: f64,
    /// AMSGrad (default off).
    pub amsgrad: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
        }
    }
}

/// AdamW's hyperparameters; defaults as `torch.optim.AdamW`, whose weight decay is 0.01 (so
/// `AdamWConfig { lr: 3e-4, ..Default::default() }` decays as PyTorch's does).
#[derive(Clone, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// β₁ (default 0.9).
    pub beta1: f64,
    /// β₂ (default 0.999).
    pub beta2: f64,
    /// ε (default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay λ: p ← p·(1 − lr·λ) (default 0.01).
    pub weight_decay: f64,
    /// AMSGrad (default off).
    pub amsgrad: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            weight_decay: 1e-2,
            ..AdamConfig::default().into()
        }
    }
}

/// The same numbers, field by field (the weight decay keeps its value, not its default).
impl From<AdamConfig> for AdamWConfig {
    fn from(c: AdamConfig) -> Self {
        AdamWConfig {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
            amsgrad: c.amsgrad,
        }
    }
}

impl From<AdamWConfig> for AdamConfig {
    fn from(c: AdamWConfig) -> Self {
        AdamConfig {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
            amsgrad: c.amsgrad,
        }
    }
}

impl AdamConfig {
    /// Checks every hyperparameter as `torch.optim.Adam` does, for parameters of type `T`.
    fn check<T: Float>(&self) -> Result<(), String> {
        for (index, beta) in [self.beta1, self.beta2].into_iter().enumerate() {
            if !(0.0..1.0).contains(&beta) {
                return Err(format!(
                    "Invalid beta parameter at index {index}: {}",
                    show(beta)
                ));
            }
        }
        non_negative("epsilon value", self.eps)?;
        non_negative("weight_decay value", self.weight_decay)?;
        // The first step moves a parameter by up to lr / (1 − β₁).
        learning_rate::<T>(self.lr, 1.0 / (1.0 - self.beta1))
    }
}

/// The Adam optimizer (weight decay as an L2 term added to the gradient).
pub struct Adam<T: Float> {
    params: Vec<Param<T>>,
    config: AdamConfig,
    slots: Slots<T>,
    decoupled: bool,
}

/// AdamW: Adam with decoupled weight decay (Loshchilov and Hutter), as `torch.optim.AdamW`.
pub struct AdamW<T: Float>(Adam<T>);

const SLOTS: &[&str] = &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"];

impl<T: Float> Adam<T> {
    /// Adam over `params`.
    ///
    /// # Panics
    /// If a hyperparameter is out of range (as PyTorch refuses: "Invalid learning rate"), or
    /// `params` is empty or repeats a parameter.
    #[track_caller]
    pub fn new(params: Vec<Param<T>>, config: AdamConfig) -> Self {
        Self::build("Adam", params, config, false)
    }

    #[track_caller]
    fn build(name: &str, params: Vec<Param<T>>, config: AdamConfig, decoupled: bool) -> Self {
        check_params(name, &params);
        or_panic(name, config.check::<T>());
        let slots = Slots::new(SLOTS, params.len());
        Adam {
            params,
            config,
            slots,
            decoupled,
        }
    }

    fn kind(&self) -> &'static str {
        if self.decoupled {
            "adamw"
        } else {
            "adam"
        }
    }

    fn name(&self) -> &'static str {
        if self.decoupled {
            "AdamW"
        } else {
            "Adam"
        }
    }
}

impl<T: Float> AdamW<T> {
    /// AdamW over `params`.
    ///
    /// # Panics
    /// As [`Adam::new`].
    #[track_caller]
    pub fn new(params: Vec<Param<T>>, config: AdamWConfig) -> Self {
        AdamW(Adam::build("AdamW", params, config.into(), true))
    }
}

impl<T: Float> Optimizer<T> for AdamW<T> {
    fn params(&self) -> &[Param<T>] {
        self.0.params()
    }

    fn step(&mut self) {
        self.0.step();
    }

    fn lr(&self) -> f64 {
        self.0.lr()
    }

    fn set_lr(&mut self, lr: f64) {
        self.0.set_lr(lr);
    }

    fn state(&self) -> OptimizerState<T> {
        self.0.state()
    }

    fn load_state(&mut self, state: &OptimizerState<T>) -> Result<(), StateError> {
        self.0.load_state(state)
    }
}

impl<T: Float> Optimizer<T> for Adam<T> {
    fn params(&self) -> &[Param<T>] {
        &self.params
    }

    fn step(&mut self) {
        let c = &self.config;
        let decoupled = self.decoupled;
        let slots = &mut self.slots;
        for_each_with_grad(&self.params, |i, p, g| {
            slots.steps[i] += 1;
            let t = slots.steps[i] as i32;
            let bias1 = 1.0 - c.beta1.powi(t);
            let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
            let step_size = T::from_f64(c.lr / bias1);
            let (b1, b2) = (T::from_f64(c.beta1), T::from_f64(c.beta2));
            let (eps, wd) = (T::from_f64(c.eps), T::from_f64(c.weight_decay));
            let decay = T::from_f64(1.0 - c.lr * c.weight_decay);
            let bias2_sqrt = T::from_f64(bias2_sqrt);
            let [m, v, v_max] = &mut slots.bufs[..] else {
                unreachable!("three Adam slots")
            };
            let m = buffer(&mut m[i], p.len(), T::ZERO);
            let v = buffer(&mut v[i], p.len(), T::ZERO);
            let mut v_max = c.amsgrad.then(|| buffer(&mut v_max[i], p.len(), T::ZERO));
            for j in 0..p.len() {
                let mut gj = g[j];
                if decoupled {
                    p[j] *= decay;
                } else {
                    gj += wd * p[j];
                }
                m[j] = b1 * m[j] + (T::ONE - b1) * gj;
                v[j] = b2 * v[j] + (T::ONE - b2) * gj * gj;
                let v_hat = match v_max.as_deref_mut() {
                    Some(vm) => {
                        if v[j] > vm[j] {
                            vm[j] = v[j];
                        }
                        vm[j]
                    }
                    None => v[j],
                };
                p[j] -= step_size * m[j] / (v_hat.sqrt() / bias2_sqrt + eps);
            }
        });
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }

    #[track_caller]
    fn set_lr(&mut self, lr: f64) {
        let config = AdamConfig {
            lr,
            ..self.config.clone()
        };
        or_panic(self.name(), config.check::<T>());
        self.config = config;
    }

    fn state(&self) -> OptimizerState<T> {
        self.slots.export(self.kind(), self.config.lr, &self.params)
    }

    fn load_state(&mut self, state: &OptimizerState<T>) -> Result<(), StateError> {
        let config = AdamConfig {
            lr: state.lr,
            ..self.config.clone()
        };
        config.check::<T>().map_err(StateError::Invalid)?;
        let used = [true, true, self.config.amsgrad];
        self.slots.import(self.kind(), &self.params, state, &used)?;
        self.config = config;
        Ok(())
    }
}
