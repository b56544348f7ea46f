//! Runs `examples/custom_cell.rs` (the code `docs/custom-cell.md` quotes) and checks what the
//! guide says about it.

#[path = "../../examples/custom_cell.rs"]
#[allow(dead_code)]
mod custom_cell;

#[test]
fn the_custom_cell_tour_does_what_the_guide_says() {
    let report = custom_cell::run(60, false);
    // Both gradient checks passed inside `run` (it asserts); their worst errors are tiny.
    assert!(report.gradcheck_error < 1e-6, "{report:?}");
    // The hand-written backward is the composed cell's, up to rounding.
    assert!(report.fused_vs_composed < 1e-12, "{report:?}");
    // The compiled step is the composed one, up to rounding.
    assert!(report.compiled_vs_composed < 1e-12, "{report:?}");
    let (first, last) = (
        report.train_loss[0],
        *report.train_loss.last().expect("epochs"),
    );
    assert!(last < 0.5 * first, "training did not learn: {report:?}");
    assert!(
        report.test_rmse < report.persistence_rmse,
        "the trained cell should beat persistence: {report:?}"
    );
}

/// The example's output, run from its binary, which `cargo test` builds with the tests (in
/// `target/<profile>/examples/`, beside this test's `deps/`).
fn example_output(name: &str) -> String {
    let exe = std::env::current_exe().expect("this test's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let binary = dir.join("examples").join(name);
    let out = std::process::Command::new(&binary)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): `cargo test --workspace` builds the examples",
                binary.display()
            )
        });
    assert!(out.status.success(), "{name} failed: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The ```` ```text output ```` blocks of a guide: what it says a program prints.
fn output_blocks(markdown: &str) -> Vec<Vec<&str>> {
    let (mut blocks, mut current) = (vec![], None::<Vec<&str>>);
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```text output") => current = Some(vec![]),
            (Some(_), "```") => blocks.push(current.take().expect("open block")),
            (Some(block), _) => block.push(line),
            (None, _) => {}
        }
    }
    blocks
}

/// `line` with each number (a run of digits, with a sign, point or exponent) as `#`.
fn shape_of(line: &str) -> (String, Vec<f64>) {
    let (mut shape, mut numbers, mut token) = (String::new(), vec![], String::new());
    let flush = |token: &mut String, shape: &mut String, numbers: &mut Vec<f64>| {
        if !token.is_empty() {
            numbers.push(token.parse().unwrap_or(f64::NAN));
            shape.push('#');
            token.clear();
        }
    };
    let chars: Vec<char> = line.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let prev_is_word = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        let continues = !token.is_empty()
            && (c == '.' || c == 'e' || ((c == '-' || c == '+') && token.ends_with('e')));
        if c.is_ascii_digit() && (!token.is_empty() || !prev_is_word) || continues {
            token.push(c);
        } else {
            flush(&mut token, &mut shape, &mut numbers);
            shape.push(c);
        }
    }
    flush(&mut token, &mut shape, &mut numbers);
    (shape, numbers)
}

/// Whether `printed` is what the guide's `line` shows: the same text with `...` standing for
/// anything; numbers agree within 2% (or 1e-6 absolute), except on the `worst ...` lines of a
/// gradient check, whose rounding-level numbers move from CPU to CPU.
fn shows(line: &str, printed: &str) -> bool {
    let (guide_shape, guide_numbers) = shape_of(line);
    let (printed_shape, printed_numbers) = shape_of(printed);
    if !line.contains("...") {
        let diagnostics = line.trim_start().starts_with("worst");
        return guide_shape == printed_shape
            && (diagnostics
                || guide_numbers.iter().zip(&printed_numbers).all(|(a, b)| {
                    (a - b).abs() <= 1e-6_f64.max(0.02 * a.abs()) || (a.is_nan() && b.is_nan())
                }));
    }
    let mut rest = printed_shape.as_str();
    for piece in guide_shape.split("...") {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn the_guide_shows_what_the_example_prints() {
    let guide =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/custom-cell.md"))
            .expect("the guide");
    let printed = example_output("custom_cell");
    let printed: Vec<&str> = printed.lines().collect();
    let blocks = output_blocks(&guide);
    assert_eq!(blocks.len(), 4, "the guide's output blocks");
    for block in blocks {
        // Each line of the block is printed, in order; a line of `...` skips any lines.
        let mut at = 0;
        for line in block.iter().filter(|l| l.trim() != "...") {
            let found = printed[at..].iter().position(|p| shows(line, p));
            let Some(k) = found else {
                panic!(
                    "docs/custom-cell.md shows a line the example no longer prints:\n{line}\n\
                     it prints:\n{}",
                    printed.join("\n")
                );
            };
            at += k + 1;
        }
    }
}

#[test]
fn shapes_mask_numbers_only() {
    assert_eq!(
        shape_of("epoch  59: training MSE 0.0714, w_f_l0 1.1e-9"),
        (
            "epoch  #: training MSE #, w_f_l0 #".to_string(),
            vec![59.0, 0.0714, 1.1e-9]
        )
    );
    assert!(shows(
        "epoch  59: training MSE 0.0715",
        "epoch  59: training MSE 0.0714"
    ));
    assert!(!shows(
        "epoch  59: training MSE 0.0715",
        "epoch  59: training MSE 0.0815"
    ));
    assert!(!shows(
        "epoch  59: training MSE 0.0715",
        "epoch  59: test MSE 0.0715"
    ));
    assert!(shows("[\"a\", ..., \"z\"]", "[\"a\", \"b\", \"z\"]"));
}
