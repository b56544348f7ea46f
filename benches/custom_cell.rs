//! Cells the library does not ship, composed and compiled, and the built-in LSTM compiled from
//! its `step` against its hand-fused kernel: the training step (forward over the sequence,
//! `output.sum()`, backward) and the inference forward (no tape kept), at the configurations
//! of `benches/torch_custom_cell_bench.py` (float32, seq-first, one layer). Its PyTorch side
//! is the `user_lstm` cell in a Python loop (eager and TorchScript) and `nn.LSTM`;
//! `benches/compare_pytorch --custom` prints the ratios.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo bench --bench custom_cell                       # every row
//! RAYON_NUM_THREADS=1 cargo bench --bench custom_cell -- 'small/(mgu|lstm)' # some
//! python3 benches/torch_custom_cell_bench.py --threads 1
//! ```
//!
//! Rows are `custom_cell/{config}/{cell}_{path}/{mode}/{threads}thr`: `path` is `composed`
//! (op by op on the tape), `compiled` (the traced step) or `fused` (the built-in kernel).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use unroll::autograd::Tape;
use unroll::rnn::{Cell, Layer, LayerConfig, Module, Path};
use unroll::tensor::{Rng, Tensor};

#[path = "common/cells.rs"]
mod cells;
#[path = "../crates/rnn/tests/all/custom_cells.rs"]
mod custom_cells;
use cells::UserLstm;
use custom_cells::{IndRnn, LnLstm, Mgu};

/// (name, batch, seq_len, input, hidden), as in the PyTorch script.
const CONFIGS: [(&str, usize, usize, usize, usize); 3] = [
    ("small", 16, 50, 32, 64),
    ("medium", 32, 100, 128, 256),
    ("large", 64, 200, 256, 512),
];

fn train_step<C: Cell<f32>>(layer: &Layer<f32, C>, x: &Tensor<f32>) {
    for p in layer.params() {
        p.zero_grad();
    }
    let tape = Tape::new();
    let out = layer.forward(&tape.constant(x.clone()));
    black_box(out.output.sum_all().backward());
}

fn forward<C: Cell<f32>>(layer: &Layer<f32, C>, x: &Tensor<f32>) {
    let tape = Tape::new();
    tape.no_grad(|| black_box(layer.forward(&tape.constant(x.clone())).output));
}

/// Benchmarks `layer` on `paths` (each a name and the switches that select it), both modes.
fn bench_paths<C: Cell<f32>>(
    c: &mut Criterion,
    config: &str,
    cell: &str,
    layer: &Layer<f32, C>,
    x: &Tensor<f32>,
    paths: &[&str],
) {
    let threads = rayon::current_num_threads();
    let mut group = c.benchmark_group(format!("custom_cell/{config}"));
    group.sample_size(10);
    for &path in paths {
        layer.set_fused(path == "fused");
        layer.set_compiled(path == "compiled");
        let runs = match (path, &layer.explain()[0].2) {
            ("fused", Path::Fused) | ("composed", Path::Composed(_)) => true,
            ("compiled", Path::Compiled { .. }) => true,
            (_, other) => panic!("{cell} {path}: runs {other}"),
        };
        assert!(runs);
        for (mode, run) in [
            (
                "train_step",
                train_step::<C> as fn(&Layer<f32, C>, &Tensor<f32>),
            ),
            ("forward", forward::<C>),
        ] {
            let id = BenchmarkId::new(format!("{cell}_{path}/{mode}"), format!("{threads}thr"));
            group.bench_function(id, |bench| bench.iter(|| run(layer, x)));
        }
    }
    group.finish();
}

fn bench_custom_cell(c: &mut Criterion) {
    for (config, b, t, i, h) in CONFIGS {
        let mut rng = Rng::seed_from_u64(0);
        let x = Tensor::<f32>::rand_normal(&[t, b, i], 0.0, 1.0, &mut rng);
        let cfg = LayerConfig::new(i, h);
        let both = ["composed", "compiled"];
        let builtin = Layer::lstm(cfg.clone(), &mut rng);
        bench_paths(c, config, "lstm", &builtin, &x, &["fused", "compiled"]);
        let user = Layer::new(cfg.clone(), &mut rng, |i, rng| UserLstm::new(i, h, rng));
        bench_paths(c, config, "user_lstm", &user, &x, &both);
        let mgu = Layer::new(cfg.clone(), &mut rng, |i, rng| Mgu::new(i, h, rng));
        bench_paths(c, config, "mgu", &mgu, &x, &both);
        let indrnn = Layer::new(cfg.clone(), &mut rng, |i, rng| IndRnn::new(i, h, true, rng));
        bench_paths(c, config, "indrnn", &indrnn, &x, &both);
        let ln_lstm = Layer::new(cfg, &mut rng, |i, rng| LnLstm::new(i, h, rng));
        bench_paths(c, config, "ln_lstm", &ln_lstm, &x, &both);
    }
}

criterion_group!(benches, bench_custom_cell);
criterion_main!(benches);
