//! Optimizers with PyTorch's update rules and defaults, and learning-rate schedules.
//!
//! An optimizer holds handles to the parameters it updates (as `torch.optim` does).
//! [`Optimizer::step`] reads each parameter's `grad` and updates its value; parameters without
//! a gradient are skipped, as in PyTorch. The state (step counts and moment buffers) can be
//! read with [`Optimizer::state`] and restored with [`Optimizer::load_state`], which is what
//! training checkpoints store.

mod adagrad;
mod adam;
mod rmsprop;
pub mod schedule;
mod sgd;

pub use adagrad::{Adagrad, AdagradConfig};
pub use adam::{Adam, AdamConfig, AdamW};
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
    fn set_lr(&mut self, lr: f64);

    /// Everything needed to resume: step counts and buffers.
    fn state(&self) -> OptimizerState<T>;

    /// Restores a state from [`state`](Self::state).
    ///
    /// # Errors
    /// If the state is for another optimizer kind, another number of parameters, or has a
    /// buffer of the wrong shape; the optimizer is unchanged then.
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
}

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

    /// Checks `state` fully, then replaces these slots with it.
    pub fn import(
        &mut self,
        kind: &str,
        params: &[Param<T>],
        state: &OptimizerState<T>,
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
            fresh.bufs[s][i] = Some(t.to_vec());
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
