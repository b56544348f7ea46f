//! Losses, as PyTorch's functional ones.
//!
//! ```text
//! mse(ŷ, y)  = mean((ŷ − y)²)
//! l1(ŷ, y)   = mean(|ŷ − y|)
//! nll(lp, t) = −mean over kept n of lp[n, t_n]        (lp: log-probabilities [N, C])
//! cross_entropy(z, t) = nll(log_softmax(z), t)        (z: logits [N, C])
//! ```
//!
//! Targets equal to `ignore_index`, or where `mask` is false, contribute nothing, and the mean
//! is over the kept targets only (NaN if none is kept, as in PyTorch).

use autograd::{IntoVar, Var};
use tensor::{Float, Tensor};

/// How a loss reduces over elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduction {
    /// The mean (default).
    #[default]
    Mean,
    /// The sum.
    Sum,
    /// No reduction: one loss per element (per target for NLL and cross-entropy).
    None,
}

/// Options of [`nll_loss_with`] and [`cross_entropy_with`].
#[derive(Clone, Debug, Default)]
pub struct ClassLossOptions {
    /// Targets equal to this are skipped (PyTorch's default is -100; here `None`).
    pub ignore_index: Option<i64>,
    /// Targets where this `[N]` mask is false are skipped.
    pub mask: Option<Tensor<bool>>,
    /// How to reduce.
    pub reduction: Reduction,
}

fn reduce<T: Float>(per_element: Var<T>, reduction: Reduction) -> Var<T> {
    match reduction {
        Reduction::Mean => per_element.mean_all(),
        Reduction::Sum => per_element.sum_all(),
        Reduction::None => per_element,
    }
}

/// Mean squared error.
#[track_caller]
pub fn mse_loss<T: Float>(prediction: &Var<T>, target: impl IntoVar<T>) -> Var<T> {
    mse_loss_with(prediction, target, Reduction::Mean)
}

/// Squared error with a choice of reduction.
#[track_caller]
pub fn mse_loss_with<T: Float>(
    prediction: &Var<T>,
    target: impl IntoVar<T>,
    r: Reduction,
) -> Var<T> {
    reduce(prediction.sub(target).square(), r)
}

/// Mean absolute error.
#[track_caller]
pub fn l1_loss<T: Float>(prediction: &Var<T>, target: impl IntoVar<T>) -> Var<T> {
    l1_loss_with(prediction, target, Reduction::Mean)
}

/// Absolute error with a choice of reduction.
#[track_caller]
pub fn l1_loss_with<T: Float>(
    prediction: &Var<T>,
    target: impl IntoVar<T>,
    r: Reduction,
) -> Var<T> {
    reduce(prediction.sub(target).abs(), r)
}

/// Negative log-likelihood of `targets` (`[N]` class indices) under `log_probs` (`[N, C]`).
#[track_caller]
pub fn nll_loss<T: Float>(log_probs: &Var<T>, targets: &Tensor<i64>) -> Var<T> {
    nll_loss_with(log_probs, targets, &ClassLossOptions::default())
}

/// Cross-entropy of `targets` (`[N]`) given unnormalised `logits` (`[N, C]`), computed
/// stably through `log_softmax`.
///
/// ```
/// use autograd::Tape;
/// use rnn::cross_entropy;
/// use tensor::Tensor;
/// let tape = Tape::<f64>::new();
/// let logits = tape.var(Tensor::from_vec(vec![2.0, 0.0, 0.0, 0.0, 0.0, 3.0], &[2, 3]));
/// let loss = cross_entropy(&logits, &Tensor::from_vec(vec![0i64, 2], &[2]));
/// let expected = ((1.0 + 2.0 * (-2.0f64).exp()).ln() + (1.0 + 2.0 * (-3.0f64).exp()).ln()) / 2.0;
/// assert!((loss.item() - expected).abs() < 1e-12);
/// ```
#[track_caller]
pub fn cross_entropy<T: Float>(logits: &Var<T>, targets: &Tensor<i64>) -> Var<T> {
    cross_entropy_with(logits, targets, &ClassLossOptions::default())
}

/// [`cross_entropy`] with an ignore index, a mask or another reduction.
#[track_caller]
pub fn cross_entropy_with<T: Float>(
    logits: &Var<T>,
    targets: &Tensor<i64>,
    options: &ClassLossOptions,
) -> Var<T> {
    check_class_shapes("cross_entropy", logits, targets, options);
    nll_loss_with(&logits.log_softmax(1), targets, options)
}

/// [`nll_loss`] with an ignore index, a mask or another reduction.
///
/// # Panics
/// If `log_probs` is not `[N, C]`, `targets` not `[N]`, or a kept target is not in `0..C`.
#[track_caller]
pub fn nll_loss_with<T: Float>(
    log_probs: &Var<T>,
    targets: &Tensor<i64>,
    options: &ClassLossOptions,
) -> Var<T> {
    check_class_shapes("nll_loss", log_probs, targets, options);
    let classes = log_probs.shape()[1] as i64;
    let targets_v = targets.to_vec();
    let mask = options.mask.as_ref().map(Tensor::to_vec);
    let kept: Vec<bool> = targets_v
        .iter()
        .enumerate()
        .map(|(n, &t)| Some(t) != options.ignore_index && mask.as_ref().is_none_or(|m| m[n]))
        .collect();
    if let Some((&bad, _)) = targets_v
        .iter()
        .zip(&kept)
        .find(|(&t, &k)| k && !(0..classes).contains(&t))
    {
        panic!("nll_loss: target {bad} is not a class in 0..{classes}");
    }
    // Skipped targets gather class 0 and are then weighted by 0.
    let index: Vec<i64> = targets_v
        .iter()
        .zip(&kept)
        .map(|(&t, &k)| if k { t } else { 0 })
        .collect();
    let n = index.len();
    let picked = log_probs
        .gather(1, &Tensor::from_vec(index, &[n, 1]))
        .reshape(&[n]);
    let weights: Vec<T> = kept
        .iter()
        .map(|&k| if k { T::ONE } else { T::ZERO })
        .collect();
    let per_target = picked.neg() * &Tensor::from_vec(weights, &[n]);
    match options.reduction {
        Reduction::Mean => {
            let count = T::from_f64(kept.iter().filter(|&&k| k).count() as f64);
            per_target.sum_all().mul_scalar(T::ONE / count)
        }
        r => reduce(per_target, r),
    }
}

#[track_caller]
fn check_class_shapes<T: Float>(
    op: &str,
    scores: &Var<T>,
    targets: &Tensor<i64>,
    options: &ClassLossOptions,
) {
    let ok = scores.rank() == 2
        && targets.rank() == 1
        && targets.shape()[0] == scores.shape()[0]
        && options
            .mask
            .as_ref()
            .is_none_or(|m| m.shape() == targets.shape());
    if !ok {
        panic!(
            "{op}: scores {:?} and targets {:?}{} do not fit (expected [N, C] and [N])",
            scores.shape(),
            targets.shape(),
            options
                .mask
                .as_ref()
                .map(|m| format!(" and mask {:?}", m.shape()))
                .unwrap_or_default()
        );
    }
}
