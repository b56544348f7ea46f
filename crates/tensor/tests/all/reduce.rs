//! Reductions (`sum mean max min` over any set of axes, the `*_all` forms, `argmax argmin`,
//! `sum_to`) and the softmax family (`softmax log_softmax logsumexp`) against the naive
//! reference, on random shapes and layouts, for both `f32` and `f64`; plus the stability of
//! the softmax family at ±1000 and their behaviour on empty dims and infinities.

use crate::common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tensor::{Float, Tensor};

/// `axes` as signed dims, negative (counting from the end) where `negative[d]` says so.
fn signed_axes(mask: &[bool], negative: &[bool]) -> Vec<isize> {
    let rank = mask.len() as isize;
    (0..mask.len())
        .filter(|&d| mask[d])
        .map(|d| {
            if negative[d] {
                d as isize - rank
            } else {
                d as isize
            }
        })
        .collect()
}

fn sum_abs(v: &[f64]) -> f64 {
    v.iter().map(|x| x.abs()).sum()
}

// ---------------------------------------------------------------------------------------------
// sum, mean, max, min over sets of axes
// ---------------------------------------------------------------------------------------------

fn sum_mean_case<T: Float>(
    x: &Input,
    mask: &[bool],
    negative: &[bool],
    keepdim: bool,
) -> Result<(), TestCaseError> {
    let (r, t) = x.build::<T>();
    let axes = signed_axes(mask, negative);
    let n = (0..r.rank())
        .filter(|&d| mask[d])
        .map(|d| r.shape[d])
        .product::<usize>() as f64;
    let abs = r.reduce(mask, keepdim, sum_abs);
    let e = eps::<T>();

    // A sequential sum of n terms (or one in partial sums, bounded tighter) is within
    // (n-1)·u·Σ|x| of the exact sum (u = eps/2), and so is the f64 reference's; n·eps·Σ|x|
    // covers both.
    let want = r.reduce(mask, keepdim, |v| v.iter().sum());
    check_close(&t.sum(&axes, keepdim), &want, |_, i| n * e * abs.data[i])?;

    // The mean divides that sum by n (one more rounding): eps·(Σ|x| + |mean|). Over an empty
    // axis it is 0/0 = NaN, as in PyTorch.
    let want = r.reduce(mask, keepdim, |v| v.iter().sum::<f64>() / v.len() as f64);
    check_close(&t.mean(&axes, keepdim), &want, |w, i| {
        e * (abs.data[i] + w.abs())
    })?;
    Ok(())
}

fn max_min_case<T: Float>(
    x: &Input,
    mask: &[bool],
    negative: &[bool],
    keepdim: bool,
) -> Result<(), TestCaseError> {
    let (r, t) = x.build::<T>();
    let axes = signed_axes(mask, negative);
    // Max and min pick an element: exact.
    let want = r.reduce(mask, keepdim, |v| {
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    });
    check_exact(&t.max(&axes, keepdim), &want)?;
    let want = r.reduce(mask, keepdim, |v| {
        v.iter().copied().fold(f64::INFINITY, f64::min)
    });
    check_exact(&t.min(&axes, keepdim), &want)?;
    Ok(())
}

fn all_case<T: Float>(x: &Input) -> Result<(), TestCaseError> {
    let (r, t) = x.build::<T>();
    let n = r.numel() as f64;
    let e = eps::<T>();
    let abs = sum_abs(&r.data);
    let total: f64 = r.data.iter().sum();
    // Same bounds as in `sum_mean_case`, with n = numel.
    let s = t.sum_all();
    prop_assert!(s.shape().is_empty());
    prop_assert!((s.item().to_f64() - total).abs() <= n * e * abs);
    let mean = t.mean_all().item().to_f64();
    if r.numel() == 0 {
        prop_assert!(mean.is_nan());
    } else {
        let want = total / n;
        prop_assert!((mean - want).abs() <= e * (abs + want.abs()));
        let max = r.data.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let min = r.data.iter().copied().fold(f64::INFINITY, f64::min);
        prop_assert_eq!(t.max_all().item().to_f64(), max);
        prop_assert_eq!(t.min_all().item().to_f64(), min);
        prop_assert!(t.max_all().shape().is_empty());
    }
    Ok(())
}

/// The first position of the best value (PyTorch's tie rule).
fn first_best(v: &[f64], better: fn(f64, f64) -> bool) -> f64 {
    let mut at = 0;
    for (k, &x) in v.iter().enumerate() {
        if better(x, v[at]) {
            at = k;
        }
    }
    at as f64
}

fn arg_case<T: Float>(
    x: &Input,
    dim: usize,
    negative: bool,
    keepdim: bool,
) -> Result<(), TestCaseError> {
    let (r, t) = x.build::<T>();
    let mask: Vec<bool> = (0..r.rank()).map(|d| d == dim).collect();
    let d = if negative {
        dim as i32 - r.rank() as i32
    } else {
        dim as i32
    };
    let got = t.argmax(d, keepdim);
    prop_assert_eq!(got.dtype(), tensor::DType::I64);
    check_exact(
        &got,
        &r.reduce(&mask, keepdim, |v| first_best(v, |a, b| a > b)),
    )?;
    let got = t.argmin(d, keepdim);
    check_exact(
        &got,
        &r.reduce(&mask, keepdim, |v| first_best(v, |a, b| a < b)),
    )?;
    Ok(())
}

fn sum_to_case<T: Float>(x: &Input, target: &[usize]) -> Result<(), TestCaseError> {
    let (r, t) = x.build::<T>();
    let lead = r.rank() - target.len();
    // Each target entry sums the input entries that broadcasting would copy it to.
    let mut want = Ref::new(target, vec![0.0; target.iter().product()]);
    let mut abs = want.clone();
    let mut count = 0usize;
    for i in indices(&r.shape) {
        let j: Vec<usize> = (0..target.len())
            .map(|d| if target[d] == 1 { 0 } else { i[lead + d] })
            .collect();
        let f = want.flat(&j);
        want.data[f] += r.at(&i);
        abs.data[f] += r.at(&i).abs();
        count += 1;
    }
    let per_entry = if want.numel() == 0 {
        0.0
    } else {
        count as f64 / want.numel() as f64
    };
    // A sum of `per_entry` terms: the bound of `sum_mean_case`.
    check_close(&t.sum_to(target), &want, |_, i| {
        per_entry * eps::<T>() * abs.data[i]
    })
}

// ---------------------------------------------------------------------------------------------
// softmax, log_softmax, logsumexp
// ---------------------------------------------------------------------------------------------

fn ref_logsumexp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.is_empty() {
        return f64::NEG_INFINITY;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

fn softmax_case<T: Float>(x: &Input, dim: usize, negative: bool) -> Result<(), TestCaseError> {
    let (r, t) = x.build::<T>();
    let rank = r.rank();
    let d = if negative {
        dim as isize - rank as isize
    } else {
        dim as isize
    };
    let n = r.shape[dim] as f64;
    let e = eps::<T>();
    let mask: Vec<bool> = (0..rank).map(|k| k == dim).collect();

    // softmax: x - m is exact to u·|x - m| ≤ 8u absolutely (inputs in [-4, 4]), which exp turns
    // into 8u relative; exp adds ~2u, the sum (n-1)u, the division u: about (n + 11)u relative.
    // The f64 reference has an error of the same size when T = f64, so allow (n + 24)·eps.
    let want = r.along(dim, |v| {
        let lse = ref_logsumexp(v);
        v.iter().map(|x| (x - lse).exp()).collect()
    });
    let p = t.softmax(d);
    check_close(&p, &want, |w, _| (n + 24.0) * e * w.abs())?;

    // logsumexp = m + ln S: the relative error of S, ~(n + 11)u, becomes an absolute error in
    // ln S, plus roundings of size u·|ln S| and u·|result|; (n + 16)·eps·(1 + |result|) covers
    // that twice over (for the f64 reference).
    let lse = r.reduce(&mask, true, ref_logsumexp);
    let lse_tol = |w: f64| (n + 16.0) * e * (1.0 + w.abs());
    check_close(&t.logsumexp(d, true), &lse, |w, _| lse_tol(w))?;
    let flat = r.reduce(&mask, false, ref_logsumexp);
    check_close(&t.logsumexp(d, false), &flat, |w, _| lse_tol(w))?;

    // log_softmax = x - logsumexp: the logsumexp error plus one rounding of the result.
    let lse_b = lse.broadcast_to(&r.shape);
    let want = r.zip(&lse_b, |x, l| x - l);
    check_close(&t.log_softmax(d), &want, |w, i| {
        lse_tol(lse_b.data[i]) + e * w.abs()
    })?;
    Ok(())
}

fn softmax_stability_case<T: Float>() {
    let row =
        |v: &[f64]| Tensor::from_vec(v.iter().map(|&x| T::from_f64(x)).collect(), &[1, v.len()]);
    let vals = |t: Tensor<T>| -> Vec<f64> { t.to_vec().iter().map(|v| v.to_f64()).collect() };
    let e = eps::<T>();
    let close = |got: f64, want: f64, tol: f64| {
        assert!((got - want).abs() <= tol, "got {got}, want {want}");
    };
    for x in [
        vec![1000.0, 1000.0],
        vec![-1000.0, -1000.0],
        vec![1000.0, -1000.0, 0.0],
        vec![1000.0, 999.0],
        vec![-1000.0],
    ] {
        let t = row(&x);
        for out in [t.softmax(-1), t.log_softmax(-1), t.logsumexp(-1, false)] {
            assert!(
                out.to_vec().iter().all(|v| v.is_finite()),
                "non-finite output for {x:?}: {out}"
            );
        }
    }
    // Equal inputs split evenly, whatever their size.
    assert_eq!(vals(row(&[1000.0, 1000.0]).softmax(-1)), vec![0.5, 0.5]);
    assert_eq!(vals(row(&[-1000.0, -1000.0]).softmax(-1)), vec![0.5, 0.5]);
    // e^-1000 and e^-2000 underflow to exactly 0 even in f64.
    assert_eq!(
        vals(row(&[1000.0, -1000.0, 0.0]).softmax(1)),
        vec![1.0, 0.0, 0.0]
    );
    let ls = vals(row(&[1000.0, 0.0, -1000.0]).log_softmax(1));
    assert_eq!(ls, vec![0.0, -1000.0, -2000.0]);
    // [1000, 999] is [0, -1] shifted: softmax = [1, e^-1] / (1 + e^-1). A handful of roundings
    // on O(1) values: 8 eps.
    let p = vals(row(&[1000.0, 999.0]).softmax(-1));
    let z = 1.0 + (-1.0f64).exp();
    close(p[0], 1.0 / z, 8.0 * e);
    close(p[1], (-1.0f64).exp() / z, 8.0 * e);
    // logsumexp(a, a) = a + ln 2; the result is ~1000, so a few roundings cost ~1000 eps.
    let lse = vals(row(&[1000.0, 1000.0]).logsumexp(1, false))[0];
    close(lse, 1000.0 + 2f64.ln(), 4.0 * 1000.0 * e);
    let lse = vals(row(&[-1000.0, -1000.0]).logsumexp(1, false))[0];
    close(lse, -1000.0 + 2f64.ln(), 4.0 * 1000.0 * e);
}

fn infinities_case<T: Float>() {
    let inf = f64::INFINITY;
    let t = Tensor::from_vec(
        [-inf, -inf, -inf, 0.0, 1.0, -inf]
            .iter()
            .map(|&v| T::from_f64(v))
            .collect(),
        &[3, 2],
    );
    let lse: Vec<f64> = t
        .logsumexp(1, false)
        .to_vec()
        .iter()
        .map(|v| v.to_f64())
        .collect();
    // log(e^-inf + e^-inf) = log 0 = -inf (PyTorch gives the same, not NaN).
    assert_eq!(lse[0], -inf);
    assert_eq!(lse[1], 0.0);
    assert_eq!(lse[2], 1.0);
    let p: Vec<f64> = t.softmax(1).to_vec().iter().map(|v| v.to_f64()).collect();
    assert_eq!(&p[2..], &[0.0, 1.0, 1.0, 0.0]);
}

fn empty_dims_case<T: Float>() {
    // Reducing over a size-0 dim: sum is 0, mean is NaN, logsumexp is log(0) = -inf, and
    // softmax of nothing is nothing (all as in PyTorch).
    let x = Tensor::<T>::zeros(&[3, 0]);
    assert_eq!(x.sum(&[1], false).to_vec(), vec![T::ZERO; 3]);
    assert!(x.mean(&[1], false).to_vec().iter().all(|v| v.is_nan()));
    let lse = x.logsumexp(1, false);
    assert_eq!(lse.shape(), &[3]);
    assert!(lse.to_vec().iter().all(|&v| v == T::NEG_INFINITY));
    assert_eq!(x.logsumexp(1, true).shape(), &[3, 1]);
    assert_eq!(x.softmax(1).shape(), &[3, 0]);
    assert_eq!(x.log_softmax(-1).shape(), &[3, 0]);
    // Reducing over a non-empty dim of an empty tensor gives an empty result.
    assert_eq!(x.max(&[0], false).shape(), &[0]);
    assert_eq!(x.argmax(0, true).shape(), &[1, 0]);
    assert_eq!(x.softmax(0).shape(), &[3, 0]);
    assert_eq!(x.logsumexp(0, false).shape(), &[0]);
    assert_eq!(x.sum_all().item(), T::ZERO);
}

fn nan_case<T: Float>() {
    let nan = T::from_f64(f64::NAN);
    let one = T::ONE;
    let t = Tensor::from_vec(vec![one, nan, T::ZERO, T::ZERO, one, T::ZERO], &[2, 3]);
    // max/min propagate NaN; argmax/argmin point at it (as in PyTorch).
    let m = t.max(&[1], false).to_vec();
    assert!(m[0].is_nan());
    assert_eq!(m[1], one);
    assert!(t.min(&[1], false).to_vec()[0].is_nan());
    assert!(t.max_all().item().is_nan());
    assert_eq!(t.argmax(1, false).to_vec(), vec![1, 1]);
    assert_eq!(t.argmin(1, false).to_vec(), vec![1, 0]);
}

fn rank_at_least_one() -> BoxedStrategy<Vec<usize>> {
    prop::collection::vec(arb_dim(4, 0), 1..=4).boxed()
}

macro_rules! suite {
    ($name:ident, $t:ty) => {
        mod $name {
            use super::*;

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(128))]

                #[test]
                fn sum_and_mean_over_axes(
                    (x, mask, negative) in arb_input(Vals::Any, 10).prop_flat_map(|x| {
                        let rank = x.r.rank();
                        (Just(x), arb_mask(rank), arb_mask(rank))
                    }),
                    keepdim in any::<bool>(),
                ) {
                    sum_mean_case::<$t>(&x, &mask, &negative, keepdim)?;
                }

                #[test]
                fn max_and_min_over_axes(
                    (x, mask, negative) in arb_shape(4, 4, 0)
                        .prop_flat_map(|s| arb_input_of(s, Vals::SmallInts))
                        .prop_flat_map(|x| {
                            let rank = x.r.rank();
                            (Just(x), arb_mask(rank), arb_mask(rank))
                        }),
                    keepdim in any::<bool>(),
                ) {
                    max_min_case::<$t>(&x, &mask, &negative, keepdim)?;
                }

                #[test]
                fn reductions_of_everything(x in arb_input(Vals::Any, 10)) {
                    all_case::<$t>(&x)?;
                }

                #[test]
                fn argmax_and_argmin(
                    (x, dim) in rank_at_least_one()
                        .prop_flat_map(|s| arb_input_of(s, Vals::SmallInts))
                        .prop_flat_map(|x| {
                            let rank = x.r.rank();
                            (Just(x), 0..rank)
                        }),
                    negative in any::<bool>(),
                    keepdim in any::<bool>(),
                ) {
                    arg_case::<$t>(&x, dim, negative, keepdim)?;
                }

                #[test]
                fn sum_to_undoes_broadcasting(
                    (x, target) in arb_shape(4, 4, 10).prop_flat_map(|s| (
                        arb_input_of(s.clone(), Vals::Any),
                        arb_broadcastable_to(s),
                    )),
                ) {
                    sum_to_case::<$t>(&x, &target)?;
                }

                #[test]
                fn softmax_family(
                    (x, dim) in prop::collection::vec(arb_dim(5, 10), 1..=3)
                        .prop_flat_map(|s| arb_input_of(s, Vals::Any))
                        .prop_flat_map(|x| {
                            let rank = x.r.rank();
                            (Just(x), 0..rank)
                        }),
                    negative in any::<bool>(),
                ) {
                    softmax_case::<$t>(&x, dim, negative)?;
                }
            }

            #[test]
            fn softmax_family_is_stable_at_1000() {
                softmax_stability_case::<$t>();
            }

            #[test]
            fn softmax_family_handles_infinities() {
                infinities_case::<$t>();
            }

            #[test]
            fn reductions_over_empty_dims() {
                empty_dims_case::<$t>();
            }

            #[test]
            fn reductions_propagate_nan() {
                nan_case::<$t>();
            }
        }
    };
}

suite!(on_f32, f32);
suite!(on_f64, f64);

#[test]
fn big_inputs_stay_finite_and_normalised() {
    // 64 rows of 50 values in ±1000: softmax rows sum to 1 and nothing overflows.
    let mut rng = tensor::Rng::seed_from_u64(7);
    let x = Tensor::<f32>::rand_uniform(&[64, 50], -1000.0, 1000.0, &mut rng);
    let p = x.softmax(1);
    assert!(p.to_vec().iter().all(|v| v.is_finite() && *v >= 0.0));
    for s in p.sum(&[1], false).to_vec() {
        // 50 terms of at most 1, each with a few ulps of error.
        assert!((s - 1.0).abs() < 1e-5, "row sum {s}");
    }
    let ls = x.log_softmax(1);
    assert!(ls.to_vec().iter().all(|v| v.is_finite() && *v <= 0.0));
    let lse = x.logsumexp(1, false);
    let max = x.max(&[1], false);
    // max ≤ logsumexp ≤ max + ln(50)
    for (l, m) in lse.to_vec().iter().zip(max.to_vec()) {
        assert!(*l >= m && *l <= m + 50f32.ln() + 1e-3);
    }
}

#[test]
fn hand_computed_reductions() {
    let x = Tensor::from_vec((1..=24).map(f64::from).collect(), &[2, 3, 4]);
    // Sum over dims 0 and 2 of x[i][j][k] = 12i + 4j + k + 1:
    // Σ_i Σ_k = 2·4·(4j + 1) + 4·12·1 + 2·(0+1+2+3) = 32j + 8 + 48 + 12.
    assert_eq!(x.sum(&[0, 2], false).to_vec(), vec![68.0, 100.0, 132.0]);
    assert_eq!(x.sum(&[-1, 0], true).shape(), &[1, 3, 1]);
    assert_eq!(x.mean(&[1], false).to_vec()[0], (1.0 + 5.0 + 9.0) / 3.0);
    assert_eq!(x.max(&[0, 1], false).to_vec(), vec![21.0, 22.0, 23.0, 24.0]);
    assert_eq!(
        x.min(&[2usize], false).to_vec(),
        vec![1.0, 5.0, 9.0, 13.0, 17.0, 21.0]
    );
    assert_eq!(x.argmax(1, false).to_vec(), vec![2; 8]);
    assert_eq!(x.sum_to(&[3, 1]).to_vec(), vec![68.0, 100.0, 132.0]);
    assert_eq!(x.sum_to(&[4]).to_vec(), vec![66.0, 72.0, 78.0, 84.0]);
    assert_eq!(x.sum_to(&[2, 3, 4]).to_vec(), x.to_vec());
    assert_eq!(x.sum_all().item(), 300.0);
}
