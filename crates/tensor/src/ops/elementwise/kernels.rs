//! The two loops every elementwise op runs: a map over a contiguous run ([`MapRow`]) and a
//! binary op over broadcast operands as runs with fixed steps ([`zip_rows`], [`ZipRun`]).
//!
//! Both write into a buffer handed out without zeroing ([`fill_overwrite`]), so each must
//! write every element of its output exactly once: a piece of work is a range of output
//! elements, and the kernel covers all of it. Both run under `with_simd`, compiled for the
//! widest vectors the CPU has, and in the common cases read their operands with step 1 or 0,
//! loops the compiler vectorises. From [`ELEMENTWISE_PARALLEL`] elements (and with more than
//! one thread) the output is cut into pieces of `CHUNK_WORK` elements, a size that depends
//! only on the output's size; an element's value never depends on which piece or thread
//! computes it.

use rayon::prelude::*;

use crate::element::Element;
use crate::ops::CHUNK_WORK;
use crate::pool::Buffer;
use crate::simd::{with_simd, SimdWork};
use crate::tensor::Tensor;

/// Like [`fill`](crate::ops::fill), for work whose every output element is written: the
/// buffer is handed out without zeroing it first (see [`Buffer::for_overwrite`]). Elementwise
/// work is cheap (a fraction of a nanosecond per element, vectorised), so it splits across
/// threads only from [`ELEMENTWISE_PARALLEL`] elements and when there are several: handing
/// work to a sleeping rayon worker takes tens of microseconds, as long as a `[64, 2048]`
/// product of two tensors.
pub(super) fn fill_overwrite<U, F>(n: usize, fill_chunk: F) -> Vec<U>
where
    U: Element,
    F: Fn(&mut [U], usize) + Sync,
{
    let mut out = Buffer::for_overwrite(n).into_vec();
    if n < ELEMENTWISE_PARALLEL || rayon::current_num_threads() < 2 {
        fill_chunk(&mut out, 0);
    } else {
        out.par_chunks_mut(CHUNK_WORK)
            .enumerate()
            .for_each(|(i, piece)| fill_chunk(piece, i * CHUNK_WORK));
    }
    out
}

/// Below this many elements an elementwise op runs on the calling thread.
const ELEMENTWISE_PARALLEL: usize = 1 << 20;

/// `out[k] = f(x[k])` over a contiguous run, compiled for the widest vectors.
pub(super) struct MapRow<'a, T, U, F>(pub(super) &'a mut [U], pub(super) &'a [T], pub(super) &'a F);

impl<T: Element, U: Element, F: Fn(T) -> U> SimdWork for MapRow<'_, T, U, F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let MapRow(out, x, f) = self;
        let n = out.len();
        for (o, &v) in out.iter_mut().zip(&x[..n]) {
            *o = f(v);
        }
    }
}

/// `f(a, b)` over `shape`, both operands broadcast to it, as runs along the innermost
/// dimension: the dimensions are merged where both operands step through them evenly (a
/// contiguous `[N, C]` and a bias `[C]` are N runs of C, a same-shape pair one run of N·C),
/// and each run reads its operands with a fixed step, 1 or 0 (broadcast) in the common cases,
/// which are loops the compiler vectorises. Each element is `f` of the same two values
/// whatever the run or the thread, so the bits never depend on either.
pub(super) fn zip_rows<T, U, V, F>(a: &Tensor<T>, b: &Tensor<U>, shape: &[usize], f: &F) -> Vec<V>
where
    T: Element,
    U: Element,
    V: Element,
    F: Fn(T, U) -> V + Sync,
{
    let (a, b) = (a.broadcast_to(shape), b.broadcast_to(shape));
    let dims = merged_dims(shape, [&a.strides, &b.strides]);
    let ((run, [sa, sb]), outer) = match dims.split_last() {
        Some((last, outer)) => (*last, outer),
        None => ((1, [0, 0]), &[][..]), // a scalar
    };
    let (da, db) = (&a.data[..], &b.data[..]);
    fill_overwrite(crate::shape::numel(shape), |chunk, start| {
        let (mut row, mut at, mut done) = (start / run.max(1), start % run.max(1), 0);
        while done < chunk.len() {
            // Where this row of runs starts in each operand.
            let (mut oa, mut ob, mut rest) = (a.offset, b.offset, row);
            for &(size, [ta, tb]) in outer.iter().rev() {
                let i = rest % size;
                rest /= size;
                oa += i * ta;
                ob += i * tb;
            }
            let len = (run - at).min(chunk.len() - done);
            let out = &mut chunk[done..done + len];
            let (xa, xb) = (&da[oa + at * sa..], &db[ob + at * sb..]);
            with_simd(ZipRun {
                out,
                a: xa,
                sa,
                b: xb,
                sb,
                f,
            });
            done += len;
            (row, at) = (row + 1, 0);
        }
    })
}

/// The dimensions of `shape` (size-1 ones dropped) as `(size, [stride of each operand])`,
/// outermost first, with each dimension merged into the next inner one where every operand's
/// stride over it is the inner one's stride times the inner one's size.
fn merged_dims(shape: &[usize], strides: [&[usize]; 2]) -> Vec<(usize, [usize; 2])> {
    let mut dims: Vec<(usize, [usize; 2])> = Vec::with_capacity(shape.len());
    for d in (0..shape.len()).rev() {
        if shape[d] == 1 {
            continue;
        }
        let st = [strides[0][d], strides[1][d]];
        match dims.last_mut() {
            Some((size, inner)) if (0..2).all(|k| st[k] == inner[k] * *size) => *size *= shape[d],
            _ => dims.push((shape[d], st)),
        }
    }
    dims.reverse();
    dims
}

/// One run of [`zip_rows`]: `out[k] = f(a[k·sa], b[k·sb])`.
struct ZipRun<'a, T, U, V, F> {
    out: &'a mut [V],
    a: &'a [T],
    sa: usize,
    b: &'a [U],
    sb: usize,
    f: &'a F,
}

impl<T: Element, U: Element, V: Element, F: Fn(T, U) -> V> SimdWork for ZipRun<'_, T, U, V, F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let ZipRun {
            out,
            a,
            sa,
            b,
            sb,
            f,
        } = self;
        let n = out.len();
        match (sa, sb) {
            (1, 1) => {
                for ((o, &x), &y) in out.iter_mut().zip(&a[..n]).zip(&b[..n]) {
                    *o = f(x, y);
                }
            }
            (1, 0) => {
                let y = b[0];
                for (o, &x) in out.iter_mut().zip(&a[..n]) {
                    *o = f(x, y);
                }
            }
            (0, 1) => {
                let x = a[0];
                for (o, &y) in out.iter_mut().zip(&b[..n]) {
                    *o = f(x, y);
                }
            }
            _ => {
                for (k, o) in out.iter_mut().enumerate() {
                    *o = f(a[k * sa], b[k * sb]);
                }
            }
        }
    }
}
