//! Shapes, strides, dimension arguments, broadcasting, and the panics for getting them wrong.

use std::fmt;

/// A dimension argument. Like PyTorch, a negative value counts from the end: `-1` is the last
/// dimension. Implemented for `usize`, `isize` and `i32` (the type of a bare literal).
pub trait Dim: Copy + fmt::Debug {
    /// The dimension as a signed number.
    fn as_isize(self) -> isize;
}

impl Dim for usize {
    fn as_isize(self) -> isize {
        self as isize
    }
}
impl Dim for isize {
    fn as_isize(self) -> isize {
        self
    }
}
impl Dim for i32 {
    fn as_isize(self) -> isize {
        self as isize
    }
}

/// Resolves `dim` (possibly negative) against `rank`, or panics naming `op`.
///
/// # Panics
/// If `dim` is out of range.
#[track_caller]
pub fn resolve_dim<D: Dim>(op: &str, dim: D, rank: usize) -> usize {
    let d = dim.as_isize();
    let resolved = if d < 0 { d + rank as isize } else { d };
    if resolved < 0 || resolved >= rank as isize {
        shape_panic(
            op,
            format_args!("dim {d} is out of range for a tensor of rank {rank}"),
        );
    }
    resolved as usize
}

/// Number of elements of a shape (1 for a scalar shape `[]`).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The multi-index of the `flat`-th element of `shape` in row-major order.
pub fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        if shape[d] > 0 {
            index[d] = flat % shape[d];
            flat /= shape[d];
        }
    }
    index
}

/// Row-major (C order) strides of a shape.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut s = 1;
    for (stride, &n) in strides.iter_mut().zip(shape).rev() {
        *stride = s;
        s *= n;
    }
    strides
}

/// The NumPy broadcast of two shapes, or `None` if they do not broadcast.
///
/// Shapes are aligned on their last dimension; two sizes agree when equal or when one is 1.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i < rank - a.len() {
            1
        } else {
            a[i - (rank - a.len())]
        };
        let db = if i < rank - b.len() {
            1
        } else {
            b[i - (rank - b.len())]
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Panics with `"{op}: {message}"`. The one place shape errors are raised.
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn shape_panic(op: &str, message: fmt::Arguments<'_>) -> ! {
    panic!("{op}: {message}")
}

/// Panics because two shapes do not broadcast.
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn broadcast_panic(op: &str, a: &[usize], b: &[usize]) -> ! {
    panic!("{op}: shapes {a:?} and {b:?} cannot be broadcast together")
}
