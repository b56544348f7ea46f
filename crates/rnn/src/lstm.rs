//! The LSTM cell, as `torch.nn.LSTMCell` (gate order i, f, g, o):
//!
//! ```text
//! i = σ(x W_iiᵀ + b_ii + h W_hiᵀ + b_hi)        input gate
//! f = σ(x W_ifᵀ + b_if + h W_hfᵀ + b_hf)        forget gate
//! g = tanh(x W_igᵀ + b_ig + h W_hgᵀ + b_hg)     candidate
//! o = σ(x W_ioᵀ + b_io + h W_hoᵀ + b_ho)        output gate
//! c_t = f ⊙ c_{t−1} + i ⊙ g
//! h_t = o ⊙ tanh(c_t)
//! ```
//!
//! `step` [labels](autograd::Var::label) the activated gates `input_gate`, `forget_gate`,
//! `cell_gate` and `output_gate` (PyTorch's names), which a [`Probe`](crate::Probe) records
//! and anomaly reports name.
//!
//! The four gates' weights are stacked in that order: `weight_ih` is `[4H, I]` with rows
//! `[W_ii; W_if; W_ig; W_io]`, and likewise `weight_hh`, `bias_ih`, `bias_hh`.
//!
//! With a projection (`nn.LSTM(proj_size = P)`, Sak et al. 2014), `h_t` has P features:
//!
//! ```text
//! h_t = (o ⊙ tanh(c_t)) W_hrᵀ        weight_hr [P, H];  weight_hh [4H, P]
//! ```

use autograd::{Param, Var};
use tensor::{Float, Rng};

use crate::cell::Cell;
use crate::fused::{Fused, Kind, PackCache};
use crate::init::GateParams;
use crate::module::Module;

/// An LSTM cell. State `(h, c)`: `h` `[batch, P]` with a projection, else `[batch, H]`, and
/// `c` `[batch, H]`.
///
/// A hand-worked step (all weights 0.5, zero biases, x = 1, h = c = 0, one unit):
/// i = f = o = σ(0.5) = 0.6224593, g = tanh(0.5) = 0.4621172,
/// c = f·0 + i·g = 0.2876491, h = o·tanh(c) = 0.1742697.
pub struct LstmCell<T: Float> {
    p: GateParams<T>,
    /// The fused inference forward's packed weights, kept between calls.
    packs: PackCache<T>,
}

impl<T: Float> LstmCell<T> {
    /// A cell with biases, initialised as PyTorch does.
    pub fn new(input_size: usize, hidden_size: usize, rng: &mut Rng) -> Self {
        Self::with_bias(input_size, hidden_size, true, rng)
    }

    /// A cell with or without biases.
    pub fn with_bias(input_size: usize, hidden_size: usize, bias: bool, rng: &mut Rng) -> Self {
        Self::with_projection(input_size, hidden_size, 0, bias, rng)
    }

    /// A cell whose output `h` is projected to `proj_size` features by `weight_hr`
    /// (`proj_size` 0: no projection), as a layer of `nn.LSTM(proj_size=…)`.
    ///
    /// # Panics
    /// If `proj_size` is not smaller than `hidden_size` (as PyTorch refuses).
    #[track_caller]
    pub fn with_projection(
        input_size: usize,
        hidden_size: usize,
        proj_size: usize,
        bias: bool,
        rng: &mut Rng,
    ) -> Self {
        assert!(
            proj_size < hidden_size || proj_size == 0,
            "LstmCell: proj_size {proj_size} has to be smaller than hidden_size {hidden_size}"
        );
        LstmCell {
            p: GateParams::with_projection(4, input_size, hidden_size, proj_size, bias, rng),
            packs: PackCache::default(),
        }
    }

    /// The projection's size P, or 0 without one.
    pub fn proj_size(&self) -> usize {
        self.p.w_hr.as_ref().map_or(0, |_| self.p.output_size())
    }
}

impl<T: Float> Cell<T> for LstmCell<T> {
    type State = (Var<T>, Var<T>);

    fn input_size(&self) -> usize {
        self.p.input_size()
    }

    fn hidden_size(&self) -> usize {
        self.p.hidden_size()
    }

    fn state_sizes(&self) -> Vec<usize> {
        vec![self.p.output_size(), self.p.hidden_size()]
    }

    fn step(&self, x_t: &Var<T>, (h, c): &(Var<T>, Var<T>)) -> (Var<T>, Var<T>) {
        let p = &self.p;
        p.check_step("LstmCell", x_t, &[h, c], &self.state_sizes());
        let gates = p.input_projection(x_t) + p.hidden_projection(h);
        let [i, f, g, o] = <[Var<T>; 4]>::try_from(gates.chunk(4, -1)).expect("four gates");
        let i = i.sigmoid().label("input_gate");
        let f = f.sigmoid().label("forget_gate");
        let g = g.tanh().label("cell_gate");
        let o = o.sigmoid().label("output_gate");
        let c_t = &f * c + &i * &g;
        let h_t = &o * &c_t.tanh();
        match &p.w_hr {
            Some(w_hr) => (h_t.linear(w_hr), c_t),
            None => (h_t, c_t),
        }
    }

    /// The fused kernel (with a projection, `fused/lstm_proj.rs`).
    fn fused(&self) -> Option<Fused<'_, T>> {
        Some(Fused {
            kind: Kind::Lstm,
            params: &self.p,
            packs: &self.packs,
        })
    }
}

/// A cell alone is a model too: its parameters under `nn.LSTMCell`'s names
/// (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`), for state dicts and files.
impl<T: Float> Module<T> for LstmCell<T> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        self.p.named()
    }
}
