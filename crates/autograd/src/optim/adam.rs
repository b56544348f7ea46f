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

use super::{buffer, for_each_with_grad, Optimizer, OptimizerState, Slots, StateError};
use crate::param::Param;

/// Adam/AdamW hyperparameters; defaults as `torch.optim.Adam` (use [`AdamConfig::adamw`] for
/// AdamW's, whose weight decay defaults to 0.01).
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
    /// Weight decay λ: L2 for Adam (default 0), decoupled for AdamW (default 0.01).
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

impl AdamConfig {
    /// `torch.optim.AdamW`'s defaults.
    pub fn adamw() -> Self {
        AdamConfig {
            weight_decay: 1e-2,
            ..Default::default()
        }
    }
}

/// The Adam optimizer (weight decay as an L2 term added to the gradient).
pub struct Adam<T: Float> {
    params: Vec<Param<T>>,
    config: AdamConfig,
    slots: Slots<T>,
    decoupled: bool,
}

/// AdamW: Adam with decoupled weight decay. The same type as [`Adam`], made with
/// [`Adam::adamw`].
pub type AdamW<T> = Adam<T>;

const SLOTS: &[&str] = &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"];

impl<T: Float> Adam<T> {
    /// Adam over `params`.
    pub fn new(params: Vec<Param<T>>, config: AdamConfig) -> Self {
        let slots = Slots::new(SLOTS, params.len());
        Adam {
            params,
            config,
            slots,
            decoupled: false,
        }
    }

    /// AdamW over `params` (start from [`AdamConfig::adamw`] for PyTorch's defaults).
    pub fn adamw(params: Vec<Param<T>>, config: AdamConfig) -> Self {
        Adam {
            decoupled: true,
            ..Self::new(params, config)
        }
    }

    fn kind(&self) -> &'static str {
        if self.decoupled {
            "adamw"
        } else {
            "adam"
        }
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

    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn state(&self) -> OptimizerState<T> {
        self.slots.export(self.kind(), self.config.lr, &self.params)
    }

    fn load_state(&mut self, state: &OptimizerState<T>) -> Result<(), StateError> {
        let kind = self.kind();
        self.slots.import(kind, &self.params, state)?;
        self.config.lr = state.lr;
        Ok(())
    }
}
