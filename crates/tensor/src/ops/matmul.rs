//! Matrix multiplication: 2-D, batched with broadcast batch dims, and 1-D vectors, with
//! PyTorch's `matmul` semantics.
//!
//! Every product ends in [`gemm_into`], whose private `kernel` is the one place that calls
//! `matrixmultiply::sgemm`/`dgemm` (swap it there to try another gemm). The kernel takes a
//! row and a column stride per operand, so a transposed or otherwise strided operand is
//! passed as it is, never copied.

use rayon::prelude::*;

use crate::element::{DType, Float};
use crate::shape::{broadcast_shapes, numel, shape_panic};
use crate::tensor::{StridedIter, Tensor};

/// A read-only strided matrix view into a slice: element `(i, j)` is at
/// `data[offset + i * row_stride + j * col_stride]`. The constructors check that every element
/// lies inside `data`, so [`gemm_into`] is safe to call with any `MatRef`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    offset: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// The row-major `rows × cols` matrix at the start of `data`.
    ///
    /// # Panics
    /// If `data` is shorter than `rows * cols`.
    #[track_caller]
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self::strided(data, 0, rows, cols, cols, 1)
    }

    /// A general strided view.
    ///
    /// # Panics
    /// If an element of the view falls outside `data`.
    #[track_caller]
    pub fn strided(
        data: &'a [T],
        offset: usize,
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        let m = MatRef {
            data,
            rows,
            cols,
            offset,
            row_stride,
            col_stride,
        };
        if rows > 0 && cols > 0 && m.last() >= data.len() {
            shape_panic(
                "MatRef",
                format_args!(
                    "a {rows}x{cols} view at offset {offset} with strides ({row_stride}, \
                     {col_stride}) reaches past a slice of length {}",
                    data.len()
                ),
            );
        }
        m
    }

    /// The transpose (a view: the strides swap).
    pub fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Element `(i, j)`.
    ///
    /// # Panics
    /// If out of range.
    pub fn get(&self, i: usize, j: usize) -> T
    where
        T: Copy,
    {
        assert!(
            i < self.rows && j < self.cols,
            "MatRef::get: ({i}, {j}) out of range"
        );
        self.data[self.offset + i * self.row_stride + j * self.col_stride]
    }

    /// Column `j` as a slice, when its elements are adjacent (`row_stride == 1`, as in the
    /// transpose of a row-major matrix); `None` otherwise.
    pub(crate) fn column(&self, j: usize) -> Option<&'a [T]> {
        (self.row_stride == 1 && j < self.cols)
            .then(|| &self.data[self.offset + j * self.col_stride..][..self.rows])
    }

    /// Row `i` as a slice, when its elements are adjacent (`col_stride == 1`, as in a
    /// row-major matrix); `None` otherwise.
    pub(crate) fn row(&self, i: usize) -> Option<&'a [T]> {
        (self.col_stride == 1 && i < self.rows)
            .then(|| &self.data[self.offset + i * self.row_stride..][..self.cols])
    }

    /// The columns `start..start + len` (a view).
    fn columns(self, start: usize, len: usize) -> Self {
        MatRef {
            cols: len,
            offset: self.offset + start * self.col_stride,
            ..self
        }
    }

    /// The rows `start..start + len` (a view).
    fn row_range(self, start: usize, len: usize) -> Self {
        MatRef {
            rows: len,
            offset: self.offset + start * self.row_stride,
            ..self
        }
    }

    /// Index of the last element (for a non-empty view).
    fn last(&self) -> usize {
        self.offset + (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
    }
}

/// Below this many multiply-adds a product runs on one thread: waking rayon's workers costs
/// tens of microseconds when they are asleep, and 2²⁴ multiply-adds take about 80 µs on one
/// core.
const PARALLEL_MACS: usize = 1 << 24;

/// Width (or height) of the blocks of output columns (rows) a large product is split into: one
/// block per thread, since every column block repacks all of `a` (and every row block all of
/// `b`). Which columns or rows a block holds never changes the arithmetic of an element,
/// so results are still bit-identical whatever `RAYON_NUM_THREADS` is.
fn block_size(n: usize, threads: usize) -> usize {
    n.div_ceil(threads).next_multiple_of(16).max(64)
}

/// `c = alpha · a · b + beta · c`, with `a` `m × k`, `b` `k × n` (any strides: pass
/// `x.t()` for a transpose, it is never copied) and `c` a contiguous row-major `m × n` slice.
/// With `beta == 0`, `c`'s old contents are ignored (NaN included). Large products are split
/// across rayon threads by blocks of output rows or columns.
///
/// ```
/// use tensor::ops::matmul::{gemm_into, MatRef};
/// let a = [1.0f64, 2.0, 3.0, 4.0]; // [[1, 2], [3, 4]]
/// let mut c = [1.0f64; 4];
/// gemm_into(1.0, MatRef::new(&a, 2, 2).t(), MatRef::new(&a, 2, 2), 1.0, &mut c); // c += aᵀa
/// assert_eq!(c, [11.0, 15.0, 15.0, 21.0]);
/// ```
///
/// # Panics
/// If the inner dimensions differ or `c` is not `m × n` long.
#[track_caller]
pub fn gemm_into<T: Float>(alpha: T, a: MatRef<'_, T>, b: MatRef<'_, T>, beta: T, c: &mut [T]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || c.len() != m * n {
        shape_panic(
            "gemm_into",
            format_args!(
                "a is {m}x{k}, b is {}x{n} and c has {} elements (expected {})",
                b.rows,
                c.len(),
                m * n
            ),
        );
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: c = beta · c.
        c.iter_mut()
            .for_each(|x| *x = if beta == T::ZERO { T::ZERO } else { beta * *x });
        return;
    }
    let threads = rayon::current_num_threads();
    // Split the longer side of the output: each block packs the whole of the operand along
    // the other side (a column block all of `a`, a row block all of `b`), so this packs the
    // smaller one twice. The weight gradients of a recurrent layer, `dPᵀ X` with `dP`
    // `[T·B, G·H]` and `X` `[T·B, I]`, have far more rows than columns: split by columns,
    // both threads would pack all of `dPᵀ`.
    let by_rows = m > n;
    let block = block_size(if by_rows { m } else { n }, threads);
    // One thread gains nothing from blocks and would repack an operand once per block. Each
    // output element is the same sum in the same order either way (the kernel blocks only m,
    // n and k, never reorders a dot product by which rows or columns it was given), so this
    // keeps results bit-identical across thread counts — the determinism tests check it.
    if m * n * k < PARALLEL_MACS || m.max(n) <= block || threads == 1 {
        // SAFETY: `c` is a live, exclusively borrowed m×n row-major buffer (length checked
        // above), matching the strides (n, 1) passed.
        unsafe { kernel(alpha, a, b, beta, c.as_mut_ptr(), n) };
        return;
    }
    if by_rows {
        c.par_chunks_mut(block * n)
            .enumerate()
            .for_each(|(i, c_rows)| {
                let rows = a.row_range(i * block, c_rows.len() / n);
                // SAFETY: `c_rows` is an exclusively borrowed piece of `c` holding exactly
                // `rows.rows()` rows of n elements, matching the strides (n, 1) passed.
                unsafe { kernel(alpha, rows, b, beta, c_rows.as_mut_ptr(), n) };
            });
        return;
    }
    let out = SendPtr(c.as_mut_ptr());
    let starts: Vec<usize> = (0..n).step_by(block).collect();
    starts.into_par_iter().for_each(|j0| {
        let width = block.min(n - j0);
        let out = &out;
        // SAFETY: block `j0` writes only columns j0..j0 + width of the m×n buffer `c`, which
        // stays exclusively borrowed by this call until every task has finished
        // (`for_each` returns after all of them); the column ranges of different tasks are
        // disjoint, so no two threads touch the same element. `out.0.add(j0)` stays inside
        // `c` because j0 < n.
        unsafe { kernel(alpha, a, b.columns(j0, width), beta, out.0.add(j0), n) };
    });
}

/// A raw output pointer shared by the tasks of one `gemm_into`.
struct SendPtr<T>(*mut T);
// SAFETY: the pointer is only dereferenced inside `gemm_into`, by tasks that write disjoint
// column blocks of a buffer that outlives them (see the SAFETY note there).
unsafe impl<T: Send> Send for SendPtr<T> {}
// SAFETY: as above; sharing the pointer value between tasks is what lets each reach its block.
unsafe impl<T: Send> Sync for SendPtr<T> {}

/// The one call into `matrixmultiply`: `c = alpha · a · b + beta · c` for an `a.rows ×
/// b.cols` output at `c` with row stride `rsc` and column stride 1.
///
/// # Safety
/// `c` must point to `a.rows` rows of `b.cols` writable elements spaced `rsc` apart, not
/// aliased by anything else for the duration of the call; `a.cols == b.rows`, and all of
/// `a.rows`, `a.cols`, `b.cols` are non-zero.
unsafe fn kernel<T: Float>(
    alpha: T,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: T,
    c: *mut T,
    rsc: usize,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // The views were bounds-checked when built (`MatRef::strided`); re-check in debug builds.
    debug_assert!(a.last() < a.data.len() && b.last() < b.data.len());
    let a_ptr = a.data[a.offset..].as_ptr();
    let b_ptr = b.data[b.offset..].as_ptr();
    let (rsa, csa) = (a.row_stride as isize, a.col_stride as isize);
    let (rsb, csb) = (b.row_stride as isize, b.col_stride as isize);
    let (rsc, csc) = (rsc as isize, 1isize);
    // SAFETY: (1) `T::DTYPE` is `F32` only for `T = f32` and `F64` only for `T = f64` (the two
    // `Float` impls in element.rs), so each pointer cast is a cast to the pointee's own type.
    // (2) Every element `a` and `b` address, up to (m-1, k-1) and (k-1, n-1), lies inside their
    // slices: `MatRef`'s constructors check it. (3) The caller guarantees `c` is valid and
    // unaliased for the m×n block with strides (rsc, 1); `a` and `b` are only read, so even if
    // they alias each other that is fine. (4) m, k, n > 0 (caller).
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
                c.cast::<f32>(),
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
                c.cast::<f64>(),
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
    MatRef::strided(
        &t.data[..],
        offset,
        t.shape[r - 2],
        t.shape[r - 1],
        t.strides[r - 2],
        t.strides[r - 1],
    )
}

/// Below this many multiply-adds a batched matmul runs its batch on one thread.
const PARALLEL_BATCH_MACS: usize = 1 << 18;

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
        // Every element is written (`gemm_into` with beta 0 ignores what was there): no memset.
        let mut out = crate::pool::Buffer::for_overwrite(numel(&batch) * m * n).into_vec();
        let one = |(i, c): (usize, &mut [T])| {
            gemm_into(
                T::ONE,
                mat(&a, a_offsets[i]),
                mat(&b, b_offsets[i]),
                T::ZERO,
                c,
            );
        };
        if m * n > 0 {
            if a_offsets.len() > 1 && a_offsets.len() * m * n * k >= PARALLEL_BATCH_MACS {
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
