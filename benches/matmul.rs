//! Tensor `matmul` against a direct `matrixmultiply::sgemm` call on the same shapes, and, on
//! the RNN shapes, the packed kernel the fused cells use for each step's product
//! (`gemm_packed`, right side packed once, as a layer packs its weights once per sequence).
//!
//! Throughput is reported in elements/s where one "element" is one floating-point operation
//! (2·m·k·n per product), so criterion's `Gelem/s` column reads as GFLOP/s.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo bench --bench matmul
//! ```

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use unroll::tensor::ops::matmul::MatRef;
use unroll::tensor::ops::packed::{gemm_packed, gemm_packed_tn, PackedMat};
use unroll::tensor::{Rng, Tensor};

/// (name, m, k, n): square sizes, the RNN shapes `[B, H] x [H, 4H]`, then the LSTM configs'
/// per-step products in training and inference, `[B, I + H] x [I + H, 4H]`.
fn shapes() -> Vec<(String, usize, usize, usize)> {
    let mut v: Vec<_> = [64, 128, 256, 512, 1024]
        .iter()
        .map(|&s| (format!("square_{s}"), s, s, s))
        .collect();
    for (b, h) in [(16, 64), (32, 256), (64, 512)] {
        v.push((format!("rnn_B{b}_H{h}"), b, h, 4 * h));
    }
    for (b, i, h) in [(16, 32, 64), (32, 128, 256), (64, 256, 512)] {
        v.push((format!("lstm_step_B{b}_I{i}_H{h}"), b, i + h, 4 * h));
    }
    v
}

fn bench_matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul");
    let mut rng = Rng::seed_from_u64(0);
    for (name, m, k, n) in shapes() {
        let a = Tensor::<f32>::rand_uniform(&[m, k], -1.0, 1.0, &mut rng);
        let b = Tensor::<f32>::rand_uniform(&[k, n], -1.0, 1.0, &mut rng);
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        if m >= 512 {
            group.sample_size(20);
        } else {
            group.sample_size(60);
        }
        group.bench_with_input(BenchmarkId::new("tensor", &name), &(), |bench, _| {
            bench.iter(|| black_box(a.matmul(black_box(&b))))
        });
        let (a_s, b_s) = (a.to_vec(), b.to_vec());
        let mut c_s = vec![0.0f32; m * n];
        group.bench_with_input(BenchmarkId::new("sgemm", &name), &(), |bench, _| {
            bench.iter(|| {
                sgemm((m, k, n), &a_s, (k, 1), &b_s, &mut c_s);
                black_box(&c_s);
            })
        });
        if name.starts_with("rnn") || name.starts_with("lstm") {
            let packed = PackedMat::pack(MatRef::new(&b_s, k, n));
            group.bench_with_input(BenchmarkId::new("packed", &name), &(), |bench, _| {
                bench.iter(|| {
                    gemm_packed(black_box(&a_s), m, &packed, 0.0, &mut c_s);
                    black_box(&c_s);
                })
            });
        }
    }
    group.finish();
}

/// The products a training step makes once per sequence, on the medium config (T·B = 3200
/// rows): a weight gradient `dPᵀ X` (`[4H, T·B] × [T·B, H]`, a long `k`, `dP` read where it
/// is by [`gemm_packed_tn`]) and the GRU's input projection `X W_ihᵀ` (`[T·B, I] × [I, 3H]`,
/// many rows), on the packed kernel (packing included) and on `matrixmultiply::sgemm`. The
/// fused layers run products this large on the latter (`gemm_into`): the packed kernel does
/// not block over `k` or the rows, and these rows show what that costs. Compare them at
/// `RAYON_NUM_THREADS=1`: the packed kernel splits the input projection across rayon's
/// threads, while this `sgemm` call runs on one.
fn bench_sequence_products(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul");
    group.sample_size(20);
    let mut rng = Rng::seed_from_u64(1);
    for (name, m, k, n, tn) in [
        ("weight_grad_T3200_4H1024_H256", 1024, 3200, 256, true),
        ("x_projection_T3200_I128_3H768", 3200, 128, 768, false),
    ] {
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        // The left side as stored: `k × m` (to be read transposed) or `m × k`.
        let a = Tensor::<f32>::rand_uniform(&[m * k], -1.0, 1.0, &mut rng).to_vec();
        let b = Tensor::<f32>::rand_uniform(&[k * n], -1.0, 1.0, &mut rng).to_vec();
        let mut c_s = vec![0.0f32; m * n];
        let a_strides = if tn { (1, m) } else { (k, 1) };
        group.bench_with_input(BenchmarkId::new("sgemm", name), &(), |bench, _| {
            bench.iter(|| {
                sgemm((m, k, n), &a, a_strides, &b, &mut c_s);
                black_box(&c_s);
            })
        });
        group.bench_with_input(BenchmarkId::new("packed", name), &(), |bench, _| {
            bench.iter(|| {
                let packed = PackedMat::pack(MatRef::new(&b, k, n));
                if tn {
                    gemm_packed_tn(black_box(&a), m, 0..m, &packed, 0.0, &mut c_s);
                } else {
                    gemm_packed(black_box(&a), m, &packed, 0.0, &mut c_s);
                }
                black_box(&c_s);
            })
        });
    }
    group.finish();
}

/// `c = a · b` by a direct `matrixmultiply::sgemm` call: `a` is `m × k` with (row, column)
/// strides `a_strides`, `b` row-major `k × n`, `c` row-major `m × n`.
///
/// # Panics
/// If a slice is too short for its matrix.
fn sgemm(
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    c: &mut [f32],
) {
    let (rsa, csa) = a_strides;
    let a_needed = if m == 0 || k == 0 {
        0
    } else {
        (m - 1) * rsa + (k - 1) * csa + 1
    };
    assert!(a.len() >= a_needed && b.len() >= k * n && c.len() >= m * n);
    // SAFETY: every element sgemm reads or writes is inside its slice (checked just above:
    // `a[i·rsa + p·csa]` for i < m, p < k; `b` and `c` row-major), and `c` is borrowed mutably,
    // so it aliases neither input.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    };
}

criterion_group!(benches, bench_matmul, bench_sequence_products);
criterion_main!(benches);
