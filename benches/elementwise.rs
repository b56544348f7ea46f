//! The tensor ops a composed cell spends its time in, per element, at one step's shape
//! (`[32, 256]`) and a large one (`[64, 2048]`), f32 and f64: the same ops and shapes as
//! `benches/torch_elementwise_bench.py`, so the two can be put side by side (criterion's
//! throughput here is elements per second; the script prints ns per element).
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo bench --bench elementwise
//! python3 benches/torch_elementwise_bench.py --threads 1
//! ```

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use unroll::tensor::{Float, Rng, Tensor};

const SHAPES: [[usize; 2]; 2] = [[32, 256], [64, 2048]];

fn bench_dtype<T: Float>(c: &mut Criterion, dtype: &str) {
    let mut rng = Rng::seed_from_u64(0);
    let threads = rayon::current_num_threads();
    for shape in SHAPES {
        let [rows, cols] = shape;
        let a = Tensor::<T>::rand_normal(&shape, T::ZERO, T::ONE, &mut rng);
        let b = Tensor::<T>::rand_normal(&shape, T::ZERO, T::ONE, &mut rng);
        let bias = Tensor::<T>::rand_normal(&[cols], T::ZERO, T::ONE, &mut rng);
        let mut group = c.benchmark_group(format!("elementwise/{dtype}/{rows}x{cols}"));
        group.throughput(Throughput::Elements((rows * cols) as u64));
        let id = |op: &str| BenchmarkId::new(op, format!("{threads}thr"));
        group.bench_function(id("mul"), |bench| bench.iter(|| black_box(&a * &b)));
        group.bench_function(id("add_bias"), |bench| bench.iter(|| black_box(&a + &bias)));
        group.bench_function(id("tanh"), |bench| bench.iter(|| black_box(a.tanh())));
        group.bench_function(id("sigmoid"), |bench| bench.iter(|| black_box(a.sigmoid())));
        group.bench_function(id("exp"), |bench| bench.iter(|| black_box(a.exp())));
        group.bench_function(id("sum_to"), |bench| {
            bench.iter(|| black_box(a.sum_to(&[cols])))
        });
        group.finish();
    }
}

fn bench_elementwise(c: &mut Criterion) {
    bench_dtype::<f32>(c, "f32");
    bench_dtype::<f64>(c, "f64");
}

criterion_group!(benches, bench_elementwise);
criterion_main!(benches);
