//! Optimizers with PyTorch's update rules and defaults, and learning-rate schedules.
//!
//! An optimizer holds handles to the parameters it updates (as `torch.optim` does).
//! [`Optimizer::step`] reads each parameter's `grad` and updates its value; parameters without
//! a gradient are skipped, as in PyTorch. The state (step counts and moment buffers) can be
//! read with [`Optimizer::state`] and restored with [`Optimizer::load_state`], which is what
//! training checkpoints store.
//!
//! Hyperparameters are checked as `torch.optim` checks them, with its messages ("Invalid
//! learning rate: -1"), and a little more: every one must be finite, and the learning rate
//! must give a finite step in the parameters' type. A constructor panics on a bad one (a
//! programmer's error); [`Optimizer::load_state`] returns the same message as an error, since
//! a state comes from a file. So does an empty or repeated parameter list (PyTorch refuses the
//! first and warns of the second).

mod adagrad;
mod adam;
mod rmsprop;
pub mod schedule;
mod sgd;

pub use adagrad::{Adagrad, AdagradConfig};
pub use adam::{Adam, AdamConfig, AdamW, AdamWConfig};
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use sgd::{Sgd, SgdConfig};

use tensor::{Float, Tensor};
use thiserror::Error;

use crate::param::Param;

/// A gradient-descent method.
pub trait Optimizer<T: Float> {
    /// The parameters this optimizer updates, in order.
    fn params(&self) -> &[Param<T>];

    /// Updates every parameter that has a gradient.
    fn step(&mut self);

    /// Forgets every parameter's gradient.
    fn zero_grad(&self) {
        for p in self.params() {
            p.zero_grad();
        }
    }

    /// The learning rate.
    fn lr(&self) -> f64;

    /// Sets the learning rate (schedules call this).
    ///
    /// # Panics
    /// If the rate is invalid, as the constructor would refuse it.
    fn set_lr(&mut self, lr: f64);

    /// Everything needed to resume: step counts and buffers.
    fn state(&self) -> OptimizerState<T>;

    /// Restores a state from [`state`](Self::state), checked as the constructor checks a
    /// configuration: its learning rate, its step counts, and the buffers those counts imply
    /// for this optimizer's configuration (e.g. Adam's `exp_avg` and `exp_avg_sq` for every
    /// parameter that has taken a step, `max_exp_avg_sq` only with AMSGrad), with finite
    /// values (and non-negative ones for sums of squares).
    ///
    /// # Errors
    /// If the state is for another optimizer kind or another number of parameters, or fails
    /// any check above; the optimizer is unchanged then.
    fn load_state(&mut self, state: &OptimizerState<T>) -> Result<(), StateError>;
}

/// An optimizer's state: its kind, learning rate, per-parameter step counts, and named
/// buffers keyed `"{param index}.{buffer}"` (e.g. `"3.exp_avg"`), as in a PyTorch optimizer
/// `state_dict`.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState<T: Float> {
    /// `"sgd"`, `"adam"`, `"adamw"`, `"rmsprop"` or `"adagrad"`.
    pub kind: String,
    /// The learning rate at the time.
    pub lr: f64,
    /// Steps taken per parameter.
    pub steps: Vec<u64>,
    /// Buffers, only for parameters that have them.
    pub buffers: Vec<(String, Tensor<T>)>,
}

/// Why a state could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StateError {
    /// The state was saved by another kind of optimizer.
    #[error("optimizer state is for '{found}', not '{expected}'")]
    WrongKind {
        /// This optimizer's kind.
        expected: String,
        /// The state's kind.
        found: String,
    },
    /// The state covers another number of parameters.
    #[error("optimizer state has {found} parameters, the optimizer has {expected}")]
    WrongParamCount {
        /// This optimizer's parameter count.
        expected: usize,
        /// The state's.
        found: usize,
    },
    /// A buffer name that this optimizer does not know, or for a parameter out of range.
    #[error("optimizer state has an unknown buffer '{0}'")]
    UnknownBuffer(String),
    /// A buffer whose shape is not its parameter's.
    #[error("optimizer buffer '{name}' has shape {found:?}, its parameter has shape {expected:?}")]
    WrongShape {
        /// The buffer.
        name: String,
        /// The parameter's shape.
        expected: Vec<usize>,
        /// The buffer's shape.
        found: Vec<usize>,
    },
    /// A parameter that has taken steps lacks a buffer this optimizer keeps for it.
    #[error(
        "optimizer state has no buffer '{name}', which parameter {index} would have after \
         {steps} steps"
    )]
    MissingBuffer {
        /// The buffer.
        name: String,
        /// The parameter's index.
        index: usize,
        /// Its step count.
        steps: u64,
    },
    /// A buffer this optimizer, configured as it is, would not have.
    #[error("optimizer state has a buffer '{name}', which this optimizer would not have: {why}")]
    UnusedBuffer {
        /// The buffer.
        name: String,
        /// Why not.
        why: String,
    },
    /// A value an optimizer would refuse: a hyperparameter, a step count, a buffer's values.
    #[error("{0}")]
    Invalid(String),
}

/// Checks a hyperparameter that must be finite and at least 0, in `torch.optim`'s words
/// (`what` is its name there: "learning rate", "epsilon value", "weight_decay value").
pub(crate) fn non_negative(what: &str, value: f64) -> Result<(), String> {
    match value.is_finite() && value >= 0.0 {
        true => Ok(()),
        false => Err(format!(
            "Invalid {what}: {} (must be finite and >= 0)",
            show(value)
        )),
    }
}

/// Checks a learning rate: finite and at least 0, and such that a step of `lr · scale` (the
/// largest multiple of it the update applies, e.g. Adam's `lr / (1 − β₁)`) is finite in `T`.
pub(crate) fn learning_rate<T: Float>(lr: f64, scale: f64) -> Result<(), String> {
    non_negative("learning rate", lr)?;
    let step = lr * scale;
    match T::from_f64(step).is_finite() {
        true => Ok(()),
        false => Err(format!(
            "Invalid learning rate: {} (a step of {} is not finite in {})",
            show(lr),
            show(step),
            T::DTYPE
        )),
    }
}

/// A number as Python prints it: plainly, or in exponent form when very large or small
/// (Rust's `{}` writes 1e308 with 309 digits).
pub(crate) fn show(v: f64) -> String {
    if v == 0.0 || !v.is_finite() || (1e-4..1e16).contains(&v.abs()) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

/// Panics with `optimizer`'s name and the message of a failed check.
#[track_caller]
pub(crate) fn or_panic(optimizer: &str, check: Result<(), String>) {
    if let Err(message) = check {
        panic!("{optimizer}: {message}");
    }
}

/// Checks a parameter list as `torch.optim` does: not empty, and no parameter twice.
#[track_caller]
pub(crate) fn check_params<T: Float>(optimizer: &str, params: &[Param<T>]) {
    if params.is_empty() {
        panic!("{optimizer}: optimizer got an empty parameter list");
    }
    for (i, p) in params.iter().enumerate() {
        if params[..i].iter().any(|q| q.same(p)) {
            panic!(
                "{optimizer}: parameter {i} ('{}') appears twice in the parameter list",
                p.name()
            );
        }
    }
}

/// The most steps a state may record: Adam's bias correction raises β to the step count as
/// an `i32`.
const MAX_STEPS: u64 = i32::MAX as u64;

/// Buffers that hold sums or averages of squares, which are never negative.
const NON_NEGATIVE: &[&str] = &["exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum"];

/// Per-parameter buffers (`slots[s][i]` is buffer `names[s]` of parameter `i`) and step
/// counts: the bookkeeping every optimizer shares.
#[derive(Clone, Debug)]
pub(crate) struct Slots<T> {
    names: &'static [&'static str],
    pub bufs: Vec<Vec<Option<Vec<T>>>>,
    pub steps: Vec<u64>,
}

impl<T: Float> Slots<T> {
    pub fn new(names: &'static [&'static str], n_params: usize) -> Self {
        Slots {
            names,
            bufs: vec![vec![None; n_params]; names.len()],
            steps: vec![0; n_params],
        }
    }

    pub fn export(&self, kind: &str, lr: f64, params: &[Param<T>]) -> OptimizerState<T> {
        let mut buffers = Vec::new();
        for (s, name) in self.names.iter().enumerate() {
            for (i, buf) in self.bufs[s].iter().enumerate() {
                if let Some(b) = buf {
                    let t = Tensor::from_vec(b.clone(), &params[i].shape());
                    buffers.push((format!("{i}.{name}"), t));
                }
            }
        }
        OptimizerState {
            kind: kind.to_string(),
            lr,
            steps: self.steps.clone(),
            buffers,
        }
    }

    /// Checks `state` fully, then replaces these slots with it. `used[s]` says whether this
    /// optimizer, configured as it is, keeps slot `s`: every parameter that has taken a step
    /// has each used slot, and no parameter has another.
    pub fn import(
        &mut self,
        kind: &str,
        params: &[Param<T>],
        state: &OptimizerState<T>,
        used: &[bool],
    ) -> Result<(), StateError> {
        if state.kind != kind {
            return Err(StateError::WrongKind {
                expected: kind.into(),
                found: state.kind.clone(),
            });
        }
        if state.steps.len() != params.len() {
            return Err(StateError::WrongParamCount {
                expected: params.len(),
                found: state.steps.len(),
            });
        }
        if let Some((i, &n)) = state.steps.iter().enumerate().find(|(_, &n)| n > MAX_STEPS) {
            return Err(StateError::Invalid(format!(
                "Invalid step count {n} for parameter {i} (at most {MAX_STEPS})"
            )));
        }
        let mut fresh = Slots::new(self.names, params.len());
        for (key, t) in &state.buffers {
            let unknown = || StateError::UnknownBuffer(key.clone());
            let (index, name) = key.split_once('.').ok_or_else(unknown)?;
            let i: usize = index.parse().map_err(|_| unknown())?;
            let s = self
                .names
                .iter()
                .position(|n| *n == name)
                .ok_or_else(unknown)?;
            let expected = params.get(i).ok_or_else(unknown)?.shape();
            if t.shape() != expected.as_slice() {
                return Err(StateError::WrongShape {
                    name: key.clone(),
                    expected,
                    found: t.shape().to_vec(),
                });
            }
            let why = match (used[s], state.steps[i]) {
                (false, _) => Some(format!("its configuration does not use '{name}'")),
                (true, 0) => Some(format!("parameter {i} has taken no step")),
                _ => None,
            };
            if let Some(why) = why {
                return Err(StateError::UnusedBuffer {
                    name: key.clone(),
                    why,
                });
            }
            let values = t.to_vec();
            let floor = if NON_NEGATIVE.contains(&name) {
                0.0
            } else {
                f64::NEG_INFINITY
            };
            if let Some(v) = values
                .iter()
                .find(|v| !(v.is_finite() && v.to_f64() >= floor))
            {
                return Err(StateError::Invalid(format!(
                    "optimizer buffer '{key}' holds {v}, which {kind} never makes"
                )));
            }
            if fresh.bufs[s][i].replace(values).is_some() {
                return Err(StateError::Invalid(format!(
                    "optimizer buffer '{key}' appears twice"
                )));
            }
        }
        for (i, &steps) in state.steps.iter().enumerate() {
            if let Some(s) =
                (0..self.names.len()).find(|&s| used[s] && steps > 0 && fresh.bufs[s][i].is_none())
            {
                return Err(StateError::MissingBuffer {
                    name: format!("{i}.{}", self.names[s]),
                    index: i,
                    steps,
                });
            }
        }
        fresh.steps = state.steps.clone();
        *self = fresh;
        Ok(())
    }
}

/// Runs `update(i, value, grad)` for each parameter that has a gradient.
pub(crate) fn for_each_with_grad<T: Float>(
    params: &[Param<T>],
    mut update: impl FnMut(usize, &mut [T], &[T]),
) {
    for (i, p) in params.iter().enumerate() {
        if let Some(g) = p.grad() {
            let g = g.to_vec();
            p.update(|value| update(i, value, &g));
        }
    }
}

/// The buffer, created as zeros (or `init`) on first use.
pub(crate) fn buffer<T: Float>(slot: &mut Option<Vec<T>>, len: usize, init: T) -> &mut Vec<T> {
    slot.get_or_insert_with(|| vec![init; len])
}
