//! Creating tensors: from a `Vec` of elements laid out row-major, or filled with one value
//! (`full`, `zeros`, `ones`, `arange`, `scalar`).
//!
//! Every tensor made here is contiguous with offset 0 and owns its storage alone. Shapes are
//! checked before anything is allocated: a length that does not match the shape is a panic
//! (or a [`ShapeError`] from [`try_from_vec`](Tensor::try_from_vec), for data from outside the
//! program), and so is a shape with more elements than one allocation can hold.

use std::sync::Arc;

use crate::element::{Element, Float};
use crate::error::ShapeError;
use crate::pool::Buffer;
use crate::shape::{alloc_numel, contiguous_strides, numel, shape_panic};

use super::Tensor;

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
