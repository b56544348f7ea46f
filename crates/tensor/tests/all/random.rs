//! `Rng`: known answers for Xoshiro256++ and its SplitMix64 seeding (checked against the
//! reference algorithms, written out here independently from the published C code), state
//! round trips, and the distributions of `next_f64`, `below`, `shuffle`, `rand_uniform` and
//! `rand_normal`, with statistical tolerances of five standard errors.

use tensor::{Float, Rng, Tensor};

/// Xoshiro256++ as published at <https://prng.di.unimi.it/xoshiro256plusplus.c>:
///
/// ```c
/// uint64_t next(void) {
///     const uint64_t result = rotl(s[0] + s[3], 23) + s[0];
///     const uint64_t t = s[1] << 17;
///     s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
///     s[2] ^= t;
///     s[3] = rotl(s[3], 45);
///     return result;
/// }
/// ```
struct Reference {
    s: [u64; 4],
}

impl Reference {
    fn next(&mut self) -> u64 {
        let rotl = u64::rotate_left;
        let s = &mut self.s;
        let result = rotl(s[0].wrapping_add(s[3]), 23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = rotl(s[3], 45);
        result
    }
}

/// SplitMix64 as published at <https://prng.di.unimi.it/splitmix64.c>, the seeding the
/// Xoshiro authors recommend.
fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn xoshiro256pp_known_answers() {
    let mut rng = Rng::from_state([1, 2, 3, 4]);
    // By hand: rotl(1 + 4, 23) + 1 = 5·2²³ + 1.
    assert_eq!(rng.next_u64(), 41_943_041);
    // The state is then s = [7, 0, 262146, 6·2⁴⁵]; rotl(7 + 6·2⁴⁵, 23) moves 7 to 7·2²³ and
    // wraps bits 46 and 47 round to bits 5 and 6 (96); plus s[0] = 7.
    assert_eq!(rng.next_u64(), 7 * (1 << 23) + 96 + 7);
    assert_eq!(rng.state(), {
        let mut r = Reference { s: [1, 2, 3, 4] };
        r.next();
        r.next();
        r.s
    });
    // And a long run against the reference.
    let mut reference = Reference { s: [1, 2, 3, 4] };
    let mut rng = Rng::from_state([1, 2, 3, 4]);
    for i in 0..10_000 {
        assert_eq!(rng.next_u64(), reference.next(), "output {i}");
    }
}

#[test]
fn seeding_is_splitmix64() {
    // SplitMix64 from 0 starts 0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, ... (a widely
    // published test vector).
    let mut x = 0;
    let first: Vec<u64> = (0..4).map(|_| splitmix64(&mut x)).collect();
    assert_eq!(first[0], 0xe220_a839_7b1d_cdaf);
    assert_eq!(first[1], 0x6e78_9e6a_a1b9_65f4);
    assert_eq!(Rng::seed_from_u64(0).state().to_vec(), first);
    for seed in [1, 42, u64::MAX] {
        let mut x = seed;
        let s = [
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
        ];
        assert_eq!(Rng::seed_from_u64(seed).state(), s);
        let mut reference = Reference { s };
        let mut rng = Rng::seed_from_u64(seed);
        for _ in 0..100 {
            assert_eq!(rng.next_u64(), reference.next());
        }
    }
}

#[test]
fn state_round_trips() {
    let mut rng = Rng::seed_from_u64(2024);
    for _ in 0..17 {
        rng.next_u64();
    }
    let saved = rng.state();
    let mut restored = Rng::from_state(saved);
    assert_eq!(restored, rng);
    assert_eq!(restored.state(), saved);
    for _ in 0..100 {
        assert_eq!(restored.next_u64(), rng.next_u64());
    }
    // A tensor drawn after restoring matches one drawn from the original.
    let a = Tensor::<f32>::rand_normal(&[5, 5], 0.0, 1.0, &mut rng);
    let b = Tensor::<f32>::rand_normal(&[5, 5], 0.0, 1.0, &mut restored);
    assert_eq!(a.to_vec(), b.to_vec());
    // The all-zero state (a fixed point of Xoshiro) is replaced by seed 0's.
    assert_eq!(Rng::from_state([0; 4]), Rng::seed_from_u64(0));
}

#[test]
fn next_f64_uses_the_top_53_bits() {
    let mut rng = Rng::seed_from_u64(5);
    let mut reference = Reference {
        s: Rng::seed_from_u64(5).state(),
    };
    for _ in 0..1000 {
        let want = (reference.next() >> 11) as f64 / (1u64 << 53) as f64;
        assert_eq!(rng.next_f64(), want);
    }
}

/// Mean and (population) standard deviation.
fn moments(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn next_f64_is_uniform() {
    let mut rng = Rng::seed_from_u64(11);
    let n = 100_000;
    let v: Vec<f64> = (0..n).map(|_| rng.next_f64()).collect();
    assert!(v.iter().all(|x| (0.0..1.0).contains(x)));
    let (mean, std) = moments(&v);
    // U(0, 1) has mean 1/2 and variance 1/12; five standard errors of the mean.
    assert!(
        (mean - 0.5).abs() < 5.0 * (1.0 / 12.0 / n as f64).sqrt(),
        "{mean}"
    );
    // The sample variance of U(0,1) has standard error sqrt((1/80 - 1/144) / n) ≈ 0.00024.
    assert!((std * std - 1.0 / 12.0).abs() < 5.0 * ((1.0 / 80.0 - 1.0 / 144.0) / n as f64).sqrt());
}

#[test]
fn below_is_in_range_and_unbiased() {
    let mut rng = Rng::seed_from_u64(3);
    let (n, draws) = (6u64, 60_000);
    let mut counts = [0usize; 6];
    for _ in 0..draws {
        counts[rng.below(n) as usize] += 1;
    }
    // Binomial(60000, 1/6): standard deviation sqrt(60000 · 1/6 · 5/6) ≈ 91.
    let sd = (draws as f64 * (1.0 / 6.0) * (5.0 / 6.0)).sqrt();
    for c in counts {
        assert!((c as f64 - 10_000.0).abs() < 5.0 * sd, "{counts:?}");
    }
    assert!((0..100).all(|_| rng.below(1) == 0));
    let big = (1u64 << 63) + 1; // most of the u64 range is rejected above this
    assert!((0..100).all(|_| rng.below(big) < big));
}

#[test]
fn shuffle_permutes() {
    let mut items: Vec<usize> = (0..100).collect();
    Rng::seed_from_u64(9).shuffle(&mut items);
    let mut sorted = items.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    // Not the identity (probability 1/100!), and reproducible.
    assert_ne!(items, sorted);
    let mut again: Vec<usize> = (0..100).collect();
    Rng::seed_from_u64(9).shuffle(&mut again);
    assert_eq!(items, again);
    // Every element lands in position 0 about equally often.
    let mut first = [0usize; 4];
    let mut rng = Rng::seed_from_u64(10);
    for _ in 0..40_000 {
        let mut v = [0, 1, 2, 3];
        rng.shuffle(&mut v);
        first[v[0]] += 1;
    }
    let sd = (40_000.0f64 * 0.25 * 0.75).sqrt();
    assert!(
        first
            .iter()
            .all(|&c| (c as f64 - 10_000.0).abs() < 5.0 * sd),
        "{first:?}"
    );
}

fn uniform_case<T: Float>() {
    let (lo, hi) = (-0.5, 2.0);
    let n = 100_000;
    let t = Tensor::<T>::rand_uniform(
        &[100, 1000],
        T::from_f64(lo),
        T::from_f64(hi),
        &mut Rng::seed_from_u64(1),
    );
    assert_eq!(t.shape(), &[100, 1000]);
    let v: Vec<f64> = t.to_vec().iter().map(|x| x.to_f64()).collect();
    assert!(v.iter().all(|x| (lo..hi).contains(x)));
    let (mean, std) = moments(&v);
    // U(lo, hi): mean (lo + hi)/2, sd (hi - lo)/√12; five standard errors.
    let sd = (hi - lo) / 12f64.sqrt();
    assert!((mean - 0.75).abs() < 5.0 * sd / (n as f64).sqrt(), "{mean}");
    assert!((std - sd).abs() < 0.01, "{std}");
    // Both ends are reached (the chance of no value in the lowest 1% is 0.99^100000).
    assert!(v.iter().any(|&x| x < lo + 0.01 * (hi - lo)));
    assert!(v.iter().any(|&x| x > hi - 0.01 * (hi - lo)));
    // Same seed, same values; another seed, other values.
    let again = Tensor::<T>::rand_uniform(
        &[100, 1000],
        T::from_f64(lo),
        T::from_f64(hi),
        &mut Rng::seed_from_u64(1),
    );
    assert_eq!(t.to_vec(), again.to_vec());
    let other = Tensor::<T>::rand_uniform(
        &[100, 1000],
        T::from_f64(lo),
        T::from_f64(hi),
        &mut Rng::seed_from_u64(2),
    );
    assert_ne!(t.to_vec(), other.to_vec());
}

fn normal_case<T: Float>() {
    let (mu, sigma) = (3.0, 2.0);
    let n = 200_000;
    let t = Tensor::<T>::rand_normal(
        &[n],
        T::from_f64(mu),
        T::from_f64(sigma),
        &mut Rng::seed_from_u64(4),
    );
    let v: Vec<f64> = t.to_vec().iter().map(|x| x.to_f64()).collect();
    assert!(v.iter().all(|x| x.is_finite()));
    let (mean, std) = moments(&v);
    // Five standard errors: σ/√n for the mean, σ/√(2n) for the standard deviation.
    let nf = n as f64;
    assert!((mean - mu).abs() < 5.0 * sigma / nf.sqrt(), "mean {mean}");
    assert!(
        (std - sigma).abs() < 5.0 * sigma / (2.0 * nf).sqrt(),
        "std {std}"
    );
    // About 68.27% within one σ; binomial standard error sqrt(p(1-p)/n).
    let p = v.iter().filter(|&&x| (x - mu).abs() < sigma).count() as f64 / nf;
    assert!(
        (p - 0.682_689).abs() < 5.0 * (0.6827 * 0.3173 / nf).sqrt(),
        "{p}"
    );
    // Symmetric: about half above the mean.
    let above = v.iter().filter(|&&x| x > mu).count() as f64 / nf;
    assert!((above - 0.5).abs() < 5.0 * (0.25 / nf).sqrt(), "{above}");
}

#[test]
fn uniform_f32() {
    uniform_case::<f32>();
}

#[test]
fn uniform_f64() {
    uniform_case::<f64>();
}

#[test]
fn normal_f32() {
    normal_case::<f32>();
}

#[test]
fn normal_f64() {
    normal_case::<f64>();
}

#[test]
fn uniform_stays_below_high_after_rounding_to_f32() {
    // [1, next float after 1): every draw rounds to 1 or to `high`; `high` is excluded.
    let high = f32::from_bits(1.0f32.to_bits() + 1);
    let t = Tensor::<f32>::rand_uniform(&[10_000], 1.0, high, &mut Rng::seed_from_u64(8));
    assert!(t.to_vec().iter().all(|&x| x == 1.0));
    // An empty range gives `low`.
    let t = Tensor::<f64>::rand_uniform(&[10], 2.0, 2.0, &mut Rng::seed_from_u64(8));
    assert!(t.to_vec().iter().all(|&x| x == 2.0));
}
