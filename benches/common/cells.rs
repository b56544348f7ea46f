//! PyTorch's benchmark LSTM cell written the way a user writes one, for the custom-cell
//! benchmark (the other cells it runs are the tests' `crates/rnn/tests/all/custom_cells.rs`).

use unroll::autograd::{Param, Var};
use unroll::rnn::{Cell, Module};
use unroll::tensor::{Float, Rng, Tensor};

use super::custom_cells::named;

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
