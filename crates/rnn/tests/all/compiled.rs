//! Compiled cells (`rnn::compiled`) against the composed path, on cells the library does not
//! ship: a minimal gated unit, an IndRNN, a layer-normalised LSTM, a cell that uses every op
//! the compiler supports, and random step programs. On random configurations (layers,
//! directions, batch-first, variable lengths, given or zero initial states) the compiled and
//! composed paths must give the same outputs, final states and gradients (of the input, the
//! initial state and every parameter) to 1e-12 in f64 (relative for results larger than 1:
//! see `compare`): both run the same rules (autograd's `Unary`/`Binary` tables) and differ
//! only in the order of the additions of a product or a sum. Then: gradient checks through
//! compiled layers, f32 and threads, the fallbacks (each op or habit the compiler cannot
//! follow must leave the layer on the composed path, with the reason), and frozen parameters
//! baked into a program.

use std::cell::Cell as Flag;
use std::marker::PhantomData;

use autograd::{GradCheck, Param, Tape, Unary, Var};
use proptest::prelude::*;
use rnn::{Cell, Dropout, Layer, LayerConfig, Module, Path, State};
use tensor::{Float, Rng, Tensor};

use crate::custom_cells::*;

// ------------------------------------------------------------------------------- helpers ---

/// How many nodes named `op` a tape holds.
fn count_nodes<T: Float>(tape: &Tape<T>, op: &str) -> usize {
    tape.nodes().iter().filter(|n| n.op == op).count()
}

// ------------------------------------------------------------- compiled against composed ---

#[derive(Clone, Debug)]
struct Setup {
    layers: usize,
    bidirectional: bool,
    batch_first: bool,
    with_init: bool,
    seq: usize,
    batch: usize,
    input: usize,
    hidden: usize,
    lengths: Option<Vec<usize>>,
    seed: u64,
}

fn setups() -> impl Strategy<Value = Setup> {
    (1usize..3, any::<bool>(), any::<bool>(), any::<bool>()).prop_flat_map(
        |(layers, bidirectional, batch_first, with_init)| {
            let sizes = (1usize..6, 1usize..4, 1usize..5, 1usize..5);
            (sizes, any::<u64>()).prop_flat_map(move |((seq, batch, input, hidden), seed)| {
                let lengths = prop::option::of(prop::collection::vec(1..=seq, batch));
                lengths.prop_map(move |lengths| Setup {
                    layers,
                    bidirectional,
                    batch_first,
                    with_init,
                    seq,
                    batch,
                    input,
                    hidden,
                    lengths,
                    seed,
                })
            })
        },
    )
}

fn config(s: &Setup) -> LayerConfig {
    LayerConfig::new(s.input, s.hidden)
        .num_layers(s.layers)
        .bidirectional(s.bidirectional)
        .batch_first(s.batch_first)
}

/// What one run produced.
struct Run {
    /// Output, final state parts, then the gradients of the input, the initial state parts
    /// and every parameter, each with its name.
    results: Vec<(String, Tensor<f64>)>,
    /// The gradients that did not exist (no path from the loss): zeros in `results`.
    missing: Vec<String>,
    /// "compiled_sequence" nodes on the tape.
    compiled_nodes: usize,
    /// Whether the loss was recorded (something it depends on needs a gradient).
    recorded: bool,
}

fn run<C: Cell<f64>>(layer: &Layer<f64, C>, s: &Setup) -> Run {
    let mut rng = Rng::seed_from_u64(s.seed);
    let d = if s.bidirectional { 2 } else { 1 };
    let x_shape = if s.batch_first {
        [s.batch, s.seq, s.input]
    } else {
        [s.seq, s.batch, s.input]
    };
    let x_value = Tensor::rand_normal(&x_shape, 0.0, 1.0, &mut rng);
    let init_values: Vec<Tensor<f64>> = (layer.cell(0, 0).state_sizes().into_iter())
        .map(|size| Tensor::rand_normal(&[s.layers * d, s.batch, size], 0.0, 0.5, &mut rng))
        .collect();
    for p in layer.params() {
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
    let compiled_nodes = count_nodes(&tape, "compiled_sequence");
    let recorded = loss.requires_grad();
    let grads = recorded.then(|| loss.backward());
    let mut results = vec![("output".to_string(), out.output.value().clone())];
    for (k, f) in finals.iter().enumerate() {
        results.push((format!("final state part {k}"), f.value().clone()));
    }
    let mut missing = vec![];
    let mut grad_of = |name: String, v: &Var<f64>| {
        let g = grads.as_ref().and_then(|g| g.get(v)).cloned();
        let g = g.unwrap_or_else(|| {
            missing.push(name.clone());
            v.value().zeros_like()
        });
        results.push((name, g));
    };
    grad_of("gradient of x".into(), &x);
    if s.with_init {
        for (k, v) in init.iter().enumerate() {
            grad_of(format!("gradient of initial state part {k}"), v);
        }
    }
    for (name, p) in layer.named_params() {
        let g = p.grad().unwrap_or_else(|| {
            missing.push(name.clone());
            p.value().zeros_like()
        });
        results.push((format!("gradient of {name}"), g));
    }
    Run {
        results,
        missing,
        compiled_nodes,
        recorded,
    }
}

/// The largest magnitude of a tensor's elements.
fn largest(t: &Tensor<f64>) -> f64 {
    t.to_vec().iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

/// The largest elementwise difference between two tensors of one shape.
fn max_diff(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    (a.to_vec().iter())
        .zip(b.to_vec())
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
}

/// `explain()` says every layer and direction compiles; the compiled run then has one
/// "compiled_sequence" node per layer and direction (`all_used`: as the hand-written cells,
/// whose every input, state part and parameter reaches the loss; a random program may leave
/// some unused, and then only needs a node where something needs a gradient) and the
/// composed run none; and the two agree to 1e-12 on every value and gradient.
///
/// 1e-12 is absolute for results of magnitude up to 1 and relative to the result's largest
/// magnitude above that. The layer-norm LSTM divides by standard deviations that can be
/// small (down to √ε ≈ 3e-3, for a row whose few values nearly agree), and its gradients
/// then reach the hundreds (up to ~850 seen in 2000 random cases); there, where
/// each result is a sum in a different order over steps and rows, 1e-12 absolute would ask
/// for agreement within a few ulps (2.5e-12 was seen on a gradient of 211: 1.2e-14
/// relative). The largest relative difference seen over those cases and the random
/// programs was 1.4e-14, 70 times below the bound.
fn compare<C: Cell<f64>>(
    layer: &Layer<f64, C>,
    s: &Setup,
    all_used: bool,
) -> Result<(), TestCaseError> {
    for (l, d, path) in layer.explain() {
        prop_assert!(
            matches!(path, Path::Compiled { .. }),
            "layer {}, direction {}: {}",
            l,
            d,
            path
        );
    }
    let compiled = run(layer, s);
    layer.set_compiled(false);
    let composed = run(layer, s);
    layer.set_compiled(true);
    let directions = if s.bidirectional { 2 } else { 1 };
    prop_assert_eq!(composed.compiled_nodes, 0);
    if all_used {
        prop_assert_eq!(compiled.compiled_nodes, s.layers * directions);
        prop_assert!(
            compiled.missing.is_empty(),
            "no gradient for {:?}",
            compiled.missing
        );
        prop_assert!(
            composed.missing.is_empty(),
            "no gradient for {:?}",
            composed.missing
        );
    } else {
        // Where the composed loss depends on something that needs a gradient, so does a
        // compiled node. (The converse may fail: a node's input that needs a gradient but
        // reaches no output, a dead op of the program, still records the node.)
        prop_assert!(compiled.compiled_nodes > 0 || !composed.recorded);
    }
    for ((name, a), (_, b)) in compiled.results.iter().zip(&composed.results) {
        prop_assert_eq!(a.shape(), b.shape(), "{}", name);
        let worst = max_diff(a, b);
        let scale = largest(b).max(1.0);
        prop_assert!(
            worst <= 1e-12 * scale,
            "{} differs from composed by {:e}, its largest magnitude is {} ({:?})",
            name,
            worst,
            scale,
            s
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn mgu_compiled_matches_composed(s in setups()) {
        let layer = Layer::new(config(&s), &mut Rng::seed_from_u64(s.seed ^ 1), |i, rng| {
            Mgu::new(i, s.hidden, rng)
        });
        compare(&layer, &s, true)?;
    }

    #[test]
    fn indrnn_compiled_matches_composed(s in setups()) {
        let layer = Layer::new(config(&s), &mut Rng::seed_from_u64(s.seed ^ 1), |i, rng| {
            IndRnn::new(i, s.hidden, true, rng)
        });
        compare(&layer, &s, true)?;
    }

    #[test]
    fn layer_norm_lstm_compiled_matches_composed(s in setups()) {
        let layer = Layer::new(config(&s), &mut Rng::seed_from_u64(s.seed ^ 1), |i, rng| {
            LnLstm::new(i, s.hidden, rng)
        });
        compare(&layer, &s, true)?;
    }

    #[test]
    fn all_ops_compiled_matches_composed(s in setups()) {
        let layer = Layer::new(config(&s), &mut Rng::seed_from_u64(s.seed ^ 1), |i, rng| {
            AllOps::new(i, s.hidden, rng)
        });
        compare(&layer, &s, true)?;
    }
}

/// The case behind `compare`'s scale: a layer-norm LSTM whose gradients reach the hundreds
/// (its second layer's input weights: 211), where the two paths differ by 2.5e-12, 1.2e-14
/// relative.
#[test]
fn large_layer_norm_gradients_match_relative_to_their_size() {
    let s = Setup {
        layers: 2,
        bidirectional: false,
        batch_first: false,
        with_init: false,
        seq: 3,
        batch: 3,
        input: 1,
        hidden: 4,
        lengths: None,
        seed: 4849095219491250638,
    };
    let layer = Layer::new(config(&s), &mut Rng::seed_from_u64(s.seed ^ 1), |i, rng| {
        LnLstm::new(i, s.hidden, rng)
    });
    compare(&layer, &s, true).unwrap();
    let largest_gradient = (run(&layer, &s).results.iter())
        .filter(|(name, _)| name.starts_with("gradient"))
        .map(|(_, g)| largest(g))
        .fold(0.0, f64::max);
    assert!(largest_gradient > 100.0, "{largest_gradient}");
}

/// What the compiler makes of the MGU: x_t W_fᵀ and x_t W_hᵀ (two transposes, two products)
/// and the transposes of U_f and U_h are hoisted out of the loop (6 ops); per step remain
/// the two products with the state, each with the sum it feeds (`x_t W_fᵀ + h U_fᵀ`) folded
/// in, and the eight other elementwise ops around them.
#[test]
fn mgu_hoists_the_input_products() {
    let layer = Layer::new(
        LayerConfig::new(3, 4).bidirectional(true),
        &mut Rng::seed_from_u64(1),
        |i, rng| Mgu::<f64>::new(i, 4, rng),
    );
    for (_, _, path) in layer.explain() {
        assert_eq!(
            path,
            Path::Compiled {
                hoisted: 6,
                per_step: 10
            }
        );
    }
}

/// Enough rows that the compiled forward and backward run the batch in several blocks of
/// rows (the layer-norm LSTM with 32 units has about 56·32 ≈ 1800 columns of slots, so a
/// block of 2¹⁵ elements holds 16 rows: 40 rows are blocks of 16, 16 and 8), with ragged
/// lengths, both directions and two layers: still the composed numbers to 1e-12.
#[test]
fn several_blocks_of_rows_match_composed() {
    let s = Setup {
        layers: 2,
        bidirectional: true,
        batch_first: false,
        with_init: true,
        seq: 5,
        batch: 40,
        input: 7,
        hidden: 32,
        lengths: Some((0..40).map(|b| 5 - b % 5).collect()),
        seed: 3,
    };
    let layer = Layer::new(config(&s), &mut Rng::seed_from_u64(4), |i, rng| {
        LnLstm::new(i, s.hidden, rng)
    });
    compare(&layer, &s, true).unwrap();
    let layer = Layer::new(config(&s), &mut Rng::seed_from_u64(5), |i, rng| {
        AllOps::new(i, s.hidden, rng)
    });
    compare(&layer, &s, true).unwrap();
}

/// Tied weights: one W for x_t and the state (input size = hidden size), and one bias in the
/// hoisted part and the per-step part, so a parameter gets gradient both from the hoisted
/// x_t W (each chunk's own tape) and from the per-step part (a source), summed in the node.
///   h' = tanh((x_t Wᵀ + b) + (h Wᵀ + b) ⊙ σ(h Wᵀ))
struct Tied<T: Float> {
    w: Param<T>,
    b: Param<T>,
}

impl<T: Float> Cell<T> for Tied<T> {
    type State = Var<T>;

    fn input_size(&self) -> usize {
        self.w.shape()[1]
    }

    fn hidden_size(&self) -> usize {
        self.w.shape()[0]
    }

    fn step(&self, x: &Var<T>, h: &Var<T>) -> Var<T> {
        let hw = h.linear(&self.w);
        ((x.linear(&self.w) + &self.b) + (&hw + &self.b) * hw.sigmoid()).tanh()
    }
}

impl<T: Float> Module<T> for Tied<T> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        named(&[("w", &self.w), ("b", &self.b)])
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn tied_weights_compiled_match_composed(s in setups()) {
        // One layer (above the first, the input is D · hidden wide) and input = hidden.
        let s = Setup { layers: 1, input: s.hidden, ..s };
        let layer = Layer::new(config(&s), &mut Rng::seed_from_u64(s.seed ^ 1), |i, rng| {
            let k = 1.0 / (i as f64).sqrt();
            Tied::<f64> {
                w: param("w", &[i, i], -k, k, rng),
                b: param("b", &[i], -k, k, rng),
            }
        });
        compare(&layer, &s, true)?;
    }
}

/// A cell that counts the calls of its `step`: the composed path calls it at every step, the
/// compiled one only to trace (twice, when a program is made), so a forward that records
/// nothing on the tape still shows which path it took.
struct Counted<C> {
    cell: C,
    calls: Flag<usize>,
}

impl<T: Float, C: Cell<T>> Cell<T> for Counted<C> {
    type State = C::State;

    fn input_size(&self) -> usize {
        self.cell.input_size()
    }

    fn hidden_size(&self) -> usize {
        self.cell.hidden_size()
    }

    fn state_sizes(&self) -> Vec<usize> {
        self.cell.state_sizes()
    }

    fn step(&self, x: &Var<T>, state: &C::State) -> C::State {
        self.calls.set(self.calls.get() + 1);
        self.cell.step(x, state)
    }
}

impl<T: Float, C: Cell<T>> Module<T> for Counted<C> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        self.cell.named_params()
    }
}

fn counted<C>(cell: C) -> Counted<C> {
    Counted {
        cell,
        calls: Flag::new(0),
    }
}

/// Values of a forward in no-grad mode (compiled: nothing kept for a backward), and of one
/// where nothing needs a gradient (a constant input, frozen parameters: the compiled node is
/// then a constant), against the composed path's, for the four cells. Nothing is recorded
/// either way; the compiled forwards call no `step` once their program is made.
#[test]
fn inference_compiled_matches_composed() {
    fn check<C: Cell<f64>>(layer: Layer<f64, Counted<C>>, name: &str) {
        let mut rng = Rng::seed_from_u64(30);
        let x = Tensor::<f64>::rand_normal(&[6, 3, 4], 0.0, 1.0, &mut rng);
        let lengths = [6, 2, 5];
        let values = |compiled: bool, frozen: bool| {
            layer.set_compiled(compiled);
            for p in layer.params() {
                p.set_requires_grad(!frozen);
            }
            let tape = Tape::new();
            let forward = || {
                let out = layer.forward_with(&tape.constant(x.clone()), None, Some(&lengths));
                let mut all = vec![out.output.value().clone()];
                all.extend(out.state.parts().iter().map(|p| p.value().clone()));
                all
            };
            let infer = || match frozen {
                true => forward(),
                false => tape.no_grad(forward),
            };
            // The first forward makes the programs (tracing each cell's step twice).
            infer();
            let calls = || {
                (0..2)
                    .flat_map(|l| (0..2).map(move |d| (l, d)))
                    .map(|(l, d)| layer.cell(l, d).calls.replace(0))
                    .sum::<usize>()
            };
            calls();
            let all = infer();
            let steps = calls();
            match compiled {
                true => assert_eq!(steps, 0, "{name}: the compiled forward called step"),
                // 2 layers × 2 directions × 6 steps.
                false => assert_eq!(steps, 24, "{name}: the composed forward's steps"),
            }
            assert_eq!(tape.len(), 0, "{name}: inference recorded nodes");
            layer.set_compiled(true);
            for p in layer.params() {
                p.set_requires_grad(true);
            }
            all
        };
        for frozen in [false, true] {
            for (k, (a, b)) in values(true, frozen)
                .iter()
                .zip(values(false, frozen))
                .enumerate()
            {
                let worst = max_diff(a, &b);
                assert!(
                    worst <= 1e-12,
                    "{name}, frozen {frozen}: result {k} differs by {worst:e}"
                );
            }
        }
    }
    let cfg = LayerConfig::new(4, 3).num_layers(2).bidirectional(true);
    let rng = &mut Rng::seed_from_u64(31);
    check(
        Layer::new(cfg.clone(), rng, |i, rng| counted(Mgu::new(i, 3, rng))),
        "mgu",
    );
    check(
        Layer::new(cfg.clone(), rng, |i, rng| {
            counted(IndRnn::new(i, 3, true, rng))
        }),
        "indrnn",
    );
    check(
        Layer::new(cfg.clone(), rng, |i, rng| counted(LnLstm::new(i, 3, rng))),
        "ln-lstm",
    );
    check(
        Layer::new(cfg, rng, |i, rng| counted(AllOps::new(i, 3, rng))),
        "all ops",
    );
}

/// Truncated BPTT runs each chunk with each sequence's length within it, 0 for one that
/// ended in an earlier chunk (it keeps its state, outputs zeros): chunk by chunk, the
/// compiled path's outputs, final states and parameter gradients match the composed ones.
#[test]
fn tbptt_with_ended_sequences_matches_composed() {
    let mut rng = Rng::seed_from_u64(32);
    let layer = Layer::new(LayerConfig::new(3, 4).num_layers(2), &mut rng, |i, rng| {
        AllOps::<f64>::new(i, 4, rng)
    });
    let x = Tensor::<f64>::rand_normal(&[7, 3, 3], 0.0, 1.0, &mut rng);
    let lengths = [7, 3, 1];
    let chunks = |compiled: bool| {
        layer.set_compiled(compiled);
        let mut all = vec![];
        let mut nodes = 0;
        layer.tbptt_with(&x, 2, None, Some(&lengths), |chunk| {
            for p in layer.params() {
                p.zero_grad();
            }
            nodes += count_nodes(&chunk.tape, "compiled_sequence");
            let mut loss = chunk.output.square().sum_all();
            for part in chunk.state.parts() {
                loss = loss + part.sum_all();
            }
            loss.backward();
            all.push(chunk.output.value().clone());
            all.extend(chunk.state.parts().iter().map(|p| p.value().clone()));
            all.extend(
                layer
                    .params()
                    .iter()
                    .map(|p| p.grad().expect("every parameter is used")),
            );
        });
        layer.set_compiled(true);
        (all, nodes)
    };
    let ((compiled, nodes), (composed, none)) = (chunks(true), chunks(false));
    assert_eq!((nodes, none), (8, 0)); // 4 chunks × 2 layers
    for (k, (a, b)) in compiled.iter().zip(&composed).enumerate() {
        let worst = max_diff(a, b);
        assert!(
            worst <= 1e-12 * largest(b).max(1.0),
            "result {k} differs by {worst:e}"
        );
    }
}

/// One layer through batch sizes and modes: a program is cached per batch size and
/// training mode, so going back and forth must pick the right one each time.
#[test]
fn one_layer_across_batch_sizes_and_modes_matches_composed() {
    let layer = Layer::new(
        LayerConfig::new(3, 4)
            .num_layers(2)
            .bidirectional(true)
            .dropout(0.25),
        &mut Rng::seed_from_u64(33),
        |i, rng| LnLstm::<f64>::new(i, 4, rng),
    );
    for (batch, training) in [
        (3, true),
        (1, true),
        (3, true),
        (2, false),
        (1, false),
        (3, true),
    ] {
        layer.set_training(training);
        let s = Setup {
            layers: 2,
            bidirectional: true,
            batch_first: false,
            with_init: true,
            seq: 4,
            batch,
            input: 3,
            hidden: 4,
            lengths: (batch > 1).then(|| (0..batch).map(|b| 4 - b).collect()),
            seed: batch as u64,
        };
        // The same dropout masks between the layers on both paths.
        rnn::manual_seed(9);
        let compiled = run(&layer, &s);
        assert_eq!(compiled.compiled_nodes, 4);
        layer.set_compiled(false);
        rnn::manual_seed(9);
        let composed = run(&layer, &s);
        layer.set_compiled(true);
        for ((name, a), (_, b)) in compiled.results.iter().zip(&composed.results) {
            let worst = max_diff(a, b);
            assert!(
                worst <= 1e-12 * largest(b).max(1.0),
                "batch {batch}, training {training}: {name} differs by {worst:e}"
            );
        }
    }
}

// ------------------------------------------------------------------- random step programs ---

/// One op of a random program, as drawn: what it is and raw numbers that pick its operands
/// and attributes once the widths are known (see [`Builder::add`]).
#[derive(Clone, Debug)]
struct RawOp {
    kind: u8,
    a: u16,
    b: u16,
    c: u16,
    s: i8,
}

#[derive(Clone, Debug)]
struct RawProgram {
    ops: Vec<RawOp>,
    /// Per state part: which value, and how it becomes the part (see [`Builder::output`]).
    outs: Vec<(u16, u8)>,
    /// The second state part's size, 1..=4 (used by the two-part cell only).
    part2: usize,
}

fn raw_programs() -> impl Strategy<Value = RawProgram> {
    let op = (
        0u8..17,
        any::<u16>(),
        any::<u16>(),
        any::<u16>(),
        -20i8..=20,
    )
        .prop_map(|(kind, a, b, c, s)| RawOp { kind, a, b, c, s });
    (
        prop::collection::vec(op, 1..14),
        prop::collection::vec((any::<u16>(), 0u8..7), 2),
        1usize..5,
    )
        .prop_map(|(ops, outs, part2)| RawProgram { ops, outs, part2 })
}

/// The right operand of a binary op.
#[derive(Clone, Debug)]
enum Rhs {
    Val(usize),
    Param(usize),
    /// `tape.param(p).tanh() + 1`.
    Derived(usize),
    Const(Tensor<f64>),
}

/// A resolved op: operands are indices of earlier values (0 is x_t, then the state parts,
/// then each op's result), parameters indices into the cell's.
#[derive(Clone, Debug)]
enum Op {
    /// `v.linear(&p)`, p `[n, w]`.
    Linear(usize, usize),
    /// `v.matmul(tape.param(&p).t())`, p `[n, w]`.
    MatmulT(usize, usize),
    /// `v.matmul(tape.param(&p).mul_scalar(s))`, p `[w, n]`.
    MatmulScaled(usize, usize, f64),
    /// `v.matmul(&c)`, c a constant `[w, n]`.
    MatmulConst(usize, Tensor<f64>),
    /// add, sub, mul, div (0..4) of a value and the right operand; `swap` puts the right
    /// operand on the left.
    Bin(u8, usize, Rhs, bool),
    AddScalar(usize, f64),
    MulScalar(usize, f64),
    /// `s - v`.
    RSub(usize, f64),
    /// `s / v`.
    RDiv(usize, f64),
    Unary(usize, Unary),
    Narrow(usize, usize, usize),
    /// `v.chunk(n, -1)[k]`.
    Chunk(usize, usize, usize),
    /// `v.split(sizes, -1)[k]`.
    Split(usize, Vec<usize>, usize),
    Concat(Vec<usize>),
    Sum(usize),
    Mean(usize),
}

/// What the builder knows of a value: its width, a bound on its magnitude, and whether it is
/// known to be at least 0.5 (where log, sqrt and 1/v may read it).
#[derive(Clone, Copy, Debug)]
struct Info {
    width: usize,
    bound: f64,
    positive: bool,
}

/// Resolves a [`RawProgram`] for one cell's sizes: each op's operands picked among the
/// values so far, with widths made to fit, and values kept tame: an operand bound by more
/// than 6 is squashed with tanh first (3 before exp), and log, sqrt, 1/v and divisors see
/// σ(v) + 0.5 unless the value is known to be ≥ 0.5.
struct Builder<'a> {
    ops: Vec<Op>,
    vals: Vec<Info>,
    params: Vec<Param<f64>>,
    rng: &'a mut Rng,
}

impl Builder<'_> {
    fn push(&mut self, op: Op, width: usize, bound: f64, positive: bool) -> usize {
        self.ops.push(op);
        self.vals.push(Info {
            width,
            bound,
            positive,
        });
        self.vals.len() - 1
    }

    fn pick(&self, raw: u16) -> usize {
        raw as usize % self.vals.len()
    }

    fn tame(&mut self, v: usize, limit: f64) -> usize {
        match self.vals[v].bound > limit {
            true => self.push(Op::Unary(v, Unary::Tanh), self.vals[v].width, 1.0, false),
            false => v,
        }
    }

    fn positive(&mut self, v: usize) -> usize {
        if self.vals[v].positive {
            return v;
        }
        let w = self.vals[v].width;
        let s = self.push(Op::Unary(v, Unary::Sigmoid), w, 1.0, false);
        self.push(Op::AddScalar(s, 0.5), w, 1.5, true)
    }

    fn new_param(&mut self, shape: &[usize], lo: f64, hi: f64) -> usize {
        let name = format!("p{}", self.params.len());
        self.params.push(param(&name, shape, lo, hi, self.rng));
        self.params.len() - 1
    }

    /// A shape that broadcasts along rows of width `w` (`[]`, `[w]`, `[1, w]`, or of width 1).
    fn broadcast_shape(choice: u16, w: usize) -> Vec<usize> {
        match choice % 5 {
            0 => vec![],
            1 => vec![w],
            2 => vec![1, w],
            3 => vec![1],
            _ => vec![1, 1],
        }
    }

    fn add(&mut self, r: &RawOp) {
        let s = f64::from(r.s) / 10.0;
        let a = self.pick(r.a);
        let w = self.vals[a].width;
        match r.kind {
            0..=3 => {
                let a = self.tame(a, 6.0);
                let n = 1 + r.c as usize % 4;
                let k = 1.0 / (w as f64).sqrt();
                let bound = (w as f64).sqrt() * self.vals[a].bound;
                let op = match r.kind {
                    0 => {
                        // Reuse an earlier weight of this fan-in now and then: one source twice.
                        let reuse = (self.params.iter().position(|p| p.shape() == [n, w]))
                            .filter(|_| r.b.is_multiple_of(2));
                        Op::Linear(a, reuse.unwrap_or_else(|| self.new_param(&[n, w], -k, k)))
                    }
                    1 => Op::MatmulT(a, self.new_param(&[n, w], -k, k)),
                    2 => Op::MatmulScaled(a, self.new_param(&[w, n], -k, k), 0.5 + s.abs() / 2.0),
                    _ => Op::MatmulConst(a, Tensor::rand_uniform(&[w, n], -k, k, self.rng)),
                };
                self.push(op, n, bound, false);
            }
            4..=7 => {
                let op = (r.b % 4) as u8;
                let swap = r.s % 2 == 0;
                let mut a = self.tame(a, 6.0);
                let (rhs, width, rhs_bound) = match r.kind {
                    4 | 5 => {
                        let mut b = self.tame(self.pick(r.c), 6.0);
                        let wb = self.vals[b].width;
                        if wb != w && wb != 1 && w != 1 {
                            b = self.push(Op::Mean(b), 1, self.vals[b].bound, false);
                        }
                        if op == 3 {
                            // The divisor: b, or a if swapped.
                            match swap {
                                true => a = self.positive(a),
                                false => b = self.positive(b),
                            }
                        }
                        let width = w.max(self.vals[b].width);
                        (Rhs::Val(b), width, self.vals[b].bound)
                    }
                    _ => {
                        // A parameter (6) or a constant (7) that broadcasts along the rows;
                        // wider than a [batch, 1] row value, sometimes.
                        let pw = if w == 1 { 1 + r.c as usize / 5 % 3 } else { w };
                        let shape = Self::broadcast_shape(r.c, pw);
                        let width = match shape.last() {
                            Some(&last) => w.max(last),
                            None => w,
                        };
                        let (lo, hi) = match (op, swap) {
                            (3, false) => (0.5, 1.5),
                            _ => (-1.5, 1.5),
                        };
                        if op == 3 && swap {
                            a = self.positive(a);
                        }
                        match r.kind {
                            // Every other parameter operand is a value computed from it,
                            // tanh(p) + 1 in (0.09, 1.91): positive, for divisors too.
                            6 if (r.a / 3).is_multiple_of(2) => {
                                (Rhs::Derived(self.new_param(&shape, lo, hi)), width, 1.91)
                            }
                            6 => (Rhs::Param(self.new_param(&shape, lo, hi)), width, 1.5),
                            _ => {
                                let c = Tensor::rand_uniform(&shape, lo, hi, self.rng);
                                (Rhs::Const(c), width, 1.5)
                            }
                        }
                    }
                };
                let ba = self.vals[a].bound;
                let bound = match (op, swap) {
                    (0 | 1, _) => ba + rhs_bound,
                    (2, _) => ba * rhs_bound,
                    (_, false) => ba * 2.0,
                    (_, true) => rhs_bound * 2.0,
                };
                self.push(Op::Bin(op, a, rhs, swap), width, bound, false);
            }
            8 => {
                let a = self.tame(a, 6.0);
                let positive = self.vals[a].positive && s >= 0.0;
                self.push(
                    Op::AddScalar(a, s),
                    w,
                    self.vals[a].bound + s.abs(),
                    positive,
                );
            }
            9 => {
                let a = self.tame(a, 6.0);
                self.push(Op::MulScalar(a, s), w, self.vals[a].bound * s.abs(), false);
            }
            10 => {
                let a = self.tame(a, 6.0);
                self.push(Op::RSub(a, s), w, self.vals[a].bound + s.abs(), false);
            }
            11 => {
                let a = self.positive(a);
                self.push(Op::RDiv(a, s), w, 2.0 * s.abs(), false);
            }
            12 => {
                let op = Unary::ALL[r.b as usize % Unary::ALL.len()];
                let (a, bound, positive) = match op {
                    Unary::Log => {
                        let a = self.positive(a);
                        (a, self.vals[a].bound.ln().max(0.7), false)
                    }
                    Unary::Sqrt => {
                        let a = self.positive(a);
                        (a, self.vals[a].bound.sqrt(), true)
                    }
                    Unary::Recip => (self.positive(a), 2.0, false),
                    Unary::Exp => {
                        let a = self.tame(a, 3.0);
                        (a, self.vals[a].bound.exp(), false)
                    }
                    Unary::Square => {
                        let a = self.tame(a, 6.0);
                        (a, self.vals[a].bound.powi(2), false)
                    }
                    Unary::Tanh | Unary::Sigmoid => (a, 1.0, false),
                    Unary::Neg | Unary::Relu | Unary::Abs => (a, self.vals[a].bound, false),
                };
                self.push(Op::Unary(a, op), w, bound, positive);
            }
            13 => {
                let start = r.b as usize % w;
                let len = 1 + r.c as usize % (w - start);
                let info = self.vals[a];
                self.push(Op::Narrow(a, start, len), len, info.bound, info.positive);
            }
            14 => {
                let info = self.vals[a];
                if w >= 2 && r.s % 2 == 0 {
                    let first = 1 + r.b as usize % (w - 1);
                    let sizes = vec![first, w - first];
                    let k = r.c as usize % 2;
                    let width = sizes[k];
                    self.push(Op::Split(a, sizes, k), width, info.bound, info.positive);
                } else {
                    // torch.chunk's pieces: ⌈w / n⌉ wide, the last what remains.
                    let n = 1 + r.b as usize % w;
                    let step = w.div_ceil(n);
                    let pieces = w.div_ceil(step);
                    let k = r.c as usize % pieces;
                    let width = step.min(w - k * step);
                    self.push(Op::Chunk(a, n, k), width, info.bound, info.positive);
                }
            }
            15 => {
                let mut parts = vec![a, self.pick(r.b)];
                if r.s % 2 == 0 {
                    parts.push(self.pick(r.c));
                }
                let width = parts.iter().map(|&p| self.vals[p].width).sum();
                let bound = parts
                    .iter()
                    .map(|&p| self.vals[p].bound)
                    .fold(0.0, f64::max);
                let positive = parts.iter().all(|&p| self.vals[p].positive);
                self.push(Op::Concat(parts), width, bound, positive);
            }
            _ => {
                let a = self.tame(a, 6.0);
                let info = self.vals[a];
                match r.b % 2 {
                    0 => self.push(Op::Sum(a), 1, info.bound * w as f64, false),
                    _ => self.push(Op::Mean(a), 1, info.bound, info.positive),
                };
            }
        }
    }

    /// The value that becomes state part `k` of `size`: by `mode`, tanh of a projection of
    /// a value (most often), a value of the right width itself (squashed if it may grow), the
    /// same value as part 0, or the part's own input unchanged.
    fn output(
        &mut self,
        k: usize,
        size: usize,
        (raw, mode): (u16, u8),
        first: Option<usize>,
    ) -> usize {
        let v = self.pick(raw);
        let project = |b: &mut Self| {
            let v = b.tame(v, 6.0);
            let w = b.vals[v].width;
            let kk = 1.0 / (w as f64).sqrt();
            let p = b.new_param(&[size, w], -kk, kk);
            let l = b.push(Op::Linear(v, p), size, 6.0, false);
            b.push(Op::Unary(l, Unary::Tanh), size, 1.0, false)
        };
        match mode {
            3 if self.vals[v].width == size => self.tame(v, 2.5),
            4 => match first {
                Some(f) if self.vals[f].width == size => f,
                _ => project(self),
            },
            5 => 1 + k,
            _ => project(self),
        }
    }
}

/// A cell whose step runs a random program; `S` is its state (one part or two).
struct ProgCell<S> {
    input: usize,
    sizes: Vec<usize>,
    ops: Vec<Op>,
    outs: Vec<usize>,
    params: Vec<Param<f64>>,
    _state: PhantomData<S>,
}

impl<S: State<f64>> ProgCell<S> {
    fn new(raw: &RawProgram, input: usize, hidden: usize, rng: &mut Rng) -> Self {
        let sizes = match S::num_parts() {
            1 => vec![hidden],
            _ => vec![hidden, raw.part2],
        };
        // x_t's and the state's bounds: the inputs are N(0, 1), the states N(0, 0.5) and
        // tanh (or values bound by 2.5) afterwards.
        let mut vals = vec![Info {
            width: input,
            bound: 2.5,
            positive: false,
        }];
        vals.extend(sizes.iter().map(|&width| Info {
            width,
            bound: 2.5,
            positive: false,
        }));
        let mut b = Builder {
            ops: vec![],
            vals,
            params: vec![],
            rng,
        };
        for op in &raw.ops {
            b.add(op);
        }
        let mut outs = vec![];
        for (k, &size) in sizes.iter().enumerate() {
            let first = outs.first().copied();
            outs.push(b.output(k, size, raw.outs[k], first));
        }
        ProgCell {
            input,
            sizes,
            ops: b.ops,
            outs,
            params: b.params,
            _state: PhantomData,
        }
    }
}

impl<S: State<f64> + 'static> Cell<f64> for ProgCell<S> {
    type State = S;

    fn input_size(&self) -> usize {
        self.input
    }

    fn hidden_size(&self) -> usize {
        self.sizes[0]
    }

    fn state_sizes(&self) -> Vec<usize> {
        self.sizes.clone()
    }

    fn step(&self, x: &Var<f64>, state: &S) -> S {
        let tape = x.tape();
        let mut v: Vec<Var<f64>> = vec![x.clone()];
        v.extend(state.parts());
        for op in &self.ops {
            let p = |k: usize| &self.params[k];
            let next = match op {
                Op::Linear(a, k) => v[*a].linear(p(*k)),
                Op::MatmulT(a, k) => v[*a].matmul(tape.param(p(*k)).t()),
                Op::MatmulScaled(a, k, s) => v[*a].matmul(tape.param(p(*k)).mul_scalar(*s)),
                Op::MatmulConst(a, c) => v[*a].matmul(c),
                Op::Bin(op, a, rhs, swap) => {
                    let b = match rhs {
                        Rhs::Val(b) => v[*b].clone(),
                        Rhs::Param(k) => tape.param(p(*k)),
                        Rhs::Derived(k) => tape.param(p(*k)).tanh().add_scalar(1.0),
                        Rhs::Const(c) => tape.constant(c.clone()),
                    };
                    let (l, r) = match swap {
                        true => (&b, &v[*a]),
                        false => (&v[*a], &b),
                    };
                    match op {
                        0 => l + r,
                        1 => l - r,
                        2 => l * r,
                        _ => l / r,
                    }
                }
                Op::AddScalar(a, s) => &v[*a] + *s,
                Op::MulScalar(a, s) => &v[*a] * *s,
                Op::RSub(a, s) => *s - &v[*a],
                Op::RDiv(a, s) => *s / &v[*a],
                Op::Unary(a, op) => {
                    let a = &v[*a];
                    match op {
                        Unary::Neg => -a,
                        Unary::Exp => a.exp(),
                        Unary::Log => a.log(),
                        Unary::Tanh => a.tanh(),
                        Unary::Sigmoid => a.sigmoid(),
                        Unary::Relu => a.relu(),
                        Unary::Sqrt => a.sqrt(),
                        Unary::Recip => a.recip(),
                        Unary::Square => a.square(),
                        Unary::Abs => a.abs(),
                    }
                }
                Op::Narrow(a, start, len) => v[*a].narrow(-1, *start, *len),
                Op::Chunk(a, n, k) => v[*a].chunk(*n, -1).swap_remove(*k),
                Op::Split(a, sizes, k) => v[*a].split(sizes, -1).swap_remove(*k),
                Op::Concat(parts) => {
                    Var::concat(&parts.iter().map(|&k| &v[k]).collect::<Vec<_>>(), -1)
                }
                Op::Sum(a) => v[*a].sum(&[-1], true),
                Op::Mean(a) => v[*a].mean(&[-1], true),
            };
            v.push(next);
        }
        S::from_parts(self.outs.iter().map(|&k| v[k].clone()).collect())
    }
}

impl<S> Module<f64> for ProgCell<S> {
    fn named_params(&self) -> Vec<(String, Param<f64>)> {
        (self.params.iter().enumerate())
            .map(|(k, p)| (format!("p{k}"), p.clone()))
            .collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random step programs (one or two state parts) compile, and match the composed path.
    #[test]
    fn random_programs_compiled_match_composed(
        s in setups(),
        raw in raw_programs(),
        two_parts in any::<bool>(),
    ) {
        let mut rng = Rng::seed_from_u64(s.seed ^ 1);
        if two_parts {
            let layer = Layer::new(config(&s), &mut rng, |i, rng| {
                ProgCell::<(Var<f64>, Var<f64>)>::new(&raw, i, s.hidden, rng)
            });
            compare(&layer, &s, false)?;
        } else {
            let layer = Layer::new(config(&s), &mut rng, |i, rng| {
                ProgCell::<Var<f64>>::new(&raw, i, s.hidden, rng)
            });
            compare(&layer, &s, false)?;
        }
    }
}

// ------------------------------------------------------------------------ gradient checks ---

/// Finite differences through a compiled layer (2 layers, bidirectional, lengths, a given
/// initial state): with respect to the input, the initial state and every parameter.
fn gradcheck_compiled<C: Cell<f64>>(layer: Layer<f64, C>, name: &str) {
    for (l, d, path) in layer.explain() {
        assert!(
            matches!(path, Path::Compiled { .. }),
            "{name} {l} {d}: {path}"
        );
    }
    let mut rng = Rng::seed_from_u64(12);
    let x = Tensor::<f64>::rand_normal(&[4, 2, 3], 0.0, 1.0, &mut rng);
    let sizes = layer.cell(0, 0).state_sizes();
    let mut inputs = vec![x];
    inputs
        .extend((sizes.iter()).map(|&size| Tensor::rand_normal(&[4, 2, size], 0.0, 0.5, &mut rng)));
    let lengths = [4, 2];
    let nodes = Flag::new(0);
    let report = GradCheck::new(|v: &[Var<f64>]| {
        let init = C::State::from_parts(v[1..].to_vec());
        let out = layer.forward_with(&v[0], Some(&init), Some(&lengths));
        nodes.set(
            nodes
                .get()
                .max(count_nodes(v[0].tape(), "compiled_sequence")),
        );
        // Every output: the sequence and the final state's parts.
        let mut all = vec![out.output.flatten()];
        all.extend(out.state.parts().iter().map(|p| p.flatten()));
        Var::concat(&all.iter().collect::<Vec<_>>(), 0)
    })
    .inputs(&inputs)
    .params(&layer.params())
    .run();
    assert!(report.passed(), "{name}: {report}");
    // The analytic pass (the one that records) ran compiled: one node per layer and direction.
    assert_eq!(nodes.get(), 4, "{name}");
}

#[test]
fn compiled_mgu_passes_gradcheck() {
    let layer = Layer::new(
        LayerConfig::new(3, 3).num_layers(2).bidirectional(true),
        &mut Rng::seed_from_u64(2),
        |i, rng| Mgu::<f64>::new(i, 3, rng),
    );
    gradcheck_compiled(layer, "mgu");
}

#[test]
fn compiled_layer_norm_lstm_passes_gradcheck() {
    let layer = Layer::new(
        LayerConfig::new(3, 3).num_layers(2).bidirectional(true),
        &mut Rng::seed_from_u64(3),
        |i, rng| LnLstm::<f64>::new(i, 3, rng),
    );
    gradcheck_compiled(layer, "layer-norm lstm");
}

/// The IndRNN with tanh (relu's kink is where random data puts finite differences wrong) and
/// the all-ops cell, through the compiled path.
#[test]
fn compiled_indrnn_and_all_ops_pass_gradcheck() {
    let layer = Layer::new(
        LayerConfig::new(3, 3).num_layers(2).bidirectional(true),
        &mut Rng::seed_from_u64(4),
        |i, rng| IndRnn::<f64>::new(i, 3, false, rng),
    );
    gradcheck_compiled(layer, "indrnn (tanh)");
    let layer = Layer::new(
        LayerConfig::new(3, 2).num_layers(2).bidirectional(true),
        &mut Rng::seed_from_u64(5),
        |i, rng| AllOps::<f64>::new(i, 2, rng),
    );
    gradcheck_compiled(layer, "all ops");
}

// -------------------------------------------------------------------------- f32, threads ---

/// Output, final state and every gradient (input, initial state, parameters) of one f32
/// training run of `layer` on `x`.
fn run_f32<C: Cell<f32>>(
    layer: &Layer<f32, C>,
    x: &Tensor<f32>,
    init: &[Tensor<f32>],
    lengths: &[usize],
) -> (Vec<(String, Tensor<f32>)>, usize) {
    for p in layer.params() {
        p.zero_grad();
    }
    let tape = Tape::new();
    let xv = tape.var(x.clone());
    let init: Vec<Var<f32>> = init.iter().map(|t| tape.var(t.clone())).collect();
    let out = layer.forward_with(
        &xv,
        Some(&C::State::from_parts(init.clone())),
        Some(lengths),
    );
    let mut rng = Rng::seed_from_u64(99);
    let mut loss =
        (&out.output * &Tensor::rand_normal(out.output.shape(), 0.0, 1.0, &mut rng)).sum_all();
    for f in out.state.parts() {
        loss = loss + (&f * &Tensor::rand_normal(f.shape(), 0.0, 1.0, &mut rng)).sum_all();
    }
    let nodes = count_nodes(&tape, "compiled_sequence");
    let grads = loss.backward();
    let mut all = vec![("output".to_string(), out.output.value().clone())];
    for (k, f) in out.state.parts().iter().enumerate() {
        all.push((format!("final state part {k}"), f.value().clone()));
    }
    all.push(("gradient of x".into(), grads.wrt(&xv).clone()));
    for (k, v) in init.iter().enumerate() {
        all.push((
            format!("gradient of initial state part {k}"),
            grads.wrt(v).clone(),
        ));
    }
    for (name, p) in layer.named_params() {
        all.push((
            format!("gradient of {name}"),
            p.grad().expect("every parameter is used"),
        ));
    }
    (all, nodes)
}

/// In f32 the compiled and composed layer-norm LSTMs agree to rounding: each step is about
/// 40 ops deep (two layer norms of ~8 ops, gates, products with k ≤ 16), so one step can
/// differ by some tens of ulps where the order of additions differs (f32's unit roundoff is
/// 6e-8: 40 · 6e-8 ≈ 2.4e-6 relative), and 8 steps of recurrence and two layers carry that
/// forward and back; layer norm divides by a standard deviation, which can magnify it a few
/// times. 1e-4 relative to the largest magnitude of each result leaves room for that (the
/// largest difference here is 1.1e-6 relative, on a gradient of W_ih) and still catches a
/// wrong rule or a dropped term, which are O(1) relative.
#[test]
fn f32_compiled_matches_composed_to_rounding() {
    let mut rng = Rng::seed_from_u64(8);
    let layer = Layer::new(
        LayerConfig::new(6, 8).num_layers(2).bidirectional(true),
        &mut rng,
        |i, rng| LnLstm::<f32>::new(i, 8, rng),
    );
    let x = Tensor::<f32>::rand_normal(&[8, 5, 6], 0.0, 1.0, &mut rng);
    let init: Vec<Tensor<f32>> = (0..2)
        .map(|_| Tensor::rand_normal(&[4, 5, 8], 0.0, 0.5, &mut rng))
        .collect();
    let lengths = [8, 3, 7, 1, 8];
    let (compiled, nodes) = run_f32(&layer, &x, &init, &lengths);
    assert_eq!(nodes, 4);
    layer.set_compiled(false);
    let (composed, nodes) = run_f32(&layer, &x, &init, &lengths);
    assert_eq!(nodes, 0);
    for ((name, a), (_, b)) in compiled.iter().zip(&composed) {
        let scale = b.to_vec().iter().fold(1f32, |m, v| m.max(v.abs()));
        let worst = (a.to_vec().iter())
            .zip(b.to_vec())
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            worst <= 1e-4 * scale,
            "{name}: differs by {worst:e} (largest magnitude {scale})"
        );
    }
}

/// The compiled path on one thread and on two gives the same bits, with products large
/// enough to split across threads (≥ 2²⁴ multiply-adds): the hoisted x W_ihᵀ over all
/// 32 · 16 rows, [512, 96] × [96, 512] ≈ 2.5e7, and the weight gradients over all steps
/// (dW_ih = dPᵀ X ≈ 2.5e7, dW_hh = dPᵀ H ≈ 3.4e7); and with each step's rows split between
/// the two threads (the layer-norm LSTM with 128 units has about 7,200 columns of slots, so
/// its blocks are 8 rows: 2 blocks, and 16 · 128 · 512 = 2²⁰ multiply-adds per step, the
/// threshold for splitting).
#[test]
fn compiled_path_gives_the_same_bits_on_one_and_two_threads() {
    let (seq, batch, input, hidden) = (32, 16, 96, 128);
    let results = || {
        let mut rng = Rng::seed_from_u64(13);
        let layer = Layer::new(LayerConfig::new(input, hidden), &mut rng, |i, rng| {
            LnLstm::<f32>::new(i, hidden, rng)
        });
        let x = Tensor::<f32>::rand_normal(&[seq, batch, input], 0.0, 1.0, &mut rng);
        let init: Vec<Tensor<f32>> = (0..2)
            .map(|_| Tensor::rand_normal(&[1, batch, hidden], 0.0, 0.5, &mut rng))
            .collect();
        let lengths: Vec<usize> = (0..batch).map(|b| seq - b % 5).collect();
        run_f32(&layer, &x, &init, &lengths)
    };
    let on = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(results)
    };
    let (one, nodes) = on(1);
    assert_eq!(nodes, 1);
    let (two, _) = on(2);
    for ((name, a), (_, b)) in one.iter().zip(&two) {
        let bits = |t: &Tensor<f32>| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(a) == bits(b),
            "{name} differs between one and two threads"
        );
    }
}

// ------------------------------------------------------------------------------ fallbacks ---

/// What [`Odd`]'s step does after `pre = x Wᵀ + h Uᵀ`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Oddity {
    /// softmax over the features (an op with no `Prim`).
    Softmax,
    /// `maximum(tanh(pre), h)`.
    Maximum,
    /// `where_cond` with a fixed mask.
    WhereCond,
    /// A sum over the features without keepdim.
    SumWithoutKeepdim,
    /// `index_select` along the features.
    IndexSelect,
    /// A constant with the batch's shape.
    BatchConstant,
    /// tanh or sigmoid, by the sign of Σ x_t read outside the tape: the same number of ops.
    Branch,
    /// tanh, and one more tanh if Σ x_t > 0: a different number of ops.
    BranchLonger,
    /// Dropout (p = 0.5) inside step: a new random mask every step in training mode.
    Dropout,
    /// tanh as a custom op (`Var::custom_op`).
    CustomOp,
    /// A variable made inside step (`tape.var`), a leaf that is neither x_t, the state nor a
    /// parameter.
    LeafInStep,
    /// `x W` or `x W2` by the sign of Σ x_t: the same ops, another parameter.
    ChooseParam,
    /// tanh and σ of the pre-activation both computed, one returned by the sign of Σ x_t: the
    /// same ops, another value returned.
    ChooseOutput,
    /// tanh from the zero state, σ otherwise: only a trace from the zero state sees it.
    ZeroStateBranch,
    /// Panics on an all-zero state with a non-zero input (which the real runs never give it).
    PanicOnZeroState,
    /// A split with a part of no features.
    ZeroWidth,
}

/// A one-part cell the compiler cannot follow, in the way `oddity` says.
struct Odd {
    w: Param<f64>,
    w2: Param<f64>,
    u: Param<f64>,
    oddity: Oddity,
    dropout: Dropout,
}

impl Odd {
    fn new(input: usize, hidden: usize, oddity: Oddity, rng: &mut Rng) -> Self {
        let k = 1.0 / (hidden as f64).sqrt();
        Odd {
            w: param("w", &[hidden, input], -k, k, rng),
            w2: param("w2", &[hidden, input], -k, k, rng),
            u: param("u", &[hidden, hidden], -k, k, rng),
            oddity,
            dropout: Dropout::new(0.5),
        }
    }
}

impl Odd {
    /// [`Oddity::ChooseParam`]'s step: `W` and `W2` both enter the tape, in an order that
    /// depends on the sign of Σ x_t, so both orders record the same ops on the same node
    /// ids, with the parameters swapped; the first one counts.
    fn choose_param(&self, x: &Var<f64>, h: &Var<f64>) -> Var<f64> {
        let (first, second) = match x.value().sum_all().item() > 0.0 {
            true => (&self.w, &self.w2),
            false => (&self.w2, &self.w),
        };
        (x.linear(first) + x.linear(second).mul_scalar(0.0) + h.linear(&self.u)).tanh()
    }
}

impl Cell<f64> for Odd {
    type State = Var<f64>;

    fn input_size(&self) -> usize {
        self.w.shape()[1]
    }

    fn hidden_size(&self) -> usize {
        self.u.shape()[0]
    }

    fn step(&self, x: &Var<f64>, h: &Var<f64>) -> Var<f64> {
        if self.oddity == Oddity::ChooseParam {
            return self.choose_param(x, h);
        }
        let pre = x.linear(&self.w) + h.linear(&self.u);
        let (batch, hidden) = (x.shape()[0], self.hidden_size());
        let positive = x.value().sum_all().item() > 0.0;
        match self.oddity {
            Oddity::Softmax => pre.softmax(-1),
            Oddity::Maximum => pre.tanh().maximum(h),
            Oddity::WhereCond => {
                let mask: Vec<bool> = (0..hidden).map(|j| j % 2 == 0).collect();
                Var::where_cond(&Tensor::from_vec(mask, &[1, hidden]), &pre.tanh(), h)
            }
            Oddity::SumWithoutKeepdim => &pre.tanh() * &pre.sum(&[-1], false).unsqueeze(-1).tanh(),
            Oddity::IndexSelect => {
                let reversed: Vec<i64> = (0..hidden as i64).rev().collect();
                pre.index_select(-1, &Tensor::from_vec(reversed, &[hidden]))
                    .tanh()
            }
            Oddity::BatchConstant => {
                let scale: Vec<f64> = (0..batch * hidden).map(|k| 0.5 + 0.1 * k as f64).collect();
                &pre.tanh() * &Tensor::from_vec(scale, &[batch, hidden])
            }
            Oddity::Branch => match positive {
                true => pre.tanh(),
                false => pre.sigmoid(),
            },
            Oddity::BranchLonger => match positive {
                true => pre.tanh().tanh(),
                false => pre.tanh(),
            },
            Oddity::Dropout => self.dropout.forward(&pre.tanh()),
            Oddity::LeafInStep => {
                let scale = x.tape().var(Tensor::full(&[1, hidden], 0.5));
                &pre.tanh() * &scale
            }
            Oddity::ChooseParam => unreachable!("handled first"),
            Oddity::ChooseOutput => {
                let (a, b) = (pre.tanh(), pre.sigmoid());
                if positive {
                    a
                } else {
                    b
                }
            }
            Oddity::ZeroStateBranch => match h.value().abs().sum_all().item() == 0.0 {
                true => pre.tanh(),
                false => pre.sigmoid(),
            },
            Oddity::PanicOnZeroState => {
                // (Layer::new runs one step from zeros, with x_t = 0 too: that one is fine.)
                let zero_state = h.value().abs().sum_all().item() == 0.0;
                let zero_input = x.value().abs().sum_all().item() == 0.0;
                assert!(!zero_state || zero_input, "the state must not be all zeros");
                pre.tanh()
            }
            Oddity::ZeroWidth => {
                let parts = pre.split(&[hidden, 0], -1);
                &parts[0].tanh() + &parts[1].sum(&[-1], true)
            }
            Oddity::CustomOp => {
                let y = pre.value().tanh();
                let y_saved = y.clone();
                Var::custom_op("my_tanh", &[&pre], y, move |g| {
                    vec![Some(g * &y_saved.map(|v| 1.0 - v * v))]
                })
            }
        }
    }
}

impl Module<f64> for Odd {
    fn named_params(&self) -> Vec<(String, Param<f64>)> {
        match self.oddity {
            Oddity::ChooseParam => named(&[("w", &self.w), ("w2", &self.w2), ("u", &self.u)]),
            _ => named(&[("w", &self.w), ("u", &self.u)]),
        }
    }

    fn set_training(&self, training: bool) {
        self.dropout.set_training(training);
    }
}

/// Output, final state and gradients of one run of `layer` (composed or compiled), from a
/// fixed dropout seed, and the number of "compiled_sequence" nodes.
fn run_odd(layer: &Layer<f64, Odd>) -> (Vec<Vec<f64>>, usize) {
    let s = Setup {
        layers: 2,
        bidirectional: true,
        batch_first: false,
        with_init: true,
        seq: 4,
        batch: 3,
        input: 5,
        hidden: 4,
        lengths: Some(vec![4, 2, 3]),
        seed: 21,
    };
    rnn::manual_seed(5);
    let run = run(layer, &s);
    assert!(run.missing.is_empty(), "no gradient for {:?}", run.missing);
    let values = run.results.into_iter().map(|(_, t)| t.to_vec()).collect();
    (values, run.compiled_nodes)
}

fn odd_layer(oddity: Oddity) -> Layer<f64, Odd> {
    Layer::new(
        LayerConfig::new(5, 4).num_layers(2).bidirectional(true),
        &mut Rng::seed_from_u64(6),
        |i, rng| Odd::new(i, 4, oddity, rng),
    )
}

/// Every layer and direction explains it runs composed, with a reason containing `why`;
/// the forward runs composed (no compiled node) and gives the very numbers of the composed
/// path switched on by hand.
#[track_caller]
fn assert_falls_back(layer: &Layer<f64, Odd>, why: &str) {
    for (l, d, path) in layer.explain() {
        match path {
            Path::Composed(reason) => assert!(
                reason.contains(why),
                "{:?}, layer {l}, direction {d}: the reason '{reason}' does not say '{why}'",
                layer.cell(0, 0).oddity
            ),
            other => panic!(
                "{:?}, layer {l}, direction {d}: {other}",
                layer.cell(0, 0).oddity
            ),
        }
    }
    let (values, nodes) = run_odd(layer);
    assert_eq!(nodes, 0);
    layer.set_compiled(false);
    let (composed, _) = run_odd(layer);
    layer.set_compiled(true);
    assert_eq!(values, composed);
}

#[test]
fn ops_the_compiler_does_not_know_fall_back_to_composed() {
    let cases = [
        (Oddity::Softmax, "'softmax'"),
        (Oddity::Maximum, "'maximum'"),
        (Oddity::WhereCond, "'where_cond'"),
        (Oddity::IndexSelect, "'index_select'"),
        (Oddity::CustomOp, "'my_tanh'"),
    ];
    for (oddity, op) in cases {
        let layer = odd_layer(oddity);
        assert_falls_back(&layer, op);
        assert_falls_back(&layer, "the compiler does not know this op");
    }
}

#[test]
fn a_variable_made_inside_step_falls_back_to_composed() {
    let layer = odd_layer(Oddity::LeafInStep);
    assert_falls_back(&layer, "a variable made inside step");
}

#[test]
fn a_sum_without_keepdim_falls_back_to_composed() {
    let layer = odd_layer(Oddity::SumWithoutKeepdim);
    assert_falls_back(&layer, "'sum'");
    assert_falls_back(&layer, "is not [batch, features]");
}

#[test]
fn a_constant_with_the_batch_shape_falls_back_to_composed() {
    let layer = odd_layer(Oddity::BatchConstant);
    assert_falls_back(&layer, "'mul'");
    assert_falls_back(&layer, "does not broadcast along the rows");
}

/// Branches on x_t's values outside the tape: the two traces (with different inputs) differ,
/// in an op or in the number of ops. (The compiler draws the two traces' x_t from fixed
/// seeds, U(−1, 1); with 5 input features, and 8 above the first layer, Σ x_t has opposite
/// signs in them for the explain's batch of 2 and the forward's 3. With 3 features both
/// traces' sums are positive: the step would compile with the tanh branch baked in, and a
/// batch whose Σ x_t is negative would silently get tanh instead of σ. Detection by two
/// traces is a heuristic.)
#[test]
fn a_step_that_branches_on_values_falls_back_to_composed() {
    let layer = odd_layer(Oddity::Branch);
    assert_falls_back(&layer, "differs between two traces");
    let layer = odd_layer(Oddity::BranchLonger);
    assert_falls_back(&layer, "branches on values");
}

/// Steps that choose a parameter or the value they return by values read outside the tape,
/// branch only from the zero state, panic on the compiler's trace inputs, or make a value of
/// no features: each falls back to composed, with the reason (the first two record the same
/// ops either way, so comparing ops alone would have compiled one branch).
#[test]
fn steps_that_choose_by_value_or_panic_on_trace_inputs_fall_back() {
    let cases = [
        (Oddity::ChooseParam, "uses different parameters"),
        (Oddity::ChooseOutput, "returns different values"),
        (Oddity::ZeroStateBranch, "differs between two traces"),
        (
            Oddity::PanicOnZeroState,
            "panicked on the compiler's trace inputs: the state must not be all zeros",
        ),
        (Oddity::ZeroWidth, "no features"),
    ];
    for (oddity, why) in cases {
        assert_falls_back(&odd_layer(oddity), why);
    }
}

/// Dropout inside step in training mode draws a new mask each trace: composed. In evaluation
/// mode the step is deterministic and compiles (a new program: training mode is part of the
/// cache's key), and the compiled forward matches the composed one; back in training mode,
/// composed again.
#[test]
fn dropout_inside_step_compiles_in_evaluation_mode_only() {
    let layer = odd_layer(Oddity::Dropout);
    assert_falls_back(&layer, "draws from the thread's random generator");
    layer.set_training(false);
    for (_, _, path) in layer.explain() {
        assert!(matches!(path, Path::Compiled { .. }), "{path}");
    }
    let (compiled, nodes) = run_odd(&layer);
    assert_eq!(nodes, 4);
    layer.set_compiled(false);
    let (composed, _) = run_odd(&layer);
    layer.set_compiled(true);
    for (a, b) in compiled.iter().zip(&composed) {
        let worst = (a.iter().zip(b)).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst <= 1e-12, "evaluation mode: differs by {worst:e}");
    }
    layer.set_training(true);
    assert_falls_back(&layer, "draws from the thread's random generator");
}

#[test]
fn set_compiled_false_is_explained() {
    let layer = Layer::new(
        LayerConfig::new(3, 4).bidirectional(true),
        &mut Rng::seed_from_u64(1),
        |i, rng| Mgu::<f64>::new(i, 4, rng),
    );
    layer.set_compiled(false);
    for (_, _, path) in layer.explain() {
        match path {
            Path::Composed(why) => assert!(why.contains("set_compiled"), "{why}"),
            other => panic!("{other}"),
        }
    }
    let tape = Tape::new();
    let x = tape.var(Tensor::<f64>::rand_normal(
        &[3, 2, 3],
        0.0,
        1.0,
        &mut Rng::seed_from_u64(2),
    ));
    layer.forward(&x);
    assert_eq!(count_nodes(&tape, "compiled_sequence"), 0);
}

// ------------------------------------------------------------------- frozen parameters ---

/// A frozen parameter is a constant in the trace, so its value is baked into the program;
/// the cache is keyed on its stamp, so every change of its value (`set_value`, `update`)
/// shows in the next compiled forward, which must match the composed path (which reads the
/// value afresh) to 1e-12, gradients of the other parameters included. Unfreezing it makes
/// it a parameter of the program again.
#[test]
fn a_changed_frozen_parameter_reaches_the_next_compiled_forward() {
    let layer = Layer::lstm(
        LayerConfig::new(3, 4).num_layers(2).bidirectional(true),
        &mut Rng::seed_from_u64(7),
    );
    layer.set_fused(false);
    let s = Setup {
        layers: 2,
        bidirectional: true,
        batch_first: false,
        with_init: true,
        seq: 5,
        batch: 3,
        input: 3,
        hidden: 4,
        lengths: Some(vec![5, 2, 4]),
        seed: 8,
    };
    let params = layer.named_params();
    let frozen = |name: &str| {
        (params.iter())
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.clone())
            .expect(name)
    };
    let (w_hh, b_ih) = (frozen("weight_hh_l0"), frozen("bias_ih_l1_reverse"));
    w_hh.set_requires_grad(false);
    b_ih.set_requires_grad(false);
    let check = |what: &str| {
        let compiled = run(&layer, &s);
        assert_eq!(compiled.compiled_nodes, 4, "{what}");
        layer.set_compiled(false);
        let composed = run(&layer, &s);
        layer.set_compiled(true);
        for ((name, a), (_, b)) in compiled.results.iter().zip(&composed.results) {
            let worst = max_diff(a, b);
            assert!(worst <= 1e-12, "after {what}: {name} differs by {worst:e}");
        }
        let mut missing = compiled.missing.clone();
        missing.sort();
        let mut expected = vec![];
        for p in [&w_hh, &b_ih] {
            if !p.requires_grad() {
                expected.push(p.name());
            }
        }
        expected.sort();
        assert_eq!(
            missing, expected,
            "after {what}: parameters without a gradient"
        );
        compiled.results[0].1.to_vec()
    };
    let mut before = check("freezing");
    let changes: [(&str, &dyn Fn()); 4] = [
        ("set_value", &|| {
            w_hh.set_value(w_hh.value().map(|v| v * -1.5))
        }),
        ("update", &|| {
            b_ih.update(|b| b.iter_mut().for_each(|v| *v += 0.75))
        }),
        ("a second set_value", &|| {
            w_hh.set_value(w_hh.value().map(|v| v + 0.25))
        }),
        ("unfreezing", &|| {
            w_hh.set_requires_grad(true);
            w_hh.set_value(w_hh.value().map(|v| v * 0.5));
        }),
    ];
    for (what, change) in changes {
        change();
        let after = check(what);
        assert!(after != before, "{what} left the output unchanged");
        before = after;
    }
}

// ------------------------------------------------------------------------- a broken step ---

/// A cell whose `step` returns a state of 5 features while it declares 4.
struct WrongWidth {
    w: Param<f64>,
}

impl Cell<f64> for WrongWidth {
    type State = Var<f64>;
    fn input_size(&self) -> usize {
        3
    }
    fn hidden_size(&self) -> usize {
        4
    }
    fn step(&self, x: &Var<f64>, _h: &Var<f64>) -> Var<f64> {
        x.linear(&self.w).tanh()
    }
}

impl Module<f64> for WrongWidth {
    fn named_params(&self) -> Vec<(String, Param<f64>)> {
        vec![("w".into(), self.w.clone())]
    }
}

fn wrong_width_forward(compiled: bool) {
    let mut rng = Rng::seed_from_u64(0);
    let layer = Layer::new(LayerConfig::new(3, 4), &mut rng, |_, rng| WrongWidth {
        w: param("w", &[5, 3], -1.0, 1.0, rng),
    });
    layer.set_compiled(compiled);
    let tape = Tape::new();
    layer.forward(&tape.var(Tensor::zeros(&[4, 2, 3])));
}

/// A `step` that returns the wrong state size is refused, naming the part and both shapes,
/// on the compiled path (when it traces) and on the composed one (at the step), instead of
/// a slice-index panic or an output of the wrong width.
#[test]
#[should_panic(expected = "the cell's step returned state part 0 of shape [2, 5], expected [2, 4]")]
fn a_step_returning_the_wrong_width_is_refused_compiled() {
    wrong_width_forward(true);
}

#[test]
#[should_panic(expected = "the cell's step returned state part 0 of shape [2, 5], expected [2, 4]")]
fn a_step_returning_the_wrong_width_is_refused_composed() {
    wrong_width_forward(false);
}
