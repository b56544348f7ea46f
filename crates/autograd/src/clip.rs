//! Gradient clipping over a set of parameters, as `torch.nn.utils.clip_grad_norm_` and
//! `clip_grad_value_`.

use tensor::Float;

use crate::param::Param;

/// Scales all gradients together so their global L2 norm is at most `max_norm`, and returns
/// the norm before clipping: ‖g‖ = √(Σ over params Σ g²), then each g ← g·min(1, max/(‖g‖ + 1e-6)).
///
/// ```
/// use autograd::{clip_grad_norm, Param};
/// use tensor::Tensor;
/// let p = Param::new("p", Tensor::<f64>::zeros(&[2]));
/// p.set_grad(Some(Tensor::from_vec(vec![3.0, 4.0], &[2])));
/// let norm = clip_grad_norm(&[p.clone()], 1.0);
/// assert_eq!(norm, 5.0);
/// let g = p.grad().unwrap().to_vec();
/// assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
/// ```
///
/// # Panics
/// If `max_norm` is negative or NaN: PyTorch would scale the gradients by a negative factor
/// and turn every step uphill. (Infinity is fine: it clips nothing.)
#[track_caller]
pub fn clip_grad_norm<T: Float>(params: &[Param<T>], max_norm: f64) -> f64 {
    assert!(
        max_norm >= 0.0,
        "clip_grad_norm: max_norm {max_norm} must be >= 0"
    );
    let total: f64 = params
        .iter()
        .filter_map(Param::grad)
        .map(|g| {
            g.to_vec()
                .iter()
                .map(|&x| x.to_f64() * x.to_f64())
                .sum::<f64>()
        })
        .sum::<f64>()
        .sqrt();
    let coef = (max_norm / (total + 1e-6)).min(1.0);
    if coef < 1.0 {
        for p in params {
            if let Some(g) = p.grad() {
                p.set_grad(Some(g.mul_scalar(T::from_f64(coef))));
            }
        }
    }
    total
}

/// Clamps every gradient element into `[-clip, clip]`.
///
/// # Panics
/// If `clip` is negative or NaN (an empty interval would zero or invert every gradient).
#[track_caller]
pub fn clip_grad_value<T: Float>(params: &[Param<T>], clip: f64) {
    assert!(clip >= 0.0, "clip_grad_value: clip {clip} must be >= 0");
    let c = T::from_f64(clip);
    for p in params {
        if let Some(g) = p.grad() {
            p.set_grad(Some(g.clamp(-c, c)));
        }
    }
}
