//! Optimizers against reference trajectories, state round trips and errors; gradient clipping;
//! learning-rate schedules.
//!
//! Each reference is written here, independently of the crate, as plain f64 scalar code
//! following the algorithm boxes of the PyTorch documentation (`torch.optim.SGD`, `Adam`,
//! `AdamW`, `RMSprop`, `Adagrad`), and run on the same problem: the quadratic
//! L(θ) = Σᵢ ½·aᵢ·(θᵢ − cᵢ)², whose gradient aᵢ·(θᵢ − cᵢ) the reference computes by hand while
//! the optimizer under test gets it from the tape.

use autograd::optim::schedule::{Cosine, Exponential, LinearWarmup, LrSchedule, StepDecay};
use autograd::optim::{
    Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, AdamWConfig, Optimizer, OptimizerState,
    RmsProp, RmsPropConfig, Sgd, SgdConfig, StateError,
};
use autograd::{clip_grad_norm, clip_grad_value, Param, Tape};
use tensor::Tensor;

// ---------------------------------------------------------------------------------------------
// The problem: two parameters in the loss, and one the loss does not use
// ---------------------------------------------------------------------------------------------

/// Initial values, curvatures a and centres c of the quadratic, flattened over the parameters
/// "w" (shape [3]) and "b" (shape [2, 1]).
const INIT: [f64; 5] = [1.0, -2.0, 0.5, 3.0, -0.7];
const A: [f64; 5] = [1.0, 2.0, 0.5, 4.0, 0.25];
const C: [f64; 5] = [0.3, 0.1, -1.0, -1.0, 2.0];
/// The third parameter, "idle", has no gradient: optimizers must leave it alone.
const IDLE: [f64; 2] = [5.0, 6.0];
const STEPS: usize = 8;

fn problem_params() -> Vec<Param<f64>> {
    vec![
        Param::new("w", Tensor::from_vec(INIT[..3].to_vec(), &[3])),
        Param::new("b", Tensor::from_vec(INIT[3..].to_vec(), &[2, 1])),
        Param::new("idle", Tensor::from_vec(IDLE.to_vec(), &[2])),
    ]
}

/// Sets the gradients of "w" and "b" to those of L at their current values, via the tape.
fn compute_grads(params: &[Param<f64>]) {
    for p in params {
        p.zero_grad();
    }
    let tape = Tape::<f64>::new();
    let mut loss = None;
    for (p, range) in params[..2].iter().zip([0..3, 3..5]) {
        let shape = p.shape();
        let half_a = Tensor::from_vec(A[range.clone()].iter().map(|a| 0.5 * a).collect(), &shape);
        let c = Tensor::from_vec(C[range].to_vec(), &shape);
        let term = ((tape.param(p) - &c).square() * &half_a).sum_all();
        loss = Some(match loss {
            None => term,
            Some(l) => l + term,
        });
    }
    loss.unwrap().backward();
}

fn values(params: &[Param<f64>]) -> Vec<f64> {
    params[..2]
        .iter()
        .flat_map(|p| p.value().to_vec())
        .collect()
}

/// The optimizer's trajectory: the values of "w" and "b" after each step.
fn run(opt: &mut dyn Optimizer<f64>, steps: usize) -> Vec<Vec<f64>> {
    (0..steps)
        .map(|_| {
            compute_grads(opt.params());
            opt.step();
            values(opt.params())
        })
        .collect()
}

/// A reference update: step number t (from 1), θ and ∇L(θ), all flat.
type RefUpdate = Box<dyn FnMut(u64, &mut [f64], &[f64])>;

/// The reference trajectory, the gradient computed by hand.
fn reference(mut update: RefUpdate, steps: usize) -> Vec<Vec<f64>> {
    let mut theta = INIT.to_vec();
    (1..=steps as u64)
        .map(|t| {
            let grad: Vec<f64> = (0..theta.len()).map(|i| A[i] * (theta[i] - C[i])).collect();
            update(t, &mut theta, &grad);
            theta.clone()
        })
        .collect()
}

fn assert_trajectories(got: &[Vec<f64>], want: &[Vec<f64>]) {
    assert_eq!(got.len(), want.len());
    for (step, (g, w)) in got.iter().zip(want).enumerate() {
        for (x, y) in g.iter().zip(w) {
            assert!(
                (x - y).abs() <= 1e-12 * y.abs().max(1.0),
                "step {}: got {g:?}, want {w:?}",
                step + 1
            );
        }
    }
}

/// Runs `opt` and the reference for STEPS steps and compares every step; checks that the
/// parameter without a gradient was skipped; returns the final values.
fn check_against_reference(opt: &mut dyn Optimizer<f64>, reference_update: RefUpdate) {
    let got = run(opt, STEPS);
    let want = reference(reference_update, STEPS);
    assert_trajectories(&got, &want);
    // The problem moved: the trajectory is not trivially the initial point.
    assert!(got[STEPS - 1]
        .iter()
        .zip(INIT)
        .any(|(x, y)| (x - y).abs() > 1e-3));
    assert_eq!(opt.params()[2].value().to_vec(), IDLE.to_vec());
    assert_eq!(opt.state().steps, vec![STEPS as u64, STEPS as u64, 0]);
}

// ---------------------------------------------------------------------------------------------
// Reference updates, from the PyTorch documentation's algorithms
// ---------------------------------------------------------------------------------------------

/// torch.optim.SGD:
/// g ← g + λθ; if μ ≠ 0 { b ← (t > 1) ? μb + (1 − τ)g : g; g ← nesterov ? g + μb : b };
/// θ ← θ − γg.
fn sgd_ref(lr: f64, momentum: f64, dampening: f64, wd: f64, nesterov: bool) -> RefUpdate {
    let mut b = vec![0.0; INIT.len()];
    Box::new(move |t, theta, grad| {
        for i in 0..theta.len() {
            let mut g = grad[i] + wd * theta[i];
            if momentum != 0.0 {
                b[i] = if t > 1 {
                    momentum * b[i] + (1.0 - dampening) * g
                } else {
                    g
                };
                g = if nesterov { g + momentum * b[i] } else { b[i] };
            }
            theta[i] -= lr * g;
        }
    })
}

/// torch.optim.Adam / AdamW:
/// Adam: g ← g + λθ;  AdamW: θ ← θ − γλθ;
/// m ← β₁m + (1 − β₁)g;  v ← β₂v + (1 − β₂)g²;  m̂ = m/(1 − β₁ᵗ);
/// v̂ = v/(1 − β₂ᵗ), or with AMSGrad v̂ = v_max/(1 − β₂ᵗ) where v_max ← max(v_max, v)
/// (PyTorch's implementation keeps the max of the raw second moment);
/// θ ← θ − γ·m̂/(√v̂ + ε).
fn adam_ref(c: AdamConfig, decoupled: bool) -> RefUpdate {
    let n = INIT.len();
    let (mut m, mut v, mut v_max) = (vec![0.0f64; n], vec![0.0f64; n], vec![0.0f64; n]);
    Box::new(move |t, theta, grad| {
        for i in 0..theta.len() {
            let mut g = grad[i];
            if decoupled {
                theta[i] -= c.lr * c.weight_decay * theta[i];
            } else {
                g += c.weight_decay * theta[i];
            }
            m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g;
            v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g * g;
            let m_hat = m[i] / (1.0 - c.beta1.powi(t as i32));
            let second = if c.amsgrad {
                v_max[i] = v_max[i].max(v[i]);
                v_max[i]
            } else {
                v[i]
            };
            let v_hat = second / (1.0 - c.beta2.powi(t as i32));
            theta[i] -= c.lr * m_hat / (v_hat.sqrt() + c.eps);
        }
    })
}

/// torch.optim.RMSprop:
/// g ← g + λθ;  v ← αv + (1 − α)g²;  ṽ = v, centered: g_avg ← αg_avg + (1 − α)g, ṽ = v − g_avg²;
/// μ > 0: b ← μb + g/(√ṽ + ε), θ ← θ − γb;  else θ ← θ − γ·g/(√ṽ + ε).
fn rmsprop_ref(c: RmsPropConfig) -> RefUpdate {
    let n = INIT.len();
    let (mut v, mut g_avg, mut b) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    Box::new(move |_, theta, grad| {
        for i in 0..theta.len() {
            let g = grad[i] + c.weight_decay * theta[i];
            v[i] = c.alpha * v[i] + (1.0 - c.alpha) * g * g;
            let mut v_tilde = v[i];
            if c.centered {
                g_avg[i] = c.alpha * g_avg[i] + (1.0 - c.alpha) * g;
                v_tilde -= g_avg[i] * g_avg[i];
            }
            let step = g / (v_tilde.sqrt() + c.eps);
            if c.momentum > 0.0 {
                b[i] = c.momentum * b[i] + step;
                theta[i] -= c.lr * b[i];
            } else {
                theta[i] -= c.lr * step;
            }
        }
    })
}

/// torch.optim.Adagrad:
/// γ̃ = γ/(1 + (t − 1)η);  g ← g + λθ;  s ← s + g² (s₀ = initial_accumulator_value);
/// θ ← θ − γ̃·g/(√s + ε).
fn adagrad_ref(c: AdagradConfig) -> RefUpdate {
    let mut s = vec![c.initial_accumulator_value; INIT.len()];
    Box::new(move |t, theta, grad| {
        let lr_t = c.lr / (1.0 + (t - 1) as f64 * c.lr_decay);
        for i in 0..theta.len() {
            let g = grad[i] + c.weight_decay * theta[i];
            s[i] += g * g;
            theta[i] -= lr_t * g / (s[i].sqrt() + c.eps);
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Trajectories
// ---------------------------------------------------------------------------------------------

#[test]
fn sgd_plain() {
    let config = SgdConfig {
        lr: 0.1,
        ..Default::default()
    };
    check_against_reference(
        &mut Sgd::new(problem_params(), config),
        sgd_ref(0.1, 0.0, 0.0, 0.0, false),
    );
}

#[test]
fn sgd_momentum_with_dampening() {
    let config = SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        dampening: 0.2,
        ..Default::default()
    };
    check_against_reference(
        &mut Sgd::new(problem_params(), config),
        sgd_ref(0.05, 0.9, 0.2, 0.0, false),
    );
}

#[test]
fn sgd_nesterov() {
    let config = SgdConfig {
        lr: 0.05,
        momentum: 0.8,
        nesterov: true,
        ..Default::default()
    };
    check_against_reference(
        &mut Sgd::new(problem_params(), config),
        sgd_ref(0.05, 0.8, 0.0, 0.0, true),
    );
}

#[test]
fn sgd_weight_decay() {
    let config = SgdConfig {
        lr: 0.1,
        weight_decay: 0.3,
        ..Default::default()
    };
    check_against_reference(
        &mut Sgd::new(problem_params(), config),
        sgd_ref(0.1, 0.0, 0.0, 0.3, false),
    );
    let config = SgdConfig {
        lr: 0.05,
        momentum: 0.5,
        weight_decay: 0.3,
        ..Default::default()
    };
    check_against_reference(
        &mut Sgd::new(problem_params(), config),
        sgd_ref(0.05, 0.5, 0.0, 0.3, false),
    );
}

#[test]
#[should_panic(expected = "Sgd: Nesterov momentum requires a momentum and zero dampening")]
fn sgd_nesterov_without_momentum_is_refused() {
    let config = SgdConfig {
        nesterov: true,
        ..Default::default()
    };
    let _ = Sgd::new(problem_params(), config);
}

fn adam_config() -> AdamConfig {
    AdamConfig {
        lr: 0.1,
        beta1: 0.8,
        beta2: 0.9,
        eps: 1e-8,
        weight_decay: 0.0,
        amsgrad: false,
    }
}

#[test]
fn adam() {
    let c = adam_config();
    check_against_reference(
        &mut Adam::new(problem_params(), c.clone()),
        adam_ref(c, false),
    );
    // With (coupled, L2) weight decay.
    let c = AdamConfig {
        weight_decay: 0.2,
        ..adam_config()
    };
    check_against_reference(
        &mut Adam::new(problem_params(), c.clone()),
        adam_ref(c, false),
    );
}

#[test]
fn adam_amsgrad() {
    // β₂ = 0.5 lets v follow the shrinking gradients down quickly, so the running max matters.
    let c = AdamConfig {
        beta2: 0.5,
        amsgrad: true,
        ..adam_config()
    };
    check_against_reference(
        &mut Adam::new(problem_params(), c.clone()),
        adam_ref(c.clone(), false),
    );
    // The check is sensitive to AMSGrad: without it the trajectory differs.
    let plain = reference(
        adam_ref(
            AdamConfig {
                amsgrad: false,
                ..c.clone()
            },
            false,
        ),
        STEPS,
    );
    let ams = reference(adam_ref(c, false), STEPS);
    assert!(plain[STEPS - 1]
        .iter()
        .zip(&ams[STEPS - 1])
        .any(|(x, y)| (x - y).abs() > 1e-6));
}

#[test]
fn adamw() {
    let c = AdamConfig {
        weight_decay: 0.2,
        ..adam_config()
    };
    check_against_reference(
        &mut AdamW::new(problem_params(), c.clone().into()),
        adam_ref(c.clone(), true),
    );
    // Decoupled decay is not L2 decay: the two trajectories differ.
    let coupled = reference(adam_ref(c.clone(), false), STEPS);
    let decoupled = reference(adam_ref(c, true), STEPS);
    assert!(coupled[STEPS - 1]
        .iter()
        .zip(&decoupled[STEPS - 1])
        .any(|(x, y)| (x - y).abs() > 1e-6));
}

#[test]
fn adam_defaults_are_pytorchs() {
    let c = AdamConfig::default();
    assert_eq!(
        (c.lr, c.beta1, c.beta2, c.eps, c.weight_decay, c.amsgrad),
        (1e-3, 0.9, 0.999, 1e-8, 0.0, false)
    );
    // AdamW's own defaults, also where only some fields are given.
    let w = AdamWConfig::default();
    assert_eq!(
        (w.lr, w.beta1, w.beta2, w.eps, w.weight_decay, w.amsgrad),
        (1e-3, 0.9, 0.999, 1e-8, 1e-2, false)
    );
    let partial = AdamWConfig {
        lr: 3e-4,
        ..Default::default()
    };
    assert_eq!(partial.weight_decay, 1e-2);
}

#[test]
fn rmsprop_plain() {
    let c = RmsPropConfig {
        lr: 0.05,
        ..Default::default()
    };
    check_against_reference(
        &mut RmsProp::new(problem_params(), c.clone()),
        rmsprop_ref(c),
    );
}

#[test]
fn rmsprop_centered_with_momentum_and_weight_decay() {
    let c = RmsPropConfig {
        lr: 0.02,
        alpha: 0.9,
        momentum: 0.7,
        centered: true,
        weight_decay: 0.1,
        ..Default::default()
    };
    check_against_reference(
        &mut RmsProp::new(problem_params(), c.clone()),
        rmsprop_ref(c),
    );
}

#[test]
fn adagrad_with_lr_decay_and_weight_decay() {
    let c = AdagradConfig {
        lr: 0.5,
        lr_decay: 0.1,
        weight_decay: 0.2,
        initial_accumulator_value: 0.1,
        ..Default::default()
    };
    check_against_reference(
        &mut Adagrad::new(problem_params(), c.clone()),
        adagrad_ref(c),
    );
    let c = AdagradConfig {
        lr: 0.5,
        ..Default::default()
    };
    check_against_reference(
        &mut Adagrad::new(problem_params(), c.clone()),
        adagrad_ref(c),
    );
}

#[test]
fn set_lr_takes_effect_on_the_next_step() {
    let mut opt = Sgd::new(
        problem_params(),
        SgdConfig {
            lr: 0.1,
            ..Default::default()
        },
    );
    let schedule = StepDecay {
        step_size: 2,
        gamma: 0.5,
    };
    let mut got = Vec::new();
    for step in 0..6 {
        opt.set_lr(schedule.lr(0.1, step));
        assert_eq!(opt.lr(), schedule.lr(0.1, step));
        got.extend(run(&mut opt, 1));
    }
    // The reference with the learning rate 0.1, 0.1, 0.05, 0.05, 0.025, 0.025.
    let lrs = [0.1, 0.1, 0.05, 0.05, 0.025, 0.025];
    let want = reference(
        Box::new(move |t, theta, grad| {
            for i in 0..theta.len() {
                theta[i] -= lrs[t as usize - 1] * grad[i];
            }
        }),
        6,
    );
    assert_trajectories(&got, &want);
}

#[test]
fn zero_grad_clears_every_gradient() {
    let mut opt = Sgd::new(problem_params(), SgdConfig::default());
    compute_grads(opt.params());
    assert!(opt.params()[0].grad().is_some() && opt.params()[1].grad().is_some());
    opt.zero_grad();
    assert!(opt.params().iter().all(|p| p.grad().is_none()));
    // A step without gradients changes nothing.
    opt.step();
    assert_eq!(values(opt.params()), INIT.to_vec());
}

#[test]
fn a_step_does_not_change_values_a_tape_already_holds() {
    let params = problem_params();
    let tape = Tape::<f64>::new();
    let w_on_tape = tape.param(&params[0]);
    let mut opt = Sgd::new(
        params.clone(),
        SgdConfig {
            lr: 0.1,
            ..Default::default()
        },
    );
    compute_grads(&params);
    opt.step();
    // The parameter moved; the tape's copy (which backward rules may capture) did not.
    assert_ne!(params[0].value().to_vec(), INIT[..3].to_vec());
    assert_eq!(w_on_tape.value().to_vec(), INIT[..3].to_vec());
}

// ---------------------------------------------------------------------------------------------
// State: round trip and errors
// ---------------------------------------------------------------------------------------------

type Factory = fn(Vec<Param<f64>>) -> Box<dyn Optimizer<f64>>;

fn factories() -> Vec<(&'static str, Factory)> {
    vec![
        ("sgd", |p| {
            Box::new(Sgd::new(
                p,
                SgdConfig {
                    lr: 0.05,
                    momentum: 0.9,
                    nesterov: true,
                    weight_decay: 0.01,
                    ..Default::default()
                },
            ))
        }),
        ("adam", |p| {
            Box::new(Adam::new(
                p,
                AdamConfig {
                    amsgrad: true,
                    beta2: 0.5,
                    ..adam_config()
                },
            ))
        }),
        ("adamw", |p| {
            Box::new(AdamW::new(
                p,
                AdamConfig {
                    weight_decay: 0.1,
                    ..adam_config()
                }
                .into(),
            ))
        }),
        ("rmsprop", |p| {
            Box::new(RmsProp::new(
                p,
                RmsPropConfig {
                    lr: 0.02,
                    momentum: 0.5,
                    centered: true,
                    ..Default::default()
                },
            ))
        }),
        ("adagrad", |p| {
            Box::new(Adagrad::new(
                p,
                AdagradConfig {
                    lr: 0.5,
                    lr_decay: 0.05,
                    ..Default::default()
                },
            ))
        }),
    ]
}

/// Fresh parameters holding the same values as `params` (what loading a checkpoint gives).
fn copies(params: &[Param<f64>]) -> Vec<Param<f64>> {
    params
        .iter()
        .map(|p| Param::new(p.name(), p.value().contiguous()))
        .collect()
}

#[test]
fn state_round_trip_resumes_exactly() {
    for (kind, make) in factories() {
        let mut straight = make(problem_params());
        let whole = run(straight.as_mut(), STEPS);

        let mut first = make(problem_params());
        run(first.as_mut(), STEPS / 2);
        let state = first.state();
        assert_eq!(state.kind, kind);
        assert_eq!(state.steps, vec![STEPS as u64 / 2, STEPS as u64 / 2, 0]);

        // A fresh optimizer over copies of the parameters, with the saved state.
        let mut resumed = make(copies(first.params()));
        resumed.set_lr(123.0); // overwritten by the state's learning rate
        resumed.load_state(&state).unwrap();
        assert_eq!(resumed.lr(), first.lr());
        assert_eq!(resumed.state(), state);
        let rest = run(resumed.as_mut(), STEPS - STEPS / 2);
        assert_eq!(rest, whole[STEPS / 2..], "{kind}: resumed run differs");
        assert_eq!(resumed.state(), straight.state(), "{kind}");

        // Without the state, the continuation differs (the state carries information).
        let mut cold = make(copies(first.params()));
        let cold_rest = run(cold.as_mut(), STEPS - STEPS / 2);
        assert_ne!(
            cold_rest,
            whole[STEPS / 2..],
            "{kind}: state made no difference"
        );
    }
}

#[test]
fn state_buffers_are_named_per_parameter() {
    let mut opt = Adam::new(
        problem_params(),
        AdamConfig {
            amsgrad: true,
            ..adam_config()
        },
    );
    run(&mut opt, 1);
    let state = opt.state();
    let mut names: Vec<&str> = state.buffers.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    // No buffers for "idle", which never had a gradient.
    assert_eq!(
        names,
        [
            "0.exp_avg",
            "0.exp_avg_sq",
            "0.max_exp_avg_sq",
            "1.exp_avg",
            "1.exp_avg_sq",
            "1.max_exp_avg_sq"
        ]
    );
    let (_, m_b) = state
        .buffers
        .iter()
        .find(|(n, _)| n == "1.exp_avg")
        .unwrap();
    assert_eq!(m_b.shape(), &[2, 1]);
    // After one step m = (1 − β₁)·g, g = a(θ₀ − c) for "b".
    let want: Vec<f64> = (3..5).map(|i| 0.2 * A[i] * (INIT[i] - C[i])).collect();
    for (x, y) in m_b.to_vec().iter().zip(&want) {
        assert!((x - y).abs() < 1e-12, "{:?} vs {want:?}", m_b.to_vec());
    }
}

fn one_step_state(make: Factory) -> (Box<dyn Optimizer<f64>>, OptimizerState<f64>) {
    let mut opt = make(problem_params());
    run(opt.as_mut(), 1);
    let state = opt.state();
    (opt, state)
}

#[test]
fn load_state_rejects_another_kind() {
    let all = factories();
    let (_, adam_state) = one_step_state(all[1].1);
    let (mut sgd, before) = one_step_state(all[0].1);
    assert_eq!(
        sgd.load_state(&adam_state),
        Err(StateError::WrongKind {
            expected: "sgd".into(),
            found: "adam".into()
        })
    );
    assert_eq!(
        sgd.state(),
        before,
        "a failed load leaves the optimizer unchanged"
    );
    // Adam and AdamW are different kinds too.
    let (mut adamw, _) = one_step_state(all[2].1);
    let err = adamw.load_state(&adam_state).unwrap_err();
    assert_eq!(
        err.to_string(),
        "optimizer state is for 'adam', not 'adamw'"
    );
}

#[test]
fn load_state_rejects_another_parameter_count() {
    let (_, state) = one_step_state(factories()[1].1);
    let mut fewer = Adam::new(problem_params()[..2].to_vec(), adam_config());
    assert_eq!(
        fewer.load_state(&state),
        Err(StateError::WrongParamCount {
            expected: 2,
            found: 3
        })
    );
    assert_eq!(fewer.state().steps, vec![0, 0]);
}

#[test]
fn load_state_rejects_a_buffer_of_the_wrong_shape() {
    let make = factories()[1].1;
    let (mut opt, mut state) = one_step_state(make);
    let before = opt.state();
    let slot = state
        .buffers
        .iter_mut()
        .find(|(n, _)| n == "1.exp_avg")
        .unwrap();
    slot.1 = Tensor::zeros(&[2]);
    assert_eq!(
        opt.load_state(&state),
        Err(StateError::WrongShape {
            name: "1.exp_avg".into(),
            expected: vec![2, 1],
            found: vec![2]
        })
    );
    assert_eq!(opt.state(), before);
}

#[test]
fn load_state_rejects_unknown_buffers() {
    let make = factories()[1].1;
    for bad in ["0.momentum_buffer", "7.exp_avg", "exp_avg", "x.exp_avg"] {
        let (mut opt, mut state) = one_step_state(make);
        state.buffers.push((bad.to_string(), Tensor::zeros(&[3])));
        assert_eq!(
            opt.load_state(&state),
            Err(StateError::UnknownBuffer(bad.to_string())),
            "{bad}"
        );
    }
}

#[test]
fn load_state_checks_what_the_step_counts_imply() {
    // Every factory's optimizer, one step in: each parameter with a gradient has its buffers.
    for (kind, make) in factories() {
        let (mut opt, state) = one_step_state(make);
        let before = opt.state();
        let first = state.buffers[0].0.clone();
        let index: usize = first.split_once('.').unwrap().0.parse().unwrap();
        // A buffer gone while its parameter has taken a step.
        let mut missing = state.clone();
        missing.buffers.retain(|(n, _)| *n != first);
        let err = opt.load_state(&missing).unwrap_err();
        assert!(
            matches!(&err, StateError::MissingBuffer { name, steps: 1, .. } if *name == first),
            "{kind}: {err}"
        );
        // A parameter that never stepped ("idle", 2) with a buffer.
        let mut idle = state.clone();
        let (_, slot) = first.split_once('.').unwrap();
        idle.buffers
            .push((format!("2.{slot}"), Tensor::zeros(&[2])));
        let err = opt.load_state(&idle).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "optimizer state has a buffer '2.{slot}', which this optimizer would not have: \
                 parameter 2 has taken no step"
            ),
            "{kind}"
        );
        // Step counts past what any run takes.
        let mut steps = state.clone();
        steps.steps[index] = u64::MAX;
        let err = opt.load_state(&steps).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "Invalid step count {} for parameter {index} (at most 2147483647)",
                u64::MAX
            ),
            "{kind}"
        );
        // Learning rates the constructor would refuse (1e308 only where the first step is
        // larger than the rate: Adam's lr / (1 − β₁) overflows f64).
        let mut bad_rates = vec![-1.0, f64::NAN, f64::INFINITY];
        if kind.starts_with("adam") {
            bad_rates.push(1e308);
        }
        for lr in bad_rates {
            let bad = OptimizerState {
                lr,
                ..state.clone()
            };
            let err = opt.load_state(&bad).unwrap_err();
            assert!(
                err.to_string().starts_with("Invalid learning rate: "),
                "{kind} {lr}: {err}"
            );
        }
        // Values a run never makes.
        let mut nan = state.clone();
        nan.buffers[0].1.as_mut_slice()[0] = f64::NAN;
        let err = opt.load_state(&nan).unwrap_err();
        assert!(
            err.to_string().contains("holds NaN, which"),
            "{kind}: {err}"
        );
        assert_eq!(
            opt.state(),
            before,
            "{kind}: a failed load changed the optimizer"
        );
        opt.load_state(&state).unwrap();
    }
}

#[test]
fn load_state_refuses_buffers_this_configuration_does_not_keep() {
    // A plain Adam loading an AMSGrad state, and an SGD without momentum loading one with.
    let (_, amsgrad) = one_step_state(factories()[1].1);
    let mut plain = Adam::new(problem_params(), adam_config());
    let err = plain.load_state(&amsgrad).unwrap_err();
    assert_eq!(
        err.to_string(),
        "optimizer state has a buffer '0.max_exp_avg_sq', which this optimizer would not have: \
         its configuration does not use 'max_exp_avg_sq'"
    );
    let (_, momentum) = one_step_state(factories()[0].1);
    let mut sgd = Sgd::new(problem_params(), SgdConfig::default());
    assert!(matches!(
        sgd.load_state(&momentum),
        Err(StateError::UnusedBuffer { .. })
    ));
    // And the other way: an AMSGrad Adam loading a plain state lacks its maximum.
    let mut plain = Adam::new(problem_params(), adam_config());
    run(&mut plain, 1);
    let (mut ams, _) = one_step_state(factories()[1].1);
    let err = ams.load_state(&plain.state()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "optimizer state has no buffer '0.max_exp_avg_sq', which parameter 0 would have after 1 \
         steps"
    );
}

// ---------------------------------------------------------------------------------------------
// Hyperparameters and parameter lists, refused as torch.optim refuses them
// ---------------------------------------------------------------------------------------------

/// The panic message of `f`.
fn panic_message(f: impl FnOnce()) -> String {
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("no panic");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap()
}

#[test]
fn bad_hyperparameters_are_refused_with_pytorchs_words() {
    let p = problem_params;
    type Case = (&'static str, Box<dyn FnOnce()>);
    let cases: Vec<Case> = vec![
        (
            "Sgd: Invalid learning rate: -1 (must be finite and >= 0)",
            Box::new(move || {
                Sgd::new(
                    p(),
                    SgdConfig {
                        lr: -1.0,
                        ..Default::default()
                    },
                );
            }),
        ),
        (
            "Sgd: Invalid momentum value: -0.5 (must be finite and >= 0)",
            Box::new(move || {
                Sgd::new(
                    p(),
                    SgdConfig {
                        momentum: -0.5,
                        ..Default::default()
                    },
                );
            }),
        ),
        (
            "Sgd: Invalid weight_decay value: NaN (must be finite and >= 0)",
            Box::new(move || {
                Sgd::new(
                    p(),
                    SgdConfig {
                        weight_decay: f64::NAN,
                        ..Default::default()
                    },
                );
            }),
        ),
        (
            "Adam: Invalid beta parameter at index 0: 1",
            Box::new(move || {
                Adam::new(
                    p(),
                    AdamConfig {
                        beta1: 1.0,
                        ..Default::default()
                    },
                );
            }),
        ),
        (
            "Adam: Invalid beta parameter at index 1: -0.1",
            Box::new(move || {
                Adam::new(
                    p(),
                    AdamConfig {
                        beta2: -0.1,
                        ..Default::default()
                    },
                );
            }),
        ),
        (
            "Adam: Invalid epsilon value: -1e-8 (must be finite and >= 0)",
            Box::new(move || {
                Adam::new(
                    p(),
                    AdamConfig {
                        eps: -1e-8,
                        ..Default::default()
                    },
                );
            }),
        ),
        (
            "Adam: Invalid learning rate: 1e308 (a step of inf is not finite in f64)",
            Box::new(move || {
                Adam::new(
                    p(),
                    AdamConfig {
                        lr: 1e308,
                        ..Default::default()
                    },
                );
            }),
        ),
        (
            "AdamW: Invalid weight_decay value: -0.01 (must be finite and >= 0)",
            Box::new(move || {
                AdamW::new(
                    p(),
                    AdamWConfig {
                        weight_decay: -0.01,
                        ..Default::default()
                    },
                );
            }),
        ),
        (
            "RmsProp: Invalid alpha value: -0.99 (must be finite and >= 0)",
            Box::new(move || {
                RmsProp::new(
                    p(),
                    RmsPropConfig {
                        alpha: -0.99,
                        ..Default::default()
                    },
                );
            }),
        ),
        (
            "RmsProp: Invalid learning rate: inf (must be finite and >= 0)",
            Box::new(move || {
                RmsProp::new(
                    p(),
                    RmsPropConfig {
                        lr: f64::INFINITY,
                        ..Default::default()
                    },
                );
            }),
        ),
        (
            "Adagrad: Invalid lr_decay value: -1 (must be finite and >= 0)",
            Box::new(move || {
                Adagrad::new(
                    p(),
                    AdagradConfig {
                        lr_decay: -1.0,
                        ..Default::default()
                    },
                );
            }),
        ),
        (
            "Adagrad: Invalid initial_accumulator_value value: -2 (must be finite and >= 0)",
            Box::new(move || {
                Adagrad::new(
                    p(),
                    AdagradConfig {
                        initial_accumulator_value: -2.0,
                        ..Default::default()
                    },
                );
            }),
        ),
        (
            "Adam: optimizer got an empty parameter list",
            Box::new(|| {
                Adam::<f64>::new(vec![], AdamConfig::default());
            }),
        ),
        (
            "Sgd: parameter 1 ('w') appears twice in the parameter list",
            Box::new(move || {
                let w = p().swap_remove(0);
                Sgd::new(vec![w.clone(), w], SgdConfig::default());
            }),
        ),
    ];
    for (expected, f) in cases {
        assert_eq!(panic_message(f), expected);
    }
    // f32 parameters: a learning rate f32 cannot hold.
    let w = Param::new("w", Tensor::<f32>::zeros(&[1]));
    assert_eq!(
        panic_message(|| {
            Sgd::new(
                vec![w],
                SgdConfig {
                    lr: 1e39,
                    ..Default::default()
                },
            );
        }),
        "Sgd: Invalid learning rate: 1e39 (a step of 1e39 is not finite in f32)"
    );
    // set_lr checks as the constructor does, and keeps the old rate on a refusal.
    let mut opt = Adam::new(problem_params(), adam_config());
    let lr = opt.lr();
    assert_eq!(
        panic_message(std::panic::AssertUnwindSafe(|| opt.set_lr(-0.1))),
        "Adam: Invalid learning rate: -0.1 (must be finite and >= 0)"
    );
    assert_eq!(opt.lr(), lr);
}

#[test]
fn a_gradient_of_another_shape_is_refused() {
    let w = Param::new("w", Tensor::<f64>::zeros(&[2, 2]));
    assert_eq!(
        panic_message(|| w.set_grad(Some(Tensor::zeros(&[5])))),
        "set_grad: parameter 'w' has shape [2, 2], the gradient has shape [5]"
    );
    assert!(w.grad().is_none(), "the refused gradient was kept");
    w.set_grad(Some(Tensor::ones(&[2, 2])));
    w.set_grad(None);
    assert!(w.grad().is_none());
}

// ---------------------------------------------------------------------------------------------
// Clipping
// ---------------------------------------------------------------------------------------------

#[test]
fn clip_grad_norm_returns_the_norm_and_scales() {
    let p = Param::new("p", Tensor::<f64>::zeros(&[2]));
    let q = Param::new("q", Tensor::<f64>::zeros(&[1, 1]));
    let none = Param::new("none", Tensor::<f64>::zeros(&[3]));
    p.set_grad(Some(Tensor::from_vec(vec![3.0, 4.0], &[2])));
    q.set_grad(Some(Tensor::from_vec(vec![-12.0], &[1, 1])));
    let params = [p.clone(), q.clone(), none.clone()];
    // ‖g‖ = √(9 + 16 + 144) = 13; clipped to 6.5, every gradient is scaled by 6.5/13 = ½
    // (up to the 1e-6 PyTorch adds to the norm).
    let norm = clip_grad_norm(&params, 6.5);
    assert_eq!(norm, 13.0);
    let scale = 6.5 / (13.0 + 1e-6);
    for (got, want) in p.grad().unwrap().to_vec().iter().zip([3.0, 4.0]) {
        assert!((got - want * scale).abs() < 1e-15);
    }
    assert!((q.grad().unwrap().to_vec()[0] + 12.0 * scale).abs() < 1e-15);
    assert!(none.grad().is_none());
    // The new norm is the maximum (to within the 1e-6 guard).
    let new_norm = clip_grad_norm(&params, 100.0);
    assert!((new_norm - 6.5).abs() < 1e-6);

    // Below the maximum nothing changes.
    let before = p.grad().unwrap().to_vec();
    let norm = clip_grad_norm(&params, 100.0);
    assert!((norm - 6.5).abs() < 1e-6);
    assert_eq!(p.grad().unwrap().to_vec(), before);
}

#[test]
fn clip_grad_norm_of_gradients_from_the_tape() {
    let w = Param::new("w", Tensor::<f32>::from_vec(vec![1.0, 2.0], &[2]));
    let tape = Tape::<f32>::new();
    // L = 5·Σw, so the gradient is [5, 5] and its norm 5√2.
    tape.param(&w).mul_scalar(5.0).sum_all().backward();
    let norm = clip_grad_norm(std::slice::from_ref(&w), 1.0);
    assert!((norm - 5.0 * 2f64.sqrt()).abs() < 1e-5);
    let g = w.grad().unwrap().to_vec();
    assert!((g[0] - 0.5f32.sqrt()).abs() < 1e-5 && (g[1] - 0.5f32.sqrt()).abs() < 1e-5);
}

#[test]
fn clip_grad_value_clamps() {
    let p = Param::new("p", Tensor::<f64>::zeros(&[5]));
    let none = Param::new("none", Tensor::<f64>::zeros(&[1]));
    p.set_grad(Some(Tensor::from_vec(
        vec![-3.0, -0.5, 0.0, 0.25, 7.0],
        &[5],
    )));
    clip_grad_value(&[p.clone(), none.clone()], 0.5);
    assert_eq!(p.grad().unwrap().to_vec(), vec![-0.5, -0.5, 0.0, 0.25, 0.5]);
    assert!(none.grad().is_none());
}

// ---------------------------------------------------------------------------------------------
// Schedules
// ---------------------------------------------------------------------------------------------

fn assert_lrs(schedule: &dyn LrSchedule, base: f64, want: &[(u64, f64)]) {
    for &(step, lr) in want {
        let got = schedule.lr(base, step);
        assert!(
            (got - lr).abs() < 1e-15,
            "step {step}: got {got}, want {lr}"
        );
    }
}

#[test]
fn step_decay() {
    // γ^⌊t/3⌋: ×1 for steps 0–2, ×½ for 3–5, ×¼ for 6–8, ×⅛ at 10.
    let s = StepDecay {
        step_size: 3,
        gamma: 0.5,
    };
    assert_lrs(
        &s,
        0.1,
        &[
            (0, 0.1),
            (2, 0.1),
            (3, 0.05),
            (5, 0.05),
            (6, 0.025),
            (10, 0.0125),
        ],
    );
}

#[test]
fn exponential() {
    let s = Exponential { gamma: 0.9 };
    // 0.1 · 0.9ᵗ: 0.1, 0.09, 0.081, …, 0.1 · 0.59049 at t = 5.
    assert_lrs(&s, 0.1, &[(0, 0.1), (1, 0.09), (2, 0.081), (5, 0.059049)]);
}

#[test]
fn cosine() {
    let s = Cosine {
        t_max: 10,
        eta_min: 0.001,
    };
    // η_min + (η − η_min)(1 + cos(πt/10))/2 with η = 0.1:
    // t = 0: 0.1; t = 5: cos(π/2) = 0 → 0.001 + 0.099/2 = 0.0505; t = 10: 0.001;
    // t = 2: cos(π/5) = (1 + √5)/4 → 0.001 + 0.099·(1 + (1 + √5)/4)/2.
    let t2 = 0.001 + 0.099 * (1.0 + (1.0 + 5f64.sqrt()) / 4.0) / 2.0;
    // t = 8: cos(4π/5) = −(1 + √5)/4.
    let t8 = 0.001 + 0.099 * (1.0 - (1.0 + 5f64.sqrt()) / 4.0) / 2.0;
    assert_lrs(
        &s,
        0.1,
        &[(0, 0.1), (2, t2), (5, 0.0505), (8, t8), (10, 0.001)],
    );
}

#[test]
fn linear_warmup() {
    // Factor ¼ → 1 over 4 steps: ¼, 7/16, 5/8, 13/16, then 1.
    let s = LinearWarmup {
        warmup_steps: 4,
        start_factor: 0.25,
        then: None,
    };
    assert_lrs(
        &s,
        0.1,
        &[
            (0, 0.025),
            (1, 0.04375),
            (2, 0.0625),
            (3, 0.08125),
            (4, 0.1),
            (100, 0.1),
        ],
    );
    // Handing over to a decay that starts counting at the end of warm-up.
    let s = LinearWarmup {
        warmup_steps: 4,
        start_factor: 0.25,
        then: Some(Box::new(Exponential { gamma: 0.5 })),
    };
    assert_lrs(
        &s,
        0.1,
        &[(0, 0.025), (3, 0.08125), (4, 0.1), (5, 0.05), (6, 0.025)],
    );
}

/// Past `t_max` PyTorch's closed form keeps following the cosine: at 2·t_max it is back at
/// the base rate, and at 1.5·t_max half way: η_min + (η − η_min)(1 + cos(1.5π))/2.
#[test]
fn cosine_follows_the_cosine_past_t_max() {
    let s = Cosine {
        t_max: 10,
        eta_min: 0.1,
    };
    assert!((s.lr(1.0, 20) - 1.0).abs() < 1e-12);
    assert!((s.lr(1.0, 15) - (0.1 + 0.9 * 0.5)).abs() < 1e-12);
}
