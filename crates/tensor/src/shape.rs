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
///
/// # Panics
/// If the shape is too large for this machine (see [`checked_numel`]).
#[track_caller]
pub fn numel(shape: &[usize]) -> usize {
    numel_for("numel", shape)
}

/// Number of elements of a shape, or `None` if the shape is too large for this machine: if
/// the product of its sizes, counting a size of 0 as 1, exceeds `isize::MAX`. (Counting zeros
/// as ones keeps every stride of the shape addressable too, as PyTorch requires: `[0, 2⁴⁰,
/// 2⁴⁰]` has no elements but a stride of 2⁸⁰.)
///
/// ```
/// use tensor::checked_numel;
/// assert_eq!(checked_numel(&[2, 3]), Some(6));
/// assert_eq!(checked_numel(&[0, 5]), Some(0));
/// assert_eq!(checked_numel(&[1 << 32, 1 << 32]), None);
/// assert_eq!(checked_numel(&[0, 1 << 40, 1 << 40]), None);
/// ```
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    let mut span: usize = 1;
    for &n in shape {
        span = span
            .checked_mul(n.max(1))
            .filter(|&s| s <= isize::MAX as usize)?;
    }
    Some(if shape.contains(&0) { 0 } else { span })
}

/// [`numel`], panicking as `op` on a shape too large for this machine.
#[track_caller]
pub(crate) fn numel_for(op: &str, shape: &[usize]) -> usize {
    match checked_numel(shape) {
        Some(n) => n,
        None => shape_panic(
            op,
            format_args!("shape {shape:?} has more elements than this machine can address"),
        ),
    }
}

/// [`numel_for`], also panicking if the elements' bytes (`element_size` each) exceed what
/// one allocation can hold: for ops that allocate a tensor of `shape`.
#[track_caller]
pub(crate) fn alloc_numel(op: &str, shape: &[usize], element_size: usize) -> usize {
    let n = numel_for(op, shape);
    if n.checked_mul(element_size)
        .is_none_or(|b| b > isize::MAX as usize)
    {
        shape_panic(
            op,
            format_args!(
                "a tensor of shape {shape:?} needs {n} elements of {element_size} bytes, more \
                 than one allocation can hold"
            ),
        );
    }
    n
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
