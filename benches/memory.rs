//! Peak memory of a training step (forward, `output.sum()`, backward) and of inference, as
//! growth of the peak resident set over the baseline once the layer and its input exist: the
//! measure of `shared/bench/torch_rnn_memory.py` (copied here as
//! `benches/torch_rnn_memory.py`), which this program runs beside its own rows when given a
//! Python with PyTorch, so that both come from one sitting.
//!
//! Each row runs in a process of its own (this program, re-started with `--one`), as the
//! PyTorch script does: a process's peak never comes down, and the buffer pool keeps what a
//! step freed for the next.
//!
//! ```text
//! cargo bench --bench memory                                      # every row, one thread
//! TORCH_PYTHON=/path/to/venv/bin/python cargo bench --bench memory  # and PyTorch's
//! cargo bench --bench memory -- --cells lstm --steps 200,800 --paths fused,sqrt
//! cargo bench --bench memory -- --one lstm 200 fused train 64,256,512  # one row
//! ```
//!
//! Rows are LSTM, GRU and RNN layers of batch 64, input 256, hidden 512, float32 (the issue's
//! configuration), one thread (as the script's `torch.set_num_threads(1)`; `--threads N` for
//! more, on both sides), three steps each.
//! Paths: `fused` (the built-in kernel), `compiled` (the traced step), `composed` (op by op on
//! the tape), and `sqrt` / `sqrt-compiled` / `sqrt-composed`: those paths with
//! `Recompute::Sqrt`. Each row also prints the
//! fastest of its steps; the recompute rows print their time as a ratio to the same path
//! without recompute, measured in this run.
//!
//! `--size B,I,H` changes the layer (`--size 1,2,3 --steps 100000` for the long-sequence
//! rows of the README). To see where a row's peak is, `MEMORY_DETAIL=1` prints the growth
//! after each forward of a `--one` row, and with it `MEMORY_FORWARD_ONLY=1` skips the
//! backwards.

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use unroll::autograd::Tape;
use unroll::rnn::{Cell, Layer, LayerConfig, Module, Recompute};
use unroll::tensor::{Rng, Tensor};

/// Batch, input and hidden size: the issue's configuration unless `--size` says otherwise.
const SIZE: &str = "64,256,512";
/// Steps per row: the script's three.
const REPEATS: usize = 3;

/// This process's peak resident set so far, in kB (`VmHWM`, what `ru_maxrss` reports).
fn peak_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// One row, in this process: prints `growth_mb fastest_step_ms`.
fn one<C: Cell<f32>>(layer: Layer<f32, C>, steps: usize, batch: usize, path: &str, train: bool) {
    layer.set_fused(!path.contains("composed") && !path.contains("compiled"));
    layer.set_compiled(path.contains("compiled"));
    let input = layer.config().input_size;
    let x =
        Tensor::<f32>::rand_normal(&[steps, batch, input], 0.0, 1.0, &mut Rng::seed_from_u64(1));
    let base = peak_kb();
    let mut fastest = f64::INFINITY;
    for _ in 0..REPEATS {
        let start = Instant::now();
        let tape = Tape::new();
        if train {
            for p in layer.params() {
                p.zero_grad();
            }
            let out = layer.forward(&tape.constant(x.clone()));
            if std::env::var_os("MEMORY_DETAIL").is_some() {
                eprintln!("after forward: {:.1} MB", (peak_kb() - base) as f64 / 1e3);
                if std::env::var_os("MEMORY_FORWARD_ONLY").is_some() {
                    continue;
                }
            }
            std::hint::black_box(out.output.sum_all().backward());
        } else {
            tape.no_grad(|| std::hint::black_box(layer.forward(&tape.constant(x.clone()))));
        }
        fastest = fastest.min(start.elapsed().as_secs_f64());
    }
    let growth = (peak_kb() - base) as f64 / 1e3;
    println!("{growth:.1} {:.1}", fastest * 1e3);
}

fn run_one(args: &[String]) {
    let [cell, steps, path, mode, size] = args else {
        panic!("--one CELL STEPS PATH train|infer B,I,H");
    };
    let steps: usize = steps.parse().expect("STEPS is a number");
    let [batch, input, hidden] = sizes(size);
    let mut config = LayerConfig::new(input, hidden);
    if path.starts_with("sqrt") {
        config = config.recompute(Recompute::Sqrt);
    }
    let rng = &mut Rng::seed_from_u64(0);
    let train = mode == "train";
    match cell.as_str() {
        "lstm" => one(Layer::lstm(config, rng), steps, batch, path, train),
        "gru" => one(Layer::gru(config, rng), steps, batch, path, train),
        "rnn" => one(Layer::rnn(config, rng), steps, batch, path, train),
        other => panic!("unknown cell {other}"),
    }
}

/// `B,I,H` as numbers.
fn sizes(size: &str) -> [usize; 3] {
    let n: Vec<usize> = size.split(',').map(|v| v.parse().expect("B,I,H")).collect();
    n.try_into().expect("three sizes: B,I,H")
}

/// Runs `program args`, returning the numbers its last line prints.
fn numbers(program: &mut Command) -> Option<Vec<f64>> {
    let out = program.output().ok()?;
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last()?;
    Some(
        line.split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter_map(|w| w.parse().ok())
            .collect(),
    )
}

/// The number after "growth over baseline" in what the PyTorch script prints.
fn growth_over_baseline(script: &mut Command) -> Option<f64> {
    let out = script.output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (_, rest) = text.split_once("growth over baseline ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The value of `--name a,b,c` in `args`, or `default`.
fn list(args: &[String], name: &str, default: &[&str]) -> Vec<String> {
    match args.iter().position(|a| a == name) {
        Some(i) => args[i + 1].split(',').map(str::to_string).collect(),
        None => default.iter().map(|s| s.to_string()).collect(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--one") {
        return run_one(&args[1..]);
    }
    let cells = list(&args, "--cells", &["lstm", "gru", "rnn"]);
    let steps = list(&args, "--steps", &["200", "800", "3200"]);
    let paths = list(
        &args,
        "--paths",
        &[
            "fused",
            "compiled",
            "composed",
            "sqrt",
            "sqrt-compiled",
            "sqrt-composed",
        ],
    );
    let torch = std::env::var("TORCH_PYTHON").ok();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_rnn_memory.py");
    let me = std::env::current_exe().expect("this program");
    // One thread unless told otherwise, as the script's `torch.set_num_threads(1)`.
    let threads = list(&args, "--threads", &["1"]).remove(0);
    let size = list(&args, "--size", &[SIZE]).join(",");
    let [batch, input, hidden] = sizes(&size);
    println!(
        "peak-RSS growth in MB (ratio to PyTorch), batch {batch}, input {input}, hidden \
         {hidden}, float32, {threads} thread(s); time: fastest of {REPEATS} steps"
    );
    for cell in &cells {
        for t in &steps {
            for mode in ["train", "infer"] {
                let torch_mb = torch.as_ref().and_then(|python| {
                    let mut cmd = Command::new(python);
                    cmd.env("TORCH_THREADS", &threads)
                        .args([script, cell, &batch.to_string(), t])
                        .args([&input.to_string(), &hidden.to_string(), mode]);
                    growth_over_baseline(&mut cmd)
                });
                let mut row = format!("{cell:>4} T={t:<5} {mode:<5}");
                if let Some(mb) = torch_mb {
                    row += &format!(" pytorch {mb:7.1}");
                }
                let mut times: HashMap<&str, f64> = HashMap::new();
                for path in &paths {
                    // Inference keeps no tape: recompute has nothing to do there.
                    if mode == "infer" && path.starts_with("sqrt") {
                        continue;
                    }
                    let mut cmd = Command::new(&me);
                    cmd.env("RAYON_NUM_THREADS", &threads)
                        .args(["--one", cell, t, path, mode, &size]);
                    let Some([mb, ms]) =
                        numbers(&mut cmd).and_then(|n| <[f64; 2]>::try_from(n).ok())
                    else {
                        row += &format!(" | {path} failed");
                        continue;
                    };
                    times.insert(path, ms);
                    row += &format!(" | {path} {mb:7.1}");
                    if let Some(base) = torch_mb {
                        row += &format!(" ({:.2}×)", mb / base);
                    }
                    let plain = match path.as_str() {
                        "sqrt" => times.get("fused"),
                        "sqrt-compiled" => times.get("compiled"),
                        "sqrt-composed" => times.get("composed"),
                        _ => None,
                    };
                    match plain {
                        Some(p) => row += &format!(" {ms:.1} ms = {:.2}× time", ms / p),
                        None => row += &format!(" {ms:.1} ms"),
                    }
                }
                println!("{row}");
            }
        }
    }
}
