//! Structural ops against the naive reference: `concat stack split chunk index_select gather
//! index_add narrow_add_assign scatter_add`, on random shapes (empty dims included) and
//! layouts, for `f32` and `f64`, with non-contiguous index tensors too.

use crate::common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tensor::{Float, Tensor};

// ---------------------------------------------------------------------------------------------
// concat, stack, split, chunk
// ---------------------------------------------------------------------------------------------

/// `parts` share every dim but `dim`.
fn concat_case<T: Float>(parts: &[Input], dim: usize, negative: bool) -> Result<(), TestCaseError> {
    let built: Vec<(Ref, Tensor<T>)> = parts.iter().map(Input::build::<T>).collect();
    let tensors: Vec<&Tensor<T>> = built.iter().map(|(_, t)| t).collect();
    let rank = built[0].0.rank();
    let got = if negative {
        Tensor::concat(&tensors, dim as isize - rank as isize)
    } else {
        Tensor::concat(&tensors, dim)
    };
    let mut shape = built[0].0.shape.clone();
    shape[dim] = built.iter().map(|(r, _)| r.shape[dim]).sum();
    let want = Ref::from_fn(&shape, |i| {
        let mut j = i.to_vec();
        for (r, _) in &built {
            if j[dim] < r.shape[dim] {
                return r.at(&j);
            }
            j[dim] -= r.shape[dim];
        }
        unreachable!()
    });
    check_exact(&got, &want)
}

/// `parts` all have the same shape; `dim` is in `0..=rank`.
fn stack_case<T: Float>(parts: &[Input], dim: usize) -> Result<(), TestCaseError> {
    let built: Vec<(Ref, Tensor<T>)> = parts.iter().map(Input::build::<T>).collect();
    let tensors: Vec<&Tensor<T>> = built.iter().map(|(_, t)| t).collect();
    let mut shape = built[0].0.shape.clone();
    shape.insert(dim, built.len());
    let want = Ref::from_fn(&shape, |i| {
        let mut j = i.to_vec();
        let k = j.remove(dim);
        built[k].0.at(&j)
    });
    check_exact(&Tensor::stack(&tensors, dim), &want)?;
    let neg = dim as i32 - shape.len() as i32;
    check_exact(&Tensor::stack(&tensors, neg), &want)
}

/// The pieces are views (the input's strides) holding consecutive slices along `dim`.
fn check_pieces<T: Float>(
    pieces: &[Tensor<T>],
    t: &Tensor<T>,
    r: &Ref,
    dim: usize,
    sizes: &[usize],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(pieces.len(), sizes.len());
    let mut start = 0;
    for (p, &n) in pieces.iter().zip(sizes) {
        prop_assert_eq!(p.strides(), t.strides());
        let mut shape = r.shape.clone();
        shape[dim] = n;
        let want = Ref::from_fn(&shape, |i| {
            let mut j = i.to_vec();
            j[dim] += start;
            r.at(&j)
        });
        check_exact(p, &want)?;
        start += n;
    }
    Ok(())
}

fn split_case<T: Float>(x: &Input, dim: usize, cuts: &[usize]) -> Result<(), TestCaseError> {
    let (r, t) = x.build::<T>();
    let n = r.shape[dim];
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (n + 1)).collect();
    cuts.sort_unstable();
    let mut sizes = vec![];
    let mut prev = 0;
    for c in cuts.into_iter().chain([n]) {
        sizes.push(c - prev);
        prev = c;
    }
    let pieces = t.split(&sizes, dim as i32 - r.rank() as i32);
    check_pieces(&pieces, &t, &r, dim, &sizes)
}

fn chunk_case<T: Float>(x: &Input, dim: usize, chunks: usize) -> Result<(), TestCaseError> {
    let (r, t) = x.build::<T>();
    let n = r.shape[dim];
    let pieces = t.chunk(chunks, dim);
    if n == 0 {
        prop_assert!(pieces.iter().all(|p| p.numel() == 0));
        return Ok(());
    }
    // torch.chunk: pieces of ceil(n / chunks), the last one possibly smaller, so there may be
    // fewer than `chunks` pieces.
    let step = n.div_ceil(chunks);
    let mut sizes = vec![];
    let mut left = n;
    while left > 0 {
        sizes.push(step.min(left));
        left -= step.min(left);
    }
    prop_assert!(sizes.len() <= chunks);
    check_pieces(&pieces, &t, &r, dim, &sizes)
}

// ---------------------------------------------------------------------------------------------
// index_select, gather, index_add, scatter_add
// ---------------------------------------------------------------------------------------------

fn index_select_case<T: Float>(x: &Input, dim: usize, idx: &[i64]) -> Result<(), TestCaseError> {
    let (r, t) = x.build::<T>();
    let indices = Tensor::from_vec(idx.to_vec(), &[idx.len()]);
    let mut shape = r.shape.clone();
    shape[dim] = idx.len();
    let want = Ref::from_fn(&shape, |i| {
        let mut j = i.to_vec();
        j[dim] = idx[i[dim]] as usize;
        r.at(&j)
    });
    check_exact(&t.index_select(dim, &indices), &want)?;
    // The indices may be a strided view too (every other entry of a longer vector).
    let spaced: Vec<i64> = idx.iter().flat_map(|&k| [k, 12345]).collect();
    let strided = Tensor::from_vec(spaced, &[idx.len(), 2]).select(1, 0);
    check_exact(
        &t.index_select(dim as i32 - r.rank() as i32, &strided),
        &want,
    )
}

fn gather_case<T: Float>(x: &Input, dim: usize, index: &Input) -> Result<(), TestCaseError> {
    let (r, t) = x.build::<T>();
    let (ri, ti) = index.build::<i64>();
    let want = Ref::from_fn(&ri.shape, |i| {
        let mut j = i.to_vec();
        j[dim] = ri.at(i) as usize;
        r.at(&j)
    });
    check_exact(&t.gather(dim, &ti), &want)
}

fn index_add_case<T: Float>(
    x: &Input,
    dim: usize,
    idx: &[i64],
    src: &Input,
) -> Result<(), TestCaseError> {
    let (r, t) = x.build::<T>();
    let (rs, ts) = src.build::<T>();
    let indices = Tensor::from_vec(idx.to_vec(), &[idx.len()]);
    let mut want = r.clone();
    let mut abs = r.map(f64::abs);
    let mut terms = vec![1.0; r.numel()];
    for i in indices_of(&rs) {
        let mut j = i.clone();
        j[dim] = idx[i[dim]] as usize;
        let f = want.flat(&j);
        want.data[f] += rs.at(&i);
        abs.data[f] += rs.at(&i).abs();
        terms[f] += 1.0;
    }
    // Each output is a sequential sum of `terms` values (the bound of a sum; see reduce.rs).
    check_close(&t.index_add(dim, &indices, &ts), &want, |_, f| {
        terms[f] * eps::<T>() * abs.data[f]
    })
}

/// `src` (any layout, broadcast dims included) added into `x` at `start` along `dim`.
fn narrow_add_assign_case<T: Float>(
    x: &Input,
    dim: usize,
    start: usize,
    src: &Input,
) -> Result<(), TestCaseError> {
    let (r, mut t) = x.build::<T>();
    let (rs, ts) = src.build::<T>();
    let mut want = r.clone();
    let mut abs = r.map(f64::abs);
    for i in indices_of(&rs) {
        let mut j = i.clone();
        j[dim] += start;
        let f = want.flat(&j);
        want.data[f] += rs.at(&i);
        abs.data[f] += rs.at(&i).abs();
    }
    t.narrow_add_assign(dim, start, &ts);
    // One rounded addition per element.
    check_close(&t, &want, |_, f| eps::<T>() * abs.data[f])
}

fn scatter_add_case<T: Float>(
    x: &Input,
    dim: usize,
    index: &Input,
    src: &Input,
) -> Result<(), TestCaseError> {
    let (r, t) = x.build::<T>();
    let (ri, ti) = index.build::<i64>();
    let (rs, ts) = src.build::<T>();
    let mut want = r.clone();
    let mut abs = r.map(f64::abs);
    let mut terms = vec![1.0; r.numel()];
    for i in indices_of(&ri) {
        let mut j = i.clone();
        j[dim] = ri.at(&i) as usize;
        let f = want.flat(&j);
        want.data[f] += rs.at(&i);
        abs.data[f] += rs.at(&i).abs();
        terms[f] += 1.0;
    }
    // As for `index_add`.
    check_close(&t.scatter_add(dim, &ti, &ts), &want, |_, f| {
        terms[f] * eps::<T>() * abs.data[f]
    })
}

fn indices_of(r: &Ref) -> Vec<Vec<usize>> {
    indices(&r.shape)
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// A shape of rank 1..=3 (sometimes with empty dims) and a dim of it.
fn arb_shape_and_dim(pct_empty: u32) -> BoxedStrategy<(Vec<usize>, usize)> {
    prop::collection::vec(arb_dim(4, pct_empty), 1..=3)
        .prop_flat_map(|s| {
            let rank = s.len();
            (Just(s), 0..rank)
        })
        .boxed()
}

/// Parts for `concat`: shapes that differ only along `dim`.
fn arb_concat_parts() -> BoxedStrategy<(Vec<Input>, usize)> {
    arb_shape_and_dim(10)
        .prop_flat_map(|(shape, dim)| {
            let parts = prop::collection::vec(arb_dim(3, 20), 1..=4).prop_flat_map(move |sizes| {
                sizes
                    .into_iter()
                    .map(|n| {
                        let mut s = shape.clone();
                        s[dim] = n;
                        arb_input_of(s, Vals::Any)
                    })
                    .collect::<Vec<_>>()
            });
            (parts, Just(dim))
        })
        .boxed()
}

/// An index tensor of `shape` with entries in `0..bound`, in a random layout.
fn arb_index(shape: Vec<usize>, bound: usize) -> BoxedStrategy<Input> {
    let n: usize = shape.iter().product();
    let rank = shape.len();
    (
        prop::collection::vec((0..bound).prop_map(|v| v as f64), n),
        arb_layout(rank),
    )
        .prop_map(move |(data, layout)| Input {
            r: Ref::new(&shape, data),
            layout,
        })
        .boxed()
}

/// Input, dim, and an index shape for gather/scatter: same rank, no larger than the input
/// outside `dim`, any size along it.
fn arb_gather_shapes() -> BoxedStrategy<(Input, usize, Vec<usize>)> {
    prop::collection::vec(arb_dim(4, 0), 1..=3)
        .prop_flat_map(|s| {
            let rank = s.len();
            let index_shape: Vec<BoxedStrategy<usize>> =
                s.iter().map(|&n| (0..=n).boxed()).collect();
            (
                arb_input_of(s, Vals::Any),
                0..rank,
                index_shape,
                arb_dim(4, 10),
            )
        })
        .prop_map(|(x, dim, mut index_shape, along)| {
            index_shape[dim] = along;
            (x, dim, index_shape)
        })
        .boxed()
}

macro_rules! suite {
    ($name:ident, $t:ty) => {
        mod $name {
            use super::*;

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(96))]

                #[test]
                fn concat((parts, dim) in arb_concat_parts(), negative in any::<bool>()) {
                    concat_case::<$t>(&parts, dim, negative)?;
                }

                #[test]
                fn stack(
                    (parts, dim) in (arb_shape(3, 3, 10), 1..=4usize)
                        .prop_flat_map(|(s, k)| {
                            let rank = s.len();
                            (
                                prop::collection::vec(arb_input_of(s, Vals::Any), k),
                                0..=rank,
                            )
                        }),
                ) {
                    stack_case::<$t>(&parts, dim)?;
                }

                #[test]
                fn split(
                    (x, dim) in arb_shape_and_dim(10)
                        .prop_flat_map(|(s, d)| (arb_input_of(s, Vals::Any), Just(d))),
                    cuts in prop::collection::vec(0..10usize, 0..4),
                ) {
                    split_case::<$t>(&x, dim, &cuts)?;
                }

                #[test]
                fn chunk(
                    (x, dim) in prop::collection::vec(arb_dim(7, 10), 1..=3)
                        .prop_flat_map(|s| {
                            let rank = s.len();
                            (arb_input_of(s, Vals::Any), 0..rank)
                        }),
                    chunks in 1..=8usize,
                ) {
                    chunk_case::<$t>(&x, dim, chunks)?;
                }

                #[test]
                fn index_select(
                    (x, dim, idx) in arb_shape_and_dim(0)
                        .prop_flat_map(|(s, d)| {
                            let n = s[d] as i64;
                            (
                                arb_input_of(s, Vals::Any),
                                Just(d),
                                // Negative indices are an error (errors.rs), as in PyTorch.
                                prop::collection::vec(0..n, 0..=5),
                            )
                        }),
                ) {
                    index_select_case::<$t>(&x, dim, &idx)?;
                }

                #[test]
                fn gather(
                    (x, dim, index) in arb_gather_shapes().prop_flat_map(|(x, dim, shape)| {
                        let bound = x.r.shape[dim];
                        (Just(x), Just(dim), arb_index(shape, bound))
                    }),
                ) {
                    gather_case::<$t>(&x, dim, &index)?;
                }

                #[test]
                fn index_add(
                    (x, dim, idx, src) in arb_shape_and_dim(0)
                        .prop_flat_map(|(s, d)| {
                            let n = s[d];
                            (Just(s), Just(d), prop::collection::vec(0..n as i64, 0..=5))
                        })
                        .prop_flat_map(|(s, d, idx)| {
                            let mut src = s.clone();
                            src[d] = idx.len();
                            (
                                arb_input_of(s, Vals::Any),
                                Just(d),
                                Just(idx),
                                arb_input_of(src, Vals::Any),
                            )
                        }),
                ) {
                    index_add_case::<$t>(&x, dim, &idx, &src)?;
                }

                #[test]
                fn narrow_add_assign(
                    (x, dim, start, src) in arb_shape_and_dim(10)
                        .prop_flat_map(|(s, d)| {
                            let n = s[d];
                            (Just(s), Just(d), 0..=n).prop_flat_map(move |(s, d, start)| {
                                (Just(s), Just(d), Just(start), 0..=n - start)
                            })
                        })
                        .prop_flat_map(|(s, d, start, len)| {
                            let mut src = s.clone();
                            src[d] = len;
                            (
                                arb_input_of(s, Vals::Any),
                                Just(d),
                                Just(start),
                                arb_input_of(src, Vals::Any),
                            )
                        }),
                ) {
                    narrow_add_assign_case::<$t>(&x, dim, start, &src)?;
                }

                #[test]
                fn scatter_add(
                    (x, dim, index, src) in arb_gather_shapes()
                        .prop_flat_map(|(x, dim, shape)| {
                            let bound = x.r.shape[dim];
                            // src may be larger than index in any dim.
                            let src: Vec<BoxedStrategy<usize>> =
                                shape.iter().map(|&n| (n..=n + 1).boxed()).collect();
                            (Just(x), Just(dim), arb_index(shape, bound), src)
                        })
                        .prop_flat_map(|(x, dim, index, src)| {
                            (Just(x), Just(dim), Just(index), arb_input_of(src, Vals::Any))
                        }),
                ) {
                    scatter_add_case::<$t>(&x, dim, &index, &src)?;
                }
            }
        }
    };
}

suite!(on_f32, f32);
suite!(on_f64, f64);

// ---------------------------------------------------------------------------------------------
// Hand-computed examples
// ---------------------------------------------------------------------------------------------

#[test]
fn embedding_lookup_and_its_adjoint() {
    // A [4, 2] table; rows 3, 0, 3 looked up.
    let table = Tensor::from_vec(
        vec![0.0f32, 1.0, 10.0, 11.0, 20.0, 21.0, 30.0, 31.0],
        &[4, 2],
    );
    let idx = Tensor::from_vec(vec![3i64, 0, 3], &[3]);
    let rows = table.index_select(0, &idx);
    assert_eq!(rows.shape(), &[3, 2]);
    assert_eq!(rows.to_vec(), vec![30.0, 31.0, 0.0, 1.0, 30.0, 31.0]);
    // Gradients of the lookup: row 3 gets two contributions.
    let grad = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]);
    let back = Tensor::<f32>::zeros(&[4, 2]).index_add(0, &idx, &grad);
    assert_eq!(back.to_vec(), vec![3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 6.0, 8.0]);
    // Selecting columns.
    let cols = table.index_select(1, &Tensor::from_vec(vec![1i64, 1, 0], &[3]));
    assert_eq!(cols.shape(), &[4, 3]);
    assert_eq!(&cols.to_vec()[..3], &[1.0, 1.0, 0.0]);
    // -1 is an error, as in PyTorch, not the last row.
    let negative =
        std::panic::catch_unwind(|| table.index_select(0, &Tensor::from_vec(vec![-1i64], &[1])));
    let message = *negative.unwrap_err().downcast::<String>().unwrap();
    assert_eq!(
        message,
        "index_select: index -1 is out of range for a dim of size 4 (0..4)"
    );
    // No indices: an empty selection.
    let none = table.index_select(0, &Tensor::from_vec(vec![], &[0]));
    assert_eq!(none.shape(), &[0, 2]);
}

#[test]
fn gather_and_scatter_add_as_in_the_torch_docs() {
    // torch.gather(t, 1, [[0, 0], [1, 0]]) with t = [[1, 2], [3, 4]] is [[1, 1], [4, 3]].
    let t = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[2, 2]);
    let idx = Tensor::from_vec(vec![0i64, 0, 1, 0], &[2, 2]);
    assert_eq!(t.gather(1, &idx).to_vec(), vec![1.0, 1.0, 4.0, 3.0]);
    // Picking one class per row, as a loss does: [[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]] at [1, 0].
    let probs = Tensor::from_vec(vec![0.1f64, 0.7, 0.2, 0.5, 0.3, 0.2], &[2, 3]);
    let target = Tensor::from_vec(vec![1i64, 0], &[2, 1]);
    assert_eq!(probs.gather(1, &target).to_vec(), vec![0.7, 0.5]);
    // And scattering gradients back to where they came from.
    let g = Tensor::from_vec(vec![10.0f64, 20.0], &[2, 1]);
    let back = Tensor::<f64>::zeros(&[2, 3]).scatter_add(1, &target, &g);
    assert_eq!(back.to_vec(), vec![0.0, 10.0, 0.0, 20.0, 0.0, 0.0]);
    // Repeated indices accumulate.
    let idx = Tensor::from_vec(vec![2i64, 2, 2], &[1, 3]);
    let src = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[1, 3]);
    let acc = Tensor::<f64>::zeros(&[1, 3]).scatter_add(1, &idx, &src);
    assert_eq!(acc.to_vec(), vec![0.0, 0.0, 6.0]);
}

#[test]
fn concat_stack_split_chunk_by_hand() {
    let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    let b = Tensor::from_vec(vec![5.0f32, 6.0], &[2, 1]);
    let c = Tensor::concat(&[&a, &b], 1);
    assert_eq!(c.shape(), &[2, 3]);
    assert_eq!(c.to_vec(), vec![1.0, 2.0, 5.0, 3.0, 4.0, 6.0]);
    let s = Tensor::stack(&[&a, &a.t()], 0);
    assert_eq!(s.shape(), &[2, 2, 2]);
    assert_eq!(s.to_vec(), vec![1.0, 2.0, 3.0, 4.0, 1.0, 3.0, 2.0, 4.0]);
    let s = Tensor::stack(&[&a, &a], -1);
    assert_eq!(s.shape(), &[2, 2, 2]);
    assert_eq!(s.to_vec(), vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]);
    // Stacking scalars makes a vector.
    let (x, y) = (Tensor::scalar(1.0f64), Tensor::scalar(2.0f64));
    assert_eq!(Tensor::stack(&[&x, &y], 0).to_vec(), vec![1.0, 2.0]);
    let parts = c.split(&[1, 0, 2], 1);
    assert_eq!(parts[0].to_vec(), vec![1.0, 3.0]);
    assert_eq!(parts[1].shape(), &[2, 0]);
    assert_eq!(parts[2].to_vec(), vec![2.0, 5.0, 4.0, 6.0]);
    // torch.arange(5).chunk(3) has sizes [2, 2, 1]; torch.arange(6).chunk(4) has [2, 2, 2].
    let sizes = |n: usize, k: usize| -> Vec<usize> {
        Tensor::<f32>::zeros(&[n])
            .chunk(k, 0)
            .iter()
            .map(|p| p.numel())
            .collect()
    };
    assert_eq!(sizes(5, 3), vec![2, 2, 1]);
    assert_eq!(sizes(6, 4), vec![2, 2, 2]);
    assert_eq!(sizes(2, 5), vec![1, 1]);
}
