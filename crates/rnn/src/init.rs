//! Parameter initialisation as PyTorch's recurrent layers do it.

use autograd::{Param, Var};
use tensor::{Float, Rng, Tensor};

/// A parameter drawn from U(−1/√hidden, 1/√hidden), PyTorch's default for every weight and
/// bias of `nn.RNN`, `nn.LSTM` and `nn.GRU` (and their cells).
pub(crate) fn recurrent_uniform<T: Float>(
    name: &str,
    shape: &[usize],
    hidden_size: usize,
    rng: &mut Rng,
) -> Param<T> {
    let k = T::from_f64(1.0 / (hidden_size as f64).sqrt());
    Param::new(name, Tensor::rand_uniform(shape, -k, k, rng))
}

/// Weights `weight_ih [gates·H, I]`, `weight_hh [gates·H, H]` and, if `bias`, `bias_ih`,
/// `bias_hh [gates·H]`, in PyTorch's layout; with a projection (LSTM's `proj_size` P > 0),
/// `weight_hh` is `[gates·H, P]` and `weight_hr [P, H]` maps the cell's output down to `h`.
pub(crate) struct GateParams<T: Float> {
    pub w_ih: Param<T>,
    pub w_hh: Param<T>,
    pub b_ih: Option<Param<T>>,
    pub b_hh: Option<Param<T>>,
    pub w_hr: Option<Param<T>>,
}

impl<T: Float> GateParams<T> {
    pub fn new(
        gates: usize,
        input_size: usize,
        hidden_size: usize,
        bias: bool,
        rng: &mut Rng,
    ) -> Self {
        Self::with_projection(gates, input_size, hidden_size, 0, bias, rng)
    }

    /// With `proj_size` > 0, the LSTM's projection: `h` has `proj_size` features, drawn last
    /// as in PyTorch's parameter order.
    pub fn with_projection(
        gates: usize,
        input_size: usize,
        hidden_size: usize,
        proj_size: usize,
        bias: bool,
        rng: &mut Rng,
    ) -> Self {
        let rows = gates * hidden_size;
        let h_size = if proj_size > 0 {
            proj_size
        } else {
            hidden_size
        };
        let w_ih = recurrent_uniform("weight_ih", &[rows, input_size], hidden_size, rng);
        let w_hh = recurrent_uniform("weight_hh", &[rows, h_size], hidden_size, rng);
        let (b_ih, b_hh) = if bias {
            (
                Some(recurrent_uniform("bias_ih", &[rows], hidden_size, rng)),
                Some(recurrent_uniform("bias_hh", &[rows], hidden_size, rng)),
            )
        } else {
            (None, None)
        };
        let w_hr = (proj_size > 0)
            .then(|| recurrent_uniform("weight_hr", &[proj_size, hidden_size], hidden_size, rng));
        GateParams {
            w_ih,
            w_hh,
            b_ih,
            b_hh,
            w_hr,
        }
    }

    /// In PyTorch's `state_dict` order.
    pub fn named(&self) -> Vec<(String, Param<T>)> {
        let mut v = vec![
            ("weight_ih".to_string(), self.w_ih.clone()),
            ("weight_hh".to_string(), self.w_hh.clone()),
        ];
        if let (Some(b_ih), Some(b_hh)) = (&self.b_ih, &self.b_hh) {
            v.push(("bias_ih".to_string(), b_ih.clone()));
            v.push(("bias_hh".to_string(), b_hh.clone()));
        }
        if let Some(w_hr) = &self.w_hr {
            v.push(("weight_hr".to_string(), w_hr.clone()));
        }
        v
    }

    pub fn input_size(&self) -> usize {
        self.w_ih.shape()[1]
    }

    /// H: the gates' width (the LSTM's cell state).
    pub fn hidden_size(&self) -> usize {
        match &self.w_hr {
            Some(w_hr) => w_hr.shape()[1],
            None => self.w_hh.shape()[1],
        }
    }

    /// The size of `h`, the cell's output: P with a projection, else H.
    pub fn output_size(&self) -> usize {
        self.w_hh.shape()[1]
    }

    /// Checks one step's shapes as PyTorch's cells do: `x_t` `[batch, input]`, or unbatched
    /// `[input]`, and each state part `[batch, size]` for its size in `sizes` (`[size]` for an
    /// unbatched `x_t`); otherwise panics naming `cell` and the shapes (left alone, a mismatch
    /// would broadcast).
    #[track_caller]
    pub fn check_step(&self, cell: &str, x: &Var<T>, state: &[&Var<T>], sizes: &[usize]) {
        let (input, xs) = (self.input_size(), x.shape());
        if !matches!(xs, [n] | [_, n] if *n == input) {
            panic!(
                "{cell}::step: x_t of shape {xs:?} does not fit input_size {input} (expected \
                 [batch, {input}], or [{input}] unbatched)"
            );
        }
        for (k, (part, &size)) in state.iter().zip(sizes).enumerate() {
            let want: Vec<usize> = xs[..xs.len() - 1].iter().copied().chain([size]).collect();
            if part.shape() != want {
                panic!(
                    "{cell}::step: state part {k} of shape {:?} does not fit x_t of shape {xs:?} \
                     (expected {want:?})",
                    part.shape()
                );
            }
        }
    }

    /// The input projection x W_ihᵀ + b_ih.
    pub fn input_projection(&self, x: &Var<T>) -> Var<T> {
        with_bias(x.linear(&self.w_ih), self.b_ih.as_ref())
    }

    /// The recurrent projection h W_hhᵀ + b_hh.
    pub fn hidden_projection(&self, h: &Var<T>) -> Var<T> {
        with_bias(h.linear(&self.w_hh), self.b_hh.as_ref())
    }
}

fn with_bias<T: Float>(y: Var<T>, b: Option<&Param<T>>) -> Var<T> {
    match b {
        Some(b) => y + b,
        None => y,
    }
}
