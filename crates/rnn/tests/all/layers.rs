//! The layer wrappers (`nn.RNN`, `nn.LSTM`, `nn.GRU` semantics): gradient checks over every
//! combination of options, shapes as PyTorch's, batch-first, variable lengths, dropout, shape
//! errors, streaming and truncated BPTT.

use crate::common;

use std::cell::RefCell;
use std::rc::Rc;

use autograd::{GradCheck, Param, Tape, Var};
use common::{assert_bits_eq, assert_close, check, flat_concat, panic_message, uniform};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rnn::io::{load_state_dict, state_dict};
use rnn::{
    manual_seed, Cell, Gru, Layer, LayerConfig, Lstm, LstmCell, Module, Nonlinearity, Rnn, RnnCell,
    State,
};
use tensor::{Rng, Tensor};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Rnn(Nonlinearity),
    Lstm,
    Gru,
}

const KINDS: [Kind; 4] = [
    Kind::Rnn(Nonlinearity::Tanh),
    Kind::Rnn(Nonlinearity::Relu),
    Kind::Lstm,
    Kind::Gru,
];

/// Builds the layer of `kind` from `cfg` and runs `body` with it (the layers are different
/// types, so this is a macro rather than a function).
macro_rules! with_layer {
    ($kind:expr, $cfg:expr, $rng:expr, |$layer:ident| $body:expr) => {
        match $kind {
            Kind::Rnn(nl) => {
                let $layer = Rnn::<f64>::rnn($cfg.nonlinearity(nl), $rng);
                $body
            }
            Kind::Lstm => {
                let $layer = Lstm::<f64>::lstm($cfg, $rng);
                $body
            }
            Kind::Gru => {
                let $layer = Gru::<f64>::gru($cfg, $rng);
                $body
            }
        }
    };
}

fn x_shape(cfg: &LayerConfig, seq: usize, batch: usize) -> Vec<usize> {
    if cfg.batch_first {
        vec![batch, seq, cfg.input_size]
    } else {
        vec![seq, batch, cfg.input_size]
    }
}

fn state_shape(cfg: &LayerConfig, batch: usize) -> Vec<usize> {
    vec![
        cfg.num_layers * cfg.num_directions(),
        batch,
        cfg.hidden_size,
    ]
}

/// A copy of `layer`'s weights into `other` (same parameter names and shapes).
fn copy_weights<C: Cell<f64>, D: Cell<f64>>(from: &Layer<f64, C>, to: &Layer<f64, D>) {
    load_state_dict(to, &state_dict(from).into_iter().collect()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Gradient checks
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Case {
    kind: Kind,
    num_layers: usize,
    bidirectional: bool,
    batch_first: bool,
    bias: bool,
    dropout: bool,
    fused: bool,
    seq: usize,
    batch: usize,
    input: usize,
    hidden: usize,
    lengths: Option<Vec<usize>>,
    seed: u64,
}

fn case(kind: Kind) -> impl Strategy<Value = Case> {
    (
        (
            1usize..=2,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
        (1usize..=4, 1usize..=3, 1usize..=3, 1usize..=3),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_flat_map(
            move |(
                (num_layers, bidirectional, batch_first, bias, dropout, fused),
                sizes,
                var,
                seed,
            )| {
                let (seq, batch, input, hidden) = sizes;
                let lengths = if var {
                    proptest::collection::vec(1..=seq, batch)
                        .prop_map(Some)
                        .boxed()
                } else {
                    Just(None).boxed()
                };
                lengths.prop_map(move |lengths| Case {
                    kind,
                    num_layers,
                    bidirectional,
                    batch_first,
                    bias,
                    dropout,
                    fused,
                    seq,
                    batch,
                    input,
                    hidden,
                    lengths,
                    seed,
                })
            },
        )
}

/// Checks the gradients of (output, every final state part) with respect to the input, the
/// initial state and every parameter. With dropout, the generator is reseeded before every
/// evaluation so that each one draws the same mask (and the check is of a fixed function).
///
/// Default `GradCheck` tolerances (atol 1e-5, rtol 1e-3, h = 1e-6): finite-difference error
/// here is ~1e-10; a wrong rule is off by O(1).
fn gradcheck_layer<C: Cell<f64>>(
    layer: &Layer<f64, C>,
    c: &Case,
    rng: &mut Rng,
) -> Result<(), TestCaseError> {
    let cfg = layer.config();
    let mut inputs = vec![uniform(&x_shape(cfg, c.seq, c.batch), rng)];
    for _ in 0..C::State::num_parts() {
        inputs.push(uniform(&state_shape(cfg, c.batch), rng));
    }
    let f = |v: &[Var<f64>]| {
        manual_seed(c.seed);
        let init = C::State::from_parts(v[1..].to_vec());
        let out = layer.forward_with(&v[0], Some(&init), c.lengths.as_deref());
        let mut parts = vec![out.output];
        parts.extend(out.state.parts());
        flat_concat(&parts)
    };
    check(
        GradCheck::new(f)
            .inputs(&inputs)
            .params(&layer.params())
            .run(),
    )
}

/// A relu RNN cell that also records the smallest |pre-activation| it computes, read off a
/// tanh twin with the same weights (pre = atanh(tanh(pre)), accurate near 0, which is all
/// that matters here).
struct ReluWatch {
    relu: RnnCell<f64>,
    tanh: RnnCell<f64>,
    min_pre: Rc<std::cell::Cell<f64>>,
}

impl Cell<f64> for ReluWatch {
    type State = Var<f64>;
    fn input_size(&self) -> usize {
        self.relu.input_size()
    }
    fn hidden_size(&self) -> usize {
        self.relu.hidden_size()
    }
    fn step(&self, x: &Var<f64>, h: &Var<f64>) -> Var<f64> {
        // Off the record: the twin's weights are not this cell's parameters.
        let t = x
            .tape()
            .no_grad(|| self.tanh.step(&x.detach(), &h.detach()));
        let m = t
            .value()
            .to_vec()
            .iter()
            .map(|v| v.atanh().abs())
            .fold(f64::INFINITY, f64::min);
        self.min_pre.set(self.min_pre.get().min(m));
        self.relu.step(x, h)
    }
}

impl Module<f64> for ReluWatch {
    fn named_params(&self) -> Vec<(String, Param<f64>)> {
        self.relu.named_params()
    }
}

fn run_gradcheck_case(c: Case) -> Result<(), TestCaseError> {
    let mut rng = Rng::seed_from_u64(c.seed);
    let cfg = LayerConfig::new(c.input, c.hidden)
        .num_layers(c.num_layers)
        .bidirectional(c.bidirectional)
        .batch_first(c.batch_first)
        .bias(c.bias)
        // Dropout acts between layers: a single layer refuses it.
        .dropout(if c.dropout && c.num_layers > 1 {
            0.3
        } else {
            0.0
        });
    with_layer!(c.kind, cfg, &mut rng, |layer| {
        // Both the fused kernels and the composed cells.
        layer.set_fused(c.fused);
        if let Kind::Rnn(Nonlinearity::Relu) = c.kind {
            // relu has a kink at 0, where finite differences are meaningless: skip cases with
            // a pre-activation within 1e-4 of it. Moving one operand by h = 1e-6 moves a
            // pre-activation by ~1e-6 times weights and values of O(1): 100× less.
            let min_pre = min_relu_pre_activation(&layer, &c, rng.clone());
            prop_assume!(
                min_pre > 1e-4,
                "a relu pre-activation is {} from its kink",
                min_pre
            );
        }
        gradcheck_layer(&layer, &c, &mut rng)
    })
}

/// The smallest |pre-activation| of a relu layer on the operands `gradcheck_layer` will draw
/// from `rng`, found by running a copy of the layer made of [`ReluWatch`] cells.
fn min_relu_pre_activation<C: Cell<f64>>(layer: &Layer<f64, C>, c: &Case, mut rng: Rng) -> f64 {
    let min_pre = Rc::new(std::cell::Cell::new(f64::INFINITY));
    let watch = Layer::new(
        layer.config().clone(),
        &mut Rng::seed_from_u64(0),
        |input, rng| ReluWatch {
            relu: RnnCell::with_options(input, c.hidden, Nonlinearity::Relu, c.bias, rng),
            tanh: RnnCell::with_options(input, c.hidden, Nonlinearity::Tanh, c.bias, rng),
            min_pre: min_pre.clone(),
        },
    );
    copy_weights(layer, &watch);
    for l in 0..layer.config().num_layers {
        for d in 0..layer.config().num_directions() {
            let cell = watch.cell(l, d);
            for (t, r) in cell.tanh.params().iter().zip(cell.relu.params()) {
                t.set_value(r.value());
            }
        }
    }
    let cfg = layer.config();
    let x = uniform::<f64>(&x_shape(cfg, c.seq, c.batch), &mut rng);
    let h0 = uniform::<f64>(&state_shape(cfg, c.batch), &mut rng);
    let tape = Tape::new();
    manual_seed(c.seed);
    watch.forward_with(
        &tape.constant(x),
        Some(&tape.constant(h0)),
        c.lengths.as_deref(),
    );
    min_pre.get()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn rnn_tanh_layer_gradients(c in case(Kind::Rnn(Nonlinearity::Tanh))) {
        run_gradcheck_case(c)?;
    }

    #[test]
    fn rnn_relu_layer_gradients(c in case(Kind::Rnn(Nonlinearity::Relu))) {
        run_gradcheck_case(c)?;
    }

    #[test]
    fn lstm_layer_gradients(c in case(Kind::Lstm)) {
        run_gradcheck_case(c)?;
    }

    #[test]
    fn gru_layer_gradients(c in case(Kind::Gru)) {
        run_gradcheck_case(c)?;
    }
}

/// The full combination, whatever proptest happens to draw: 2 layers, bidirectional,
/// batch-first, variable lengths, dropout.
#[test]
fn every_option_at_once_gradients() {
    for kind in KINDS {
        for fused in [true, false] {
            let c = Case {
                kind,
                num_layers: 2,
                bidirectional: true,
                batch_first: true,
                bias: true,
                dropout: true,
                fused,
                seq: 4,
                batch: 3,
                input: 2,
                hidden: 2,
                lengths: Some(vec![2, 4, 1]),
                seed: 11,
            };
            if let Err(e) = run_gradcheck_case(c) {
                panic!("{kind:?}, fused {fused}: {e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------------------------

/// As documented for `torch.nn.RNN/LSTM/GRU`: output `[seq, batch, D·H]` (`[batch, seq, D·H]`
/// if batch_first), `h_n` and `c_n` `[layers·D, batch, H]` whatever batch_first says.
#[test]
fn output_and_state_shapes_are_pytorchs() {
    let (seq, batch, input, hidden) = (5, 3, 4, 6);
    for kind in KINDS {
        for num_layers in [1, 2, 3] {
            for bidirectional in [false, true] {
                for batch_first in [false, true] {
                    for bias in [false, true] {
                        for lengths in [None, Some(vec![5, 2, 4])] {
                            let cfg = LayerConfig::new(input, hidden)
                                .num_layers(num_layers)
                                .bidirectional(bidirectional)
                                .batch_first(batch_first)
                                .bias(bias);
                            let d = if bidirectional { 2 } else { 1 };
                            let what = format!("{kind:?} {cfg:?} lengths {lengths:?}");
                            let mut rng = Rng::seed_from_u64(1);
                            with_layer!(kind, cfg, &mut rng, |layer| {
                                let tape = Tape::new();
                                let x =
                                    tape.var(Tensor::ones(&x_shape(layer.config(), seq, batch)));
                                let out = layer.forward_with(&x, None, lengths.as_deref());
                                let expected_out = if batch_first {
                                    [batch, seq, d * hidden]
                                } else {
                                    [seq, batch, d * hidden]
                                };
                                assert_eq!(out.output.shape(), expected_out, "output of {what}");
                                let parts = out.state.parts();
                                let n_parts = if matches!(kind, Kind::Lstm) { 2 } else { 1 };
                                assert_eq!(parts.len(), n_parts, "{what}");
                                for p in &parts {
                                    assert_eq!(
                                        p.shape(),
                                        [num_layers * d, batch, hidden],
                                        "state of {what}"
                                    );
                                }
                                assert_eq!(out.h_n().shape(), parts[0].shape());
                            })
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn lstm_c_n_is_the_cell_state() {
    let layer = Lstm::<f64>::lstm(LayerConfig::new(2, 3), &mut Rng::seed_from_u64(2));
    let tape = Tape::new();
    let x = tape.constant(uniform(&[4, 2, 2], &mut Rng::seed_from_u64(3)));
    let out = layer.forward(&x);
    assert_bits_eq("c_n", out.c_n().value(), out.state.1.value());
    assert_bits_eq("h_n", out.h_n().value(), out.state.0.value());
    // h = o ⊙ tanh(c) with o ∈ (0, 1): |h| < |tanh(c)| elementwise, so they are not swapped.
    for (h, c) in out
        .h_n()
        .value()
        .to_vec()
        .iter()
        .zip(out.c_n().value().to_vec())
    {
        assert!(h.abs() < c.tanh().abs() + 1e-300, "h {h}, c {c}");
    }
    // The last step's output is h_n (one layer, one direction, full lengths).
    assert_bits_eq(
        "output[-1]",
        &out.output.value().select(0, 3).contiguous(),
        &out.h_n().value().select(0, 0).contiguous(),
    );
}

#[test]
fn no_initial_state_means_zeros() {
    for kind in KINDS {
        let cfg = LayerConfig::new(3, 2).num_layers(2).bidirectional(true);
        with_layer!(kind, cfg, &mut Rng::seed_from_u64(4), |layer| {
            let tape = Tape::new();
            let x = tape.constant(uniform(&[3, 2, 3], &mut Rng::seed_from_u64(5)));
            let a = layer.forward(&x);
            let zeros: Vec<Var<f64>> = a
                .state
                .parts()
                .iter()
                .map(|p| tape.constant(Tensor::zeros(p.shape())))
                .collect();
            let b = layer.forward_with(&x, Some(&State::from_parts(zeros)), None);
            assert_bits_eq("output", a.output.value(), b.output.value());
            assert_bits_eq("h_n", a.h_n().value(), b.h_n().value());
        })
    }
}

// ---------------------------------------------------------------------------------------------
// batch_first
// ---------------------------------------------------------------------------------------------

/// batch_first only transposes the input and output: the same weights give the seq-first
/// result transposed, bit for bit (the same arithmetic on the same numbers), and the same
/// states (which are never batch-first).
#[test]
fn batch_first_is_the_transposed_seq_first_result() {
    let (seq, batch, input, hidden) = (4, 3, 2, 3);
    for kind in KINDS {
        for (lengths, fused) in [
            (None, true),
            (Some(vec![3, 4, 1]), true),
            (Some(vec![3, 4, 1]), false),
        ] {
            let cfg = LayerConfig::new(input, hidden)
                .num_layers(2)
                .bidirectional(true);
            let mut rng = Rng::seed_from_u64(6);
            with_layer!(kind, cfg.clone(), &mut rng, |seq_first| {
                with_layer!(
                    kind,
                    cfg.clone().batch_first(true),
                    &mut rng,
                    |batch_first| {
                        copy_weights(&seq_first, &batch_first);
                        seq_first.set_fused(fused);
                        batch_first.set_fused(fused);
                        let x = uniform::<f64>(&[seq, batch, input], &mut rng);
                        let tape = Tape::new();
                        let a = seq_first.forward_with(
                            &tape.constant(x.clone()),
                            None,
                            lengths.as_deref(),
                        );
                        let xt = tape.constant(x.transpose(0, 1).contiguous());
                        let b = batch_first.forward_with(&xt, None, lengths.as_deref());
                        let what = format!("{kind:?} lengths {lengths:?} fused {fused}");
                        assert_eq!(b.output.shape(), [batch, seq, 2 * hidden], "{what}");
                        assert_bits_eq(
                            &format!("output, {what}"),
                            &b.output.value().transpose(0, 1).contiguous(),
                            &a.output.value().contiguous(),
                        );
                        for (pa, pb) in a.state.parts().iter().zip(b.state.parts()) {
                            assert_bits_eq(&format!("state, {what}"), pb.value(), pa.value());
                        }
                    }
                )
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Variable lengths
// ---------------------------------------------------------------------------------------------

/// A padded batch gives, for each sequence, exactly what running it alone at its own length
/// gives (as PyTorch's packed sequences): the same outputs at its valid steps, zeros past its
/// end, the final state of every layer and direction at its own end (for the reverse
/// direction: having started at its own end), and the same gradients — none at padded steps.
fn check_variable_lengths<C: Cell<f64>>(layer: &Layer<f64, C>, what: &str) {
    let (seq, batch) = (5, 4);
    let lengths = [3, 5, 1, 4]; // unsorted, one full, one of length 1
    let cfg = layer.config().clone();
    assert!(!cfg.batch_first);
    let d = cfg.num_directions();
    let mut rng = Rng::seed_from_u64(8);
    let x = uniform::<f64>(&[seq, batch, cfg.input_size], &mut rng);
    let init: Vec<Tensor<f64>> = (0..C::State::num_parts())
        .map(|_| uniform(&state_shape(&cfg, batch), &mut rng))
        .collect();
    let g_out = uniform::<f64>(&[seq, batch, d * cfg.hidden_size], &mut rng);
    let g_state: Vec<Tensor<f64>> = init.iter().map(|t| uniform(t.shape(), &mut rng)).collect();

    // Runs x with init, returns output, state parts, and the gradients of
    // Σ output·g_out + Σ state·g_state with respect to x and the init parts.
    let run = |x: Tensor<f64>,
               init: Vec<Tensor<f64>>,
               g_out: Tensor<f64>,
               g_state: Vec<Tensor<f64>>,
               lengths: Option<&[usize]>| {
        let tape = Tape::new();
        let xv = tape.var(x);
        let iv: Vec<Var<f64>> = init.into_iter().map(|t| tape.var(t)).collect();
        let out = layer.forward_with(&xv, Some(&C::State::from_parts(iv.clone())), lengths);
        let mut loss = (&out.output * &g_out).sum_all();
        for (p, g) in out.state.parts().iter().zip(&g_state) {
            loss = loss + (p * g).sum_all();
        }
        let grads = loss.backward();
        let parts: Vec<Tensor<f64>> = out
            .state
            .parts()
            .iter()
            .map(|p| p.value().clone())
            .collect();
        let g_init: Vec<Tensor<f64>> = iv.iter().map(|v| grads.wrt(v).clone()).collect();
        (
            out.output.value().clone(),
            parts,
            grads.wrt(&xv).clone(),
            g_init,
        )
    };

    let (out, state, gx, g_init) = run(
        x.clone(),
        init.clone(),
        g_out.clone(),
        g_state.clone(),
        Some(&lengths),
    );
    // Batched and single-sequence matrix products may sum in a different order: agreement to
    // 1e-12 on values of O(1) allows for that and nothing else.
    let tol = 1e-12;
    for (b, &len) in lengths.iter().enumerate() {
        let one = |t: &Tensor<f64>, dim: usize| t.narrow(dim, b, 1).contiguous();
        let valid = |t: &Tensor<f64>| one(t, 1).narrow(0, 0, len).contiguous();
        let (a_out, a_state, a_gx, a_ginit) = run(
            valid(&x),
            init.iter().map(|t| one(t, 1)).collect(),
            valid(&g_out),
            g_state.iter().map(|t| one(t, 1)).collect(),
            None,
        );
        let w = format!("{what}, sequence {b} of length {len}");
        assert_close(&format!("output, {w}"), &valid(&out), &a_out, tol);
        assert_close(&format!("∂/∂x, {w}"), &valid(&gx), &a_gx, tol);
        if len < seq {
            let padded = |t: &Tensor<f64>| one(t, 1).narrow(0, len, seq - len).contiguous();
            assert!(
                padded(&out).to_vec().iter().all(|&v| v == 0.0),
                "output past the end is not zero, {w}"
            );
            assert!(
                padded(&gx).to_vec().iter().all(|&v| v == 0.0),
                "padded input steps have a gradient, {w}"
            );
        }
        for k in 0..state.len() {
            assert_close(
                &format!("state part {k}, {w}"),
                &one(&state[k], 1),
                &a_state[k],
                tol,
            );
            assert_close(
                &format!("∂/∂init part {k}, {w}"),
                &one(&g_init[k], 1),
                &a_ginit[k],
                tol,
            );
        }
    }
}

#[test]
fn variable_lengths_equal_running_each_sequence_alone() {
    let cfg = LayerConfig::new(3, 4).num_layers(2).bidirectional(true);
    let lstm = Lstm::<f64>::lstm(cfg.clone(), &mut Rng::seed_from_u64(9));
    let gru = Gru::<f64>::gru(cfg.clone(), &mut Rng::seed_from_u64(10));
    let rnn = Rnn::<f64>::rnn(cfg, &mut Rng::seed_from_u64(11));
    for fused in [true, false] {
        lstm.set_fused(fused);
        check_variable_lengths(&lstm, &format!("LSTM, fused {fused}"));
        gru.set_fused(fused);
        check_variable_lengths(&gru, &format!("GRU, fused {fused}"));
        rnn.set_fused(fused);
        check_variable_lengths(&rnn, &format!("RNN, fused {fused}"));
    }
}

#[test]
fn full_lengths_equal_no_lengths() {
    let cfg = LayerConfig::new(2, 3).num_layers(2).bidirectional(true);
    let layer = Gru::<f64>::gru(cfg, &mut Rng::seed_from_u64(12));
    let tape = Tape::new();
    let x = tape.constant(uniform(&[3, 2, 2], &mut Rng::seed_from_u64(13)));
    let a = layer.forward(&x);
    let b = layer.forward_with(&x, None, Some(&[3, 3]));
    assert_bits_eq("output", b.output.value(), a.output.value());
    assert_bits_eq("h_n", b.h_n().value(), a.h_n().value());
}

// ---------------------------------------------------------------------------------------------
// Dropout
// ---------------------------------------------------------------------------------------------

fn lstm_pair(dropout: f64, num_layers: usize) -> (Lstm<f64>, Lstm<f64>) {
    let cfg = LayerConfig::new(3, 4).num_layers(num_layers);
    let with = Lstm::<f64>::lstm(cfg.clone().dropout(dropout), &mut Rng::seed_from_u64(14));
    let without = Lstm::<f64>::lstm(cfg, &mut Rng::seed_from_u64(99));
    copy_weights(&with, &without);
    (with, without)
}

fn run(layer: &Lstm<f64>, x: &Tensor<f64>) -> (Tensor<f64>, Tensor<f64>) {
    let tape = Tape::new();
    let out = layer.forward(&tape.constant(x.clone()));
    (out.output.value().clone(), out.h_n().value().clone())
}

#[test]
fn eval_mode_has_no_dropout() {
    let (with, without) = lstm_pair(0.5, 2);
    let x = uniform(&[4, 3, 3], &mut Rng::seed_from_u64(15));
    assert!(
        with.is_training(),
        "layers start in training mode, as in PyTorch"
    );
    with.set_training(false);
    assert!(!with.is_training());
    let (a, ha) = run(&with, &x);
    let (b, hb) = run(&with, &x);
    let (c, hc) = run(&without, &x);
    assert_bits_eq("eval is deterministic", &a, &b);
    assert_bits_eq("eval is deterministic (h_n)", &ha, &hb);
    assert_bits_eq("eval equals dropout 0", &a, &c);
    assert_bits_eq("eval equals dropout 0 (h_n)", &ha, &hc);
}

#[test]
fn training_mode_drops_between_layers() {
    let (with, without) = lstm_pair(0.5, 2);
    let x = uniform(&[4, 3, 3], &mut Rng::seed_from_u64(16));
    let (reference, _) = run(&without, &x);
    manual_seed(1);
    let (a, _) = run(&with, &x);
    let (b, _) = run(&with, &x);
    // 48 dropout draws at p = 0.5: the chance that none drops is 2⁻⁴⁸.
    assert_ne!(
        a.to_vec(),
        reference.to_vec(),
        "training with dropout 0.5 dropped nothing"
    );
    assert_ne!(
        a.to_vec(),
        b.to_vec(),
        "two training runs drew the same mask"
    );
    manual_seed(1);
    let (a2, _) = run(&with, &x);
    assert_bits_eq("the same seed gives the same masks", &a2, &a);
    // Back in training mode after eval, dropout is active again.
    with.set_training(false);
    with.set_training(true);
    let (c, _) = run(&with, &x);
    assert_ne!(c.to_vec(), reference.to_vec());
}

#[test]
#[should_panic(
    expected = "Layer: dropout 0.5 with num_layers 1 would do nothing: dropout acts between \
                stacked layers only (PyTorch warns of this)"
)]
fn dropout_on_a_single_layer_is_refused() {
    // One layer: dropout has no layer to sit between. PyTorch warns and runs without it.
    lstm_pair(0.5, 1);
}

#[test]
fn no_dropout_after_the_last_layer() {
    // Two layers with p = 1: the second layer sees zeros, and its own output is not dropped,
    // so the output is that of the second layer alone run over zeros.
    let x = uniform(&[4, 3, 3], &mut Rng::seed_from_u64(17));
    let cfg = LayerConfig::new(3, 4).num_layers(2).dropout(1.0);
    let two = Lstm::<f64>::lstm(cfg, &mut Rng::seed_from_u64(18));
    let top = Lstm::<f64>::lstm(LayerConfig::new(4, 4), &mut Rng::seed_from_u64(19));
    let l1: std::collections::HashMap<String, Tensor<f64>> = state_dict(&two)
        .into_iter()
        .filter_map(|(n, t)| n.strip_suffix("_l1").map(|n| (format!("{n}_l0"), t)))
        .collect();
    load_state_dict(&top, &l1).unwrap();
    let (out, h_n) = run(&two, &x);
    let (expected, top_h) = run(&top, &Tensor::zeros(&[4, 3, 4]));
    assert!(
        out.to_vec().iter().any(|&v| v != 0.0),
        "the output was dropped"
    );
    // Exactly equal: the same kernel on the same weights and on zeros (the dropped inputs
    // may be −0 rather than +0, which compares equal, hence values rather than bits).
    assert_close("output with p = 1", &out, &expected, 0.0);
    assert_close(
        "h_n of layer 1",
        &h_n.select(0, 1).contiguous(),
        &top_h.select(0, 0).contiguous(),
        0.0,
    );
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

fn small_lstm() -> Lstm<f64> {
    Lstm::lstm(
        LayerConfig::new(3, 2).num_layers(2),
        &mut Rng::seed_from_u64(20),
    )
}

fn input(shape: &[usize]) -> Var<f64> {
    Tape::new().constant(Tensor::zeros(shape))
}

#[test]
#[should_panic(
    expected = "input of shape [4, 2, 5] does not fit input_size 3 (expected [seq, batch, input], \
                or [seq, input] unbatched)"
)]
fn wrong_input_size_panics() {
    small_lstm().forward(&input(&[4, 2, 5]));
}

#[test]
#[should_panic(expected = "input of shape [4, 5] does not fit input_size 3")]
fn unbatched_input_of_the_wrong_size_panics() {
    small_lstm().forward(&input(&[4, 5]));
}

#[test]
#[should_panic(expected = "input of shape [3] does not fit input_size 3")]
fn one_dimensional_input_panics() {
    small_lstm().forward(&input(&[3]));
}

#[test]
#[should_panic(
    expected = "for an unbatched input, initial state part 0 must be [layers·directions, hidden]"
)]
fn unbatched_input_with_a_batched_state_panics() {
    let tape = Tape::new();
    let x = tape.constant(Tensor::zeros(&[4, 3]));
    let h = tape.constant(Tensor::zeros(&[2, 1, 2]));
    let c = tape.constant(Tensor::zeros(&[2, 1, 2]));
    small_lstm().forward_with(&x, Some(&(h, c)), None);
}

#[test]
#[should_panic(expected = "lengths are for a padded batch, not an unbatched input of shape [4, 3]")]
fn unbatched_input_with_lengths_panics() {
    small_lstm().forward_with(&input(&[4, 3]), None, Some(&[4]));
}

/// As PyTorch: `[seq, input]` runs as a batch of one, on both paths, whatever batch_first
/// says, with output `[seq, D·hidden]` and state parts `[layers·D, hidden]`.
#[test]
fn unbatched_input_is_a_batch_of_one() {
    for batch_first in [false, true] {
        for fused in [true, false] {
            let layer = Lstm::<f64>::lstm(
                LayerConfig::new(3, 2)
                    .num_layers(2)
                    .bidirectional(true)
                    .batch_first(batch_first),
                &mut Rng::seed_from_u64(1),
            );
            layer.set_fused(fused);
            let tape = Tape::new();
            let xs = Tensor::rand_normal(&[5, 3], 0.0, 1.0, &mut Rng::seed_from_u64(2));
            let one = layer.forward(&tape.constant(xs.clone()));
            let batched_x = match batch_first {
                false => xs.unsqueeze(1),
                true => xs.unsqueeze(0),
            };
            let batched = layer.forward(&tape.constant(batched_x));
            assert_eq!(one.output.shape(), [5, 4]);
            let out = batched.output.value().reshape(&[5, 4]);
            assert_eq!(one.output.value().to_vec(), out.to_vec());
            for (a, b) in one.state.parts().iter().zip(batched.state.parts()) {
                assert_eq!(a.shape(), [4, 2]);
                assert_eq!(a.value().to_vec(), b.value().to_vec());
            }
        }
    }
}

#[test]
#[should_panic(expected = "expected [batch, seq, input]")]
fn wrong_batch_first_input_names_the_layout() {
    let layer = Gru::<f64>::gru(
        LayerConfig::new(3, 2).batch_first(true),
        &mut Rng::seed_from_u64(0),
    );
    layer.forward(&input(&[2, 4, 1]));
}

#[test]
#[should_panic(expected = "initial state part 1 has shape [2, 3, 2], expected [2, 2, 2]")]
fn wrong_initial_state_panics() {
    let tape = Tape::new();
    let x = tape.constant(Tensor::zeros(&[4, 2, 3]));
    let h = tape.constant(Tensor::zeros(&[2, 2, 2]));
    let c = tape.constant(Tensor::zeros(&[2, 3, 2]));
    small_lstm().forward_with(&x, Some(&(h, c)), None);
}

#[test]
#[should_panic(expected = "3 lengths for a batch of 2")]
fn wrong_number_of_lengths_panics() {
    small_lstm().forward_with(&input(&[4, 2, 3]), None, Some(&[1, 2, 3]));
}

#[test]
#[should_panic(expected = "length 0 is not in 1..=4")]
fn zero_length_panics() {
    small_lstm().forward_with(&input(&[4, 2, 3]), None, Some(&[4, 0]));
}

#[test]
#[should_panic(expected = "length 5 is not in 1..=4")]
fn too_long_length_panics() {
    small_lstm().forward_with(&input(&[4, 2, 3]), None, Some(&[5, 1]));
}

#[test]
#[should_panic(expected = "the sequence is empty (input of shape [2, 0, 3])")]
fn empty_sequence_panics() {
    // As PyTorch ("Expected sequence length to be larger than 0 in RNN"), on both paths.
    let layer = Gru::<f64>::gru(
        LayerConfig::new(3, 2).batch_first(true),
        &mut Rng::seed_from_u64(0),
    );
    layer.forward(&input(&[2, 0, 3]));
}

#[test]
#[should_panic(expected = "the sequence is empty (input of shape [0, 2, 3])")]
fn empty_sequence_panics_composed() {
    let layer = small_lstm();
    layer.set_fused(false);
    layer.set_compiled(false);
    layer.forward(&input(&[0, 2, 3]));
}

#[test]
#[should_panic(expected = "num_layers must be at least 1")]
fn zero_layers_panics() {
    Lstm::<f64>::lstm(
        LayerConfig::new(3, 2).num_layers(0),
        &mut Rng::seed_from_u64(0),
    );
}

#[test]
#[should_panic(expected = "dropout 1.5 is not in [0, 1]")]
fn bad_dropout_panics() {
    Lstm::<f64>::lstm(
        LayerConfig::new(3, 2).dropout(1.5),
        &mut Rng::seed_from_u64(0),
    );
}

#[test]
#[should_panic(
    expected = "the cell for layer 1 has sizes (input 3, hidden 2), expected (input 2, hidden 2)"
)]
fn mis_sized_custom_cell_panics() {
    Layer::new(
        LayerConfig::new(3, 2).num_layers(2),
        &mut Rng::seed_from_u64(0),
        |_, rng| LstmCell::<f64>::new(3, 2, rng),
    );
}

#[test]
#[should_panic(expected = "a bidirectional layer needs the whole sequence")]
fn streaming_a_bidirectional_layer_panics() {
    let layer = Lstm::<f64>::lstm(
        LayerConfig::new(3, 2).bidirectional(true),
        &mut Rng::seed_from_u64(0),
    );
    let _ = layer.stream();
}

#[test]
#[should_panic(expected = "the chunk length k must be at least 1")]
fn tbptt_with_k_zero_panics() {
    small_lstm().tbptt(&Tensor::zeros(&[4, 2, 3]), 0, None, |_| {});
}

#[test]
#[should_panic(
    expected = "Stream::step: x_t of shape [3] does not fit input_size 3 (expected [batch, input])"
)]
fn streaming_an_unbatched_step_panics() {
    // Without the check, [input] would be taken for a batch of 3 and broadcast silently.
    let layer = small_lstm();
    layer.stream().step(&Tensor::zeros(&[3]));
}

#[test]
#[should_panic(expected = "Stream::step: x_t has batch 3, the carried state has batch 1")]
fn streaming_another_batch_panics() {
    let layer = small_lstm();
    let mut stream = layer.stream();
    stream.step(&Tensor::zeros(&[1, 3]));
    stream.step(&Tensor::zeros(&[3, 3]));
}

// ---------------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------------

/// An LSTM cell that records, at every step, how many nodes the tape holds and whether it is
/// recording — a window onto the tape a stream uses internally.
struct Spy {
    inner: LstmCell<f64>,
    log: Rc<RefCell<Vec<(usize, bool)>>>,
}

impl Cell<f64> for Spy {
    type State = (Var<f64>, Var<f64>);
    fn input_size(&self) -> usize {
        self.inner.input_size()
    }
    fn hidden_size(&self) -> usize {
        self.inner.hidden_size()
    }
    fn step(&self, x: &Var<f64>, s: &Self::State) -> Self::State {
        let tape = x.tape();
        self.log
            .borrow_mut()
            .push((tape.len(), tape.grad_enabled()));
        self.inner.step(x, s)
    }
}

impl Module<f64> for Spy {
    fn named_params(&self) -> Vec<(String, Param<f64>)> {
        self.inner.named_params()
    }
}

#[test]
fn streaming_equals_the_full_forward_and_records_nothing() {
    let (seq, batch, input, hidden) = (6, 2, 3, 4);
    let log = Rc::new(RefCell::new(Vec::new()));
    let cfg = LayerConfig::new(input, hidden).num_layers(2);
    let layer = Layer::new(cfg, &mut Rng::seed_from_u64(21), |i, rng| Spy {
        inner: LstmCell::new(i, hidden, rng),
        log: log.clone(),
    });
    let x = uniform::<f64>(&[seq, batch, input], &mut Rng::seed_from_u64(22));
    let tape = Tape::new();
    let full = layer.forward(&tape.var(x.clone()));
    assert!(tape.len() > seq, "the full forward is recorded");
    log.borrow_mut().clear();

    let mut stream = layer.stream();
    assert!(stream.state().is_none());
    for t in 0..seq {
        let y = stream.step(&x.select(0, t).contiguous());
        // The same operations on the same numbers: bit-identical.
        assert_bits_eq(
            &format!("step {t}"),
            &y,
            &full.output.value().select(0, t).contiguous(),
        );
    }
    // The carried state is the full forward's final state, layer by layer.
    let state = stream.state().expect("a state after feeding steps");
    assert_eq!(state.len(), 2);
    for (l, parts) in state.iter().enumerate() {
        assert_bits_eq(
            "h",
            &parts[0],
            &full.h_n().value().select(0, l).contiguous(),
        );
        assert_bits_eq(
            "c",
            &parts[1],
            &full.c_n().value().select(0, l).contiguous(),
        );
    }
    // Every cell step ran with recording off, on a tape holding nothing: the tape never grows.
    let log = log.borrow();
    assert_eq!(log.len(), seq * 2, "one step per layer per time step");
    assert!(
        log.iter().all(|&(len, recording)| len == 0 && !recording),
        "stream steps saw tapes {log:?} (length, recording)"
    );
    // Nothing reached the parameters' gradients either.
    assert!(layer.params().iter().all(|p| p.grad().is_none()));
    drop(log);

    // reset starts again from zeros.
    stream.reset();
    assert!(stream.state().is_none());
    let y0 = stream.step(&x.select(0, 0).contiguous());
    assert_bits_eq(
        "after reset",
        &y0,
        &full.output.value().select(0, 0).contiguous(),
    );
}

/// A built-in layer streamed step by step gives the full forward's output at every step and
/// its final state.
fn check_stream<C: Cell<f64>>(layer: &Layer<f64, C>, what: &str) {
    let (seq, batch) = (5, 2);
    let x = uniform::<f64>(
        &[seq, batch, layer.config().input_size],
        &mut Rng::seed_from_u64(24),
    );
    let full = |fused: bool| {
        layer.set_fused(fused);
        let out = layer.forward(&Tape::new().constant(x.clone()));
        let state: Vec<Tensor<f64>> = out
            .state
            .parts()
            .iter()
            .map(|p| p.value().clone())
            .collect();
        (out.output.value().clone(), state)
    };
    let (composed, fused) = (full(false), full(true));
    let mut stream = layer.stream();
    for t in 0..seq {
        let y = stream.step(&x.select(0, t).contiguous());
        let w = format!("{what}, step {t}");
        // The stream steps the cells as the composed path does: bit-identical.
        assert_bits_eq(&w, &y, &composed.0.select(0, t).contiguous());
        // The fused kernels sum in another order (see `tests/all/fused.rs`): 1e-12 covers that.
        assert_close(&w, &y, &fused.0.select(0, t).contiguous(), 1e-12);
    }
    let state = stream.state().unwrap();
    for (l, parts) in state.iter().enumerate() {
        for (k, part) in parts.iter().enumerate() {
            let w = format!("{what}, layer {l} state part {k}");
            assert_bits_eq(&w, part, &composed.1[k].select(0, l).contiguous());
            assert_close(&w, part, &fused.1[k].select(0, l).contiguous(), 1e-12);
        }
    }
}

#[test]
fn streaming_built_in_layers_equals_the_full_forward() {
    let lstm = Lstm::<f64>::lstm(
        LayerConfig::new(2, 3).num_layers(2),
        &mut Rng::seed_from_u64(23),
    );
    check_stream(&lstm, "2-layer LSTM");
    let gru = Gru::<f64>::gru(
        LayerConfig::new(2, 3).num_layers(3),
        &mut Rng::seed_from_u64(23),
    );
    check_stream(&gru, "3-layer GRU");
    let rnn = Rnn::<f64>::rnn(
        LayerConfig::new(2, 3).num_layers(2).bias(false),
        &mut Rng::seed_from_u64(23),
    );
    check_stream(&rnn, "2-layer RNN without bias");
}

// ---------------------------------------------------------------------------------------------
// Truncated BPTT
// ---------------------------------------------------------------------------------------------

fn grads(params: &[Param<f64>]) -> Vec<Tensor<f64>> {
    params
        .iter()
        .map(|p| p.grad().expect("a gradient"))
        .collect()
}

fn zero_grads(params: &[Param<f64>]) {
    params.iter().for_each(Param::zero_grad);
}

#[test]
fn tbptt_with_k_equal_to_seq_is_one_full_forward() {
    let layer = Lstm::<f64>::lstm(
        LayerConfig::new(2, 3).num_layers(2),
        &mut Rng::seed_from_u64(25),
    );
    let params = layer.params();
    let mut rng = Rng::seed_from_u64(26);
    let x = uniform::<f64>(&[5, 2, 2], &mut rng);
    let probe = uniform::<f64>(&[5, 2, 3], &mut rng);

    let tape = Tape::new();
    let full = layer.forward(&tape.constant(x.clone()));
    (&full.output * &probe).sum_all().backward();
    let full_grads = grads(&params);
    zero_grads(&params);

    let mut chunks = 0;
    let last = layer.tbptt(&x, 5, None, |chunk| {
        chunks += 1;
        assert_eq!(chunk.range, 0..5);
        assert_bits_eq("output", chunk.output.value(), full.output.value());
        assert_bits_eq("h_n", chunk.state.0.value(), full.h_n().value());
        (&chunk.output * &probe).sum_all().backward();
    });
    assert_eq!(chunks, 1);
    assert_eq!(last.len(), 2);
    assert_bits_eq("final h", &last[0], full.h_n().value());
    assert_bits_eq("final c", &last[1], full.c_n().value());
    for (g, f) in grads(&params).iter().zip(&full_grads) {
        assert_bits_eq("gradient", g, f);
    }
}

#[test]
fn tbptt_carries_the_state_across_chunks() {
    for batch_first in [false, true] {
        let cfg = LayerConfig::new(2, 3)
            .num_layers(2)
            .batch_first(batch_first);
        let layer = Gru::<f64>::gru(cfg, &mut Rng::seed_from_u64(27));
        let mut rng = Rng::seed_from_u64(28);
        let shape = if batch_first { [2, 7, 2] } else { [7, 2, 2] };
        let x = uniform::<f64>(&shape, &mut rng);
        let init = vec![uniform::<f64>(&[2, 2, 3], &mut rng)];
        let tape = Tape::new();
        let full = layer.forward_with(
            &tape.constant(x.clone()),
            Some(&tape.constant(init[0].clone())),
            None,
        );
        let time = usize::from(batch_first);
        let mut ranges = Vec::new();
        let last = layer.tbptt(&x, 3, Some(init), |chunk| {
            // Chunks of 3, 3 and 1 steps; each one's output is the full forward's over its
            // steps, as the carried state is the full forward's state at the boundary. The
            // same arithmetic on the same numbers, so bit-identical.
            let r = chunk.range.clone();
            assert_bits_eq(
                &format!("output over {r:?}"),
                chunk.output.value(),
                &full
                    .output
                    .value()
                    .narrow(time, r.start, r.len())
                    .contiguous(),
            );
            ranges.push(r);
        });
        assert_eq!(ranges, [0..3, 3..6, 6..7]);
        assert_bits_eq("final state", &last[0], full.h_n().value());
    }
}

#[test]
fn tbptt_gradients_stop_at_chunk_boundaries() {
    let layer = Lstm::<f64>::lstm(
        LayerConfig::new(2, 3).num_layers(2),
        &mut Rng::seed_from_u64(29),
    );
    let params = layer.params();
    let mut rng = Rng::seed_from_u64(30);
    let x = uniform::<f64>(&[6, 2, 2], &mut rng);
    let probe = uniform::<f64>(&[2, 2, 3], &mut rng); // the last chunk's output is [2, 2, 3]

    let mut first_output: Option<Var<f64>> = None;
    let mut state_before_last: Option<(Tensor<f64>, Tensor<f64>)> = None;
    let mut tbptt_grads = None;
    layer.tbptt(&x, 2, None, |chunk| match chunk.range.start {
        0 => first_output = Some(chunk.output.clone()),
        2 => {
            state_before_last = Some((chunk.state.0.value().clone(), chunk.state.1.value().clone()))
        }
        _ => {
            zero_grads(&params);
            let grads_of_last = (&chunk.output * &probe).sum_all().backward();
            // The last chunk's loss has no gradient with respect to the first chunk at all.
            assert!(grads_of_last.get(first_output.as_ref().unwrap()).is_none());
            tbptt_grads = Some(grads(&params));
        }
    });
    let tbptt_grads = tbptt_grads.unwrap();

    // The same gradients as a fresh computation that starts at step 4 from the carried state
    // as a constant: nothing flows back past the boundary.
    let (h, c) = state_before_last.unwrap();
    zero_grads(&params);
    let tape = Tape::new();
    let out = layer.forward_with(
        &tape.constant(x.narrow(0, 4, 2).contiguous()),
        Some(&(tape.constant(h), tape.constant(c))),
        None,
    );
    (&out.output * &probe).sum_all().backward();
    for (a, b) in tbptt_grads.iter().zip(grads(&params)) {
        assert_bits_eq("truncated gradient", a, &b);
    }

    // Full backpropagation of the same loss does reach back to step 0, and its parameter
    // gradients differ: the truncation is real.
    zero_grads(&params);
    let tape = Tape::new();
    let xv = tape.var(x.clone());
    let full = layer.forward(&xv);
    let g = (&full.output.narrow(0, 4, 2) * &probe).sum_all().backward();
    let gx0 = g.wrt(&xv).select(0, 0).to_vec();
    assert!(
        gx0.iter().any(|v| v.abs() > 1e-6),
        "full BPTT reaches step 0: {gx0:?}"
    );
    let differ = tbptt_grads.iter().zip(grads(&params)).any(|(a, b)| {
        a.to_vec()
            .iter()
            .zip(b.to_vec())
            .any(|(u, v)| (u - v).abs() > 1e-6)
    });
    assert!(
        differ,
        "truncated and full gradients agree: nothing was truncated"
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input and bad cells
// ---------------------------------------------------------------------------------------------

#[test]
fn an_empty_batch_gives_empty_outputs_on_both_paths() {
    for kind in KINDS {
        for fused in [true, false] {
            for batch_first in [false, true] {
                let cfg = LayerConfig::new(3, 4)
                    .num_layers(2)
                    .bidirectional(true)
                    .batch_first(batch_first);
                with_layer!(kind, cfg.clone(), &mut Rng::seed_from_u64(1), |layer| {
                    layer.set_fused(fused);
                    let what = format!("{kind:?}, fused {fused}, batch_first {batch_first}");
                    let tape = Tape::new();
                    let x = tape.var(Tensor::zeros(&x_shape(&cfg, 5, 0)));
                    let out = layer.forward(&x);
                    let want = if batch_first { [0, 5, 8] } else { [5, 0, 8] };
                    assert_eq!(out.output.shape(), want, "{what}");
                    for part in out.state.parts() {
                        assert_eq!(part.shape(), [4, 0, 4], "{what}");
                    }
                    // And backward through it: nothing flows, nothing fails.
                    let loss = out.output.sum_all() + out.h_n().sum_all();
                    let grads = loss.backward();
                    assert_eq!(grads.wrt(&x).shape(), x.shape(), "{what}");
                    // Inference too.
                    let no_grad = tape.no_grad(|| layer.forward(&x).output.shape().to_vec());
                    assert_eq!(no_grad, want, "{what}");
                })
            }
        }
    }
}

#[test]
fn sizes_pytorch_refuses_are_refused() {
    assert_eq!(
        panic_message(|| Lstm::<f32>::lstm(LayerConfig::new(3, 0), &mut Rng::seed_from_u64(0))),
        "Layer: hidden_size must be greater than zero"
    );
    assert_eq!(
        panic_message(|| Gru::<f32>::gru(
            LayerConfig::new(3, 4).num_layers(0),
            &mut Rng::seed_from_u64(0)
        )),
        "Layer: num_layers must be at least 1"
    );
}

/// A tanh RNN cell whose `step` also scales by `gain`, a parameter it may or may not list.
struct Gained {
    inner: RnnCell<f64>,
    gain: Param<f64>,
    list_gain: bool,
    /// The name it gives `gain`.
    gain_name: &'static str,
}

impl Cell<f64> for Gained {
    type State = Var<f64>;
    fn input_size(&self) -> usize {
        self.inner.input_size()
    }
    fn hidden_size(&self) -> usize {
        self.inner.hidden_size()
    }
    fn step(&self, x: &Var<f64>, h: &Var<f64>) -> Var<f64> {
        self.inner.step(x, h) * &self.gain
    }
}

impl Module<f64> for Gained {
    fn named_params(&self) -> Vec<(String, Param<f64>)> {
        let mut v = self.inner.named_params();
        if self.list_gain {
            v.push((self.gain_name.into(), self.gain.clone()));
        }
        v
    }
}

fn gained_layer(list_gain: bool, gain_name: &'static str) -> Layer<f64, Gained> {
    Layer::new(
        LayerConfig::new(2, 3),
        &mut Rng::seed_from_u64(0),
        |input, rng| Gained {
            inner: RnnCell::new(input, 3, rng),
            gain: Param::new("gain", Tensor::ones(&[3])),
            list_gain,
            gain_name,
        },
    )
}

#[test]
fn a_cell_must_list_every_parameter_its_step_uses() {
    assert_eq!(
        panic_message(|| gained_layer(false, "gain")),
        "Layer: the cell's step uses parameter 'gain' of shape [3], which its named_params() \
         does not list: no optimizer built from the layer's params() would train it, and no \
         saved file would hold it"
    );
    // Listed, it trains and saves like any other.
    let layer = gained_layer(true, "gain");
    let names: Vec<String> = layer.named_params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.last().unwrap(), "gain_l0");
}

#[test]
fn two_parameters_of_one_name_are_refused_when_the_layer_is_built() {
    assert_eq!(
        panic_message(|| gained_layer(true, "weight_ih")),
        "Layer: two parameters are named 'weight_ih_l0' (a cell's named_params() repeats a name)"
    );
}

/// A cell with dropout inside its step: it must follow the layer's mode.
struct Dropping {
    inner: RnnCell<f64>,
    training: std::cell::Cell<bool>,
}

impl Cell<f64> for Dropping {
    type State = Var<f64>;
    fn input_size(&self) -> usize {
        self.inner.input_size()
    }
    fn hidden_size(&self) -> usize {
        self.inner.hidden_size()
    }
    fn step(&self, x: &Var<f64>, h: &Var<f64>) -> Var<f64> {
        let h = self.inner.step(x, h);
        match self.training.get() {
            true => rnn::dropout(&h, 0.5),
            false => h,
        }
    }
}

impl Module<f64> for Dropping {
    fn named_params(&self) -> Vec<(String, Param<f64>)> {
        self.inner.named_params()
    }
    fn set_training(&self, on: bool) {
        self.training.set(on);
    }
}

#[test]
fn a_layer_switches_its_cells_between_training_and_evaluation() {
    let layer = Layer::new(
        LayerConfig::new(2, 3).num_layers(2),
        &mut Rng::seed_from_u64(0),
        |input, rng| Dropping {
            inner: RnnCell::new(input, 3, rng),
            training: std::cell::Cell::new(true),
        },
    );
    layer.set_training(false);
    for l in 0..2 {
        assert!(
            !layer.cell(l, 0).training.get(),
            "layer {l}'s cell still trains"
        );
    }
    layer.set_training(true);
    assert!(layer.cell(1, 0).training.get());
}

#[test]
fn truncated_bptt_over_a_padded_batch_equals_one_forward() {
    // Lengths that end inside a chunk, on a chunk's edge, and in the first chunk; chunks of 3
    // over 8 steps (the last one short).
    let lengths = [8, 6, 2, 5];
    for kind in KINDS {
        for fused in [true, false] {
            let cfg = LayerConfig::new(3, 4).num_layers(2);
            with_layer!(kind, cfg, &mut Rng::seed_from_u64(4), |layer| {
                layer.set_fused(fused);
                let what = format!("{kind:?}, fused {fused}");
                let x = uniform::<f64>(&[8, 4, 3], &mut Rng::seed_from_u64(5));
                let tape = Tape::new();
                let whole = layer.forward_with(&tape.constant(x.clone()), None, Some(&lengths));
                let mut outputs = vec![];
                let finals = layer.tbptt_with(&x, 3, None, Some(&lengths), |chunk| {
                    // Each chunk trains on its own tape: a gradient reaches the inputs.
                    let loss = chunk.output.sum_all();
                    loss.backward();
                    outputs.push(chunk.output.value().clone());
                });
                let joined = Tensor::concat(&outputs.iter().collect::<Vec<_>>(), 0);
                assert_bits_eq(&format!("{what}: output"), &joined, whole.output.value());
                for (k, part) in whole.state.parts().iter().enumerate() {
                    assert_bits_eq(&format!("{what}: final part {k}"), &finals[k], part.value());
                }
            })
        }
    }
    let layer = Lstm::<f64>::lstm(LayerConfig::new(3, 4), &mut Rng::seed_from_u64(4));
    let x = Tensor::zeros(&[8, 4, 3]);
    assert_eq!(
        panic_message(|| layer.tbptt_with(&x, 3, None, Some(&[8, 0, 2, 5]), |_| {})),
        "Layer::forward: length 0 is not in 1..=8 (the sequence length)"
    );
    let bi = Lstm::<f64>::lstm(
        LayerConfig::new(3, 4).bidirectional(true),
        &mut Rng::seed_from_u64(4),
    );
    assert_eq!(
        panic_message(|| bi.tbptt(&x, 3, None, |_| {})),
        "Layer::tbptt: needs a batched [seq, batch, input] input (got [8, 4, 3]) and one \
         direction (bidirectional: true)"
    );
}

#[test]
fn projections_are_for_lstms_smaller_than_their_hidden_size() {
    let rng = &mut Rng::seed_from_u64(0);
    assert_eq!(
        panic_message(|| Lstm::<f64>::lstm(LayerConfig::new(3, 4).proj_size(4), rng)),
        "Layer: proj_size 4 has to be smaller than hidden_size 4"
    );
    assert_eq!(
        panic_message(|| Gru::<f64>::gru(LayerConfig::new(3, 4).proj_size(2), rng)),
        "Layer::gru: proj_size argument is only supported for LSTM, not RNN or GRU"
    );
    assert_eq!(
        panic_message(|| Rnn::<f64>::rnn(LayerConfig::new(3, 4).proj_size(2), rng)),
        "Layer::rnn: proj_size argument is only supported for LSTM, not RNN or GRU"
    );
    // h is [layers·D, batch, proj], c is [layers·D, batch, hidden]; names as PyTorch's.
    let lstm = Lstm::<f64>::lstm(LayerConfig::new(3, 4).proj_size(2).num_layers(2), rng);
    let names: Vec<String> = lstm.named_params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        &names[..5],
        [
            "weight_ih_l0",
            "weight_hh_l0",
            "bias_ih_l0",
            "bias_hh_l0",
            "weight_hr_l0"
        ]
    );
    assert_eq!(
        lstm.named_params()[5].1.shape(),
        [16, 2],
        "layer 1 reads the projected h"
    );
    let tape = Tape::new();
    let out = lstm.forward(&tape.constant(Tensor::zeros(&[5, 3, 3])));
    assert_eq!(out.output.shape(), [5, 3, 2]);
    assert_eq!(
        (out.h_n().shape(), out.c_n().shape()),
        ([2, 3, 2].as_slice(), [2, 3, 4].as_slice())
    );
    let wrong = (
        tape.constant(Tensor::zeros(&[2, 3, 2])),
        tape.constant(Tensor::zeros(&[2, 3, 2])),
    );
    assert_eq!(
        panic_message(|| lstm.forward_with(
            &tape.constant(Tensor::zeros(&[5, 3, 3])),
            Some(&wrong),
            None
        )),
        "Layer::forward: initial state part 1 has shape [2, 3, 2], expected [2, 3, 4] \
         ([layers·directions, batch, size])"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    /// The projected LSTM's gradients (its outputs, both final states, every parameter
    /// including `weight_hr`), stacked, bidirectional and over padded batches.
    #[test]
    fn projected_lstm_gradients(
        bidirectional in any::<bool>(), lengths in proptest::option::of(proptest::collection::vec(1usize..=3, 2)),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::seed_from_u64(seed);
        let cfg = LayerConfig::new(2, 3).proj_size(2).num_layers(2).bidirectional(bidirectional);
        let layer = Lstm::<f64>::lstm(cfg, &mut rng);
        let x = uniform(&[3, 2, 2], &mut rng);
        let f = |v: &[Var<f64>]| {
            let out = layer.forward_with(&v[0], None, lengths.as_deref());
            let mut parts = vec![out.output];
            parts.extend(out.state.parts());
            flat_concat(&parts)
        };
        check(GradCheck::new(f).inputs(&[x]).params(&layer.params()).run())?;
    }
}
