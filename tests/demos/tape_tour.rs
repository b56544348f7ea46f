//! The tape_tour demo: its flags, its picture (clusters per step, labelled gates, the inputs,
//! the initial state and the parameters), the probe's gradient norms and its gradient check.

use std::path::Path;

use clap::Parser;

use super::common::test_dir as out_dir;

fn run(out: &Path, extra: &[&str]) -> super::Report {
    let mut args = vec!["tape_tour", "--quiet", "--out", out.to_str().unwrap()];
    args.extend(extra);
    super::run(super::Cli::parse_from(args)).expect("the demo runs")
}

#[test]
fn a_three_step_lstm_is_drawn_by_step_with_its_gates_inputs_and_weights() {
    let out = out_dir("demo_tape_tour_lstm");
    let report = run(&out, &["--cell", "lstm", "--seed", "3"]);
    assert!(report.gradcheck_passed);
    assert_eq!(report.dot, out.join("lstm.dot"));
    let dot = std::fs::read_to_string(&report.dot).unwrap();
    for t in 0..3 {
        assert!(
            dot.contains(&format!("label=\"t = {t}\"")),
            "step {t}: {dot}"
        );
    }
    assert!(!dot.contains("label=\"t = 3\""));
    assert_eq!(
        dot.matches("subgraph cluster_0_").count(),
        3,
        "one cluster per step"
    );
    for gate in ["input_gate", "forget_gate", "cell_gate", "output_gate"] {
        assert_eq!(
            dot.matches(&format!(" {gate}\\n")).count(),
            3,
            "{gate} once per step"
        );
    }
    for leaf in ["#0 x\\n[3, 2, 3]", "h_0\\n[1, 2, 4]", "c_0\\n[1, 2, 4]"] {
        assert!(dot.contains(leaf), "missing {leaf}");
    }
    for param in ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"] {
        assert_eq!(
            dot.matches(&format!(" {param}\\n")).count(),
            1,
            "{param}: one leaf"
        );
    }
    // The probe: a norm per step, the last step's the direct read-out's.
    assert_eq!(report.grad_norms.len(), 3);
    assert!(report.grad_norms.iter().all(|n| n.is_finite() && *n > 0.0));
    assert!(!dot.contains("|v|"), "norms only on request");
}

#[test]
fn norms_and_steps_are_flags_and_every_cell_tours() {
    let out = out_dir("demo_tape_tour_flags");
    let report = run(&out, &["--cell", "gru", "--steps", "2", "--norms"]);
    assert!(report.gradcheck_passed);
    let dot = std::fs::read_to_string(&report.dot).unwrap();
    assert_eq!(dot.matches("subgraph cluster_0_").count(), 2);
    assert!(dot.contains("|v| ") && dot.contains("|g| "), "{dot}");
    let report = run(&out, &["--cell", "rnn"]);
    assert!(report.gradcheck_passed);
    assert!(out.join("rnn.dot").exists() && out.join("gru.dot").exists());
}

/// `--help` prints and exits before anything runs (it used to make a folder named `--help`),
/// and unknown flags and out-of-range values are refused.
#[test]
fn help_and_bad_flags_are_parsed_not_taken_for_a_folder() {
    let help = super::Cli::try_parse_from(["tape_tour", "--help"]).unwrap_err();
    assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
    let text = help.to_string();
    for flag in ["--seed", "--out", "--cell", "--steps", "--norms"] {
        assert!(text.contains(flag), "{flag} missing from --help:\n{text}");
    }
    assert!(super::Cli::try_parse_from(["tape_tour", "target/x"]).is_err());
    assert!(super::Cli::try_parse_from(["tape_tour", "--steps", "0"]).is_err());
    assert!(super::Cli::try_parse_from(["tape_tour", "--cell", "tcn"]).is_err());
    let cli = super::Cli::try_parse_from(["tape_tour"]).unwrap();
    assert_eq!(cli.common.out, None, "default: target/demos/tape_tour");
}
