//! Write your own recurrent cell, and get stacking, bidirectionality, variable-length
//! batches, truncated BPTT and gradient checking for free.
//!
//! ```text
//! cargo run --release --example custom_cell
//! ```
//!
//! The cell is the minimal gated unit (Zhou et al., 2016): one gate instead of the GRU's two.

use unroll::autograd::{
    gradcheck,
    optim::{Adam, AdamConfig, Optimizer},
    Param, Var,
};
use unroll::rnn::{mse_loss, Cell, Layer, LayerConfig, Linear, Module};
use unroll::tensor::{Float, Rng, Tensor};

// ------------------------------------------------------------------------------- the cell ---

/// Minimal gated unit:
///   f  = σ(x W_fᵀ + h U_fᵀ + b_f)
///   h̃  = tanh(x W_hᵀ + (f ⊙ h) U_hᵀ + b_h)
///   h' = (1 − f) ⊙ h + f ⊙ h̃  =  h + f ⊙ (h̃ − h)
struct Mgu<T: Float> {
    w_f: Param<T>,
    u_f: Param<T>,
    b_f: Param<T>,
    w_h: Param<T>,
    u_h: Param<T>,
    b_h: Param<T>,
}

impl<T: Float> Mgu<T> {
    fn new(input: usize, hidden: usize, rng: &mut Rng) -> Self {
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
        let f = (x.linear(&self.w_f) + h.linear(&self.u_f) + &self.b_f).sigmoid();
        let h_tilde = (x.linear(&self.w_h) + (&f * h).linear(&self.u_h) + &self.b_h).tanh();
        h + &f * (h_tilde - h)
    }

    fn params(&self) -> Vec<(String, Param<T>)> {
        let named = [("w_f", &self.w_f), ("u_f", &self.u_f), ("b_f", &self.b_f)];
        let named2 = [("w_h", &self.w_h), ("u_h", &self.u_h), ("b_h", &self.b_h)];
        named
            .into_iter()
            .chain(named2)
            .map(|(n, p)| (n.to_string(), p.clone()))
            .collect()
    }
}

// ------------------------------------------------------------------- what you get for free ---

fn main() {
    let mut rng = Rng::seed_from_u64(0);

    // 1. Stacked, bidirectional, over a padded batch, gradient-checked in one call (f64).
    let config = LayerConfig::new(3, 4).num_layers(2).bidirectional(true);
    let layer = Layer::new(config, &mut rng, |input, rng| {
        Mgu::<f64>::new(input, 4, rng)
    });
    let x = Tensor::<f64>::rand_normal(&[5, 2, 3], 0.0, 1.0, &mut rng); // [seq, batch, input]
    let lengths = [5, 3];
    let report = gradcheck(
        |v| layer.forward_with(&v[0], None, Some(&lengths)).output,
        &[x],
    );
    println!("2-layer bidirectional MGU, lengths {lengths:?}: {report}");
    assert!(report.passed());
    println!(
        "parameters: {:?}",
        layer
            .named_params()
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
    );

    // 2. Trained with truncated BPTT (f32): predict the next value of a noisy sine wave.
    let steps = 400;
    let wave: Vec<f32> = (0..=steps)
        .map(|t| (t as f32 * 0.2).sin() + 0.05 * (t as f32 * 1.7).cos())
        .collect();
    let inputs = Tensor::from_vec(wave[..steps].to_vec(), &[steps, 1, 1]);
    let targets = Tensor::from_vec(wave[1..].to_vec(), &[steps, 1, 1]);
    let mgu = Layer::new(LayerConfig::new(1, 16), &mut rng, |i, rng| {
        Mgu::<f32>::new(i, 16, rng)
    });
    let head = Linear::<f32>::new(16, 1, true, &mut rng);
    let mut params = mgu.params();
    params.extend(head.params());
    let mut opt = Adam::new(
        params,
        AdamConfig {
            lr: 0.01,
            ..Default::default()
        },
    );
    for epoch in 0..=30 {
        let mut total = 0.0;
        mgu.tbptt(&inputs, 25, None, |chunk| {
            let prediction = head.forward(&chunk.output);
            let target = targets.narrow(0, chunk.range.start, chunk.range.len());
            let loss = mse_loss(&prediction, &target);
            total += loss.item() * chunk.range.len() as f32;
            opt.zero_grad();
            loss.backward();
            opt.step();
        });
        if epoch % 10 == 0 {
            println!(
                "epoch {epoch:2}: next-value MSE {:.5}",
                total / steps as f32
            );
        }
    }
}
