//! `exp`, `tanh` and the logistic function written so that loops over them vectorise, for the
//! tensor ops [`Tensor::exp`](crate::Tensor::exp), [`Tensor::tanh`](crate::Tensor::tanh) and
//! [`Tensor::sigmoid`](crate::Tensor::sigmoid).
//!
//! The standard library's `exp` and `tanh` are calls into the C library, one element at a
//! time; these are branch-free (both sides of a choice are computed and one is selected), so
//! inside [`with_simd`](crate::simd::with_simd) a loop over them runs 8 or 16 lanes at once.
//! They follow Cephes (S. L. Moshier):
//!
//! ```text
//! exp(x)  = 2ⁿ · e^r,  n = round(x / ln 2),  r = x − n·ln 2 (in two parts, so r is exact)
//!           e^r: a degree-6 polynomial (f32), a Padé form 1 + 2r·P(r²)/(Q(r²) − r·P(r²)) (f64)
//! tanh(x) = x + x³·P(x²)              |x| < 0.625  (f32; f64: x + x³·P(x²)/Q(x²))
//!         = sign(x) · (1 − 2 / (e^{2|x|} + 1))     otherwise
//! σ(x)    = 1 / (1 + e^{−|x|})         x ≥ 0,   e^{−|x|} / (1 + e^{−|x|})  x < 0  (never overflows)
//! ```
//!
//! Accuracy, measured over sweeps of the inputs (`tests` below): within 2 ulp in f32 of the
//! C library's f64 result rounded to f32 (every 97th bit pattern), within 2 ulp in f64 of the
//! C library's own result (itself within 1 ulp of exact; 8 M values over [−746, 720] and a
//! sparse sweep of all bit patterns), with the IEEE results at the edges
//! (overflow to ∞, underflow through the subnormals to 0, ±1 for large |x|, NaN in, NaN out).
//! They are [`Float::vexp`](crate::Float::vexp), [`Float::vtanh`](crate::Float::vtanh) and
//! [`Float::vsigmoid`](crate::Float::vsigmoid).

// Cephes's coefficients, digit for digit as published.
#![allow(clippy::excessive_precision)]

/// The logistic function from `exp`: `1 / (1 + e^{−|x|})`, or `e^{−|x|} / (1 + e^{−|x|})` for x < 0.
macro_rules! sigmoid_from {
    ($name:ident, $t:ty, $exp:ident) => {
        #[inline(always)]
        pub(crate) fn $name(x: $t) -> $t {
            let e = $exp(-x.abs());
            // One division whatever the sign: the numerator is chosen first.
            let numerator = if x >= 0.0 { 1.0 } else { e };
            numerator / (1.0 + e)
        }
    };
}
sigmoid_from!(sigmoid_f32, f32, exp_f32);
sigmoid_from!(sigmoid_f64, f64, exp_f64);

/// 2ⁿ · y for an integral `n` in [−1076, 1024] (what `exp_f64`'s clamp leaves) without a
/// branch: the power is built from its exponent bits in two halves, each a normal number, so
/// results in the subnormal range round once more but are not flushed to zero.
#[inline(always)]
fn scale_f64(y: f64, n: f64) -> f64 {
    let half = (n * 0.5).trunc();
    // 2^k from its biased exponent k + 1023, read off the low bits of k + 1023 + 2^52 (a
    // float add and integer bit operations: no float-to-integer conversion, which does not
    // vectorise well).
    let pow =
        |k: f64| f64::from_bits(((k + (1023.0 + 4_503_599_627_370_496.0)).to_bits() & 0x7ff) << 52);
    y * pow(half) * pow(n - half)
}

#[inline(always)]
fn scale_f32(y: f32, n: f32) -> f32 {
    let half = (n * 0.5).trunc();
    let pow = |k: f32| f32::from_bits(((k + (127.0 + 8_388_608.0)).to_bits() & 0xff) << 23);
    y * pow(half) * pow(n - half)
}

/// e^x for f32 (Cephes `expf`).
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_375; // ln 2 in two parts: C1 has few bits, so n·C1 is exact
    const C2: f32 = -2.121_944_4e-4;
    // Beyond these, e^x is ∞ or rounds to 0; clamping keeps n within `scale_f32`'s range.
    let xc = x.clamp(-104.0, 89.0);
    let n = (xc * LOG2E + 0.5).floor();
    let r = xc - n * C1 - n * C2;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let y = p * (r * r) + r + 1.0;
    let e = scale_f32(y, n);
    if x > 88.722_84 {
        f32::INFINITY
    } else {
        e
    }
}

/// e^x for f64 (Cephes `exp`).
#[inline(always)]
pub(crate) fn exp_f64(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const C1: f64 = 6.931_457_519_531_25e-1;
    const C2: f64 = 1.428_606_820_309_417_232_12e-6;
    let xc = x.clamp(-746.0, 710.0);
    let n = (xc * LOG2E + 0.5).floor();
    let r = xc - n * C1 - n * C2;
    let rr = r * r;
    let p = r
        * ((1.261_771_930_748_105_908_78e-4 * rr + 3.029_944_077_074_419_613e-2) * rr
            + 9.999_999_999_999_999_999_1e-1);
    let q = ((3.001_985_051_386_644_550_42e-6 * rr + 2.524_483_403_496_841_041_92e-3) * rr
        + 2.272_655_482_081_550_287_66e-1)
        * rr
        + 2.000_000_000_000_000_000_09;
    let y = 1.0 + 2.0 * (p / (q - p));
    let e = scale_f64(y, n);
    if x > 709.782_712_893_384 {
        f64::INFINITY
    } else {
        e
    }
}

/// tanh for f32 (Cephes `tanhf`).
#[inline(always)]
pub(crate) fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    // Small |x|: an odd polynomial.
    let z = x * x;
    let mut p = -5.704_988_7e-3f32;
    p = p * z + 2.063_908_9e-2;
    p = p * z + -5.373_971_6e-2;
    p = p * z + 1.333_144_2e-1;
    p = p * z + -3.333_328_2e-1;
    // copysign: −0 stays −0 (the sum gives +0 there).
    let small = (p * z * x + x).copysign(x);
    // Large |x|: from e^{2|x|} (∞ beyond ~44, which gives exactly 1).
    let large = (1.0 - 2.0 / (exp_f32(2.0 * a) + 1.0)).copysign(x);
    if a < 0.625 {
        small
    } else {
        large
    }
}

/// tanh for f64 (Cephes `tanh`).
#[inline(always)]
pub(crate) fn tanh_f64(x: f64) -> f64 {
    let a = x.abs();
    let z = x * x;
    let p = (-9.643_991_794_250_522_386_28e-1 * z + -9.928_772_310_019_185_865_64e1) * z
        + -1.614_687_684_417_084_479_52e3;
    let q = ((z + 1.128_116_784_916_329_314_02e2) * z + 2.235_488_390_601_004_485_83e3) * z
        + 4.844_063_053_251_254_860_48e3;
    // copysign: −0 stays −0 (the sum gives +0 there).
    let small = (x + x * z * (p / q)).copysign(x);
    let large = (1.0 - 2.0 / (exp_f64(2.0 * a) + 1.0)).copysign(x);
    if a < 0.625 {
        small
    } else {
        large
    }
}

#[cfg(test)]
mod tests {
    use crate::Float;

    /// The distance in ulps between two floats of one sign (or zeros): the difference of their
    /// ordered bit patterns.
    fn ulps_f32(a: f32, b: f32) -> u64 {
        let key = |v: f32| {
            let bits = v.to_bits() as i64;
            if bits < 0x8000_0000 {
                bits
            } else {
                0x8000_0000 - bits
            }
        };
        (key(a) - key(b)).unsigned_abs()
    }

    fn ulps_f64(a: f64, b: f64) -> u64 {
        let key = |v: f64| {
            let bits = v.to_bits() as i128;
            if bits < 0x8000_0000_0000_0000 {
                bits
            } else {
                0x8000_0000_0000_0000 - bits
            }
        };
        (key(a) - key(b)).unsigned_abs() as u64
    }

    /// Every 97th f32 bit pattern (about 44 million values, all signs and exponents), and the
    /// functions against the C library's, rounded from f64 for f32 (so the reference is the
    /// correctly rounded value but for rare double roundings).
    #[test]
    fn f32_functions_are_within_2_ulp_of_the_exact_values() {
        let (mut exp, mut tanh, mut sig) = (0, 0, 0);
        for bits in (0..u32::MAX).step_by(97) {
            let x = f32::from_bits(bits);
            if x.is_nan() {
                assert!(x.vexp().is_nan() && x.vtanh().is_nan() && x.vsigmoid().is_nan());
                continue;
            }
            let xd = x as f64;
            exp = exp.max(ulps_f32(x.vexp(), xd.exp() as f32));
            tanh = tanh.max(ulps_f32(x.vtanh(), xd.tanh() as f32));
            sig = sig.max(ulps_f32(x.vsigmoid(), (1.0 / (1.0 + (-xd).exp())) as f32));
        }
        assert!(
            exp <= 2 && tanh <= 2 && sig <= 2,
            "ulps: exp {exp}, tanh {tanh}, σ {sig}"
        );
    }

    /// f64 against the C library (itself within 1 ulp of the exact values) over a dense sweep
    /// of the ranges where the results are neither 0, 1 nor ∞, and a sparse one of all bits.
    #[test]
    fn f64_functions_are_within_2_ulp_of_the_c_library() {
        let (mut exp, mut tanh, mut sig) = (0, 0, 0);
        let dense = (-4_145_000..=4_000_000).map(|i| i as f64 * 1.8e-4); // [−746.1, 720]
        let sparse = (0..u64::MAX)
            .step_by(0x0000_4000_0000_0001)
            .map(f64::from_bits);
        for x in dense.chain(sparse) {
            if x.is_nan() {
                assert!(x.vexp().is_nan() && x.vtanh().is_nan() && x.vsigmoid().is_nan());
                continue;
            }
            exp = exp.max(ulps_f64(x.vexp(), x.exp()));
            tanh = tanh.max(ulps_f64(x.vtanh(), x.tanh()));
            let s = if x >= 0.0 {
                1.0 / (1.0 + (-x).exp())
            } else {
                x.exp() / (1.0 + x.exp())
            };
            sig = sig.max(ulps_f64(x.vsigmoid(), s));
        }
        assert!(
            exp <= 2 && tanh <= 2 && sig <= 2,
            "ulps: exp {exp}, tanh {tanh}, σ {sig}"
        );
    }

    #[test]
    fn the_edges_are_ieee_results() {
        assert_eq!(f32::INFINITY.vexp(), f32::INFINITY);
        assert_eq!(89.0f32.vexp(), f32::INFINITY);
        assert_eq!(f32::NEG_INFINITY.vexp(), 0.0);
        assert_eq!((-200.0f32).vexp(), 0.0);
        assert!((-100.0f32).vexp() > 0.0); // subnormal, not flushed
        assert_eq!(f64::INFINITY.vexp(), f64::INFINITY);
        assert_eq!(710.0f64.vexp(), f64::INFINITY);
        assert_eq!((-800.0f64).vexp(), 0.0);
        assert!((-740.0f64).vexp() > 0.0);
        assert_eq!(0.0f64.vexp(), 1.0);
        assert_eq!(0.0f32.vexp(), 1.0);
        for (x, t) in [
            (f64::INFINITY, 1.0),
            (f64::NEG_INFINITY, -1.0),
            (50.0, 1.0),
            (0.0, 0.0),
        ] {
            assert_eq!(x.vtanh(), t);
            assert_eq!((x as f32).vtanh(), t as f32);
        }
        assert_eq!((-0.0f64).vtanh().to_bits(), (-0.0f64).to_bits());
        assert_eq!(f64::NEG_INFINITY.vsigmoid(), 0.0);
        assert_eq!(f64::INFINITY.vsigmoid(), 1.0);
        assert_eq!(0.0f32.vsigmoid(), 0.5);
        assert!((-100.0f64).vsigmoid() > 0.0);
    }
}
