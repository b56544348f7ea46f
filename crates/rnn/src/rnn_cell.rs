//! The Elman RNN cell, as `torch.nn.RNNCell`:
//!
//! ```text
//! h_t = tanh(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh)      (or relu instead of tanh)
//! ```

use autograd::{Param, Var};
use tensor::{Float, Rng};

use crate::cell::Cell;
use crate::fused::{Fused, Kind, PackCache};
use crate::init::GateParams;
use crate::module::Module;
use crate::nonlinearity::Nonlinearity;

/// A vanilla RNN cell: `h_t = tanh(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh)`.
///
/// Parameters as PyTorch: `weight_ih [H, I]`, `weight_hh [H, H]`, `bias_ih [H]`,
/// `bias_hh [H]`, all initialised from U(−1/√H, 1/√H).
///
/// A hand-worked step (all weights 0.5, zero biases, x = 1, h = 0, one unit):
/// h = tanh(0.5·1 + 0.5·0) = tanh(0.5) = 0.4621172.
pub struct RnnCell<T: Float> {
    p: GateParams<T>,
    /// The fused inference forward's packed weights, kept between calls.
    packs: PackCache<T>,
    nonlinearity: Nonlinearity,
}

impl<T: Float> RnnCell<T> {
    /// A tanh cell with biases.
    pub fn new(input_size: usize, hidden_size: usize, rng: &mut Rng) -> Self {
        Self::with_options(input_size, hidden_size, Nonlinearity::Tanh, true, rng)
    }

    /// A cell with the given nonlinearity, with or without biases.
    pub fn with_options(
        input_size: usize,
        hidden_size: usize,
        nonlinearity: Nonlinearity,
        bias: bool,
        rng: &mut Rng,
    ) -> Self {
        RnnCell {
            p: GateParams::new(1, input_size, hidden_size, bias, rng),
            packs: PackCache::default(),
            nonlinearity,
        }
    }

    /// The nonlinearity.
    pub fn nonlinearity(&self) -> Nonlinearity {
        self.nonlinearity
    }
}

impl<T: Float> Cell<T> for RnnCell<T> {
    type State = Var<T>;

    fn input_size(&self) -> usize {
        self.p.input_size()
    }

    fn hidden_size(&self) -> usize {
        self.p.hidden_size()
    }

    fn step(&self, x_t: &Var<T>, h: &Var<T>) -> Var<T> {
        let p = &self.p;
        p.check_step("RnnCell", x_t, &[h], &[p.hidden_size()]);
        let pre = p.input_projection(x_t) + p.hidden_projection(h);
        match self.nonlinearity {
            Nonlinearity::Tanh => pre.tanh(),
            Nonlinearity::Relu => pre.relu(),
        }
    }

    fn fused(&self) -> Option<Fused<'_, T>> {
        Some(Fused {
            kind: Kind::Rnn(self.nonlinearity),
            params: &self.p,
            packs: &self.packs,
        })
    }
}

/// A cell alone is a model too: its parameters under `nn.RNNCell`'s names
/// (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`), for state dicts and files.
impl<T: Float> Module<T> for RnnCell<T> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        self.p.named()
    }
}
