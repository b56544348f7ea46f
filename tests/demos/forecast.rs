//! The forecasting demo, end to end on tiny settings, and its two fitted pieces: the AR
//! least squares and the scaler.

use std::path::{Path, PathBuf};

use super::{fit_ar, load, Cli, DataSet, Encoding, Report, Scaler};
use clap::Parser;
use unroll::tensor::Rng;

use super::common::test_dir as out_dir;

fn run(name: &str, flags: &[&str]) -> (Report, PathBuf) {
    let dir = out_dir(name);
    let mut args = vec![
        "forecast",
        "--quiet",
        "--out",
        dir.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(flags);
    let report = super::run(Cli::parse_from(args)).expect("the demo runs");
    assert_eq!(report.out_dir, dir);
    (report, dir)
}

/// Loss went down, scores are finite, and every output file is there and readable.
fn check(report: &Report, dir: &Path) {
    let loss = &report.history.train_loss;
    assert!(loss.len() >= 2 && loss.iter().all(|l| l.is_finite()));
    assert!(
        loss[loss.len() - 1] < 0.8 * loss[0],
        "training loss did not fall: {loss:?}"
    );
    assert!(report.history.best_epoch >= 1 && report.history.best_epoch <= loss.len());
    for key in ["model", "ar9_z", "ar9_x", "persistence"] {
        let e = report
            .get(key)
            .unwrap_or_else(|| panic!("no {key} forecaster"));
        assert!(
            e.one_step.rmse.is_finite() && e.one_step.rmse > 0.0,
            "{key}"
        );
        assert!(
            e.one_step.mae.is_finite() && e.one_step.mae <= e.one_step.rmse,
            "{key}"
        );
        assert_eq!(e.rmse_by_horizon.len(), 10, "{key}");
        assert!(e.rmse_by_horizon.iter().all(|r| r.is_finite()), "{key}");
    }
    for file in ["forecast.svg", "loss.svg", "horizons.svg", "metrics.json"] {
        let len = std::fs::metadata(dir.join(file)).map_or(0, |m| m.len());
        assert!(len > 0, "{file} is missing or empty");
    }
    assert!(std::fs::metadata(&report.checkpoint).is_ok_and(|m| m.len() > 0));

    let text = std::fs::read_to_string(dir.join("metrics.json")).unwrap();
    let metrics: serde_json::Value = serde_json::from_str(&text).expect("metrics.json is JSON");
    for key in [
        "data",
        "cell",
        "seed",
        "hyperparameters",
        "splits",
        "test",
        "rmse_by_horizon",
        "best_epoch",
        "train_loss",
        "val_loss",
        "wall_time_s",
    ] {
        assert!(metrics.get(key).is_some(), "metrics.json has no {key}");
    }
    for split in ["train", "validation", "test"] {
        assert!(metrics["splits"][split]["targets"].as_u64().unwrap() > 0);
    }
    for who in ["model", "persistence", "ar9_z"] {
        let rmse = metrics["test"][who]["rmse"].as_f64().unwrap();
        assert_eq!(rmse, report.get(who).unwrap().one_step.rmse);
    }
    assert_eq!(metrics["train_loss"].as_array().unwrap().len(), loss.len());
}

#[test]
fn sunspots_tiny_run() {
    let flags = [
        "--epochs",
        "15",
        "--hidden",
        "8",
        "--window",
        "10",
        "--batch-size",
        "32",
    ];
    let (report, dir) = run("forecast_sunspots", &flags);
    check(&report, &dir);
    // Sunspot numbers are never negative, and the √ encoding cannot forecast them so.
    let model = report.get("model").unwrap();
    assert!(model.one_step_path.iter().all(|&(_, p)| p >= 0.0));
    // The one-step path covers the test years 1956–2008.
    let years: Vec<f64> = model.one_step_path.iter().map(|p| p.0).collect();
    assert_eq!(
        (years[0], years[years.len() - 1], years.len()),
        (1956.0, 2008.0, 53)
    );
}

/// The same seed gives the same run, number for number; another seed another one.
#[test]
fn same_seed_same_numbers() {
    let flags = |seed: &'static str| {
        [
            "--epochs", "6", "--hidden", "8", "--window", "10", "--seed", seed,
        ]
    };
    let (a, _) = run("forecast_seed_a", &flags("3"));
    let (b, _) = run("forecast_seed_b", &flags("3"));
    let (c, _) = run("forecast_seed_c", &flags("4"));
    assert_eq!(a.history.train_loss, b.history.train_loss);
    let rmse = |r: &Report| r.get("model").unwrap().one_step.rmse;
    assert_eq!(rmse(&a), rmse(&b));
    assert_ne!(a.history.train_loss, c.history.train_loss);
}

#[test]
fn co2_tiny_run() {
    let flags = [
        "--data", "co2", "--cell", "gru", "--epochs", "20", "--hidden", "8",
    ];
    let (report, dir) = run(
        "forecast_co2",
        &[&flags[..], &["--window", "16", "--lr", "0.01"]].concat(),
    );
    check(&report, &dir);
    // Filled weeks are never scored: 1996–2001 has 313 weeks, some of them empty.
    let series = load(DataSet::Co2).unwrap();
    let test_weeks = series.val_end..series.value.len();
    let observed = test_weeks.filter(|&t| series.observed[t]).count();
    assert_eq!(report.get("model").unwrap().one_step_path.len(), observed);
}

#[test]
fn ar_fit_recovers_a_known_ar2() {
    // z_t = 0.5 + 0.6 z_{t−1} − 0.3 z_{t−2} + ε_t, ε ~ N(0, 0.1²): stationary (roots outside
    // the unit circle), so 20 000 steps pin the coefficients to about ±0.01.
    let mut rng = Rng::seed_from_u64(7);
    let mut z = vec![0.0, 0.0];
    for t in 2..20_000 {
        z.push(0.5 + 0.6 * z[t - 1] - 0.3 * z[t - 2] + 0.1 * rng.normal());
    }
    let beta = fit_ar(&z, 2).unwrap();
    for (got, want) in beta.iter().zip([0.5, 0.6, -0.3]) {
        assert!((got - want).abs() < 0.02, "{beta:?}");
    }
    // Asking for more lags than the process has: the extra ones come out near zero.
    let beta = fit_ar(&z, 4).unwrap();
    assert!(beta[3].abs() < 0.03 && beta[4].abs() < 0.03, "{beta:?}");
    // A noiseless sinusoid around 1 is an exact AR(2): z_t − 1 = 2cos ω (z_{t−1} − 1) − (z_{t−2} − 1),
    // so c = 2 − 2cos ω, φ₁ = 2cos ω, φ₂ = −1, solved to rounding error.
    let w: f64 = 0.3;
    let sine: Vec<f64> = (0..200).map(|t| 1.0 + (w * t as f64).sin()).collect();
    let beta = fit_ar(&sine, 2).unwrap();
    for (got, want) in beta.iter().zip([2.0 - 2.0 * w.cos(), 2.0 * w.cos(), -1.0]) {
        assert!((got - want).abs() < 1e-8, "{beta:?}");
    }
    // Too short a series is an error, not a panic.
    assert!(fit_ar(&[1.0, 2.0, 3.0], 9).is_err());
}

#[test]
fn scaler_sees_only_the_training_years() {
    let mut series = load(DataSet::Sunspots).unwrap();
    let fitted = Scaler::fit(&series, Encoding::Sqrt);
    // μ and σ of √x over 1700–1920, computed here from the file's values.
    let train: Vec<f64> = (0..series.value.len())
        .filter(|&i| series.time[i] <= 1920.0)
        .map(|i| series.value[i].sqrt())
        .collect();
    assert_eq!(train.len(), 221);
    let mean = train.iter().sum::<f64>() / 221.0;
    let std = (train.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 221.0).sqrt();
    assert!((fitted.mean - mean).abs() < 1e-12 && (fitted.std - std).abs() < 1e-12);
    // Changing validation and test years changes nothing.
    for v in &mut series.value[series.train_end..] {
        *v = 1000.0 * *v + 5.0;
    }
    assert_eq!(Scaler::fit(&series, Encoding::Sqrt), fitted);
    // Encoding standardises the training part: mean 0, variance 1.
    let z = fitted.encode(&series.value);
    let z_train = &z[..series.train_end];
    let z_mean = z_train.iter().sum::<f64>() / z_train.len() as f64;
    let z_var = z_train.iter().map(|v| (v - z_mean).powi(2)).sum::<f64>() / z_train.len() as f64;
    assert!(z_mean.abs() < 1e-9 && (z_var - 1.0).abs() < 1e-9);
}
