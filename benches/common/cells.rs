//! Cells the library does not ship, written the way a user writes one, for the custom-cell
//! benchmark: MGU (the docs' cell), IndRNN, a layer-normalised LSTM and PyTorch's
//! `custom_lstms.py` LSTM cell. Each is generic over the float type and only uses ops the
//! compiler knows, so each runs composed or compiled.

use unroll::autograd::{Param, Var};
use unroll::rnn::{Cell, Module};
use unroll::tensor::{Float, Rng, Tensor};

/// Parameters as a list with their names.
fn named<T: Float>(params: &[(&str, &Param<T>)]) -> Vec<(String, Param<T>)> {
    params
        .iter()
        .map(|(n, p)| (n.to_string(), (*p).clone()))
        .collect()
}

/// A parameter of `shape` drawn from N(0, scale²).
fn normal<T: Float>(name: &str, shape: &[usize], scale: f64, rng: &mut Rng) -> Param<T> {
    Param::new(
        name,
        Tensor::rand_normal(shape, T::ZERO, T::from_f64(scale), rng),
    )
}

/// PyTorch's benchmark LSTM cell (`torch_custom_cell_bench.py`), gate order i, f, g, o.
pub struct UserLstm<T: Float> {
    w_ih: Param<T>,
    w_hh: Param<T>,
    b_ih: Param<T>,
    b_hh: Param<T>,
}

impl<T: Float> UserLstm<T> {
    pub fn new(input: usize, hidden: usize, rng: &mut Rng) -> Self {
        UserLstm {
            w_ih: normal("w_ih", &[4 * hidden, input], 0.1, rng),
            w_hh: normal("w_hh", &[4 * hidden, hidden], 0.1, rng),
            b_ih: normal("b_ih", &[4 * hidden], 0.0, rng),
            b_hh: normal("b_hh", &[4 * hidden], 0.0, rng),
        }
    }
}

impl<T: Float> Cell<T> for UserLstm<T> {
    type State = (Var<T>, Var<T>);

    fn input_size(&self) -> usize {
        self.w_ih.shape()[1]
    }

    fn hidden_size(&self) -> usize {
        self.w_hh.shape()[1]
    }

    fn step(&self, x: &Var<T>, (h, c): &(Var<T>, Var<T>)) -> (Var<T>, Var<T>) {
        let gates = x.linear(&self.w_ih) + &self.b_ih + h.linear(&self.w_hh) + &self.b_hh;
        let [i, f, g, o] = <[Var<T>; 4]>::try_from(gates.chunk(4, -1)).expect("four gates");
        let (i, f, g, o) = (i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid());
        let c = &f * c + &i * &g;
        let h = &o * &c.tanh();
        (h, c)
    }
}

impl<T: Float> Module<T> for UserLstm<T> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        named(&[
            ("w_ih", &self.w_ih),
            ("w_hh", &self.w_hh),
            ("b_ih", &self.b_ih),
            ("b_hh", &self.b_hh),
        ])
    }
}

/// The minimal gated unit (Zhou et al. 2016), as in `docs/custom-cell.md`:
///
/// ```text
/// f   = σ(x W_fᵀ + h U_fᵀ + b_f)
/// h̃   = tanh(x W_hᵀ + (f ⊙ h) U_hᵀ + b_h)
/// h_t = (1 − f) ⊙ h + f ⊙ h̃
/// ```
pub struct Mgu<T: Float> {
    w_f: Param<T>,
    u_f: Param<T>,
    b_f: Param<T>,
    w_h: Param<T>,
    u_h: Param<T>,
    b_h: Param<T>,
}

impl<T: Float> Mgu<T> {
    pub fn new(input: usize, hidden: usize, rng: &mut Rng) -> Self {
        let s = 1.0 / (hidden as f64).sqrt();
        Mgu {
            w_f: normal("w_f", &[hidden, input], s, rng),
            u_f: normal("u_f", &[hidden, hidden], s, rng),
            b_f: normal("b_f", &[hidden], s, rng),
            w_h: normal("w_h", &[hidden, input], s, rng),
            u_h: normal("u_h", &[hidden, hidden], s, rng),
            b_h: normal("b_h", &[hidden], s, rng),
        }
    }
}

impl<T: Float> Cell<T> for Mgu<T> {
    type State = Var<T>;

    fn input_size(&self) -> usize {
        self.w_f.shape()[1]
    }

    fn hidden_size(&self) -> usize {
        self.u_f.shape()[0]
    }

    fn step(&self, x: &Var<T>, h: &Var<T>) -> Var<T> {
        let f = (x.linear(&self.w_f) + h.linear(&self.u_f) + &self.b_f).sigmoid();
        let h_tilde = (x.linear(&self.w_h) + (&f * h).linear(&self.u_h) + &self.b_h).tanh();
        &f.neg().add_scalar(T::ONE) * h + &f * &h_tilde
    }
}

impl<T: Float> Module<T> for Mgu<T> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        named(&[
            ("w_f", &self.w_f),
            ("u_f", &self.u_f),
            ("b_f", &self.b_f),
            ("w_h", &self.w_h),
            ("u_h", &self.u_h),
            ("b_h", &self.b_h),
        ])
    }
}

/// IndRNN (Li et al. 2018): each unit sees only its own past, `h_t = relu(x Wᵀ + b + u ⊙ h)`.
pub struct IndRnn<T: Float> {
    w: Param<T>,
    u: Param<T>,
    b: Param<T>,
}

impl<T: Float> IndRnn<T> {
    pub fn new(input: usize, hidden: usize, rng: &mut Rng) -> Self {
        IndRnn {
            w: normal("w", &[hidden, input], 1.0 / (input as f64).sqrt(), rng),
            u: Param::new("u", Tensor::rand_uniform(&[hidden], T::ZERO, T::ONE, rng)),
            b: normal("b", &[hidden], 0.0, rng),
        }
    }
}

impl<T: Float> Cell<T> for IndRnn<T> {
    type State = Var<T>;

    fn input_size(&self) -> usize {
        self.w.shape()[1]
    }

    fn hidden_size(&self) -> usize {
        self.w.shape()[0]
    }

    fn step(&self, x: &Var<T>, h: &Var<T>) -> Var<T> {
        (x.linear(&self.w) + &self.b + h * &self.u).relu()
    }
}

impl<T: Float> Module<T> for IndRnn<T> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        named(&[("w", &self.w), ("u", &self.u), ("b", &self.b)])
    }
}

/// A layer-normalised LSTM (Ba et al. 2016): the gates' pre-activations and the cell state are
/// normalised over their features, each with a gain and a bias.
pub struct LnLstm<T: Float> {
    w_ih: Param<T>,
    w_hh: Param<T>,
    gain_gates: Param<T>,
    bias_gates: Param<T>,
    gain_cell: Param<T>,
    bias_cell: Param<T>,
}

/// `(v − mean) / √(var + ε) · gain + bias` over the last dim.
fn layer_norm<T: Float>(v: &Var<T>, gain: &Param<T>, bias: &Param<T>) -> Var<T> {
    let centred = v - &v.mean(&[-1], true);
    let var = centred.square().mean(&[-1], true);
    &(&centred / &var.add_scalar(T::from_f64(1e-5)).sqrt()) * gain + bias
}

impl<T: Float> LnLstm<T> {
    pub fn new(input: usize, hidden: usize, rng: &mut Rng) -> Self {
        let ones = |name: &str, n: usize| Param::new(name, Tensor::ones(&[n]));
        let zeros = |name: &str, n: usize| Param::new(name, Tensor::zeros(&[n]));
        LnLstm {
            w_ih: normal("w_ih", &[4 * hidden, input], 0.1, rng),
            w_hh: normal("w_hh", &[4 * hidden, hidden], 0.1, rng),
            gain_gates: ones("gain_gates", 4 * hidden),
            bias_gates: zeros("bias_gates", 4 * hidden),
            gain_cell: ones("gain_cell", hidden),
            bias_cell: zeros("bias_cell", hidden),
        }
    }
}

impl<T: Float> Cell<T> for LnLstm<T> {
    type State = (Var<T>, Var<T>);

    fn input_size(&self) -> usize {
        self.w_ih.shape()[1]
    }

    fn hidden_size(&self) -> usize {
        self.w_hh.shape()[1]
    }

    fn step(&self, x: &Var<T>, (h, c): &(Var<T>, Var<T>)) -> (Var<T>, Var<T>) {
        let gates = x.linear(&self.w_ih) + h.linear(&self.w_hh);
        let gates = layer_norm(&gates, &self.gain_gates, &self.bias_gates);
        let [i, f, g, o] = <[Var<T>; 4]>::try_from(gates.chunk(4, -1)).expect("four gates");
        let (i, f, g, o) = (i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid());
        let c = &f * c + &i * &g;
        let h = &o * &layer_norm(&c, &self.gain_cell, &self.bias_cell).tanh();
        (h, c)
    }
}

impl<T: Float> Module<T> for LnLstm<T> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        named(&[
            ("w_ih", &self.w_ih),
            ("w_hh", &self.w_hh),
            ("gain_gates", &self.gain_gates),
            ("bias_gates", &self.bias_gates),
            ("gain_cell", &self.gain_cell),
            ("bias_cell", &self.bias_cell),
        ])
    }
}
