//! Parity with PyTorch 2.15 on the fixtures in `tests/data/torch/` (copied from
//! `shared/fixtures/torch`; its README says what each file holds), and on more cases in the
//! same format in `tests/data/torch_extra/` (made with PyTorch 2.15 by the script there: GRU
//! and RNN stacked and bidirectional, relu, no biases, batch-first, float32 across the fused
//! kernels' block edges, padded batches of variable length, the GRU and RNN cells, LSTMs with a
//! projection).
//!
//! For every case: load PyTorch's weights by their `state_dict` names, run the same input and
//! initial states, and compare the outputs, the final states, and the gradients of
//! `L = Σ output·g_output + Σ h_n·g_h_n (+ Σ c_n·g_c_n)` with respect to the input, the initial
//! states and every parameter. Agreement is measured as max |ours − torch| / max |torch|, and
//! must be within 1e-10 in f64 and 1e-5 in f32, the fixtures' stated tolerances.

use std::collections::HashMap;
use std::path::PathBuf;

use autograd::{Tape, Var};
use rnn::io::read_safetensors;
use rnn::{Cell, GruCell, Layer, LayerConfig, LstmCell, Module, Nonlinearity, RnnCell, State};
use serde_json::Value;
use tensor::{Float, Rng, Tensor};

/// The team's fixtures (copied from `shared/fixtures/torch`).
const FIXTURES: &str = "torch";
/// The cases made by `tests/data/torch_extra/make_fixtures.py`.
const EXTRA: &str = "torch_extra";

fn data_dir(set: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(set)
}

/// Every case of a set's `index.json`, each with its set's name under `set`.
fn cases(set: &str) -> Vec<Value> {
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir(set).join("index.json")).unwrap())
            .unwrap();
    let mut cases = index["cases"].as_array().unwrap().clone();
    for c in &mut cases {
        c["set"] = Value::from(set);
    }
    cases
}

fn case(name: &str) -> Value {
    cases(FIXTURES)
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name} in index.json"))
}

fn load<T: Float>(case: &Value) -> HashMap<String, Tensor<T>> {
    let file = data_dir(case["set"].as_str().unwrap()).join(case["file"].as_str().unwrap());
    read_safetensors::<T>(&file)
        .unwrap_or_else(|e| panic!("{e}"))
        .tensors
        .into_iter()
        .collect()
}

/// max |actual − expected| / max |expected|, asserted ≤ tol.
#[track_caller]
fn assert_close<T: Float>(what: &str, actual: &Tensor<T>, expected: &Tensor<T>, tol: f64) {
    assert_eq!(actual.shape(), expected.shape(), "{what}: shapes differ");
    let (a, e) = (actual.to_vec(), expected.to_vec());
    let scale = e
        .iter()
        .fold(0.0f64, |m, v| m.max(v.to_f64().abs()))
        .max(f64::MIN_POSITIVE);
    let err = a
        .iter()
        .zip(&e)
        .fold(0.0f64, |m, (x, y)| m.max((x.to_f64() - y.to_f64()).abs()));
    assert!(
        err / scale <= tol,
        "{what}: max |ours − torch| = {err:.3e}, relative to max |torch| = {scale:.3e}: {:.3e} > {tol:e}",
        err / scale
    );
}

fn config(case: &Value) -> LayerConfig {
    let get = |k: &str| case[k].as_u64().unwrap() as usize;
    LayerConfig::new(get("input_size"), get("hidden_size"))
        .num_layers(case["num_layers"].as_u64().unwrap_or(1) as usize)
        .bidirectional(case["bidirectional"].as_bool().unwrap_or(false))
        .batch_first(case["batch_first"].as_bool().unwrap_or(false))
        .bias(case["bias"].as_bool().unwrap_or(true))
        .nonlinearity(match case["nonlinearity"].as_str() {
            Some("relu") => Nonlinearity::Relu,
            _ => Nonlinearity::Tanh,
        })
        .proj_size(case["proj_size"].as_u64().unwrap_or(0) as usize)
}

/// Runs a layer case: loads weights, runs forward with the fixture's initial state (and
/// lengths, if it has them), backward with the fixture's upstream gradients, and compares
/// everything, on the fused path, then on the cell's `step` compiled, then composed.
fn check_layer<T: Float, C: Cell<T>>(layer: Layer<T, C>, case: &Value, tol: f64) {
    assert!(layer.is_fused(), "built-in cells run fused by default");
    check_layer_path(&layer, case, tol);
    layer.set_fused(false);
    assert!(matches!(layer.explain()[0].2, rnn::Path::Compiled { .. }));
    check_layer_path(&layer, case, tol);
    layer.set_compiled(false);
    check_layer_path(&layer, case, tol);
}

/// The comparison, on whichever path (fused, compiled or composed) the layer is set to.
fn check_layer_path<T: Float, C: Cell<T>>(layer: &Layer<T, C>, case: &Value, tol: f64) {
    let path = match layer.explain().remove(0).2 {
        rnn::Path::Fused => "fused",
        rnn::Path::Compiled { .. } => "compiled",
        rnn::Path::Composed(_) => "composed",
    };
    let check = |what: &str, actual: &Tensor<T>, f: &HashMap<String, Tensor<T>>| {
        let label = format!("{} ({path}) {what}", case["name"].as_str().unwrap());
        assert_close(&label, actual, &f[what], tol);
    };
    for (_, p) in layer.named_params() {
        p.zero_grad();
    }
    let f = load::<T>(case);
    let params: HashMap<String, Tensor<T>> = layer
        .named_params()
        .into_iter()
        .map(|(n, _)| (n.clone(), f[&n].clone()))
        .collect();
    rnn::io::load_state_dict(layer, &params).unwrap();

    let tape = Tape::new();
    let x = tape.var(f["x"].clone());
    let init: Vec<Var<T>> = ["h0", "c0"]
        .iter()
        .take(C::State::num_parts())
        .map(|k| tape.var(f[*k].clone()))
        .collect();
    let lengths: Option<Vec<usize>> = case["lengths"]
        .as_array()
        .map(|l| l.iter().map(|v| v.as_u64().unwrap() as usize).collect());
    let init_state = C::State::from_parts(init.clone());
    let out = layer.forward_with(&x, Some(&init_state), lengths.as_deref());

    check("output", out.output.value(), &f);
    let finals = out.state.parts();
    let mut loss = (&out.output * &f["g_output"]).sum_all();
    for (k, name) in ["h_n", "c_n"].iter().enumerate().take(finals.len()) {
        check(name, finals[k].value(), &f);
        loss = loss + (&finals[k] * &f[&format!("g_{name}")]).sum_all();
    }
    let grads = loss.backward();
    check("grad.x", grads.wrt(&x), &f);
    for (k, name) in ["h0", "c0"].iter().enumerate().take(init.len()) {
        check(&format!("grad.{name}"), grads.wrt(&init[k]), &f);
    }
    for (name, p) in layer.named_params() {
        let g = p.grad().unwrap_or_else(|| panic!("no gradient for {name}"));
        check(&format!("grad.{name}"), &g, &f);
    }
}

/// Runs a cell case: one step from the fixture's `h0` (and `c0`), compared with `h_1` (and
/// `c_1`), and the gradients of `Σ h_1·g_h_1 (+ Σ c_1·g_c_1)`.
fn check_cell<T: Float, C: Cell<T>>(cell: C, case: &Value, tol: f64) {
    let check = |what: &str, actual: &Tensor<T>, f: &HashMap<String, Tensor<T>>| {
        let label = format!("{} {what}", case["name"].as_str().unwrap());
        assert_close(&label, actual, &f[what], tol);
    };
    let f = load::<T>(case);
    for (name, p) in cell.named_params() {
        p.set_value(f[&name].clone());
    }
    let tape = Tape::new();
    let x = tape.var(f["x"].clone());
    let init: Vec<Var<T>> = ["h0", "c0"]
        .iter()
        .take(C::State::num_parts())
        .map(|k| tape.var(f[*k].clone()))
        .collect();
    let next = cell.step(&x, &C::State::from_parts(init.clone())).parts();
    let mut loss = None;
    for (k, name) in ["h_1", "c_1"].iter().enumerate().take(next.len()) {
        check(name, next[k].value(), &f);
        let term = (&next[k] * &f[&format!("g_{name}")]).sum_all();
        loss = Some(match loss {
            None => term,
            Some(l) => l + term,
        });
    }
    let grads = loss.expect("a state").backward();
    check("grad.x", grads.wrt(&x), &f);
    for (k, name) in ["h0", "c0"].iter().enumerate().take(init.len()) {
        check(&format!("grad.{name}"), grads.wrt(&init[k]), &f);
    }
    for (name, p) in cell.named_params() {
        let g = p.grad().unwrap_or_else(|| panic!("no gradient for {name}"));
        check(&format!("grad.{name}"), &g, &f);
    }
}

/// Any case, by its `mode` and `dtype`, at the fixtures' tolerance for its dtype.
fn check_case(case: &Value) {
    match case["dtype"].as_str() {
        Some("float32") => check_case_as::<f32>(case, 1e-5),
        _ => check_case_as::<f64>(case, 1e-10),
    }
}

fn check_case_as<T: Float>(case: &Value, tol: f64) {
    let get = |k: &str| case[k].as_u64().unwrap() as usize;
    let (input, hidden) = (get("input_size"), get("hidden_size"));
    let bias = case["bias"].as_bool().unwrap_or(true);
    let nonlinearity = match case["nonlinearity"].as_str() {
        Some("relu") => Nonlinearity::Relu,
        _ => Nonlinearity::Tanh,
    };
    let rng = &mut rng();
    match case["mode"].as_str().unwrap() {
        "lstm" => check_layer(Layer::<T, LstmCell<T>>::lstm(config(case), rng), case, tol),
        "gru" => check_layer(Layer::<T, GruCell<T>>::gru(config(case), rng), case, tol),
        "rnn" => check_layer(Layer::<T, RnnCell<T>>::rnn(config(case), rng), case, tol),
        "lstm_cell" => check_cell(
            LstmCell::<T>::with_bias(input, hidden, bias, rng),
            case,
            tol,
        ),
        "gru_cell" => check_cell(GruCell::<T>::with_bias(input, hidden, bias, rng), case, tol),
        "rnn_cell" => {
            let cell = RnnCell::<T>::with_options(input, hidden, nonlinearity, bias, rng);
            check_cell(cell, case, tol)
        }
        other => panic!("unknown mode {other}"),
    }
}

fn rng() -> Rng {
    Rng::seed_from_u64(0)
}

#[test]
fn lstm_1l_matches_torch() {
    check_case(&case("lstm_1l"));
}

#[test]
fn lstm_1l_f32_matches_torch() {
    check_case(&case("lstm_1l_f32"));
}

#[test]
fn lstm_2l_bidirectional_matches_torch() {
    check_case(&case("lstm_2l_bi"));
}

#[test]
fn gru_1l_matches_torch() {
    check_case(&case("gru_1l"));
}

#[test]
fn rnn_tanh_1l_matches_torch() {
    check_case(&case("rnn_tanh_1l"));
}

#[test]
fn lstm_cell_matches_torch() {
    check_case(&case("lstm_cell"));
}

/// Every case the team's fixtures hold has a test above (a new one would go unchecked).
#[test]
fn every_fixture_has_a_test() {
    let source = include_str!("torch_parity.rs");
    for c in cases(FIXTURES) {
        let call = format!("case(\"{}\")", c["name"].as_str().unwrap());
        assert!(source.contains(&call), "no test for fixture {call}");
    }
}

/// The cases of `tests/data/torch_extra/` (see its script), each on the public API as a
/// PyTorch user would call it; a failure names the case, the path and the tensor.
#[test]
fn extra_cases_match_torch() {
    let cases = cases(EXTRA);
    assert!(cases.len() >= 27, "{} extra cases", cases.len());
    for c in &cases {
        check_case(c);
    }
}
