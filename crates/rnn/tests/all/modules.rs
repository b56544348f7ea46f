//! Linear, Embedding, Dropout, the losses, and parameter naming.

use crate::common;

use autograd::{gradcheck, GradCheck, Tape, Var};
use common::{assert_close, check, panic_message, uniform};
use proptest::prelude::*;
use rnn::io::state_dict;
use rnn::{
    cross_entropy, cross_entropy_with, dropout, l1_loss, l1_loss_with, manual_seed, mse_loss,
    mse_loss_with, nll_loss, nll_loss_with, prefixed, rng_state, set_rng_state, ClassLossOptions,
    Dropout, Embedding, Gru, LayerConfig, Linear, Lstm, Module, Reduction, Rnn,
};
use rnn::{padding_mask, AdditiveAttention, DotAttention};
use tensor::{Rng, Tensor};

fn rng(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// Values computed two ways with a handful of roundings each agree to a few ulps of O(1)
/// numbers; 1e-12 leaves room for that and nothing more.
const F64_TOL: f64 = 1e-12;

// ---------------------------------------------------------------------------------------------
// Linear
// ---------------------------------------------------------------------------------------------

#[test]
fn linear_computes_x_w_transpose_plus_b() {
    let layer = Linear::<f64>::new(3, 2, true, &mut rng(1));
    let (w, b) = (
        layer.weight.value().to_vec(),
        layer.bias.as_ref().unwrap().value().to_vec(),
    );
    assert_eq!(layer.weight.shape(), [2, 3], "weight is [out, in]");
    let x = uniform::<f64>(&[2, 4, 3], &mut rng(2));
    let tape = Tape::new();
    let y = layer.forward(&tape.constant(x.clone()));
    assert_eq!(y.shape(), [2, 4, 2], "any [..., in] input gives [..., out]");
    let xs = x.to_vec();
    let mut expected = Vec::new();
    for row in xs.chunks(3) {
        for o in 0..2 {
            expected.push((0..3).map(|i| row[i] * w[o * 3 + i]).sum::<f64>() + b[o]);
        }
    }
    assert_close(
        "y",
        y.value(),
        &Tensor::from_vec(expected, &[2, 4, 2]),
        F64_TOL,
    );
}

#[test]
fn linear_without_bias() {
    let layer = Linear::<f64>::new(2, 2, false, &mut rng(3));
    assert!(layer.bias.is_none());
    let names: Vec<String> = layer.named_params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["weight"]);
    layer
        .weight
        .set_value(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]));
    let tape = Tape::new();
    let y = layer.forward(&tape.constant(Tensor::from_vec(vec![1.0, -1.0], &[1, 2])));
    // [1, −1] · [[1, 3], [2, 4]] = [1 − 2, 3 − 4]
    assert_eq!(y.value().to_vec(), [-1.0, -1.0]);
}

#[test]
fn linear_gradients() {
    let layer = Linear::<f64>::new(3, 2, true, &mut rng(4));
    let x = uniform::<f64>(&[4, 3], &mut rng(5));
    let report = GradCheck::new(|v| layer.forward(&v[0]).tanh())
        .inputs(&[x])
        .params(&layer.params())
        .run();
    assert!(report.passed(), "{report}");
}

/// PyTorch's `nn.Linear` init: weight and bias from U(−1/√in, 1/√in). Checked on 100·64
/// weights: all inside the bound, the extremes near it (P(all |w| < 0.95·bound) = 0.95⁶⁴⁰⁰),
/// and the variance bound²/3 within 10% (the sample variance's relative standard error is
/// √(0.8/6400) ≈ 1.1% here).
#[test]
fn linear_init_matches_pytorch() {
    let (inp, out) = (100, 64);
    let layer = Linear::<f64>::new(inp, out, true, &mut rng(6));
    let bound = 1.0 / (inp as f64).sqrt();
    check_uniform("weight", &layer.weight.value().to_vec(), bound);
    let b = layer.bias.as_ref().unwrap().value().to_vec();
    assert!(b.iter().all(|v| v.abs() <= bound), "bias outside ±{bound}");
}

fn check_uniform(what: &str, w: &[f64], bound: f64) {
    assert!(
        w.iter().all(|v| v.abs() <= bound),
        "{what}: outside ±{bound}"
    );
    let max = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(max > 0.95 * bound, "{what}: max |w| = {max}, bound {bound}");
    let n = w.len() as f64;
    let mean = w.iter().sum::<f64>() / n;
    let var = w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let expected = bound * bound / 3.0;
    assert!(
        (var / expected - 1.0).abs() < 0.1,
        "{what}: variance {var}, U(−b, b) has {expected}"
    );
}

/// Every recurrent weight and bias from U(−1/√H, 1/√H), as `nn.LSTM` (bound from the hidden
/// size, not the input size).
#[test]
fn recurrent_init_matches_pytorch() {
    let hidden = 25;
    let layer = Lstm::<f64>::lstm(LayerConfig::new(40, hidden), &mut rng(7));
    let all: Vec<f64> = layer
        .params()
        .iter()
        .flat_map(|p| p.value().to_vec())
        .collect();
    check_uniform("LSTM parameters", &all, 1.0 / (hidden as f64).sqrt());
}

// ---------------------------------------------------------------------------------------------
// Embedding
// ---------------------------------------------------------------------------------------------

#[test]
fn embedding_looks_up_rows() {
    let emb = Embedding::<f64>::new(5, 3, None, &mut rng(8));
    let w = emb.weight.value();
    let idx = Tensor::from_vec(vec![4i64, 0, 4, 2, 1, 3], &[2, 3]);
    let tape = Tape::new();
    let y = emb.forward(&tape, &idx);
    assert_eq!(y.shape(), [2, 3, 3]);
    for (k, &i) in idx.to_vec().iter().enumerate() {
        let (r, c) = (k / 3, k % 3);
        assert_eq!(
            y.value().select(0, r).select(0, c).to_vec(),
            w.select(0, i as usize).to_vec(),
            "position {k}"
        );
    }
    // The N(0, 1) init: 15 draws are not all zero and not all equal.
    let v = w.to_vec();
    assert!(v.iter().any(|&x| x != v[0]));
}

#[test]
fn embedding_padding_row_is_zero_and_gets_no_gradient() {
    let emb = Embedding::<f64>::new(4, 2, Some(1), &mut rng(9));
    let w = emb.weight.value();
    assert_eq!(w.select(0, 1).to_vec(), [0.0, 0.0], "padding row at init");
    assert!(w.select(0, 0).to_vec().iter().all(|&v| v != 0.0));

    // Look up the padding row (twice) and row 2 (twice) and row 3 once.
    let idx = Tensor::from_vec(vec![1i64, 2, 1, 2, 3], &[5]);
    let probe = Tensor::from_vec(
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
        &[5, 2],
    );
    let tape = Tape::new();
    let y = emb.forward(&tape, &idx);
    assert_eq!(y.value().select(0, 0).to_vec(), [0.0, 0.0]);
    (&y * &probe).sum_all().backward();
    let g = emb.weight.grad().expect("a gradient");
    // Row 0: not looked up. Row 1: padding, zero although looked up. Row 2: probe rows 1 and
    // 3 added. Row 3: probe row 4.
    assert_eq!(
        g.to_vec(),
        [0.0, 0.0, 0.0, 0.0, 3.0 + 7.0, 4.0 + 8.0, 9.0, 10.0]
    );
}

#[test]
fn embedding_gradients_without_padding() {
    // A finite-difference check of ∂/∂W (the tape gives W; the indices are fixed).
    let emb = Embedding::<f64>::new(4, 3, None, &mut rng(10));
    let idx = Tensor::from_vec(vec![3i64, 0, 3, 1], &[2, 2]);
    let report = GradCheck::new(|v| emb.forward(v[0].tape(), &idx).tanh() * &v[0])
        .inputs(&[uniform(&[2, 2, 3], &mut rng(11))])
        .params(std::slice::from_ref(&emb.weight))
        .run();
    assert!(report.passed(), "{report}");
}

#[test]
#[should_panic(expected = "padding_idx 4 >= 4")]
fn embedding_padding_out_of_range_panics() {
    Embedding::<f64>::new(4, 2, Some(4), &mut rng(0));
}

#[test]
#[should_panic(expected = "out of range")]
fn embedding_index_out_of_range_panics() {
    let emb = Embedding::<f64>::new(4, 2, None, &mut rng(0));
    emb.forward(&Tape::new(), &Tensor::from_vec(vec![4i64], &[1]));
}

// ---------------------------------------------------------------------------------------------
// Dropout
// ---------------------------------------------------------------------------------------------

#[test]
fn dropout_zeroes_with_probability_p_and_scales_the_rest() {
    let p = 0.3;
    let n = 20_000;
    let tape = Tape::new();
    let x = tape.var(Tensor::<f64>::full(&[n], 2.0));
    manual_seed(3);
    let y = dropout(&x, p);
    let ys = y.value().to_vec();
    let kept = 2.0 / (1.0 - p);
    assert!(ys.iter().all(|&v| v == 0.0 || (v - kept).abs() < 1e-15));
    // The fraction dropped is p within 4.5 standard errors (√(p(1−p)/n) ≈ 0.0032).
    let dropped = ys.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
    assert!((dropped - p).abs() < 0.015, "dropped {dropped}");
    // ∂/∂x = mask / (1 − p) = y / x.
    let g = y.sum_all().backward();
    let gx = g.wrt(&x).to_vec();
    for (gi, yi) in gx.iter().zip(&ys) {
        assert_eq!(*gi, yi / 2.0);
    }
}

#[test]
fn dropout_module_and_generator_state() {
    let d = Dropout::new(0.5);
    let tape = Tape::new();
    let x = tape.constant(Tensor::<f64>::ones(&[64]));
    // Saving and restoring the generator replays the same mask.
    manual_seed(5);
    let saved = rng_state();
    let a = d.forward(&x).value().to_vec();
    set_rng_state(saved);
    let b = d.forward(&x).value().to_vec();
    assert_eq!(a, b);
    let c = d.forward(&x).value().to_vec();
    assert_ne!(a, c, "the generator moved on");
    assert!(a.contains(&0.0) && a.contains(&2.0));
    // Evaluation mode is the identity.
    d.set_training(false);
    assert_eq!(d.forward(&x).value().to_vec(), vec![1.0; 64]);
    // p = 0 and p = 1.
    assert_eq!(dropout(&x, 0.0).value().to_vec(), vec![1.0; 64]);
    assert_eq!(dropout(&x, 1.0).value().to_vec(), vec![0.0; 64]);
}

#[test]
#[should_panic(expected = "dropout: p = -0.1 is not in [0, 1]")]
fn dropout_rejects_bad_p() {
    let tape = Tape::<f64>::new();
    dropout(&tape.constant(Tensor::ones(&[2])), -0.1);
}

// ---------------------------------------------------------------------------------------------
// Losses, against values worked out by hand
// ---------------------------------------------------------------------------------------------

fn var(tape: &Tape<f64>, v: &[f64], shape: &[usize]) -> autograd::Var<f64> {
    tape.var(Tensor::from_vec(v.to_vec(), shape))
}

#[test]
fn mse_and_l1_by_hand() {
    let tape = Tape::new();
    let pred = var(&tape, &[1.0, 2.0, 3.0, -1.0], &[2, 2]);
    let target = Tensor::from_vec(vec![1.5, 2.0, 1.0, 1.0], &[2, 2]);
    // differences −0.5, 0, 2, −2: squares 0.25, 0, 4, 4; absolute values 0.5, 0, 2, 2.
    assert_eq!(mse_loss(&pred, &target).item(), 8.25 / 4.0);
    assert_eq!(mse_loss_with(&pred, &target, Reduction::Sum).item(), 8.25);
    assert_eq!(
        mse_loss_with(&pred, &target, Reduction::None)
            .value()
            .to_vec(),
        [0.25, 0.0, 4.0, 4.0]
    );
    assert_eq!(l1_loss(&pred, &target).item(), 4.5 / 4.0);
    assert_eq!(l1_loss_with(&pred, &target, Reduction::Sum).item(), 4.5);
    assert_eq!(
        l1_loss_with(&pred, &target, Reduction::None)
            .value()
            .to_vec(),
        [0.5, 0.0, 2.0, 2.0]
    );
    // ∂ mse / ∂pred = 2(pred − target)/n.
    let g = mse_loss(&pred, &target).backward();
    assert_eq!(g.wrt(&pred).to_vec(), [-0.25, 0.0, 1.0, -1.0]);
}

#[test]
fn nll_by_hand() {
    let tape = Tape::new();
    let lp = var(
        &tape,
        &[-1.0, -2.0, -3.0, -0.5, -1.5, -2.5, -0.1, -0.2, -0.3],
        &[3, 3],
    );
    let t = Tensor::from_vec(vec![2i64, 0, 1], &[3]);
    // picked: −3, −0.5, −0.2
    assert_close(
        "mean",
        nll_loss(&lp, &t).value(),
        &Tensor::scalar(3.7 / 3.0),
        F64_TOL,
    );
    let opts = |ignore: Option<i64>, mask: Option<Vec<bool>>, reduction| ClassLossOptions {
        ignore_index: ignore,
        mask: mask.map(|m| Tensor::from_vec(m, &[3])),
        reduction,
    };
    let sum = nll_loss_with(&lp, &t, &opts(None, None, Reduction::Sum));
    assert_close("sum", sum.value(), &Tensor::scalar(3.7), F64_TOL);
    let none = nll_loss_with(&lp, &t, &opts(None, None, Reduction::None));
    assert_eq!(none.value().to_vec(), [3.0, 0.5, 0.2]);
    // Ignoring class 0 drops the second target: mean over the two kept.
    let ign = nll_loss_with(&lp, &t, &opts(Some(0), None, Reduction::Mean));
    assert_close(
        "ignore_index",
        ign.value(),
        &Tensor::scalar(3.2 / 2.0),
        F64_TOL,
    );
    let ign_none = nll_loss_with(&lp, &t, &opts(Some(0), None, Reduction::None));
    assert_eq!(ign_none.value().to_vec(), [3.0, 0.0, 0.2]);
    // A mask dropping the first target.
    let masked = nll_loss_with(
        &lp,
        &t,
        &opts(None, Some(vec![false, true, true]), Reduction::Mean),
    );
    assert_close("mask", masked.value(), &Tensor::scalar(0.7 / 2.0), F64_TOL);
    // Both together keep only the third.
    let both = nll_loss_with(
        &lp,
        &t,
        &opts(Some(0), Some(vec![false, true, true]), Reduction::Sum),
    );
    assert_close("both", both.value(), &Tensor::scalar(0.2), F64_TOL);
    // The gradient of the mean: −1/kept at each kept target, 0 elsewhere.
    let g = ign.backward();
    assert_eq!(
        g.wrt(&lp).to_vec(),
        [0.0, 0.0, -0.5, 0.0, 0.0, 0.0, 0.0, -0.5, 0.0]
    );
}

#[test]
fn ignored_targets_may_be_out_of_range() {
    // PyTorch's ignore_index is -100 by convention: an ignored target is never looked up.
    let tape = Tape::new();
    let lp = var(&tape, &[-1.0, -2.0, -0.5, -1.5], &[2, 2]);
    let t = Tensor::from_vec(vec![-100i64, 1], &[2]);
    let opts = ClassLossOptions {
        ignore_index: Some(-100),
        ..Default::default()
    };
    assert_eq!(nll_loss_with(&lp, &t, &opts).item(), 1.5);
}

#[test]
fn all_ignored_mean_is_nan_and_sum_is_zero() {
    let tape = Tape::new();
    let z = var(&tape, &[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let t = Tensor::from_vec(vec![1i64, 1], &[2]);
    let mut opts = ClassLossOptions {
        ignore_index: Some(1),
        ..Default::default()
    };
    assert!(
        cross_entropy_with(&z, &t, &opts).item().is_nan(),
        "0/0, as PyTorch"
    );
    assert!(nll_loss_with(&z, &t, &opts).item().is_nan());
    opts.reduction = Reduction::Sum;
    assert_eq!(cross_entropy_with(&z, &t, &opts).item(), 0.0);
    opts.reduction = Reduction::None;
    assert_eq!(
        cross_entropy_with(&z, &t, &opts).value().to_vec(),
        [0.0, 0.0]
    );
}

#[test]
fn cross_entropy_by_hand() {
    let tape = Tape::new();
    let z = var(
        &tape,
        &[1.0, 2.0, 3.0, 0.0, 0.0, 0.0, -1.0, 4.0, 0.5],
        &[3, 3],
    );
    let t = Tensor::from_vec(vec![0i64, 2, 1], &[3]);
    let lse = |a: f64, b: f64, c: f64| (a.exp() + b.exp() + c.exp()).ln();
    let per = [
        lse(1.0, 2.0, 3.0) - 1.0,
        3f64.ln(),
        lse(-1.0, 4.0, 0.5) - 4.0,
    ];
    let mean = (per[0] + per[1] + per[2]) / 3.0;
    assert_close(
        "mean",
        cross_entropy(&z, &t).value(),
        &Tensor::scalar(mean),
        F64_TOL,
    );
    let none = cross_entropy_with(
        &z,
        &t,
        &ClassLossOptions {
            reduction: Reduction::None,
            ..Default::default()
        },
    );
    assert_close(
        "none",
        none.value(),
        &Tensor::from_vec(per.to_vec(), &[3]),
        F64_TOL,
    );
    let masked = cross_entropy_with(
        &z,
        &t,
        &ClassLossOptions {
            mask: Some(Tensor::from_vec(vec![true, false, true], &[3])),
            reduction: Reduction::Sum,
            ..Default::default()
        },
    );
    assert_close(
        "mask",
        masked.value(),
        &Tensor::scalar(per[0] + per[2]),
        F64_TOL,
    );
    let ignored = cross_entropy_with(
        &z,
        &t,
        &ClassLossOptions {
            ignore_index: Some(2),
            ..Default::default()
        },
    );
    assert_close(
        "ignore",
        ignored.value(),
        &Tensor::scalar((per[0] + per[2]) / 2.0),
        F64_TOL,
    );
    // ∂/∂z of the mean = (softmax(z) − onehot(t)) / N.
    let g = cross_entropy(&z, &t).backward();
    let zs = z.value().to_vec();
    let mut expected = Vec::new();
    for (n, row) in zs.chunks(3).enumerate() {
        let s: f64 = row.iter().map(|v| v.exp()).sum();
        for (c, v) in row.iter().enumerate() {
            let onehot = if c as i64 == t.to_vec()[n] { 1.0 } else { 0.0 };
            expected.push((v.exp() / s - onehot) / 3.0);
        }
    }
    assert_close(
        "∂/∂z",
        g.wrt(&z),
        &Tensor::from_vec(expected, &[3, 3]),
        F64_TOL,
    );
}

#[test]
fn cross_entropy_is_stable_for_large_logits() {
    let tape = Tape::new();
    let z = var(&tape, &[1000.0, 0.0, -1000.0, 1000.0], &[2, 2]);
    let t = Tensor::from_vec(vec![1i64, 0], &[2]);
    // Row 0: lse = 1000 + log(1 + e^−1000) = 1000 → loss 1000. Row 1: lse = 1000 → loss 2000.
    assert_eq!(cross_entropy(&z, &t).item(), 1500.0);
}

#[test]
#[should_panic(expected = "target 3 is not a class in 0..3")]
fn out_of_range_target_panics() {
    let tape = Tape::new();
    cross_entropy(
        &tape.var(Tensor::<f64>::zeros(&[2, 3])),
        &Tensor::from_vec(vec![0i64, 3], &[2]),
    );
}

#[test]
#[should_panic(expected = "nll_loss: scores [2, 3] and targets [3] do not fit")]
fn mismatched_targets_panic() {
    let tape = Tape::new();
    nll_loss(
        &tape.var(Tensor::<f64>::zeros(&[2, 3])),
        &Tensor::from_vec(vec![0i64, 1, 2], &[3]),
    );
}

#[test]
#[should_panic(expected = "and mask [3] do not fit")]
fn mismatched_mask_panics() {
    let tape = Tape::new();
    let opts = ClassLossOptions {
        mask: Some(Tensor::from_vec(vec![true; 3], &[3])),
        ..Default::default()
    };
    cross_entropy_with(
        &tape.var(Tensor::<f64>::zeros(&[2, 3])),
        &Tensor::from_vec(vec![0i64, 1], &[2]),
        &opts,
    );
}

// Gradient checks of the losses (default tolerances: see `autograd::gradcheck`).
proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn cross_entropy_and_nll_gradients(
        n in 1usize..=4,
        classes in 2usize..=4,
        seed in any::<u64>(),
        reduction in prop_oneof![Just(Reduction::Mean), Just(Reduction::Sum), Just(Reduction::None)],
    ) {
        let mut rng = Rng::seed_from_u64(seed);
        let z = Tensor::<f64>::rand_uniform(&[n, classes], -3.0, 3.0, &mut rng);
        let t: Vec<i64> = (0..n).map(|_| rng.below(classes as u64) as i64).collect();
        let mask: Vec<bool> = (0..n).map(|i| i == 0 || rng.below(4) > 0).collect(); // ≥ 1 kept
        let opts = ClassLossOptions {
            ignore_index: None,
            mask: Some(Tensor::from_vec(mask, &[n])),
            reduction,
        };
        let t = Tensor::from_vec(t, &[n]);
        check(gradcheck(|v| cross_entropy_with(&v[0], &t, &opts), std::slice::from_ref(&z)))?;
        check(gradcheck(|v| nll_loss_with(&v[0].log_softmax(1), &t, &opts), &[z]))?;
    }

    #[test]
    fn mse_and_l1_gradients(n in 1usize..=6, seed in any::<u64>()) {
        let mut rng = Rng::seed_from_u64(seed);
        let pred = uniform::<f64>(&[n], &mut rng);
        let target = uniform::<f64>(&[n], &mut rng);
        check(gradcheck(|v| mse_loss(&v[0], &v[1]), &[pred.clone(), target.clone()]))?;
        // |·| has a kink at 0: keep every difference at least 1e-3 from it (h = 1e-6).
        let far = pred.to_vec().iter().zip(target.to_vec()).all(|(a, b)| (a - b).abs() > 1e-3);
        prop_assume!(far);
        check(gradcheck(|v| l1_loss_with(&v[0], &v[1], Reduction::Sum), &[pred, target]))?;
    }
}

// ---------------------------------------------------------------------------------------------
// Parameter names
// ---------------------------------------------------------------------------------------------

#[test]
fn layer_parameter_names_and_shapes_are_pytorchs() {
    let (i, h) = (3, 4);
    let lstm = Lstm::<f64>::lstm(
        LayerConfig::new(i, h).num_layers(2).bidirectional(true),
        &mut rng(12),
    );
    let mut expected = Vec::new();
    for l in 0..2 {
        for suffix in ["", "_reverse"] {
            let input = if l == 0 { i } else { 2 * h };
            expected.push((format!("weight_ih_l{l}{suffix}"), vec![4 * h, input]));
            expected.push((format!("weight_hh_l{l}{suffix}"), vec![4 * h, h]));
            expected.push((format!("bias_ih_l{l}{suffix}"), vec![4 * h]));
            expected.push((format!("bias_hh_l{l}{suffix}"), vec![4 * h]));
        }
    }
    let got: Vec<(String, Vec<usize>)> = lstm
        .named_params()
        .into_iter()
        .map(|(n, p)| (n, p.shape()))
        .collect();
    assert_eq!(got, expected);
    // state_dict: the same names, in the same order, with the parameters' values.
    let sd = state_dict(&lstm);
    for ((n, t), (pn, p)) in sd.iter().zip(lstm.named_params()) {
        assert_eq!(*n, pn);
        assert_eq!(t.to_vec(), p.value().to_vec());
    }
    // PyTorch's parameter count for nn.LSTM(3, 4, num_layers=2, bidirectional=True).
    let per = |input: usize| 4 * h * (input + h) + 8 * h;
    assert_eq!(lstm.num_params(), 2 * per(i) + 2 * per(2 * h));

    let gru = Gru::<f64>::gru(
        LayerConfig::new(i, h).num_layers(2).bias(false),
        &mut rng(13),
    );
    let names: Vec<String> = gru.named_params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "weight_ih_l0",
            "weight_hh_l0",
            "weight_ih_l1",
            "weight_hh_l1"
        ]
    );
    assert_eq!(gru.named_params()[2].1.shape(), [3 * h, h]);

    let rnn = Rnn::<f64>::rnn(LayerConfig::new(i, h).bidirectional(true), &mut rng(14));
    let names: Vec<String> = rnn.named_params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "weight_ih_l0",
            "weight_hh_l0",
            "bias_ih_l0",
            "bias_hh_l0",
            "weight_ih_l0_reverse",
            "weight_hh_l0_reverse",
            "bias_ih_l0_reverse",
            "bias_hh_l0_reverse"
        ]
    );
}

/// A composite model names its children's parameters `child.name`, as PyTorch does.
struct Model {
    rnn: Lstm<f64>,
    head: Linear<f64>,
}

impl Module<f64> for Model {
    fn named_params(&self) -> Vec<(String, autograd::Param<f64>)> {
        let mut v = prefixed("rnn", &self.rnn);
        v.extend(prefixed("head", &self.head));
        v
    }
}

#[test]
fn prefixed_names_nest() {
    let m = Model {
        rnn: Lstm::lstm(LayerConfig::new(2, 3).num_layers(2), &mut rng(15)),
        head: Linear::new(3, 1, true, &mut rng(16)),
    };
    let names: Vec<String> = m.named_params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names[0], "rnn.weight_ih_l0");
    assert_eq!(names[7], "rnn.bias_hh_l1");
    assert_eq!(names[8..], ["head.weight", "head.bias"]);
    let outer: Vec<String> = prefixed("model", &m).into_iter().map(|(n, _)| n).collect();
    assert_eq!(outer[0], "model.rnn.weight_ih_l0");
    assert_eq!(outer[9], "model.head.bias");
    // The prefixed handles are the model's parameters, not copies.
    assert!(prefixed("model", &m)[8].1.same(&m.head.weight));
    assert_eq!(m.params().len(), 10);
    // LSTM layer 0: 4H(I + H) + 8H; layer 1: 4H(H + H) + 8H; head: H weights + 1 bias.
    let (i, h) = (2, 3);
    assert_eq!(
        m.num_params(),
        (4 * h * (i + h) + 8 * h) + (4 * h * (h + h) + 8 * h) + (h + 1)
    );
}

// ---------------------------------------------------------------------------------------------
// PyTorch's traps, closed
// ---------------------------------------------------------------------------------------------

#[test]
fn elementwise_losses_refuse_a_target_of_another_shape() {
    // [4, 1] against [4]: PyTorch broadcasts to [4, 4] (with a warning) and returns 4.1606
    // where 4.0467 is meant.
    let tape = Tape::<f64>::new();
    let pred = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[4, 1]));
    let target = Tensor::from_vec(vec![0.5, -1.0, 2.0, 0.0], &[4]);
    assert_eq!(
        panic_message(|| mse_loss(&pred, &target)),
        "mse_loss: prediction [4, 1] and target [4] have different shapes (PyTorch would \
         broadcast them to a wrong loss)"
    );
    assert_eq!(
        panic_message(|| l1_loss_with(&pred, &target, Reduction::Sum)),
        "l1_loss: prediction [4, 1] and target [4] have different shapes (PyTorch would \
         broadcast them to a wrong loss)"
    );
    // The same numbers in the same shape: (0.5² + 3² + 1² + 4²) / 4.
    let right = mse_loss(&pred, target.reshape(&[4, 1]));
    assert_eq!(right.item(), (0.25 + 9.0 + 1.0 + 16.0) / 4.0);
}

#[test]
fn a_negative_embedding_index_is_an_error() {
    let emb = Embedding::<f64>::new(10, 3, None, &mut rng(0));
    assert_eq!(
        panic_message(|| emb.forward(&Tape::new(), &Tensor::from_vec(vec![2i64, -1], &[2]))),
        "Embedding: index -1 is out of range for 10 embeddings (0..10)"
    );
}

#[test]
fn ignore_index_defaults_to_pytorchs_minus_100() {
    let tape = Tape::new();
    let logits = var(&tape, &[2.0, 0.0, 1.0, 0.5, -1.0, 3.0], &[3, 2]);
    let padded = Tensor::from_vec(vec![0i64, -100, 1], &[3]);
    assert_eq!(ClassLossOptions::default().ignore_index, Some(-100));
    let with_pad = cross_entropy(&logits, &padded);
    let kept = cross_entropy(
        &logits.index_select(0, &Tensor::from_vec(vec![0i64, 2], &[2])),
        &Tensor::from_vec(vec![0i64, 1], &[2]),
    );
    assert_close("ignored -100", with_pad.value(), kept.value(), F64_TOL);
}

#[test]
fn class_losses_take_a_class_per_time_step_as_pytorch_does() {
    // Scores [N, C, T] and targets [N, T], against the same rows laid out as [N·T, C].
    let (n, c, t) = (2, 3, 4);
    let mut g = rng(5);
    let scores = uniform::<f64>(&[n, c, t], &mut g);
    let targets = Tensor::from_vec(vec![0i64, 2, 1, 1, 2, -100, 0, 1], &[n, t]);
    let rows = scores.permute(&[0, 2, 1]).contiguous().reshape(&[n * t, c]);
    let flat = targets.reshape(&[n * t]);
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let opts = ClassLossOptions {
            reduction,
            ..Default::default()
        };
        let tape = Tape::new();
        let per_step = cross_entropy_with(&tape.var(scores.clone()), &targets, &opts);
        let reference = cross_entropy_with(&tape.var(rows.clone()), &flat, &opts);
        let expected = match reduction {
            Reduction::None => reference.value().reshape(&[n, t]),
            _ => reference.value().clone(),
        };
        assert_close(
            &format!("{reduction:?}"),
            per_step.value(),
            &expected,
            F64_TOL,
        );
    }
    // A hand-worked row: scores (1, 2, 3) with target 2: ln(e + e² + e³) − 3.
    let tape = Tape::new();
    let one = cross_entropy(
        &var(&tape, &[1.0, 2.0, 3.0], &[3]),
        &Tensor::from_vec(vec![2i64], &[]),
    );
    let want = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln() - 3.0;
    assert!((one.item() - want).abs() < F64_TOL);
    // Gradients of the [N, C, T] form.
    let targets_ok = Tensor::from_vec(vec![0i64, 2, 1, 1, 2, 0, 0, 1], &[n, t]);
    check(gradcheck(|v| cross_entropy(&v[0], &targets_ok), &[scores])).unwrap();
    // Targets that do not fit are named.
    let tape = Tape::new();
    assert_eq!(
        panic_message(|| cross_entropy(
            &tape.var(Tensor::<f64>::zeros(&[2, 3, 4])),
            &Tensor::from_vec(vec![0i64; 6], &[2, 3])
        )),
        "cross_entropy: scores [2, 3, 4] and targets [2, 3] do not fit (expected [N, C] and \
         [N], [N, C, d…] and [N, d…], or [C] and [])"
    );
}

// ---------------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------------

#[test]
fn dot_attention_by_hand() {
    // Query (1, 0), keys (1, 0), (0, 1), (2, 0): scores 1, 0, 2, the last masked out.
    // α = softmax(1, 0) = (e/(e+1), 1/(e+1)); context = α₁·(10, 0) + α₂·(0, 10).
    let tape = Tape::<f64>::new();
    let q = var(&tape, &[1.0, 0.0], &[1, 2]);
    let k = var(&tape, &[1.0, 0.0, 0.0, 1.0, 2.0, 0.0], &[1, 3, 2]);
    let v = var(&tape, &[10.0, 0.0, 0.0, 10.0, 99.0, 99.0], &[1, 3, 2]);
    let mask = padding_mask(&[2], 3);
    assert_eq!(mask.to_vec(), [true, true, false]);
    let a = DotAttention::dot(false).forward(&q, &k, &v, Some(&mask));
    let e = 1f64.exp();
    let (a1, a2) = (e / (e + 1.0), 1.0 / (e + 1.0));
    assert_close(
        "weights",
        a.weights.value(),
        &Tensor::from_vec(vec![a1, a2, 0.0], &[1, 3]),
        F64_TOL,
    );
    assert_close(
        "context",
        a.context.value(),
        &Tensor::from_vec(vec![10.0 * a1, 10.0 * a2], &[1, 2]),
        F64_TOL,
    );
    // Scaled by 1/√2: softmax(1/√2, 0, √2) unmasked.
    let s = DotAttention::dot(true).forward(&q, &k, &v, None);
    let z = [0.5f64.sqrt(), 0.0, 2f64.sqrt()];
    let total: f64 = z.iter().map(|x| x.exp()).sum();
    let want: Vec<f64> = z.iter().map(|x| x.exp() / total).collect();
    assert_close(
        "scaled",
        s.weights.value(),
        &Tensor::from_vec(want, &[1, 3]),
        F64_TOL,
    );
}

#[test]
fn additive_attention_by_hand() {
    // One attention feature: W = 2, U = 1, b = 0.5, v = 3; query 0.25 and keys (0, 1).
    // e_j = 3 tanh(0.5 + k_j + 0.5): 3 tanh(1), 3 tanh(2).
    let mut att = AdditiveAttention::<f64>::new(1, 1, 1, &mut rng(0));
    att.w.weight.set_value(Tensor::from_vec(vec![2.0], &[1, 1]));
    att.u.weight.set_value(Tensor::from_vec(vec![1.0], &[1, 1]));
    att.u
        .bias
        .as_ref()
        .unwrap()
        .set_value(Tensor::from_vec(vec![0.5], &[1]));
    att.v.weight.set_value(Tensor::from_vec(vec![3.0], &[1, 1]));
    att.v.bias = None;
    let tape = Tape::new();
    let q = var(&tape, &[0.25], &[1, 1]);
    let keys = var(&tape, &[0.0, 1.0], &[1, 2, 1]);
    let a = att.forward(&q, &keys, &keys, None);
    let (e1, e2) = (3.0 * 1f64.tanh(), 3.0 * 2f64.tanh());
    let w2 = 1.0 / (1.0 + (e1 - e2).exp());
    assert_close(
        "weights",
        a.weights.value(),
        &Tensor::from_vec(vec![1.0 - w2, w2], &[1, 2]),
        F64_TOL,
    );
    assert_close(
        "context",
        a.context.value(),
        &Tensor::from_vec(vec![w2], &[1, 1]),
        F64_TOL,
    );
    let names: Vec<String> = att.named_params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["w.weight", "u.weight", "u.bias", "v.weight"]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn attention_gradients(
        batch in 1usize..=3, seq in 1usize..=4, q_size in 1usize..=3, k_size in 1usize..=3,
        seed in any::<u64>(), lengths_seed in any::<u64>(),
    ) {
        let mut g = rng(seed);
        let lengths: Vec<usize> = (0..batch)
            .map(|b| 1 + (lengths_seed as usize / (b + 1)) % seq)
            .collect();
        let mask = padding_mask(&lengths, seq);
        let additive = AdditiveAttention::<f64>::new(q_size, k_size, 2, &mut g);
        let general = DotAttention::<f64>::general(q_size, k_size, true, &mut g);
        let inputs = [
            uniform::<f64>(&[batch, q_size], &mut g),
            uniform::<f64>(&[batch, seq, k_size], &mut g),
            uniform::<f64>(&[batch, seq, 2], &mut g),
        ];
        let flat = |a: rnn::Attended<f64>| {
            Var::concat(&[&a.context.flatten(), &a.weights.flatten()], 0)
        };
        let mut params = additive.params();
        params.extend(general.params());
        check(
            GradCheck::new(|v: &[Var<f64>]| {
                let a = additive.forward(&v[0], &v[1], &v[2], Some(&mask));
                let d = general.forward(&v[0], &v[1], &v[2], Some(&mask));
                Var::concat(&[&flat(a), &flat(d)], 0)
            })
            .inputs(&inputs)
            .params(&params)
            .run(),
        )?;
        // Padding gets no weight, and every row's weights sum to 1.
        let tape = Tape::new();
        let vars: Vec<Var<f64>> = inputs.iter().map(|t| tape.constant(t.clone())).collect();
        let w = additive.forward(&vars[0], &vars[1], &vars[2], Some(&mask)).weights.value().to_vec();
        for (b, &len) in lengths.iter().enumerate() {
            let row = &w[b * seq..(b + 1) * seq];
            prop_assert!(row[len..].iter().all(|&x| x == 0.0));
            prop_assert!((row.iter().sum::<f64>() - 1.0).abs() < F64_TOL);
        }
    }
}

#[test]
fn attention_refuses_what_does_not_fit() {
    let tape = Tape::<f64>::new();
    let q = tape.var(Tensor::zeros(&[2, 3]));
    let k = tape.var(Tensor::zeros(&[2, 4, 3]));
    let v = tape.var(Tensor::zeros(&[2, 5, 3]));
    assert_eq!(
        panic_message(|| DotAttention::dot(false).forward(&q, &k, &v, None)),
        "DotAttention: query [2, 3], keys [2, 4, 3], values [2, 5, 3] do not fit (expected \
         [B, Q], [B, S, K], [B, S, V] and a [B, S] mask, S > 0)"
    );
    let empty_row = Tensor::from_vec(
        vec![true, true, false, false, false, false, false, false],
        &[2, 4],
    );
    assert_eq!(
        panic_message(|| DotAttention::dot(false).forward(&q, &k, &k, Some(&empty_row))),
        "DotAttention: row 1 of the mask has no valid position to attend to"
    );
    assert_eq!(
        panic_message(|| padding_mask(&[3, 0], 4)),
        "padding_mask: length 0 is not in 1..=4"
    );
    let q4 = tape.var(Tensor::zeros(&[2, 4]));
    assert_eq!(
        panic_message(|| DotAttention::dot(false).forward(&q4, &k, &k, None)),
        "DotAttention: the query has 4 features after projection, the keys 3"
    );
}
