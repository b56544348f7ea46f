//! Losses, as PyTorch's functional ones.
//!
//! ```text
//! mse(ŷ, y)  = mean((ŷ − y)²)
//! l1(ŷ, y)   = mean(|ŷ − y|)
//! nll(lp, t) = −mean over kept n of lp[n, t_n]        (lp: log-probabilities [N, C])
//! cross_entropy(z, t) = nll(log_softmax(z), t)        (z: logits [N, C])
//! ```
//!
//! As in PyTorch, the class losses also take scores `[N, C, d₁, …, d_k]` with targets
//! `[N, d₁, …, d_k]` (a class per time step, say), and unbatched scores `[C]` with a target
//! `[]`. Targets equal to `ignore_index` (−100 by default, as in PyTorch), or where `mask` is
//! false, contribute nothing, and the mean is over the kept targets only (NaN if none is kept,
//! as in PyTorch).
//!
//! The elementwise losses refuse a target whose shape differs from the prediction's: PyTorch
//! broadcasts it with a warning, which turns `[4, 1]` against `[4]` into a `[4, 4]` loss.

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
#[derive(Clone, Debug)]
pub struct ClassLossOptions {
    /// Targets equal to this are skipped (default `Some(-100)`, PyTorch's `ignore_index`).
    pub ignore_index: Option<i64>,
    /// Targets where this mask (the targets' shape) is false are skipped.
    pub mask: Option<Tensor<bool>>,
    /// How to reduce (default the mean).
    pub reduction: Reduction,
}

impl Default for ClassLossOptions {
    fn default() -> Self {
        ClassLossOptions {
            ignore_index: Some(-100),
            mask: None,
            reduction: Reduction::Mean,
        }
    }
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
///
/// # Panics
/// If `target`'s shape is not `prediction`'s.
#[track_caller]
pub fn mse_loss_with<T: Float>(
    prediction: &Var<T>,
    target: impl IntoVar<T>,
    r: Reduction,
) -> Var<T> {
    let target = same_shape("mse_loss", prediction, target);
    reduce(prediction.sub(&target).square(), r)
}

/// `target` as a variable, if its shape is `prediction`'s.
#[track_caller]
fn same_shape<T: Float>(op: &str, prediction: &Var<T>, target: impl IntoVar<T>) -> Var<T> {
    let target = target.into_var(prediction.tape());
    if target.shape() != prediction.shape() {
        panic!(
            "{op}: prediction {:?} and target {:?} have different shapes (PyTorch would \
             broadcast them to a wrong loss)",
            prediction.shape(),
            target.shape()
        );
    }
    target
}

/// Mean absolute error.
#[track_caller]
pub fn l1_loss<T: Float>(prediction: &Var<T>, target: impl IntoVar<T>) -> Var<T> {
    l1_loss_with(prediction, target, Reduction::Mean)
}

/// Absolute error with a choice of reduction.
///
/// # Panics
/// If `target`'s shape is not `prediction`'s.
#[track_caller]
pub fn l1_loss_with<T: Float>(
    prediction: &Var<T>,
    target: impl IntoVar<T>,
    r: Reduction,
) -> Var<T> {
    let target = same_shape("l1_loss", prediction, target);
    reduce(prediction.sub(&target).abs(), r)
}

/// Negative log-likelihood of `targets` (`[N]` class indices) under `log_probs` (`[N, C]`),
/// or of `[N, d…]` targets under `[N, C, d…]` log-probabilities.
#[track_caller]
pub fn nll_loss<T: Float>(log_probs: &Var<T>, targets: &Tensor<i64>) -> Var<T> {
    nll_loss_with(log_probs, targets, &ClassLossOptions::default())
}

/// Cross-entropy of `targets` (`[N]`) given unnormalised `logits` (`[N, C]`), or of
/// `[N, d…]` targets given `[N, C, d…]` logits, computed stably through `log_softmax` over
/// the class dim.
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
    let class_dim = usize::from(logits.rank() > 1);
    nll_loss_with(&logits.log_softmax(class_dim), targets, options)
}

/// [`nll_loss`] with an ignore index, a mask or another reduction. With
/// [`Reduction::None`], the losses have the targets' shape.
///
/// # Panics
/// If `log_probs` is not `[N, C, d…]` (or `[C]`) with `targets` `[N, d…]` (or `[]`) and the
/// mask of the targets' shape, or a kept target is not in `0..C`.
#[track_caller]
pub fn nll_loss_with<T: Float>(
    log_probs: &Var<T>,
    targets: &Tensor<i64>,
    options: &ClassLossOptions,
) -> Var<T> {
    check_class_shapes("nll_loss", log_probs, targets, options);
    let log_probs = class_rows(log_probs);
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
        Reduction::None => per_target.reshape(targets.shape()),
        r => reduce(per_target, r),
    }
}

/// Scores `[N, C, d…]` as rows `[N·d…, C]` in the targets' row-major order (`[C]` as
/// `[1, C]`).
fn class_rows<T: Float>(scores: &Var<T>) -> Var<T> {
    match scores.rank() {
        1 => scores.unsqueeze(0),
        2 => scores.clone(),
        r => {
            let order: Vec<usize> = [0].into_iter().chain(2..r).chain([1]).collect();
            let moved = scores.permute(&order);
            let (rows, classes) = moved.shape().split_at(r - 1);
            moved.reshape(&[rows.iter().product(), classes[0]])
        }
    }
}

#[track_caller]
fn check_class_shapes<T: Float>(
    op: &str,
    scores: &Var<T>,
    targets: &Tensor<i64>,
    options: &ClassLossOptions,
) {
    let s = scores.shape();
    let expected: Vec<usize> = match s.len() {
        0 => vec![usize::MAX], // fits no target
        1 => vec![],
        _ => [s[0]].into_iter().chain(s[2..].iter().copied()).collect(),
    };
    let ok = targets.shape() == expected
        && options
            .mask
            .as_ref()
            .is_none_or(|m| m.shape() == targets.shape());
    if !ok {
        panic!(
            "{op}: scores {:?} and targets {:?}{} do not fit (expected [N, C] and [N], \
             [N, C, d…] and [N, d…], or [C] and [])",
            s,
            targets.shape(),
            options
                .mask
                .as_ref()
                .map(|m| format!(" and mask {:?}", m.shape()))
                .unwrap_or_default()
        );
    }
}
