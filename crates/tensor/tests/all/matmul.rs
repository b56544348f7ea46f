//! `matmul` against a naive triple loop: every size 0..=9 of m, k and n, odd sizes across the
//! kernel's tile edges, transposed operands passed as views, broadcast (stride-0) operands,
//! batched products with broadcast batch dims, and 1-D vectors, for `f32` and `f64`.

use crate::common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tensor::{Float, Tensor};

/// `torch.matmul` semantics written out with loops: returns the product and, for the
/// tolerance, Σ_p |a_ip·b_pj| at every output entry.
fn ref_matmul(a: &Ref, b: &Ref) -> (Ref, Ref) {
    let a2 = if a.rank() == 1 {
        Ref::new(&[1, a.shape[0]], a.data.clone())
    } else {
        a.clone()
    };
    let b2 = if b.rank() == 1 {
        Ref::new(&[b.shape[0], 1], b.data.clone())
    } else {
        b.clone()
    };
    let (ra, rb) = (a2.rank(), b2.rank());
    let (m, k, n) = (a2.shape[ra - 2], a2.shape[ra - 1], b2.shape[rb - 1]);
    assert_eq!(b2.shape[rb - 2], k);
    let batch = ref_broadcast_shapes(&a2.shape[..ra - 2], &b2.shape[..rb - 2]).unwrap();
    let a3 = a2.broadcast_to(&[&batch[..], &[m, k]].concat());
    let b3 = b2.broadcast_to(&[&batch[..], &[k, n]].concat());
    // Both operands are now plain row-major arrays: batch × rows × cols.
    let nb: usize = batch.iter().product();
    let mut prod = vec![0.0; nb * m * n];
    let mut abs = vec![0.0; nb * m * n];
    for bi in 0..nb {
        for r in 0..m {
            for c in 0..n {
                for p in 0..k {
                    let x = a3.data[(bi * m + r) * k + p];
                    let y = b3.data[(bi * k + p) * n + c];
                    prod[(bi * m + r) * n + c] += x * y;
                    abs[(bi * m + r) * n + c] += (x * y).abs();
                }
            }
        }
    }
    let mut shape = batch.clone();
    if a.rank() > 1 {
        shape.push(m);
    }
    if b.rank() > 1 {
        shape.push(n);
    }
    (Ref::new(&shape, prod), Ref::new(&shape, abs))
}

/// Checks `got` against the reference product of `a` and `b`.
///
/// Tolerance: a dot product of length k computed in floating point (in any order, with or
/// without FMA) is within k·u·Σ|a_p·b_p| of the exact value (u = eps/2), and so is the f64
/// reference's; k·eps·Σ|a_p·b_p| covers both.
fn check_product<T: Float>(got: &Tensor<T>, a: &Ref, b: &Ref) -> Result<(), TestCaseError> {
    let (want, abs) = ref_matmul(a, b);
    let k = a.shape[a.rank() - 1] as f64;
    prop_assert!(got.is_contiguous());
    check_close(got, &want, |_, i| k * eps::<T>() * abs.data[i])
}

/// Deterministic test values in [-2, 2), different for every `(seed, i)`: a multiplicative
/// hash, so no structure in the data can hide an indexing bug.
fn values(seed: u64, n: usize) -> Vec<f64> {
    (0..n as u64)
        .map(|i| {
            let h = (i + 1)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(seed.wrapping_mul(0xD1B5_4A32_D192_ED03));
            ((h >> 40) as f64 / (1u64 << 24) as f64) * 4.0 - 2.0
        })
        .collect()
}

fn matrix<T: Float>(seed: u64, shape: &[usize]) -> (Ref, Tensor<T>) {
    let r = Ref::new(shape, values(seed, shape.iter().product())).rounded::<T>();
    let t = r.to_tensor::<T>();
    (r, t)
}

/// `[m, k] × [k, n]`, with each operand plain or a transposed view of its transpose.
fn plain_and_transposed<T: Float>(m: usize, k: usize, n: usize) -> Result<(), TestCaseError> {
    let seed = (m * 10_000 + k * 100 + n) as u64;
    let (a, ta) = matrix::<T>(seed, &[m, k]);
    let (b, tb) = matrix::<T>(seed + 1, &[k, n]);
    // The same matrices stored transposed, seen through `.t()`: column-major views.
    let ta_t = a.permute(&[1, 0]).to_tensor::<T>().t();
    let tb_t = b.permute(&[1, 0]).to_tensor::<T>().t();
    if m > 1 && k > 1 {
        prop_assert!(!ta_t.is_contiguous());
        prop_assert_eq!(ta_t.strides(), &[1, m]);
    }
    for (x, y) in [(&ta, &tb), (&ta_t, &tb), (&ta, &tb_t), (&ta_t, &tb_t)] {
        check_product(&x.matmul(y), &a, &b)?;
    }
    Ok(())
}

fn small_sizes_case<T: Float>() -> Result<(), TestCaseError> {
    for m in 0..=9 {
        for k in 0..=9 {
            for n in 0..=9 {
                plain_and_transposed::<T>(m, k, n)?;
            }
        }
    }
    Ok(())
}

fn tile_edges_case<T: Float>() -> Result<(), TestCaseError> {
    // Odd sizes on both sides of the kernels' tile sizes (4, 8, 16, 32, 64 wide).
    let sizes = [1, 15, 17, 31, 33, 65];
    for &m in &sizes {
        for &k in &sizes {
            for &n in &sizes {
                plain_and_transposed::<T>(m, k, n)?;
            }
        }
    }
    Ok(())
}

fn batched_case<T: Float>() -> Result<(), TestCaseError> {
    let (b, m, k, n) = (3, 5, 7, 4);
    let shapes: [(&[usize], &[usize]); 9] = [
        (&[b, m, k], &[b, k, n]),
        (&[b, m, k], &[k, n]),    // a shared rhs (weights)
        (&[m, k], &[b, k, n]),    // a shared lhs
        (&[1, m, k], &[b, k, n]), // size-1 batch dim broadcast
        (&[b, m, k], &[1, k, n]),
        (&[2, 1, m, k], &[3, k, n]), // batch dims broadcast both ways: [2, 3]
        (&[2, 1, m, k], &[1, 3, k, n]),
        (&[0, m, k], &[k, n]),    // an empty batch
        (&[b, m, 0], &[b, 0, n]), // empty sums
    ];
    for (i, (sa, sb)) in shapes.iter().enumerate() {
        let (ra, ta) = matrix::<T>(2 * i as u64, sa);
        let (rb, tb) = matrix::<T>(2 * i as u64 + 1, sb);
        check_product(&ta.matmul(&tb), &ra, &rb)?;
        // The same with the last two dims of each operand stored transposed.
        let swap = |s: &[usize]| -> Vec<usize> {
            let mut p: Vec<usize> = (0..s.len()).collect();
            p.swap(s.len() - 2, s.len() - 1);
            p
        };
        let ta_t = ra.permute(&swap(sa)).to_tensor::<T>().transpose(-1, -2);
        let tb_t = rb.permute(&swap(sb)).to_tensor::<T>().transpose(-2, -1);
        check_product(&ta_t.matmul(&tb_t), &ra, &rb)?;
    }
    Ok(())
}

fn vector_case<T: Float>() -> Result<(), TestCaseError> {
    let (b, m, k, n) = (2, 3, 5, 4);
    let shapes: [(&[usize], &[usize], &[usize]); 7] = [
        (&[k], &[k], &[]),           // dot product: a 0-d result
        (&[k], &[k, n], &[n]),       // row vector × matrix
        (&[m, k], &[k], &[m]),       // matrix × column vector
        (&[k], &[b, k, n], &[b, n]), // vector × batch
        (&[b, m, k], &[k], &[b, m]), // batch × vector
        (&[0], &[0], &[]),           // empty dot product: 0
        (&[k], &[k, 0], &[0]),
    ];
    for (i, (sa, sb, out)) in shapes.iter().enumerate() {
        let (ra, ta) = matrix::<T>(100 + 2 * i as u64, sa);
        let (rb, tb) = matrix::<T>(101 + 2 * i as u64, sb);
        let got = ta.matmul(&tb);
        prop_assert_eq!(got.shape(), *out);
        check_product(&got, &ra, &rb)?;
    }
    // A vector that is a strided view: a column of a matrix.
    let (rm, tm) = matrix::<T>(7, &[k, 3]);
    let col = tm.select(1, 2);
    let rcol = Ref::from_fn(&[k], |i| rm.at(&[i[0], 2]));
    let (rb, tb) = matrix::<T>(8, &[k, n]);
    check_product(&col.matmul(&tb), &rcol, &rb)?;
    check_product(&tb.t().matmul(&col), &rb.permute(&[1, 0]), &rcol)?;
    Ok(())
}

fn broadcast_operand_case<T: Float>() -> Result<(), TestCaseError> {
    // Operands with stride 0 inside the matrix: a repeated row, a repeated column.
    let (m, k, n) = (6, 5, 7);
    let (rrow, row) = matrix::<T>(1, &[1, k]);
    let (rcol, col) = matrix::<T>(2, &[k, 1]);
    let a = row.broadcast_to(&[m, k]);
    let b = col.broadcast_to(&[k, n]);
    assert_eq!(a.strides()[0], 0);
    assert_eq!(b.strides()[1], 0);
    let (ra, rb) = (rrow.broadcast_to(&[m, k]), rcol.broadcast_to(&[k, n]));
    check_product(&a.matmul(&b), &ra, &rb)?;
    let (rw, w) = matrix::<T>(3, &[k, n]);
    check_product(&a.matmul(&w), &ra, &rw)?;
    Ok(())
}

/// A random matmul: batch shapes that broadcast, m, k, n in 0..=6, 1-D operands sometimes,
/// and random layouts for both operands.
fn arb_matmul_inputs() -> BoxedStrategy<(Input, Input)> {
    let batch_pair = prop::collection::vec(arb_dim(3, 5), 0..=2)
        .prop_flat_map(|out| (arb_broadcastable_to(out.clone()), arb_broadcastable_to(out)));
    (
        batch_pair,
        0..=6usize,
        0..=6usize,
        0..=6usize,
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
    )
        .prop_flat_map(|((ba, bb), m, k, n, a_vec, b_vec)| {
            let sa = if a_vec {
                vec![k]
            } else {
                [&ba[..], &[m, k]].concat()
            };
            let sb = if b_vec {
                vec![k]
            } else {
                [&bb[..], &[k, n]].concat()
            };
            (arb_input_of(sa, Vals::Any), arb_input_of(sb, Vals::Any))
        })
        .boxed()
}

fn random_case<T: Float>(a: &Input, b: &Input) -> Result<(), TestCaseError> {
    let (ra, ta) = a.build::<T>();
    let (rb, tb) = b.build::<T>();
    check_product(&ta.matmul(&tb), &ra, &rb)
}

macro_rules! suite {
    ($name:ident, $t:ty) => {
        mod $name {
            use super::*;

            #[test]
            fn every_size_up_to_9() {
                small_sizes_case::<$t>().unwrap();
            }

            #[test]
            fn odd_sizes_across_tile_edges() {
                tile_edges_case::<$t>().unwrap();
            }

            #[test]
            fn batched_with_broadcast_batch_dims() {
                batched_case::<$t>().unwrap();
            }

            #[test]
            fn vectors() {
                vector_case::<$t>().unwrap();
            }

            #[test]
            fn broadcast_operands() {
                broadcast_operand_case::<$t>().unwrap();
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(128))]

                #[test]
                fn random_shapes_and_layouts((a, b) in arb_matmul_inputs()) {
                    random_case::<$t>(&a, &b)?;
                }
            }
        }
    };
}

suite!(on_f32, f32);
suite!(on_f64, f64);

#[test]
fn hand_computed_products() {
    let a = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let b = Tensor::from_vec(vec![7.0f64, 8.0, 9.0, 10.0, 11.0, 12.0], &[3, 2]);
    // [[1·7 + 2·9 + 3·11, 1·8 + 2·10 + 3·12], [4·7 + 5·9 + 6·11, 4·8 + 5·10 + 6·12]]
    assert_eq!(a.matmul(&b).to_vec(), vec![58.0, 64.0, 139.0, 154.0]);
    // aᵀ·a through views: [[17, 22, 27], [22, 29, 36], [27, 36, 45]].
    assert_eq!(
        a.t().matmul(&a).to_vec(),
        vec![17.0, 22.0, 27.0, 22.0, 29.0, 36.0, 27.0, 36.0, 45.0]
    );
    let v = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]);
    assert_eq!(v.matmul(&v).item(), 14.0);
    assert_eq!(v.matmul(&v).shape(), &[] as &[usize]);
    // k = 0: a sum of nothing is 0.
    let z = Tensor::<f32>::zeros(&[2, 0]).matmul(&Tensor::zeros(&[0, 3]));
    assert_eq!(z.to_vec(), vec![0.0; 6]);
}

/// A batch big enough to be split across threads, with a transposed and a shared operand.
fn large_batched_case<T: Float>() -> Result<(), TestCaseError> {
    let (ra, ta) = matrix::<T>(1, &[8, 64, 48]);
    let (rw, tw) = matrix::<T>(2, &[48, 56]);
    check_product(&ta.matmul(&tw), &ra, &rw)?;
    let (rb, tb) = matrix::<T>(3, &[8, 56, 48]);
    let swap = rb.permute(&[0, 2, 1]);
    check_product(&ta.matmul(&tb.transpose(1, 2)), &ra, &swap)
}

#[test]
fn large_batched_f32() {
    large_batched_case::<f32>().unwrap();
}

#[test]
fn large_batched_f64() {
    large_batched_case::<f64>().unwrap();
}

/// A 2-D product large enough (≈ 20M multiply-adds) to be split into column blocks across
/// threads, with plain and transposed operands.
fn large_2d_case<T: Float>() -> Result<(), TestCaseError> {
    let (m, k, n) = (128, 256, 600);
    let (ra, ta) = matrix::<T>(11, &[m, k]);
    let (rb, tb) = matrix::<T>(12, &[k, n]);
    check_product(&ta.matmul(&tb), &ra, &rb)?;
    let tb_t = rb.permute(&[1, 0]).to_tensor::<T>().t();
    let ta_t = ra.permute(&[1, 0]).to_tensor::<T>().t();
    check_product(&ta_t.matmul(&tb_t), &ra, &rb)
}

#[test]
fn large_2d_f32() {
    large_2d_case::<f32>().unwrap();
}

#[test]
fn large_2d_f64() {
    large_2d_case::<f64>().unwrap();
}

/// A product's output may come from the buffer pool with a dropped tensor's values still in
/// it: every element must be overwritten, including for an empty inner dimension (all zeros).
/// Other tests run in parallel and may take the pooled buffer first, so each case retries
/// until its product did get the dropped buffer (seen by its address), or the test proves
/// nothing.
#[test]
fn a_pooled_output_buffer_never_leaks_old_values() {
    for k in [0, 3] {
        let reused = (0..50).any(|_| {
            let stale = Tensor::<f32>::full(&[128, 256], f32::NAN); // 128 KB
            let at = stale.as_slice().expect("contiguous").as_ptr();
            drop(stale); // back to the pool
            let c = Tensor::<f32>::ones(&[128, k]).matmul(&Tensor::ones(&[k, 256]));
            assert!(c.to_vec().iter().all(|&x| x == k as f32), "k = {k}");
            c.as_slice().expect("contiguous").as_ptr() == at
        });
        assert!(reused, "k = {k}: the product never got the pooled buffer");
    }
}
