//! Elementwise ops against the naive reference: unary maps, scalar ops, broadcasting binary
//! ops, comparisons, `where_cond`, the operator overloads, and the stability of `sigmoid`.
//! Inputs have random shapes (size-1 and empty dims included) and random layouts (permuted,
//! narrowed and broadcast views), for both `f32` and `f64`.

use crate::common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tensor::{Element, Float, Tensor};

// ---------------------------------------------------------------------------------------------
// Unary ops and ops with a scalar
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Unary {
    Neg,
    Exp,
    Tanh,
    Sigmoid,
    Relu,
    Square,
    Abs,
    Clamp,
    AddScalar,
    SubScalar,
    MulScalar,
    DivScalar,
    MaximumScalar,
    Map,
    // These need positive inputs.
    Log,
    Sqrt,
    Powf,
}

const ANY_DOMAIN: [Unary; 14] = [
    Unary::Neg,
    Unary::Exp,
    Unary::Tanh,
    Unary::Sigmoid,
    Unary::Relu,
    Unary::Square,
    Unary::Abs,
    Unary::Clamp,
    Unary::AddScalar,
    Unary::SubScalar,
    Unary::MulScalar,
    Unary::DivScalar,
    Unary::MaximumScalar,
    Unary::Map,
];

const POSITIVE_DOMAIN: [Unary; 3] = [Unary::Log, Unary::Sqrt, Unary::Powf];

/// `op` on `x` against the reference; `s` is the scalar operand (±[0.5, 4]).
fn unary_case<T: Float>(x: &Input, op: Unary, s: f64) -> Result<(), TestCaseError> {
    let (r, t) = x.build::<T>();
    let st = T::from_f64(s);
    let s = st.to_f64(); // the scalar as the crate sees it
                         // Each arm: (result, reference, tolerance in units of eps relative to the reference).
    let (got, want, k) = match op {
        // Sign changes, selections and comparisons are exact.
        Unary::Neg => (t.neg(), r.map(|v| -v), 0.0),
        Unary::Relu => (
            t.relu(),
            r.map(|v| if v.is_nan() { v } else { v.max(0.0) }),
            0.0,
        ),
        Unary::Abs => (t.abs(), r.map(f64::abs), 0.0),
        Unary::Clamp => {
            let (lo, hi) = (-s.abs(), s.abs() / 2.0);
            let got = t.clamp(T::from_f64(lo), T::from_f64(hi));
            (got, r.map(|v| v.clamp(lo, hi)), 0.0)
        }
        Unary::MaximumScalar => (t.maximum_scalar(st), r.map(|v| v.max(s)), 0.0),
        // One IEEE operation: correctly rounded, so within half an ulp of the exact value; the
        // f64 reference is itself rounded, so allow one eps relative.
        Unary::Square => (t.square(), r.map(|v| v * v), 1.0),
        Unary::AddScalar => (t.add_scalar(st), r.map(|v| v + s), 1.0),
        Unary::SubScalar => (t.sub_scalar(st), r.map(|v| v - s), 1.0),
        Unary::MulScalar => (t.mul_scalar(st), r.map(|v| v * s), 1.0),
        Unary::DivScalar => (t.div_scalar(st), r.map(|v| v / s), 1.0),
        Unary::Map => (
            t.map(|v| v * T::from_f64(2.0)),
            r.map(|v| v * 2.0),
            0.0, // doubling is exact
        ),
        Unary::Sqrt => (t.sqrt(), r.map(f64::sqrt), 1.0), // sqrt is correctly rounded
        // libm's exp/tanh/ln/pow are accurate to about 1 ulp; 4 eps relative is 4–8 ulps.
        Unary::Exp => (t.exp(), r.map(f64::exp), 4.0),
        Unary::Tanh => (t.tanh(), r.map(f64::tanh), 4.0),
        Unary::Log => (t.log(), r.map(f64::ln), 4.0),
        Unary::Powf => (t.powf(st), r.map(|v| v.powf(s)), 4.0),
        // exp (~1 ulp), an add and a divide (half an ulp each): about 3 ulps; allow 8 eps.
        Unary::Sigmoid => (t.sigmoid(), r.map(|v| 1.0 / (1.0 + (-v).exp())), 8.0),
    };
    prop_assert!(got.is_contiguous(), "ops return contiguous tensors");
    check_rel(&got, &want, k)
}

// ---------------------------------------------------------------------------------------------
// Binary ops with broadcasting
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Maximum,
    Minimum,
}

const BINARY: [Binary; 6] = [
    Binary::Add,
    Binary::Sub,
    Binary::Mul,
    Binary::Div,
    Binary::Maximum,
    Binary::Minimum,
];

fn binary_case<T: Float>(a: &Input, b: &Input, op: Binary) -> Result<(), TestCaseError> {
    let (ra, ta) = a.build::<T>();
    let (rb, tb) = b.build::<T>();
    // Arithmetic is one correctly rounded IEEE op per element (1 eps relative, as for the
    // scalar ops); maximum and minimum select an input, so they are exact.
    let (got, want, k) = match op {
        Binary::Add => (ta.add(&tb), ra.zip(&rb, |x, y| x + y), 1.0),
        Binary::Sub => (ta.sub(&tb), ra.zip(&rb, |x, y| x - y), 1.0),
        Binary::Mul => (ta.mul(&tb), ra.zip(&rb, |x, y| x * y), 1.0),
        Binary::Div => (ta.div(&tb), ra.zip(&rb, |x, y| x / y), 1.0),
        Binary::Maximum => (ta.maximum(&tb), ra.zip(&rb, f64::max), 0.0),
        Binary::Minimum => (ta.minimum(&tb), ra.zip(&rb, f64::min), 0.0),
    };
    prop_assert!(got.is_contiguous());
    check_rel(&got, &want, k)
}

/// The operator overloads agree with the methods for every ownership combination.
fn operators_case<T: Float>(a: &Input, b: &Input, s: f64) -> Result<(), TestCaseError> {
    let (ra, ta) = a.build::<T>();
    let (rb, tb) = b.build::<T>();
    let st = T::from_f64(s);
    let s = st.to_f64();
    let add = ra.zip(&rb, |x, y| x + y);
    let sub = ra.zip(&rb, |x, y| x - y);
    let mul = ra.zip(&rb, |x, y| x * y);
    let div = ra.zip(&rb, |x, y| x / y);
    // Same one-rounding arithmetic as `binary_case`: 1 eps relative.
    for got in [
        &ta + &tb,
        ta.clone() + tb.clone(),
        ta.clone() + &tb,
        &ta + tb.clone(),
    ] {
        check_rel(&got, &add, 1.0)?;
    }
    for got in [
        &ta - &tb,
        ta.clone() - tb.clone(),
        ta.clone() - &tb,
        &ta - tb.clone(),
    ] {
        check_rel(&got, &sub, 1.0)?;
    }
    for got in [
        &ta * &tb,
        ta.clone() * tb.clone(),
        ta.clone() * &tb,
        &ta * tb.clone(),
    ] {
        check_rel(&got, &mul, 1.0)?;
    }
    for got in [
        &ta / &tb,
        ta.clone() / tb.clone(),
        ta.clone() / &tb,
        &ta / tb.clone(),
    ] {
        check_rel(&got, &div, 1.0)?;
    }
    check_rel(&(&ta + st), &ra.map(|v| v + s), 1.0)?;
    check_rel(&(ta.clone() + st), &ra.map(|v| v + s), 1.0)?;
    check_rel(&(&ta - st), &ra.map(|v| v - s), 1.0)?;
    check_rel(&(ta.clone() - st), &ra.map(|v| v - s), 1.0)?;
    check_rel(&(&ta * st), &ra.map(|v| v * s), 1.0)?;
    check_rel(&(ta.clone() * st), &ra.map(|v| v * s), 1.0)?;
    check_rel(&(&ta / st), &ra.map(|v| v / s), 1.0)?;
    check_rel(&(ta.clone() / st), &ra.map(|v| v / s), 1.0)?;
    check_rel(&(-&ta), &ra.map(|v| -v), 0.0)?;
    check_rel(&(-ta.clone()), &ra.map(|v| -v), 0.0)?;
    Ok(())
}

/// `scalar op tensor` exists for the concrete float types only, hence a macro.
macro_rules! scalar_lhs_case {
    ($t:ty, $x:expr, $s:expr) => {{
        let (r, t) = $x.build::<$t>();
        let s = <$t>::from_f64($s);
        let sf = s.to_f64();
        // One rounding per element: 1 eps relative (see `unary_case`).
        check_rel(&(s + &t), &r.map(|v| sf + v), 1.0)?;
        check_rel(&(s + t.clone()), &r.map(|v| sf + v), 1.0)?;
        check_rel(&(s - &t), &r.map(|v| sf - v), 1.0)?;
        check_rel(&(s - t.clone()), &r.map(|v| sf - v), 1.0)?;
        check_rel(&(s * &t), &r.map(|v| sf * v), 1.0)?;
        check_rel(&(s * t.clone()), &r.map(|v| sf * v), 1.0)?;
        check_rel(&(s / &t), &r.map(|v| sf / v), 1.0)?;
        check_rel(&(s / t.clone()), &r.map(|v| sf / v), 1.0)?;
    }};
}

// ---------------------------------------------------------------------------------------------
// Comparisons and `where_cond`
// ---------------------------------------------------------------------------------------------

fn as_f64(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

fn compare_case<T: Float>(a: &Input, b: &Input, s: f64) -> Result<(), TestCaseError> {
    let (ra, ta) = a.build::<T>();
    let (rb, tb) = b.build::<T>();
    let s = T::from_f64(s);
    let sf = s.to_f64();
    type Cmp = fn(&f64, &f64) -> bool;
    let cases: [(Tensor<bool>, Tensor<bool>, Cmp); 6] = [
        (ta.gt(&tb), ta.gt_scalar(s), f64::gt),
        (ta.ge(&tb), ta.ge_scalar(s), f64::ge),
        (ta.lt(&tb), ta.lt_scalar(s), f64::lt),
        (ta.le(&tb), ta.le_scalar(s), f64::le),
        (ta.eq(&tb), ta.eq_scalar(s), f64::eq),
        (ta.ne(&tb), ta.ne_scalar(s), f64::ne),
    ];
    for (pair, scalar, cmp) in cases {
        prop_assert_eq!(pair.dtype(), tensor::DType::Bool);
        check_exact(&pair, &ra.zip(&rb, |x, y| as_f64(cmp(&x, &y))))?;
        check_exact(&scalar, &ra.map(|x| as_f64(cmp(&x, &sf))))?;
    }
    check_exact(&ta.gt(&tb).not(), &ra.zip(&rb, |x, y| as_f64(x <= y)))?;
    Ok(())
}

fn where_case<T: Float>(c: &Input, a: &Input, b: &Input) -> Result<(), TestCaseError> {
    let (rc, tc) = c.build::<bool>();
    let (ra, ta) = a.build::<T>();
    let (rb, tb) = b.build::<T>();
    let got = Tensor::where_cond(&tc, &ta, &tb);
    let shape = ref_broadcast_shapes(&rc.shape, &ra.shape)
        .and_then(|s| ref_broadcast_shapes(&s, &rb.shape))
        .unwrap();
    let (rc, ra, rb) = (
        rc.broadcast_to(&shape),
        ra.broadcast_to(&shape),
        rb.broadcast_to(&shape),
    );
    let want = Ref::from_fn(
        &shape,
        |i| if rc.at(i) != 0.0 { ra.at(i) } else { rb.at(i) },
    );
    check_exact(&got, &want)
}

// ---------------------------------------------------------------------------------------------
// Numerical stability and NaN handling
// ---------------------------------------------------------------------------------------------

fn sigmoid_stable_case<T: Float>() {
    let xs = [-1000.0, -100.0, -30.0, -1.0, 0.0, 1.0, 30.0, 100.0, 1000.0];
    let t = Tensor::from_vec(xs.iter().map(|&v| T::from_f64(v)).collect(), &[xs.len()]);
    let got: Vec<f64> = t.sigmoid().to_vec().iter().map(|v| v.to_f64()).collect();
    for (&x, &g) in xs.iter().zip(&got) {
        assert!(
            g.is_finite() && (0.0..=1.0).contains(&g),
            "sigmoid({x}) = {g}"
        );
        // The free function agrees with the tensor op.
        assert_eq!(tensor::sigmoid(T::from_f64(x)).to_f64(), g);
        if x.abs() <= 30.0 {
            // The plain formula is exact enough in f64 here; 8 eps as in `unary_case`.
            let want = 1.0 / (1.0 + (-x).exp());
            assert!((g - want).abs() <= 8.0 * eps::<T>() * want, "sigmoid({x})");
        }
    }
    // The true values are e^-1000 (below the smallest subnormal) and 1 - e^-1000.
    assert_eq!(got[0], 0.0);
    assert_eq!(got[8], 1.0);
    assert_eq!(got[4], 0.5);
    // Monotone even where it saturates.
    assert!(got.windows(2).all(|w| w[0] <= w[1]));
}

fn nan_propagation_case<T: Float>() {
    let nan = T::from_f64(f64::NAN);
    let one = T::ONE;
    let a = Tensor::from_vec(vec![nan, one, one], &[3]);
    let b = Tensor::from_vec(vec![T::ZERO, nan, T::ZERO], &[3]);
    for m in [a.maximum(&b), b.maximum(&a), a.minimum(&b), b.minimum(&a)] {
        let v = m.to_vec();
        assert!(v[0].is_nan() && v[1].is_nan(), "NaN must propagate: {v:?}");
    }
    assert_eq!(a.maximum(&b).to_vec()[2], one);
    assert_eq!(a.minimum(&b).to_vec()[2], T::ZERO);
    let v = a.maximum_scalar(T::ZERO).to_vec();
    assert!(v[0].is_nan());
    assert_eq!(v[1], one);
    // NaN compares false except with `ne`.
    assert_eq!(a.eq(&a).to_vec(), vec![false, true, true]);
    assert_eq!(a.ne(&a).to_vec(), vec![true, false, false]);
}

// ---------------------------------------------------------------------------------------------
// The suites, once per dtype
// ---------------------------------------------------------------------------------------------

macro_rules! suite {
    ($name:ident, $t:ty) => {
        mod $name {
            use super::*;

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(128))]

                #[test]
                fn unary_ops(
                    x in arb_input(Vals::Any, 10),
                    op in prop::sample::select(ANY_DOMAIN.to_vec()),
                    s in arb_value(Vals::AwayFromZero),
                ) {
                    unary_case::<$t>(&x, op, s)?;
                }

                #[test]
                fn unary_ops_on_positive_inputs(
                    x in arb_input(Vals::Positive, 10),
                    op in prop::sample::select(POSITIVE_DOMAIN.to_vec()),
                    s in arb_value(Vals::AwayFromZero),
                ) {
                    unary_case::<$t>(&x, op, s)?;
                }

                #[test]
                fn binary_ops_broadcast(
                    (a, b) in arb_input_pair(Vals::Any, Vals::AwayFromZero, 10),
                    op in prop::sample::select(BINARY.to_vec()),
                ) {
                    binary_case::<$t>(&a, &b, op)?;
                }

                #[test]
                fn binary_ops_broadcast_contiguous_operands(
                    (a, b) in arb_broadcast_pair(10).prop_flat_map(|(sa, sb)| (
                        arb_ref_of(sa, Vals::Any),
                        arb_ref_of(sb, Vals::AwayFromZero),
                    )),
                    op in prop::sample::select(BINARY.to_vec()),
                ) {
                    // Both operands plain row-major: the kernels' contiguous paths.
                    let a = Input { layout: Layout::contiguous(a.rank()), r: a };
                    let b = Input { layout: Layout::contiguous(b.rank()), r: b };
                    binary_case::<$t>(&a, &b, op)?;
                }

                #[test]
                fn operators(
                    (a, b) in arb_input_pair(Vals::Any, Vals::AwayFromZero, 10),
                    s in arb_value(Vals::AwayFromZero),
                ) {
                    operators_case::<$t>(&a, &b, s)?;
                }

                #[test]
                fn scalar_on_the_left(
                    x in arb_input(Vals::AwayFromZero, 10),
                    s in arb_value(Vals::Any),
                ) {
                    scalar_lhs_case!($t, x, s);
                }

                #[test]
                fn comparisons(
                    (a, b) in arb_input_pair(Vals::SmallInts, Vals::SmallInts, 10),
                    s in arb_value(Vals::SmallInts),
                ) {
                    compare_case::<$t>(&a, &b, s)?;
                }

                #[test]
                fn where_cond_broadcasts_three_ways(
                    (c, a, b) in arb_shape(4, 4, 10).prop_flat_map(|out| (
                        arb_broadcastable_to(out.clone()),
                        arb_broadcastable_to(out.clone()),
                        arb_broadcastable_to(out),
                    )).prop_flat_map(|(sc, sa, sb)| (
                        arb_input_of(sc, Vals::SmallInts),
                        arb_input_of(sa, Vals::Any),
                        arb_input_of(sb, Vals::Any),
                    )),
                ) {
                    where_case::<$t>(&c, &a, &b)?;
                }
            }

            #[test]
            fn sigmoid_is_stable() {
                sigmoid_stable_case::<$t>();
            }

            #[test]
            fn maximum_and_minimum_propagate_nan() {
                nan_propagation_case::<$t>();
            }
        }
    };
}

suite!(on_f32, f32);
suite!(on_f64, f64);

#[test]
fn map_to_changes_the_element_type() {
    let x = Tensor::from_vec(vec![1.5f64, -2.0, 0.0, 3.25], &[2, 2]).t();
    let idx: Tensor<i64> = x.map_to(|v| (v * 2.0) as i64);
    assert_eq!(idx.shape(), &[2, 2]);
    assert_eq!(idx.to_vec(), vec![3, 0, -4, 6]);
    let mask = x.map_to(|v| v > 0.0);
    assert_eq!(mask.to_vec(), vec![true, false, false, true]);
    assert_eq!(mask.not().to_vec(), vec![false, true, true, false]);
}

#[test]
fn scalar_tensors_broadcast_against_anything() {
    let s = Tensor::scalar(10.0f32);
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3, 1]);
    assert_eq!((&x + &s).shape(), &[3, 1]);
    assert_eq!((&s - &x).to_vec(), vec![9.0, 8.0, 7.0]);
    assert_eq!((&s * &s).shape(), &[] as &[usize]);
    assert_eq!((&s * &s).item(), 100.0);
}

#[test]
fn broadcasting_an_outer_product() {
    // [3, 1] + [4] -> [3, 4], entry (i, j) = col[i] + row[j].
    let col = Tensor::from_vec(vec![0.0f64, 10.0, 20.0], &[3, 1]);
    let row = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[4]);
    let sum = &col + &row;
    assert_eq!(sum.shape(), &[3, 4]);
    assert_eq!(
        sum.to_vec(),
        vec![1.0, 2.0, 3.0, 4.0, 11.0, 12.0, 13.0, 14.0, 21.0, 22.0, 23.0, 24.0]
    );
    assert_eq!((&row + &col).to_vec(), sum.to_vec());
    // Two operands with the same number of elements that still broadcast: [3, 1] · [1, 3].
    let row = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[1, 3]);
    let outer = &col * &row;
    assert_eq!(outer.shape(), &[3, 3]);
    assert_eq!(
        outer.to_vec(),
        vec![0.0, 0.0, 0.0, 10.0, 20.0, 30.0, 20.0, 40.0, 60.0]
    );
}

/// Inputs above the parallel threshold (32768 elements) are split into chunks that start in
/// the middle of a strided view; the results must still match the reference.
fn large_strided_case<T: Float>() {
    let (rows, cols) = (300, 410);
    let r = Ref::from_fn(&[rows, cols], |i| {
        ((i[0] * 7 + i[1] * 13) % 29) as f64 / 7.0 - 2.0
    })
    .rounded::<T>();
    let x = r.to_tensor::<T>();
    let xt = x.t(); // [410, 300], strides [1, 410]
    let rt = r.permute(&[1, 0]);
    let y = Ref::from_fn(&[rows], |i| i[0] as f64 / 100.0).rounded::<T>();
    let ty = y.to_tensor::<T>();
    // Tolerances as in `unary_case` and `binary_case`.
    check_rel(&xt.exp(), &rt.map(f64::exp), 4.0).unwrap();
    check_rel(&xt.mul_scalar(T::from_f64(3.0)), &rt.map(|v| v * 3.0), 1.0).unwrap();
    check_rel(&(&xt + &ty), &rt.zip(&y, |a, b| a + b), 1.0).unwrap();
    let narrowed = Ref::from_fn(&[400, rows], |i| rt.at(&[i[0] + 5, i[1]]));
    check_rel(
        &(&ty - &xt.narrow(0, 5, 400)),
        &y.zip(&narrowed, |a, b| a - b),
        1.0,
    )
    .unwrap();
    let bcast = ty.unsqueeze(1).broadcast_to(&[rows, cols]);
    let ry = Ref::new(&[rows, 1], y.data.clone()).broadcast_to(&[rows, cols]);
    check_rel(&bcast.mul(&x), &ry.zip(&r, |a, b| a * b), 1.0).unwrap();
    let mask = xt.gt_scalar(T::ZERO);
    check_exact(&mask, &rt.map(|v| as_f64(v > 0.0))).unwrap();
    let chosen = Tensor::where_cond(&mask, &xt, &ty);
    check_exact(&chosen, &rt.zip(&y, |a, b| if a > 0.0 { a } else { b })).unwrap();
}

#[test]
fn large_strided_inputs_f32() {
    large_strided_case::<f32>();
}

#[test]
fn large_strided_inputs_f64() {
    large_strided_case::<f64>();
}

/// relu keeps NaN (as PyTorch), and `minimum_scalar` mirrors `maximum_scalar`.
#[test]
fn relu_propagates_nan_and_minimum_scalar_clips_from_above() {
    let x = tensor::Tensor::from_vec(vec![f64::NAN, -1.0, 2.0], &[3]);
    let r = x.relu().to_vec();
    assert!(r[0].is_nan());
    assert_eq!(&r[1..], &[0.0, 2.0]);
    let m = x.minimum_scalar(1.0).to_vec();
    assert!(m[0].is_nan());
    assert_eq!(&m[1..], &[-1.0, 1.0]);
}
