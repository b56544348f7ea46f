//! The built-in cells: the hand-worked step in each doc comment, and gradient checks of one
//! step against finite differences (with respect to the input, the state and every parameter).

use crate::common;

use autograd::{GradCheck, Param, Tape, Var};
use common::{check, flat_concat, uniform};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rnn::{Cell, GruCell, LstmCell, Module, Nonlinearity, RnnCell};
use tensor::{Rng, Tensor};

/// The documented numbers are printed to 7 decimals, so they are right to half a unit in the
/// last place: |computed − printed| ≤ 5e-8.
const PRINTED: f64 = 5e-8;

/// All weights 0.5 and all biases 0, as in the doc comments.
fn set_doc_weights(params: &[(String, Param<f64>)]) {
    for (name, p) in params {
        let v = if name.starts_with("weight") { 0.5 } else { 0.0 };
        p.set_value(Tensor::full(&p.shape(), v));
    }
}

fn one(tape: &Tape<f64>, v: f64) -> Var<f64> {
    tape.constant(Tensor::from_vec(vec![v], &[1, 1]))
}

#[track_caller]
fn assert_printed(what: &str, actual: &Var<f64>, printed: f64) {
    let a = actual.item();
    assert!(
        (a - printed).abs() <= PRINTED,
        "{what} = {a:.10}, the doc comment says {printed}"
    );
}

fn rng() -> Rng {
    Rng::seed_from_u64(7)
}

#[test]
fn rnn_cell_hand_worked_step() {
    // h = tanh(0.5·1 + 0.5·0) = tanh(0.5) = 0.4621172, with and without (zero) biases.
    for bias in [true, false] {
        let cell = RnnCell::<f64>::with_options(1, 1, Nonlinearity::Tanh, bias, &mut rng());
        set_doc_weights(&cell.named_params());
        let tape = Tape::new();
        let h = cell.step(&one(&tape, 1.0), &one(&tape, 0.0));
        assert_printed("h", &h, 0.4621172);
    }
}

#[test]
fn rnn_cell_relu_hand_worked_step() {
    // relu(0.5·1 + 0.5·0) = 0.5, and relu(0.5·(−1) + 0.5·0) = 0.
    let cell = RnnCell::<f64>::with_options(1, 1, Nonlinearity::Relu, true, &mut rng());
    assert_eq!(cell.nonlinearity(), Nonlinearity::Relu);
    set_doc_weights(&cell.named_params());
    let tape = Tape::new();
    assert_eq!(cell.step(&one(&tape, 1.0), &one(&tape, 0.0)).item(), 0.5);
    assert_eq!(cell.step(&one(&tape, -1.0), &one(&tape, 0.0)).item(), 0.0);
}

#[test]
fn lstm_cell_hand_worked_step() {
    // i = f = o = σ(0.5) = 0.6224593, g = tanh(0.5) = 0.4621172,
    // c = f·0 + i·g = 0.2876491, h = o·tanh(c) = 0.1742697.
    for bias in [true, false] {
        let cell = LstmCell::<f64>::with_bias(1, 1, bias, &mut rng());
        set_doc_weights(&cell.named_params());
        let tape = Tape::new();
        let zero = one(&tape, 0.0);
        let (h, c) = cell.step(&one(&tape, 1.0), &(zero.clone(), zero));
        assert_printed("c", &c, 0.2876491);
        assert_printed("h", &h, 0.1742697);
    }
}

#[test]
fn gru_cell_hand_worked_step() {
    // r = z = σ(0.5) = 0.6224593, n = tanh(0.5 + r·0) = 0.4621172,
    // h = (1 − z)·n + z·0 = 0.3775407 · 0.4621172 = 0.1744680.
    for bias in [true, false] {
        let cell = GruCell::<f64>::with_bias(1, 1, bias, &mut rng());
        set_doc_weights(&cell.named_params());
        let tape = Tape::new();
        let h = cell.step(&one(&tape, 1.0), &one(&tape, 0.0));
        assert_printed("h", &h, 0.1744680);
    }
}

#[test]
fn gru_cell_keeps_the_state_when_z_is_one() {
    // A large positive update-gate bias makes z ≈ 1, so h_t = n + z·(h − n) ≈ h: the GRU
    // copies its state, whatever the input (a check of which chunk is the update gate).
    let cell = GruCell::<f64>::new(1, 1, &mut rng());
    set_doc_weights(&cell.named_params());
    let (_, b_ih) = &cell.named_params()[2];
    b_ih.set_value(Tensor::from_vec(vec![0.0, 40.0, 0.0], &[3])); // [b_ir, b_iz, b_in]
    let tape = Tape::new();
    let h = cell.step(&one(&tape, 1.0), &one(&tape, 0.3));
    // 1 − σ(40.5) ≈ 2.6e-18, so h differs from 0.3 by less than 1e-15.
    assert!((h.item() - 0.3).abs() < 1e-15, "h = {}", h.item());
}

#[test]
fn lstm_cell_forget_gate_is_the_second_chunk() {
    // Input and output gates wide open, forget gate shut (bias −40 on the second chunk):
    // c_t = i·g ≈ g, whatever c_{t−1}.
    let cell = LstmCell::<f64>::new(1, 1, &mut rng());
    set_doc_weights(&cell.named_params());
    let (_, b_ih) = &cell.named_params()[2];
    b_ih.set_value(Tensor::from_vec(vec![40.0, -40.0, 0.0, 40.0], &[4])); // [i, f, g, o]
    let tape = Tape::new();
    let (_, c) = cell.step(&one(&tape, 1.0), &(one(&tape, 0.0), one(&tape, 5.0)));
    // c = σ(−39.5)·5 + σ(40.5)·tanh(0.5): within 1e-15 of tanh(0.5).
    assert!((c.item() - 0.5f64.tanh()).abs() < 1e-15, "c = {}", c.item());
}

#[test]
fn cell_parameter_shapes_are_pytorchs() {
    let (i, h) = (3, 5);
    let shapes = |params: Vec<(String, Param<f64>)>| -> Vec<(String, Vec<usize>)> {
        params.into_iter().map(|(n, p)| (n, p.shape())).collect()
    };
    for (gates, params) in [
        (1, RnnCell::<f64>::new(i, h, &mut rng()).named_params()),
        (4, LstmCell::<f64>::new(i, h, &mut rng()).named_params()),
        (3, GruCell::<f64>::new(i, h, &mut rng()).named_params()),
    ] {
        assert_eq!(
            shapes(params),
            vec![
                ("weight_ih".to_string(), vec![gates * h, i]),
                ("weight_hh".to_string(), vec![gates * h, h]),
                ("bias_ih".to_string(), vec![gates * h]),
                ("bias_hh".to_string(), vec![gates * h]),
            ]
        );
    }
    let no_bias = LstmCell::<f64>::with_bias(i, h, false, &mut rng()).named_params();
    let names: Vec<String> = no_bias.into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["weight_ih", "weight_hh"]);
}

// ---------------------------------------------------------------------------------------------
// Gradient checks. Default tolerances of `GradCheck` (atol 1e-5, rtol 1e-3 with h = 1e-6): the
// finite-difference error of these smooth functions of O(1) values is ~1e-10, while a wrong
// backward rule is off by O(1).
// ---------------------------------------------------------------------------------------------

fn params_of<C: Cell<f64>>(cell: &C) -> Vec<Param<f64>> {
    cell.named_params().into_iter().map(|(_, p)| p).collect()
}

fn sizes() -> impl Strategy<Value = (usize, usize, usize, u64)> {
    (1usize..=3, 1usize..=3, 1usize..=3, any::<u64>())
}

fn rnn_case(
    nl: Nonlinearity,
    bias: bool,
    (batch, input, hidden, seed): (usize, usize, usize, u64),
) -> Result<(), TestCaseError> {
    let mut rng = Rng::seed_from_u64(seed);
    let cell = RnnCell::<f64>::with_options(input, hidden, nl, bias, &mut rng);
    let x = uniform(&[batch, input], &mut rng);
    let h = uniform(&[batch, hidden], &mut rng);
    if nl == Nonlinearity::Relu {
        // relu has a kink at 0, where finite differences are meaningless: keep every
        // pre-activation at least 0.01 from it. Moving one operand by h = 1e-6 moves a
        // pre-activation by at most ~1e-6·(Σ|operands| ≤ 10), far less than 0.01. The
        // pre-activation is read off a tanh cell with the same weights: atanh(tanh(pre)).
        let twin = RnnCell::<f64>::with_options(
            input,
            hidden,
            Nonlinearity::Tanh,
            bias,
            &mut Rng::seed_from_u64(0),
        );
        for ((_, dst), (_, src)) in twin.named_params().iter().zip(cell.named_params()) {
            dst.set_value(src.value());
        }
        let tape = Tape::new();
        let t = twin.step(&tape.constant(x.clone()), &tape.constant(h.clone()));
        let min_pre = t
            .value()
            .to_vec()
            .iter()
            .map(|t| t.atanh().abs())
            .fold(f64::INFINITY, f64::min);
        prop_assume!(min_pre > 0.01);
    }
    check(
        GradCheck::new(|v| cell.step(&v[0], &v[1]))
            .inputs(&[x, h])
            .params(&params_of(&cell))
            .run(),
    )
}

fn lstm_case(
    bias: bool,
    (batch, input, hidden, seed): (usize, usize, usize, u64),
) -> Result<(), TestCaseError> {
    let mut rng = Rng::seed_from_u64(seed);
    let cell = LstmCell::<f64>::with_bias(input, hidden, bias, &mut rng);
    let x = uniform(&[batch, input], &mut rng);
    let h = uniform(&[batch, hidden], &mut rng);
    let c = uniform(&[batch, hidden], &mut rng);
    check(
        GradCheck::new(|v| {
            let (h, c) = cell.step(&v[0], &(v[1].clone(), v[2].clone()));
            flat_concat(&[h, c])
        })
        .inputs(&[x, h, c])
        .params(&params_of(&cell))
        .run(),
    )
}

fn gru_case(
    bias: bool,
    (batch, input, hidden, seed): (usize, usize, usize, u64),
) -> Result<(), TestCaseError> {
    let mut rng = Rng::seed_from_u64(seed);
    let cell = GruCell::<f64>::with_bias(input, hidden, bias, &mut rng);
    let x = uniform(&[batch, input], &mut rng);
    let h = uniform(&[batch, hidden], &mut rng);
    check(
        GradCheck::new(|v| cell.step(&v[0], &v[1]))
            .inputs(&[x, h])
            .params(&params_of(&cell))
            .run(),
    )
}

// Every case with and without biases.
proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn rnn_tanh_cell_gradients(sizes in sizes()) {
        rnn_case(Nonlinearity::Tanh, true, sizes)?;
        rnn_case(Nonlinearity::Tanh, false, sizes)?;
    }

    #[test]
    fn rnn_relu_cell_gradients(sizes in sizes()) {
        rnn_case(Nonlinearity::Relu, true, sizes)?;
        rnn_case(Nonlinearity::Relu, false, sizes)?;
    }

    #[test]
    fn lstm_cell_gradients(sizes in sizes()) {
        lstm_case(true, sizes)?;
        lstm_case(false, sizes)?;
    }

    #[test]
    fn gru_cell_gradients(sizes in sizes()) {
        gru_case(true, sizes)?;
        gru_case(false, sizes)?;
    }
}

/// As PyTorch's cells ("Input batch size 3 doesn't match hidden0 batch size 2"): a state whose
/// batch differs from the input's is refused, not broadcast.
#[test]
#[should_panic(
    expected = "LstmCell::step: state part 1 of shape [2, 4] does not fit x_t of shape [3, 5] \
                (expected [3, 4])"
)]
fn a_state_of_another_batch_is_refused() {
    let tape = Tape::<f64>::new();
    let x = tape.constant(Tensor::zeros(&[3, 5]));
    let (h, c) = (
        tape.constant(Tensor::zeros(&[3, 4])),
        tape.constant(Tensor::zeros(&[2, 4])),
    );
    LstmCell::new(5, 4, &mut rng()).step(&x, &(h, c));
}

#[test]
#[should_panic(
    expected = "GruCell::step: x_t of shape [3, 2] does not fit input_size 5 (expected [batch, 5], \
                or [5] unbatched)"
)]
fn an_input_of_the_wrong_size_is_refused() {
    let tape = Tape::<f64>::new();
    let (x, h) = (
        tape.constant(Tensor::zeros(&[3, 2])),
        tape.constant(Tensor::zeros(&[3, 4])),
    );
    GruCell::new(5, 4, &mut rng()).step(&x, &h);
}

#[test]
#[should_panic(
    expected = "RnnCell::step: state part 0 of shape [1, 4] does not fit x_t of shape [5]"
)]
fn an_unbatched_input_needs_an_unbatched_state() {
    let tape = Tape::<f64>::new();
    let (x, h) = (
        tape.constant(Tensor::zeros(&[5])),
        tape.constant(Tensor::zeros(&[1, 4])),
    );
    RnnCell::new(5, 4, &mut rng()).step(&x, &h);
}
