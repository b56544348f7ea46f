//! The bptt_explorer demo at toy size: the tape is printed and drawn, per-step gradient norms
//! are measured for every cell, training runs learn, clipping keeps an exploding RNN finite,
//! and the files are written.

use std::path::Path;

use clap::Parser;

use super::common::test_dir as out_dir;

/// Toy settings; `extra` flag/value pairs replace the defaults of the same flag.
fn run(out: &Path, extra: &[(&str, &str)]) -> super::Report {
    let base = [
        ("--out", out.to_str().unwrap()),
        ("--lengths", "6,12"),
        ("--len", "12"),
        ("--steps", "150"),
        ("--hidden", "16"),
        ("--batch", "32"),
        ("--test-size", "256"),
        ("--clip-steps", "80"),
    ];
    let mut args = vec!["bptt_explorer", "--quiet"];
    for (flag, value) in base {
        if !extra.iter().any(|(f, _)| *f == flag) {
            args.extend([flag, value]);
        }
    }
    for (flag, value) in extra {
        args.extend([*flag, *value]);
    }
    super::run(super::Cli::parse_from(args)).expect("the demo runs")
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len() as f32
}

#[test]
fn explores_gradients_training_and_clipping() {
    let out = out_dir("demo_bptt_explorer");
    let report = run(&out, &[]);

    // The tape of 3 unrolled vanilla RNN steps: the recurrent weight is one leaf used by all
    // three steps, each step ends in a tanh.
    let dot = std::fs::read_to_string(out.join("tape.dot")).unwrap();
    assert!(dot.starts_with("digraph"));
    assert_eq!(dot.matches("weight_hh_l0").count(), 1, "one leaf for W_hh");
    assert_eq!(dot.matches(" tanh\\n").count(), 3, "one tanh per step");
    assert!(report.tape_nodes >= 3 * 4);

    // Two lengths × three cells, every training loss lower at the end than at the start.
    assert_eq!(report.runs.len(), 6);
    for r in &report.runs {
        let n = r.losses.len();
        assert_eq!(n, 150);
        let (first, last) = (mean(&r.losses[..15]), mean(&r.losses[n - 15..]));
        assert!(last < first, "{} T={}: {first} -> {last}", r.cell, r.len);
        assert!(r.test_mse.is_finite());
        assert_eq!(r.solved, r.test_mse < 0.05);
    }
    // On the shortest sequences some cell beats always answering 1.0 (MSE 1/6).
    let best = report
        .runs
        .iter()
        .filter(|r| r.len == 6)
        .map(|r| r.test_mse)
        .fold(f64::INFINITY, f64::min);
    assert!(best < 1.0 / 6.0, "best test MSE at T=6: {best}");

    // Per-step gradient norms at --len for each cell, before and after training.
    assert_eq!(report.grad_profiles.len(), 3);
    for p in &report.grad_profiles {
        assert_eq!(p.len, 12);
        for norms in [&p.at_init, &p.trained] {
            assert_eq!(norms.len(), 12);
            assert!(norms.iter().all(|g| g.is_finite() && *g > 0.0), "{norms:?}");
        }
    }
    // PyTorch's initialisation gives the vanilla RNN a recurrent matrix of spectral radius
    // ≈ 1/√3 < 1, and tanh' ≤ 1: the gradient reaching h_1 is far smaller than at h_T.
    let rnn = report
        .grad_profiles
        .iter()
        .find(|p| p.cell.to_string() == "rnn")
        .unwrap();
    assert!(super::GradProfile::ratio(&rnn.at_init) < 0.1);

    // Clipping: both runs from the same weights; the clipped one stays finite, and the
    // unclipped one saw gradients far beyond the clipping threshold of 1 (spectral radius 2).
    assert_eq!(report.clip_runs.len(), 2);
    let (free, clipped) = (&report.clip_runs[0], &report.clip_runs[1]);
    assert!(!free.clipped && clipped.clipped);
    assert_eq!(free.losses[0], clipped.losses[0], "same start");
    assert!(clipped.diverged_at.is_none());
    assert!(clipped.losses.iter().all(|l| l.is_finite()));
    assert!(free.max_grad_norm() > 10.0, "{}", free.max_grad_norm());

    // Files.
    for f in [
        "tape.dot",
        "grad_norms.svg",
        "training.svg",
        "clipping.svg",
        "clipping_grad_norm.svg",
        "metrics.json",
        "rnn_len12.safetensors",
        "lstm_len12.safetensors",
        "gru_len12.safetensors",
    ] {
        let meta = std::fs::metadata(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(meta.len() > 0, "{f} is empty");
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap())
            .expect("metrics.json is JSON");
    assert_eq!(metrics["runs"].as_array().unwrap().len(), 6);
    for run in metrics["runs"].as_array().unwrap() {
        for key in ["cell", "len", "test_mse", "solved"] {
            assert!(run.get(key).is_some(), "a run lacks {key}");
        }
    }
    let profiles = metrics["grad_norms"].as_array().unwrap();
    assert_eq!(profiles.len(), 3);
    assert!(profiles[0]["ratio_first_last_at_init"].is_number());
    assert_eq!(profiles[0]["at_init"].as_array().unwrap().len(), 12);
    assert_eq!(metrics["clipping"]["runs"].as_array().unwrap().len(), 2);
    assert!(metrics["tape"]["nodes"].is_number());
}

#[test]
fn deterministic_for_a_seed() {
    let small = [
        ("--cells", "lstm"),
        ("--lengths", "5"),
        ("--len", "5"),
        ("--steps", "20"),
        ("--clip-steps", "10"),
    ];
    let a = run(&out_dir("demo_bptt_a"), &small);
    let b = run(&out_dir("demo_bptt_b"), &small);
    assert_eq!(a.runs[0].losses, b.runs[0].losses);
    assert_eq!(a.grad_profiles[0].trained, b.grad_profiles[0].trained);
    assert_eq!(a.clip_runs[0].losses, b.clip_runs[0].losses);
}
