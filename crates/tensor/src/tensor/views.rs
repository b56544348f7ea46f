//! Views: a new shape, strides and offset over the same storage, never a copy — except a
//! `reshape` that strides cannot express, which copies, as in PyTorch.
//!
//! A view clones the storage handle (a reference count), so it is cheap and shares every
//! element with its source. Each view keeps the representation's invariants: `permute`,
//! `transpose` and `t` only reorder dimensions; `unsqueeze` and `squeeze` insert or remove
//! one of size 1; `narrow` and `select` move the offset to their first element (not when the
//! result is empty, so the offset stays inside the storage); `broadcast_to` gives the
//! repeated dimensions stride 0; `reshape` finds strides for the new shape with
//! `view_strides` or else copies.

use crate::element::Element;
use crate::shape::{contiguous_strides, numel, numel_for, resolve_dim, shape_panic, Dim};

use super::Tensor;

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
