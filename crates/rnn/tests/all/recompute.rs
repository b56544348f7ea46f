//! BPTT memory: the fused backward in chunks of steps, recompute (gradient checkpointing over
//! time), and long sequences.
//!
//! - Sequences longer than one chunk of the backward (`CHUNK_ROWS` = 1024 rows: 341 steps of
//!   3 rows, 64 of 16) give the composed path's numbers, with lengths that end inside a
//!   chunk, in both directions and stacked, on one thread and (batch split in halves) two.
//! - Recompute gives the same bits as keeping everything, for any number of segments
//!   (dividing the sequence or not, one per step, more than steps), on every cell, with
//!   lengths, bidirectional and stacked, on one and two threads, across chunk boundaries.

use autograd::{Tape, Var};
use rnn::{Cell, Layer, LayerConfig, Module, Recompute, State};
use tensor::{Rng, Tensor};

use crate::common::{on_threads, panic_message};
use crate::custom_cells::{param, Dropped, Mgu};

/// Output, final state, and the gradients of the input, the initial state and every
/// parameter, for a loss that weighs every output and final state at random.
fn run<C: Cell<f64>>(
    layer: &Layer<f64, C>,
    x: &Tensor<f64>,
    lengths: Option<&[usize]>,
) -> Vec<Tensor<f64>> {
    let mut rng = Rng::seed_from_u64(3);
    let cfg = layer.config();
    let rows = cfg.num_layers * cfg.num_directions();
    for p in layer.params() {
        p.zero_grad();
    }
    let tape = Tape::new();
    let xv = tape.var(x.clone());
    let init: Vec<Var<f64>> = layer.cell(0, 0).state_sizes()[..C::State::num_parts()]
        .iter()
        .map(|&size| {
            let shape = [rows, x.shape()[1], size];
            tape.var(Tensor::rand_normal(&shape, 0.0, 0.5, &mut rng))
        })
        .collect();
    let state = C::State::from_parts(init.clone());
    let out = layer.forward_with(&xv, Some(&state), lengths);
    let weights = Tensor::rand_normal(out.output.shape(), 0.0, 1.0, &mut rng);
    let mut loss = (&out.output * &weights).sum_all();
    for part in out.state.parts() {
        let w = Tensor::rand_normal(part.shape(), 0.0, 1.0, &mut rng);
        loss = loss + (&part * &w).sum_all();
    }
    let grads = loss.backward();
    let mut all = vec![out.output.value().clone()];
    all.extend(out.state.parts().iter().map(|p| p.value().clone()));
    all.push(grads.wrt(&xv).clone());
    all.extend(init.iter().map(|v| grads.wrt(v).clone()));
    all.extend(
        layer
            .params()
            .iter()
            .map(|p| p.grad().expect("every parameter is used")),
    );
    all
}

/// Which code runs a layer: the built-in cell's fused kernels, its compiled step, or the
/// composed tape.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    Fused,
    Compiled,
    Composed,
}

/// The two paths that run a whole sequence as one node per direction.
const WHOLE: [Path; 2] = [Path::Fused, Path::Compiled];

fn set_path<C: Cell<f64>>(layer: &Layer<f64, C>, path: Path) {
    layer.set_fused(path == Path::Fused);
    layer.set_compiled(path == Path::Compiled);
}

/// One of the built-in layers (0 RNN, 1 LSTM, 2 GRU) with `config`, the same weights for the
/// same seed, run by `f` on a path.
fn with_layer<R>(
    cell: usize,
    config: LayerConfig,
    f: impl FnOnce(&dyn Fn(Path) -> Vec<Tensor<f64>>) -> R,
    x: &Tensor<f64>,
    lengths: Option<&[usize]>,
) -> R {
    let rng = &mut Rng::seed_from_u64(17);
    match cell {
        0 => {
            let layer = Layer::rnn(config, rng);
            f(&|path| {
                set_path(&layer, path);
                run(&layer, x, lengths)
            })
        }
        1 => {
            let layer = Layer::lstm(config, rng);
            f(&|path| {
                set_path(&layer, path);
                run(&layer, x, lengths)
            })
        }
        _ => {
            let layer = Layer::gru(config, rng);
            f(&|path| {
                set_path(&layer, path);
                run(&layer, x, lengths)
            })
        }
    }
}

const CELLS: [&str; 3] = ["rnn", "lstm", "gru"];

/// Every built-in cell on each of `paths`: the path, the cell's number and its name.
fn cases(paths: &[Path]) -> Vec<(Path, usize, &'static str)> {
    (paths.iter())
        .flat_map(|&path| (0..CELLS.len()).map(move |cell| (path, cell, CELLS[cell])))
        .collect()
}

/// Every result of `a` equals `b`'s, value for value (`what` names the runs).
fn assert_same(a: &[Tensor<f64>], b: &[Tensor<f64>], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: how many results");
    for (k, (a, b)) in a.iter().zip(b).enumerate() {
        assert_eq!(a.to_vec(), b.to_vec(), "{what}: result {k}");
    }
}

/// Every result of `a` within 1e-11 of `b`'s, relative to the largest magnitude in `b`'s.
fn assert_close(a: &[Tensor<f64>], b: &[Tensor<f64>], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: how many results");
    for (k, (a, b)) in a.iter().zip(b).enumerate() {
        let diff = relative_diff(a, b);
        assert!(diff < 1e-11, "{what}: result {k} differs by {diff:e}");
    }
}

/// The largest difference between `a` and `b`, relative to the largest magnitude in `b`.
fn relative_diff(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_vec(), b.to_vec());
    let scale = b.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
    let worst = a
        .iter()
        .zip(&b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    worst / scale
}

/// 700 steps of 3 rows are three chunks of the backward (341, 341, then 18 steps): the fused
/// and the compiled paths, bidirectional and stacked, with sequences ending in the first and
/// the last, agree with the composed path (which has no chunks) on every value and gradient.
#[test]
fn sequences_longer_than_a_chunk_match_the_composed_path() {
    let (seq, batch) = (700, 3);
    let x = Tensor::rand_normal(&[seq, batch, 2], 0.0, 1.0, &mut Rng::seed_from_u64(1));
    let lengths = [700, 690, 300];
    for (cell, name) in CELLS.iter().enumerate() {
        let config = LayerConfig::new(2, 3).num_layers(2).bidirectional(true);
        with_layer(
            cell,
            config,
            |run| {
                let composed = run(Path::Composed);
                for path in WHOLE {
                    assert_close(
                        &run(path),
                        &composed,
                        &format!("{name} {path:?} against composed"),
                    );
                }
            },
            &x,
            Some(&lengths),
        );
    }
}

/// Recompute, every way of cutting the sequence, gives the bits of keeping everything, fused
/// and compiled: 37 steps of 3 rows (one chunk), bidirectional, stacked, with lengths.
#[test]
fn recompute_gives_the_same_bits_for_any_segments() {
    let (seq, batch) = (37, 3);
    let x = Tensor::rand_normal(&[seq, batch, 4], 0.0, 1.0, &mut Rng::seed_from_u64(2));
    let lengths = [37, 20, 1];
    let cuts = [
        Recompute::Segments(1),
        Recompute::Segments(2),
        Recompute::Segments(5),
        Recompute::Segments(36),
        Recompute::Segments(37),
        Recompute::Segments(1000),
        Recompute::Sqrt,
    ];
    for (path, cell, name) in cases(&WHOLE) {
        let base = LayerConfig::new(4, 5).num_layers(2).bidirectional(true);
        let kept = with_layer(cell, base.clone(), |run| run(path), &x, Some(&lengths));
        for cut in cuts {
            let config = base.clone().recompute(cut);
            let recomputed = with_layer(cell, config, |run| run(path), &x, Some(&lengths));
            assert_same(&recomputed, &kept, &format!("{name} {path:?} {cut:?}"));
        }
    }
}

/// Across the chunks of a long sequence (segments of 27 steps against chunks of 341, so
/// some segments straddle a chunk's end), and without lengths too, fused and compiled.
#[test]
fn recompute_gives_the_same_bits_across_chunks() {
    let (seq, batch) = (700, 3);
    let x = Tensor::rand_normal(&[seq, batch, 2], 0.0, 1.0, &mut Rng::seed_from_u64(4));
    for lengths in [None, Some(&[700, 683, 5][..])] {
        for (path, cell, name) in cases(&WHOLE) {
            let base = LayerConfig::new(2, 3).bidirectional(true);
            let kept = with_layer(cell, base.clone(), |run| run(path), &x, lengths);
            let config = base.recompute(Recompute::Sqrt);
            let recomputed = with_layer(cell, config, |run| run(path), &x, lengths);
            assert_same(&recomputed, &kept, &format!("{name} {path:?} {lengths:?}"));
        }
    }
}

/// On two threads a training batch of 16 rows or more runs in halves, one per thread, each
/// recomputing its own rows' segments: the same bits as one thread, with and without
/// recompute, over five chunks (300 steps of 16 rows, chunks of 64), fused and compiled;
/// and the composed path's numbers.
#[test]
fn recompute_on_two_threads_splits_the_batch_with_the_same_bits() {
    // 300 × 16 × 4·48 × (24 + 48) ≈ 6.6e7 multiply-adds: over the split's 2²³.
    let (seq, batch) = (300, 16);
    let x = Tensor::rand_normal(&[seq, batch, 24], 0.0, 1.0, &mut Rng::seed_from_u64(5));
    let lengths: Vec<usize> = (0..batch).map(|b| seq - 17 * b).collect();
    for (path, cell, name) in cases(&WHOLE) {
        let base = LayerConfig::new(24, 48);
        let runs: Vec<Vec<Tensor<f64>>> = [1, 2]
            .into_iter()
            .flat_map(|threads| {
                let (base, x, lengths) = (&base, &x, &lengths);
                [Recompute::Off, Recompute::Segments(7)].map(move |cut| {
                    on_threads(threads, move || {
                        let config = base.clone().recompute(cut);
                        with_layer(cell, config, |run| run(path), x, Some(lengths))
                    })
                })
            })
            .collect();
        for (i, other) in runs.iter().enumerate().skip(1) {
            assert_same(other, &runs[0], &format!("{name} {path:?} run {i}"));
        }
        let composed = with_layer(
            cell,
            base.clone(),
            |run| run(Path::Composed),
            &x,
            Some(&lengths),
        );
        assert_close(
            &runs[0],
            &composed,
            &format!("{name} {path:?} against composed"),
        );
    }
}

/// How many segments each setting cuts a sequence into.
#[test]
fn segments_are_counted_as_documented() {
    assert_eq!(Recompute::Off.segments(800), 1);
    assert_eq!(Recompute::Sqrt.segments(800), 29); // 28² = 784 < 800 ≤ 29²
    assert_eq!(Recompute::Sqrt.segment_len(800), 28);
    assert_eq!(Recompute::Sqrt.segments(1), 1);
    assert_eq!(
        Recompute::Segments(5).segments(3),
        3,
        "no more than the steps"
    );
    assert_eq!(Recompute::Segments(3).segment_len(10), 4);
    assert_eq!(Recompute::default(), Recompute::Off);
}

/// `Segments(0)` is refused when the layer is built; a config saved before the option
/// existed loads with it off.
#[test]
fn zero_segments_are_refused_and_old_configs_load_without_recompute() {
    let msg = panic_message(|| {
        let config = LayerConfig::new(2, 3).recompute(Recompute::Segments(0));
        Layer::<f64, _>::lstm(config, &mut Rng::seed_from_u64(0))
    });
    assert!(msg.contains("Recompute::Segments(0)"), "{msg}");
    let mut json = serde_json::to_value(LayerConfig::new(2, 3)).unwrap();
    json.as_object_mut().unwrap().remove("recompute");
    let old: LayerConfig = serde_json::from_value(json).unwrap();
    assert_eq!(old.recompute, Recompute::Off);
    let sqrt = LayerConfig::new(2, 3).recompute(Recompute::Sqrt);
    let back: LayerConfig = serde_json::from_str(&serde_json::to_string(&sqrt).unwrap()).unwrap();
    assert_eq!(back, sqrt);
}

/// The LSTM with `proj_size` (its own fused kernel) recomputes with the same bits as keeping
/// everything, for any segments, bidirectional and stacked, with lengths, across chunks (700
/// steps of 3 rows: chunks of 341); and agrees with its composed path.
#[test]
fn a_projected_lstm_recomputes_with_the_same_bits() {
    let lstm = |cut, fused: bool, x: &Tensor<f64>, lengths: &[usize]| {
        let config = LayerConfig::new(4, 6)
            .proj_size(3)
            .num_layers(2)
            .bidirectional(true)
            .recompute(cut);
        let layer = Layer::<f64, _>::lstm(config, &mut Rng::seed_from_u64(21));
        layer.set_fused(fused);
        layer.set_compiled(false);
        run(&layer, x, Some(lengths))
    };
    for (seq, lengths, cuts) in [
        (
            37,
            &[37, 20, 1][..],
            &[
                Recompute::Segments(2),
                Recompute::Segments(36),
                Recompute::Segments(1000),
                Recompute::Sqrt,
            ][..],
        ),
        (700, &[700, 683, 5][..], &[Recompute::Sqrt][..]),
    ] {
        let x = Tensor::rand_normal(&[seq, 3, 4], 0.0, 1.0, &mut Rng::seed_from_u64(seq as u64));
        let kept = lstm(Recompute::Off, true, &x, lengths);
        for &cut in cuts {
            assert_same(
                &lstm(cut, true, &x, lengths),
                &kept,
                &format!("{seq} steps, {cut:?}"),
            );
        }
        let composed = lstm(Recompute::Off, false, &x, lengths);
        assert_close(&kept, &composed, &format!("{seq} steps against composed"));
    }
}

/// A cell of your own, compiled, recomputes with the same bits as keeping everything, on one
/// thread and on two, where each step's rows are split between the threads (the MGU with 128
/// units has 13 slots of up to 128 columns, so blocks of 16 rows: 3 blocks of a batch of 48,
/// and 2 · 48 · 128² ≈ 1.6e6 multiply-adds per step, over the split's 2²⁰).
#[test]
fn a_compiled_cell_of_your_own_recomputes_with_the_same_bits() {
    let (seq, batch, input, hidden) = (30, 48, 16, 128);
    let x = Tensor::rand_normal(&[seq, batch, input], 0.0, 1.0, &mut Rng::seed_from_u64(11));
    let lengths: Vec<usize> = (0..batch).map(|b| seq - b % 7).collect();
    let mgu = |cut, threads| {
        on_threads(threads, || {
            let config = LayerConfig::new(input, hidden).recompute(cut);
            let layer = Layer::new(config, &mut Rng::seed_from_u64(1), |input, rng| {
                Mgu::<f64>::new(input, hidden, rng)
            });
            let paths = layer.explain();
            assert!(
                matches!(paths[0].2, rnn::Path::Compiled { .. }),
                "{paths:?}"
            );
            run(&layer, &x, Some(&lengths))
        })
    };
    let kept = mgu(Recompute::Off, 1);
    for (cut, threads) in [
        (Recompute::Segments(4), 1),
        (Recompute::Sqrt, 2),
        (Recompute::Off, 2),
    ] {
        assert_same(
            &mgu(cut, threads),
            &kept,
            &format!("{cut:?} on {threads} threads"),
        );
    }
}

/// On the composed path each segment is a checkpointed region of the tape: the same bits as
/// keeping every step, for the built-in cells and a cell of your own (MGU), any segments,
/// stacked, bidirectional, with lengths.
#[test]
fn recompute_on_the_composed_path_gives_the_same_bits() {
    let (seq, batch) = (13, 3);
    let x = Tensor::rand_normal(&[seq, batch, 4], 0.0, 1.0, &mut Rng::seed_from_u64(9));
    let lengths = [13, 6, 1];
    let cuts = [
        Recompute::Segments(2),
        Recompute::Segments(13),
        Recompute::Sqrt,
    ];
    for (cell, name) in CELLS.iter().enumerate() {
        let base = LayerConfig::new(4, 5).num_layers(2).bidirectional(true);
        let kept = with_layer(
            cell,
            base.clone(),
            |run| run(Path::Composed),
            &x,
            Some(&lengths),
        );
        for cut in cuts {
            let config = base.clone().recompute(cut);
            let recomputed =
                with_layer(cell, config, |run| run(Path::Composed), &x, Some(&lengths));
            assert_same(&recomputed, &kept, &format!("{name} {cut:?}"));
        }
    }
    let mgu = |cut| {
        let config = LayerConfig::new(4, 5).bidirectional(true).recompute(cut);
        let layer = Layer::new(config, &mut Rng::seed_from_u64(1), |input, rng| {
            Mgu::<f64>::new(input, 5, rng)
        });
        layer.set_compiled(false);
        run(&layer, &x, Some(&lengths))
    };
    let kept = mgu(Recompute::Off);
    assert_same(&mgu(Recompute::Segments(4)), &kept, "mgu");
}

/// A cell that draws in `step`: the re-run draws the forward's masks again (so the gradients
/// are the same bits), and leaves the generator where the backward found it (so the next
/// draw is the one a run without recompute would make).
#[test]
fn recompute_redraws_what_the_forward_drew_and_leaves_the_generator_alone() {
    let x = Tensor::rand_normal(&[9, 2, 3], 0.0, 1.0, &mut Rng::seed_from_u64(10));
    let train = |cut| {
        let config = LayerConfig::new(3, 4).recompute(cut);
        let layer = Layer::new(config, &mut Rng::seed_from_u64(2), |input, rng| Dropped {
            w: param("w", &[4, input], -0.5, 0.5, rng),
            u: param("u", &[4, 4], -0.5, 0.5, rng),
        });
        rnn::manual_seed(5);
        let mut all = run(&layer, &x, None);
        all.push(Tensor::from_vec(
            rnn::rng_state().map(|v| v as f64).to_vec(),
            &[4],
        ));
        all
    };
    let kept = train(Recompute::Off);
    let what = "Segments(3) (the last result: the generator)";
    assert_same(&train(Recompute::Segments(3)), &kept, what);
}

/// A forward and backward over 100,000 steps completes on every path (the fused kernel and
/// the compiled step, with and without recompute, and the composed tape of 2 million nodes, with
/// and without recompute): nothing in the forward, the backward or the tape's drop recurses
/// with the length.
#[test]
fn a_hundred_thousand_steps_train_on_every_path() {
    let steps = 100_000;
    let x = Tensor::<f32>::rand_normal(&[steps, 1, 2], 0.0, 1.0, &mut Rng::seed_from_u64(6));
    for (path, recompute) in [
        ("fused", Recompute::Off),
        ("fused", Recompute::Sqrt),
        ("compiled", Recompute::Off),
        ("compiled", Recompute::Sqrt),
        ("composed", Recompute::Off),
        ("composed", Recompute::Sqrt),
    ] {
        let config = LayerConfig::new(2, 3).recompute(recompute);
        let layer = Layer::<f32, _>::gru(config, &mut Rng::seed_from_u64(0));
        layer.set_fused(path == "fused");
        layer.set_compiled(path == "compiled");
        let tape = Tape::new();
        let xv = tape.var(x.clone());
        let out = layer.forward(&xv);
        let grads = out.output.sum_all().backward();
        let dx = grads.wrt(&xv);
        assert_eq!(dx.shape(), [steps, 1, 2], "{path}");
        assert!(dx.to_vec().iter().all(|v| v.is_finite()), "{path}");
        assert!(layer.params().iter().all(|p| p.grad().is_some()), "{path}");
    }
}

/// With `retain_graph`, a compiled layer's backward runs twice and gives the same gradients
/// both times, with and without recompute (the node keeps each chunk's input products for
/// the second run, instead of dropping them as the first goes by); without it, a second run
/// is refused.
#[test]
fn a_compiled_backward_runs_twice_with_retain_graph() {
    let x = Tensor::rand_normal(&[40, 3, 4], 0.0, 1.0, &mut Rng::seed_from_u64(12));
    for cut in [Recompute::Off, Recompute::Segments(3)] {
        let config = LayerConfig::new(4, 5).bidirectional(true).recompute(cut);
        let layer = Layer::new(config, &mut Rng::seed_from_u64(1), |input, rng| {
            Mgu::<f64>::new(input, 5, rng)
        });
        let paths = layer.explain();
        assert!(
            matches!(paths[0].2, rnn::Path::Compiled { .. }),
            "{paths:?}"
        );
        let tape = Tape::new();
        tape.set_retain_graph(true);
        let xv = tape.var(x.clone());
        let loss = layer.forward(&xv).output.square().sum_all();
        let wrt: Vec<Var<f64>> = std::iter::once(xv.clone())
            .chain(layer.params().iter().map(|p| tape.param(p)))
            .collect();
        let wrt: Vec<&Var<f64>> = wrt.iter().collect();
        let seed = [Tensor::from_vec(vec![1.0], &[])];
        let first = autograd::grad(&[&loss], &seed, &wrt);
        let second = autograd::grad(&[&loss], &seed, &wrt);
        assert!(first.iter().all(Option::is_some), "{cut:?}");
        for (k, (a, b)) in first.iter().zip(&second).enumerate() {
            let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
            assert_eq!(a.to_vec(), b.to_vec(), "{cut:?}: gradient {k}");
        }
        tape.set_retain_graph(false);
        let _ = autograd::grad(&[&loss], &seed, &wrt);
        let msg = panic_message(|| autograd::grad(&[&loss], &seed, &wrt));
        assert!(
            msg.contains("differentiated by an earlier backward"),
            "{cut:?}: {msg}"
        );
    }
}
