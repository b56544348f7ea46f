//! Structural ops: `concat`, `stack`, `split`, `chunk`, `index_select`, `gather`, and their
//! adjoints `index_add` and `scatter_add` (what the backward of a lookup needs).

use std::borrow::Cow;

use crate::element::{Element, Float};
use crate::pool::Buffer;
use crate::shape::{numel, resolve_dim, shape_panic, unravel, Dim};
use crate::tensor::Tensor;

impl<T: Element> Tensor<T> {
    /// Joins tensors along an existing dim; all other dims must agree.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0], &[1, 2]);
    /// let b = Tensor::from_vec(vec![3.0f32, 4.0, 5.0, 6.0], &[2, 2]);
    /// assert_eq!(Tensor::concat(&[&a, &b], 0).shape(), &[3, 2]);
    /// ```
    ///
    /// # Panics
    /// If `tensors` is empty or the shapes differ outside `dim`.
    #[track_caller]
    pub fn concat<D: Dim>(tensors: &[&Tensor<T>], dim: D) -> Self {
        let Some(first) = tensors.first() else {
            shape_panic("concat", format_args!("needs at least one tensor"));
        };
        let d = resolve_dim("concat", dim, first.rank());
        for t in tensors {
            let agrees = t.rank() == first.rank()
                && (0..first.rank()).all(|i| i == d || t.shape[i] == first.shape[i]);
            if !agrees {
                shape_panic(
                    "concat",
                    format_args!(
                        "shapes {:?} and {:?} differ outside dim {d}",
                        first.shape, t.shape
                    ),
                );
            }
        }
        let mut shape = first.shape.clone();
        shape[d] = tensors.iter().map(|t| t.shape[d]).sum();
        // Row-major: the output is `outer` repetitions of each input's block of `shape[d..]`.
        let outer = numel(&first.shape[..d]);
        let mut data = Buffer::with_capacity(numel(&shape)).into_vec();
        // Contiguous inputs (the usual case) are read in place; others are copied once.
        let parts: Vec<Cow<'_, [T]>> = tensors
            .iter()
            .map(|t| match t.as_slice() {
                Some(values) => Cow::Borrowed(values),
                None => Cow::Owned(t.to_vec()),
            })
            .collect();
        for o in 0..outer {
            for (t, part) in tensors.iter().zip(&parts) {
                let block = numel(&t.shape[d..]);
                data.extend_from_slice(&part[o * block..(o + 1) * block]);
            }
        }
        Tensor::from_contiguous(data, shape)
    }

    /// Joins same-shaped tensors along a new dim `dim` (`0..=rank`).
    ///
    /// # Panics
    /// If `tensors` is empty or the shapes differ.
    #[track_caller]
    pub fn stack<D: Dim>(tensors: &[&Tensor<T>], dim: D) -> Self {
        let Some(first) = tensors.first() else {
            shape_panic("stack", format_args!("needs at least one tensor"));
        };
        if let Some(t) = tensors.iter().find(|t| t.shape != first.shape) {
            shape_panic(
                "stack",
                format_args!("shapes {:?} and {:?} differ", first.shape, t.shape),
            );
        }
        let d = resolve_dim("stack", dim, first.rank() + 1);
        let expanded: Vec<Tensor<T>> = tensors.iter().map(|t| t.unsqueeze(d)).collect();
        Self::concat(&expanded.iter().collect::<Vec<_>>(), d)
    }

    /// Splits along `dim` into pieces of the given sizes (views).
    ///
    /// # Panics
    /// If the sizes do not add up to the dim's size.
    #[track_caller]
    pub fn split<D: Dim>(&self, sizes: &[usize], dim: D) -> Vec<Self> {
        let d = resolve_dim("split", dim, self.rank());
        if sizes.iter().sum::<usize>() != self.shape[d] {
            shape_panic(
                "split",
                format_args!(
                    "sizes {sizes:?} do not add up to dim {d} of shape {:?}",
                    self.shape
                ),
            );
        }
        let mut start = 0;
        sizes
            .iter()
            .map(|&n| {
                let piece = self.narrow(d, start, n);
                start += n;
                piece
            })
            .collect()
    }

    /// Splits along `dim` into `chunks` pieces of `ceil(size / chunks)` (the last may be
    /// smaller, and there may be fewer pieces), like `torch.chunk`. Views.
    ///
    /// # Panics
    /// If `chunks` is 0.
    #[track_caller]
    pub fn chunk<D: Dim>(&self, chunks: usize, dim: D) -> Vec<Self> {
        let d = resolve_dim("chunk", dim, self.rank());
        if chunks == 0 {
            shape_panic("chunk", format_args!("chunks must be at least 1"));
        }
        let n = self.shape[d];
        let step = n.div_ceil(chunks).max(1);
        let sizes: Vec<usize> = if n == 0 {
            vec![0; chunks]
        } else {
            (0..n).step_by(step).map(|s| step.min(n - s)).collect()
        };
        self.split(&sizes, d)
    }

    /// Picks the entries `indices` (1-D) along `dim`: `out[.., i, ..] = self[.., indices[i], ..]`.
    /// This is an embedding lookup when `self` is the `[vocab, dim]` table and `dim` is 0.
    ///
    /// # Panics
    /// If `indices` is not 1-D or an index is out of range.
    #[track_caller]
    pub fn index_select<D: Dim>(&self, dim: D, indices: &Tensor<i64>) -> Self {
        let d = resolve_dim("index_select", dim, self.rank());
        if indices.rank() != 1 {
            shape_panic(
                "index_select",
                format_args!("indices must be 1-D, got shape {:?}", indices.shape),
            );
        }
        let idx = checked_indices("index_select", indices, self.shape[d]);
        let picked: Vec<Tensor<T>> = idx.iter().map(|&i| self.narrow(d, i, 1)).collect();
        if picked.is_empty() {
            let mut shape = self.shape.clone();
            shape[d] = 0;
            return Tensor::full(&shape, T::default());
        }
        Self::concat(&picked.iter().collect::<Vec<_>>(), d)
    }

    /// `out[i][j][k] = self[index[i][j][k]][j][k]` for `dim` 0 (and likewise for other dims),
    /// like `torch.gather`. `index` has the rank of `self`, and is no larger than `self` in
    /// any dim but `dim`; the output has the shape of `index`.
    ///
    /// # Panics
    /// On a rank or size mismatch, or an index out of range.
    #[track_caller]
    pub fn gather<D: Dim>(&self, dim: D, index: &Tensor<i64>) -> Self {
        let d = resolve_dim("gather", dim, self.rank());
        check_scatter_shapes("gather", self, d, index, None);
        let idx = checked_indices("gather", index, self.shape[d]);
        let mut data = Vec::with_capacity(idx.len());
        for (flat, &i) in idx.iter().enumerate() {
            let mut pos = unravel(flat, &index.shape);
            pos[d] = i;
            data.push(self.get(&pos));
        }
        Tensor::from_contiguous(data, index.shape.clone())
    }
}

impl<T: Float> Tensor<T> {
    /// `self` with `src` added at `indices` along `dim`: `out[.., indices[i], ..] += src[.., i, ..]`.
    /// Repeated indices accumulate. The adjoint of [`index_select`](Self::index_select).
    ///
    /// # Panics
    /// On a shape mismatch or an index out of range.
    #[track_caller]
    pub fn index_add<D: Dim>(&self, dim: D, indices: &Tensor<i64>, src: &Self) -> Self {
        let d = resolve_dim("index_add", dim, self.rank());
        let mut expected = self.shape.clone();
        expected[d] = indices.numel();
        if indices.rank() != 1 || src.shape != expected {
            shape_panic(
                "index_add",
                format_args!(
                    "self {:?}, indices {:?} and src {:?} do not agree along dim {d}",
                    self.shape, indices.shape, src.shape
                ),
            );
        }
        let idx = checked_indices("index_add", indices, self.shape[d]);
        let mut out = self.contiguous().into_vec();
        let strides = crate::shape::contiguous_strides(&self.shape);
        for (flat, v) in src.to_vec().into_iter().enumerate() {
            let mut pos = unravel(flat, &src.shape);
            pos[d] = idx[pos[d]];
            out[offset_of(&pos, &strides)] += v;
        }
        Tensor::from_contiguous(out, self.shape.clone())
    }

    /// `self` with `out[index[i][j]][j] += src[i][j]` for `dim` 0 (likewise for other dims),
    /// like `torch.scatter_add`. The adjoint of [`gather`](Self::gather).
    ///
    /// # Panics
    /// On a shape mismatch or an index out of range.
    #[track_caller]
    pub fn scatter_add<D: Dim>(&self, dim: D, index: &Tensor<i64>, src: &Self) -> Self {
        let d = resolve_dim("scatter_add", dim, self.rank());
        check_scatter_shapes("scatter_add", self, d, index, Some(&src.shape));
        let idx = checked_indices("scatter_add", index, self.shape[d]);
        let mut out = self.contiguous().into_vec();
        let strides = crate::shape::contiguous_strides(&self.shape);
        for (flat, &i) in idx.iter().enumerate() {
            let src_pos = unravel(flat, &index.shape);
            let mut pos = src_pos.clone();
            pos[d] = i;
            out[offset_of(&pos, &strides)] += src.get(&src_pos);
        }
        Tensor::from_contiguous(out, self.shape.clone())
    }
}

fn offset_of(pos: &[usize], strides: &[usize]) -> usize {
    pos.iter().zip(strides).map(|(p, s)| p * s).sum()
}

/// The indices as `usize`, each checked to be in `0..bound`. A negative index is an error, as
/// in PyTorch's `index_select`, `gather` and `nn.Embedding` (counting it from the end would
/// turn a stray −1 into a silently wrong row).
#[track_caller]
fn checked_indices(op: &str, indices: &Tensor<i64>, bound: usize) -> Vec<usize> {
    indices
        .to_vec()
        .into_iter()
        .map(|i| match usize::try_from(i) {
            Ok(j) if j < bound => j,
            _ => shape_panic(
                op,
                format_args!("index {i} is out of range for a dim of size {bound} (0..{bound})"),
            ),
        })
        .collect()
}

/// The shape rules of `gather`/`scatter_add`: `index` has the rank of `input`, fits inside it
/// outside `dim`, and (for scatter) inside `src` everywhere.
#[track_caller]
fn check_scatter_shapes<T: Element>(
    op: &str,
    input: &Tensor<T>,
    dim: usize,
    index: &Tensor<i64>,
    src: Option<&[usize]>,
) {
    let fits = index.rank() == input.rank()
        && (0..input.rank()).all(|i| i == dim || index.shape[i] <= input.shape[i])
        && src.is_none_or(|s| {
            s.len() == index.rank() && index.shape.iter().zip(s).all(|(a, b)| a <= b)
        });
    if !fits {
        shape_panic(
            op,
            format_args!(
                "index {:?} does not fit input {:?}{} along dim {dim}",
                index.shape,
                input.shape,
                src.map(|s| format!(" and src {s:?}")).unwrap_or_default()
            ),
        );
    }
}

impl<T: Float> Tensor<T> {
    /// Adds `src` into the slice `start..start + src.dim(dim)` along `dim`, in place:
    /// `self.narrow(dim, start, len) += src`. Copies first if the storage is shared (copy on
    /// write), so no other tensor changes. This is how the gradient of a slice is accumulated
    /// without building a full-size tensor of zeros around it.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let mut acc = Tensor::<f32>::zeros(&[2, 4]);
    /// acc.narrow_add_assign(1, 1, &Tensor::ones(&[2, 2]));
    /// assert_eq!(acc.to_vec(), vec![0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
    /// ```
    ///
    /// # Panics
    /// If `src` does not fit in `self` at that place.
    #[track_caller]
    pub fn narrow_add_assign<D: Dim>(&mut self, dim: D, start: usize, src: &Self) {
        let d = resolve_dim("narrow_add_assign", dim, self.rank());
        let fits = src.rank() == self.rank()
            && (0..self.rank()).all(|i| {
                if i == d {
                    start + src.shape[i] <= self.shape[i]
                } else {
                    src.shape[i] == self.shape[i]
                }
            });
        if !fits {
            shape_panic(
                "narrow_add_assign",
                format_args!(
                    "src {:?} does not fit into {:?} at {start} along dim {d}",
                    src.shape, self.shape
                ),
            );
        }
        let strides = crate::shape::contiguous_strides(&self.shape);
        let base = start * strides[d];
        let dst = self.as_mut_slice();
        // Row-major over `src`, blocks of `inner` elements are contiguous in `dst`; `src` is
        // read where it is, row by row along its last dim (no copy even when it is strided or
        // broadcast, like the gradient of a `sum`). A row never crosses a block: `inner` is a
        // multiple of the last dim's length.
        let inner = numel(&src.shape[d..]).max(1);
        let outer_stride = if d == 0 { 0 } else { strides[d - 1] };
        let (rows, len, stride) = src.rows();
        for (r, start) in rows.enumerate() {
            let e = r * len; // row-major index in `src` of the row's first element
            let at = base + (e / inner) * outer_stride + e % inner;
            let dst = &mut dst[at..at + len];
            match stride {
                1 => {
                    for (x, v) in dst.iter_mut().zip(&src.data[start..start + len]) {
                        *x += *v;
                    }
                }
                0 => {
                    // Broadcast along the row (the gradient of a `sum`): one value.
                    let v = src.data[start];
                    for x in dst.iter_mut() {
                        *x += v;
                    }
                }
                _ => {
                    for (k, x) in dst.iter_mut().enumerate() {
                        *x += src.data[start + k * stride];
                    }
                }
            }
        }
    }
}
