//! Products against a right-hand side packed once and used many times.
//!
//! The recurrent matmul `h_{t−1} · W_hhᵀ` multiplies the same weights at every time step, by
//! a thin left side (`batch` rows). A general gemm repacks the weights on every call, which
//! for a batch of 32 costs as much as the arithmetic; here they are packed once per sequence
//! into a [`PackedMat`], and [`gemm_packed`] and its variants multiply by it.
//!
//! # Layout
//!
//! The `k × n` matrix is cut into panels of [`NR`] columns (the last zero-padded), each stored
//! row after row: `data[(p·k + kk)·NR + j] = B[kk, p·NR + j]`. A panel of `k` rows is
//! `k · NR` elements (32 KB for k = 256, f32), so it stays in L1 while every row block of the
//! left side streams past it. Larger panels stream from L2 for each row block; there is no
//! blocking over `k`.
//!
//! # Where things are
//!
//! - This file: packing ([`PackedMat`]), the entry points ([`gemm_packed`],
//!   [`gemm_packed_cat`], [`gemm_packed_panels`], [`gemm_packed_tn`]), which check shapes and
//!   split large products across threads, and the choice of micro-kernel for the instruction
//!   set [`with_simd`] runs on.
//! - `kernel.rs`: the micro-kernel. It keeps a block of the output in registers (rows × a
//!   whole panel on AVX-512, rows × half a panel or less elsewhere) and adds one rank-1
//!   update per `kk`, reading a row-major left side from a copy regrouped by row blocks.
//! - `tests.rs`: every entry point and every block shape against a naive triple loop.
//!
//! # Invariants
//!
//! - Every output element is one chain of multiply-adds over `kk = 0..k` in order, whichever
//!   thread, row block or panel range computed it: splitting a product by rows, by panels or
//!   its left side by columns changes no bits, so results never depend on the thread count.
//! - The padding columns of the last panel are zeros and are never written to `c`.

mod kernel;
#[cfg(test)]
mod tests;

use std::ops::Range;

use rayon::prelude::*;

use crate::element::{Element, Float};
use crate::ops::matmul::MatRef;
use crate::pool::Buffer;
use crate::shape::shape_panic;
use crate::simd::{simd_has_fma, simd_vector_bytes, with_simd, SimdWork};

use kernel::{panels_body, Left, MR, MR_NARROW, MR_WIDE};

/// Columns per panel: two 512-bit (or four 256-bit) registers of f32.
pub const NR: usize = 32;
/// Below this many multiply-adds a product runs on one thread. Measured on 2 cores: splitting
/// the per-step recurrent product ([32, 256] × [256, 768] up to [64, 512] × [512, 2048]) made
/// whole GRU and RNN sequences slower, because each step's fork/join (with the gate arithmetic
/// between steps leaving the workers idle) costs more than half the product; so only products
/// far larger than one RNN step split.
const PARALLEL_MACS: usize = 1 << 27;

/// A `k × n` matrix packed in column panels for [`gemm_packed`].
#[derive(Clone, Debug)]
pub struct PackedMat<T: Element> {
    k: usize,
    n: usize,
    /// Pooled: a layer packs its weights on every call (see [`crate::pool`]).
    data: Buffer<T>,
}

impl<T: Float> PackedMat<T> {
    /// Packs `b` (any strides; `w.t()` packs a transpose).
    pub fn pack(b: MatRef<'_, T>) -> Self {
        Self::pack_stacked(&[b])
    }

    /// Packs the matrices `parts`, all as wide, stacked one above the next: `[W_ih | W_hh]ᵀ`
    /// as `[W_ihᵀ; W_hhᵀ]` without joining `W_ih` and `W_hh` first.
    ///
    /// ```
    /// use tensor::ops::matmul::MatRef;
    /// use tensor::ops::packed::{gemm_packed, PackedMat};
    /// let (top, bottom) = ([1.0f32, 2.0], [3.0, 4.0, 5.0, 6.0]); // [1, 2] over [2, 2]
    /// let stacked = PackedMat::pack_stacked(&[MatRef::new(&top, 1, 2), MatRef::new(&bottom, 2, 2)]);
    /// let mut c = [0.0f32; 2];
    /// gemm_packed(&[1.0, 1.0, 1.0], 1, &stacked, 0.0, &mut c); // the sums of the columns
    /// assert_eq!(c, [9.0, 12.0]);
    /// ```
    ///
    /// # Panics
    /// If `parts` is empty or the parts differ in width.
    pub fn pack_stacked(parts: &[MatRef<'_, T>]) -> Self {
        let n = parts.first().expect("something to pack").cols();
        if let Some(other) = parts.iter().find(|b| b.cols() != n) {
            shape_panic(
                "PackedMat::pack_stacked",
                format_args!("parts {n} and {} columns wide", other.cols()),
            );
        }
        let k: usize = parts.iter().map(MatRef::rows).sum();
        let panels = n.div_ceil(NR);
        let mut data = Buffer::zeroed(panels * k * NR);
        for p in 0..panels {
            let (panel, width) = (&mut data[p * k * NR..(p + 1) * k * NR], NR.min(n - p * NR));
            let mut top = 0; // the panel's first row for this part
            for b in parts {
                let rows = &mut panel[top * NR..(top + b.rows()) * NR];
                top += b.rows();
                if b.column(0).is_some() {
                    // A transposed weight (`w.t()`, the usual case): each column is a row of
                    // `w`, read in order rather than element by element through `get`.
                    for j in 0..width {
                        let column = b.column(p * NR + j).expect("adjacent columns");
                        for (kk, &v) in column.iter().enumerate() {
                            rows[kk * NR + j] = v;
                        }
                    }
                    continue;
                }
                for (kk, row) in rows.chunks_exact_mut(NR).enumerate() {
                    match b.row(kk) {
                        // A row-major part (`W_hh` for the backward's `dP_t W_hh`): a copy.
                        Some(full) => row[..width].copy_from_slice(&full[p * NR..p * NR + width]),
                        None => {
                            for (j, x) in row.iter_mut().enumerate().take(width) {
                                *x = b.get(kk, p * NR + j);
                            }
                        }
                    }
                }
            }
        }
        PackedMat { k, n, data }
    }

    /// Packs the `k × n` matrix whose row `kk` is `row(kk)` (`n` long), or zeros where that
    /// is `None`: a matrix gathered from rows that lie in different places, like the hidden
    /// states entering each step (`h0` at a sequence's first step, an output after).
    ///
    /// ```
    /// use tensor::ops::packed::{gemm_packed, PackedMat};
    /// let (h0, out) = ([1.0f32, 2.0], [3.0, 4.0]);
    /// let packed = PackedMat::from_rows(3, 2, |kk| [Some(&h0[..]), None, Some(&out[..])][kk]);
    /// let mut c = [0.0f32; 2];
    /// gemm_packed(&[1.0, 1.0, 1.0], 1, &packed, 0.0, &mut c); // the sums of the columns
    /// assert_eq!(c, [4.0, 6.0]);
    /// ```
    ///
    /// # Panics
    /// If a row is not `n` long.
    pub fn from_rows<'r>(k: usize, n: usize, row: impl Fn(usize) -> Option<&'r [T]>) -> Self {
        let panels = n.div_ceil(NR);
        let mut data = Buffer::zeroed(panels * k * NR);
        for kk in 0..k {
            let Some(full) = row(kk) else { continue };
            if full.len() != n {
                shape_panic(
                    "PackedMat::from_rows",
                    format_args!("row {kk} has {} elements, not {n}", full.len()),
                );
            }
            for (p, part) in full.chunks(NR).enumerate() {
                let at = (p * k + kk) * NR;
                data[at..at + part.len()].copy_from_slice(part);
            }
        }
        PackedMat { k, n, data }
    }

    /// Rows of the packed matrix.
    pub fn rows(&self) -> usize {
        self.k
    }

    /// Columns of the packed matrix.
    pub fn cols(&self) -> usize {
        self.n
    }

    /// Number of column panels, `⌈cols / NR⌉`.
    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }
}

/// `c = a · b + beta · c` for a row-major `m × k` slice `a`, a packed `k × n` matrix `b` and a
/// row-major `m × n` slice `c`. Large products split their rows across rayon threads, in
/// blocks that depend only on `m`, so results never depend on the thread count.
///
/// ```
/// use tensor::ops::matmul::MatRef;
/// use tensor::ops::packed::{gemm_packed, PackedMat};
/// let w = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]; // [[1, 2, 3], [4, 5, 6]]
/// let packed = PackedMat::pack(MatRef::new(&w, 2, 3));
/// let mut c = [0.0f32; 3];
/// gemm_packed(&[1.0, 1.0], 1, &packed, 0.0, &mut c); // [1, 1] · w
/// assert_eq!(c, [5.0, 7.0, 9.0]);
/// ```
///
/// # Panics
/// If `a` is not `m × k` or `c` not `m × n`.
#[track_caller]
pub fn gemm_packed<T: Float>(a: &[T], m: usize, b: &PackedMat<T>, beta: T, c: &mut [T]) {
    gemm_packed_cat([a, &[]], m, b, beta, c);
}

/// [`gemm_packed`] for a left side given as two blocks of columns: row `r` of the left side
/// is row `r` of `a[0]` (`m × k₀`) followed by row `r` of `a[1]` (`m × k₁`), with
/// `k₀ + k₁ = k`. A recurrent step's `[x_t | h] [W_ih | W_hh]ᵀ` without copying `x_t` and `h`
/// side by side first; the result has the bits of the product of the joined matrix (each
/// element is the same chain of multiply-adds, over `k` in order).
///
/// ```
/// use tensor::ops::matmul::MatRef;
/// use tensor::ops::packed::{gemm_packed, gemm_packed_cat, PackedMat};
/// let w: Vec<f32> = (0..5 * 3).map(|i| i as f32).collect(); // [5, 3]
/// let packed = PackedMat::pack(MatRef::new(&w, 5, 3));
/// let (x, h) = ([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]); // [2, 2], [2, 3]
/// let mut joined = [0.0f32; 6];
/// gemm_packed(&[1.0, 2.0, 5.0, 6.0, 7.0, 3.0, 4.0, 8.0, 9.0, 10.0], 2, &packed, 0.0, &mut joined);
/// let mut c = [0.0f32; 6];
/// gemm_packed_cat([&x, &h], 2, &packed, 0.0, &mut c);
/// assert_eq!(c, joined);
/// ```
///
/// # Panics
/// If `a[0]` and `a[1]` do not have `m` rows between them `k` wide, or `c` is not `m × n`.
#[track_caller]
pub fn gemm_packed_cat<T: Float>(a: [&[T]; 2], m: usize, b: &PackedMat<T>, beta: T, c: &mut [T]) {
    let (k, n) = (b.k, b.n);
    let k0 = a[0].len().checked_div(m).unwrap_or(0);
    if a[0].len() != m * k0 || a[1].len() + a[0].len() != m * k || c.len() != m * n {
        shape_panic(
            "gemm_packed",
            format_args!(
                "a has {} + {} elements for {m}x{k}, c has {} for {m}x{n}",
                a[0].len(),
                a[1].len(),
                c.len()
            ),
        );
    }
    let ks = [k0, k - k0];
    // Split by blocks of output rows: each block is a contiguous piece of `c`, computed as on
    // one thread (the arithmetic of an element does not depend on its block). The block size
    // depends only on `m`, never on the thread count.
    let rows_per_block = m.div_ceil(4).next_multiple_of(MR_WIDE);
    // On one thread, blocks would only re-read `b` once per block.
    if m * n * k < PARALLEL_MACS || m <= rows_per_block || rayon::current_num_threads() == 1 {
        with_simd(Panels {
            left: Left::Rows { a, ks },
            m,
            b,
            panels: 0..b.panels(),
            beta,
            c,
            ldc: n,
        });
        return;
    }
    c.par_chunks_mut(rows_per_block * n)
        .enumerate()
        .for_each(|(i, c_rows)| {
            let rows = (i * rows_per_block)..(i * rows_per_block + c_rows.len() / n);
            let a = [0, 1].map(|p| &a[p][rows.start * ks[p]..rows.end * ks[p]]);
            with_simd(Panels {
                left: Left::Rows { a, ks },
                m: rows.len(),
                b,
                panels: 0..b.panels(),
                beta,
                c: c_rows,
                ldc: n,
            });
        });
}

/// Like [`gemm_packed`] for the output columns of panels `panels` only (panel `p` holds
/// columns `p·NR .. (p + 1)·NR`), on the calling thread: `c` holds `m` rows `ldc` apart
/// (the last may stop at the panels' width) and receives those columns from its column 0 on,
/// so passing `&mut c[j..]` of a wider matrix writes its columns `j..`. The arithmetic of each
/// element is the same as in [`gemm_packed`], so splitting a product by panels across threads
/// changes no bits.
///
/// ```
/// use tensor::ops::matmul::MatRef;
/// use tensor::ops::packed::{gemm_packed, gemm_packed_panels, PackedMat, NR};
/// let w: Vec<f32> = (0..3 * 40).map(|i| i as f32).collect(); // [3, 40]: two panels
/// let packed = PackedMat::pack(MatRef::new(&w, 3, 40));
/// let a = [1.0, -1.0, 2.0];
/// let mut whole = vec![0.0; 40];
/// gemm_packed(&a, 1, &packed, 0.0, &mut whole);
/// let mut second = vec![0.0; 40 - NR];
/// gemm_packed_panels(&a, 1, &packed, 1..2, 0.0, &mut second, 40 - NR);
/// assert_eq!(second, whole[NR..]);
/// ```
///
/// # Panics
/// If `a` is not `m × k`, the panels are out of range, `ldc` is less than the panels' width
/// or `c` is too short for `m` rows.
#[track_caller]
pub fn gemm_packed_panels<T: Float>(
    a: &[T],
    m: usize,
    b: &PackedMat<T>,
    panels: Range<usize>,
    beta: T,
    c: &mut [T],
    ldc: usize,
) {
    let width = (panels.end * NR).min(b.n).saturating_sub(panels.start * NR);
    let c_needed = if m == 0 { 0 } else { (m - 1) * ldc + width };
    if a.len() != m * b.k || panels.end > b.panels() || c.len() < c_needed || ldc < width {
        shape_panic(
            "gemm_packed_panels",
            format_args!(
                "a has {} elements for {m}x{}, panels {panels:?} of {}, c has {} for {m}x{ldc} \
                 ({width} columns wide)",
                a.len(),
                b.k,
                b.panels(),
                c.len()
            ),
        );
    }
    with_simd(Panels {
        left: Left::Rows {
            a: [a, &[]],
            ks: [b.k, 0],
        },
        m,
        b,
        panels,
        beta,
        c,
        ldc,
    });
}

/// `c = aᵀ · b + beta · c` for the columns `cols` of a row-major `k × lda` slice `a` (so the
/// left side is `cols.len() × k`), a packed `k × n` matrix `b` and a row-major
/// `cols.len() × n` slice `c`, on the calling thread. A weight gradient `dPᵀ X` (`dP`
/// `[T·B, G·H]`) reads `dP` where it is: the micro-kernel broadcasts `dP[kk, r]` for the `r`
/// of its block, adjacent in memory, as it would `a[r, kk]` of a row-major left side. Meant
/// for products whose operands fit in the L2 cache (there is no blocking over `k`); each
/// element is a chain of multiply-adds over `kk` in order, so splitting `cols` changes no bits.
///
/// ```
/// use tensor::ops::matmul::MatRef;
/// use tensor::ops::packed::{gemm_packed_tn, PackedMat};
/// let dp = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]; // [3, 2]
/// let x = [1.0f32, 0.0, 1.0]; // [3, 1]
/// let packed = PackedMat::pack(MatRef::new(&x, 3, 1));
/// let mut c = [0.0f32; 2];
/// gemm_packed_tn(&dp, 2, 0..2, &packed, 0.0, &mut c); // dpᵀ x
/// assert_eq!(c, [6.0, 8.0]);
/// ```
///
/// # Panics
/// If `a` is not `k × lda` with `cols` inside it, or `c` is not `cols.len() × n`.
#[track_caller]
pub fn gemm_packed_tn<T: Float>(
    a: &[T],
    lda: usize,
    cols: Range<usize>,
    b: &PackedMat<T>,
    beta: T,
    c: &mut [T],
) {
    let (k, n, m) = (b.k, b.n, cols.len());
    if a.len() != k * lda || cols.end > lda || c.len() != m * n {
        shape_panic(
            "gemm_packed_tn",
            format_args!(
                "a has {} elements for {k}x{lda} (columns {cols:?}), c has {} for {m}x{n}",
                a.len(),
                c.len()
            ),
        );
    }
    with_simd(Panels {
        left: Left::Columns {
            a,
            lda,
            first: cols.start,
        },
        m,
        b,
        panels: 0..b.panels(),
        beta,
        c,
        ldc: n,
    });
}

/// The arguments of [`panels_body`], as work for [`with_simd`], whose `run` picks the
/// micro-kernel (the block shape, and whether to use FMA) for the instruction set that
/// `with_simd` compiles it for.
struct Panels<'a, T: Element> {
    left: Left<'a, T>,
    m: usize,
    b: &'a PackedMat<T>,
    panels: Range<usize>,
    beta: T,
    c: &'a mut [T],
    ldc: usize,
}

impl<T: Float> SimdWork for Panels<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        // FMA only where the CPU has it: the portable build would call a slow libm `fma`.
        // Blocks are `ROWS` rows by `W` columns of a panel; `W` is a whole panel on AVX-512,
        // two vectors elsewhere (see `MR_NARROW`).
        let f32 = std::mem::size_of::<T>() == 4;
        match (simd_has_fma(), simd_vector_bytes(), f32) {
            (true, 64, true) => panels_body::<T, true, MR_WIDE, NR>(self),
            (true, 64, false) => panels_body::<T, true, MR, NR>(self),
            (true, _, true) => panels_body::<T, true, MR_NARROW, 16>(self),
            (true, _, false) => panels_body::<T, true, MR_NARROW, 8>(self),
            (false, _, true) => panels_body::<T, false, MR_NARROW, 8>(self),
            (false, _, false) => panels_body::<T, false, MR_NARROW, 4>(self),
        }
    }
}
