//! Recurrent layers, forward and training step, at the configurations of
//! `shared/bench/torch_rnn_bench.py` (float32, seq-first, one layer, plus a 2-layer
//! bidirectional LSTM on `medium`, and `lstmp`, an LSTM with `proj_size` = hidden / 2 on
//! `medium`, from this repository's copy of the script), so the two can be compared in one run by
//! `benches/compare_pytorch`.
//!
//! Forward runs in no-grad mode; a training step is forward, `output.sum()`, backward — as in
//! the PyTorch script. Throughput is reported in elements/s where one element is one FLOP,
//! counted as the script counts them (2 × the gate matmuls' multiply-adds, × 3 for training),
//! so criterion's `Gelem/s` reads as GFLOP/s. The thread count is rayon's
//! (`RAYON_NUM_THREADS`), and is part of each benchmark's name.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo bench --bench rnn
//! RAYON_NUM_THREADS=2 cargo bench --bench rnn -- lstm/medium
//! ```

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use unroll::autograd::Tape;
use unroll::rnn::{Cell, Layer, LayerConfig, Module};
use unroll::tensor::{Rng, Tensor};

/// (name, batch, seq_len, input, hidden), as in the PyTorch script.
const CONFIGS: [(&str, usize, usize, usize, usize); 3] = [
    ("small", 16, 50, 32, 64),
    ("medium", 32, 100, 128, 256),
    ("large", 64, 200, 256, 512),
];

/// The PyTorch script's FLOP count: 2 × multiply-adds of the gate matmuls, and of the
/// projection `h = m W_hrᵀ` for an LSTM with `proj_size` (`proj` > 0).
fn forward_flops(
    gates: usize,
    (b, t, i, h): (usize, usize, usize, usize),
    proj: usize,
    layers: usize,
    dirs: usize,
) -> u64 {
    let (g, r) = (gates * h, if proj > 0 { proj } else { h });
    (0..layers)
        .map(|l| {
            let input = if l == 0 { i } else { r * dirs };
            2 * t * b * (g * (input + r) + proj * h) * dirs
        })
        .sum::<usize>() as u64
}

fn bench_layer<C: Cell<f32>>(
    c: &mut Criterion,
    name: &str,
    gates: usize,
    (b, t, i, h): (usize, usize, usize, usize),
    layer: Layer<f32, C>,
) {
    let cfg = layer.config().clone();
    let threads = rayon::current_num_threads();
    let flops = forward_flops(
        gates,
        (b, t, i, h),
        cfg.proj_size,
        cfg.num_layers,
        cfg.num_directions(),
    );
    let x = Tensor::<f32>::rand_normal(&[t, b, i], 0.0, 1.0, &mut Rng::seed_from_u64(1));
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.throughput(Throughput::Elements(flops));
    group.bench_function(
        BenchmarkId::new("forward", format!("{threads}thr")),
        |bench| {
            bench.iter(|| {
                let tape = Tape::new();
                tape.no_grad(|| {
                    black_box(
                        layer
                            .forward(&tape.constant(x.clone()))
                            .output
                            .value()
                            .clone(),
                    )
                })
            })
        },
    );
    group.throughput(Throughput::Elements(3 * flops));
    group.bench_function(
        BenchmarkId::new("train_step", format!("{threads}thr")),
        |bench| {
            bench.iter(|| {
                for p in layer.params() {
                    p.zero_grad();
                }
                let tape = Tape::new();
                let out = layer.forward(&tape.constant(x.clone()));
                out.output.sum_all().backward();
            })
        },
    );
    group.finish();
}

fn bench_rnn(c: &mut Criterion) {
    let mut rng = Rng::seed_from_u64(0);
    for (config, b, t, i, h) in CONFIGS {
        let shape = (b, t, i, h);
        bench_layer(
            c,
            &format!("rnn/{config}"),
            1,
            shape,
            Layer::rnn(LayerConfig::new(i, h), &mut rng),
        );
        bench_layer(
            c,
            &format!("lstm/{config}"),
            4,
            shape,
            Layer::lstm(LayerConfig::new(i, h), &mut rng),
        );
        bench_layer(
            c,
            &format!("gru/{config}"),
            3,
            shape,
            Layer::gru(LayerConfig::new(i, h), &mut rng),
        );
    }
    let (_, b, t, i, h) = CONFIGS[1];
    let bi = LayerConfig::new(i, h).num_layers(2).bidirectional(true);
    bench_layer(
        c,
        "lstm/medium_2l_bi",
        4,
        (b, t, i, h),
        Layer::lstm(bi, &mut rng),
    );
    let projected = LayerConfig::new(i, h).proj_size(h / 2);
    bench_layer(
        c,
        "lstmp/medium",
        4,
        (b, t, i, h),
        Layer::lstm(projected, &mut rng),
    );
}

criterion_group!(benches, bench_rnn);
criterion_main!(benches);
