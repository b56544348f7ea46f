//! The GRU cell, as `torch.nn.GRUCell` (gate order r, z, n):
//!
//! ```text
//! r = σ(x W_irᵀ + b_ir + h W_hrᵀ + b_hr)            reset gate
//! z = σ(x W_izᵀ + b_iz + h W_hzᵀ + b_hz)            update gate
//! n = tanh(x W_inᵀ + b_in + r ⊙ (h W_hnᵀ + b_hn))   candidate: b_hn inside the reset product
//! h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}  =  n + z ⊙ (h_{t−1} − n)
//! ```
//!
//! The code uses the second form of h_t, which is how PyTorch's CPU kernel computes it, so the
//! rounding matches too. `step` [labels](autograd::Var::label) r, z and n `reset_gate`,
//! `update_gate` and `new_gate`, for a [`Probe`](crate::Probe) and anomaly reports.

use autograd::{Param, Var};
use tensor::{Float, Rng};

use crate::cell::Cell;
use crate::fused::{Fused, Kind, PackCache};
use crate::init::GateParams;
use crate::module::Module;

/// A GRU cell.
///
/// A hand-worked step (all weights 0.5, zero biases, x = 1, h = 0, one unit):
/// r = z = σ(0.5) = 0.6224593, n = tanh(0.5 + r·0) = 0.4621172,
/// h = (1 − z)·n + z·0 = 0.1744680.
pub struct GruCell<T: Float> {
    p: GateParams<T>,
    /// The fused inference forward's packed weights, kept between calls.
    packs: PackCache<T>,
}

impl<T: Float> GruCell<T> {
    /// A cell with biases, initialised as PyTorch does.
    pub fn new(input_size: usize, hidden_size: usize, rng: &mut Rng) -> Self {
        Self::with_bias(input_size, hidden_size, true, rng)
    }

    /// A cell with or without biases.
    pub fn with_bias(input_size: usize, hidden_size: usize, bias: bool, rng: &mut Rng) -> Self {
        GruCell {
            p: GateParams::new(3, input_size, hidden_size, bias, rng),
            packs: PackCache::default(),
        }
    }
}

impl<T: Float> Cell<T> for GruCell<T> {
    type State = Var<T>;

    fn input_size(&self) -> usize {
        self.p.input_size()
    }

    fn hidden_size(&self) -> usize {
        self.p.hidden_size()
    }

    fn step(&self, x_t: &Var<T>, h: &Var<T>) -> Var<T> {
        let p = &self.p;
        p.check_step("GruCell", x_t, &[h], &[p.hidden_size()]);
        let gi = p.input_projection(x_t);
        let gh = p.hidden_projection(h);
        let [i_r, i_z, i_n] = <[Var<T>; 3]>::try_from(gi.chunk(3, -1)).expect("three gates");
        let [h_r, h_z, h_n] = <[Var<T>; 3]>::try_from(gh.chunk(3, -1)).expect("three gates");
        let r = (i_r + h_r).sigmoid().label("reset_gate");
        let z = (i_z + h_z).sigmoid().label("update_gate");
        let n = (i_n + &r * &h_n).tanh().label("new_gate");
        &n + &z * (h - &n)
    }

    fn fused(&self) -> Option<Fused<'_, T>> {
        Some(Fused {
            kind: Kind::Gru,
            params: &self.p,
            packs: &self.packs,
        })
    }
}

/// A cell alone is a model too: its parameters under `nn.GRUCell`'s names
/// (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`), for state dicts and files.
impl<T: Float> Module<T> for GruCell<T> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        self.p.named()
    }
}
