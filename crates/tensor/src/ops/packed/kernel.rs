//! The micro-kernel of the packed products. For each panel of the packed right-hand side,
//! each run of `W` of its columns and each block of rows of the left side, it sums a
//! `rows × W` block of the output in registers, one rank-1 update per `kk`
//! (`acc[r][..] += a[r, kk] · panel[kk, j..j + W]`), then stores `c = acc + beta · c`.
//!
//! [`panels_body`] is written once, generic over the block's shape and over fused
//! multiply-adds; `Panels::run` in `mod.rs` compiles it inside
//! [`with_simd`](crate::simd::with_simd), once per instruction set, with the block that
//! fits its registers (at most 16 vector registers of accumulators):
//!
//! | instruction set | f32 block                      | f64 block                |
//! |-----------------|--------------------------------|--------------------------|
//! | AVX-512 + FMA   | 8 × 32 ([`MR_WIDE`] × [`NR`])  | 4 × 32 ([`MR`] × [`NR`]) |
//! | AVX2 + FMA      | 6 × 16 ([`MR_NARROW`] × 16)    | 6 × 8                    |
//! | baseline (SSE2) | 6 × 8                          | 6 × 4                    |
//!
//! The rows left after the full blocks run in blocks of [`MR`] and of one ([`row_blocks`]).
//!
//! Invariants:
//! - Each output element is summed in one block, over `kk` in order from 0: the block's
//!   shape and place change the speed, never the bits (on one instruction set; a fused
//!   multiply-add rounds once where a multiply and an add round twice).
//! - A row-major left side is read from a copy regrouped by row blocks ([`Left::Blocks`],
//!   made by [`pack_left`] with the same [`row_blocks`] as the loops): [`Left::Rows`] never
//!   reaches a block.
//! - No `unsafe`: the inner loop reads fixed-size arrays (`try_into` from `chunks_exact`
//!   pieces), so the compiler drops their bounds checks without being told.
//! - Everything on the hot path is `#[inline(always)]`: it must be compiled inside its
//!   caller, for the caller's instruction set.

use crate::element::Float;
use crate::pool::Buffer;

use super::{Panels, NR};

/// Rows per block for f32 on AVX-512: `MR_WIDE × NR` accumulators, 16 of its 32 vector
/// registers. With four rows, eight accumulators leave the FMA units waiting on their
/// latency (on the per-step products `[64, 512] × [512, 2048]` and `[32, 256] × [256, 1024]`:
/// 240–248 GFLOP/s with eight rows, 200–215 with four).
pub(super) const MR_WIDE: usize = 8;
/// Rows per block for f64 on AVX-512 (also 16 registers), and the remainder block of every
/// kernel.
pub(super) const MR: usize = 4;
/// Rows per block where there are only 16 vector registers (AVX2, or the SSE2 baseline):
/// the block is then [`MR_NARROW`] rows by half a panel or less (two vectors wide), 12
/// accumulators, two registers for the panel's row and one for the broadcast left element,
/// as in BLIS's 6 × 16 Haswell kernel. A whole panel row (four AVX2 vectors of f32) by four
/// rows needs all 16 registers for accumulators alone and spills.
pub(super) const MR_NARROW: usize = 6;

/// The left side of a product: row-major, as two blocks of columns (see
/// [`gemm_packed_cat`](super::gemm_packed_cat), `ks` wide), or the transpose of columns
/// `first..` of a row-major `k × lda` matrix (see [`gemm_packed_tn`](super::gemm_packed_tn)).
/// The kernel reads a row-major one from a copy in [`Left::Blocks`].
#[derive(Clone, Copy)]
pub(super) enum Left<'a, T> {
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
    /// in the loop and, in the fused LSTM's build, spilled two accumulators).
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

/// The loops, written once; each caller in `Panels::run` compiles them for its instruction
/// set. `FMA` selects fused multiply-adds (only fast where the target has them); a block is
/// `ROWS` rows ([`MR_WIDE`], [`MR`] or [`MR_NARROW`]) by `W` columns of a panel (`W`
/// divides [`NR`]); the remaining rows run in blocks of [`MR`] and of one. Columns past the
/// matrix's width (the zero padding of its last panel) are skipped `W` at a time.
#[inline(always)]
pub(super) fn panels_body<T: Float, const FMA: bool, const ROWS: usize, const W: usize>(
    work: Panels<'_, T>,
) {
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
        // compiled to scalar multiply-adds on memory.
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
        // known only at run time the `beta = 0` copy became a call to `memcpy` per row.
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
}
