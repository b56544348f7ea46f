//! The probe: recorded states and gates against values worked out by hand, total gradients
//! against a hand-unrolled cell (the function `bptt_explorer` used to carry) and against finite
//! differences, the same numbers on the fused, compiled and composed paths (bidirectional,
//! stacked, variable lengths), and what it does when nothing watches.

use autograd::{Param, Tape, Var};
use rnn::{Cell, Gru, Layer, LayerConfig, Lstm, Module, Probe, Ran, Rnn, State};
use tensor::{Rng, Tensor};

use crate::common::{assert_close, uniform};
use crate::custom_cells::Mgu;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    Fused,
    Compiled,
    Composed,
}

const PATHS: [Path; 3] = [Path::Fused, Path::Compiled, Path::Composed];

fn set_path<C: Cell<f64>>(layer: &Layer<f64, C>, path: Path) {
    layer.set_fused(path == Path::Fused);
    layer.set_compiled(path != Path::Composed);
}

fn ran(path: Path) -> Ran {
    match path {
        Path::Fused => Ran::Fused,
        Path::Compiled => Ran::Compiled,
        Path::Composed => Ran::Composed,
    }
}

/// `|actual − expected| ≤ 1e-12 · max(1, max |expected|)`.
#[track_caller]
fn assert_near(what: &str, actual: &Tensor<f64>, expected: &Tensor<f64>) {
    let scale = expected.to_vec().iter().fold(1.0f64, |m, v| m.max(v.abs()));
    assert_close(what, actual, expected, 1e-12 * scale);
}

/// The loss every test differentiates: it reads every output (squared, weighted) and every
/// final state part, so gradients reach each step through all three routes.
fn loss_of(output: &Var<f64>, finals: &[Var<f64>], weights: &[Tensor<f64>]) -> Var<f64> {
    let mut loss = (output * &weights[0]).square().sum_all();
    for (part, w) in finals.iter().zip(&weights[1..]) {
        loss = loss + (part * w).sum_all();
    }
    loss
}

fn loss_weights(out_shape: &[usize], finals: &[&[usize]], rng: &mut Rng) -> Vec<Tensor<f64>> {
    let mut w = vec![uniform(out_shape, rng)];
    w.extend(finals.iter().map(|s| uniform(s, rng)));
    w
}

/// The hand-written reference: `cell` unrolled step by step from zeros, past each row's
/// length keeping its state (as the layer does), every state part kept with `retain_grad`;
/// returns ∂L/∂(part k leaving step t) as `[t][k]`. What `bptt_explorer` used to carry,
/// generalised to every part and to lengths.
fn hand_unrolled<C: Cell<f64>>(
    cell: &C,
    x: &Tensor<f64>,
    lengths: Option<&[usize]>,
    weights: &[Tensor<f64>],
) -> Vec<Vec<Tensor<f64>>> {
    let (steps, batch) = (x.shape()[0], x.shape()[1]);
    let tape = Tape::new();
    let mut state = cell.zero_state(&tape, batch);
    let mut kept = Vec::new();
    let mut outputs = Vec::new();
    for t in 0..steps {
        let next = cell.step(&tape.constant(x.select(0, t).contiguous()), &state);
        let valid: Vec<bool> = (0..batch)
            .map(|b| lengths.is_none_or(|l| t < l[b]))
            .collect();
        let valid = Tensor::from_vec(valid, &[batch, 1]);
        let zero = Tensor::zeros(&[]);
        let parts: Vec<Var<f64>> = (next.parts().iter().zip(state.parts()))
            .map(|(new, old)| Var::where_cond(&valid, new, &old).retain_grad())
            .collect();
        outputs.push(Var::where_cond(&valid, &parts[0], &zero));
        kept.push(parts.clone());
        state = C::State::from_parts(parts);
    }
    let output = Var::stack(&outputs.iter().collect::<Vec<_>>(), 0);
    let finals: Vec<Var<f64>> = state.parts().iter().map(|p| p.unsqueeze(0)).collect();
    let grads = loss_of(&output, &finals, weights).backward();
    for p in cell.params() {
        p.zero_grad();
    }
    kept.iter()
        .map(|parts| parts.iter().map(|p| grads.wrt(p).clone()).collect())
        .collect()
}

/// Runs `layer` watched, differentiates the loss, and returns the probe.
fn probed<C: Cell<f64>>(
    layer: &Layer<f64, C>,
    x: &Tensor<f64>,
    lengths: Option<&[usize]>,
    weights: &[Tensor<f64>],
) -> Probe<f64> {
    let tape = Tape::new();
    let probe = Probe::new();
    let out = probe.watch(|| layer.forward_with(&tape.constant(x.clone()), None, lengths));
    let grads = loss_of(&out.output, &out.state.parts(), weights).backward();
    probe.backward(&grads);
    for p in layer.params() {
        p.zero_grad();
    }
    probe
}

fn check_against_hand<C: Cell<f64>>(
    name: &str,
    layer: Layer<f64, C>,
    paths: &[Path],
    parts: usize,
) {
    let mut rng = Rng::seed_from_u64(11);
    let (steps, batch, input) = (7, 3, layer.cell(0, 0).input_size());
    let sizes = layer.cell(0, 0).state_sizes();
    let x = uniform(&[steps, batch, input], &mut rng);
    let finals: Vec<Vec<usize>> = sizes.iter().map(|&s| vec![1, batch, s]).collect();
    let finals: Vec<&[usize]> = finals.iter().map(Vec::as_slice).collect();
    let weights = loss_weights(&[steps, batch, sizes[0]], &finals, &mut rng);
    for lengths in [None, Some(&[7, 4, 1][..])] {
        let expected = hand_unrolled(layer.cell(0, 0), &x, lengths, &weights);
        for &path in paths {
            set_path(&layer, path);
            let rec = probed(&layer, &x, lengths, &weights).direction(0, 0);
            let what = format!("{name} {path:?} lengths {lengths:?}");
            assert_eq!(rec.ran, ran(path), "{what}");
            assert!(
                rec.max_diff < 1e-12,
                "{what}: re-run differs by {}",
                rec.max_diff
            );
            for k in 0..parts {
                let got = rec.grads(k).expect("after backward");
                assert_eq!(got.len(), steps);
                for (t, (g, want)) in got.iter().zip(&expected).enumerate() {
                    assert_near(&format!("{what}: ∂L/∂part{k} at t = {t}"), g, &want[k]);
                }
            }
        }
    }
}

#[test]
fn total_gradients_match_a_hand_unrolled_cell_on_every_path() {
    let rng = &mut Rng::seed_from_u64(1);
    check_against_hand("lstm", Lstm::lstm(LayerConfig::new(3, 4), rng), &PATHS, 2);
    check_against_hand("gru", Gru::gru(LayerConfig::new(3, 4), rng), &PATHS, 1);
    check_against_hand("rnn", Rnn::rnn(LayerConfig::new(3, 4), rng), &PATHS, 1);
    let mgu = Layer::new(LayerConfig::new(3, 4), rng, |input, rng| {
        Mgu::new(input, 4, rng)
    });
    check_against_hand("mgu", mgu, &[Path::Compiled, Path::Composed], 1);
}

/// ∂L/∂h_t by central differences: the hand unroll again, with `eps` added to one element of
/// `h_t` as it leaves step t.
#[test]
fn total_gradients_match_finite_differences() {
    let rng = &mut Rng::seed_from_u64(2);
    let layer: Lstm<f64> = Layer::lstm(LayerConfig::new(2, 3), rng);
    let (steps, batch) = (5, 2);
    let x = uniform(&[steps, batch, 2], rng);
    let weights = loss_weights(&[steps, batch, 3], &[&[1, batch, 3], &[1, batch, 3]], rng);
    let cell = layer.cell(0, 0);
    let loss_with = |t_hit: usize, k: usize, at: usize, eps: f64| -> f64 {
        let tape = Tape::new();
        tape.no_grad(|| {
            let mut state = cell.zero_state(&tape, batch);
            let mut outputs = Vec::new();
            for t in 0..steps {
                let mut parts = cell
                    .step(&tape.constant(x.select(0, t).contiguous()), &state)
                    .parts();
                if t == t_hit {
                    let mut bump = vec![0.0; batch * 3];
                    bump[at] = eps;
                    parts[k] = &parts[k] + &Tensor::from_vec(bump, &[batch, 3]);
                }
                outputs.push(parts[0].clone());
                state = <(Var<f64>, Var<f64>)>::from_parts(parts);
            }
            let output = Var::stack(&outputs.iter().collect::<Vec<_>>(), 0);
            let finals: Vec<Var<f64>> = state.parts().iter().map(|p| p.unsqueeze(0)).collect();
            loss_of(&output, &finals, &weights).item()
        })
    };
    let rec = probed(&layer, &x, None, &weights).direction(0, 0);
    let eps = 1e-6;
    for t in 0..steps {
        for k in 0..2 {
            let g = rec.grads(k).unwrap()[t].to_vec();
            for (at, &g_at) in g.iter().enumerate() {
                let fd = (loss_with(t, k, at, eps) - loss_with(t, k, at, -eps)) / (2.0 * eps);
                assert!(
                    (fd - g_at).abs() <= 1e-7 * fd.abs().max(1.0),
                    "∂L/∂part{k}[{at}] at t = {t}: probe {g_at}, finite differences {fd}"
                );
            }
        }
    }
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// `x W_ihᵀ + b_ih + h W_hhᵀ + b_hh`, rows of gate `gate` only: `[B, H]` as a flat vector.
fn pre_activation(
    layer_params: &[(String, Param<f64>)],
    x_t: &Tensor<f64>,
    h: &Tensor<f64>,
    gate: usize,
    hidden: usize,
) -> Vec<f64> {
    let get = |name: &str| {
        layer_params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.value())
            .unwrap()
    };
    let rows = |w: Tensor<f64>| w.narrow(0, gate * hidden, hidden).contiguous();
    let (w_ih, w_hh) = (rows(get("weight_ih_l0")), rows(get("weight_hh_l0")));
    let (b_ih, b_hh) = (rows(get("bias_ih_l0")), rows(get("bias_hh_l0")));
    let pre = x_t.matmul(&w_ih.t()) + h.matmul(&w_hh.t()) + &b_ih + &b_hh;
    pre.to_vec()
}

/// The recorded gates against the equations worked out from the weights and the recorded
/// previous state, on the fused path (where no gate is ever a tensor of its own) and the
/// others.
#[test]
fn recorded_gates_match_the_equations() {
    let rng = &mut Rng::seed_from_u64(3);
    let (steps, batch, hidden) = (5, 2, 3);
    let lstm: Lstm<f64> = Layer::lstm(LayerConfig::new(2, hidden), rng);
    let gru: Gru<f64> = Layer::gru(LayerConfig::new(2, hidden), rng);
    let x = uniform(&[steps, batch, 2], rng);
    for path in PATHS {
        set_path(&lstm, path);
        set_path(&gru, path);
        let probe = Probe::new();
        let tape = Tape::new();
        probe.watch(|| {
            lstm.forward(&tape.constant(x.clone()));
            gru.forward(&tape.constant(x.clone()));
        });
        let recs = probe.recordings();
        assert_eq!(recs.len(), 2, "one recording per call");
        let (l, g) = (&recs[0], &recs[1]);
        assert_eq!((l.call, g.call), (0, 1));
        assert_eq!(
            l.labels(),
            ["input_gate", "forget_gate", "cell_gate", "output_gate"]
        );
        assert_eq!(g.labels(), ["reset_gate", "update_gate", "new_gate"]);
        let (lp, gp) = (lstm.named_params(), gru.named_params());
        for t in 0..steps {
            let x_t = x.select(0, t).contiguous();
            let prev = |rec: &rnn::Recording<f64>| match t {
                0 => Tensor::zeros(&[batch, hidden]),
                _ => rec.state(0)[t - 1].clone(),
            };
            let forget: Vec<f64> = pre_activation(&lp, &x_t, &prev(l), 1, hidden)
                .into_iter()
                .map(sigmoid)
                .collect();
            let reset: Vec<f64> = pre_activation(&gp, &x_t, &prev(g), 0, hidden)
                .into_iter()
                .map(sigmoid)
                .collect();
            let what = format!("{path:?} t = {t}");
            assert_near(
                &format!("{what} forget gate"),
                l.labelled("forget_gate").unwrap()[t],
                &Tensor::from_vec(forget, &[batch, hidden]),
            );
            assert_near(
                &format!("{what} reset gate"),
                g.labelled("reset_gate").unwrap()[t],
                &Tensor::from_vec(reset, &[batch, hidden]),
            );
            // c_t = f ⊙ c_{t−1} + i ⊙ g, from the recorded gates and state.
            let c_prev = match t {
                0 => Tensor::zeros(&[batch, hidden]),
                _ => l.state(1)[t - 1].clone(),
            };
            let gate = |name| l.labelled(name).unwrap()[t].clone();
            let c_t = gate("forget_gate") * &c_prev + gate("input_gate") * gate("cell_gate");
            assert_near(&format!("{what} c_t"), l.state(1)[t], &c_t);
        }
    }
}

/// Stacked, bidirectional, variable lengths: every path gives the same recordings, the
/// reverse directions' initial-state gradients match finite differences of the layer, and
/// steps past a row's end are marked, not zeros.
#[test]
fn bidirectional_stacked_variable_lengths_agree_on_every_path() {
    let rng = &mut Rng::seed_from_u64(4);
    let (steps, batch, hidden) = (6, 3, 3);
    let lstm: Lstm<f64> = Layer::lstm(
        LayerConfig::new(2, hidden)
            .num_layers(2)
            .bidirectional(true),
        rng,
    );
    let x = uniform(&[steps, batch, 2], rng);
    let lengths = [6, 2, 4];
    let finals = [4, batch, hidden];
    let weights = loss_weights(&[steps, batch, 2 * hidden], &[&finals, &finals], rng);
    let runs: Vec<Vec<rnn::Recording<f64>>> = PATHS
        .iter()
        .map(|&path| {
            set_path(&lstm, path);
            probed(&lstm, &x, Some(&lengths), &weights).recordings()
        })
        .collect();
    let base = &runs[2]; // composed
    assert_eq!(base.len(), 4);
    for (path, recs) in PATHS.iter().zip(&runs) {
        for (rec, want) in recs.iter().zip(base) {
            let what = format!("{path:?} layer {} reverse {}", rec.layer, rec.reverse);
            assert_eq!((rec.layer, rec.reverse), (want.layer, want.reverse));
            assert!(rec.max_diff < 1e-12, "{what}: {}", rec.max_diff);
            for k in 0..2 {
                for t in 0..steps {
                    let (a, b) = (rec.grads(k).unwrap()[t], want.grads(k).unwrap()[t]);
                    assert_near(&format!("{what} ∂L/∂part{k} t = {t}"), a, b);
                    assert_near(
                        &format!("{what} part{k} t = {t}"),
                        rec.state(k)[t],
                        want.state(k)[t],
                    );
                }
                assert_near(&what, rec.init_grad(k).unwrap(), want.init_grad(k).unwrap());
            }
            for t in 0..steps {
                let a = rec.labelled("forget_gate").unwrap()[t];
                assert_near(
                    &format!("{what} forget t = {t}"),
                    a,
                    want.labelled("forget_gate").unwrap()[t],
                );
            }
        }
    }
    // Marks: row 1 ends after step 1.
    let rec = &base[1]; // layer 0 reverse
    assert!(rec.running(1, 1) && !rec.running(2, 1));
    let row = rec.row_grad_norms(0, 1);
    assert!(row[..2].iter().all(Option::is_some));
    assert!(row[2..].iter().all(Option::is_none), "{row:?}");
    assert_eq!(rec.unit_trace("forget_gate", 1, 0).unwrap()[3], None);
    assert!(rec.unit_trace("h", 1, 0).unwrap()[1].is_some());
    // The per-step norm is over running rows only.
    let g = rec.grads(0).unwrap()[3].to_vec();
    let running_rows = [0, 2];
    let want: f64 = running_rows
        .iter()
        .flat_map(|&b| g[b * hidden..(b + 1) * hidden].iter())
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt();
    assert!((rec.grad_norms(0)[3].unwrap() - want).abs() < 1e-15);

    // ∂L/∂h_0 of layer 1 reverse (init row 3), against central differences of the layer.
    set_path(&lstm, Path::Fused);
    let loss_at = |bump: f64, at: usize| {
        let tape = Tape::new();
        let mut h0 = vec![0.0; 4 * batch * hidden];
        h0[3 * batch * hidden + at] = bump;
        let init = (
            tape.constant(Tensor::from_vec(h0, &[4, batch, hidden])),
            tape.constant(Tensor::zeros(&[4, batch, hidden])),
        );
        let out = lstm.forward_with(&tape.constant(x.clone()), Some(&init), Some(&lengths));
        loss_of(&out.output, &out.state.parts(), &weights).item()
    };
    let dh0 = base[3].init_grad(0).unwrap().to_vec();
    for (at, &g) in dh0.iter().enumerate() {
        let fd = (loss_at(1e-6, at) - loss_at(-1e-6, at)) / 2e-6;
        assert!(
            (fd - g).abs() < 1e-7 * fd.abs().max(1.0),
            "∂L/∂h_0[{at}]: {g} vs {fd}"
        );
    }
}

/// A custom cell's own labels reach the probe, compiled or composed, equal to the equation.
#[test]
fn custom_cell_labels_are_recorded_compiled_and_composed() {
    let rng = &mut Rng::seed_from_u64(5);
    let layer = Layer::new(LayerConfig::new(2, 3), rng, |input, rng| {
        Mgu::<f64>::new(input, 3, rng)
    });
    let x = uniform(&[4, 2, 2], rng);
    let mut seen = Vec::new();
    for path in [Path::Compiled, Path::Composed] {
        set_path(&layer, path);
        let probe = Probe::new();
        let tape = Tape::new();
        probe.watch(|| layer.forward(&tape.constant(x.clone())));
        let rec = probe.direction(0, 0);
        assert_eq!(rec.ran, ran(path));
        assert_eq!(rec.labels(), ["forget"]);
        seen.push(rec);
    }
    let p = layer.named_params();
    let get = |n: &str| p.iter().find(|(k, _)| k == n).unwrap().1.value();
    for t in 0..4 {
        let h = match t {
            0 => Tensor::zeros(&[2, 3]),
            _ => seen[0].state(0)[t - 1].clone(),
        };
        let x_t = x.select(0, t).contiguous();
        let pre = x_t.matmul(&get("w_f_l0").t()) + h.matmul(&get("u_f_l0").t()) + get("b_f_l0");
        let f: Vec<f64> = pre.to_vec().into_iter().map(sigmoid).collect();
        let f = Tensor::from_vec(f, &[2, 3]);
        for rec in &seen {
            assert_near(
                &format!("{:?} t = {t}", rec.ran),
                rec.labelled("forget").unwrap()[t],
                &f,
            );
        }
    }
}

/// Gates pinned by their biases saturate as they must.
#[test]
fn saturation_counts_pinned_gates() {
    let rng = &mut Rng::seed_from_u64(6);
    let hidden = 4;
    let lstm: Lstm<f64> = Layer::lstm(LayerConfig::new(2, hidden), rng);
    let p = lstm.named_params();
    let bias = &p.iter().find(|(n, _)| n == "bias_ih_l0").unwrap().1;
    let mut b = vec![0.0; 4 * hidden];
    b[..hidden].fill(-100.0); // input gate shut
    b[hidden..2 * hidden].fill(100.0); // forget gate open
    bias.set_value(Tensor::from_vec(b, &[4 * hidden]));
    let x = uniform(&[5, 3, 2], rng);
    let probe = Probe::<f64>::new();
    let tape = Tape::new();
    probe.watch(|| lstm.forward_with(&tape.constant(x), None, Some(&[5, 5, 2])));
    let rec = probe.direction(0, 0);
    let i = rec.saturation("input_gate").unwrap();
    let f = rec.saturation("forget_gate").unwrap();
    assert_eq!((i.low, i.high), (1.0, 0.0));
    assert_eq!((f.low, f.high), (0.0, 1.0));
    // Running rows only: 5 + 5 + 2 steps, 4 units each.
    assert_eq!(f.count, 12 * hidden);
    let per_unit = rec.unit_saturation("forget_gate").unwrap();
    assert_eq!(per_unit.len(), hidden);
    assert!(per_unit.iter().all(|s| s.high == 1.0 && s.count == 12));
    assert!(rec.saturation("no_such_gate").is_none());
    // Without a backward, no gradients: norms are all None.
    assert!(rec.grads(0).is_none());
    assert!(rec.grad_norms(0).iter().all(Option::is_none));
}

/// Nothing is recorded outside `watch`, nested watches record into the inner probe, and an
/// inference forward records values but no gradients.
#[test]
fn only_watched_forwards_are_recorded() {
    let rng = &mut Rng::seed_from_u64(7);
    let gru: Gru<f64> = Layer::gru(LayerConfig::new(2, 3), rng);
    let x = uniform(&[3, 2, 2], rng);
    let (outer, inner) = (Probe::<f64>::new(), Probe::<f64>::new());
    let tape = Tape::new();
    gru.forward(&tape.constant(x.clone()));
    outer.watch(|| {
        gru.forward(&tape.constant(x.clone()));
        inner.watch(|| tape.no_grad(|| gru.forward(&tape.constant(x.clone()))));
    });
    gru.forward(&tape.constant(x.clone()));
    assert_eq!(outer.recordings().len(), 1);
    assert_eq!(inner.recordings().len(), 1);
    let rec = inner.direction(0, 0);
    assert_eq!(rec.steps(), 3);
    assert!(rec.labelled("update_gate").is_some());
    let out = tape.no_grad(|| gru.forward(&tape.constant(x.clone())));
    assert_near(
        "no-grad values",
        rec.state(0)[2],
        &out.output.value().select(0, 2).contiguous(),
    );
    let msg = crate::common::panic_message(|| inner.direction(1, 0));
    assert!(msg.contains("no recording of layer 1"), "{msg}");
    inner.clear();
    assert!(inner.recordings().is_empty());
}

/// The probe's numbers do not depend on the input's layout: batch-first and unbatched inputs
/// give the recordings of the seq-first batch they stand for.
#[test]
fn batch_first_and_unbatched_inputs_record_the_same_steps() {
    let rng = &mut Rng::seed_from_u64(8);
    let seq_first: Lstm<f64> = Layer::lstm(LayerConfig::new(2, 3), rng);
    let batch_first: Lstm<f64> = Layer::lstm(LayerConfig::new(2, 3).batch_first(true), rng);
    for ((_, to), (_, from)) in batch_first
        .named_params()
        .iter()
        .zip(seq_first.named_params())
    {
        to.set_value(from.value());
    }
    let x = uniform(&[5, 1, 2], rng); // [T, B = 1, I]
    let weights = loss_weights(&[5, 1, 3], &[&[1, 1, 3], &[1, 1, 3]], rng);
    let want = probed(&seq_first, &x, None, &weights).direction(0, 0);
    // Batch-first: the same loss on the transposed layout.
    let tape = Tape::new();
    let probe = Probe::new();
    let xt = x.permute(&[1, 0, 2]).contiguous();
    let out = probe.watch(|| batch_first.forward(&tape.constant(xt)));
    let y = out.output.transpose(0, 1);
    probe.backward(&loss_of(&y, &out.state.parts(), &weights).backward());
    // Unbatched: [T, I] in, states [layers, H].
    let tape_u = Tape::new();
    let probe_u = Probe::new();
    let xu = x.select(1, 0).contiguous();
    let out_u = probe_u.watch(|| seq_first.forward(&tape_u.constant(xu)));
    let finals: Vec<Var<f64>> = out_u.state.parts().iter().map(|p| p.unsqueeze(1)).collect();
    let y_u = out_u.output.unsqueeze(1);
    probe_u.backward(&loss_of(&y_u, &finals, &weights).backward());
    for rec in [probe.direction(0, 0), probe_u.direction(0, 0)] {
        for k in 0..2 {
            for t in 0..5 {
                let what = format!("part {k} t = {t}");
                assert_near(&what, rec.grads(k).unwrap()[t], want.grads(k).unwrap()[t]);
                assert_near(&what, rec.state(k)[t], want.state(k)[t]);
            }
        }
    }
}

/// With an initial state that is itself a leaf, the probe's ∂L/∂(initial state) is the tape's
/// own gradient of it; a layer called twice in one watch gives two recordings, each with the
/// gradient of its own call.
#[test]
fn initial_state_gradients_and_two_calls_match_the_tape() {
    let rng = &mut Rng::seed_from_u64(9);
    let gru: Gru<f64> = Layer::gru(LayerConfig::new(2, 3).bidirectional(true), rng);
    let (x1, x2) = (uniform(&[4, 2, 2], rng), uniform(&[3, 2, 2], rng));
    let tape = Tape::new();
    let h0 = tape.var(uniform(&[2, 2, 3], rng));
    let probe = Probe::new();
    let (a, b) = probe.watch(|| {
        let a = gru.forward_with(&tape.constant(x1.clone()), Some(&h0), None);
        let b = gru.forward_with(&tape.constant(x2.clone()), Some(&a.state), None);
        (a, b)
    });
    let loss = a.output.square().sum_all() + b.output.sum_all() + b.state.sum_all();
    let grads = loss.backward();
    probe.backward(&grads);
    let recs = probe.recordings();
    assert_eq!(recs.len(), 4, "two calls × two directions");
    assert_eq!(
        recs.iter().map(|r| r.call).collect::<Vec<_>>(),
        [0, 0, 1, 1]
    );
    // The first call's initial state is h0: its gradient, row by row (row = direction).
    let dh0 = grads.wrt(&h0);
    for rec in &recs[..2] {
        let dir = usize::from(rec.reverse);
        let want = dh0.select(0, dir).contiguous();
        assert_near(
            &format!("∂L/∂h0 dir {dir}"),
            rec.init_grad(0).unwrap(),
            &want,
        );
    }
    // The second call starts from the first's final state: the first call's last-step
    // gradient (forward direction) includes what the second call sent back, so it is not the
    // output's alone.
    let first_fwd = &recs[0];
    let d_last = first_fwd.grads(0).unwrap()[3].clone();
    let second_fwd = &recs[2];
    // What the second call sent back is its ∂L/∂(initial state), forward direction.
    let sent = second_fwd.init_grad(0).unwrap();
    let direct = (a.output.value().select(0, 3).narrow(1, 0, 3).contiguous()).mul_scalar(2.0);
    assert_near(
        "∂L/∂h_3 = output's + second call's",
        &d_last,
        &(direct + sent),
    );
}

/// Gradients from another tape are refused, and recordings of two tapes are each filled by
/// their own backward.
#[test]
fn gradients_go_to_the_recordings_of_their_own_tape() {
    let rng = &mut Rng::seed_from_u64(10);
    let rnn_layer: Rnn<f64> = Layer::rnn(LayerConfig::new(2, 3), rng);
    let x = uniform(&[3, 2, 2], rng);
    let (t1, t2, other) = (Tape::new(), Tape::new(), Tape::new());
    let probe = Probe::new();
    let (o1, o2) = probe.watch(|| {
        let o1 = rnn_layer.forward(&t1.constant(x.clone()));
        let o2 = rnn_layer.forward(&t2.constant(x.clone()));
        (o1, o2)
    });
    let stranger = other.var(Tensor::ones(&[1])).sum_all().backward();
    let msg = crate::common::panic_message(|| probe.backward(&stranger));
    assert!(msg.contains("come from another tape"), "{msg}");
    probe.backward(&o2.output.sum_all().backward());
    let recs = probe.recordings();
    assert!(
        recs[0].grads(0).is_none(),
        "t1's recording waits for t1's gradients"
    );
    assert!(recs[1].grads(0).is_some());
    probe.backward(&o1.output.square().sum_all().backward());
    assert!(probe.recordings()[0].grads(0).is_some());
}

/// f32 layers record too, and agree with the f64 probe of the same weights to f32 rounding.
#[test]
fn f32_recordings_agree_with_f64_ones() {
    let rng = &mut Rng::seed_from_u64(12);
    let lstm64: Lstm<f64> = Layer::lstm(LayerConfig::new(2, 3), rng);
    let lstm32: Lstm<f32> = Layer::lstm(LayerConfig::new(2, 3), rng);
    for ((_, to), (_, from)) in lstm32.named_params().iter().zip(lstm64.named_params()) {
        to.set_value(from.value().cast());
    }
    let x = uniform::<f64>(&[6, 2, 2], rng);
    let tape = Tape::new();
    let probe = Probe::<f32>::new();
    let out = probe.watch(|| lstm32.forward(&tape.constant(x.cast())));
    probe.backward(&out.output.square().sum_all().backward());
    let tape64 = Tape::new();
    let probe64 = Probe::new();
    let out64 = probe64.watch(|| lstm64.forward(&tape64.constant(x.clone())));
    probe64.backward(&out64.output.square().sum_all().backward());
    let (a, b) = (probe.direction(0, 0), probe64.direction(0, 0));
    assert!(a.max_diff < 1e-5, "{}", a.max_diff);
    for t in 0..6 {
        let got = a.grads(1).unwrap()[t].cast::<f64>();
        assert_close(&format!("∂L/∂c_{t}"), &got, b.grads(1).unwrap()[t], 1e-5);
        let f = a.labelled("forget_gate").unwrap()[t].cast::<f64>();
        assert_close(
            &format!("forget t = {t}"),
            &f,
            b.labelled("forget_gate").unwrap()[t],
            1e-6,
        );
    }
}
