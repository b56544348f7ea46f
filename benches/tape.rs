//! Tape overhead: the cost of recording a node and running its backward rule, on top of the
//! arithmetic itself.
//!
//! Both benchmarks compute the same chain `h ← tanh(h · w)` of `STEPS` steps (2 nodes a step)
//! forward and backward: once on the tape, once with plain tensor ops written out by hand.
//! With throughput in nodes, overhead per node = (tape time − raw time) / nodes.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo bench --bench tape
//! ```

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use unroll::autograd::Tape;
use unroll::tensor::{Rng, Tensor};

const STEPS: usize = 500;

fn on_tape(h0: &Tensor<f32>, w: &Tensor<f32>) -> Tensor<f32> {
    let tape = Tape::new();
    let w = tape.var(w.clone());
    let mut h = tape.var(h0.clone());
    for _ in 0..STEPS {
        h = (&h * &w).tanh();
    }
    let grads = h.backward_with(&Tensor::ones(h.shape()));
    grads.wrt(&w).clone()
}

/// The same forward and backward arithmetic without a tape.
fn by_hand(h0: &Tensor<f32>, w: &Tensor<f32>) -> Tensor<f32> {
    let mut hs = vec![h0.clone()];
    for _ in 0..STEPS {
        let h = hs.last().unwrap().mul(w).tanh();
        hs.push(h);
    }
    let mut g = Tensor::ones(h0.shape());
    let mut dw = Tensor::zeros(w.shape());
    for t in (0..STEPS).rev() {
        let y = &hs[t + 1];
        let g_pre = g.zip_map(y, "tanh", |g, y| g * (1.0 - y * y)); // through tanh
        dw = &dw + &g_pre.mul(&hs[t]); // through the product, into w
        g = g_pre.mul(w); // and into h
    }
    dw
}

fn bench_tape(c: &mut Criterion) {
    let mut group = c.benchmark_group("tape");
    let mut rng = Rng::seed_from_u64(0);
    for (name, shape) in [("1", vec![1usize]), ("32x256", vec![32, 256])] {
        let h0 = Tensor::<f32>::rand_uniform(&shape, -1.0, 1.0, &mut rng);
        let w = Tensor::<f32>::rand_uniform(&shape, -1.0, 1.0, &mut rng);
        group.throughput(Throughput::Elements((2 * STEPS) as u64));
        group.bench_with_input(BenchmarkId::new("tape", name), &(), |b, _| {
            b.iter(|| black_box(on_tape(&h0, &w)))
        });
        group.bench_with_input(BenchmarkId::new("by_hand", name), &(), |b, _| {
            b.iter(|| black_box(by_hand(&h0, &w)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_tape);
criterion_main!(benches);
