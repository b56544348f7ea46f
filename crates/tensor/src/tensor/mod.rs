//! The [`Tensor`] type: shared row-major storage seen through a shape, strides and an offset.
//!
//! Element `[i_0, .., i_{n-1}]` of a tensor is `data[offset + Σ i_k · strides[k]]`. What every
//! op relies on:
//!
//! - strides are in elements; a dimension that repeats one element (broadcast) has stride 0;
//! - whenever the tensor has elements, every such index lands inside `data` (an empty view may
//!   have no storage at all, and then only its shape is read);
//! - storage is shared by reference count and never written while shared: the one mutable
//!   access, [`as_mut_slice`](Tensor::as_mut_slice), copies first (copy-on-write);
//! - views share the storage and only change the shape, strides and offset; every op that
//!   computes returns a new, contiguous tensor with offset 0.
//!
//! This file holds the type and how its elements are read (shape queries, contiguity, copies
//! out, single elements, the row and offset walks ops read through). The rest is by concern:
//!
//! - [`construction`]: tensors from data or a fill value (`from_vec`, `zeros`, `arange`, ...);
//! - [`views`]: new shapes, strides and offsets over the same storage (`reshape`, `permute`,
//!   `narrow`, `select`, `broadcast_to`, ...);
//! - [`strided`]: [`StridedIter`], the storage offsets of a strided view in row-major order.

use std::sync::Arc;

use crate::element::Element;
use crate::pool::Buffer;
use crate::shape::{numel, resolve_dim, shape_panic, Dim};

mod construction;
mod strided;
mod views;

pub(crate) use strided::StridedIter;

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

impl<T: Element> Tensor<T> {
    /// Whether `self` and `other` are the same view of the same storage (clones of one
    /// tensor), not merely equal values.
    pub fn same_view(&self, other: &Tensor<T>) -> bool {
        Arc::ptr_eq(&self.data, &other.data)
            && self.offset == other.offset
            && self.shape == other.shape
            && self.strides == other.strides
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
