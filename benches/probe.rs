//! What the probe costs: an LSTM's training step (forward, `output.sum()`, backward) without a
//! probe and inside `Probe::watch` with `Probe::backward` after it, on the fused and the
//! composed path, at the `small` and `medium` configurations of `benches/rnn.rs`. (Without a
//! probe, the step is the same code as `benches/rnn.rs`'s `train_step`: compare it with the
//! same row of an older build to see what the hooks cost when nothing watches.)
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo bench --bench probe
//! ```

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use unroll::autograd::Tape;
use unroll::rnn::{Layer, LayerConfig, Lstm, Module, Probe};
use unroll::tensor::{Rng, Tensor};

/// (name, batch, seq_len, input, hidden), as in `benches/rnn.rs`.
const CONFIGS: [(&str, usize, usize, usize, usize); 2] =
    [("small", 16, 50, 32, 64), ("medium", 32, 100, 128, 256)];

fn bench_probe(c: &mut Criterion) {
    let threads = rayon::current_num_threads();
    for (config, b, t, i, h) in CONFIGS {
        let mut rng = Rng::seed_from_u64(0);
        let lstm: Lstm<f32> = Layer::lstm(LayerConfig::new(i, h), &mut rng);
        let x = Tensor::<f32>::rand_normal(&[t, b, i], 0.0, 1.0, &mut Rng::seed_from_u64(1));
        let mut group = c.benchmark_group(format!("probe/lstm_{config}"));
        group.sample_size(10);
        for fused in [true, false] {
            lstm.set_fused(fused);
            lstm.set_compiled(false);
            let path = if fused { "fused" } else { "composed" };
            let step = |probe: Option<&Probe<f32>>| {
                for p in lstm.params() {
                    p.zero_grad();
                }
                let tape = Tape::new();
                let forward = || lstm.forward(&tape.constant(x.clone()));
                let out = match probe {
                    Some(probe) => probe.watch(forward),
                    None => forward(),
                };
                let grads = out.output.sum_all().backward();
                if let Some(probe) = probe {
                    probe.backward(&grads);
                    black_box(probe.direction(0, 0).grad_norms(0));
                    probe.clear();
                }
            };
            group.bench_function(
                BenchmarkId::new(format!("{path}/off"), format!("{threads}thr")),
                |bench| bench.iter(|| step(None)),
            );
            let probe = Probe::new();
            group.bench_function(
                BenchmarkId::new(format!("{path}/on"), format!("{threads}thr")),
                |bench| bench.iter(|| step(Some(&probe))),
            );
        }
        group.finish();
    }
}

criterion_group!(benches, bench_probe);
criterion_main!(benches);
