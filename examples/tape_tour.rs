//! A tour of the tape: a recurrent layer unrolled for a few steps, every node it records, the
//! graph as a picture, and its gradients checked against finite differences.
//!
//! ```text
//! cargo run --release --example tape_tour
//! cargo run --release --example tape_tour -- --cell lstm --steps 3 --norms
//! cargo run --release --example tape_tour -- --help
//! ```
//!
//! The layer (`--cell`: rnn, lstm or gru; 4 hidden units, a batch of 2) runs op by op — the
//! fused kernel and the compiled program are switched off, so each step's ops are on the tape —
//! from an input `x` and an initial state `h_0` (and `c_0`) that are leaves of their own, to
//! `loss = Σ h_T ⊙ r` for a fixed random `r`. The tour
//!
//! 1. prints every node: its op, the name the cell gave it (`forget_gate`), its scope
//!    (`layer 0, t = 2`), its shape and inputs;
//! 2. writes the graph as Graphviz DOT, `<cell>.dot`: one cluster per time step, time flowing
//!    down the page, gates labelled, inputs blue, parameters orange (with `--norms`, every node
//!    also shows its value's and its gradient's norm). If Graphviz's `dot` is installed, it
//!    also writes `<cell>.svg`; otherwise it prints the command. (No pure-Rust layout crate
//!    draws clusters today: `layout-rs`, the one there is, lacks nested graphs.)
//! 3. probes ‖∂L/∂h_t‖ at every step with [`Probe`];
//! 4. checks the gradients of the weights, the input and the initial state against central
//!    finite differences.
//!
//! Outputs in `--out` (default `target/demos/tape_tour/`).

#![cfg_attr(test, allow(dead_code))] // `main` and what only it uses

mod common;

use std::path::PathBuf;
use std::process::Command;

use clap::Parser;
use common::{CellKind, CommonArgs, DemoResult};
use unroll::autograd::{GradCheck, Tape, Var};
use unroll::rnn::{Cell, Layer, LayerConfig, Module, Probe, State};
use unroll::tensor::{Rng, Tensor};

const BATCH: usize = 2;
const INPUT: usize = 3;
const HIDDEN: usize = 4;

/// A recurrent layer unrolled on the tape: its nodes, its picture, its gradients checked.
#[derive(Parser, Debug, Clone)]
#[command(name = "tape_tour")]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The cell to unroll.
    #[arg(long, value_enum, default_value_t = CellKind::Rnn)]
    pub cell: CellKind,
    /// Time steps to unroll.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=12))]
    pub steps: u64,
    /// Show each node's value and gradient norms in the picture.
    #[arg(long)]
    pub norms: bool,
}

/// What the tour found, for its test.
#[derive(Debug)]
pub struct Report {
    pub nodes: usize,
    pub dot: PathBuf,
    pub svg: Option<PathBuf>,
    /// ‖∂L/∂h_t‖ for each step.
    pub grad_norms: Vec<f64>,
    pub gradcheck_passed: bool,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

pub fn run(cli: Cli) -> DemoResult<Report> {
    let mut rng = Rng::seed_from_u64(cli.common.seed);
    let config = LayerConfig::new(INPUT, HIDDEN);
    match cli.cell {
        CellKind::Rnn => tour(&cli, Layer::rnn(config, &mut rng), &mut rng),
        CellKind::Lstm => tour(&cli, Layer::lstm(config, &mut rng), &mut rng),
        CellKind::Gru => tour(&cli, Layer::gru(config, &mut rng), &mut rng),
    }
}

fn tour<C: Cell<f64>>(cli: &Cli, layer: Layer<f64, C>, rng: &mut Rng) -> DemoResult<Report> {
    let out_dir = cli.common.out_dir("tape_tour")?;
    let steps = cli.steps as usize;
    layer.set_fused(false);
    layer.set_compiled(false);
    let parts = C::State::num_parts();
    let x = Tensor::<f64>::rand_normal(&[steps, BATCH, INPUT], 0.0, 1.0, rng);
    let init: Vec<Tensor<f64>> = (0..parts)
        .map(|_| Tensor::rand_uniform(&[1, BATCH, HIDDEN], -0.5, 0.5, rng))
        .collect();
    let r = Tensor::<f64>::rand_uniform(&[1, BATCH, HIDDEN], -1.0, 1.0, rng);

    // The unrolled layer, as a function of its input and initial state: loss = Σ h_T ⊙ r.
    let unrolled = |x: &Var<f64>, init: &[Var<f64>]| {
        let init = C::State::from_parts(init.to_vec());
        let out = layer.forward_with(x, Some(&init), None);
        (out.h_n() * &r).sum_all()
    };

    let tape = Tape::new();
    tape.set_inspect(cli.norms);
    let x_var = tape.var(x.clone()).label("x");
    let names = ["h_0", "c_0"];
    let init_vars: Vec<Var<f64>> = (init.iter().zip(names))
        .map(|(v, name)| tape.var(v.clone()).label(name))
        .collect();
    let loss = unrolled(&x_var, &init_vars);
    println!(
        "{} over {steps} steps: loss = {:.6}\n",
        cli.cell,
        loss.item()
    );
    println!("{} nodes on the tape:", tape.len());
    println!(
        "  {:<4} {:<13} {:<14} {:<16} {:<10} inputs",
        "#", "op", "name", "scope", "shape"
    );
    for n in tape.nodes() {
        let name = (n.param_name.clone())
            .or(n.label.map(str::to_string))
            .unwrap_or_default();
        let scope = n.scope.as_ref().map(|s| s.to_string()).unwrap_or_default();
        println!(
            "  {:<4} {:<13} {:<14} {:<16} {:<10} {:?}",
            n.index,
            n.op,
            name,
            scope,
            format!("{:?}", n.shape),
            n.inputs
        );
    }

    let grads = loss.backward();
    // The probe, on a forward of its own (a watched forward adds a few nodes to its tape).
    let probe = Probe::new();
    let tape_p = Tape::new();
    let watched = probe.watch(|| {
        let init: Vec<Var<f64>> = init.iter().map(|v| tape_p.constant(v.clone())).collect();
        unrolled(&tape_p.constant(x.clone()), &init)
    });
    probe.backward(&watched.backward());
    let grad_norms: Vec<f64> = (probe.direction(0, 0).grad_norms(0).into_iter())
        .map(|n| n.expect("every row runs every step"))
        .collect();
    println!("\n‖∂L/∂h_t‖ by step (the probe):");
    for (t, n) in grad_norms.iter().enumerate() {
        println!("  t = {t}: {n:.4e}");
    }
    let w_hh = &layer.named_params()[1];
    println!(
        "\ndL/d{} =\n{}",
        w_hh.0,
        w_hh.1.grad().expect("on the loss's path")
    );
    println!("dL/dx at t = 0 =\n{}", grads.wrt(&x_var).select(0, 0));

    let dot = out_dir.join(format!("{}.dot", cli.cell));
    std::fs::write(&dot, tape.to_dot())
        .map_err(|e| format!("cannot write {}: {e}", dot.display()))?;
    println!("\nwrote {}", dot.display());
    let svg = draw(&dot)?;
    match &svg {
        Some(svg) => println!("wrote {} (Graphviz)", svg.display()),
        None => println!(
            "draw it with Graphviz: dot -Tsvg {} -o {}",
            dot.display(),
            dot.with_extension("svg").display()
        ),
    }

    for p in layer.params() {
        p.zero_grad();
    }
    let mut inputs = vec![x];
    inputs.extend(init);
    let report = GradCheck::new(|v| unrolled(&v[0], &v[1..]))
        .inputs(&inputs)
        .params(&layer.params())
        .run();
    println!("\n{report}");
    Ok(Report {
        nodes: tape.len(),
        dot,
        svg,
        grad_norms,
        gradcheck_passed: report.passed(),
    })
}

/// Runs Graphviz's `dot` on `path` if it is installed: the SVG's path, or `None`.
fn draw(path: &std::path::Path) -> DemoResult<Option<PathBuf>> {
    let svg = path.with_extension("svg");
    let ran = Command::new("dot")
        .arg("-Tsvg")
        .arg(path)
        .arg("-o")
        .arg(&svg)
        .output();
    match ran {
        Ok(out) if out.status.success() => Ok(Some(svg)),
        Ok(out) => Err(format!(
            "dot failed on {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        )
        .into()),
        Err(_) => Ok(None),
    }
}

/// This demo end to end on tiny settings, run by `cargo test` (the example is built once, as
/// its own test binary).
#[cfg(test)]
#[path = "../tests/demos/tape_tour.rs"]
mod tests;
