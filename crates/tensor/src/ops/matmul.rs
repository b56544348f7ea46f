//! Matrix multiplication: 2-D, batched with broadcast batch dims, and 1-D vectors, with
//! PyTorch's `matmul` semantics.
//!
//! Every product ends in [`gemm`], the one place that calls a kernel
//! (`matrixmultiply::sgemm`/`dgemm`). The kernel takes a row and a column stride per operand,
//! so a transposed or otherwise strided operand is passed as it is, never copied.

use rayon::prelude::*;

use crate::element::{DType, Float};
use crate::shape::{broadcast_shapes, numel, shape_panic};
use crate::tensor::{StridedIter, Tensor};

/// A read-only strided matrix inside some storage: element `(i, j)` is at
/// `data[offset + i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub offset: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// `c = alpha · a · b + beta · c` for an `m × k` matrix `a`, a `k × n` matrix `b` and a
/// contiguous row-major `m × n` output `c`. With `beta == 0`, `c`'s old contents are ignored.
///
/// # Panics
/// If the sizes disagree or an operand's strides reach outside its storage (an internal bug,
/// never a user error: public ops check shapes first).
pub(crate) fn gemm<T: Float>(alpha: T, a: MatRef<'_, T>, b: MatRef<'_, T>, beta: T, c: &mut [T]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm: inner dimensions differ");
    assert_eq!(c.len(), m * n, "gemm: output has the wrong length");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: c = beta · c.
        c.iter_mut()
            .for_each(|x| *x = if beta == T::ZERO { T::ZERO } else { beta * *x });
        return;
    }
    // Bounds: the last element each operand can read must be inside its storage.
    let last =
        |x: &MatRef<'_, T>| x.offset + (x.rows - 1) * x.row_stride + (x.cols - 1) * x.col_stride;
    assert!(last(&a) < a.data.len(), "gemm: lhs strides out of bounds");
    assert!(last(&b) < b.data.len(), "gemm: rhs strides out of bounds");
    let (rsa, csa) = (a.row_stride as isize, a.col_stride as isize);
    let (rsb, csb) = (b.row_stride as isize, b.col_stride as isize);
    let (rsc, csc) = (n as isize, 1isize);
    let a_ptr = a.data[a.offset..].as_ptr();
    let b_ptr = b.data[b.offset..].as_ptr();
    let c_ptr = c.as_mut_ptr();
    // SAFETY: (1) `T::DTYPE` is `F32` only for `T = f32` and `F64` only for `T = f64` (the two
    // `Float` impls in element.rs), so each pointer cast below is a cast to the pointee's own
    // type. (2) The asserts above show that every element `a` and `b` can address, up to
    // `(m-1, k-1)` and `(k-1, n-1)`, lies inside their slices, and `c` has exactly `m * n`
    // elements with row stride `n` and column stride 1. (3) `c` is a `&mut` borrow, so it
    // aliases neither `a` nor `b`; `a` and `b` are only read. (4) m, k, n > 0 here.
    unsafe {
        match T::DTYPE {
            DType::F32 => matrixmultiply::sgemm(
                m,
                k,
                n,
                alpha.to_f64() as f32,
                a_ptr.cast::<f32>(),
                rsa,
                csa,
                b_ptr.cast::<f32>(),
                rsb,
                csb,
                beta.to_f64() as f32,
                c_ptr.cast::<f32>(),
                rsc,
                csc,
            ),
            DType::F64 => matrixmultiply::dgemm(
                m,
                k,
                n,
                alpha.to_f64(),
                a_ptr.cast::<f64>(),
                rsa,
                csa,
                b_ptr.cast::<f64>(),
                rsb,
                csb,
                beta.to_f64(),
                c_ptr.cast::<f64>(),
                rsc,
                csc,
            ),
            DType::I64 | DType::Bool => unreachable!("Float is only implemented for f32 and f64"),
        }
    }
}

/// The matrix at storage `offset` formed by the last two dims of `t`.
fn mat<T: Float>(t: &Tensor<T>, offset: usize) -> MatRef<'_, T> {
    let r = t.rank();
    MatRef {
        data: &t.data[..],
        rows: t.shape[r - 2],
        cols: t.shape[r - 1],
        offset,
        row_stride: t.strides[r - 2],
        col_stride: t.strides[r - 1],
    }
}

/// Below this many multiply-adds a batched matmul runs its batch on one thread.
const PARALLEL_FLOPS: usize = 1 << 18;

impl<T: Float> Tensor<T> {
    /// Matrix product with `torch.matmul` semantics:
    /// - 2-D × 2-D: `[m, k] × [k, n] → [m, n]`;
    /// - batched: `[..., m, k] × [..., k, n] → [..., m, n]`, the batch dims broadcast
    ///   (a 2-D operand is shared by every batch entry, without copying);
    /// - a 1-D lhs is a row vector and a 1-D rhs a column vector, their dim removed afterwards.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[2, 2]);
    /// let b = Tensor::from_vec(vec![5.0f64, 6.0], &[2, 1]);
    /// assert_eq!(a.matmul(&b).to_vec(), vec![17.0, 39.0]);
    /// assert_eq!(a.t().matmul(&b).to_vec(), vec![23.0, 34.0]); // transposed, not copied
    /// ```
    ///
    /// # Panics
    /// If an operand is 0-D, the inner dims differ, or the batch dims do not broadcast; the
    /// message names both shapes.
    #[track_caller]
    pub fn matmul(&self, rhs: &Self) -> Self {
        if self.rank() == 0 || rhs.rank() == 0 {
            shape_panic(
                "matmul",
                format_args!(
                    "both operands need at least one dim, got lhs {:?} and rhs {:?}",
                    self.shape, rhs.shape
                ),
            );
        }
        let inner_l = self.shape[self.rank() - 1];
        let inner_r = rhs.shape[if rhs.rank() == 1 { 0 } else { rhs.rank() - 2 }];
        if inner_l != inner_r {
            shape_panic(
                "matmul",
                format_args!(
                    "lhs {:?} and rhs {:?} do not agree on the inner dimension",
                    self.shape, rhs.shape
                ),
            );
        }
        let a = if self.rank() == 1 {
            self.unsqueeze(0)
        } else {
            self.clone()
        };
        let b = if rhs.rank() == 1 {
            rhs.unsqueeze(1)
        } else {
            rhs.clone()
        };
        let (ra, rb) = (a.rank(), b.rank());
        let (m, k, n) = (a.shape[ra - 2], a.shape[ra - 1], b.shape[rb - 1]);
        let batch = broadcast_shapes(&a.shape[..ra - 2], &b.shape[..rb - 2]).unwrap_or_else(|| {
            shape_panic(
                "matmul",
                format_args!(
                    "batch dims of lhs {:?} and rhs {:?} cannot be broadcast together",
                    self.shape, rhs.shape
                ),
            )
        });
        let a = a.broadcast_to(&[&batch[..], &[m, k]].concat());
        let b = b.broadcast_to(&[&batch[..], &[k, n]].concat());
        let offsets = |t: &Tensor<T>| -> Vec<usize> {
            let r = t.rank();
            StridedIter::new(&t.shape[..r - 2], &t.strides[..r - 2], t.offset, 0).collect()
        };
        let (a_offsets, b_offsets) = (offsets(&a), offsets(&b));
        let mut out = vec![T::ZERO; numel(&batch) * m * n];
        let one = |(i, c): (usize, &mut [T])| {
            gemm(
                T::ONE,
                mat(&a, a_offsets[i]),
                mat(&b, b_offsets[i]),
                T::ZERO,
                c,
            );
        };
        if m * n > 0 {
            if a_offsets.len() > 1 && a_offsets.len() * m * n * k >= PARALLEL_FLOPS {
                out.par_chunks_mut(m * n).enumerate().for_each(one);
            } else {
                out.chunks_mut(m * n).enumerate().for_each(one);
            }
        }
        let mut shape = batch;
        if self.rank() > 1 {
            shape.push(m);
        }
        if rhs.rank() > 1 {
            shape.push(n);
        }
        Tensor::from_contiguous(out, shape)
    }
}
