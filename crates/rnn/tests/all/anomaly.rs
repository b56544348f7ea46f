//! Anomaly mode in layers: faults injected at chosen steps are reported with their layer,
//! direction, time step and the cell's label, forward and backward, on the fused, compiled and
//! composed paths; and tape pictures group a layer's nodes by step.

use autograd::{Param, Tape, Var};
use rnn::{Cell, Layer, LayerConfig, Lstm, Module};

use tensor::{Float, Rng, Tensor};

use crate::common::{panic_message, uniform};
use crate::custom_cells::{named, param, Dropped};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    Fused,
    Compiled,
    Composed,
}

fn set_path<T: Float, C: Cell<T>>(layer: &Layer<T, C>, path: Path) {
    layer.set_fused(path == Path::Fused);
    layer.set_compiled(path != Path::Composed);
}

/// h' = tanh(x Wᵀ + h Uᵀ + root + log_x) with root = sqrt((x₀ h₀)²) labelled "root" and
/// log_x = log(x₀ + 2) labelled "log_x": finite while x₀ > −2 except that the backward of
/// `root` is infinite where x₀ h₀ = 0.
struct Faulty<T: Float> {
    w: Param<T>,
    u: Param<T>,
}

impl<T: Float> Cell<T> for Faulty<T> {
    type State = Var<T>;
    fn input_size(&self) -> usize {
        self.w.shape()[1]
    }
    fn hidden_size(&self) -> usize {
        self.u.shape()[0]
    }
    fn step(&self, x: &Var<T>, h: &Var<T>) -> Var<T> {
        let x0 = x.narrow(1, 0, 1);
        let log_x = x0.add_scalar(T::from_f64(2.0)).log().label("log_x");
        let root = (&x0 * &h.narrow(1, 0, 1)).square().sqrt().label("root");
        (x.linear(&self.w) + h.linear(&self.u) + root + log_x).tanh()
    }
}

impl<T: Float> Module<T> for Faulty<T> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        named(&[("w", &self.w), ("u", &self.u)])
    }
}

fn faulty_layer(rng: &mut Rng) -> Layer<f64, Faulty<f64>> {
    Layer::new(LayerConfig::new(2, 3), rng, |input, rng| Faulty {
        w: param("w", &[3, input], -0.5, 0.5, rng),
        u: param("u", &[3, 3], -0.5, 0.5, rng),
    })
}

/// An input `[5, 2, 2]` with every x₀ in ±[0.5, 1.5], and x₀ = `value` at step `t`, row 0.
fn input_with(t: usize, value: f64, rng: &mut Rng) -> Tensor<f64> {
    let mut x = uniform::<f64>(&[5, 2, 2], rng).to_vec();
    for (i, v) in x.iter_mut().enumerate() {
        if i % 2 == 0 {
            *v = v.signum() * (v.abs() + 0.5);
        }
    }
    x[t * 4] = value;
    Tensor::from_vec(x, &[5, 2, 2])
}

fn forward_in_anomaly_mode<C: Cell<f64>>(
    layer: &Layer<f64, C>,
    x: &Tensor<f64>,
    init: Option<&C::State>,
) -> String {
    panic_message(|| {
        let tape = Tape::new();
        tape.set_anomaly_detection(true);
        layer.forward_with(&tape.constant(x.clone()), init, None)
    })
}

/// A NaN in the input is the root cause, and is named as such, with its step and row.
#[test]
fn a_non_finite_input_is_named_with_its_step_and_row() {
    let rng = &mut Rng::seed_from_u64(1);
    let layer = faulty_layer(rng);
    let x = input_with(3, f64::NAN, rng);
    let lstm: Lstm<f64> = Layer::lstm(LayerConfig::new(2, 3), rng);
    for path in [Path::Fused, Path::Compiled, Path::Composed] {
        set_path(&layer, path);
        set_path(&lstm, path);
        for msg in [
            forward_in_anomaly_mode(&layer, &x, None),
            forward_in_anomaly_mode(&lstm, &x, None),
        ] {
            assert!(
                msg.contains("the input of Layer::forward is NaN or Inf at t = 3, row 0"),
                "{path:?}: {msg}"
            );
        }
    }
    let init = Tape::new().constant(Tensor::full(&[1, 2, 3], f64::INFINITY));
    let msg = forward_in_anomaly_mode(&layer, &input_with(3, 1.0, rng), Some(&init));
    assert!(
        msg.contains("part 0 of the initial state is NaN or Inf for layer 0 (row 0)"),
        "{msg}"
    );
}

/// log(x₀ + 2) of x₀ = −3 at step 3 is the first non-finite value: the report names the op,
/// the step and the cell's label for it.
#[test]
fn a_forward_fault_names_layer_step_and_label() {
    let rng = &mut Rng::seed_from_u64(2);
    let layer = faulty_layer(rng);
    let x = input_with(3, -3.0, rng);
    for path in [Path::Compiled, Path::Composed] {
        set_path(&layer, path);
        let msg = forward_in_anomaly_mode(&layer, &x, None);
        assert!(
            msg.starts_with("anomaly: the forward of op"),
            "{path:?}: {msg}"
        );
        match path {
            Path::Composed => assert!(
                msg.contains("op 'log'") && msg.contains("[layer 0, t = 3, 'log_x']"),
                "{msg}"
            ),
            _ => assert!(
                msg.contains(
                    "re-run op by op, the first non-finite value is made by 'log' at layer 0, \
                     t = 3, 'log_x'"
                ),
                "{msg}"
            ),
        }
    }
}

#[test]
fn a_backward_fault_names_layer_step_and_label() {
    let rng = &mut Rng::seed_from_u64(3);
    let layer = faulty_layer(rng);
    // x₀ = 0 at step 3: root = sqrt(0) = 0 forward, its gradient 1/(2·0) = ∞ backward.
    let x = input_with(3, 0.0, rng);
    for path in [Path::Compiled, Path::Composed] {
        set_path(&layer, path);
        let msg = panic_message(|| {
            let tape = Tape::new();
            tape.set_anomaly_detection(true);
            let out = layer.forward(&tape.constant(x.clone()));
            out.output.sum_all().backward()
        });
        assert!(
            msg.starts_with("anomaly: the backward of op"),
            "{path:?}: {msg}"
        );
        match path {
            Path::Composed => assert!(
                msg.contains("op 'sqrt'") && msg.contains("[layer 0, t = 3, 'root']"),
                "{msg}"
            ),
            _ => assert!(
                msg.contains("op 'compiled_sequence'")
                    && msg.contains(
                        "the first non-finite gradient comes from the backward of 'sqrt' at \
                         layer 0, t = 3, 'root'"
                    ),
                "{msg}"
            ),
        }
    }
}

/// A NaN bias in layer 1's reverse direction: its first step is the last one, t = 3.
#[test]
fn a_fault_in_a_stacked_bidirectional_lstm_names_layer_direction_and_step() {
    let rng = &mut Rng::seed_from_u64(4);
    let lstm: Lstm<f64> = Layer::lstm(
        LayerConfig::new(2, 3).num_layers(2).bidirectional(true),
        rng,
    );
    let params = lstm.named_params();
    let bias = &params
        .iter()
        .find(|(n, _)| n == "bias_ih_l1_reverse")
        .unwrap()
        .1;
    let mut b = bias.value().to_vec();
    b[1] = f64::NAN;
    bias.set_value(Tensor::from_vec(b, &[12]));
    let x = uniform::<f64>(&[4, 2, 2], rng);
    for path in [Path::Fused, Path::Compiled, Path::Composed] {
        set_path(&lstm, path);
        let msg = forward_in_anomaly_mode(&lstm, &x, None);
        assert!(msg.contains("layer 1 reverse, t = 3"), "{path:?}: {msg}");
        if path == Path::Fused {
            assert!(
                msg.contains("op 'lstm_sequence'") && msg.contains("re-run"),
                "{msg}"
            );
        }
    }
}

/// An overflow inside the fused kernel's backward: the report names the kernel and, from its
/// op-by-op re-run, the step.
#[test]
fn a_fused_backward_fault_is_located_by_the_re_run() {
    let rng = &mut Rng::seed_from_u64(5);
    // A seed of f64::MAX at every step: dh_t = dy_t + (the gradient from step t + 1)
    // overflows wherever the second term has the sign of the first.
    let lstm: Lstm<f64> = Layer::lstm(LayerConfig::new(2, 16), rng);
    let x = uniform::<f64>(&[4, 2, 2], rng);
    let msg = panic_message(|| {
        let tape = Tape::new();
        tape.set_anomaly_detection(true);
        let out = lstm.forward(&tape.constant(x.clone()));
        out.output
            .backward_with(&Tensor::full(out.output.shape(), f64::MAX))
    });
    assert!(
        msg.starts_with("anomaly: the backward of op 'lstm_sequence'"),
        "{msg}"
    );
    assert!(msg.contains("[layer 0]"), "{msg}");
    assert!(
        msg.contains("re-run op by op, the first non-finite gradient comes from the backward of"),
        "{msg}"
    );
    assert!(msg.contains("layer 0, t = "), "{msg}");
    assert!(msg.contains("add up to NaN or Inf"), "{msg}");
}

/// Anomaly mode off: the same faults pass silently, as in PyTorch.
#[test]
fn without_anomaly_mode_layers_do_not_check() {
    let rng = &mut Rng::seed_from_u64(6);
    let layer = faulty_layer(rng);
    let x = input_with(3, -3.0, rng);
    for path in [Path::Compiled, Path::Composed] {
        set_path(&layer, path);
        let tape = Tape::new();
        let out = layer.forward(&tape.constant(x.clone()));
        assert!(out.output.value().to_vec().iter().any(|v| v.is_nan()));
    }
}

/// The tape of a composed layer, drawn: one cluster per direction, one per step inside it,
/// gates labelled.
#[test]
fn a_layer_tape_is_drawn_by_layer_and_step() {
    let rng = &mut Rng::seed_from_u64(7);
    let lstm: Lstm<f64> = Layer::lstm(LayerConfig::new(2, 3).bidirectional(true), rng);
    lstm.set_fused(false);
    lstm.set_compiled(false);
    let tape = Tape::new();
    lstm.forward(&tape.constant(uniform(&[3, 1, 2], rng)));
    let dot = tape.to_dot();
    assert!(dot.contains("label=\"layer 0\""), "{dot}");
    assert!(dot.contains("label=\"layer 0 reverse\""), "{dot}");
    for t in 0..3 {
        assert!(dot.contains(&format!("label=\"t = {t}\"")), "{dot}");
    }
    // Two directions × three steps × four gates, each a labelled box.
    assert_eq!(dot.matches("forget_gate\\nsigmoid").count(), 6, "{dot}");
    let nodes = tape.nodes();
    let scoped = nodes
        .iter()
        .filter(|n| n.scope.as_ref().is_some_and(|s| s.step == Some(2)))
        .count();
    assert!(scoped > 10, "step 2's ops carry their step");
}

/// Inside the caller's own `catch_anomaly`, a fused kernel's fault comes back as an `Err`
/// with the re-run's account of where it is (not a panic, not a bare kernel name); and the
/// caller's scope is kept around the layer's.
#[test]
fn a_callers_catch_anomaly_gets_the_located_fault() {
    let rng = &mut Rng::seed_from_u64(8);
    let lstm: Lstm<f64> = Layer::lstm(LayerConfig::new(2, 3), rng);
    let params = lstm.named_params();
    let bias = &params.iter().find(|(n, _)| n == "bias_hh_l0").unwrap().1;
    let mut b = bias.value().to_vec();
    b[4] = f64::NAN;
    bias.set_value(Tensor::from_vec(b, &[12]));
    let x = uniform::<f64>(&[4, 2, 2], rng);
    let tape = Tape::new();
    let err = tape
        .catch_anomaly(|| tape.scoped("encoder", || lstm.forward(&tape.constant(x.clone()))))
        .err()
        .expect("caught");
    let text = err.to_string();
    assert_eq!(err.op, "lstm_sequence");
    assert_eq!(&*err.scope.as_ref().unwrap().group, "encoder / layer 0");
    let detail = err.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("first non-finite value is made by"),
        "{text}"
    );
    assert!(detail.contains("layer 0, t = 0"), "{text}");
    assert!(
        !tape.anomaly_detection(),
        "catch_anomaly puts the mode back"
    );
}

/// A cell that draws random numbers in `step` ([`Dropped`]): its probe re-run draws the same
/// masks (max_diff 0), and watching does not move the generator: the next draw is the one an
/// unwatched run would make.
#[test]
fn a_probe_re_run_draws_what_the_layer_drew_and_leaves_the_generator_alone() {
    let rng = &mut Rng::seed_from_u64(9);
    let layer = Layer::new(
        LayerConfig::new(2, 3).bidirectional(true),
        rng,
        |input, rng| Dropped {
            w: param("w", &[3, input], -0.5, 0.5, rng),
            u: param("u", &[3, 3], -0.5, 0.5, rng),
        },
    );
    layer.set_training(true);
    let x = uniform::<f64>(&[5, 2, 2], rng);
    let run = |watch: bool| {
        rnn::manual_seed(42);
        let tape = Tape::new();
        let probe = rnn::Probe::<f64>::new();
        let out = match watch {
            true => probe.watch(|| layer.forward(&tape.constant(x.clone()))),
            false => layer.forward(&tape.constant(x.clone())),
        };
        (
            out.output.value().to_vec(),
            rnn::rng_state(),
            probe.recordings(),
        )
    };
    let (plain, after_plain, _) = run(false);
    let (watched, after_watched, recs) = run(true);
    assert_eq!(
        plain, watched,
        "watching changes nothing the layer computes"
    );
    assert_eq!(
        after_plain, after_watched,
        "nor the generator's state after it"
    );
    assert_eq!(recs.len(), 2);
    for rec in recs {
        assert_eq!(rec.max_diff, 0.0, "the re-run drew the same masks");
    }
}
