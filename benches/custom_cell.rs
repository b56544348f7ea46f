//! A cell the library does not ship, against the built-in one: the training step (forward
//! over the sequence, `output.sum()`, backward) of an LSTM cell written by a user with tensor
//! ops, run composed (op by op on the tape), beside the built-in LSTM composed and fused, at
//! the configurations of `benches/torch_custom_cell_bench.py` (float32, seq-first, one
//! layer), whose PyTorch side is the same cell in a Python loop (eager and TorchScript) and
//! `nn.LSTM`.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo bench --bench custom_cell
//! python3 benches/torch_custom_cell_bench.py --threads 1
//! ```

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use unroll::autograd::{Param, Tape, Var};
use unroll::rnn::{Cell, Layer, LayerConfig, Module};
use unroll::tensor::{Rng, Tensor};

/// (name, batch, seq_len, input, hidden), as in the PyTorch script.
const CONFIGS: [(&str, usize, usize, usize, usize); 2] =
    [("small", 16, 50, 32, 64), ("medium", 32, 100, 128, 256)];

/// The PyTorch script's `LSTMCell`, written the way a user writes a cell.
struct UserLstm {
    w_ih: Param<f32>,
    w_hh: Param<f32>,
    b_ih: Param<f32>,
    b_hh: Param<f32>,
}

impl UserLstm {
    fn new(input: usize, hidden: usize, rng: &mut Rng) -> Self {
        let mut p = |name: &str, shape: &[usize], scale: f32| {
            Param::new(name, Tensor::rand_normal(shape, 0.0, scale, rng))
        };
        UserLstm {
            w_ih: p("w_ih", &[4 * hidden, input], 0.1),
            w_hh: p("w_hh", &[4 * hidden, hidden], 0.1),
            b_ih: p("b_ih", &[4 * hidden], 0.0),
            b_hh: p("b_hh", &[4 * hidden], 0.0),
        }
    }
}

impl Cell<f32> for UserLstm {
    type State = (Var<f32>, Var<f32>);

    fn input_size(&self) -> usize {
        self.w_ih.shape()[1]
    }

    fn hidden_size(&self) -> usize {
        self.w_hh.shape()[1]
    }

    fn step(&self, x: &Var<f32>, (h, c): &(Var<f32>, Var<f32>)) -> (Var<f32>, Var<f32>) {
        let gates = x.linear(&self.w_ih) + &self.b_ih + h.linear(&self.w_hh) + &self.b_hh;
        let [i, f, g, o] = <[Var<f32>; 4]>::try_from(gates.chunk(4, -1)).expect("four gates");
        let (i, f, g, o) = (i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid());
        let c = &f * c + &i * &g;
        let h = &o * &c.tanh();
        (h, c)
    }
}

impl Module<f32> for UserLstm {
    fn named_params(&self) -> Vec<(String, Param<f32>)> {
        [
            ("w_ih", &self.w_ih),
            ("w_hh", &self.w_hh),
            ("b_ih", &self.b_ih),
            ("b_hh", &self.b_hh),
        ]
        .into_iter()
        .map(|(n, p)| (n.to_string(), p.clone()))
        .collect()
    }
}

fn train_step<C: Cell<f32>>(layer: &Layer<f32, C>, x: &Tensor<f32>) {
    for p in layer.params() {
        p.zero_grad();
    }
    let tape = Tape::new();
    let out = layer.forward(&tape.constant(x.clone()));
    black_box(out.output.sum_all().backward());
}

fn bench_custom_cell(c: &mut Criterion) {
    let threads = rayon::current_num_threads();
    for (config, b, t, i, h) in CONFIGS {
        let mut rng = Rng::seed_from_u64(0);
        let x = Tensor::<f32>::rand_normal(&[t, b, i], 0.0, 1.0, &mut rng);
        let user = Layer::new(LayerConfig::new(i, h), &mut rng, |input, rng| {
            UserLstm::new(input, h, rng)
        });
        let mut rng = Rng::seed_from_u64(0);
        let builtin = Layer::lstm(LayerConfig::new(i, h), &mut rng);
        let mut group = c.benchmark_group(format!("custom_cell/{config}"));
        group.sample_size(10);
        let id = |what: &str| BenchmarkId::new(what, format!("{threads}thr"));
        group.bench_function(id("user_lstm_composed"), |bench| {
            bench.iter(|| train_step(&user, &x))
        });
        builtin.set_fused(false);
        group.bench_function(id("lstm_composed"), |bench| {
            bench.iter(|| train_step(&builtin, &x))
        });
        builtin.set_fused(true);
        group.bench_function(id("lstm_fused"), |bench| {
            bench.iter(|| train_step(&builtin, &x))
        });
        group.finish();
    }
}

criterion_group!(benches, bench_custom_cell);
criterion_main!(benches);
