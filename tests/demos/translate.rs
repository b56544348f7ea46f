//! The translate demo: number words against hand-written English and German, the morpheme
//! segmentation, the data split, and a tiny end-to-end run (loss falls, files written, beam
//! width 1 decodes exactly as greedy).

use std::path::Path;

use super::model::{ModelConfig, Seq2Seq};
use super::numbers::{
    count_segmentations, english, german, german_morphemes, make_splits, segment_german, Example,
    MAX_NUMBER,
};
use clap::Parser;
use unroll::autograd::optim::{Adam, AdamConfig};
use unroll::rnn::{io, Module};
use unroll::tensor::Rng;

/// Known spellings, written by hand from English and German usage (not produced by the code).
const KNOWN: &[(u32, &str, &str)] = &[
    (0, "zero", "null"),
    (1, "one", "eins"),
    (7, "seven", "sieben"),
    (10, "ten", "zehn"),
    (11, "eleven", "elf"),
    (12, "twelve", "zwölf"),
    (13, "thirteen", "dreizehn"),
    (16, "sixteen", "sechzehn"),
    (17, "seventeen", "siebzehn"),
    (19, "nineteen", "neunzehn"),
    (20, "twenty", "zwanzig"),
    (21, "twenty-one", "einundzwanzig"),
    (30, "thirty", "dreißig"),
    (31, "thirty-one", "einunddreißig"),
    (44, "forty-four", "vierundvierzig"),
    (56, "fifty-six", "sechsundfünfzig"),
    (60, "sixty", "sechzig"),
    (66, "sixty-six", "sechsundsechzig"),
    (70, "seventy", "siebzig"),
    (77, "seventy-seven", "siebenundsiebzig"),
    (88, "eighty-eight", "achtundachtzig"),
    (99, "ninety-nine", "neunundneunzig"),
    (100, "one hundred", "einhundert"),
    (101, "one hundred one", "einhunderteins"),
    (110, "one hundred ten", "einhundertzehn"),
    (111, "one hundred eleven", "einhundertelf"),
    (116, "one hundred sixteen", "einhundertsechzehn"),
    (200, "two hundred", "zweihundert"),
    (321, "three hundred twenty-one", "dreihunderteinundzwanzig"),
    (606, "six hundred six", "sechshundertsechs"),
    (717, "seven hundred seventeen", "siebenhundertsiebzehn"),
    (1000, "one thousand", "eintausend"),
    (1001, "one thousand one", "eintausendeins"),
    (1200, "one thousand two hundred", "eintausendzweihundert"),
    (
        2024,
        "two thousand twenty-four",
        "zweitausendvierundzwanzig",
    ),
    (12_000, "twelve thousand", "zwölftausend"),
    (
        17_017,
        "seventeen thousand seventeen",
        "siebzehntausendsiebzehn",
    ),
    (21_000, "twenty-one thousand", "einundzwanzigtausend"),
    (
        30_303,
        "thirty thousand three hundred three",
        "dreißigtausenddreihundertdrei",
    ),
    (100_000, "one hundred thousand", "einhunderttausend"),
    (101_000, "one hundred one thousand", "einhunderteintausend"),
    (
        101_101,
        "one hundred one thousand one hundred one",
        "einhunderteintausendeinhunderteins",
    ),
    (200_000, "two hundred thousand", "zweihunderttausend"),
    (
        654_321,
        "six hundred fifty-four thousand three hundred twenty-one",
        "sechshundertvierundfünfzigtausenddreihunderteinundzwanzig",
    ),
    (
        999_999,
        "nine hundred ninety-nine thousand nine hundred ninety-nine",
        "neunhundertneunundneunzigtausendneunhundertneunundneunzig",
    ),
];

#[test]
fn english_words_match_known_spellings() {
    for &(n, en, _) in KNOWN {
        assert_eq!(english(n), en, "English for {n}");
    }
}

#[test]
fn german_words_match_known_spellings() {
    for &(n, _, de) in KNOWN {
        assert_eq!(german(n), de, "German for {n}");
    }
}

#[test]
fn german_morphemes_are_hand_checked_and_segment_back() {
    assert_eq!(
        german_morphemes(321),
        ["drei", "hundert", "ein", "und", "zwanzig"]
    );
    assert_eq!(german_morphemes(16), ["sech", "zehn"]);
    assert_eq!(german_morphemes(1001), ["ein", "tausend", "eins"]);
    assert_eq!(
        german_morphemes(101_000),
        ["ein", "hundert", "ein", "tausend"]
    );
    // Every number in a stride through 0..=999,999 (and all of 0..2000): the morphemes join
    // to the word, longest match gives them back, and no other segmentation exists.
    let numbers = (0..2000)
        .chain((0..=MAX_NUMBER).step_by(997))
        .chain([MAX_NUMBER]);
    for n in numbers {
        let morphemes = german_morphemes(n);
        let word = german(n);
        assert_eq!(morphemes.concat(), word);
        assert_eq!(
            segment_german(&word).as_deref(),
            Some(&morphemes[..]),
            "{word}"
        );
        assert_eq!(count_segmentations(&word), 1, "{word}");
    }
    assert_eq!(segment_german("dreihundertx"), None);
}

#[test]
fn splits_are_disjoint_cover_every_length_and_are_seeded() {
    let s = make_splits(3000, 10, 30, &mut Rng::seed_from_u64(5));
    let again = make_splits(3000, 10, 30, &mut Rng::seed_from_u64(5));
    let nums = |v: &[Example]| v.iter().map(|e| e.n).collect::<Vec<_>>();
    assert_eq!(nums(&s.train), nums(&again.train));
    assert_eq!(nums(&s.test), nums(&again.test));
    assert_eq!(s.train.len(), 3000);
    let train: std::collections::HashSet<u32> = nums(&s.train).into_iter().collect();
    let val: std::collections::HashSet<u32> = nums(&s.val).into_iter().collect();
    assert_eq!(train.len(), s.train.len(), "no number twice in training");
    for e in &s.test {
        assert!(
            !train.contains(&e.n) && !val.contains(&e.n),
            "{} leaked",
            e.n
        );
    }
    for e in &s.val {
        assert!(!train.contains(&e.n));
    }
    for len in 1..=9 {
        assert!(
            s.test.iter().any(|e| e.src.len() == len),
            "no test of length {len}"
        );
        assert!(
            s.train.iter().any(|e| e.src.len() == len),
            "no train of length {len}"
        );
    }
    // 28 numbers have one English word (0–20 and the tens); 7 are held out, the rest trained.
    assert_eq!(s.test.iter().filter(|e| e.src.len() == 1).count(), 7);
    assert_eq!(
        s.train.iter().filter(|e| e.src.len() == 1).count(),
        28 - 7 - 2
    );
}

fn tiny_cli(out: &Path) -> super::Cli {
    super::Cli::parse_from([
        "translate",
        "--quiet",
        "--seed",
        "3",
        "--out",
        out.to_str().unwrap(),
        "--hidden",
        "32",
        "--embed",
        "16",
        "--epochs",
        "3",
        "--batch",
        "32",
        "--train",
        "480",
        "--val-per-length",
        "2",
        "--test-per-length",
        "6",
        "--beam",
        "3",
        "--short-repeat",
        "1",
    ])
}

#[test]
fn tiny_run_learns_and_writes_its_files() {
    let out = super::common::test_dir("demo_translate");
    let report = super::run(tiny_cli(&out)).expect("the demo runs");

    for r in [
        &report.attention,
        report.baseline.as_ref().expect("baseline"),
    ] {
        let first = r.step_losses[..3].iter().sum::<f64>() / 3.0;
        let n = r.step_losses.len();
        let last = r.step_losses[n - 3..].iter().sum::<f64>() / 3.0;
        assert_eq!(n, 3 * 15, "3 epochs of 480/32 steps");
        eprintln!("{}: loss {first:.3} → {last:.3}", r.name);
        assert!(last < 0.8 * first, "{}: loss {first} → {last}", r.name);
        assert_eq!(r.loss_history.len(), 3);
        assert!((0.0..=1.0).contains(&r.greedy) && (0.0..=1.0).contains(&r.beam));
        assert_eq!(r.by_length.len(), 9);
    }
    for file in [
        "accuracy_by_length.svg",
        "loss.svg",
        "attention_1.svg",
        "attention_2.svg",
        "attention_3.svg",
        "checkpoint.safetensors",
        "baseline.safetensors",
        "metrics.json",
    ] {
        let path = out.join(file);
        assert!(
            std::fs::metadata(&path)
                .map(|m| m.len() > 0)
                .unwrap_or(false),
            "{} missing",
            path.display()
        );
    }
    let svg = std::fs::read_to_string(out.join("accuracy_by_length.svg")).unwrap();
    assert!(svg.contains("no attention"));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap())
            .expect("metrics.json parses");
    for key in [
        "hyperparameters",
        "split_sizes",
        "attention",
        "no_attention",
        "wall_seconds",
    ] {
        assert!(metrics.get(key).is_some(), "metrics.json lacks {key}");
    }
    for model in ["attention", "no_attention"] {
        for key in [
            "test_accuracy_greedy",
            "test_accuracy_beam",
            "test_accuracy_by_length",
            "loss_history",
        ] {
            assert!(metrics[model].get(key).is_some(), "{model} lacks {key}");
        }
    }
    assert_eq!(
        metrics["attention"]["test_accuracy_greedy"].as_f64(),
        Some(report.attention.greedy)
    );

    // The trained weights load into a fresh model, which decodes the test numbers the same
    // way with beam width 1 as greedily.
    let config = ModelConfig {
        cell: super::common::CellKind::Gru,
        embed: 16,
        hidden: 32,
        attention: false,
    };
    let baseline = Seq2Seq::new(config, &mut Rng::seed_from_u64(99));
    io::load_safetensors(&baseline, out.join("baseline.safetensors")).expect("loads");
    let attention = Seq2Seq::new(
        ModelConfig {
            attention: true,
            ..config
        },
        &mut Rng::seed_from_u64(99),
    );
    let mut opt = Adam::new(attention.params(), AdamConfig::default());
    let info = io::load_checkpoint(out.join("checkpoint.safetensors"), &attention, &mut opt)
        .expect("the checkpoint fits the model");
    assert_eq!(info.step, 45);
    assert!(attention.num_params() > baseline.num_params());

    let splits = make_splits(320, 2, 30, &mut Rng::seed_from_u64(3));
    let test: Vec<&Example> = splits.test.iter().collect();
    for model in [&attention, &baseline] {
        let greedy: Vec<Vec<usize>> = model.greedy(&test).into_iter().map(|d| d.ids).collect();
        assert_eq!(model.beam(&test, 1), greedy);
    }
}

#[test]
fn same_seed_same_run() {
    let dir = super::common::test_dir("demo_translate_seeds");
    let run = |name: &str| {
        let mut cli = tiny_cli(&dir.join(name));
        cli.no_baseline = true;
        cli.epochs = 1;
        super::run(cli).expect("the demo runs")
    };
    let (a, b) = (run("demo_translate_seed_a"), run("demo_translate_seed_b"));
    assert_eq!(a.attention.step_losses, b.attention.step_losses);
    assert_eq!(a.attention.by_length, b.attention.by_length);
    assert!(a.baseline.is_none());
}
