//! The [`Tensor`] type: shared row-major storage seen through a shape, strides and an offset.
//!
//! Views (`reshape` of a contiguous tensor, `permute`, `transpose`, `narrow`, `select`,
//! `unsqueeze`, `broadcast_to`) share the storage and only change the shape, strides and
//! offset. Every op that computes returns a new, contiguous tensor.

use std::sync::Arc;

use crate::element::{Element, Float};
use crate::error::ShapeError;
use crate::pool::Buffer;
use crate::shape::{
    alloc_numel, contiguous_strides, numel, numel_for, resolve_dim, shape_panic, Dim,
};

/// An n-dimensional array of `T`.
///
/// Cloning is cheap: the storage is reference-counted and shared.
///
/// ```
/// use tensor::Tensor;
/// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
/// let xt = x.t(); // a view: no copy
/// assert_eq!(xt.shape(), &[3, 2]);
/// assert_eq!(xt.to_vec(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
/// assert_eq!((&x + &x).sum_all().item(), 42.0);
/// ```
#[derive(Clone)]
pub struct Tensor<T: Element> {
    pub(crate) data: Arc<Buffer<T>>,
    pub(crate) shape: Vec<usize>,
    pub(crate) strides: Vec<usize>,
    pub(crate) offset: usize,
}

// ---------------------------------------------------------------------------------------------
// Creation
// ---------------------------------------------------------------------------------------------

impl<T: Element> Tensor<T> {
    /// A tensor owning `data`, laid out row-major in `shape`.
    ///
    /// # Panics
    /// If `data.len()` is not the product of `shape`.
    #[track_caller]
    pub fn from_vec(data: Vec<T>, shape: &[usize]) -> Self {
        match Self::try_from_vec(data, shape) {
            Ok(t) => t,
            Err(e) => shape_panic("from_vec", format_args!("{e}")),
        }
    }

    /// Like [`from_vec`](Self::from_vec), but returns an error instead of panicking; use it for
    /// data that comes from outside the program.
    pub fn try_from_vec(data: Vec<T>, shape: &[usize]) -> Result<Self, ShapeError> {
        let Some(n) = crate::shape::checked_numel(shape) else {
            return Err(ShapeError::TooLarge {
                shape: shape.to_vec(),
            });
        };
        if data.len() != n {
            return Err(ShapeError::LengthMismatch {
                len: data.len(),
                shape: shape.to_vec(),
            });
        }
        Ok(Self::from_contiguous(data, shape.to_vec()))
    }

    pub(crate) fn from_contiguous(data: Vec<T>, shape: Vec<usize>) -> Self {
        debug_assert_eq!(data.len(), numel(&shape));
        let strides = contiguous_strides(&shape);
        Tensor {
            data: Arc::new(Buffer::from(data)),
            shape,
            strides,
            offset: 0,
        }
    }

    /// A 0-dimensional tensor holding `value`.
    pub fn scalar(value: T) -> Self {
        Self::from_contiguous(vec![value], vec![])
    }

    /// A tensor of `shape` with every element equal to `value`.
    ///
    /// # Panics
    /// If the shape has more elements than one allocation can hold.
    #[track_caller]
    pub fn full(shape: &[usize], value: T) -> Self {
        Self::filled("full", shape, value)
    }

    #[track_caller]
    fn filled(op: &str, shape: &[usize], value: T) -> Self {
        let n = alloc_numel(op, shape, size_of::<T>());
        let mut data = Buffer::with_capacity(n).into_vec();
        data.resize(n, value);
        Self::from_contiguous(data, shape.to_vec())
    }

    /// Shape, e.g. `[batch, hidden]`.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Strides in elements (0 on broadcast dimensions).
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Size of one dimension (negative counts from the end).
    ///
    /// # Panics
    /// If `dim` is out of range.
    #[track_caller]
    pub fn dim<D: Dim>(&self, dim: D) -> usize {
        self.shape[resolve_dim("dim", dim, self.rank())]
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// The element type's tag.
    pub fn dtype(&self) -> crate::DType {
        T::DTYPE
    }

    /// `true` if the elements are laid out row-major without gaps, so [`as_slice`](Self::as_slice)
    /// works.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&n, &s) in self.shape.iter().zip(&self.strides).rev() {
            if n != 1 && s != expected {
                return false;
            }
            expected *= n;
        }
        true
    }

    /// The elements in row-major order, if the tensor is contiguous.
    pub fn as_slice(&self) -> Option<&[T]> {
        self.is_contiguous()
            .then(|| &self.data[self.offset..self.offset + self.numel()])
    }

    /// The tensor itself if contiguous (a cheap clone), otherwise a contiguous copy.
    pub fn contiguous(&self) -> Self {
        if self.is_contiguous() {
            self.clone()
        } else {
            Self::from_contiguous(self.to_vec(), self.shape.clone())
        }
    }

    /// The elements in row-major order, copied into a `Vec`.
    pub fn to_vec(&self) -> Vec<T> {
        match self.as_slice() {
            Some(s) => {
                let mut v = Buffer::with_capacity(s.len()).into_vec();
                v.extend_from_slice(s);
                v
            }
            None => {
                let (rows, len, stride) = self.rows();
                let mut v = Buffer::with_capacity(self.numel()).into_vec();
                for start in rows {
                    match stride {
                        1 => v.extend_from_slice(&self.data[start..start + len]),
                        _ => v.extend((0..len).map(|k| self.data[start + k * stride])),
                    }
                }
                v
            }
        }
    }

    /// Mutable access to the elements in row-major order. Copies first if the storage is shared
    /// with another tensor or the tensor is not contiguous (copy-on-write), so writing through
    /// it never changes another tensor.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        if !self.is_contiguous() || self.offset != 0 || self.data.len() != self.numel() {
            *self = Self::from_contiguous(self.to_vec(), self.shape.clone());
        }
        Arc::make_mut(&mut self.data).as_mut_slice()
    }

    /// Unwraps into a row-major `Vec`, without copying when this tensor is the storage's only
    /// owner and covers all of it.
    pub fn into_vec(self) -> Vec<T> {
        if self.is_contiguous() && self.offset == 0 && self.data.len() == self.numel() {
            Arc::try_unwrap(self.data).map_or_else(|shared| shared.to_vec(), Buffer::into_vec)
        } else {
            self.to_vec()
        }
    }

    /// The single element of a tensor with one element (any shape).
    ///
    /// # Panics
    /// If the tensor does not have exactly one element.
    #[track_caller]
    pub fn item(&self) -> T {
        if self.numel() != 1 {
            shape_panic(
                "item",
                format_args!(
                    "expected a tensor with one element, got shape {:?}",
                    self.shape
                ),
            );
        }
        self.data[self.offset]
    }

    /// The element at a multi-index.
    ///
    /// # Panics
    /// If the index has the wrong length or is out of bounds.
    #[track_caller]
    pub fn get(&self, index: &[usize]) -> T {
        if index.len() != self.rank() || index.iter().zip(&self.shape).any(|(&i, &n)| i >= n) {
            shape_panic(
                "get",
                format_args!(
                    "index {index:?} is out of bounds for shape {:?}",
                    self.shape
                ),
            );
        }
        let o: usize = index.iter().zip(&self.strides).map(|(i, s)| i * s).sum();
        self.data[self.offset + o]
    }

    /// Converts every element to another element type (`f32` ↔ `f64`, `bool` → 0/1, ...).
    pub fn cast<U: Element>(&self) -> Tensor<U> {
        self.map_to(|x| U::from_f64(x.to_f64()))
    }

    /// Storage offsets of the elements in row-major order.
    pub(crate) fn offsets(&self) -> StridedIter<'_> {
        StridedIter::new(&self.shape, &self.strides, self.offset, 0)
    }

    /// The elements as rows along the last dimension, in row-major order: the storage offset
    /// of each row's first element, the row length, and the stride within a row (1 when the
    /// rows are contiguous, 0 when broadcast). A 0-d tensor is one row of one element.
    /// Walking rows rather than single offsets is what makes a strided copy fast.
    pub(crate) fn rows(&self) -> (StridedIter<'_>, usize, usize) {
        match self.rank() {
            0 => (StridedIter::new(&[], &[], self.offset, 0), 1, 1),
            r => (
                StridedIter::new(&self.shape[..r - 1], &self.strides[..r - 1], self.offset, 0),
                self.shape[r - 1],
                self.strides[r - 1],
            ),
        }
    }
}

impl<T: Float> Tensor<T> {
    /// All zeros.
    ///
    /// # Panics
    /// If the shape has more elements than one allocation can hold.
    #[track_caller]
    pub fn zeros(shape: &[usize]) -> Self {
        Self::filled("zeros", shape, T::ZERO)
    }

    /// All ones.
    ///
    /// # Panics
    /// If the shape has more elements than one allocation can hold.
    #[track_caller]
    pub fn ones(shape: &[usize]) -> Self {
        Self::filled("ones", shape, T::ONE)
    }

    /// Zeros with the shape of `self`.
    pub fn zeros_like(&self) -> Self {
        Self::zeros(&self.shape)
    }

    /// Ones with the shape of `self`.
    pub fn ones_like(&self) -> Self {
        Self::ones(&self.shape)
    }

    /// `[start, start + step, ...]` up to but excluding `end`, as a 1-D tensor (like
    /// `torch.arange`).
    ///
    /// # Panics
    /// If `step` is zero or has the wrong sign for the range, an argument is not finite, or
    /// the range has more elements than one allocation can hold.
    #[track_caller]
    pub fn arange(start: T, end: T, step: T) -> Self {
        let (s, e, st) = (start.to_f64(), end.to_f64(), step.to_f64());
        if !(s.is_finite() && e.is_finite() && st.is_finite()) || st == 0.0 || (e - s) * st < 0.0 {
            shape_panic(
                "arange",
                format_args!("step {st} cannot go from {s} to {e}"),
            );
        }
        let count = ((e - s) / st).ceil().max(0.0);
        if count >= isize::MAX as f64 {
            shape_panic(
                "arange",
                format_args!("{count} elements from {s} to {e} by {st} are too many"),
            );
        }
        let n = alloc_numel("arange", &[count as usize], size_of::<T>());
        let data = (0..n).map(|i| T::from_f64(s + st * i as f64)).collect();
        Self::from_contiguous(data, vec![n])
    }
}

// ---------------------------------------------------------------------------------------------
// Views: change shape, strides and offset; never copy (except `reshape` of a view that cannot
// be expressed with strides, as in PyTorch).
// ---------------------------------------------------------------------------------------------

impl<T: Element> Tensor<T> {
    /// The same elements in a new shape. A view when the strides allow it (always for a
    /// contiguous tensor), otherwise a copy, like `torch.reshape`.
    ///
    /// # Panics
    /// If the new shape has a different number of elements.
    #[track_caller]
    pub fn reshape(&self, shape: &[usize]) -> Self {
        if numel_for("reshape", shape) != self.numel() {
            shape_panic(
                "reshape",
                format_args!(
                    "cannot reshape {:?} ({} elements) into {:?} ({} elements)",
                    self.shape,
                    self.numel(),
                    shape,
                    numel(shape)
                ),
            );
        }
        match view_strides(&self.shape, &self.strides, shape) {
            Some(strides) => Tensor {
                data: self.data.clone(),
                shape: shape.to_vec(),
                strides,
                offset: self.offset,
            },
            None => Self::from_contiguous(self.to_vec(), shape.to_vec()),
        }
    }

    /// Reorders the dimensions: output dimension `i` is input dimension `dims[i]`. A view.
    ///
    /// # Panics
    /// If `dims` is not a permutation of `0..rank`.
    #[track_caller]
    pub fn permute<D: Dim>(&self, dims: &[D]) -> Self {
        let rank = self.rank();
        let dims: Vec<usize> = dims
            .iter()
            .map(|&d| resolve_dim("permute", d, rank))
            .collect();
        let mut seen = vec![false; rank];
        for &d in &dims {
            seen[d] = true;
        }
        if dims.len() != rank || seen.contains(&false) {
            shape_panic(
                "permute",
                format_args!(
                    "{dims:?} is not a permutation of the {rank} dims of {:?}",
                    self.shape
                ),
            );
        }
        Tensor {
            data: self.data.clone(),
            shape: dims.iter().map(|&d| self.shape[d]).collect(),
            strides: dims.iter().map(|&d| self.strides[d]).collect(),
            offset: self.offset,
        }
    }

    /// Swaps two dimensions. A view.
    #[track_caller]
    pub fn transpose<D: Dim>(&self, dim0: D, dim1: D) -> Self {
        let (a, b) = (
            resolve_dim("transpose", dim0, self.rank()),
            resolve_dim("transpose", dim1, self.rank()),
        );
        let mut dims: Vec<usize> = (0..self.rank()).collect();
        dims.swap(a, b);
        self.permute(&dims)
    }

    /// The transpose of a 2-D tensor. A view.
    ///
    /// # Panics
    /// If the tensor is not 2-D.
    #[track_caller]
    pub fn t(&self) -> Self {
        if self.rank() != 2 {
            shape_panic(
                "t",
                format_args!("expected a 2-D tensor, got shape {:?}", self.shape),
            );
        }
        self.transpose(0, 1)
    }

    /// The slice `start..start + len` along `dim`. A view.
    ///
    /// # Panics
    /// If the range does not fit in the dimension.
    #[track_caller]
    pub fn narrow<D: Dim>(&self, dim: D, start: usize, len: usize) -> Self {
        let d = resolve_dim("narrow", dim, self.rank());
        if start + len > self.shape[d] {
            shape_panic(
                "narrow",
                format_args!(
                    "range {start}..{} is out of bounds for dim {d} of shape {:?}",
                    start + len,
                    self.shape
                ),
            );
        }
        let mut out = self.clone();
        out.shape[d] = len;
        // An empty view keeps its offset, which then stays inside the storage (a view of an
        // empty tensor may have no storage at all).
        if out.numel() > 0 {
            out.offset += start * self.strides[d];
        }
        out
    }

    /// The sub-tensor at `index` along `dim`, with that dimension removed. A view.
    #[track_caller]
    pub fn select<D: Dim>(&self, dim: D, index: usize) -> Self {
        let d = resolve_dim("select", dim, self.rank());
        if index >= self.shape[d] {
            shape_panic(
                "select",
                format_args!(
                    "index {index} is out of bounds for dim {d} of shape {:?}",
                    self.shape
                ),
            );
        }
        let mut out = self.clone();
        out.shape.remove(d);
        out.strides.remove(d);
        // As in `narrow`: an empty view keeps its offset.
        if out.numel() > 0 {
            out.offset += index * self.strides[d];
        }
        out
    }

    /// Inserts a dimension of size 1 at `dim` (`0..=rank`; negative counts from the end). A view.
    #[track_caller]
    pub fn unsqueeze<D: Dim>(&self, dim: D) -> Self {
        let d = resolve_dim("unsqueeze", dim, self.rank() + 1);
        let mut out = self.clone();
        let stride = if d < self.rank() {
            self.strides[d] * self.shape[d]
        } else {
            1
        };
        out.shape.insert(d, 1);
        out.strides.insert(d, stride);
        out
    }

    /// Removes a dimension of size 1. A view.
    ///
    /// # Panics
    /// If that dimension's size is not 1.
    #[track_caller]
    pub fn squeeze<D: Dim>(&self, dim: D) -> Self {
        let d = resolve_dim("squeeze", dim, self.rank());
        if self.shape[d] != 1 {
            shape_panic(
                "squeeze",
                format_args!("dim {d} of shape {:?} is not of size 1", self.shape),
            );
        }
        let mut out = self.clone();
        out.shape.remove(d);
        out.strides.remove(d);
        out
    }

    /// Broadcasts to `shape` by NumPy rules (size-1 dims repeat, missing leading dims are
    /// added). A view with stride 0 on the repeated dimensions, like `torch.expand`.
    ///
    /// # Panics
    /// If the tensor cannot be broadcast to `shape`, or `shape` is too large to address.
    #[track_caller]
    pub fn broadcast_to(&self, shape: &[usize]) -> Self {
        numel_for("broadcast_to", shape);
        if shape.len() < self.rank() {
            crate::shape::broadcast_panic("broadcast_to", &self.shape, shape);
        }
        let lead = shape.len() - self.rank();
        let mut strides = vec![0; shape.len()];
        for (i, &n) in self.shape.iter().enumerate() {
            strides[lead + i] = if n == shape[lead + i] {
                self.strides[i]
            } else if n == 1 {
                0
            } else {
                crate::shape::broadcast_panic("broadcast_to", &self.shape, shape)
            };
        }
        Tensor {
            data: self.data.clone(),
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        }
    }

    /// Flattens into one dimension (a view when contiguous).
    pub fn flatten(&self) -> Self {
        self.reshape(&[self.numel()])
    }
}

/// Strides that show a tensor of `shape`/`strides` as `new_shape` without copying, if any
/// exist (the algorithm of PyTorch's `computeStride`): each run of input dims that are
/// contiguous with each other may be split or merged freely.
fn view_strides(shape: &[usize], strides: &[usize], new_shape: &[usize]) -> Option<Vec<usize>> {
    if numel(shape) == 0 || shape.is_empty() {
        return Some(contiguous_strides(new_shape));
    }
    let mut new_strides = vec![0; new_shape.len()];
    let mut view_d = new_shape.len() as isize - 1;
    let mut chunk_base_stride = *strides.last().unwrap();
    let mut tensor_numel = 1;
    let mut view_numel = 1;
    for tensor_d in (0..shape.len()).rev() {
        tensor_numel *= shape[tensor_d];
        let chunk_ends = tensor_d == 0
            || (shape[tensor_d - 1] != 1
                && strides[tensor_d - 1] != tensor_numel * chunk_base_stride);
        if chunk_ends {
            while view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d as usize] == 1) {
                new_strides[view_d as usize] = view_numel * chunk_base_stride;
                view_numel *= new_shape[view_d as usize];
                view_d -= 1;
            }
            if view_numel != tensor_numel {
                return None;
            }
            if tensor_d > 0 {
                chunk_base_stride = strides[tensor_d - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    (view_d == -1).then_some(new_strides)
}

// ---------------------------------------------------------------------------------------------
// Iteration over a strided view
// ---------------------------------------------------------------------------------------------

/// Storage offsets of a strided view, in row-major order of its shape, starting at the
/// `start`-th element. The building block of every op that reads a non-contiguous tensor.
pub(crate) struct StridedIter<'a> {
    shape: &'a [usize],
    strides: &'a [usize],
    index: Vec<usize>,
    offset: usize,
    remaining: usize,
}

impl<'a> StridedIter<'a> {
    pub(crate) fn new(shape: &'a [usize], strides: &'a [usize], base: usize, start: usize) -> Self {
        let total = numel(shape);
        let mut index = vec![0; shape.len()];
        let mut offset = base;
        let mut rest = start.min(total);
        for d in (0..shape.len()).rev() {
            if shape[d] > 0 {
                index[d] = rest % shape[d];
                rest /= shape[d];
                offset += index[d] * strides[d];
            }
        }
        StridedIter {
            shape,
            strides,
            index,
            offset,
            remaining: total - start.min(total),
        }
    }
}

impl Iterator for StridedIter<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let current = self.offset;
        // Odometer increment: bump the last index, carry into earlier dims.
        for d in (0..self.shape.len()).rev() {
            self.index[d] += 1;
            self.offset += self.strides[d];
            if self.index[d] < self.shape[d] {
                break;
            }
            self.offset -= self.strides[d] * self.shape[d];
            self.index[d] = 0;
        }
        Some(current)
    }
}

/// Two tensors are equal when their shapes and elements are (NaN equals nothing, as for
/// floats); strides and storage do not matter.
impl<T: Element> PartialEq for Tensor<T> {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape
            && self
                .offsets()
                .zip(other.offsets())
                .all(|(i, j)| self.data[i] == other.data[j])
    }
}
