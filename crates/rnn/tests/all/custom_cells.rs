//! Cells the library does not ship, for the compiled-cell tests (`compiled.rs`) and the
//! custom-cell benchmark (`benches/custom_cell.rs` includes this file): a minimal gated unit,
//! an IndRNN, a layer-normalised LSTM, and a cell that uses every op the compiler supports.
//! Each is generic over the float type.
#![allow(dead_code)] // the benchmark uses some of them

use std::ops::{Div, Sub};

use autograd::{Param, Var};
use rnn::{Cell, Module};
use tensor::{Float, Rng, Tensor};

/// A parameter of U(lo, hi) values.
pub fn param<T: Float>(name: &str, shape: &[usize], lo: f64, hi: f64, rng: &mut Rng) -> Param<T> {
    Param::new(
        name,
        Tensor::rand_uniform(shape, T::from_f64(lo), T::from_f64(hi), rng),
    )
}

/// `(name, param)` pairs as a cell's `named_params`.
pub fn named<T: Float>(pairs: &[(&str, &Param<T>)]) -> Vec<(String, Param<T>)> {
    (pairs.iter())
        .map(|(n, p)| (n.to_string(), (*p).clone()))
        .collect()
}

/// The scalars on the left of an op (`1.0 - v`, `1.0 / v`), which autograd implements for
/// f32 and f64: a cell generic in `T` asks for them with this bound.
pub trait ScalarLhs:
    Float
    + for<'a> Sub<&'a Var<Self>, Output = Var<Self>>
    + for<'a> Div<&'a Var<Self>, Output = Var<Self>>
{
}

impl<T> ScalarLhs for T where
    T: Float + for<'a> Sub<&'a Var<T>, Output = Var<T>> + for<'a> Div<&'a Var<T>, Output = Var<T>>
{
}

/// Minimal gated unit, as in `examples/custom_cell.rs` and `docs/custom-cell.md`:
///   f  = σ(x W_fᵀ + h U_fᵀ + b_f)
///   h̃  = tanh(x W_hᵀ + (f ⊙ h) U_hᵀ + b_h)
///   h' = h + f ⊙ (h̃ − h)
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
        let k = T::from_f64(1.0 / (hidden as f64).sqrt());
        let mut p =
            |name: &str, shape: &[usize]| Param::new(name, Tensor::rand_uniform(shape, -k, k, rng));
        Mgu {
            w_f: p("w_f", &[hidden, input]),
            u_f: p("u_f", &[hidden, hidden]),
            b_f: p("b_f", &[hidden]),
            w_h: p("w_h", &[hidden, input]),
            u_h: p("u_h", &[hidden, hidden]),
            b_h: p("b_h", &[hidden]),
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
        let f = (x.linear(&self.w_f) + h.linear(&self.u_f) + &self.b_f)
            .sigmoid()
            .label("forget");
        let h_tilde = (x.linear(&self.w_h) + (&f * h).linear(&self.u_h) + &self.b_h).tanh();
        h + &f * (h_tilde - h)
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

/// IndRNN (Li et al., 2018): each hidden unit sees only its own past,
///   h' = act(x Wᵀ + b + u ⊙ h),  u of shape [hidden],
/// with act = relu (the paper's) or tanh (smooth, for finite differences).
pub struct IndRnn<T: Float> {
    w: Param<T>,
    b: Param<T>,
    u: Param<T>,
    relu: bool,
}

impl<T: Float> IndRnn<T> {
    pub fn new(input: usize, hidden: usize, relu: bool, rng: &mut Rng) -> Self {
        let k = 1.0 / (input as f64).sqrt();
        IndRnn {
            w: param("w", &[hidden, input], -k, k, rng),
            b: param("b", &[hidden], -k, k, rng),
            u: param("u", &[hidden], -1.0, 1.0, rng),
            relu,
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
        let pre = x.linear(&self.w) + &self.b + h * &self.u;
        match self.relu {
            true => pre.relu(),
            false => pre.tanh(),
        }
    }
}

impl<T: Float> Module<T> for IndRnn<T> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        named(&[("w", &self.w), ("b", &self.b), ("u", &self.u)])
    }
}

/// A layer-normalised LSTM (Ba et al., 2016): layer norm over the gates' pre-activations and
/// over the new cell state before its tanh,
///   [i f g o] = LN(x W_ihᵀ + h W_hhᵀ + b; γ_g, β_g)
///   c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g),   h' = σ(o) ⊙ tanh(LN(c'; γ_c, β_c))
///   LN(v; γ, β) = (v − mean(v)) / √(mean((v − mean(v))²) + ε) ⊙ γ + β   (along the features)
pub struct LnLstm<T: Float> {
    w_ih: Param<T>,
    w_hh: Param<T>,
    b: Param<T>,
    gain_gates: Param<T>,
    bias_gates: Param<T>,
    gain_c: Param<T>,
    bias_c: Param<T>,
}

impl<T: Float> LnLstm<T> {
    pub fn new(input: usize, hidden: usize, rng: &mut Rng) -> Self {
        let k = 1.0 / (hidden as f64).sqrt();
        LnLstm {
            w_ih: param("w_ih", &[4 * hidden, input], -k, k, rng),
            w_hh: param("w_hh", &[4 * hidden, hidden], -k, k, rng),
            b: param("b", &[4 * hidden], -k, k, rng),
            // Not the usual ones and zeros, so that every gradient is exercised.
            gain_gates: param("gain_gates", &[4 * hidden], 0.5, 1.5, rng),
            bias_gates: param("bias_gates", &[4 * hidden], -0.5, 0.5, rng),
            gain_c: param("gain_c", &[hidden], 0.5, 1.5, rng),
            bias_c: param("bias_c", &[hidden], -0.5, 0.5, rng),
        }
    }
}

/// Layer norm along the last dim, from the ops the compiler follows.
pub fn layer_norm<T: Float>(v: &Var<T>, gain: &Param<T>, bias: &Param<T>) -> Var<T> {
    let centred = v - &v.mean(&[-1], true);
    let var = centred.square().mean(&[-1], true);
    let sd = var.add_scalar(T::from_f64(1e-5)).sqrt();
    (&centred / &sd) * gain + bias
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
        let pre = x.linear(&self.w_ih) + h.linear(&self.w_hh) + &self.b;
        let gates = layer_norm(&pre, &self.gain_gates, &self.bias_gates).chunk(4, -1);
        let (i, f, g, o) = (&gates[0], &gates[1], &gates[2], &gates[3]);
        let c_next = f.sigmoid() * c + i.sigmoid() * g.tanh();
        let h_next = o.sigmoid() * layer_norm(&c_next, &self.gain_c, &self.bias_c).tanh();
        (h_next, c_next)
    }
}

impl<T: Float> Module<T> for LnLstm<T> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        named(&[
            ("w_ih", &self.w_ih),
            ("w_hh", &self.w_hh),
            ("b", &self.b),
            ("gain_gates", &self.gain_gates),
            ("bias_gates", &self.bias_gates),
            ("gain_c", &self.gain_c),
            ("bias_c", &self.bias_c),
        ])
    }
}

/// A cell with two state parts, h of `hidden` and m of `hidden + 1` features, whose step
/// uses every op the compiler supports at least once (the comments name them), each
/// binary op with another row value, a `[batch, 1]` row value, a `[w]` (or `[1, w]`)
/// parameter and a scalar-shaped constant, and some with the broadcast operand on the left.
/// Its values stay within a few units (log, sqrt and 1/v see only values in (0.5, 1.5)).
pub struct AllOps<T: Float> {
    w_x: Param<T>,
    b_x: Param<T>,
    w_h: Param<T>,
    u_m: Param<T>,
    gain: Param<T>,
    row: Param<T>,
    positive: Param<T>,
    w_hn: Param<T>,
    w_mn: Param<T>,
}

impl<T: Float> AllOps<T> {
    pub fn new(input: usize, hidden: usize, rng: &mut Rng) -> Self {
        let (h, m) = (hidden, hidden + 1);
        let k = |fan_in: usize| 1.0 / (fan_in as f64).sqrt();
        AllOps {
            w_x: param("w_x", &[3 * h, input], -k(input), k(input), rng),
            b_x: param("b_x", &[3 * h], -0.5, 0.5, rng),
            w_h: param("w_h", &[h, h], -k(h), k(h), rng),
            u_m: param("u_m", &[m, h], -k(m), k(m), rng),
            gain: param("gain", &[h], 0.5, 1.5, rng),
            row: param("row", &[1, h], -0.5, 0.5, rng),
            positive: param("positive", &[h], 0.5, 1.5, rng),
            w_hn: param("w_hn", &[h, 2 * h], -k(2 * h), k(2 * h), rng),
            w_mn: param("w_mn", &[m, 6 * h], -k(6 * h), k(6 * h), rng),
        }
    }
}

impl<T: ScalarLhs> Cell<T> for AllOps<T> {
    type State = (Var<T>, Var<T>);

    fn input_size(&self) -> usize {
        self.w_x.shape()[1]
    }

    fn hidden_size(&self) -> usize {
        self.w_h.shape()[0]
    }

    fn state_sizes(&self) -> Vec<usize> {
        vec![self.hidden_size(), self.u_m.shape()[0]]
    }

    fn step(&self, x: &Var<T>, (h, m): &(Var<T>, Var<T>)) -> (Var<T>, Var<T>) {
        let tape = x.tape();
        let hidden = self.hidden_size();
        let (one, half) = (T::ONE, T::from_f64(0.5));
        let scalar = |v: f64| Tensor::scalar(T::from_f64(v));
        // linear, add with a [w] parameter, chunk (x-dependent: hoisted out of the loop)
        let xp = x.linear(&self.w_x) + &self.b_x;
        let pieces = xp.chunk(3, -1);
        let (a, z, r) = (&pieces[0], &pieces[1], &pieces[2]);
        // products with a parameter-derived matrix and with a parameter's variable
        let hw = h.matmul(tape.param(&self.w_h).t());
        let mu = m.matmul(tape.param(&self.u_m));
        // add, sub (rows), tanh, mul_scalar, sigmoid, add_scalar
        let s = (a + &hw).tanh();
        let gate = (z - &mu.mul_scalar(half)).sigmoid();
        let pos = gate.add_scalar(half); // in (0.5, 1.5)
                                         // log, sqrt, 1 / v (recip), 1 − v (neg, add_scalar), exp
        let lg = pos.log();
        let sq = pos.sqrt();
        let inv = one / &pos;
        let omg = one - &gate;
        let e = s.mul_scalar(half).exp();
        // div and mul of rows, relu, abs, square, neg
        let q = (&e / &pos) * &omg;
        let rel = (r + h).relu();
        let ab = (&hw - r).abs();
        let nsq = sq.square().neg();
        // mean and sum over the features, keeping the dim: [batch, 1] operands
        let mean = s.mean(&[-1], true);
        let sum = q.sum(&[-1], true);
        let sum_pos = sum.abs().add_scalar(one);
        let c0 = &s - &mean;
        let c1 = &rel + &mean;
        let c2 = &mean * &ab; // the [batch, 1] operand on the left
        let c3 = &q / &sum_pos;
        // [w] and [1, w] parameters, on either side
        let p0 = &c0 * &self.gain;
        let p1 = tape.param(&self.gain).sub(&c1);
        let p2 = &c2 + &self.row;
        let p3 = &c3 / &self.positive;
        // scalar-shaped constants, on either side
        let k0 = &p0 + &scalar(0.25);
        let k1 = &p1 - &scalar(0.5);
        let k2 = tape.constant(scalar(1.5)).mul(&p2);
        let k3 = &p3 / &scalar(2.0);
        // concat, split, narrow along the features
        let cat = Var::concat(&[&k0, &k1, &k2, &k3], -1); // [batch, 4h]
        let halves = cat.split(&[hidden, 3 * hidden], -1);
        let mid = cat.narrow(-1, hidden, 2 * hidden);
        let h_next = (mid.linear(&self.w_hn) + &halves[0]).tanh();
        let m_in = Var::concat(&[&lg, &inv, &nsq, &halves[1]], -1); // [batch, 6h]
        let m_next = (m_in.linear(&self.w_mn) + m).tanh();
        (h_next, m_next)
    }
}

impl<T: Float> Module<T> for AllOps<T> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        named(&[
            ("w_x", &self.w_x),
            ("b_x", &self.b_x),
            ("w_h", &self.w_h),
            ("u_m", &self.u_m),
            ("gain", &self.gain),
            ("row", &self.row),
            ("positive", &self.positive),
            ("w_hn", &self.w_hn),
            ("w_mn", &self.w_mn),
        ])
    }
}

/// h' = tanh(dropout(x) Wᵀ + h Uᵀ): a cell that draws random numbers in `step` (composed, in
/// training), for the re-runs (probe, recompute) that must draw what the forward drew.
pub struct Dropped {
    pub w: Param<f64>,
    pub u: Param<f64>,
}

impl Cell<f64> for Dropped {
    type State = Var<f64>;
    fn input_size(&self) -> usize {
        self.w.shape()[1]
    }
    fn hidden_size(&self) -> usize {
        self.u.shape()[0]
    }
    fn step(&self, x: &Var<f64>, h: &Var<f64>) -> Var<f64> {
        (rnn::dropout(x, 0.5).linear(&self.w) + h.linear(&self.u)).tanh()
    }
}

impl Module<f64> for Dropped {
    fn named_params(&self) -> Vec<(String, Param<f64>)> {
        named(&[("w", &self.w), ("u", &self.u)])
    }
}
