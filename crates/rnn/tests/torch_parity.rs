//! Parity with PyTorch 2.15 on the fixtures in `tests/data/torch/` (copied from
//! `shared/fixtures/torch`; its README says what each file holds).
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

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/torch")
}

fn case(name: &str) -> Value {
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir().join("index.json")).unwrap())
            .unwrap();
    index["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name} in index.json"))
        .clone()
}

fn load<T: Float>(case: &Value) -> HashMap<String, Tensor<T>> {
    let file = data_dir().join(case["file"].as_str().unwrap());
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
}

/// Runs a layer case: loads weights, runs forward with the fixture's initial state, backward
/// with the fixture's upstream gradients, and compares everything.
fn check_layer<T: Float, C: Cell<T>>(layer: Layer<T, C>, case: &Value, tol: f64) {
    assert!(layer.is_fused(), "built-in cells run fused by default");
    check_layer_path(&layer, case, tol);
    layer.set_fused(false);
    check_layer_path(&layer, case, tol);
}

/// The comparison, on whichever path (fused or composed) the layer is set to.
fn check_layer_path<T: Float, C: Cell<T>>(layer: &Layer<T, C>, case: &Value, tol: f64) {
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
    let out = layer.forward_with(&x, Some(&C::State::from_parts(init.clone())), None);

    assert_close("output", out.output.value(), &f["output"], tol);
    let finals = out.state.parts();
    let mut loss = (&out.output * &f["g_output"]).sum_all();
    for (k, name) in ["h_n", "c_n"].iter().enumerate().take(finals.len()) {
        assert_close(name, finals[k].value(), &f[*name], tol);
        loss = loss + (&finals[k] * &f[&format!("g_{name}")]).sum_all();
    }
    let grads = loss.backward();
    assert_close("grad.x", grads.wrt(&x), &f["grad.x"], tol);
    for (k, name) in ["h0", "c0"].iter().enumerate().take(init.len()) {
        assert_close(
            &format!("grad.{name}"),
            grads.wrt(&init[k]),
            &f[&format!("grad.{name}")],
            tol,
        );
    }
    for (name, p) in layer.named_params() {
        let g = p.grad().unwrap_or_else(|| panic!("no gradient for {name}"));
        assert_close(
            &format!("grad.{name}"),
            &g,
            &f[&format!("grad.{name}")],
            tol,
        );
    }
}

fn rng() -> Rng {
    Rng::seed_from_u64(0)
}

#[test]
fn lstm_1l_matches_torch() {
    let c = case("lstm_1l");
    check_layer(
        Layer::<f64, LstmCell<f64>>::lstm(config(&c), &mut rng()),
        &c,
        1e-10,
    );
}

#[test]
fn lstm_1l_f32_matches_torch() {
    let c = case("lstm_1l_f32");
    check_layer(
        Layer::<f32, LstmCell<f32>>::lstm(config(&c), &mut rng()),
        &c,
        1e-5,
    );
}

#[test]
fn lstm_2l_bidirectional_matches_torch() {
    let c = case("lstm_2l_bi");
    check_layer(
        Layer::<f64, LstmCell<f64>>::lstm(config(&c), &mut rng()),
        &c,
        1e-10,
    );
}

#[test]
fn gru_1l_matches_torch() {
    let c = case("gru_1l");
    check_layer(
        Layer::<f64, GruCell<f64>>::gru(config(&c), &mut rng()),
        &c,
        1e-10,
    );
}

#[test]
fn rnn_tanh_1l_matches_torch() {
    let c = case("rnn_tanh_1l");
    check_layer(
        Layer::<f64, RnnCell<f64>>::rnn(config(&c), &mut rng()),
        &c,
        1e-10,
    );
}

#[test]
fn lstm_cell_matches_torch() {
    let c = case("lstm_cell");
    let f = load::<f64>(&c);
    let get = |k: &str| c[k].as_u64().unwrap() as usize;
    let cell = LstmCell::<f64>::new(get("input_size"), get("hidden_size"), &mut rng());
    for (name, p) in cell.params() {
        p.set_value(f[&name].clone());
    }
    let tape = Tape::new();
    let (x, h0, c0) = (
        tape.var(f["x"].clone()),
        tape.var(f["h0"].clone()),
        tape.var(f["c0"].clone()),
    );
    let (h1, c1) = cell.step(&x, &(h0.clone(), c0.clone()));
    assert_close("h_1", h1.value(), &f["h_1"], 1e-10);
    assert_close("c_1", c1.value(), &f["c_1"], 1e-10);
    let loss = (&h1 * &f["g_h_1"]).sum_all() + (&c1 * &f["g_c_1"]).sum_all();
    let grads = loss.backward();
    assert_close("grad.x", grads.wrt(&x), &f["grad.x"], 1e-10);
    assert_close("grad.h0", grads.wrt(&h0), &f["grad.h0"], 1e-10);
    assert_close("grad.c0", grads.wrt(&c0), &f["grad.c0"], 1e-10);
    for (name, p) in cell.params() {
        assert_close(
            &format!("grad.{name}"),
            &p.grad().unwrap(),
            &f[&format!("grad.{name}")],
            1e-10,
        );
    }
}
