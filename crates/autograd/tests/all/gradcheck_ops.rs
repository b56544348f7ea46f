//! Property-based gradient checks: every differentiable op's backward rule against central
//! finite differences (`autograd::gradcheck`, in f64), over random shapes (broadcasting pairs,
//! size-1 dims, 0-d scalars, non-contiguous views) and random values inside each op's domain.
//!
//! Each check differentiates the scalar `F(x) = Σ f(x) · probe` for a RANDOM probe (a fresh
//! seed per case), i.e. it seeds the backward pass with a random upstream gradient, so a rule
//! that, say, ignores `g` or sums it in the wrong place cannot pass by luck.
//!
//! # Error budget and tolerances
//!
//! gradcheck compares the tape's gradient with `(F(x + h·e_j) − F(x − h·e_j)) / 2h`, h = 1e-6.
//! That quotient errs by
//! - truncation ≈ h²·|∂³F/∂x_j³| / 6 ≈ 1.7e-13 · |F'''|, and
//! - rounding   ≈ c·ε·|F| / h ≈ c · 1.1e-10 · |F|  (ε = 2⁻⁵³; c, a few ulps, from the ops).
//!
//! The domains below keep both small. Inputs lie in [-3, 3] (exp's in [-2, 2]); log and sqrt
//! inputs are ≥ 0.1, powf inputs ≥ 0.5, denominators ≥ 0.5 in magnitude. The largest third
//! derivative is then log's 2/x³ ≤ 2e3 (powf's |p(p−1)(p−2)|·x^(p−3) ≤ 24·0.5⁻⁵ ≈ 8e2, div's
//! 6|a|/b⁴ ≤ 2e2), so truncation ≤ ~4e-10. Outputs have at most ~150 elements of magnitude
//! ≤ ~40 (matmul sums of ≤ 4 products of values ≤ 3; powf(0.5, −2) = 4, 1/0.5 = 2) times a
//! probe in [-1, 1], so |F| ≤ ~6e3 and rounding ≤ ~c·7e-7 ≈ 1e-6. The numeric gradient is
//! therefore good to ~1e-6, and gradcheck's defaults — atol = 1e-5 plus rtol = 1e-3·|numeric| —
//! leave a 10× margin over it. (Measured: the largest error over 3000 cases of every property
//! below was 1.7e-8.) A wrong rule errs by O(|probe|·|∂f|) ~ 0.1–1, 10⁴× above the tolerance.
//!
//! Kinks (relu, abs, clamp, maximum/minimum, max/min reductions) are not differentiable: the
//! inputs there are kept ≥ 1e-3 away from them (≫ h = 1e-6, so no finite-difference step
//! crosses one) and free of ties.

use std::slice::from_ref;

use autograd::{gradcheck, GradCheck, Param, Var};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tensor::{Rng, Tensor};

/// Cases per property: enough to cover the shape space, few enough for a fast suite.
const CASES: u32 = 32;

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

// ---------------------------------------------------------------------------------------------
// The check
// ---------------------------------------------------------------------------------------------

/// `Σ f(x) · probe` for a probe uniform in [-1, 1) drawn from `seed` (the same probe on every
/// evaluation, so the numeric and analytic sides differentiate the same function).
fn probed(f: impl Fn(&[Var<f64>]) -> Var<f64>, seed: u64) -> impl Fn(&[Var<f64>]) -> Var<f64> {
    move |v| {
        let y = f(v);
        let probe = Tensor::rand_uniform(y.shape(), -1.0, 1.0, &mut Rng::seed_from_u64(seed));
        (&y * &probe).sum_all()
    }
}

/// Gradient-checks `f` at `inputs` under a random upstream gradient; fails the case with the
/// report (worst element, analytic vs numeric) otherwise.
fn check(
    f: impl Fn(&[Var<f64>]) -> Var<f64>,
    inputs: &[Tensor<f64>],
    seed: u64,
) -> Result<(), TestCaseError> {
    let report = gradcheck(probed(f, seed), inputs);
    prop_assert!(report.passed(), "{}", report);
    prop_assert_eq!(
        report.checked,
        inputs.iter().map(Tensor::numel).sum::<usize>()
    );
    Ok(())
}

/// Like [`check`], with parameters whose gradients are checked too.
fn check_with_params(
    f: impl Fn(&[Var<f64>]) -> Var<f64>,
    inputs: &[Tensor<f64>],
    params: &[Param<f64>],
    seed: u64,
) -> Result<(), TestCaseError> {
    let report = GradCheck::new(probed(f, seed))
        .inputs(inputs)
        .params(params)
        .run();
    prop_assert!(report.passed(), "{}", report);
    let n = inputs.iter().map(Tensor::numel).sum::<usize>()
        + params.iter().map(Param::numel).sum::<usize>();
    prop_assert_eq!(report.checked, n);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Strategies: values
// ---------------------------------------------------------------------------------------------

/// Any value of moderate size.
fn val() -> impl Strategy<Value = f64> + Clone {
    -3.0..3.0f64
}

/// exp's domain here: [-2, 2], so e^x ≤ 7.4 keeps the rounding term small.
fn exp_arg() -> impl Strategy<Value = f64> + Clone {
    -2.0..2.0f64
}

/// log/sqrt domain filter: x ≥ 0.1, away from the singularity at 0 (log''' = 2/x³ ≤ 2e3).
fn positive() -> impl Strategy<Value = f64> + Clone {
    0.1..3.0f64
}

/// powf domain filter: x ≥ 0.5, so x^p and its third derivative stay moderate for p ∈ [-2, 3].
fn pow_base() -> impl Strategy<Value = f64> + Clone {
    0.5..3.0f64
}

/// Denominator filter for div/recip: |x| > 0.5, away from the pole at 0.
fn denominator() -> impl Strategy<Value = f64> + Clone {
    (-3.0..3.0f64).prop_filter("denominator: |x| > 0.5, away from the pole", |x| {
        x.abs() > 0.5
    })
}

/// Kink filter for relu/abs: |x| > 1e-3 ≫ h = 1e-6, so no finite-difference step crosses 0.
fn off_kink() -> impl Strategy<Value = f64> + Clone {
    (-3.0..3.0f64).prop_filter("relu/abs kink: |x| > 1e-3", |x| x.abs() > 1e-3)
}

fn tensor_of(
    shape: Vec<usize>,
    elem: impl Strategy<Value = f64> + Clone,
) -> impl Strategy<Value = Tensor<f64>> {
    let n = numel(&shape);
    prop::collection::vec(elem, n).prop_map(move |v| Tensor::from_vec(v, &shape))
}

/// Pairwise distinct values (no ties for max/min): a shuffled grid on [-2, 2) with spacing
/// s = 4/n, each point jittered by < s/2, so any two values are ≥ s/2 ≥ 0.03 apart (≫ h).
fn distinct(shape: Vec<usize>) -> impl Strategy<Value = Tensor<f64>> {
    let n = numel(&shape);
    (
        Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
        prop::collection::vec(0.0..0.5f64, n),
    )
        .prop_map(move |(rank, jitter)| {
            let s = 4.0 / n as f64;
            let v = rank
                .iter()
                .zip(&jitter)
                .map(|(&r, &j)| -2.0 + s * (r as f64 + j))
                .collect();
            Tensor::from_vec(v, &shape)
        })
}

/// `true` if `a` and `b`, broadcast together, differ by more than 1e-3 everywhere (no ties or
/// near-ties for maximum/minimum: the kink is 1e-3 ≫ h = 1e-6 away).
fn apart(a: &Tensor<f64>, b: &Tensor<f64>) -> bool {
    a.sub(b).abs().to_vec().iter().all(|d| *d > 1e-3)
}

// ---------------------------------------------------------------------------------------------
// Strategies: shapes
// ---------------------------------------------------------------------------------------------

/// A shape of rank `lo..=hi` with dims 1..=4 (size-1 dims included).
fn dims(lo: usize, hi: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=4, lo..=hi)
}

/// A shape that broadcasts to `out`: sometimes some leading dims dropped, some dims set to 1.
fn broadcasting_to(out: Vec<usize>) -> impl Strategy<Value = Vec<usize>> {
    let r = out.len();
    (
        prop_oneof![2 => Just(0), 1 => 0..=r],
        prop::collection::vec(prop::bool::weighted(0.3), r),
    )
        .prop_map(move |(drop, ones)| {
            (drop..r)
                .map(|d| if ones[d] { 1 } else { out[d] })
                .collect()
        })
}

/// Two shapes that broadcast together (either side, or both, may be the broadcast one).
fn broadcast_pair(max_rank: usize) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    dims(0, max_rank).prop_flat_map(|out| (broadcasting_to(out.clone()), broadcasting_to(out)))
}

/// Two tensors of broadcasting shapes with elements from `ea` and `eb`, and a probe seed.
fn pair(
    ea: impl Strategy<Value = f64> + Clone,
    eb: impl Strategy<Value = f64> + Clone,
) -> impl Strategy<Value = (Tensor<f64>, Tensor<f64>, u64)> {
    broadcast_pair(3).prop_flat_map(move |(sa, sb)| {
        (
            tensor_of(sa, ea.clone()),
            tensor_of(sb, eb.clone()),
            any::<u64>(),
        )
    })
}

/// One tensor of rank `lo..=hi` with elements from `elem`, and a probe seed.
fn single(
    lo: usize,
    hi: usize,
    elem: impl Strategy<Value = f64> + Clone,
) -> impl Strategy<Value = (Tensor<f64>, u64)> {
    dims(lo, hi).prop_flat_map(move |s| (tensor_of(s, elem.clone()), any::<u64>()))
}

/// A shape of rank 1..=3, a subset of its axes (each written positive or negative) and keepdim.
fn shape_axes_keepdim() -> impl Strategy<Value = (Vec<usize>, Vec<isize>, bool)> {
    dims(1, 3)
        .prop_flat_map(|s| {
            let r = s.len();
            (
                Just(s),
                prop::collection::vec((any::<bool>(), any::<bool>()), r),
                any::<bool>(),
            )
        })
        .prop_map(|(s, picks, keepdim)| {
            let r = s.len() as isize;
            let axes = picks
                .iter()
                .enumerate()
                .filter(|(_, (picked, _))| *picked)
                .map(|(d, (_, negative))| {
                    if *negative {
                        d as isize - r
                    } else {
                        d as isize
                    }
                })
                .collect();
            (s, axes, keepdim)
        })
}

/// A shape of rank 1..=3 and one of its dims, as a possibly negative index.
fn shape_and_dim() -> impl Strategy<Value = (Vec<usize>, isize)> {
    dims(1, 3).prop_flat_map(|s| {
        let r = s.len() as isize;
        (Just(s), -r..r)
    })
}

fn proptest_config() -> ProptestConfig {
    ProptestConfig::with_cases(CASES)
}

// ---------------------------------------------------------------------------------------------
// Binary elementwise ops, with broadcasting
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn add((a, b, seed) in pair(val(), val())) {
        check(|v| v[0].add(&v[1]), &[a.clone(), b.clone()], seed)?;
        check(|v| &v[0] + &v[1], &[a, b], seed)?;
    }

    #[test]
    fn sub((a, b, seed) in pair(val(), val())) {
        check(|v| v[0].sub(&v[1]), &[a.clone(), b.clone()], seed)?;
        check(|v| &v[0] - &v[1], &[a, b], seed)?;
    }

    #[test]
    fn mul((a, b, seed) in pair(val(), val())) {
        check(|v| v[0].mul(&v[1]), &[a.clone(), b.clone()], seed)?;
        check(|v| &v[0] * &v[1], &[a, b], seed)?;
    }

    #[test]
    fn div((a, b, seed) in pair(val(), denominator())) {
        check(|v| v[0].div(&v[1]), &[a.clone(), b.clone()], seed)?;
        check(|v| &v[0] / &v[1], &[a, b], seed)?;
    }

    #[test]
    fn maximum((a, b, seed) in pair(val(), val())) {
        // Tie/kink filter: maximum is not differentiable where a = b.
        prop_assume!(apart(&a, &b));
        check(|v| v[0].maximum(&v[1]), &[a, b], seed)?;
    }

    #[test]
    fn minimum((a, b, seed) in pair(val(), val())) {
        // Tie/kink filter: minimum is not differentiable where a = b.
        prop_assume!(apart(&a, &b));
        check(|v| v[0].minimum(&v[1]), &[a, b], seed)?;
    }

    /// A variable combined with itself: both operands of one node feed the same leaf.
    #[test]
    fn binary_op_with_itself((a, seed) in single(0, 3, denominator())) {
        check(|v| &v[0] * &v[0], from_ref(&a), seed)?;
        check(|v| &v[0] + &v[0], from_ref(&a), seed)?;
        // a / a = 1: the two rules must cancel exactly.
        check(|v| &v[0] / &v[0], &[a], seed)?;
    }

    /// A constant tensor or a parameter on the right: only the recorded operands get gradients.
    #[test]
    fn binary_op_with_constant_and_param((a, b, seed) in pair(val(), val())) {
        let c = b.clone();
        check(move |v| v[0].mul(&c), from_ref(&a), seed)?;
        let p = Param::new("p", b);
        let q = p.clone();
        check_with_params(move |v| v[0].sub(&q).mul(&q), &[a], &[p], seed)?;
    }

    #[test]
    fn where_cond(
        (cond, a, b, seed) in dims(0, 3).prop_flat_map(|out| {
            (broadcasting_to(out.clone()), broadcasting_to(out.clone()), broadcasting_to(out))
        }).prop_flat_map(|(sc, sa, sb)| {
            let n = numel(&sc);
            (
                prop::collection::vec(any::<bool>(), n)
                    .prop_map(move |c| Tensor::from_vec(c, &sc)),
                tensor_of(sa, val()),
                tensor_of(sb, val()),
                any::<u64>(),
            )
        })
    ) {
        check(move |v| Var::where_cond(&cond, &v[0], &v[1]), &[a, b], seed)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Unary elementwise ops and scalar operators
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn add_scalar((x, seed) in single(0, 3, val()), s in val()) {
        check(|v| v[0].add_scalar(s), from_ref(&x), seed)?;
        check(|v| &v[0] + s, from_ref(&x), seed)?;
        check(|v| s + &v[0], from_ref(&x), seed)?;
        check(|v| &v[0] - s, &[x], seed)?;
    }

    #[test]
    fn mul_scalar((x, seed) in single(0, 3, val()), s in val()) {
        check(|v| v[0].mul_scalar(s), from_ref(&x), seed)?;
        check(|v| &v[0] * s, from_ref(&x), seed)?;
        check(|v| s * &v[0], &[x], seed)?;
    }

    #[test]
    fn div_by_scalar((x, seed) in single(0, 3, val()), s in denominator()) {
        check(|v| &v[0] / s, &[x], seed)?;
    }

    #[test]
    fn scalar_minus_var((x, seed) in single(0, 3, val()), s in val()) {
        check(|v| s - &v[0], from_ref(&x), seed)?;
        check(|v| 1.0 - v[0].clone(), &[x], seed)?;
    }

    #[test]
    fn scalar_over_var((x, seed) in single(0, 3, denominator()), s in val()) {
        check(|v| s / &v[0], &[x], seed)?;
    }

    #[test]
    fn neg((x, seed) in single(0, 3, val())) {
        check(|v| v[0].neg(), from_ref(&x), seed)?;
        check(|v| -&v[0], &[x], seed)?;
    }

    #[test]
    fn recip((x, seed) in single(0, 3, denominator())) {
        check(|v| v[0].recip(), &[x], seed)?;
    }

    #[test]
    fn exp((x, seed) in single(0, 3, exp_arg())) {
        check(|v| v[0].exp(), &[x], seed)?;
    }

    #[test]
    fn log((x, seed) in single(0, 3, positive())) {
        check(|v| v[0].log(), &[x], seed)?;
    }

    #[test]
    fn tanh((x, seed) in single(0, 3, val())) {
        check(|v| v[0].tanh(), &[x], seed)?;
    }

    #[test]
    fn sigmoid((x, seed) in single(0, 3, val())) {
        check(|v| v[0].sigmoid(), &[x], seed)?;
    }

    #[test]
    fn relu((x, seed) in single(0, 3, off_kink())) {
        check(|v| v[0].relu(), &[x], seed)?;
    }

    #[test]
    fn sqrt((x, seed) in single(0, 3, positive())) {
        check(|v| v[0].sqrt(), &[x], seed)?;
    }

    #[test]
    fn powf(
        (x, seed) in single(0, 3, pow_base()),
        p in prop_oneof![Just(0.0), Just(1.0), Just(2.0), Just(0.5), -2.0..3.0f64],
    ) {
        check(|v| v[0].powf(p), &[x], seed)?;
    }

    #[test]
    fn square((x, seed) in single(0, 3, val())) {
        check(|v| v[0].square(), &[x], seed)?;
    }

    #[test]
    fn abs((x, seed) in single(0, 3, off_kink())) {
        check(|v| v[0].abs(), &[x], seed)?;
    }

    #[test]
    fn clamp(
        (x, lo, hi, seed) in (-1.5..-0.1f64, 0.1..1.5f64).prop_flat_map(|(lo, hi)| {
            // Kink filter: every element ≥ 1e-3 away from both bounds.
            let elem = (-3.0..3.0f64).prop_filter("clamp kinks: |x − lo|, |x − hi| > 1e-3",
                move |x| (x - lo).abs() > 1e-3 && (x - hi).abs() > 1e-3);
            (dims(0, 3).prop_flat_map(move |s| tensor_of(s, elem.clone())),
             Just(lo), Just(hi), any::<u64>())
        })
    ) {
        check(|v| v[0].clamp(lo, hi), &[x], seed)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Reductions
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn sum(
        ((x, axes, keepdim), seed) in (
            shape_axes_keepdim()
                .prop_flat_map(|(s, axes, k)| (tensor_of(s, val()), Just(axes), Just(k))),
            any::<u64>(),
        )
    ) {
        check(|v| v[0].sum(&axes, keepdim), &[x], seed)?;
    }

    #[test]
    fn mean(
        ((x, axes, keepdim), seed) in (
            shape_axes_keepdim()
                .prop_flat_map(|(s, axes, k)| (tensor_of(s, val()), Just(axes), Just(k))),
            any::<u64>(),
        )
    ) {
        check(|v| v[0].mean(&axes, keepdim), &[x], seed)?;
    }

    #[test]
    fn sum_all((x, seed) in single(0, 3, val())) {
        check(|v| v[0].sum_all(), &[x], seed)?;
    }

    #[test]
    fn mean_all((x, seed) in single(0, 3, val())) {
        check(|v| v[0].mean_all(), &[x], seed)?;
    }

    /// Values are pairwise distinct (the tie filter: max is not differentiable at a tie).
    #[test]
    fn max(
        ((x, axes, keepdim), seed) in (
            shape_axes_keepdim()
                .prop_flat_map(|(s, axes, k)| (distinct(s), Just(axes), Just(k))),
            any::<u64>(),
        )
    ) {
        check(|v| v[0].max(&axes, keepdim), &[x], seed)?;
    }

    /// Values are pairwise distinct (the tie filter: min is not differentiable at a tie).
    #[test]
    fn min(
        ((x, axes, keepdim), seed) in (
            shape_axes_keepdim()
                .prop_flat_map(|(s, axes, k)| (distinct(s), Just(axes), Just(k))),
            any::<u64>(),
        )
    ) {
        check(|v| v[0].min(&axes, keepdim), &[x], seed)?;
    }
}

// ---------------------------------------------------------------------------------------------
// logsumexp, log_softmax, softmax
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn logsumexp(
        ((x, dim), keepdim, seed) in (
            shape_and_dim().prop_flat_map(|(s, d)| (tensor_of(s, val()), Just(d))),
            any::<bool>(),
            any::<u64>(),
        )
    ) {
        check(|v| v[0].logsumexp(dim, keepdim), &[x], seed)?;
    }

    #[test]
    fn log_softmax(
        ((x, dim), seed) in (
            shape_and_dim().prop_flat_map(|(s, d)| (tensor_of(s, val()), Just(d))),
            any::<u64>(),
        )
    ) {
        check(|v| v[0].log_softmax(dim), &[x], seed)?;
    }

    #[test]
    fn softmax(
        ((x, dim), seed) in (
            shape_and_dim().prop_flat_map(|(s, d)| (tensor_of(s, val()), Just(d))),
            any::<u64>(),
        )
    ) {
        check(|v| v[0].softmax(dim), &[x], seed)?;
    }
}

// ---------------------------------------------------------------------------------------------
// matmul and linear
// ---------------------------------------------------------------------------------------------

/// How a matmul operand of logical shape `[.., r, c]` is laid out.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// Row-major `[.., r, c]`.
    Contiguous,
    /// A transposed view of row-major `[.., c, r]` storage, handed to gradcheck as the input
    /// (so the leaf itself is non-contiguous).
    TransposedView,
    /// Row-major `[.., c, r]` input transposed on the tape (`Var::transpose`), so matmul gets a
    /// non-contiguous operand that is an intermediate.
    TransposedOnTape,
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        Just(Layout::Contiguous),
        Just(Layout::TransposedView),
        Just(Layout::TransposedOnTape)
    ]
}

/// A matrix (or batch of matrices) of logical shape `[batch.., r, c]` in `layout`: the input
/// tensor to hand to gradcheck.
fn matrix(
    batch: Vec<usize>,
    r: usize,
    c: usize,
    layout: Layout,
) -> impl Strategy<Value = Tensor<f64>> {
    let (rows, cols) = match layout {
        Layout::Contiguous => (r, c),
        Layout::TransposedView | Layout::TransposedOnTape => (c, r),
    };
    let stored = [&batch[..], &[rows, cols]].concat();
    tensor_of(stored, val()).prop_map(move |t| match layout {
        Layout::TransposedView => t.transpose(-1, -2),
        _ => t,
    })
}

/// The operand as matmul should see it.
fn operand(v: &Var<f64>, layout: Layout) -> Var<f64> {
    match layout {
        Layout::TransposedOnTape => v.transpose(-1, -2),
        _ => v.clone(),
    }
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn matmul_2d(
        (a, b, la, lb, seed) in (1usize..=4, 1usize..=4, 1usize..=4, layout(), layout())
            .prop_flat_map(|(m, k, n, la, lb)| (
                matrix(vec![], m, k, la),
                matrix(vec![], k, n, lb),
                Just(la),
                Just(lb),
                any::<u64>(),
            ))
    ) {
        if matches!(la, Layout::TransposedView) {
            prop_assert!(!a.is_contiguous() || a.shape().contains(&1));
        }
        check(|v| operand(&v[0], la).matmul(operand(&v[1], lb)), &[a, b], seed)?;
    }

    /// Batched products whose batch dims broadcast (one side may be plain 2-D).
    #[test]
    fn matmul_batched(
        (a, b, la, lb, seed) in (broadcast_pair(2), 1usize..=3, 1usize..=3, 1usize..=3, layout(), layout())
            .prop_flat_map(|((ba, bb), m, k, n, la, lb)| (
                matrix(ba, m, k, la),
                matrix(bb, k, n, lb),
                Just(la),
                Just(lb),
                any::<u64>(),
            ))
    ) {
        check(|v| operand(&v[0], la).matmul(operand(&v[1], lb)), &[a, b], seed)?;
    }

    /// 1-D operands (torch semantics: a row vector on the left, a column on the right, the
    /// vector dim removed), against 2-D and batched partners.
    #[test]
    fn matmul_vectors(
        (a, b, seed) in (0usize..6, 1usize..=3, 1usize..=4, 1usize..=3, 1usize..=3)
            .prop_flat_map(|(kind, m, k, n, batch)| {
                let (sa, sb): (Vec<usize>, Vec<usize>) = match kind {
                    0 => (vec![k], vec![k, n]),
                    1 => (vec![m, k], vec![k]),
                    2 => (vec![k], vec![k]),
                    3 => (vec![k], vec![batch, k, n]),
                    4 => (vec![batch, m, k], vec![k]),
                    _ => (vec![batch, 1, m, k], vec![k]),
                };
                (tensor_of(sa, val()), tensor_of(sb, val()), any::<u64>())
            })
    ) {
        check(|v| v[0].matmul(&v[1]), &[a, b], seed)?;
    }

    #[test]
    fn linear(
        (x, w, b, seed) in (dims(0, 2), 1usize..=4, 1usize..=4, any::<bool>())
            .prop_flat_map(|(batch, inp, out, with_bias)| (
                tensor_of([&batch[..], &[inp]].concat(), val()),
                tensor_of(vec![out, inp], val()),
                tensor_of(vec![out], val()).prop_map(move |b| with_bias.then_some(b)),
                any::<u64>(),
            ))
    ) {
        match b {
            Some(b) => check(|v| v[0].linear(&v[1]) + &v[2], &[x, w, b], seed)?,
            None => check(|v| v[0].linear(&v[1]), &[x, w], seed)?,
        }
    }

    /// `linear` with its weight and bias as parameters (how models call it).
    #[test]
    fn linear_with_params(
        (x, w, b, seed) in (1usize..=3, 1usize..=4, 1usize..=4)
            .prop_flat_map(|(batch, inp, out)| (
                tensor_of(vec![batch, inp], val()),
                tensor_of(vec![out, inp], val()),
                tensor_of(vec![out], val()),
                any::<u64>(),
            ))
    ) {
        let (w, b) = (Param::new("weight", w), Param::new("bias", b));
        let (w2, b2) = (w.clone(), b.clone());
        check_with_params(move |v| v[0].linear(&w2) + &b2, &[x], &[w, b], seed)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(proptest_config())]

    /// Reshape into the same dims in another order, with an extra size-1 dim somewhere.
    #[test]
    fn reshape(
        (x, target, seed) in dims(0, 3).prop_flat_map(|s| {
            let r = s.len();
            (tensor_of(s.clone(), val()), Just(s).prop_shuffle(), 0..=r, any::<u64>())
        }).prop_map(|(x, mut target, at, seed)| {
            target.insert(at, 1);
            (x, target, seed)
        })
    ) {
        check(|v| v[0].reshape(&target), &[x], seed)?;
    }

    /// Reshape of a non-contiguous intermediate (a copy, not a view).
    #[test]
    fn reshape_of_transposed((x, seed) in (dims(2, 2), any::<u64>())
        .prop_flat_map(|(s, seed)| (tensor_of(s, val()), Just(seed))))
    {
        check(|v| {
            let t = v[0].t();
            t.reshape(&[t.value().numel()])
        }, &[x], seed)?;
    }

    #[test]
    fn flatten((x, seed) in single(0, 3, val())) {
        check(|v| v[0].flatten(), &[x], seed)?;
    }

    #[test]
    fn permute(
        (x, perm, seed) in dims(1, 3).prop_flat_map(|s| {
            let r = s.len();
            (tensor_of(s, val()), Just((0..r).collect::<Vec<usize>>()).prop_shuffle(), any::<u64>())
        })
    ) {
        check(|v| v[0].permute(&perm), &[x], seed)?;
    }

    #[test]
    fn transpose(
        (x, d0, d1, seed) in dims(1, 3).prop_flat_map(|s| {
            let r = s.len() as isize;
            (tensor_of(s, val()), -r..r, -r..r, any::<u64>())
        })
    ) {
        check(|v| v[0].transpose(d0, d1), &[x], seed)?;
    }

    #[test]
    fn t((x, seed) in single(2, 2, val())) {
        check(|v| v[0].t(), &[x], seed)?;
    }

    #[test]
    fn narrow(
        (x, d, start, len, seed) in dims(1, 3).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 0..r)
        }).prop_flat_map(|(s, d)| {
            let n = s[d];
            (Just(s), Just(d), 0..n)
        }).prop_flat_map(|(s, d, start)| {
            let n = s[d];
            (tensor_of(s, val()), Just(d), Just(start), 1..=n - start, any::<u64>())
        })
    ) {
        check(|v| v[0].narrow(d, start, len), &[x], seed)?;
    }

    #[test]
    fn select(
        (x, d, index, seed) in dims(1, 3).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 0..r)
        }).prop_flat_map(|(s, d)| {
            let n = s[d];
            (tensor_of(s, val()), Just(d), 0..n, any::<u64>())
        })
    ) {
        check(|v| v[0].select(d, index), &[x], seed)?;
    }

    /// Several slices of one variable next to full-shape uses of it: `narrow`/`select` send
    /// slice gradients that the tape adds in place, before, between and after full ones.
    #[test]
    fn slices_with_fan_out(
        (x, d, start, len, index, seed) in dims(1, 3).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 0..r)
        }).prop_flat_map(|(s, d)| {
            let n = s[d];
            (Just(s), Just(d), 0..n, 0..n)
        }).prop_flat_map(|(s, d, start, index)| {
            let n = s[d];
            (tensor_of(s, val()), Just(d), Just(start), 1..=n - start, Just(index), any::<u64>())
        })
    ) {
        check(|v| {
            let y = v[0].mul_scalar(1.5);
            let a = y.narrow(d, start, len);
            let t = y.tanh();
            let b = y.select(d, index).unsqueeze(d);
            let p = y.add_scalar(0.25); // passes its gradient through unchanged
            let c = y.narrow(d, start, len).square();
            Var::concat(&[&a, &t, &b, &p, &c], d)
        }, &[x], seed)?;
    }

    #[test]
    fn unsqueeze(
        (x, d, seed) in dims(0, 3).prop_flat_map(|s| {
            let r = s.len() as isize;
            // unsqueeze takes dims in -(r+1)..=r.
            (tensor_of(s, val()), -(r + 1)..=r, any::<u64>())
        })
    ) {
        check(|v| v[0].unsqueeze(d), &[x], seed)?;
    }

    #[test]
    fn squeeze(
        (x, d, seed) in dims(0, 2).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 0..=r)
        }).prop_flat_map(|(mut s, d)| {
            s.insert(d, 1);
            (tensor_of(s, val()), Just(d), any::<u64>())
        })
    ) {
        check(|v| v[0].squeeze(d), &[x], seed)?;
    }

    #[test]
    fn broadcast_to(
        (x, out, seed) in dims(0, 3).prop_flat_map(|out| {
            (Just(out.clone()), broadcasting_to(out))
        }).prop_flat_map(|(out, s)| (tensor_of(s, val()), Just(out), any::<u64>()))
    ) {
        check(|v| v[0].broadcast_to(&out), &[x], seed)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Joining, splitting, lookups
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn concat(
        (xs, d, seed) in (dims(1, 3), prop::collection::vec(1usize..=3, 1..=3))
            .prop_flat_map(|(s, sizes)| {
                let r = s.len();
                (Just(s), Just(sizes), 0..r)
            })
            .prop_flat_map(|(s, sizes, d)| {
                let parts: Vec<_> = sizes.iter().map(|&n| {
                    let mut shape = s.clone();
                    shape[d] = n;
                    tensor_of(shape, val())
                }).collect();
                (parts, Just(d), any::<u64>())
            })
    ) {
        check(|v| Var::concat(&v.iter().collect::<Vec<_>>(), d), &xs, seed)?;
    }

    #[test]
    fn stack(
        (xs, d, seed) in (dims(0, 2), 1usize..=3)
            .prop_flat_map(|(s, count)| {
                let r = s.len();
                (prop::collection::vec(tensor_of(s, val()), count), 0..=r, any::<u64>())
            })
    ) {
        check(|v| Var::stack(&v.iter().collect::<Vec<_>>(), d), &xs, seed)?;
    }

    /// Split, then put the pieces back in reverse order, so every piece is checked under its
    /// own part of the probe.
    #[test]
    fn split(
        (x, sizes, d, seed) in (dims(1, 3), prop::collection::vec(1usize..=3, 1..=3))
            .prop_flat_map(|(s, sizes)| {
                let r = s.len();
                (Just(s), Just(sizes), 0..r)
            })
            .prop_flat_map(|(mut s, sizes, d)| {
                s[d] = sizes.iter().sum();
                (tensor_of(s, val()), Just(sizes), Just(d), any::<u64>())
            })
    ) {
        check(|v| {
            let pieces = v[0].split(&sizes, d);
            assert_eq!(pieces.len(), sizes.len());
            Var::concat(&pieces.iter().rev().collect::<Vec<_>>(), d)
        }, &[x], seed)?;
    }

    #[test]
    fn chunk(
        (x, chunks, d, seed) in (dims(1, 3), 1usize..=6, 1usize..=4)
            .prop_flat_map(|(s, n, chunks)| {
                let r = s.len();
                (Just(s), Just(n), Just(chunks), 0..r)
            })
            .prop_flat_map(|(mut s, n, chunks, d)| {
                s[d] = n;
                (tensor_of(s, val()), Just(chunks), Just(d), any::<u64>())
            })
    ) {
        check(|v| {
            let pieces = v[0].chunk(chunks, d);
            Var::concat(&pieces.iter().rev().collect::<Vec<_>>(), d)
        }, &[x], seed)?;
    }

    /// Indices repeat (their gradients must add up).
    #[test]
    fn index_select(
        (x, d, idx, seed) in dims(1, 3)
            .prop_flat_map(|s| {
                let r = s.len();
                (Just(s), 0..r)
            })
            .prop_flat_map(|(s, d)| {
                let n = s[d] as i64;
                (
                    tensor_of(s, val()),
                    Just(d),
                    prop::collection::vec(0..n, 1..=5),
                    any::<u64>(),
                )
            })
    ) {
        let idx = Tensor::from_vec(idx.clone(), &[idx.len()]);
        check(|v| v[0].index_select(d, &idx), &[x], seed)?;
    }

    #[test]
    fn gather(
        (x, d, index, seed) in dims(1, 3)
            .prop_flat_map(|s| {
                let r = s.len();
                (Just(s), 0..r)
            })
            .prop_flat_map(|(s, d)| {
                // The index is no larger than the input outside `d`, any length along `d`.
                let ishape: Vec<_> = s
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| if i == d { (1..=4usize).boxed() } else { (1..=n).boxed() })
                    .collect();
                (tensor_of(s, val()), Just(d), ishape, any::<u64>())
            })
            .prop_flat_map(|(x, d, ishape, seed)| {
                let n = x.shape()[d] as i64;
                let count = numel(&ishape);
                (
                    Just(x),
                    Just(d),
                    prop::collection::vec(0..n, count)
                        .prop_map(move |v| Tensor::from_vec(v, &ishape)),
                    Just(seed),
                )
            })
    ) {
        check(|v| v[0].gather(d, &index), &[x], seed)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Composites: several ops in one graph, with fan-out and parameters
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(proptest_config())]

    /// A GRU step, h' = (1 − z)·n + z·h, built from linear/sigmoid/tanh/mul/sub/add and
    /// chunk — the shape of computation the rnn crate runs.
    #[test]
    fn gru_cell(
        (x, h, w_ih, w_hh, b, seed) in (1usize..=3, 1usize..=3, 1usize..=3)
            .prop_flat_map(|(batch, inp, hid)| (
                tensor_of(vec![batch, inp], val()),
                tensor_of(vec![batch, hid], val()),
                tensor_of(vec![3 * hid, inp], -1.0..1.0f64),
                tensor_of(vec![3 * hid, hid], -1.0..1.0f64),
                tensor_of(vec![3 * hid], -1.0..1.0f64),
                any::<u64>(),
            ))
    ) {
        let (w_ih, w_hh, b) = (Param::new("w_ih", w_ih), Param::new("w_hh", w_hh), Param::new("b", b));
        let (wi, wh, bb) = (w_ih.clone(), w_hh.clone(), b.clone());
        check_with_params(move |v| {
            let (x, h) = (&v[0], &v[1]);
            let gi = (x.linear(&wi) + &bb).chunk(3, 1);
            let gh = h.linear(&wh).chunk(3, 1);
            let r = (&gi[0] + &gh[0]).sigmoid();
            let z = (&gi[1] + &gh[1]).sigmoid();
            let n = (&gi[2] + &r * &gh[2]).tanh();
            (1.0 - &z) * &n + &z * h
        }, &[x, h], &[w_ih, w_hh, b], seed)?;
    }

    /// Cross-entropy through log_softmax and gather, averaged: a typical loss head.
    #[test]
    fn cross_entropy(
        (logits, targets, seed) in (1usize..=4, 2usize..=5)
            .prop_flat_map(|(batch, classes)| (
                tensor_of(vec![batch, classes], val()),
                prop::collection::vec(0..classes as i64, batch),
                any::<u64>(),
            ))
    ) {
        let n = targets.len();
        let targets = Tensor::from_vec(targets, &[n, 1]);
        check(|v| v[0].log_softmax(-1).gather(1, &targets).mean_all().neg(), &[logits], seed)?;
    }
}

// ---------------------------------------------------------------------------------------------
// The checker itself is not vacuous
// ---------------------------------------------------------------------------------------------

/// A custom op with a deliberately wrong rule (the sign of d/dx x² = 2x dropped) must fail the
/// same check that the real ops pass; otherwise the tests above would prove nothing.
#[test]
fn gradcheck_rejects_a_wrong_rule() {
    let wrong_square = |x: &Var<f64>| {
        let xv = x.value().clone();
        Var::custom_op("wrong_square", &[x], xv.square(), move |g| {
            vec![Some(g.mul(&xv).mul_scalar(-2.0))]
        })
    };
    let x = Tensor::from_vec(vec![0.7, -1.3, 2.0], &[3]);
    let report = gradcheck(probed(|v| wrong_square(&v[0]), 7), from_ref(&x));
    assert!(!report.passed(), "{report}");
    assert_eq!(report.failures, 3);
    // The numeric side is right: d/dx Σ x²·p = 2x·p, so its value is the analytic one negated.
    let worst = report.worst_abs.expect("three elements were checked");
    assert!((worst.numeric + worst.analytic).abs() < 1e-6, "{worst:?}");

    // The same op with the right rule passes.
    let right_square = |x: &Var<f64>| {
        let xv = x.value().clone();
        Var::custom_op("right_square", &[x], xv.square(), move |g| {
            vec![Some(g.mul(&xv).mul_scalar(2.0))]
        })
    };
    let report = gradcheck(probed(|v| right_square(&v[0]), 7), &[x]);
    assert!(report.passed(), "{report}");
}
