//! Learning-rate schedules, as pure functions of the step (or epoch) count, so resuming from a
//! checkpoint needs only the count. Each matches the PyTorch scheduler of the same name in
//! closed form; call `opt.set_lr(schedule.lr(base_lr, step))` before each step.

use std::f64::consts::PI;

/// A learning rate as a function of the base rate and the step count.
pub trait LrSchedule {
    /// The learning rate at `step` (0 for the first).
    fn lr(&self, base_lr: f64, step: u64) -> f64;
}

/// `StepLR`: multiply by `gamma` every `step_size` steps.
#[derive(Clone, Debug, PartialEq)]
pub struct StepDecay {
    /// Steps between decays.
    pub step_size: u64,
    /// Factor per decay.
    pub gamma: f64,
}

impl LrSchedule for StepDecay {
    fn lr(&self, base_lr: f64, step: u64) -> f64 {
        base_lr * self.gamma.powf((step / self.step_size.max(1)) as f64)
    }
}

/// `ExponentialLR`: multiply by `gamma` every step.
#[derive(Clone, Debug, PartialEq)]
pub struct Exponential {
    /// Factor per step.
    pub gamma: f64,
}

impl LrSchedule for Exponential {
    fn lr(&self, base_lr: f64, step: u64) -> f64 {
        base_lr * self.gamma.powf(step as f64)
    }
}

/// `CosineAnnealingLR`: from the base rate down to `eta_min` along half a cosine over `t_max`
/// steps: `η_min + (η − η_min)(1 + cos(π·t/T))/2`. Past `t_max` it follows the cosine back
/// up, as PyTorch's closed form does.
#[derive(Clone, Debug, PartialEq)]
pub struct Cosine {
    /// Steps of the half period T.
    pub t_max: u64,
    /// The rate at the end.
    pub eta_min: f64,
}

impl LrSchedule for Cosine {
    fn lr(&self, base_lr: f64, step: u64) -> f64 {
        let t = step as f64 / self.t_max.max(1) as f64;
        self.eta_min + (base_lr - self.eta_min) * (1.0 + (PI * t).cos()) / 2.0
    }
}

/// `LinearLR` used as a warm-up: the factor rises linearly from `start_factor` to 1 over
/// `warmup_steps`, then stays at 1 — or hands over to `then`, started afresh after warm-up.
pub struct LinearWarmup {
    /// Steps to reach the full rate.
    pub warmup_steps: u64,
    /// The factor at step 0 (PyTorch's default is 1/3).
    pub start_factor: f64,
    /// The schedule after warm-up, counted from the end of warm-up.
    pub then: Option<Box<dyn LrSchedule>>,
}

impl LrSchedule for LinearWarmup {
    fn lr(&self, base_lr: f64, step: u64) -> f64 {
        if step >= self.warmup_steps {
            return match &self.then {
                Some(s) => s.lr(base_lr, step - self.warmup_steps),
                None => base_lr,
            };
        }
        let progress = step as f64 / self.warmup_steps as f64;
        base_lr * (self.start_factor + (1.0 - self.start_factor) * progress)
    }
}
