//! Reductions over one axis, several, or all: `sum mean max min argmax argmin`, and `sum_to`
//! (the "undo broadcasting" reduction that every broadcasting op's backward ends with).
//!
//! Each output element is reduced on one thread, so a result never depends on how many threads
//! ran: sequentially in row-major order of the reduced axes, except that `sum` and `mean` over
//! a contiguous run add it in [`LANES`] interleaved partial sums (see [`sum_run`]).

use crate::element::{Element, Float};
use rayon::prelude::*;

use crate::ops::fill;
use crate::pool::Buffer;
use crate::shape::{numel, resolve_dim, shape_panic, Dim};
use crate::simd::{with_simd, SimdWork};
use crate::tensor::{StridedIter, Tensor};

impl<T: Element> Tensor<T> {
    /// The core of every reduction: folds the elements of each slice along `axes` with `step`,
    /// starting from `init`, then applies `finish(acc, count)`. With `run`, a slice that is a
    /// contiguous run of memory is folded by `run` instead.
    #[track_caller]
    #[allow(clippy::too_many_arguments)]
    fn reduce<D: Dim, A: Copy + Send + Sync, U: Element>(
        &self,
        op: &str,
        axes: &[D],
        keepdim: bool,
        init: A,
        step: impl Fn(A, T, usize) -> A + Sync,
        run: Option<fn(&[T]) -> A>,
        finish: impl Fn(A, usize) -> U + Sync,
    ) -> Tensor<U> {
        let rank = self.rank();
        let mut reduced = vec![false; rank];
        for &a in axes {
            let d = resolve_dim(op, a, rank);
            if reduced[d] {
                shape_panic(op, format_args!("dim {d} appears twice in {axes:?}"));
            }
            reduced[d] = true;
        }
        // Kept dims first, reduced dims last: each output then reads one contiguous run of the
        // permuted view's row-major order.
        let order: Vec<usize> = (0..rank)
            .filter(|&d| !reduced[d])
            .chain((0..rank).filter(|&d| reduced[d]))
            .collect();
        let view = self.permute(&order);
        let kept: Vec<usize> = (0..rank).filter(|&d| !reduced[d]).collect();
        let inner: usize = (0..rank)
            .filter(|&d| reduced[d])
            .map(|d| self.shape[d])
            .product();
        let n_out: usize = kept.iter().map(|&d| self.shape[d]).product();
        let runs = run.zip(view.as_slice());
        let shape: Vec<usize> = if keepdim {
            (0..rank)
                .map(|d| if reduced[d] { 1 } else { self.shape[d] })
                .collect()
        } else {
            kept.iter().map(|&d| self.shape[d]).collect()
        };
        // Reducing the leading dims of a contiguous tensor (a bias gradient's `[N, C] → [C]`):
        // each output still folds its elements in order, but row after row, so that a pass
        // reads each row once and updates a block of outputs at a time (vectorised), instead
        // of gathering each output's elements one by one.
        let leading = (0..rank).all(|d| reduced[d] || (d + 1..rank).all(|e| !reduced[e]));
        if let (Some(data), true, None, true) = (self.as_slice(), leading, runs, n_out > 1) {
            // Blocks of columns, whatever the number of rows, so that each pass over a row
            // updates a block worth a vector loop (a block per task on several threads).
            let block = |(b, chunk): (usize, &mut [U])| {
                let start = b * COLUMN_BLOCK;
                let mut acc = vec![init; chunk.len()];
                for (r, row) in data.chunks_exact(n_out).enumerate() {
                    let row = &row[start..start + chunk.len()];
                    with_simd(FoldRow(&mut acc, row, &step, r));
                }
                for (o, a) in chunk.iter_mut().zip(acc) {
                    *o = finish(a, inner);
                }
            };
            let mut out = Buffer::zeroed(n_out).into_vec();
            // Split from 2^20 elements, as elementwise ops: below, waking the other thread
            // costs more than these vectorised passes (a [64, 2048] sum: 13 µs on one thread).
            let split = n_out * inner >= 1 << 20 && rayon::current_num_threads() > 1;
            match split {
                true => out.par_chunks_mut(COLUMN_BLOCK).enumerate().for_each(block),
                false => out.chunks_mut(COLUMN_BLOCK).enumerate().for_each(block),
            }
            return Tensor::from_contiguous(out, shape);
        }
        let out = fill(n_out, inner, |chunk, start| {
            if let Some((run, data)) = runs {
                // Each output reads a contiguous run of the view.
                let data = &data[start * inner..(start + chunk.len()) * inner];
                for (o, xs) in chunk.iter_mut().zip(data.chunks_exact(inner.max(1))) {
                    *o = finish(run(xs), inner);
                }
                if inner == 0 {
                    chunk.iter_mut().for_each(|o| *o = finish(init, 0));
                }
                return;
            }
            let mut it = StridedIter::new(&view.shape, &view.strides, view.offset, start * inner);
            for o in chunk.iter_mut() {
                let mut acc = init;
                for k in 0..inner {
                    acc = step(acc, view.data[it.next().unwrap()], k);
                }
                *o = finish(acc, inner);
            }
        });
        Tensor::from_contiguous(out, shape)
    }

    #[track_caller]
    fn check_not_empty<D: Dim>(&self, op: &str, axes: &[D]) {
        let empty = axes
            .iter()
            .any(|&a| self.shape[resolve_dim(op, a, self.rank())] == 0);
        if empty {
            shape_panic(
                op,
                format_args!(
                    "cannot reduce over an empty dim of shape {:?} (axes {axes:?})",
                    self.shape
                ),
            );
        }
    }

    fn all_axes(&self) -> Vec<usize> {
        (0..self.rank()).collect()
    }
}

/// Outputs per block of a reduction over leading dims.
const COLUMN_BLOCK: usize = 256;

/// One row of a reduction over leading dims: `acc[j] = step(acc[j], row[j], r)`.
struct FoldRow<'a, A, T, F>(&'a mut [A], &'a [T], &'a F, usize);

impl<A: Copy, T: Element, F: Fn(A, T, usize) -> A> SimdWork for FoldRow<'_, A, T, F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let FoldRow(acc, row, step, r) = self;
        for (a, &x) in acc.iter_mut().zip(row) {
            *a = step(*a, x, r);
        }
    }
}

/// Partial sums [`sum_run`] keeps: 16 f32 fill one 512-bit register, and as many independent
/// additions in flight hide the adder's latency (one chain of additions took 4.5% of the
/// small LSTM's training step).
pub const LANES: usize = 16;

/// The sum of a contiguous run: element `i` goes to partial sum `i % LANES`, the partial sums
/// are added pairwise, then the elements past the last full group of [`LANES`], in order.
/// Deterministic, and closer to the exact sum than one chain (PyTorch sums in lanes too).
///
/// ```
/// use tensor::ops::reduce::sum_run;
/// let xs: Vec<f64> = (1..=40).map(f64::from).collect();
/// assert_eq!(sum_run(&xs), 820.0);
/// ```
pub fn sum_run<T: Float>(xs: &[T]) -> T {
    let mut lanes = [T::ZERO; LANES];
    let groups = xs.chunks_exact(LANES);
    let rest = groups.remainder();
    for group in groups {
        for (acc, &x) in lanes.iter_mut().zip(group) {
            *acc += x;
        }
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
    }
    rest.iter().fold(lanes[0], |acc, &x| acc + x)
}

impl<T: Float> Tensor<T> {
    /// Sum over `axes`; with `keepdim` the reduced dims stay as size 1.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    /// assert_eq!(x.sum(&[1], false).to_vec(), vec![6.0, 15.0]);
    /// assert_eq!(x.sum(&[0], true).shape(), &[1, 3]);
    /// ```
    #[track_caller]
    pub fn sum<D: Dim>(&self, axes: &[D], keepdim: bool) -> Self {
        self.reduce(
            "sum",
            axes,
            keepdim,
            T::ZERO,
            |a, x, _| a + x,
            Some(sum_run),
            |a, _| a,
        )
    }

    /// Sum of all elements, as a 0-d tensor.
    pub fn sum_all(&self) -> Self {
        self.sum(&self.all_axes(), false)
    }

    /// Mean over `axes` (NaN over an empty axis, as in PyTorch).
    #[track_caller]
    pub fn mean<D: Dim>(&self, axes: &[D], keepdim: bool) -> Self {
        self.reduce(
            "mean",
            axes,
            keepdim,
            T::ZERO,
            |a, x, _| a + x,
            Some(sum_run),
            |a, n| a / T::from_f64(n as f64),
        )
    }

    /// Mean of all elements, as a 0-d tensor.
    pub fn mean_all(&self) -> Self {
        self.mean(&self.all_axes(), false)
    }

    /// Maximum over `axes`; NaN if any element is NaN.
    ///
    /// # Panics
    /// If a reduced dim is empty.
    #[track_caller]
    pub fn max<D: Dim>(&self, axes: &[D], keepdim: bool) -> Self {
        self.check_not_empty("max", axes);
        self.reduce(
            "max",
            axes,
            keepdim,
            T::NEG_INFINITY,
            // `a >= NaN` is false, so a NaN is taken and then kept.
            |a, x, _| if a.is_nan() || a >= x { a } else { x },
            None,
            |a, _| a,
        )
    }

    /// Maximum of all elements, as a 0-d tensor.
    #[track_caller]
    pub fn max_all(&self) -> Self {
        self.max(&self.all_axes(), false)
    }

    /// Minimum over `axes`; NaN if any element is NaN.
    ///
    /// # Panics
    /// If a reduced dim is empty.
    #[track_caller]
    pub fn min<D: Dim>(&self, axes: &[D], keepdim: bool) -> Self {
        self.check_not_empty("min", axes);
        self.reduce(
            "min",
            axes,
            keepdim,
            T::INFINITY,
            |a, x, _| if a.is_nan() || a <= x { a } else { x },
            None,
            |a, _| a,
        )
    }

    /// Minimum of all elements, as a 0-d tensor.
    #[track_caller]
    pub fn min_all(&self) -> Self {
        self.min(&self.all_axes(), false)
    }

    /// Index of the maximum along `dim` (the first one on ties; a NaN counts as the maximum,
    /// as in PyTorch).
    ///
    /// # Panics
    /// If that dim is empty.
    #[track_caller]
    pub fn argmax<D: Dim>(&self, dim: D, keepdim: bool) -> Tensor<i64> {
        self.arg_extreme("argmax", dim, keepdim, |x, best| x > best)
    }

    /// Index of the minimum along `dim` (the first one on ties; a NaN counts as the minimum).
    ///
    /// # Panics
    /// If that dim is empty.
    #[track_caller]
    pub fn argmin<D: Dim>(&self, dim: D, keepdim: bool) -> Tensor<i64> {
        self.arg_extreme("argmin", dim, keepdim, |x, best| x < best)
    }

    #[track_caller]
    fn arg_extreme<D: Dim>(
        &self,
        op: &str,
        dim: D,
        keepdim: bool,
        better: impl Fn(T, T) -> bool + Sync,
    ) -> Tensor<i64> {
        self.check_not_empty(op, &[dim]);
        self.reduce(
            op,
            &[dim],
            keepdim,
            (T::ZERO, 0usize),
            |(best, at), x, k| {
                let take = k == 0 || (!best.is_nan() && (x.is_nan() || better(x, best)));
                if take {
                    (x, k)
                } else {
                    (best, at)
                }
            },
            None,
            |(_, at), _| at as i64,
        )
    }

    /// Sums this tensor down to `shape`, the reverse of broadcasting `shape` up to this
    /// tensor's shape: leading extra dims are summed away, and dims where `shape` has 1 are
    /// summed with `keepdim`. This is the last step of every broadcasting op's backward.
    ///
    /// # Panics
    /// If `shape` does not broadcast to this tensor's shape.
    #[track_caller]
    pub fn sum_to(&self, shape: &[usize]) -> Self {
        if shape == self.shape() {
            return self.clone();
        }
        let rank = self.rank();
        if shape.len() > rank {
            crate::shape::broadcast_panic("sum_to", shape, &self.shape);
        }
        let lead = rank - shape.len();
        let mut axes: Vec<usize> = (0..lead).collect();
        for (i, &n) in shape.iter().enumerate() {
            if n == 1 && self.shape[lead + i] != 1 {
                axes.push(lead + i);
            } else if n != self.shape[lead + i] {
                crate::shape::broadcast_panic("sum_to", shape, &self.shape);
            }
        }
        let summed = self.sum(&axes, true);
        debug_assert_eq!(numel(&summed.shape), numel(shape));
        summed.reshape(shape)
    }
}
