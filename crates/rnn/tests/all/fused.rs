//! The fused kernels, and the built-in cells' `step` compiled, against the composed cells:
//! the same numbers to 1e-12 in f64 (all use the exact tanh and sigmoid in f64, and differ
//! only in the order of a few additions), on random configurations of every built-in cell — layers, directions, batch-first, variable
//! lengths, given or zero initial states — for outputs, final states and every gradient; and
//! the fused path's gradients against finite differences.

use autograd::{gradcheck, Tape, Var};
use proptest::prelude::*;
use rnn::{Cell, Layer, LayerConfig, Module, Nonlinearity, Path, State};
use tensor::{Rng, Tensor};

use crate::common::on_threads;

#[derive(Clone, Debug)]
struct Setup {
    cell: usize, // 0 rnn tanh, 1 rnn relu, 2 lstm, 3 gru
    layers: usize,
    bidirectional: bool,
    batch_first: bool,
    with_init: bool,
    bias: bool,
    seq: usize,
    batch: usize,
    input: usize,
    hidden: usize,
    /// LSTM only: `proj_size` (0, no projection), below `hidden`.
    proj: usize,
    lengths: Option<Vec<usize>>,
    seed: u64,
}

fn setups() -> impl Strategy<Value = Setup> {
    (
        0usize..4,
        1usize..3,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(
            |(cell, layers, bidirectional, batch_first, with_init, bias)| {
                let sizes = (1usize..6, 1usize..4, 1usize..4, 1usize..5, 0usize..4);
                (sizes, any::<u64>()).prop_flat_map(
                    move |((seq, batch, input, hidden, proj), seed)| {
                        let lengths = prop::option::of(prop::collection::vec(1..=seq, batch));
                        lengths.prop_map(move |lengths| Setup {
                            cell,
                            layers,
                            bidirectional,
                            batch_first,
                            with_init,
                            bias,
                            seq,
                            batch,
                            input,
                            hidden,
                            proj: if cell == 2 { proj % hidden } else { 0 },
                            lengths,
                            seed,
                        })
                    },
                )
            },
        )
}

fn config(s: &Setup) -> LayerConfig {
    LayerConfig::new(s.input, s.hidden)
        .num_layers(s.layers)
        .bidirectional(s.bidirectional)
        .batch_first(s.batch_first)
        .bias(s.bias)
        .proj_size(s.proj)
        .nonlinearity(if s.cell == 1 {
            Nonlinearity::Relu
        } else {
            Nonlinearity::Tanh
        })
}

/// Everything a run produces: output, final state parts, then the gradients of the input, the
/// initial state parts and every parameter.
fn run<C: Cell<f64>>(layer: &Layer<f64, C>, s: &Setup) -> Vec<Tensor<f64>> {
    let mut rng = Rng::seed_from_u64(s.seed);
    let d = if s.bidirectional { 2 } else { 1 };
    let x_shape = if s.batch_first {
        [s.batch, s.seq, s.input]
    } else {
        [s.seq, s.batch, s.input]
    };
    let x_value = Tensor::rand_normal(&x_shape, 0.0, 1.0, &mut rng);
    // h has `proj` features with a projection, c (and h without one) `hidden`.
    let init_values: Vec<Tensor<f64>> = (0..C::State::num_parts())
        .map(|k| {
            let size = if k == 0 && s.proj > 0 {
                s.proj
            } else {
                s.hidden
            };
            Tensor::rand_normal(&[s.layers * d, s.batch, size], 0.0, 0.5, &mut rng)
        })
        .collect();
    for (_, p) in layer.named_params() {
        p.zero_grad();
    }
    let tape = Tape::new();
    let x = tape.var(x_value);
    let init: Vec<Var<f64>> = init_values.iter().map(|v| tape.var(v.clone())).collect();
    let state = C::State::from_parts(init.clone());
    let out = layer.forward_with(&x, s.with_init.then_some(&state), s.lengths.as_deref());
    // A random weighting of every output, so every gradient path is exercised.
    let mut loss =
        (&out.output * &Tensor::rand_normal(out.output.shape(), 0.0, 1.0, &mut rng)).sum_all();
    let finals = out.state.parts();
    for f in &finals {
        loss = loss + (f * &Tensor::rand_normal(f.shape(), 0.0, 1.0, &mut rng)).sum_all();
    }
    let grads = loss.backward();
    let mut results = vec![out.output.value().clone()];
    results.extend(finals.iter().map(|f| f.value().clone()));
    results.push(grads.wrt(&x).clone());
    if s.with_init {
        results.extend(init.iter().map(|v| grads.wrt(v).clone()));
    }
    results.extend(
        layer
            .named_params()
            .iter()
            .map(|(_, p)| p.grad().expect("every parameter is used")),
    );
    results
}

/// The largest elementwise difference between two results of the same length.
fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
}

/// The three paths on one layer: the fused kernel, the cell's `step` compiled, and composed.
fn compare<C: Cell<f64>>(layer: Layer<f64, C>, s: &Setup) -> Result<(), TestCaseError> {
    prop_assert!(layer.is_fused());
    let fused = run(&layer, s);
    layer.set_fused(false);
    let path = layer.explain().remove(0).2;
    prop_assert!(matches!(path, Path::Compiled { .. }), "{}", path);
    let compiled = run(&layer, s);
    layer.set_compiled(false);
    let composed = run(&layer, s);
    for (path, results) in [("fused", &fused), ("compiled", &compiled)] {
        for (k, (a, b)) in results.iter().zip(&composed).enumerate() {
            prop_assert_eq!(a.shape(), b.shape());
            let worst = max_diff(&a.to_vec(), &b.to_vec());
            prop_assert!(
                worst <= 1e-12,
                "{} result {} differs from composed by {:e} ({:?})",
                path,
                k,
                worst,
                s
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn fused_matches_composed_to_1e12(s in setups()) {
        let mut rng = Rng::seed_from_u64(s.seed ^ 1);
        let cfg = config(&s);
        match s.cell {
            0 | 1 => compare(Layer::rnn(cfg, &mut rng), &s)?,
            2 => compare(Layer::lstm(cfg, &mut rng), &s)?,
            _ => compare(Layer::gru(cfg, &mut rng), &s)?,
        }
    }
}

/// The fused backward against finite differences, through the input (which reaches every
/// rule of every step), for each cell, 2 layers, bidirectional, with lengths.
#[test]
fn fused_gradients_match_finite_differences() {
    // 1 (relu) is left out: random data puts pre-activations near the kink, where finite
    // differences are meaningless; relu's fused rule is checked against the composed path above.
    // 4 is the LSTM with a projection (proj_size 2).
    for cell in [0, 2, 3, 4] {
        let s = Setup {
            cell,
            layers: 2,
            bidirectional: true,
            batch_first: false,
            with_init: false,
            bias: true,
            seq: 4,
            batch: 2,
            input: 3,
            hidden: 3,
            proj: if cell == 4 { 2 } else { 0 },
            lengths: Some(vec![4, 2]),
            seed: 5,
        };
        let mut rng = Rng::seed_from_u64(11);
        let x = Tensor::<f64>::rand_normal(&[4, 2, 3], 0.0, 1.0, &mut rng);
        let report = match cell {
            0 => {
                let layer = Layer::rnn(config(&s), &mut rng);
                assert!(layer.is_fused());
                gradcheck(
                    |v| layer.forward_with(&v[0], None, s.lengths.as_deref()).output,
                    &[x],
                )
            }
            2 | 4 => {
                let layer = Layer::lstm(config(&s), &mut rng);
                assert!(layer.is_fused());
                gradcheck(
                    |v| layer.forward_with(&v[0], None, s.lengths.as_deref()).output,
                    &[x],
                )
            }
            _ => {
                let layer = Layer::gru(config(&s), &mut rng);
                gradcheck(
                    |v| layer.forward_with(&v[0], None, s.lengths.as_deref()).output,
                    &[x],
                )
            }
        };
        assert!(report.passed(), "cell {cell}: {report}");
    }
}

/// A sequence large enough that the fused kernel hops onto a rayon worker when called from
/// outside the pool, splits its big products there and shares each step's product with a
/// helper thread (its batch too small to halve) gives the same bits as one run inside a
/// one-thread pool, where nothing hops or splits: forward value and every gradient.
#[test]
fn large_sequences_run_on_the_pool_with_the_same_bits() {
    // 20 steps × 15 rows × 4·192 gates × (64 + 192) inputs ≈ 5.9e7 multiply-adds ≥ 2²⁵, and
    // per step 15 × 256 × 768 ≈ 2.9e6 forward and 15 × 768 × 192 ≈ 2.2e6 backward, both
    // ≥ 2²¹, so on two threads a helper takes half of every step's product both ways; 15
    // rows are fewer than twice the 8 a half needs.
    let (seq, batch, input, hidden) = (20, 15, 64, 192);
    let run = || {
        // Built inside, so each run owns its layer (layers are not shared across threads).
        let mut rng = Rng::seed_from_u64(7);
        let layer: Layer<f64, rnn::LstmCell<f64>> =
            Layer::lstm(LayerConfig::new(input, hidden), &mut rng);
        let x = Tensor::<f64>::rand_normal(&[seq, batch, input], 0.0, 1.0, &mut rng);
        let tape = Tape::new();
        let xv = tape.var(x);
        let lengths: Vec<usize> = (0..batch).map(|b| seq - b % 7).collect();
        let out = layer.forward_with(&xv, None, Some(&lengths));
        let grads = (&out.output * &out.output).sum_all().backward();
        let mut all = vec![out.output.value().clone(), grads.wrt(&xv).clone()];
        all.extend(layer.params().iter().map(|p| p.grad().expect("param grad")));
        all
    };
    // The second run reuses the first's big buffers (`[T·B, 4H]` f64, 2 MB: pooled), with
    // ragged lengths, so equal bits also show that reusing them changes nothing.
    let outside = run(); // the global pool: 2 threads on the 2-core CI machines
    let one = on_one_thread(run);
    for (a, b) in outside.iter().zip(&one) {
        assert_eq!(a.to_vec(), b.to_vec());
    }
}

/// Runs `work` in a rayon pool of one thread: no helper, no split products or batches.
fn on_one_thread<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    on_threads(1, work)
}

/// Runs `work` in a rayon pool of two threads, whatever the machine has.
fn on_two_threads<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    on_threads(2, work)
}

/// Inference of the layer and input `make` builds (afresh for each run: layers are not shared
/// across threads), with `lengths`: the same bits on two threads as on one, and a training
/// forward's numbers to 1e-12; outputs and final states.
fn check_inference_on_two_threads<C: Cell<f64>>(
    make: impl Fn() -> (Layer<f64, C>, Tensor<f64>) + Sync,
    lengths: Option<&[usize]>,
    name: &str,
) {
    let run = |record: bool| {
        let (layer, x) = make();
        let tape = Tape::new();
        let xv = tape.var(x);
        let forward = || {
            let out = layer.forward_with(&xv, None, lengths);
            let mut all = vec![out.output.value().to_vec()];
            all.extend(out.state.parts().iter().map(|p| p.value().to_vec()));
            all
        };
        match record {
            true => forward(),
            false => tape.no_grad(forward),
        }
    };
    let two = on_two_threads(|| run(false));
    assert_eq!(two, on_one_thread(|| run(false)), "{name}");
    for (a, b) in run(true).iter().zip(&two) {
        let worst = max_diff(a, b);
        assert!(worst <= 1e-12, "{name}: differs by {worst:e}");
    }
}

/// Inference on too few rows to split the batch shares each step's product with the helper
/// on two threads: the LSTM's and RNN's one `[x_t | h] [W_ih | W_hh]ᵀ` (gathered for the
/// helper), the GRU's two (`x_t W_ihᵀ` and `h W_hhᵀ`). 8 rows and at least 2²¹
/// multiply-adds per step (LSTM 8 × (128 + 256) × 4·256 ≈ 3.1e6, RNN 8 × (128 + 512) × 512
/// ≈ 2.6e6, GRU 8 × (128 + 256) × 3·256 ≈ 2.4e6); 64 steps, so the helper serves most of them.
#[test]
fn inference_on_few_rows_runs_on_the_pool_with_the_same_bits() {
    fn check<C: Cell<f64>>(make: impl Fn(&mut Rng) -> Layer<f64, C> + Sync, name: &str) {
        let (seq, batch, input) = (64, 8, 128);
        let layer_and_input = || {
            let mut rng = Rng::seed_from_u64(11);
            let layer = make(&mut rng);
            let x = Tensor::<f64>::rand_normal(&[seq, batch, input], 0.0, 1.0, &mut rng);
            (layer, x)
        };
        check_inference_on_two_threads(layer_and_input, None, name);
    }
    check(|rng| Layer::lstm(LayerConfig::new(128, 256), rng), "lstm");
    check(|rng| Layer::rnn(LayerConfig::new(128, 512), rng), "rnn");
    check(|rng| Layer::gru(LayerConfig::new(128, 256), rng), "gru");
}

/// Inference on two threads runs each half of the batch's rows on its own thread (17 rows:
/// 8 and 9, with ragged lengths; 20 × 17 × 48 × 72 ≈ 1.2e6 ≥ 2²⁰ multiply-adds for the RNN,
/// more for the others), for every cell.
#[test]
fn inference_splits_the_batch_across_threads_with_the_same_bits() {
    fn check<C: Cell<f64>>(make: impl Fn(&mut Rng) -> Layer<f64, C> + Sync, name: &str) {
        let (seq, batch, input) = (20, 17, 24);
        let lengths: Vec<usize> = (0..batch).map(|b| seq - b % 4).collect();
        let layer_and_input = || {
            let mut rng = Rng::seed_from_u64(21);
            let layer = make(&mut rng);
            let x = Tensor::<f64>::rand_normal(&[seq, batch, input], 0.0, 1.0, &mut rng);
            (layer, x)
        };
        check_inference_on_two_threads(layer_and_input, Some(&lengths), name);
    }
    let cfg = LayerConfig::new(24, 48);
    let relu = cfg.clone().nonlinearity(Nonlinearity::Relu);
    check(|rng| Layer::rnn(cfg.clone(), rng), "rnn");
    check(|rng| Layer::rnn(relu.clone(), rng), "rnn relu");
    check(|rng| Layer::lstm(cfg.clone(), rng), "lstm");
    check(|rng| Layer::gru(cfg.clone(), rng), "gru");
}

/// Training on two threads runs each half of the batch's rows, forward and backward loop, on
/// its own thread (17 rows with ragged lengths and an initial state; 48 × 17 × 96 × 128 ≈
/// 1.0e7 ≥ 2²³ multiply-adds for the RNN, more for the others): every value and gradient matches
/// the composed cells to 1e-12 there, and has the same bits as on one thread, for every cell.
/// The weight gradients split by rows across the threads too where their products are too
/// small for `gemm_into` to split (2²³ to 2²⁴ multiply-adds: the RNNs here, and the LSTM with
/// 64 hidden units, 816 × 256 × 96 ≈ 2.0e7 in all and 1.3e7 in `dW_hh`); larger ones go to
/// `gemm_into` (the LSTM and GRU with 96), in both directions in the bidirectional cases.
#[test]
fn training_splits_the_batch_across_threads_with_the_same_bits() {
    let cases = [
        (0, 96, false),
        (1, 96, false),
        (2, 96, false),
        (3, 96, false),
        (2, 64, false),
        (2, 64, true),
        (3, 96, true),
        (4, 64, true), // LSTM with a projection
    ];
    for (cell, hidden, bidirectional) in cases {
        let s = Setup {
            cell,
            layers: 1,
            bidirectional,
            batch_first: false,
            with_init: true,
            bias: true,
            seq: 48,
            batch: 17,
            input: 32,
            hidden,
            proj: if cell == 4 { 16 } else { 0 },
            lengths: Some((0..17).map(|b| 48 - b % 5).collect()),
            seed: 5,
        };
        let results = || {
            let mut rng = Rng::seed_from_u64(9);
            match cell {
                0 | 1 => run(&Layer::rnn(config(&s), &mut rng), &s),
                2 | 4 => run(&Layer::lstm(config(&s), &mut rng), &s),
                _ => run(&Layer::gru(config(&s), &mut rng), &s),
            }
        };
        let two = on_two_threads(results);
        let one = on_one_thread(results);
        for (k, (a, b)) in two.iter().zip(&one).enumerate() {
            assert_eq!(a.to_vec(), b.to_vec(), "cell {cell}, result {k}");
        }
        on_two_threads(|| {
            let mut rng = Rng::seed_from_u64(9);
            match cell {
                0 | 1 => compare(Layer::rnn(config(&s), &mut rng), &s),
                2 | 4 => compare(Layer::lstm(config(&s), &mut rng), &s),
                _ => compare(Layer::gru(config(&s), &mut rng), &s),
            }
        })
        .unwrap_or_else(|e| panic!("cell {cell}: {e}"));
    }
}

/// Inference (recording off, or nothing that needs a gradient) keeps no per-step activations
/// and, for LSTM and RNN, makes each step's `P_t` with one product of `[x_t | h]`; its outputs
/// and final states must match a training forward (which projects all inputs up front, so the
/// sums run in another order) to 1e-12 in f64, for every cell, both directions and ragged
/// lengths.
#[test]
fn inference_forward_matches_the_training_forward() {
    fn check<C: Cell<f64>>(layer: Layer<f64, C>, name: &str) {
        let mut rng = Rng::seed_from_u64(3);
        let x = Tensor::<f64>::rand_normal(&[7, 3, 5], 0.0, 1.0, &mut rng);
        let lengths = [7, 4, 1];
        let tape = Tape::new();
        let values = |out: rnn::LayerOutput<f64, C::State>| {
            let mut all = vec![out.output.value().to_vec()];
            all.extend(out.state.parts().iter().map(|p| p.value().to_vec()));
            all
        };
        let xv = tape.var(x.clone());
        let training = values(layer.forward_with(&xv, None, Some(&lengths)));
        assert!(layer.is_fused());
        let no_grad = tape.no_grad(|| values(layer.forward_with(&xv, None, Some(&lengths))));
        let constant = tape.constant(x);
        for p in layer.params() {
            p.set_requires_grad(false);
        }
        let frozen = values(layer.forward_with(&constant, None, Some(&lengths)));
        for (other, how) in [
            (&no_grad, "no_grad"),
            (&frozen, "nothing requires a gradient"),
        ] {
            for (a, b) in training.iter().zip(other) {
                let worst = max_diff(a, b);
                assert!(worst <= 1e-12, "{name}, {how}: differs by {worst:e}");
            }
        }
    }
    let mut rng = Rng::seed_from_u64(4);
    let cfg = LayerConfig::new(5, 6).num_layers(2).bidirectional(true);
    check(Layer::rnn(cfg.clone(), &mut rng), "rnn");
    check(Layer::lstm(cfg.clone(), &mut rng), "lstm");
    check(Layer::gru(cfg, &mut rng), "gru");
}

/// Inference reuses its packed weights between calls while they are unchanged; every way of
/// changing them (`set_value`, `update`, an optimizer's step) must show in the next forward,
/// which must then match the composed cells (which read the weights afresh) to 1e-12.
#[test]
fn inference_sees_every_change_of_the_weights() {
    use autograd::optim::{Optimizer, Sgd, SgdConfig};

    fn check<C: Cell<f64>>(layer: Layer<f64, C>, name: &str) {
        let mut rng = Rng::seed_from_u64(9);
        let x = Tensor::<f64>::rand_normal(&[6, 4, 5], 0.0, 1.0, &mut rng);
        let tape = Tape::new();
        let infer = |fused: bool| {
            layer.set_fused(fused);
            let out = tape.no_grad(|| layer.forward(&tape.constant(x.clone())));
            layer.set_fused(true);
            out.output.value().to_vec()
        };
        let mut before = infer(true);
        let params = layer.params();
        let set_value = || {
            let w = &params[0];
            w.set_value(w.value().map(|v| v * 0.5));
        };
        let update = || params[1].update(|w| w.iter_mut().for_each(|v| *v *= -1.0));
        let optimizer_step = || {
            let mut opt = Sgd::new(
                params.clone(),
                SgdConfig {
                    lr: 0.5,
                    ..Default::default()
                },
            );
            let tape = Tape::new();
            layer
                .forward(&tape.constant(x.clone()))
                .output
                .square()
                .sum_all()
                .backward();
            opt.step();
        };
        let changes: [(&str, &dyn Fn()); 3] = [
            ("set_value", &set_value),
            ("update", &update),
            ("an optimizer's step", &optimizer_step),
        ];
        for (how, change) in changes {
            change();
            let (fused, composed) = (infer(true), infer(false));
            assert!(fused != before, "{name}: {how} left the output unchanged");
            let worst = max_diff(&fused, &composed);
            assert!(worst <= 1e-12, "{name}, after {how}: differs by {worst:e}");
            before = fused;
        }
    }
    let mut rng = Rng::seed_from_u64(10);
    let cfg = LayerConfig::new(5, 6).num_layers(2).bidirectional(true);
    check(Layer::rnn(cfg.clone(), &mut rng), "rnn");
    check(Layer::lstm(cfg.clone(), &mut rng), "lstm");
    check(Layer::gru(cfg, &mut rng), "gru");
}

/// Frozen parameters get no gradient and cost no product, and the others' gradients keep
/// their bits, on two threads where the weight gradients split by rows (the LSTM with 64
/// hidden units and the GRU with 48, batch 17: 2²³ to 2²⁴ multiply-adds) and on one.
#[test]
fn frozen_parameters_get_no_gradient_and_the_rest_keep_their_bits() {
    fn grads<C: Cell<f64>>(layer: &Layer<f64, C>, frozen: &[&str]) -> Vec<Option<Vec<f64>>> {
        let mut rng = Rng::seed_from_u64(21);
        let x = Tensor::<f64>::rand_normal(&[48, 17, 32], 0.0, 1.0, &mut rng);
        for (name, p) in layer.named_params() {
            p.zero_grad();
            p.set_requires_grad(!frozen.contains(&name.as_str()));
        }
        let tape = Tape::new();
        let out = layer.forward(&tape.constant(x)).output;
        let weights = Tensor::rand_normal(out.shape(), 0.0, 1.0, &mut rng);
        (&out * &weights).sum_all().backward();
        let grads = layer
            .named_params()
            .iter()
            .map(|(_, p)| p.grad().map(|g| g.to_vec()))
            .collect();
        for (_, p) in layer.named_params() {
            p.set_requires_grad(true);
        }
        grads
    }
    fn check<C: Cell<f64>>(make: impl Fn() -> Layer<f64, C> + Sync, name: &str) {
        let frozen = ["weight_ih_l0", "bias_hh_l0"];
        let names: Vec<String> = make().named_params().into_iter().map(|(n, _)| n).collect();
        assert!(
            frozen.iter().all(|f| names.iter().any(|n| n == f)),
            "{names:?}"
        );
        let all = on_two_threads(|| grads(&make(), &[]));
        for threads in [1, 2] {
            let some = on_threads(threads, || grads(&make(), &frozen));
            for ((n, a), b) in names.iter().zip(&all).zip(&some) {
                if frozen.contains(&n.as_str()) {
                    assert!(b.is_none(), "{name}: {n} is frozen but got a gradient");
                } else {
                    assert_eq!(a, b, "{name}, {threads} threads: {n}");
                }
            }
        }
    }
    let seeded = || Rng::seed_from_u64(4);
    check(
        || Layer::lstm(LayerConfig::new(32, 64), &mut seeded()),
        "lstm",
    );
    check(
        || Layer::gru(LayerConfig::new(32, 48), &mut seeded()),
        "gru",
    );
}
