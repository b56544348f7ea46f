//! The optimizers, gradient clipping and learning-rate schedules against PyTorch 2.15's own
//! numbers: `tests/data/torch/optim.json`, made by `make_optim.py` beside it (which says what
//! each case holds). `optim.rs` checks the same rules against the algorithms of PyTorch's
//! documentation; this checks them against what PyTorch computes.

use autograd::optim::schedule::{Cosine, Exponential, LinearWarmup, LrSchedule, StepDecay};
use autograd::optim::{
    Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, AdamWConfig, Optimizer, RmsProp,
    RmsPropConfig, Sgd, SgdConfig,
};
use autograd::{clip_grad_norm, Param};
use serde_json::Value;
use tensor::Tensor;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/torch/optim.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A JSON number or (nested) array of numbers, flattened, with its shape.
fn flat(v: &Value) -> (Vec<f64>, Vec<usize>) {
    match v {
        Value::Array(items) => {
            let parts: Vec<(Vec<f64>, Vec<usize>)> = items.iter().map(flat).collect();
            let mut shape = vec![items.len()];
            shape.extend(parts.first().map_or(vec![], |p| p.1.clone()));
            (parts.into_iter().flat_map(|p| p.0).collect(), shape)
        }
        v => (vec![v.as_f64().unwrap()], vec![]),
    }
}

fn tensor(v: &Value) -> Tensor<f64> {
    let (data, shape) = flat(v);
    Tensor::from_vec(data, &shape)
}

/// max |ours − torch| / max(1, max |torch|) ≤ 1e-12.
#[track_caller]
fn assert_close(what: &str, ours: &[f64], torch: &[f64]) {
    assert_eq!(ours.len(), torch.len(), "{what}: lengths differ");
    let scale = torch.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let err = ours
        .iter()
        .zip(torch)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err / scale <= 1e-12,
        "{what}: max |ours − torch| = {err:.3e}\n ours  {ours:?}\n torch {torch:?}"
    );
}

fn num(options: &Value, key: &str, default: f64) -> f64 {
    options[key].as_f64().unwrap_or(default)
}

/// Our optimizer for a case, from PyTorch's class name and keyword arguments.
fn optimizer(kind: &str, o: &Value, params: Vec<Param<f64>>) -> Box<dyn Optimizer<f64>> {
    let flag = |key: &str| o[key].as_bool().unwrap_or(false);
    match kind {
        "SGD" => Box::new(Sgd::new(
            params,
            SgdConfig {
                lr: num(o, "lr", 1e-3),
                momentum: num(o, "momentum", 0.0),
                dampening: num(o, "dampening", 0.0),
                weight_decay: num(o, "weight_decay", 0.0),
                nesterov: flag("nesterov"),
            },
        )),
        "Adam" | "AdamW" => {
            let defaults = match kind {
                "Adam" => AdamConfig::default(),
                _ => AdamWConfig::default().into(),
            };
            let betas = &o["betas"];
            let config = AdamConfig {
                lr: num(o, "lr", defaults.lr),
                beta1: betas[0].as_f64().unwrap_or(defaults.beta1),
                beta2: betas[1].as_f64().unwrap_or(defaults.beta2),
                eps: num(o, "eps", defaults.eps),
                weight_decay: num(o, "weight_decay", defaults.weight_decay),
                amsgrad: flag("amsgrad"),
            };
            match kind {
                "Adam" => Box::new(Adam::new(params, config)),
                _ => Box::new(AdamW::new(params, config.into())),
            }
        }
        "RMSprop" => {
            let d = RmsPropConfig::default();
            Box::new(RmsProp::new(
                params,
                RmsPropConfig {
                    lr: num(o, "lr", d.lr),
                    alpha: num(o, "alpha", d.alpha),
                    eps: num(o, "eps", d.eps),
                    weight_decay: num(o, "weight_decay", d.weight_decay),
                    momentum: num(o, "momentum", d.momentum),
                    centered: flag("centered"),
                },
            ))
        }
        "Adagrad" => {
            let d = AdagradConfig::default();
            Box::new(Adagrad::new(
                params,
                AdagradConfig {
                    lr: num(o, "lr", d.lr),
                    lr_decay: num(o, "lr_decay", d.lr_decay),
                    weight_decay: num(o, "weight_decay", d.weight_decay),
                    initial_accumulator_value: num(o, "initial_accumulator_value", 0.0),
                    eps: num(o, "eps", d.eps),
                },
            ))
        }
        other => panic!("no optimizer {other}"),
    }
}

fn start(f: &Value) -> Vec<Param<f64>> {
    let init = f["init"].as_array().unwrap();
    (init.iter().enumerate())
        .map(|(k, v)| Param::new(format!("p{k}"), tensor(v)))
        .collect()
}

/// Every optimizer case, step by step: the gradients PyTorch got, then every parameter's
/// values against PyTorch's after that step (the third, without a gradient, must not move).
#[test]
fn optimizers_follow_pytorch_step_by_step() {
    let f = fixture();
    let cases = f["optimizers"].as_array().unwrap();
    assert_eq!(cases.len(), 11);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let params = start(&f);
        let mut opt = optimizer(
            case["kind"].as_str().unwrap(),
            &case["options"],
            params.clone(),
        );
        for (step, (grads, want)) in f["grads"]
            .as_array()
            .unwrap()
            .iter()
            .zip(case["values"].as_array().unwrap())
            .enumerate()
        {
            opt.zero_grad();
            for (p, g) in params.iter().zip(grads.as_array().unwrap()) {
                p.set_grad(Some(tensor(g)));
            }
            opt.step();
            for (k, (p, w)) in params.iter().zip(want.as_array().unwrap()).enumerate() {
                let what = format!("{name}, step {step}, p{k}");
                assert_close(&what, &p.value().to_vec(), &flat(w).0);
            }
        }
    }
}

#[test]
fn clip_grad_norm_is_pytorchs() {
    let f = fixture();
    for case in f["clip"].as_array().unwrap() {
        let params = start(&f);
        for (p, g) in params.iter().zip(f["grads"][1].as_array().unwrap()) {
            p.set_grad(Some(tensor(g)));
        }
        let max_norm = case["max_norm"].as_f64().unwrap();
        let norm = clip_grad_norm(&params, max_norm);
        let what = format!("clip_grad_norm_ to {max_norm}");
        assert_close(&what, &[norm], &[case["norm"].as_f64().unwrap()]);
        for (p, g) in params.iter().zip(case["grads"].as_array().unwrap()) {
            assert_close(&what, &p.grad().unwrap().to_vec(), &flat(g).0);
        }
    }
}

/// Each PyTorch scheduler's rate before each of 16 steps, as the closed form gives it.
#[test]
fn schedules_are_pytorchs() {
    let f = fixture();
    let cases = f["schedulers"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let n = |k: &str| case[k].as_f64().unwrap();
        let u = |v: &Value| v.as_u64().unwrap();
        let schedule: Box<dyn LrSchedule> = match case["kind"].as_str().unwrap() {
            "StepLR" => Box::new(StepDecay {
                step_size: u(&case["step_size"]),
                gamma: n("gamma"),
            }),
            "ExponentialLR" => Box::new(Exponential { gamma: n("gamma") }),
            "CosineAnnealingLR" => Box::new(Cosine {
                t_max: u(&case["T_max"]),
                eta_min: n("eta_min"),
            }),
            "LinearLR" => Box::new(LinearWarmup {
                warmup_steps: u(&case["total_iters"]),
                start_factor: n("start_factor"),
                then: None,
            }),
            "SequentialLR" => {
                let (w, c) = (&case["warmup"], &case["cosine"]);
                Box::new(LinearWarmup {
                    warmup_steps: u(&w["total_iters"]),
                    start_factor: w["start_factor"].as_f64().unwrap(),
                    then: Some(Box::new(Cosine {
                        t_max: u(&c["T_max"]),
                        eta_min: c["eta_min"].as_f64().unwrap(),
                    })),
                })
            }
            other => panic!("no schedule {other}"),
        };
        let ours: Vec<f64> = (0..16).map(|s| schedule.lr(n("base_lr"), s)).collect();
        let torch = flat(&case["lrs"]).0;
        assert_close(case["name"].as_str().unwrap(), &ours, &torch);
    }
}
