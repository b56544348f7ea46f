//! Shared helpers for the tensor test suites: a naive reference tensor ([`Ref`]), proptest
//! strategies for shapes, values and memory layouts, and tolerance-aware comparison.
//!
//! The reference is deliberately plain: `f64` data in row-major order, a shape, and loops over
//! multi-indices. It shares no code with the crate, so a bug in the crate's strides, broadcasting
//! or iteration cannot hide in the reference too.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tensor::{Element, Float, Tensor};

// ---------------------------------------------------------------------------------------------
// Multi-indices
// ---------------------------------------------------------------------------------------------

/// Every multi-index of `shape`, in row-major order (an odometer, written out by hand).
pub fn indices(shape: &[usize]) -> Vec<Vec<usize>> {
    let total: usize = shape.iter().product();
    let mut out = Vec::with_capacity(total);
    if total == 0 {
        return out;
    }
    let mut idx = vec![0; shape.len()];
    loop {
        out.push(idx.clone());
        let mut d = shape.len();
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// The NumPy broadcast of two shapes, written independently of `tensor::broadcast_shapes`.
pub fn ref_broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let pad = |s: &[usize]| -> Vec<usize> {
        let mut v = vec![1; rank - s.len()];
        v.extend_from_slice(s);
        v
    };
    let (a, b) = (pad(a), pad(b));
    a.iter()
        .zip(&b)
        .map(|(&x, &y)| match (x, y) {
            _ if x == y => Some(x),
            (1, _) => Some(y),
            (_, 1) => Some(x),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The reference tensor
// ---------------------------------------------------------------------------------------------

/// A naive row-major `f64` tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Ref {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Ref {
    pub fn new(shape: &[usize], data: Vec<f64>) -> Ref {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "Ref::new");
        Ref {
            shape: shape.to_vec(),
            data,
        }
    }

    /// `f(index)` at every multi-index of `shape`.
    pub fn from_fn(shape: &[usize], mut f: impl FnMut(&[usize]) -> f64) -> Ref {
        let data = indices(shape).iter().map(|i| f(i)).collect();
        Ref::new(shape, data)
    }

    /// The values of a tensor, read one element at a time with `get`.
    pub fn of<T: Element>(t: &Tensor<T>) -> Ref {
        Ref::from_fn(t.shape(), |i| t.get(i).to_f64())
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Position of a multi-index in `data`.
    pub fn flat(&self, idx: &[usize]) -> usize {
        assert_eq!(idx.len(), self.rank());
        let mut f = 0;
        for (d, &i) in idx.iter().enumerate() {
            assert!(
                i < self.shape[d],
                "Ref index {idx:?} outside {:?}",
                self.shape
            );
            f = f * self.shape[d] + i;
        }
        f
    }

    pub fn at(&self, idx: &[usize]) -> f64 {
        self.data[self.flat(idx)]
    }

    /// The tensor holding these values, row-major.
    pub fn to_tensor<T: Element>(&self) -> Tensor<T> {
        Tensor::from_vec(
            self.data.iter().map(|&v| T::from_f64(v)).collect(),
            &self.shape,
        )
    }

    /// These values rounded to `T` (so the reference starts from exactly what the crate sees).
    pub fn rounded<T: Element>(&self) -> Ref {
        self.map(|v| T::from_f64(v).to_f64())
    }

    pub fn map(&self, f: impl Fn(f64) -> f64) -> Ref {
        Ref::new(&self.shape, self.data.iter().map(|&v| f(v)).collect())
    }

    /// NumPy broadcasting: size-1 dims repeat, missing leading dims are added.
    pub fn broadcast_to(&self, shape: &[usize]) -> Ref {
        let lead = shape.len() - self.rank();
        Ref::from_fn(shape, |i| {
            let src: Vec<usize> = (0..self.rank())
                .map(|d| if self.shape[d] == 1 { 0 } else { i[lead + d] })
                .collect();
            self.at(&src)
        })
    }

    /// Elementwise with broadcasting.
    pub fn zip(&self, other: &Ref, f: impl Fn(f64, f64) -> f64) -> Ref {
        let shape = ref_broadcast_shapes(&self.shape, &other.shape).expect("Ref::zip shapes");
        let (a, b) = (self.broadcast_to(&shape), other.broadcast_to(&shape));
        Ref::new(
            &shape,
            a.data.iter().zip(&b.data).map(|(&x, &y)| f(x, y)).collect(),
        )
    }

    /// Output dim `i` is input dim `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Ref {
        let shape: Vec<usize> = perm.iter().map(|&p| self.shape[p]).collect();
        Ref::from_fn(&shape, |i| {
            let mut src = vec![0; self.rank()];
            for (k, &p) in perm.iter().enumerate() {
                src[p] = i[k];
            }
            self.at(&src)
        })
    }

    /// `f` applied to the list of values along the `reduced` dims (row-major order), for every
    /// index of the kept dims; the output keeps the reduced dims as size 1 if `keepdim`.
    pub fn reduce(&self, reduced: &[bool], keepdim: bool, f: impl Fn(&[f64]) -> f64) -> Ref {
        let kept_shape: Vec<usize> = (0..self.rank())
            .map(|d| if reduced[d] { 1 } else { self.shape[d] })
            .collect();
        let red_shape: Vec<usize> = (0..self.rank())
            .map(|d| if reduced[d] { self.shape[d] } else { 1 })
            .collect();
        let out = Ref::from_fn(&kept_shape, |k| {
            let vals: Vec<f64> = indices(&red_shape)
                .iter()
                .map(|r| {
                    let i: Vec<usize> = (0..self.rank())
                        .map(|d| if reduced[d] { r[d] } else { k[d] })
                        .collect();
                    self.at(&i)
                })
                .collect();
            f(&vals)
        });
        if keepdim {
            out
        } else {
            let shape: Vec<usize> = (0..self.rank())
                .filter(|&d| !reduced[d])
                .map(|d| self.shape[d])
                .collect();
            Ref::new(&shape, out.data)
        }
    }

    /// The 1-D lines along `dim`, each transformed by `f` (which must keep their length).
    pub fn along(&self, dim: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> Ref {
        let mut out = self.clone();
        let mut outer = self.shape.clone();
        outer[dim] = 1;
        for o in indices(&outer) {
            let line: Vec<f64> = (0..self.shape[dim])
                .map(|j| {
                    let mut i = o.clone();
                    i[dim] = j;
                    self.at(&i)
                })
                .collect();
            let mapped = f(&line);
            assert_eq!(mapped.len(), line.len());
            for (j, v) in mapped.into_iter().enumerate() {
                let mut i = o.clone();
                i[dim] = j;
                let f = out.flat(&i);
                out.data[f] = v;
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------------

/// Machine epsilon of `T`, as `f64`.
pub fn eps<T: Float>() -> f64 {
    T::EPSILON.to_f64()
}

/// Checks shape and values: `tol(want, i)` is the allowed absolute error at flat position `i`.
/// NaN must match NaN, and an infinity must match the same infinity exactly.
pub fn check_close<T: Element>(
    got: &Tensor<T>,
    want: &Ref,
    tol: impl Fn(f64, usize) -> f64,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.shape(), &want.shape[..], "shape");
    let g = got.to_vec();
    prop_assert_eq!(g.len(), want.numel(), "to_vec length");
    for (i, (&gv, &w)) in g.iter().zip(&want.data).enumerate() {
        let gv = gv.to_f64();
        if w.is_nan() || gv.is_nan() || w.is_infinite() || gv.is_infinite() {
            prop_assert!(
                (w.is_nan() && gv.is_nan()) || gv == w,
                "at flat {}: got {}, want {}",
                i,
                gv,
                w
            );
        } else {
            let t = tol(w, i);
            prop_assert!(
                (gv - w).abs() <= t,
                "at flat {}: got {}, want {} (|diff| {:e} > tol {:e})",
                i,
                gv,
                w,
                (gv - w).abs(),
                t
            );
        }
    }
    Ok(())
}

/// Exact equality (for ops that only move or select values, or compare them).
pub fn check_exact<T: Element>(got: &Tensor<T>, want: &Ref) -> Result<(), TestCaseError> {
    check_close(got, want, |_, _| 0.0)
}

/// Relative tolerance `k·eps·|want|`, with `k` chosen per op by the caller.
pub fn check_rel<T: Float>(got: &Tensor<T>, want: &Ref, k: f64) -> Result<(), TestCaseError> {
    check_close(got, want, |w, _| k * eps::<T>() * w.abs())
}

// ---------------------------------------------------------------------------------------------
// Layouts: the same logical values stored in different ways
// ---------------------------------------------------------------------------------------------

/// How to lay out a tensor's values in memory: the storage is a padded array (junk around the
/// values, reached by `narrow`), stored with its dims permuted (undone by `permute`), and dims
/// marked `bcast` are stored once and repeated with `broadcast_to` (stride 0).
#[derive(Clone, Debug)]
pub struct Layout {
    pub perm: Vec<usize>,
    pub pad: Vec<(usize, usize)>,
    pub bcast: Vec<bool>,
}

impl Layout {
    pub fn contiguous(rank: usize) -> Layout {
        Layout {
            perm: (0..rank).collect(),
            pad: vec![(0, 0); rank],
            bcast: vec![false; rank],
        }
    }
}

/// Junk stored outside a view; NaN so that reading it by mistake shows in every result.
const JUNK: f64 = f64::NAN;

/// A layout for a tensor of `rank` dims: contiguous a quarter of the time, otherwise a random
/// mix of permuted storage, padding and broadcast dims.
pub fn arb_layout(rank: usize) -> BoxedStrategy<Layout> {
    let strided = (
        Just((0..rank).collect::<Vec<usize>>()).prop_shuffle(),
        prop::collection::vec((0..=2usize, 0..=2usize), rank),
        prop::collection::vec(prop::bool::weighted(0.25), rank),
    )
        .prop_map(|(perm, pad, bcast)| Layout { perm, pad, bcast });
    prop_oneof![1 => Just(Layout::contiguous(rank)), 3 => strided].boxed()
}

/// A tensor with the values of `r` (first rounded to `T`), stored as `layout` says. Returns the
/// values it really holds: dims marked `bcast` repeat their first entry.
pub fn realize<T: Element>(r: &Ref, layout: &Layout) -> (Ref, Tensor<T>) {
    let r = r.rounded::<T>();
    let rank = r.rank();
    // 1. The stored values: broadcast dims shrunk to size 1.
    let s1: Vec<usize> = (0..rank)
        .map(|d| if layout.bcast[d] { 1 } else { r.shape[d] })
        .collect();
    let stored = Ref::from_fn(&s1, |i| {
        if i.iter().zip(&r.shape).all(|(&j, &n)| j < n) {
            r.at(i)
        } else {
            // Broadcasting a size-1 dim to size 0: the stored value is never seen.
            1.5
        }
    });
    let want = stored.broadcast_to(&r.shape);
    // 2. Padded with junk.
    let s2: Vec<usize> = (0..rank)
        .map(|d| s1[d] + layout.pad[d].0 + layout.pad[d].1)
        .collect();
    let padded = Ref::from_fn(&s2, |i| {
        let inside: Option<Vec<usize>> = (0..rank)
            .map(|d| {
                let lo = layout.pad[d].0;
                (i[d] >= lo && i[d] < lo + s1[d]).then(|| i[d] - lo)
            })
            .collect();
        inside.map_or(JUNK, |j| stored.at(&j))
    });
    // 3. Stored with permuted dims; `permute(inv)` brings them back.
    let storage = padded.permute(&layout.perm).to_tensor::<T>();
    let mut inv = vec![0; rank];
    for (i, &p) in layout.perm.iter().enumerate() {
        inv[p] = i;
    }
    let mut t = storage.permute(&inv);
    for (d, (&(lo, _), &n)) in layout.pad.iter().zip(&s1).enumerate() {
        t = t.narrow(d, lo, n);
    }
    let t = t.broadcast_to(&r.shape);
    (want, t)
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// A dim size in `1..=max`, or 0 with probability `pct_empty` percent.
pub fn arb_dim(max: usize, pct_empty: u32) -> BoxedStrategy<usize> {
    if pct_empty > 0 {
        prop_oneof![pct_empty => Just(0usize), (100 - pct_empty) => 1..=max].boxed()
    } else {
        (1..=max).boxed()
    }
}

/// A shape of rank `0..=max_rank` with dims from [`arb_dim`].
pub fn arb_shape(max_rank: usize, max_dim: usize, pct_empty: u32) -> BoxedStrategy<Vec<usize>> {
    prop::collection::vec(arb_dim(max_dim, pct_empty), 0..=max_rank).boxed()
}

/// The value ranges tests draw from.
#[derive(Clone, Copy, Debug)]
pub enum Vals {
    /// Uniform in `[-4, 4]`.
    Any,
    /// Uniform in `[0.1, 4]`: for log, sqrt, powf.
    Positive,
    /// `±[0.5, 4]`: for divisors.
    AwayFromZero,
    /// Small integers in `-3..=3`, so ties and equalities happen often.
    SmallInts,
}

pub fn arb_value(vals: Vals) -> BoxedStrategy<f64> {
    match vals {
        Vals::Any => (-4.0f64..=4.0).boxed(),
        Vals::Positive => (0.1f64..=4.0).boxed(),
        Vals::AwayFromZero => (0.5f64..=4.0, any::<bool>())
            .prop_map(|(v, neg)| if neg { -v } else { v })
            .boxed(),
        Vals::SmallInts => (-3i32..=3).prop_map(f64::from).boxed(),
    }
}

/// Reference values of a given shape.
pub fn arb_ref_of(shape: Vec<usize>, vals: Vals) -> BoxedStrategy<Ref> {
    let n: usize = shape.iter().product();
    prop::collection::vec(arb_value(vals), n)
        .prop_map(move |data| Ref::new(&shape, data))
        .boxed()
}

/// Values of a given shape together with a layout to store them in.
#[derive(Clone, Debug)]
pub struct Input {
    pub r: Ref,
    pub layout: Layout,
}

impl Input {
    /// The tensor, and the values it holds (see [`realize`]).
    pub fn build<T: Element>(&self) -> (Ref, Tensor<T>) {
        realize(&self.r, &self.layout)
    }
}

pub fn arb_input_of(shape: Vec<usize>, vals: Vals) -> BoxedStrategy<Input> {
    let rank = shape.len();
    (arb_ref_of(shape, vals), arb_layout(rank))
        .prop_map(|(r, layout)| Input { r, layout })
        .boxed()
}

/// An input of random shape (rank ≤ 4, dims ≤ 4, sometimes empty) and layout.
pub fn arb_input(vals: Vals, pct_empty: u32) -> BoxedStrategy<Input> {
    arb_shape(4, 4, pct_empty)
        .prop_flat_map(move |s| arb_input_of(s, vals))
        .boxed()
}

/// A shape that broadcasts to `out`: some leading dims dropped, some dims set to 1.
pub fn arb_broadcastable_to(out: Vec<usize>) -> BoxedStrategy<Vec<usize>> {
    let rank = out.len();
    (
        0..=rank,
        prop::collection::vec(prop::bool::weighted(0.3), rank),
    )
        .prop_map(move |(drop, ones)| {
            (drop..rank)
                .map(|d| if ones[d] { 1 } else { out[d] })
                .collect()
        })
        .boxed()
}

/// Two shapes that broadcast together.
pub fn arb_broadcast_pair(pct_empty: u32) -> BoxedStrategy<(Vec<usize>, Vec<usize>)> {
    arb_shape(4, 4, pct_empty)
        .prop_flat_map(|out| (arb_broadcastable_to(out.clone()), arb_broadcastable_to(out)))
        .boxed()
}

/// Two inputs whose shapes broadcast together.
pub fn arb_input_pair(a: Vals, b: Vals, pct_empty: u32) -> BoxedStrategy<(Input, Input)> {
    arb_broadcast_pair(pct_empty)
        .prop_flat_map(move |(sa, sb)| (arb_input_of(sa, a), arb_input_of(sb, b)))
        .boxed()
}

/// A random subset of `0..rank` as a mask.
pub fn arb_mask(rank: usize) -> BoxedStrategy<Vec<bool>> {
    prop::collection::vec(any::<bool>(), rank).boxed()
}
