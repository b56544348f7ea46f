//! The extension point: a recurrent cell is one time step, `(x_t, state_{t−1}) → state_t`.
//!
//! Implement [`Cell`] for your own struct and [`Layer`](crate::Layer) unrolls it over time,
//! stacks it, runs it in both directions and over variable-length batches, and
//! [`autograd::gradcheck`] checks its gradients — with no further code.

use autograd::{Tape, Var};

use crate::module::Module;
use tensor::{Float, Tensor};

/// A cell's recurrent state: one or more `[batch, hidden]` variables, the first of which is
/// the hidden output `h_t`. Implemented for `Var<T>` (RNN, GRU) and `(Var<T>, Var<T>)`
/// (LSTM's `(h, c)`).
pub trait State<T: Float>: Clone {
    /// The hidden output `h_t`, what the layer emits at each step.
    fn hidden(&self) -> &Var<T>;
    /// Every component, hidden first.
    fn parts(&self) -> Vec<Var<T>>;
    /// Rebuilds a state from [`parts`](Self::parts).
    fn from_parts(parts: Vec<Var<T>>) -> Self;
    /// Number of components.
    fn num_parts() -> usize;
}

impl<T: Float> State<T> for Var<T> {
    fn hidden(&self) -> &Var<T> {
        self
    }
    fn parts(&self) -> Vec<Var<T>> {
        vec![self.clone()]
    }
    fn from_parts(mut parts: Vec<Var<T>>) -> Self {
        parts.swap_remove(0)
    }
    fn num_parts() -> usize {
        1
    }
}

impl<T: Float> State<T> for (Var<T>, Var<T>) {
    fn hidden(&self) -> &Var<T> {
        &self.0
    }
    fn parts(&self) -> Vec<Var<T>> {
        vec![self.0.clone(), self.1.clone()]
    }
    fn from_parts(parts: Vec<Var<T>>) -> Self {
        let mut it = parts.into_iter();
        let h = it.next().expect("an (h, c) state has two parts");
        let c = it.next().expect("an (h, c) state has two parts");
        (h, c)
    }
    fn num_parts() -> usize {
        2
    }
}

/// Panics, naming the part, if a state `step` returned does not have the sizes the cell
/// declares ([`Cell::state_sizes`]) for `batch` rows: a cell's bug, caught where it happens
/// rather than as a shape error some steps later (or never, for a part `step` ignores).
#[track_caller]
pub(crate) fn check_step_state<T: Float, S: State<T>>(next: &S, batch: usize, sizes: &[usize]) {
    for (k, (part, &size)) in next.parts().iter().zip(sizes).enumerate() {
        if part.shape() != [batch, size] {
            panic!(
                "Layer: the cell's step returned state part {k} of shape {:?}, expected \
                 [{batch}, {size}] ([batch, state_sizes()[{k}]])",
                part.shape()
            );
        }
    }
}

/// One step of a recurrent network.
///
/// `step` is written with ordinary variable ops, so the tape differentiates it; parameters are
/// [`Param`](autograd::Param)s used directly in expressions (`x.linear(&self.w_ih) + &self.b_ih`). A cell is a
/// [`Module`]: its [`named_params`](Module::named_params) are its parameters with their local
/// names (`weight_ih`, `bias_hh`, ...), to which layers add the `_l{k}` and `_reverse`
/// suffixes PyTorch uses. Every parameter `step` uses must be listed there (a [`Layer`] checks
/// this when it is built), or no optimizer or saved file would see it.
///
/// A cell is `'static` (it owns its parameters): a layer that recomputes its activations in
/// the backward ([`Recompute`](crate::Recompute)) keeps a handle to the cell on the tape.
///
/// [`Layer`]: crate::Layer
pub trait Cell<T: Float>: Module<T> + 'static {
    /// The recurrent state: `Var<T>` for a single hidden vector, `(Var<T>, Var<T>)` for (h, c).
    type State: State<T>;

    /// Size of the input `x_t`'s last dim.
    fn input_size(&self) -> usize;

    /// Size of the hidden state.
    fn hidden_size(&self) -> usize;

    /// The size of each state part, the hidden output `h_t` first: by default `hidden_size`
    /// for every part. (An LSTM with a projection has `h_t` of `proj_size` and `c_t` of
    /// `hidden_size`.)
    fn state_sizes(&self) -> Vec<usize> {
        vec![self.hidden_size(); Self::State::num_parts()]
    }

    /// One time step: `x_t` is `[batch, input_size]`, the state `[batch, hidden_size]` per part.
    fn step(&self, x_t: &Var<T>, state: &Self::State) -> Self::State;

    /// The state at t = 0 when none is given: zeros of [`state_sizes`](Self::state_sizes).
    fn zero_state(&self, tape: &Tape<T>, batch: usize) -> Self::State {
        let parts = (self.state_sizes().into_iter())
            .map(|size| tape.constant(Tensor::zeros(&[batch, size])))
            .collect();
        Self::State::from_parts(parts)
    }

    /// A fused kernel for a whole sequence, which [`Layer`](crate::Layer) uses instead of
    /// calling [`step`](Self::step) at every time step. The built-in cells return theirs;
    /// your own cells keep this default (`None`) and run compiled from their `step` (see
    /// [`Layer::explain`](crate::Layer::explain)), or composed, op by op. (To give your cell
    /// a fused backward, write it with [`autograd::Var::custom_op`] inside `step`.)
    fn fused(&self) -> Option<crate::fused::Fused<'_, T>> {
        None
    }
}
