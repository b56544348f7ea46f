//! Products against a right-hand side packed once and used many times: the recurrent matmul
//! `h_{t−1} · W_hhᵀ` multiplies the same weights at every time step, by a thin left side
//! (`batch` rows). A general gemm repacks the weights on every call, which for a batch of 32
//! costs as much as the arithmetic; here they are packed once per sequence.
//!
//! Layout: the `k × n` matrix is cut into panels of [`NR`] columns (the last zero-padded),
//! each stored row after row: `data[(p·k + kk)·NR + j] = B[kk, p·NR + j]`. A panel of `k`
//! rows is `k · NR` elements (32 KB for k = 256, f32), so it stays in L1 while every row
//! block of the left side streams past it. Larger panels stream from L2 for each row block:
//! on an AVX-512 EPYC (Zen 4), one thread, the large LSTM's step `[64, 768] × [768, 2048]`
//! runs at 95 GFLOP/s against 104 for the medium one's `k = 384` (`benches/matmul.rs`).
//! Cutting `k` into chunks of 128, 192 or 256 rows (each row block's sums waiting in `c`
//! between chunks) did not win that back but was slower still: 95 → 76–92 GFLOP/s there, and
//! `[64, 512] × [512, 2048]` 99–103 → 85–89. The micro-kernel keeps a block of the
//! output in registers (rows × a whole panel on AVX-512, rows × half a panel on AVX2) and
//! adds one rank-1 update per `kk`, reading a row-major left side from a copy regrouped by
//! row blocks.

use std::ops::Range;

use rayon::prelude::*;

use crate::element::{Element, Float};
use crate::ops::matmul::MatRef;
use crate::pool::Buffer;
use crate::shape::shape_panic;
use crate::simd::{simd_has_fma, simd_vector_bytes, with_simd, SimdWork};

/// Columns per panel: two 512-bit (or four 256-bit) registers of f32.
pub const NR: usize = 32;
/// Rows of the output block the micro-kernel keeps in registers: `MR × NR` accumulators.
/// Eight rows of f32 on AVX-512 (16 of its 32 vector registers): measured on the per-step
/// products `[64, 512] × [512, 2048]` and `[32, 256] × [256, 1024]`, 240–248 GFLOP/s against
/// 200–215 with four rows, whose eight accumulators leave the FMA units waiting on their
/// latency. Four rows of f64 there (also 16 registers). On an AVX-512 EPYC (Zen 4), whose
/// FMA units take 512-bit vectors in two halves, the same block runs `[16, 64] × [64, 256]`
/// to `[64, 512] × [512, 2048]` at 88–105 GFLOP/s, against an FMA peak of about 116 (AVX2's
/// 6 × 16 blocks there: 80–95).
const MR_WIDE: usize = 8;
/// Rows per block for f64 on AVX-512, and the remainder block of every kernel.
const MR: usize = 4;
/// Rows per block where there are only 16 vector registers (AVX2, or the SSE2 baseline):
/// the block is then [`MR_NARROW`] rows by half a panel or less (two vectors wide), 12
/// accumulators, two registers for the panel's row and one for the broadcast left element,
/// as in BLIS's 6 × 16 Haswell kernel. A whole panel row (four AVX2 vectors of f32) by four
/// rows needs all 16 registers for accumulators alone and spills: measured on an AVX2 EPYC
/// (Zen 3), `[16, 64] × [64, 256]` to `[64, 512] × [512, 2048]` at 18–20 GFLOP/s that way.
const MR_NARROW: usize = 6;
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
                    // `w`, read in order rather than element by element through `get`
                    // (packing the medium LSTM's `[W_ih | W_hh]ᵀ`: 2.4% → 1.5% of its forward,
                    // perf).
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
/// so passing `&mut c[j..]` of a wider matrix writes its columns `j..`. The arithmetic of each element is the same as
/// in [`gemm_packed`], so splitting a product by panels across threads changes no bits.
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

/// The left side of a product: row-major, as two blocks of columns (see [`gemm_packed_cat`],
/// `ks` wide), or the transpose of columns `first..` of a row-major `k × lda` matrix (see
/// [`gemm_packed_tn`]). The kernel reads a row-major one from a copy in [`Left::Blocks`].
#[derive(Clone, Copy)]
enum Left<'a, T> {
    Rows {
        a: [&'a [T]; 2],
        ks: [usize; 2],
    },
    Columns {
        a: &'a [T],
        lda: usize,
        first: usize,
    },
    /// Row-major rows regrouped by blocks: the block of `R` rows from row `row` on is stored
    /// column after column at `a[row · k..(row + R) · k]`, element `[r, kk]` at
    /// `row · k + kk · R + r` (see [`pack_left`]). The micro-kernel then reads one run of `R`
    /// adjacent elements per `kk`, with no bounds check and nothing else to keep in a register
    /// (reading `R` row slices in place, the compiler kept their pointers and bounds checks
    /// in the loop and, in the fused LSTM's build, spilled two accumulators: 57 ms
    /// for the medium LSTM forward on an AVX2 EPYC).
    Blocks {
        a: &'a [T],
        k: usize,
    },
}

impl<T: Float> Left<'_, T> {
    /// Rows `row..row + R` of the product by columns `j..j + W` of one panel of `k` rows:
    /// `R × W` sums.
    #[inline(always)]
    fn block<const R: usize, const W: usize, const FMA: bool>(
        &self,
        row: usize,
        panel: &[T],
        j: usize,
    ) -> [[T; W]; R] {
        let mut acc = [[T::ZERO; W]; R];
        match *self {
            Left::Rows { .. } => unreachable!("row-major left sides are read from blocks"),
            Left::Columns { a, lda, first } => {
                let columns = a.chunks_exact(lda).map(|a_kk| &a_kk[first + row..][..R]);
                accumulate::<T, R, W, FMA>(&mut acc, panel, j, columns);
            }
            Left::Blocks { a, k } => {
                let columns = a[row * k..(row + R) * k].chunks_exact(R);
                accumulate::<T, R, W, FMA>(&mut acc, panel, j, columns);
            }
        }
        acc
    }
}

/// The blocks of rows `panels_body` reads, in order: `(first row, rows)`. Rows in blocks of
/// `ROWS`, then of [`MR`], then one by one; but where the rows left after the `ROWS` blocks
/// would run one by one and one `ROWS` block fewer leaves a multiple of `MR` (32 rows in
/// blocks of 6: 6·4 + 4·2, not 6·5 + 1·2), the latter: a one-row block waits on the latency
/// of its few accumulators.
fn row_blocks<const ROWS: usize>(m: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut wide = m / ROWS;
    let left_over = m % ROWS;
    if (1..MR).contains(&left_over) && wide > 0 && (left_over + ROWS).is_multiple_of(MR) {
        wide -= 1;
    }
    let narrow = (m - wide * ROWS) / MR;
    let single = m - wide * ROWS - narrow * MR;
    let sizes = [(wide, ROWS), (narrow, MR), (single, 1)];
    sizes
        .into_iter()
        .flat_map(|(count, rows)| std::iter::repeat_n(rows, count))
        .scan(0, |row, rows| {
            let first = *row;
            *row += rows;
            Some((first, rows))
        })
}

/// The row-major left side `a` (`m` rows of `ks[0]` then `ks[1]` columns) regrouped for
/// [`Left::Blocks`] by the blocks of [`row_blocks`]`::<ROWS>`: `m · k` copies, against the
/// `m · k · n` multiply-adds that read them.
#[inline(always)]
fn pack_left<T: Float, const ROWS: usize>(a: [&[T]; 2], ks: [usize; 2], m: usize) -> Buffer<T> {
    let k = ks[0] + ks[1];
    let mut blocks = Buffer::for_overwrite(m * k);
    for (row, rows) in row_blocks::<ROWS>(m) {
        let block = &mut blocks[row * k..(row + rows) * k];
        let (first, second) = block.split_at_mut(ks[0] * rows);
        for (p, to) in [(0, first), (1, second)] {
            let from = &a[p][row * ks[p]..(row + rows) * ks[p]];
            if rows == ROWS {
                transpose::<T, ROWS>(from, ks[p], to);
            } else if rows == MR {
                transpose::<T, MR>(from, ks[p], to);
            } else {
                transpose::<T, 1>(from, ks[p], to);
            }
        }
    }
    blocks
}

/// `to[kk · R + r] = from[r · k + kk]`: `R` rows of `k` as `k` runs of `R`.
#[inline(always)]
fn transpose<T: Float, const R: usize>(from: &[T], k: usize, to: &mut [T]) {
    if k == 0 {
        return;
    }
    let rows: [&[T]; R] = std::array::from_fn(|r| &from[r * k..][..k]);
    // `kk < k`, the length of every row: no bounds checks.
    for (to, kk) in to.chunks_exact_mut(R).zip(0..k) {
        let to: &mut [T; R] = to.try_into().expect("R long");
        for (to, row) in to.iter_mut().zip(&rows) {
            *to = row[kk];
        }
    }
}

/// The arguments of [`panels_body`], as work for [`with_simd`].
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

/// The loops, written once; each caller above compiles them for its instruction set.
/// `FMA` selects fused multiply-adds (only fast where the target has them); a block is
/// `ROWS` rows ([`MR_WIDE`], [`MR`] or [`MR_NARROW`]) by `W` columns of a panel (`W`
/// divides [`NR`]); the remaining rows run in blocks of [`MR`] and of one. Columns past the
/// matrix's width (the zero padding of its last panel) are skipped `W` at a time.
#[inline(always)]
fn panels_body<T: Float, const FMA: bool, const ROWS: usize, const W: usize>(work: Panels<'_, T>) {
    let Panels {
        left,
        m,
        b,
        panels,
        beta,
        c,
        ldc,
    } = work;
    let k = b.k;
    let first_col = panels.start * NR;
    let blocks;
    let left = match left {
        Left::Rows { a, ks } => {
            blocks = pack_left::<T, ROWS>(a, ks, m);
            Left::Blocks { a: &blocks, k }
        }
        other => other,
    };
    for p in panels {
        let panel = &b.data[p * k * NR..(p + 1) * k * NR];
        let width = NR.min(b.n - p * NR);
        for j in (0..width).step_by(W) {
            let (c_col, width) = (p * NR - first_col + j, W.min(width - j));
            for (row, rows) in row_blocks::<ROWS>(m) {
                if rows == ROWS {
                    let acc = left.block::<ROWS, W, FMA>(row, panel, j);
                    store(&acc, row, beta, c, ldc, c_col, width);
                } else if rows == MR {
                    let acc = left.block::<MR, W, FMA>(row, panel, j);
                    store(&acc, row, beta, c, ldc, c_col, width);
                } else {
                    let acc = left.block::<1, W, FMA>(row, panel, j);
                    store(&acc, row, beta, c, ldc, c_col, width);
                }
            }
        }
    }
}

/// `acc += a · panel[.., j..j + W]` for `R` rows of the left side and the rows of a panel,
/// with the left side's column `kk` (its `R` elements `[r, kk]`) the `kk`-th of `columns`.
#[inline(always)]
fn accumulate<'a, T: Float, const R: usize, const W: usize, const FMA: bool>(
    acc: &mut [[T; W]; R],
    panel: &[T],
    j: usize,
    columns: impl Iterator<Item = &'a [T]>,
) {
    const { assert!(R <= 8, "`rows!` below writes out rows 0 to 7") };
    for (b_row, a_kk) in panel.chunks_exact(NR).zip(columns) {
        let b_row: &[T; W] = b_row[j..j + W].try_into().expect("W wide");
        let a_kk: &[T; R] = a_kk.try_into().expect("R long");
        // The rows written out one by one (the `r < R` tests fold away), not as a loop over
        // `acc`: the accumulators stay in registers only if every row's index is a constant,
        // and LLVM unrolls a loop only below a size threshold. The 8 × 32 block of f32 on
        // AVX-512 (256 multiply-adds per `kk` before vectorization) is past it: as a loop it
        // compiled to scalar multiply-adds on memory, 6 GFLOP/s on an AVX-512 EPYC (Zen 4).
        macro_rules! rows {
            ($($r:literal)*) => {$(
                if $r < R {
                    row_update::<T, W, FMA>(&mut acc[$r], a_kk[$r], b_row);
                }
            )*};
        }
        rows!(0 1 2 3 4 5 6 7);
    }
}

/// `acc_r += a_rk · b_row`, one row of a block for one `kk`.
#[inline(always)]
fn row_update<T: Float, const W: usize, const FMA: bool>(
    acc_r: &mut [T; W],
    a_rk: T,
    b_row: &[T; W],
) {
    for (x, &bv) in acc_r.iter_mut().zip(b_row) {
        *x = if FMA {
            a_rk.mul_add(bv, *x)
        } else {
            *x + a_rk * bv
        };
    }
}

#[inline(always)]
fn store<T: Float, const R: usize, const W: usize>(
    acc: &[[T; W]; R],
    row: usize,
    beta: T,
    c: &mut [T],
    ldc: usize,
    c_col: usize,
    width: usize,
) {
    for (r, acc_r) in acc.iter().enumerate() {
        let out = &mut c[(row + r) * ldc + c_col..(row + r) * ldc + c_col + width];
        // A whole block's row as a fixed-size array: stored in vector moves. At a length
        // known only at run time the `beta = 0` copy became a call to `memcpy` per row (1–2%
        // of a small LSTM training step, perf).
        match <&mut [T; W]>::try_from(&mut *out) {
            Ok(out) => store_row(out, acc_r, beta),
            Err(_) => store_row(out, acc_r, beta),
        }
    }
}

/// `out = acc + beta · out` over the shorter of the two.
#[inline(always)]
fn store_row<T: Float>(out: &mut [T], acc: &[T], beta: T) {
    if beta == T::ZERO {
        for (o, &v) in out.iter_mut().zip(acc) {
            *o = v;
        }
    } else {
        for (o, &v) in out.iter_mut().zip(acc) {
            *o = v + beta * *o;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every block shape the dispatch uses, f32's and f64's (run here in f64): (rows, columns).
    const BLOCKS: [(usize, usize); 5] = [
        (MR, NR),
        (MR_WIDE, NR),
        (MR_NARROW, 16),
        (MR_NARROW, 8),
        (MR_NARROW, 4),
    ];

    /// Row blocks cover the rows once, in order; a one-row remainder gives way to blocks of
    /// `MR` only where one wide block fewer leaves a multiple of `MR`, never when nothing is
    /// left over.
    #[test]
    fn row_blocks_cover_the_rows() {
        let heights = |m, wide| -> Vec<usize> {
            let blocks: Vec<(usize, usize)> = match wide {
                MR_NARROW => row_blocks::<MR_NARROW>(m).collect(),
                _ => row_blocks::<MR_WIDE>(m).collect(),
            };
            let mut next = 0;
            for &(row, rows) in &blocks {
                assert_eq!(row, next, "{m} rows in blocks of {wide}: {blocks:?}");
                next += rows;
            }
            assert_eq!(next, m, "{m} rows in blocks of {wide}: {blocks:?}");
            blocks.iter().map(|&(_, rows)| rows).collect()
        };
        assert_eq!(heights(32, MR_NARROW), [6, 6, 6, 6, 4, 4]);
        assert_eq!(heights(16, MR_NARROW), [6, 6, 4]);
        assert_eq!(heights(13, MR_NARROW), [6, 6, 1]);
        assert_eq!(heights(8, MR_NARROW), [4, 4]);
        assert_eq!(heights(3, MR_NARROW), [1, 1, 1]);
        assert_eq!(heights(0, MR_NARROW), Vec::<usize>::new());
        assert_eq!(heights(32, MR_WIDE), [8, 8, 8, 8]);
        assert_eq!(heights(14, MR_WIDE), [8, 4, 1, 1]);
    }

    /// `left · b + c0` on the portable path (no FMA), in blocks of `rows × cols`.
    fn portable(
        left: Left<'_, f64>,
        (rows, cols): (usize, usize),
        m: usize,
        b: &PackedMat<f64>,
        c0: &[f64],
    ) -> Vec<f64> {
        let mut c = c0.to_vec();
        let work = Panels {
            left,
            m,
            b,
            panels: 0..b.panels(),
            beta: 1.0,
            c: &mut c,
            ldc: b.cols(),
        };
        match (rows, cols) {
            (MR, NR) => panels_body::<f64, false, MR, NR>(work),
            (MR_WIDE, NR) => panels_body::<f64, false, MR_WIDE, NR>(work),
            (MR_NARROW, 16) => panels_body::<f64, false, MR_NARROW, 16>(work),
            (MR_NARROW, 8) => panels_body::<f64, false, MR_NARROW, 8>(work),
            (MR_NARROW, 4) => panels_body::<f64, false, MR_NARROW, 4>(work),
            other => unreachable!("no kernel for {other:?} blocks"),
        }
        c
    }

    /// Every code path (the one this CPU dispatches to, and the portable one) against a naive
    /// triple loop, over sizes around the panel and block edges. Exact for small integers.
    #[test]
    fn packed_gemm_matches_naive_loops() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (4, 8, 32),
            (5, 3, 33),
            (9, 17, 65),
            (13, 2, 31),
            (8, 9, 64),
            (21, 6, 40),
            (32, 5, 40),
            (16, 4, 17),
        ] {
            let a: Vec<f64> = (0..m * k).map(|i| ((i * 7) % 11) as f64 - 5.0).collect();
            let bm: Vec<f64> = (0..k * n).map(|i| ((i * 5) % 13) as f64 - 6.0).collect();
            let c0: Vec<f64> = (0..m * n).map(|i| (i % 3) as f64).collect();
            let mut want = c0.clone();
            for i in 0..m {
                for j in 0..n {
                    let dot: f64 = (0..k).map(|kk| a[i * k + kk] * bm[kk * n + j]).sum();
                    want[i * n + j] += dot;
                }
            }
            let packed = PackedMat::pack(MatRef::new(&bm, k, n));
            let mut got = c0.clone();
            gemm_packed(&a, m, &packed, 1.0, &mut got);
            assert_eq!(got, want, "dispatched path, {m}x{k}x{n}");
            // The same matrix given as the transpose of its row-major transpose: the pack
            // reads it by columns then, and must lay it out the same.
            let bt: Vec<f64> = (0..n * k).map(|i| bm[(i % k) * n + i / k]).collect();
            let from_t = PackedMat::pack(MatRef::new(&bt, n, k).t());
            assert_eq!(
                *from_t.data, *packed.data,
                "packed from a transpose, {k}x{n}"
            );
            // The left side given as columns 2..2 + m of a row-major k × (m + 3) matrix (its
            // transpose, with a column on each side that must not be read), on both paths.
            let lda = m + 3;
            let at: Vec<f64> = (0..k * lda)
                .map(|i| match (i / lda, i % lda) {
                    (kk, j) if (2..2 + m).contains(&j) => a[(j - 2) * k + kk],
                    _ => f64::NAN,
                })
                .collect();
            let mut got = c0.clone();
            gemm_packed_tn(&at, lda, 2..2 + m, &packed, 1.0, &mut got);
            assert_eq!(got, want, "transposed left side, {m}x{k}x{n}");
            let left = Left::Columns {
                a: &at,
                lda,
                first: 2,
            };
            for blocks in BLOCKS {
                let got = portable(left, blocks, m, &packed, &c0);
                assert_eq!(
                    got, want,
                    "portable path, {blocks:?} blocks, transposed left side, {m}x{k}x{n}"
                );
            }
            // Packed from its rows, some of them given as `None` (zeros).
            let rows_of = |kk: usize| (kk % 3 != 1).then(|| &bm[kk * n..(kk + 1) * n]);
            let zeroed: Vec<f64> = (0..k * n)
                .map(|i| if (i / n) % 3 == 1 { 0.0 } else { bm[i] })
                .collect();
            let from_rows = PackedMat::from_rows(k, n, rows_of);
            let direct = PackedMat::pack(MatRef::new(&zeroed, k, n));
            assert_eq!(*from_rows.data, *direct.data, "packed from rows, {k}x{n}");
            // Neither rows nor columns adjacent (every other element of a wider matrix): the
            // same layout, element by element.
            let spread: Vec<f64> = bm.iter().flat_map(|&v| [v, f64::NAN]).collect();
            let strided = PackedMat::pack(MatRef::strided(&spread, 0, k, n, 2 * n, 2));
            assert_eq!(
                *strided.data, *packed.data,
                "packed from a strided view, {k}x{n}"
            );
            // Cut into a top and a bottom part at every row, packed stacked: the same layout,
            // from row-major parts and from transposed ones.
            for k0 in 0..=k {
                let (top, bottom) = bm.split_at(k0 * n);
                let rows = [MatRef::new(top, k0, n), MatRef::new(bottom, k - k0, n)];
                let (top_t, bottom_t) = bt.iter().enumerate().fold(
                    (vec![], vec![]),
                    |(mut top, mut bottom), (i, &v)| {
                        if i % k < k0 {
                            top.push(v)
                        } else {
                            bottom.push(v)
                        }
                        (top, bottom)
                    },
                );
                let cols = [
                    MatRef::new(&top_t, n, k0).t(),
                    MatRef::new(&bottom_t, n, k - k0).t(),
                ];
                for (parts, how) in [(rows, "row-major"), (cols, "transposed")] {
                    let stacked = PackedMat::pack_stacked(&parts);
                    assert_eq!(stacked.k, k);
                    assert_eq!(
                        *stacked.data, *packed.data,
                        "{how} parts cut at {k0}, {k}x{n}"
                    );
                }
            }
            // The left side cut into two blocks of columns at every place: the same bits.
            for k0 in 0..=k {
                let blocks: [Vec<f64>; 2] = [0..k0, k0..k].map(|cols| {
                    a.chunks_exact(k.max(1))
                        .take(m)
                        .flat_map(|row| row[cols.clone()].to_vec())
                        .collect()
                });
                let mut got = c0.clone();
                gemm_packed_cat([&blocks[0], &blocks[1]], m, &packed, 1.0, &mut got);
                assert_eq!(got, want, "dispatched path, cut at {k0}, {m}x{k}x{n}");
                let left = Left::Rows {
                    a: [&blocks[0], &blocks[1]],
                    ks: [k0, k - k0],
                };
                for blocks in BLOCKS {
                    let got = portable(left, blocks, m, &packed, &c0);
                    assert_eq!(
                        got, want,
                        "portable path, {blocks:?} blocks, cut at {k0}, {m}x{k}x{n}"
                    );
                }
            }
        }
    }

    /// The parallel split (a product above the threshold) gives the same bits as one thread.
    #[test]
    fn packed_gemm_is_the_same_on_one_or_two_threads() {
        let (m, k, n) = (256, 512, 1024); // 2²⁷ multiply-adds: at the threshold, so it splits
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
            .collect();
        let bm: Vec<f32> = (0..k * n)
            .map(|i| ((i % 89) as f32 - 44.0) / 89.0)
            .collect();
        let packed = PackedMat::pack(MatRef::new(&bm, k, n));
        // The left side also as two blocks of columns, cut at 200: each thread's rows of both.
        let k0 = 200;
        let blocks: [Vec<f32>; 2] = [0..k0, k0..k].map(|cols| {
            a.chunks_exact(k)
                .flat_map(|r| r[cols.clone()].to_vec())
                .collect()
        });
        let run = |threads, cut: bool| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut c = vec![0.0f32; m * n];
            pool.install(|| match cut {
                false => gemm_packed(&a, m, &packed, 0.0, &mut c),
                true => gemm_packed_cat([&blocks[0], &blocks[1]], m, &packed, 0.0, &mut c),
            });
            c
        };
        let alone = run(1, false);
        assert_eq!(alone, run(2, false));
        assert_eq!(alone, run(2, true));
    }
}
