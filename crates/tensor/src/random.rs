//! Seeded random numbers: [Xoshiro256++](https://prng.di.unimi.it/) seeded through SplitMix64,
//! written out here so a seed gives the same numbers forever, whatever any crate's default
//! generator becomes. The state is four `u64`s that can be saved and restored.

use crate::element::Float;
use crate::tensor::Tensor;

/// A Xoshiro256++ generator.
///
/// ```
/// use tensor::{Rng, Tensor};
/// let mut rng = Rng::seed_from_u64(42);
/// let w = Tensor::<f32>::rand_uniform(&[4, 3], -0.5, 0.5, &mut rng);
/// assert!(w.to_vec().iter().all(|&v| (-0.5..0.5).contains(&v)));
/// let again = Tensor::<f32>::rand_uniform(&[4, 3], -0.5, 0.5, &mut Rng::seed_from_u64(42));
/// assert_eq!(w.to_vec(), again.to_vec());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose state is expanded from `seed` by SplitMix64 (the seeding the
    /// Xoshiro authors recommend).
    pub fn seed_from_u64(seed: u64) -> Self {
        let mut x = seed;
        let mut splitmix = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng {
            s: [splitmix(), splitmix(), splitmix(), splitmix()],
        }
    }

    /// The full state, for checkpoints.
    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    /// A generator continuing from a saved [`state`](Self::state). An all-zero state (which
    /// Xoshiro cannot leave) is replaced by the state of seed 0.
    pub fn from_state(s: [u64; 4]) -> Self {
        if s == [0; 4] {
            Self::seed_from_u64(0)
        } else {
            Rng { s }
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `0..n` (`n > 0`), by rejection so there is no modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below: n must be positive");
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Standard normal by the Box–Muller transform.
    pub fn normal(&mut self) -> f64 {
        // 1 - u is in (0, 1], so the log is finite.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Shuffles a slice in place (Fisher–Yates).
    pub fn shuffle<X>(&mut self, items: &mut [X]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

impl<T: Float> Tensor<T> {
    /// Uniform in `[low, high)`.
    #[track_caller]
    pub fn rand_uniform(shape: &[usize], low: T, high: T, rng: &mut Rng) -> Self {
        let (lo, hi) = (low.to_f64(), high.to_f64());
        let n = crate::shape::alloc_numel("rand_uniform", shape, size_of::<T>());
        let data = (0..n)
            .map(|_| {
                let v = T::from_f64(lo + (hi - lo) * rng.next_f64());
                // Rounding to f32 can land on `high`; keep the interval half-open.
                if v >= high && high > low {
                    low
                } else {
                    v
                }
            })
            .collect();
        Tensor::from_contiguous(data, shape.to_vec())
    }

    /// Normal with the given mean and standard deviation.
    #[track_caller]
    pub fn rand_normal(shape: &[usize], mean: T, std: T, rng: &mut Rng) -> Self {
        let n = crate::shape::alloc_numel("rand_normal", shape, size_of::<T>());
        let data = (0..n)
            .map(|_| T::from_f64(mean.to_f64() + std.to_f64() * rng.normal()))
            .collect();
        Tensor::from_contiguous(data, shape.to_vec())
    }
}
