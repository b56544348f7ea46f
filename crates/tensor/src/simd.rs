//! Running a hot loop with the widest vector instructions this CPU has.
//!
//! The crate is compiled for the baseline x86-64 (SSE2), so loops vectorise 4 lanes wide at
//! most. [`with_simd`] runs a [`SimdWork`] from inside a function compiled for AVX-512 or
//! AVX2 + FMA, chosen at run time; its `#[inline(always)]` `run` (and whatever
//! `#[inline(always)]` code that calls) is inlined there and compiled for those instructions.

/// A piece of work to compile for several instruction sets. Implement [`run`](Self::run)
/// with `#[inline(always)]`: that is what lets [`with_simd`] compile it inside its
/// target-specific functions (a closure would stay a separate, baseline function).
pub trait SimdWork {
    /// What the work returns.
    type Output;
    /// Does the work.
    fn run(self) -> Self::Output;
}

/// Runs `work` compiled for AVX-512F, or AVX2 + FMA, when the CPU has them; otherwise plainly.
/// Results are the same up to the rounding of operations the compiler may fuse into FMAs.
///
/// ```
/// use tensor::simd::{with_simd, SimdWork};
/// struct Double<'a>(&'a mut [f32]);
/// impl SimdWork for Double<'_> {
///     type Output = ();
///     #[inline(always)]
///     fn run(self) {
///         self.0.iter_mut().for_each(|x| *x *= 2.0);
///     }
/// }
/// let mut v = vec![0.5f32; 1000];
/// with_simd(Double(&mut v));
/// assert!(v.iter().all(|&x| x == 1.0));
/// ```
#[inline(always)]
pub fn with_simd<W: SimdWork>(work: W) -> W::Output {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX-512F and FMA (checked just above); `avx512` only
            // runs `work`, and compiling it for those instructions is all it assumes.
            return unsafe { avx512(work) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above), all `avx2` assumes.
            return unsafe { avx2(work) };
        }
    }
    work.run()
}

/// Whether [`with_simd`] runs its work compiled with FMA on this CPU (it picks AVX-512F + FMA
/// or AVX2 + FMA when present). Code inside it may use `mul_add` when this is true; elsewhere
/// `mul_add` is a slow library call.
pub fn simd_has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("fma")
            && (std::arch::is_x86_feature_detected!("avx512f")
                || std::arch::is_x86_feature_detected!("avx2"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The width in bytes of the vectors [`with_simd`] compiles for on this CPU: 64 (AVX-512),
/// 32 (AVX2) or 16 (the baseline). Kernels size their register blocks by it.
pub fn simd_vector_bytes() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        // The same tests, in the same order, as `with_simd`'s.
        if std::arch::is_x86_feature_detected!("fma") {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return 64;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return 32;
            }
        }
    }
    16
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn avx512<W: SimdWork>(work: W) -> W::Output {
    work.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<W: SimdWork>(work: W) -> W::Output {
    work.run()
}
