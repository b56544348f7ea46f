//! The element types a [`Tensor`](crate::Tensor) can hold.
//!
//! [`Element`] is what every tensor needs: it is enough for views, copies and the structural ops
//! (`concat`, `index_select`, ...). [`Float`] adds the arithmetic, and is implemented for `f32`
//! (training) and `f64` (gradient checks). `i64` is there for index tensors (as PyTorch's
//! `int64`) and `bool` for comparison masks.
//!
//! The scalar logistic function [`sigmoid`] lives here too, beside the fast `f32` tanh and
//! sigmoid behind [`Float::fast_tanh`] and [`Float::fast_sigmoid`] (the `f64` fast sigmoid
//! is [`sigmoid`] itself): this module depends on nothing in `ops`.

use std::fmt;

use crate::math;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// The runtime tag of an element type, as printed by `Display` and stored in files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// 64-bit signed integer (indices).
    I64,
    /// Boolean (masks).
    Bool,
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::Bool => "bool",
        })
    }
}

/// Anything a tensor can store.
pub trait Element:
    Copy + Send + Sync + PartialEq + PartialOrd + Default + fmt::Debug + fmt::Display + 'static
{
    /// The runtime tag of this type.
    const DTYPE: DType;
    /// Converts to `f64` (`true` is 1, `false` is 0).
    fn to_f64(self) -> f64;
    /// Converts from `f64` (rounding for floats, truncation for `i64`, `!= 0` for `bool`).
    fn from_f64(v: f64) -> Self;
}

/// A floating-point element: `f32` or `f64`.
pub trait Float:
    Element
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + std::iter::Sum
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// Positive infinity.
    const INFINITY: Self;
    /// Negative infinity.
    const NEG_INFINITY: Self;
    /// Machine epsilon.
    const EPSILON: Self;
    /// e^x.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// x^p.
    fn powf(self, p: Self) -> Self;
    /// |x|.
    fn abs(self) -> Self;
    /// `true` for NaN.
    fn is_nan(self) -> bool;
    /// `true` unless NaN or infinite.
    fn is_finite(self) -> bool;
    /// `self · a + b`, rounded once (a fused multiply-add). Only fast where the CPU has FMA
    /// and the code is compiled for it; elsewhere prefer `self * a + b`.
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// tanh for hot loops: exactly [`tanh`](Self::tanh) for `f64`; for `f32` a branch-free
    /// rational approximation (absolute error below 1e-6) that the compiler vectorises, made
    /// of fused multiply-adds: fast inside [`with_simd`](crate::simd::with_simd).
    fn fast_tanh(self) -> Self;
    /// The logistic function for hot loops: exactly [`sigmoid`] for `f64`; for `f32`
    /// `(1 + tanh(x/2)) / 2` with [`fast_tanh`](Self::fast_tanh).
    fn fast_sigmoid(self) -> Self;
    /// e^x without a branch, so that loops over it vectorise; within 2 ulp of the C library's
    /// result on the sweeps `math.rs` tests. What [`Tensor::exp`](crate::Tensor::exp) computes.
    fn vexp(self) -> Self;
    /// tanh(x) without a branch, within 2 ulp (see `math.rs`): [`Tensor::tanh`](crate::Tensor::tanh).
    fn vtanh(self) -> Self;
    /// The logistic function without a branch or an overflow, within 2 ulp (see `math.rs`):
    /// [`Tensor::sigmoid`](crate::Tensor::sigmoid).
    fn vsigmoid(self) -> Self;
}

macro_rules! impl_float {
    ($t:ty, $dtype:expr, $fast_tanh:expr, $fast_sigmoid:expr, [$vexp:expr, $vtanh:expr, $vsigmoid:expr]) => {
        impl Element for $t {
            const DTYPE: DType = $dtype;
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
        }

        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const INFINITY: Self = <$t>::INFINITY;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            const EPSILON: Self = <$t>::EPSILON;
            #[inline]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn powf(self, p: Self) -> Self {
                <$t>::powf(self, p)
            }
            #[inline]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
            #[inline(always)]
            fn fast_tanh(self) -> Self {
                $fast_tanh(self)
            }
            #[inline(always)]
            fn fast_sigmoid(self) -> Self {
                $fast_sigmoid(self)
            }
            #[inline(always)]
            fn vexp(self) -> Self {
                $vexp(self)
            }
            #[inline(always)]
            fn vtanh(self) -> Self {
                $vtanh(self)
            }
            #[inline(always)]
            fn vsigmoid(self) -> Self {
                $vsigmoid(self)
            }
        }
    };
}

impl_float!(
    f32,
    DType::F32,
    tanh_f32,
    sigmoid_f32,
    [math::exp_f32, math::tanh_f32, math::sigmoid_f32]
);
impl_float!(
    f64,
    DType::F64,
    f64::tanh,
    sigmoid::<f64>,
    [math::exp_f64, math::tanh_f64, math::sigmoid_f64]
);

/// The numerically stable logistic function 1 / (1 + e^-x): for x < 0 it is computed as
/// e^x / (1 + e^x), whose exponential is at most 1. It is [`Float::vsigmoid`] (within 2 ulp,
/// branch-free), what [`Tensor::sigmoid`](crate::Tensor::sigmoid) computes per element.
///
/// ```
/// assert_eq!(tensor::sigmoid(0.0f64), 0.5);
/// assert_eq!(tensor::sigmoid(-1000.0f32), 0.0);
/// ```
#[inline]
pub fn sigmoid<T: Float>(x: T) -> T {
    x.vsigmoid()
}

/// tanh(x) ≈ x·p(x²)/q(x²) on [−8, 8], the minimax rational approximation Eigen uses for
/// `float`; exactly ±1 beyond (true tanh is within 2.4e-7 of ±1 there, and rounds to ±1 in
/// `f32` from about ±9). No branches, so loops over it vectorise.
///
/// The polynomials are evaluated with fused multiply-adds: inside
/// [`with_simd`](crate::simd::with_simd), where the hot loops run, that is 9 instructions
/// fewer than a multiply and an add each, and a third faster. On an x86 CPU without FMA
/// (older than 2013) each multiply-add is a library call instead and the loops do not
/// vectorise: correct, but slow. The clamp is Eigen's for the FMA evaluation: the one for
/// separate operations (7.905 311) gives 0.999 999 9 there, not 1.
#[inline(always)]
fn tanh_f32(x: f32) -> f32 {
    const CLAMP: f32 = 7.998_811_7;
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let mut p = -2.760_768_5e-16f32;
    p = p.mul_add(x2, 2.000_188e-13);
    p = p.mul_add(x2, -8.604_672e-11);
    p = p.mul_add(x2, 5.122_297e-8);
    p = p.mul_add(x2, 1.485_722_4e-5);
    p = p.mul_add(x2, 6.372_619_3e-4);
    p = p.mul_add(x2, 4.893_524_6e-3);
    let mut q = 1.198_258_4e-6f32;
    q = q.mul_add(x2, 1.185_347e-4);
    q = q.mul_add(x2, 2.268_434_6e-3);
    q = q.mul_add(x2, 4.893_525e-3);
    x * p / q
}

/// σ(x) = (1 + tanh(x/2)) / 2 with [`tanh_f32`].
#[inline(always)]
fn sigmoid_f32(x: f32) -> f32 {
    tanh_f32(0.5 * x).mul_add(0.5, 0.5)
}

impl Element for i64 {
    const DTYPE: DType = DType::I64;
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as i64
    }
}

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    fn to_f64(self) -> f64 {
        if self {
            1.0
        } else {
            0.0
        }
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f32 approximations against the exact f64 functions over [−20, 20] (and beyond the
    /// clamp): 1e-6 absolute is a few f32 ulps of values in [−1, 1].
    #[test]
    fn fast_activations_match_std_within_1e6() {
        let mut worst_tanh = 0.0f64;
        let mut worst_sigmoid = 0.0f64;
        for i in -200_000..=200_000 {
            let x = i as f64 * 1e-4;
            let xf = x as f32;
            let t = xf.fast_tanh();
            assert!(t.abs() <= 1.0, "tanh({xf}) = {t}");
            worst_tanh = worst_tanh.max((t as f64 - (xf as f64).tanh()).abs());
            let exact = 1.0 / (1.0 + (-(xf as f64)).exp());
            worst_sigmoid = worst_sigmoid.max((xf.fast_sigmoid() as f64 - exact).abs());
        }
        assert!(worst_tanh < 1e-6, "tanh error {worst_tanh:e}");
        assert!(worst_sigmoid < 1e-6, "sigmoid error {worst_sigmoid:e}");
        assert_eq!(1e30f32.fast_tanh(), 1.0);
        assert_eq!(8.0f32.fast_tanh(), 1.0); // past the clamp: exactly ±1 (true: 1 − 2.3e-7)
        assert_eq!((-8.0f32).fast_tanh(), -1.0);
        assert_eq!((-1e30f32).fast_sigmoid(), 0.0);
        assert_eq!(0.3f64.fast_tanh(), 0.3f64.tanh());
    }
}
