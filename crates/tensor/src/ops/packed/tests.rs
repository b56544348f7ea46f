//! The packed products against a naive triple loop: every entry point, every way of packing
//! and every block shape the dispatch uses (on the portable path, so each runs on any CPU),
//! over sizes around the panel and block edges; and the parallel split against one thread.

use super::*;

/// Every block shape the dispatch uses, f32's and f64's (run here in f64): (rows, columns).
const BLOCKS: [(usize, usize); 5] = [
    (MR, NR),
    (MR_WIDE, NR),
    (MR_NARROW, 16),
    (MR_NARROW, 8),
    (MR_NARROW, 4),
];

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
            let (top_t, bottom_t) =
                bt.iter()
                    .enumerate()
                    .fold((vec![], vec![]), |(mut top, mut bottom), (i, &v)| {
                        if i % k < k0 {
                            top.push(v)
                        } else {
                            bottom.push(v)
                        }
                        (top, bottom)
                    });
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
