//! The char_lm demo at toy size: it trains, beats simple baselines, samples from its prime,
//! writes its files, and is deterministic for a seed.

use std::path::Path;

use clap::Parser;

use super::common::test_dir as out_dir;

/// Toy settings; `extra` flag/value pairs replace the defaults of the same flag.
fn cli(out: &Path, steps: usize, extra: &[(&str, &str)]) -> super::Cli {
    let steps = steps.to_string();
    let base = [
        ("--steps", steps.as_str()),
        ("--hidden", "48"),
        ("--embed", "16"),
        ("--batch", "16"),
        ("--bptt", "24"),
        ("--lr", "0.01"),
        ("--eval-every", "40"),
        ("--sample-every", "40"),
        ("--sample-len", "20"),
        ("--final-sample-len", "80"),
        ("--prime", "KING.\n"),
        ("--out", out.to_str().unwrap()),
    ];
    let mut args = vec!["char_lm", "--quiet"];
    for (flag, value) in base {
        if !extra.iter().any(|(f, _)| *f == flag) {
            args.extend([flag, value]);
        }
    }
    for (flag, value) in extra {
        args.extend([*flag, *value]);
    }
    super::Cli::parse_from(args)
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len() as f32
}

#[test]
fn trains_beats_baselines_and_writes_its_outputs() {
    let out = out_dir("demo_char_lm");
    let report = super::run(cli(&out, 120, &[])).expect("the demo runs");

    // The loss goes down: starting near ln(vocab) (uniform guessing), clearly lower at the end.
    assert_eq!(report.losses.len(), 120);
    let (first, last) = (mean(&report.losses[..5]), mean(&report.losses[110..]));
    assert!(last < first - 0.5, "loss {first} -> {last}");

    // Counting baselines: knowing the previous character helps, so bigram < unigram < uniform.
    let vocab = report.metrics["vocab_size"].as_u64().unwrap() as f64;
    assert!(report.bigram_bpc < report.unigram_bpc);
    assert!(report.unigram_bpc < vocab.log2());
    // Even briefly trained, the network has learned at least the character frequencies.
    assert!(
        report.final_bpc < report.unigram_bpc,
        "val {} bpc vs unigram {}",
        report.final_bpc,
        report.unigram_bpc
    );
    // Evaluated at steps 40, 80, 120; validation improves from the first evaluation.
    let steps: Vec<usize> = report.val_bpc.iter().map(|&(s, _)| s).collect();
    assert_eq!(steps, [40, 80, 120]);
    assert!(report.val_bpc[2].1 < report.val_bpc[0].1);

    // The sample continues the prime with the requested number of characters.
    assert!(report.sample.starts_with("KING.\n"));
    assert_eq!(report.sample.chars().count(), "KING.\n".len() + 80);

    // Files.
    for f in [
        "bpc.svg",
        "checkpoint.safetensors",
        "sample.txt",
        "metrics.json",
    ] {
        let meta = std::fs::metadata(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(meta.len() > 0, "{f} is empty");
    }
    assert_eq!(
        std::fs::read_to_string(out.join("sample.txt")).unwrap(),
        report.sample
    );
    let svg = std::fs::read_to_string(out.join("bpc.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("bigram baseline"));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap())
            .expect("metrics.json is JSON");
    for key in [
        "final_val_bpc",
        "unigram_bpc",
        "bigram_bpc",
        "val_bpc",
        "train_loss_nats",
        "vocab_size",
        "final_sample",
    ] {
        assert!(metrics.get(key).is_some(), "metrics.json lacks {key}");
    }
    assert_eq!(metrics["train_loss_nats"].as_array().unwrap().len(), 120);
    assert_eq!(metrics["final_val_bpc"].as_f64().unwrap(), report.final_bpc);

    // The checkpoint holds the three parts of the model, the head sized vocab × hidden.
    let file =
        unroll::rnn::io::read_safetensors::<f32>(&out.join("checkpoint.safetensors")).unwrap();
    let head = file
        .tensors
        .iter()
        .find(|(n, _)| n == "model/head.weight")
        .expect("the head is saved");
    assert_eq!(head.1.shape(), [vocab as usize, 48]);
    assert!(file.tensors.iter().any(|(n, _)| n == "model/embed.weight"));
    assert!(file
        .tensors
        .iter()
        .any(|(n, _)| n.starts_with("model/rnn.")));
}

#[test]
fn same_seed_same_numbers_other_cells_run() {
    let a = super::run(cli(&out_dir("demo_char_lm_a"), 8, &[("--cell", "gru")])).unwrap();
    let b = super::run(cli(&out_dir("demo_char_lm_b"), 8, &[("--cell", "gru")])).unwrap();
    assert_eq!(a.losses, b.losses);
    assert_eq!(a.sample, b.sample);
    let c = super::run(cli(
        &out_dir("demo_char_lm_c"),
        8,
        &[("--cell", "gru"), ("--seed", "1")],
    ))
    .unwrap();
    assert_ne!(a.losses, c.losses);
    let rnn = super::run(cli(&out_dir("demo_char_lm_rnn"), 8, &[("--cell", "rnn")])).unwrap();
    assert!(rnn.losses.iter().all(|l| l.is_finite()));
}

#[test]
fn bad_flags_are_errors() {
    let out = out_dir("demo_char_lm_bad");
    assert!(super::run(cli(&out, 5, &[("--temperature", "0")])).is_err());
    assert!(super::run(cli(&out, 5, &[("--prime", "\u{263a}")])).is_err());
    assert!(super::run(cli(&out, 5, &[("--val-fraction", "0.9")])).is_err());
}

/// `--inspect`: the heat map has a panel per unit and a cell per character; the saturation
/// plot has the LSTM's three sigmoid gates; fractions are fractions; bad units are refused.
#[test]
fn inspect_draws_units_over_text_and_gate_saturation() {
    let out = out_dir("demo_char_lm_inspect");
    let mut c = cli(&out, 30, &[("--inspect-len", "120")]);
    c.inspect = true;
    let report = super::run(c).expect("the demo runs");
    let found = report.inspection.expect("asked for");
    assert_eq!(found.passage_chars, 120);
    assert_eq!(found.units.len(), 4);
    assert!(found.units.iter().all(|&u| u < 48));
    let gates: Vec<&str> = found.saturation.iter().map(|s| s.0).collect();
    assert_eq!(gates, ["input_gate", "forget_gate", "output_gate"]);
    for (gate, low, high) in &found.saturation {
        assert!(
            (0.0..=1.0).contains(low) && (0.0..=1.0).contains(high),
            "{gate}"
        );
        assert!(low + high <= 1.0, "{gate}");
    }
    let svg = std::fs::read_to_string(out.join("activations.svg")).unwrap();
    assert!(svg.starts_with("<svg"));
    assert_eq!(
        svg.matches("<rect x=").count(),
        4 * 120,
        "a cell per character per unit"
    );
    assert_eq!(svg.matches("tanh(c_t), the cell state").count(), 4);
    let saturation = std::fs::read_to_string(out.join("saturation.svg")).unwrap();
    assert!(saturation.contains("forget_gate"));
    assert_eq!(
        report.metrics["inspection"]["units"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // Chosen units, a GRU (two gates), and a vanilla RNN (no gates: no saturation plot).
    let out = out_dir("demo_char_lm_inspect_gru");
    let mut c = cli(&out, 10, &[("--cell", "gru"), ("--units", "0,5")]);
    c.inspect = true;
    let found = super::run(c).unwrap().inspection.unwrap();
    assert_eq!(found.units, [0, 5]);
    assert_eq!(found.saturation.len(), 2);
    let out = out_dir("demo_char_lm_inspect_rnn");
    let mut c = cli(&out, 10, &[("--cell", "rnn")]);
    c.inspect = true;
    let found = super::run(c).unwrap().inspection.unwrap();
    assert!(found.saturation.is_empty());
    assert!(!out.join("saturation.svg").exists());
    // Refused before training starts: a unit past --hidden, --units without --inspect.
    let mut c = cli(&out, 10_000, &[("--units", "48")]);
    c.inspect = true;
    let err = super::run(c)
        .err()
        .expect("unit 48 of 48 is refused")
        .to_string();
    assert!(err.contains("unit 48 is not below --hidden 48"), "{err}");
    let err = super::run(cli(&out, 10_000, &[("--units", "1")]))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--units is for --inspect"), "{err}");
}
