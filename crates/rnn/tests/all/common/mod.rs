//! Helpers shared by the rnn test files.
#![allow(dead_code)] // each test file uses its own subset

use autograd::{GradcheckReport, Var};
use tensor::{Float, Rng, Tensor};

/// A tensor of U(−1, 1) values.
pub fn uniform<T: Float>(shape: &[usize], rng: &mut Rng) -> Tensor<T> {
    Tensor::rand_uniform(shape, T::from_f64(-1.0), T::ONE, rng)
}

/// max |actual − expected| ≤ tol, with a message naming `what` and the worst element.
#[track_caller]
pub fn assert_close<T: Float>(what: &str, actual: &Tensor<T>, expected: &Tensor<T>, tol: f64) {
    assert_eq!(actual.shape(), expected.shape(), "{what}: shapes differ");
    let (a, e) = (actual.to_vec(), expected.to_vec());
    let (mut worst, mut at) = (0.0f64, 0);
    for (i, (x, y)) in a.iter().zip(&e).enumerate() {
        let d = (x.to_f64() - y.to_f64()).abs();
        if d > worst || d.is_nan() {
            worst = d;
            at = i;
            if d.is_nan() {
                break;
            }
        }
    }
    assert!(
        worst <= tol,
        "{what}: max |actual − expected| = {worst:.3e} > {tol:e} at flat index {at} \
         (actual {}, expected {})",
        a[at].to_f64(),
        e[at].to_f64()
    );
}

/// Every element bit-for-bit equal.
#[track_caller]
pub fn assert_bits_eq<T: Float>(what: &str, actual: &Tensor<T>, expected: &Tensor<T>) {
    assert_eq!(actual.shape(), expected.shape(), "{what}: shapes differ");
    let a: Vec<u64> = actual
        .to_vec()
        .iter()
        .map(|v| v.to_f64().to_bits())
        .collect();
    let e: Vec<u64> = expected
        .to_vec()
        .iter()
        .map(|v| v.to_f64().to_bits())
        .collect();
    if let Some(i) = (0..a.len()).find(|&i| a[i] != e[i]) {
        panic!(
            "{what}: element {i} differs: {} vs {}",
            f64::from_bits(a[i]),
            f64::from_bits(e[i])
        );
    }
}

/// Every part flattened and joined into one vector, so a gradient check covers all outputs.
pub fn flat_concat(parts: &[Var<f64>]) -> Var<f64> {
    let flat: Vec<Var<f64>> = parts.iter().map(|p| p.flatten()).collect();
    Var::concat(&flat.iter().collect::<Vec<_>>(), 0)
}

/// Turns a failed gradient check into a proptest failure with the report.
pub fn check(report: GradcheckReport) -> Result<(), proptest::test_runner::TestCaseError> {
    proptest::prop_assert!(report.passed(), "{}", report);
    Ok(())
}

/// The message of the panic `f` raises.
///
/// # Panics
/// If `f` returns instead.
pub fn panic_message<R>(f: impl FnOnce() -> R) -> String {
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .err()
        .expect("no panic");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap()
}

/// Runs `work` in a rayon pool of `threads` threads, whatever the machine has.
pub fn on_threads<R: Send>(threads: usize, work: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool")
        .install(work)
}
