//! A character-level language model on five Shakespeare plays: min-char-rnn, done properly.
//!
//! ```text
//! cargo run --release --example char_lm                       # LSTM, defaults below
//! cargo run --release --example char_lm -- --cell gru --temperature 0.6 --prime "KING."
//! cargo run --release --example char_lm -- --inspect          # and look inside it after
//! cargo run --release --example char_lm -- --help
//! ```
//!
//! Embedding → LSTM (or `--cell rnn|gru`) → Linear → cross-entropy over the next character,
//! trained with truncated backpropagation through time: the training text is cut into
//! `--batch` parallel streams, each read in chunks of `--bptt` characters; the hidden state
//! is carried from one chunk to the next but *detached* (a fresh tape per chunk, the state
//! entering it as a constant), so gradients stop at chunk boundaries while the memory does
//! not. Gradients are clipped to a global norm of `--clip` (as char-rnn's 5), Adam's learning
//! rate follows a cosine from `--lr` down to a tenth of it. Text is sampled with a
//! temperature from [`Layer::stream`], one character at a time in O(1) memory.
//!
//! The score is validation bits per character (cross-entropy in nats / ln 2), printed next to
//! two count-based baselines fitted on the training text: a unigram and a bigram model, both
//! add-one (Laplace) smoothed, scored on exactly the validation positions the network
//! predicts.
//!
//! Outputs in `--out` (default `target/demos/char_lm/`): `bpc.svg` (training loss and
//! validation bpc against the step, with the baselines as flat lines), `checkpoint.safetensors`
//! (model, Adam state, config with the vocabulary), `sample.txt` (the final sample) and
//! `metrics.json`. With `--inspect`, after training the model reads the first `--inspect-len`
//! validation characters inside a [`Probe`], which also writes
//! - `activations.svg`: the passage once per chosen unit of the top layer (`--units`, or the
//!   four whose `tanh(c_t)` swings most widely and slowly), each character coloured by the
//!   unit's value after reading it, as in LSTMVis and Karpathy et al. 2015. With the defaults,
//!   unit 227 of the trained LSTM climbs from blue to red along each line and resets at the
//!   line break: a line-position cell nobody asked for.
//! - `saturation.svg`: per unit, the fraction of the passage where each sigmoid gate is below
//!   0.1 against the fraction where it is above 0.9 (their figure 4); the LSTM's input gate is
//!   above 0.9 55% of the time and below 0.1 9%, the forget gate 41% and 21%.
//!
//! Measured on this project's machine (2-core AMD EPYC, nothing else running), defaults — LSTM, hidden 256, embedding 64, 353,161
//! parameters, 2500 steps of 32 streams × 64 characters = 5.1M characters ≈ 7.8 passes over
//! the 653,081 training characters — `cargo run --release --example char_lm` takes 1 min 11 s
//! (71 s of training, evaluations included) and prints, besides samples every 500 steps:
//!
//! ```text
//! 653081 training / 72482 validation characters (last 10% of each play), vocabulary 73
//! baselines on validation: uniform 6.190, unigram 4.769, bigram 3.556 bits/char
//! step   250  train 2.686 bpc  val 2.651 bpc  (bigram 3.556)  7s
//! step   500  train 2.402 bpc  val 2.396 bpc  (bigram 3.556)  14s
//! step  1000  train 2.180 bpc  val 2.208 bpc  (bigram 3.556)  28s
//! step  1500  train 2.051 bpc  val 2.140 bpc  (bigram 3.556)  42s
//! step  2000  train 2.007 bpc  val 2.089 bpc  (bigram 3.556)  57s
//! step  2500  train 1.950 bpc  val 2.072 bpc  (bigram 3.556)  71s
//! --- final sample (temperature 0.8) ---
//! ROMEO.
//! Good sole, the matter, could not better report
//! That I must charmity, dead; I present
//! Of begge thee told our seen read laws thee,
//! That he be
//! faith.
//! ...
//! | model                   | validation bits/char |
//! |-------------------------|----------------------|
//! | uniform                 |                6.190 |
//! | unigram (add-one)       |                4.769 |
//! | bigram (add-one)        |                3.556 |
//! | lstm 1x256 (2500 steps) |                2.072 |
//! ```
//!
//! The network is below the bigram by the first evaluation (step 250, 7 s) and ends 1.5 bits
//! per character below it; training and validation stay within 0.13 bpc of each other and
//! validation is still falling at the end, so this budget under-fits: `--steps` buys more.
//!
//! Decisions:
//! - Validation = the last 10% of each play (cut at the first line break after 90%), so every
//!   play, with its own names and style, is represented on both sides; training = the first
//!   90% of each. The vocabulary is the training text's characters, plus `¿` for unknown
//!   characters only if the validation text has one the training text lacks (with the
//!   default split none is needed: 73 characters).
//! - Embedding (64) rather than one-hot input: one-hot × W_ih is a row lookup, so an
//!   embedding followed by W_ih is the same model with that 73 × 1024 matrix factorised
//!   through 64 dimensions. Because the embedding lives on each chunk's tape,
//!   the TBPTT loop is written out (a dozen lines) rather than using `Layer::tbptt`, which
//!   takes the input as one float tensor and would need the whole text one-hot encoded.
//! - The bigram baseline sees the previous character only; the network's context is
//!   unbounded in principle, bounded by `--bptt` for credit assignment.
//! - Validation streams start from a zero state, as training streams do at each epoch: the
//!   first few characters of each of the 32 validation streams are predicted cold.

#![cfg_attr(test, allow(dead_code))] // `main` and what only it uses

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use clap::Parser;
use common::{Axes, CellKind, CommonArgs, DemoResult, Recurrent, Series};
use serde_json::json;
use unroll::autograd::optim::schedule::{Cosine, LrSchedule};
use unroll::autograd::optim::{Adam, AdamConfig, Optimizer};
use unroll::autograd::{clip_grad_norm, Param, Tape, Var};
use unroll::rnn::{
    cross_entropy, cross_entropy_with, prefixed, Cell, ClassLossOptions, Embedding, Layer,
    LayerConfig, Linear, Module, Probe, Reduction,
};
use unroll::tensor::{Rng, Tensor};

const PLAYS: [&str; 5] = ["hamlet", "lear", "macbeth", "othello", "romeo_and_juliet"];
const UNKNOWN: char = '¿';

/// Train a character-level language model on Shakespeare with truncated BPTT and sample
/// from it.
#[derive(Parser, Debug, Clone)]
#[command(name = "char_lm")]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The recurrent cell.
    #[arg(long, value_enum, default_value_t = CellKind::Lstm)]
    pub cell: CellKind,
    /// Hidden units per layer.
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    /// Stacked recurrent layers.
    #[arg(long, default_value_t = 1)]
    pub layers: usize,
    /// Size of the character embedding.
    #[arg(long, default_value_t = 64)]
    pub embed: usize,
    /// Parallel streams through the text (the batch).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Truncated-BPTT chunk length k: characters per training step and per stream.
    #[arg(long, default_value_t = 64)]
    pub bptt: usize,
    /// Training steps (one chunk of every stream each).
    #[arg(long, default_value_t = 2500)]
    pub steps: usize,
    /// Adam's learning rate (cosine-annealed to a tenth of it over the run).
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Clip the global gradient norm to this.
    #[arg(long, default_value_t = 5.0)]
    pub clip: f64,
    /// Fraction at the end of each play held out for validation.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Evaluate validation bpc every this many steps (and at the end).
    #[arg(long, default_value_t = 250)]
    pub eval_every: usize,
    /// Print a sample every this many steps (0: only the final one).
    #[arg(long, default_value_t = 500)]
    pub sample_every: usize,
    /// Characters per sample during training.
    #[arg(long, default_value_t = 200)]
    pub sample_len: usize,
    /// Characters in the final sample (written to sample.txt).
    #[arg(long, default_value_t = 600)]
    pub final_sample_len: usize,
    /// Sampling temperature: < 1 more conservative, > 1 more adventurous.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Text fed to the model before sampling (the sample continues it).
    #[arg(long, default_value = "ROMEO.\n")]
    pub prime: String,
    /// After training, look inside the trained network on a validation passage:
    /// activations.svg (chosen units, each character coloured by the unit's value) and
    /// saturation.svg (per unit, how often each gate is below 0.1 or above 0.9).
    #[arg(long)]
    pub inspect: bool,
    /// Characters of the passage --inspect reads (from the start of the validation text).
    #[arg(long, default_value_t = 600)]
    pub inspect_len: usize,
    /// Units --inspect draws [default: the 4 of the top layer whose value swings most widely
    /// and slowly over the passage: the largest lag-1 autocovariance].
    #[arg(long, value_delimiter = ',')]
    pub units: Vec<usize>,
}

/// What a run produced.
pub struct Report {
    /// Training loss (nats per character) at every step.
    pub losses: Vec<f32>,
    /// `(step, validation bpc)` at every evaluation.
    pub val_bpc: Vec<(usize, f64)>,
    /// Final validation bits per character.
    pub final_bpc: f64,
    /// Add-one unigram baseline, bits per character on the same validation positions.
    pub unigram_bpc: f64,
    /// Add-one bigram baseline, bits per character on the same validation positions.
    pub bigram_bpc: f64,
    /// The final sample (prime included).
    pub sample: String,
    /// Everything in metrics.json.
    pub metrics: serde_json::Value,
    /// Where the files went.
    pub out_dir: PathBuf,
    /// What `--inspect` found, if asked.
    pub inspection: Option<Inspection>,
}

/// What `--inspect` measured on the validation passage.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Inspection {
    pub passage_chars: usize,
    /// What the heat map shows: `tanh(c_t)` for the LSTM, `h_t` otherwise.
    pub shows: &'static str,
    pub units: Vec<usize>,
    /// Per gate: (name, fraction < 0.1, fraction > 0.9) over the passage, every unit.
    pub saturation: Vec<(&'static str, f64, f64)>,
    pub files: Vec<PathBuf>,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

// ----------------------------------------------------------------------------------- data ---

/// The text as character ids, split into training and validation.
struct Corpus {
    vocab: Vec<char>,
    /// Character → id, for the training text's characters (not the unknown symbol).
    index: HashMap<char, usize>,
    unknown: Option<usize>,
    train: Vec<usize>,
    val: Vec<usize>,
}

impl Corpus {
    fn load(val_fraction: f64) -> DemoResult<Corpus> {
        if !(0.0..0.5).contains(&val_fraction) || val_fraction == 0.0 {
            return Err(format!("--val-fraction {val_fraction} is not in (0, 0.5)").into());
        }
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/data/shakespeare");
        let (mut train, mut val) = (String::new(), String::new());
        for play in PLAYS {
            let path = dir.join(format!("{play}.txt"));
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            // Cut at the first line break after (1 − fraction) of the play.
            let mut cut = ((text.len() as f64) * (1.0 - val_fraction)) as usize;
            while cut < text.len() && !text.is_char_boundary(cut) {
                cut += 1;
            }
            let cut = text[cut..].find('\n').map_or(text.len(), |i| cut + i + 1);
            train.push_str(&text[..cut]);
            val.push_str(&text[cut..]);
        }
        let chars: BTreeSet<char> = train.chars().collect();
        let mut vocab: Vec<char> = chars.iter().copied().collect();
        let index = vocab.iter().enumerate().map(|(i, &c)| (c, i)).collect();
        let unknown = val.chars().any(|c| !chars.contains(&c)).then(|| {
            vocab.push(UNKNOWN);
            vocab.len() - 1
        });
        let mut corpus = Corpus {
            vocab,
            index,
            unknown,
            train: vec![],
            val: vec![],
        };
        corpus.train = train.chars().map(|c| corpus.id(c).expect("seen")).collect();
        corpus.val = val
            .chars()
            .map(|c| corpus.id(c).or(corpus.unknown).expect("unknown added"))
            .collect();
        Ok(corpus)
    }

    fn id(&self, c: char) -> Option<usize> {
        self.index.get(&c).copied()
    }
}

/// `batch` contiguous streams through `ids`, each `len` characters plus the one after it:
/// stream b predicts `ids[b·len + i + 1]` from `ids[..= b·len + i]` for i in 0..len.
struct Streams<'a> {
    ids: &'a [usize],
    batch: usize,
    len: usize,
}

impl<'a> Streams<'a> {
    fn new(ids: &'a [usize], batch: usize) -> DemoResult<Self> {
        let len = ids.len().saturating_sub(1) / batch.max(1);
        if batch == 0 || len == 0 {
            return Err(format!("{} characters cannot make {batch} streams", ids.len()).into());
        }
        Ok(Streams { ids, batch, len })
    }

    /// Inputs and targets of steps `start..start + k` of every stream, `[k, batch]` and
    /// `[k·batch]` (time-major, like the layer's output).
    fn chunk(&self, start: usize, k: usize) -> (Tensor<i64>, Tensor<i64>) {
        let mut x = Vec::with_capacity(k * self.batch);
        let mut y = Vec::with_capacity(k * self.batch);
        for t in start..start + k {
            for b in 0..self.batch {
                let i = b * self.len + t;
                x.push(self.ids[i] as i64);
                y.push(self.ids[i + 1] as i64);
            }
        }
        (
            Tensor::from_vec(x, &[k, self.batch]),
            Tensor::from_vec(y, &[k * self.batch]),
        )
    }

    /// Every (previous, next) pair the streams predict.
    fn pairs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.batch).flat_map(move |b| {
            (0..self.len).map(move |t| {
                let i = b * self.len + t;
                (self.ids[i], self.ids[i + 1])
            })
        })
    }
}

/// Add-one unigram and bigram models fitted on `train`, scored in bits per character on `pairs`.
fn baselines(train: &[usize], vocab: usize, pairs: &[(usize, usize)]) -> (f64, f64) {
    let mut uni = vec![0f64; vocab];
    let mut bi = vec![0f64; vocab * vocab];
    let mut from = vec![0f64; vocab];
    for &c in train {
        uni[c] += 1.0;
    }
    for w in train.windows(2) {
        bi[w[0] * vocab + w[1]] += 1.0;
        from[w[0]] += 1.0;
    }
    let (n, v) = (train.len() as f64, vocab as f64);
    let (mut uni_bits, mut bi_bits) = (0.0, 0.0);
    for &(prev, next) in pairs {
        uni_bits -= ((uni[next] + 1.0) / (n + v)).log2();
        bi_bits -= ((bi[prev * vocab + next] + 1.0) / (from[prev] + v)).log2();
    }
    let count = pairs.len() as f64;
    (uni_bits / count, bi_bits / count)
}

// -------------------------------------------------------------------------------- inspect ---

/// The gates a cell labels whose saturation Karpathy et al. plot (sigmoid gates).
fn gates_of(cell: CellKind) -> &'static [&'static str] {
    match cell {
        CellKind::Lstm => &["input_gate", "forget_gate", "output_gate"],
        CellKind::Gru => &["reset_gate", "update_gate"],
        CellKind::Rnn => &[],
    }
}

/// Runs the trained model over the first `--inspect-len` validation characters inside a
/// [`Probe`], and draws the top layer: chosen units over the text, and gate saturation.
fn inspect(
    cli: &Cli,
    model: &CharModel,
    corpus: &Corpus,
    out_dir: &Path,
) -> DemoResult<Inspection> {
    let len = cli.inspect_len.min(corpus.val.len());
    let ids = &corpus.val[..len];
    let text: Vec<char> = ids.iter().map(|&i| corpus.vocab[i]).collect();
    let x = Tensor::from_vec(ids.iter().map(|&i| i as i64).collect(), &[len, 1]);
    let tape = Tape::new();
    let probe = Probe::<f32>::new();
    probe.watch(|| tape.no_grad(|| model.forward(&tape, &x, None)));
    let rec = probe.direction(cli.layers - 1, 0);
    let (shows, part) = match cli.cell {
        CellKind::Lstm => ("tanh(c_t), the cell state", 1),
        _ => ("h_t, the hidden state", 0),
    };
    // Every step's values once, `[t][unit]` (tanh'd for the cell state).
    let values: Vec<Vec<f64>> = (rec.state(part).iter())
        .map(|v| {
            let row = v.to_vec().into_iter().map(f64::from);
            match part {
                1 => row.map(f64::tanh).collect(),
                _ => row.collect(),
            }
        })
        .collect();
    let trace = |unit: usize| -> Vec<f64> { values.iter().map(|v| v[unit]).collect() };
    let units = match cli.units.is_empty() {
        false => cli.units.clone(),
        true => {
            // Units that swing widely *and* slowly (Karpathy et al.'s interesting cells track
            // quotes or line position, not the last character): the lag-1 autocovariance.
            let slow_swing = |v: &[f64]| {
                let m = v.iter().sum::<f64>() / v.len() as f64;
                v.windows(2).map(|w| (w[0] - m) * (w[1] - m)).sum::<f64>()
            };
            let mut by: Vec<(f64, usize)> = (0..cli.hidden)
                .map(|u| (slow_swing(&trace(u)), u))
                .collect();
            by.sort_by(|a, b| b.0.total_cmp(&a.0));
            by.iter().take(4).map(|&(_, u)| u).collect()
        }
    };
    let activations = out_dir.join("activations.svg");
    let rows: Vec<(String, Vec<f64>)> = (units.iter())
        .map(|&u| (format!("unit {u}: {shows}"), trace(u)))
        .collect();
    common::text_heatmap(
        &activations,
        &format!(
            "char_lm ({}): units of layer {} over {len} validation characters (red +1, blue -1)",
            cli.cell,
            cli.layers - 1
        ),
        &text,
        &rows,
        80,
    )?;
    let mut files = vec![activations];
    let mut saturation = Vec::new();
    let mut series = Vec::new();
    for &gate in gates_of(cli.cell) {
        let all = rec
            .saturation(gate)
            .ok_or(format!("the cell labels no {gate}"))?;
        saturation.push((gate, all.low, all.high));
        let per_unit = rec.unit_saturation(gate).expect("labelled");
        series.push(Series::new(
            gate,
            per_unit.iter().map(|s| (s.low, s.high)).collect(),
        ));
    }
    if !series.is_empty() {
        let path = out_dir.join("saturation.svg");
        common::scatter_plot(
            &path,
            &Axes {
                title: &format!("char_lm ({}): gate saturation per unit", cli.cell),
                x: "fraction of values < 0.1 (left-saturated)",
                y: "fraction of values > 0.9 (right-saturated)",
                log_y: false,
            },
            &series,
            (0.0, 1.0),
        )?;
        files.push(path);
    }
    Ok(Inspection {
        passage_chars: len,
        shows,
        units,
        saturation,
        files,
    })
}

// ---------------------------------------------------------------------------------- model ---

struct CharModel {
    embed: Embedding<f32>,
    rnn: Recurrent,
    head: Linear<f32>,
}

impl Module<f32> for CharModel {
    fn named_params(&self) -> Vec<(String, Param<f32>)> {
        let mut v = prefixed("embed", &self.embed);
        v.extend(prefixed("rnn", &self.rnn));
        v.extend(prefixed("head", &self.head));
        v
    }
}

impl CharModel {
    /// Logits `[k·batch, vocab]` for inputs `[k, batch]` from the carried state (zeros if
    /// `None`), and the final state's parts.
    fn forward(
        &self,
        tape: &Tape<f32>,
        x: &Tensor<i64>,
        state: Option<&[Tensor<f32>]>,
    ) -> (Var<f32>, Vec<Var<f32>>) {
        let (k, batch) = (x.shape()[0], x.shape()[1]);
        let emb = self.embed.forward(tape, x);
        // The carried state enters this tape as a constant: detached, so backward stops here.
        let init: Option<Vec<Var<f32>>> =
            state.map(|s| s.iter().map(|t| tape.constant(t.clone())).collect());
        let (out, last) = self.rnn.forward(&emb, init.as_deref(), None);
        let hidden = out.shape()[2];
        let logits = self.head.forward(&out.reshape(&[k * batch, hidden]));
        (logits, last)
    }
}

/// Validation bits per character: the validation streams run through in no-grad mode, in
/// chunks, with the state carried across chunks.
fn evaluate(model: &CharModel, val: &Streams) -> f64 {
    let chunk = 256;
    let mut state: Option<Vec<Tensor<f32>>> = None;
    let mut nats = 0.0f64;
    let mut start = 0;
    while start < val.len {
        let k = chunk.min(val.len - start);
        let (x, y) = val.chunk(start, k);
        let tape = Tape::new();
        tape.no_grad(|| {
            let (logits, last) = model.forward(&tape, &x, state.as_deref());
            let options = ClassLossOptions {
                reduction: Reduction::Sum,
                ..Default::default()
            };
            nats += f64::from(cross_entropy_with(&logits, &y, &options).item());
            state = Some(last.iter().map(|v| v.value().clone()).collect());
        });
        start += k;
    }
    nats / (val.len * val.batch) as f64 / std::f64::consts::LN_2
}

/// Feeds `prime` then samples `len` characters at `temperature`, one step at a time through a
/// [`Layer::stream`] (no tape kept, so memory does not grow with the length).
fn sample(
    model: &CharModel,
    corpus: &Corpus,
    prime: &[usize],
    len: usize,
    temperature: f64,
    rng: &mut Rng,
) -> String {
    fn go<C: Cell<f32>>(
        layer: &Layer<f32, C>,
        model: &CharModel,
        prime: &[usize],
        len: usize,
        temperature: f64,
        rng: &mut Rng,
    ) -> Vec<usize> {
        let table = model.embed.weight.value();
        let mut stream = layer.stream();
        let mut out = prime.to_vec();
        let mut h = None;
        for &c in prime {
            h = Some(stream.step(&table.index_select(0, &Tensor::from_vec(vec![c as i64], &[1]))));
        }
        let tape = Tape::new();
        for _ in 0..len {
            let h_t = h.take().expect("the prime is not empty");
            let logits = tape.no_grad(|| model.head.forward(&tape.constant(h_t)).value().clone());
            let next = draw(&logits.to_vec(), temperature, rng);
            out.push(next);
            h = Some(
                stream.step(&table.index_select(0, &Tensor::from_vec(vec![next as i64], &[1]))),
            );
        }
        out
    }
    let ids = match &model.rnn {
        Recurrent::Rnn(l) => go(l, model, prime, len, temperature, rng),
        Recurrent::Lstm(l) => go(l, model, prime, len, temperature, rng),
        Recurrent::Gru(l) => go(l, model, prime, len, temperature, rng),
    };
    ids.iter().map(|&i| corpus.vocab[i]).collect()
}

/// Draws an index from softmax(logits / temperature).
fn draw(logits: &[f32], temperature: f64, rng: &mut Rng) -> usize {
    let t = temperature.max(1e-6);
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &z| m.max(z));
    let weights: Vec<f64> = logits
        .iter()
        .map(|&z| (f64::from(z - max) / t).exp())
        .collect();
    let mut u = rng.next_f64() * weights.iter().sum::<f64>();
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

/// What the checkpoint stores besides the weights: enough to rebuild the model and decode.
#[derive(serde::Serialize)]
struct SavedConfig<'a> {
    cell: CellKind,
    hidden: usize,
    layers: usize,
    embed: usize,
    vocab: String,
    unknown: Option<usize>,
    seed: u64,
    steps: usize,
    layout: &'a str,
}

// ------------------------------------------------------------------------------------ run ---

pub fn run(cli: Cli) -> DemoResult<Report> {
    let out_dir = cli.common.out_dir("char_lm")?;
    for (name, v) in [
        ("--hidden", cli.hidden),
        ("--layers", cli.layers),
        ("--embed", cli.embed),
        ("--batch", cli.batch),
        ("--bptt", cli.bptt),
        ("--steps", cli.steps),
    ] {
        if v == 0 {
            return Err(format!("{name} must be at least 1").into());
        }
    }
    if cli.prime.is_empty() {
        return Err("--prime must not be empty".into());
    }
    if !cli.inspect && !cli.units.is_empty() {
        return Err("--units is for --inspect, which is off".into());
    }
    if cli.inspect && cli.inspect_len == 0 {
        return Err("--inspect-len must be at least 1".into());
    }
    if let Some(&bad) = cli.units.iter().find(|&&u| u >= cli.hidden) {
        return Err(format!("--units: unit {bad} is not below --hidden {}", cli.hidden).into());
    }
    if cli.temperature.is_nan() || cli.temperature <= 0.0 {
        return Err(format!("--temperature {} must be positive", cli.temperature).into());
    }
    unroll::rnn::manual_seed(cli.common.seed);
    let mut rng = Rng::seed_from_u64(cli.common.seed);
    let mut sample_rng = Rng::seed_from_u64(cli.common.seed ^ 0x5a3b_1e5c);

    let corpus = Corpus::load(cli.val_fraction)?;
    let v = corpus.vocab.len();
    let prime: Vec<usize> = cli
        .prime
        .chars()
        .map(|c| {
            corpus.id(c).or(corpus.unknown).ok_or_else(|| {
                format!("--prime: {c:?} is not in the vocabulary of the training text")
            })
        })
        .collect::<Result<_, _>>()?;
    let train = Streams::new(&corpus.train, cli.batch)?;
    let val = Streams::new(&corpus.val, 32)?;
    let pairs: Vec<(usize, usize)> = val.pairs().collect();
    let (unigram_bpc, bigram_bpc) = baselines(&corpus.train, v, &pairs);
    if !cli.common.quiet {
        println!(
            "{} training / {} validation characters (last {:.0}% of each play), vocabulary {v}{}",
            corpus.train.len(),
            corpus.val.len(),
            cli.val_fraction * 100.0,
            if corpus.unknown.is_some() {
                format!(" (with {UNKNOWN} for unknown)")
            } else {
                String::new()
            }
        );
        println!(
            "baselines on validation: uniform {:.3}, unigram {unigram_bpc:.3}, bigram \
             {bigram_bpc:.3} bits/char",
            (v as f64).log2()
        );
    }

    let model = CharModel {
        embed: Embedding::new(v, cli.embed, None, &mut rng),
        rnn: Recurrent::new(
            cli.cell,
            LayerConfig::new(cli.embed, cli.hidden).num_layers(cli.layers),
            &mut rng,
        ),
        head: Linear::new(cli.hidden, v, true, &mut rng),
    };
    let mut opt = Adam::new(
        model.params(),
        AdamConfig {
            lr: cli.lr,
            ..Default::default()
        },
    );
    let schedule = Cosine {
        t_max: cli.steps as u64,
        eta_min: cli.lr / 10.0,
    };
    if !cli.common.quiet {
        println!(
            "{} {}x{} with a {}-d embedding: {} parameters; {} streams x {}-step chunks",
            cli.cell,
            cli.layers,
            cli.hidden,
            cli.embed,
            model.num_params(),
            cli.batch,
            cli.bptt
        );
    }

    let k = cli.bptt.min(train.len);
    let bar = cli.common.progress(cli.steps as u64);
    let started = std::time::Instant::now();
    let mut losses = Vec::with_capacity(cli.steps);
    let mut grad_norms = Vec::with_capacity(cli.steps);
    let mut val_bpc = vec![];
    let mut state: Option<Vec<Tensor<f32>>> = None;
    let mut pos = 0;
    let mut epochs = 0usize;
    for step in 1..=cli.steps {
        if pos + k > train.len {
            // End of the streams: start the next epoch from a zero state.
            pos = 0;
            state = None;
            epochs += 1;
        }
        let (x, y) = train.chunk(pos, k);
        pos += k;
        let tape = Tape::new();
        let (logits, last) = model.forward(&tape, &x, state.as_deref());
        let loss = cross_entropy(&logits, &y);
        state = Some(last.iter().map(|v| v.value().clone()).collect());
        opt.set_lr(schedule.lr(cli.lr, step as u64 - 1));
        opt.zero_grad();
        loss.backward();
        grad_norms.push(clip_grad_norm(opt.params(), cli.clip));
        opt.step();
        let l = loss.item();
        if !l.is_finite() {
            return Err(format!("the training loss became {l} at step {step}").into());
        }
        losses.push(l);
        bar.inc(1);
        let recent = &losses[losses.len().saturating_sub(50)..];
        let smooth = recent.iter().sum::<f32>() / recent.len() as f32;
        bar.set_message(format!(
            "loss {smooth:.3} ({:.2} bpc)",
            f64::from(smooth) / std::f64::consts::LN_2
        ));
        if step % cli.eval_every.max(1) == 0 || step == cli.steps {
            let bpc = evaluate(&model, &val);
            val_bpc.push((step, bpc));
            cli.common.log(
                &bar,
                format!(
                    "step {step:5}  train {:.3} bpc  val {bpc:.3} bpc  (bigram {bigram_bpc:.3})  \
                     {:.0}s",
                    f64::from(smooth) / std::f64::consts::LN_2,
                    started.elapsed().as_secs_f64()
                ),
            );
        }
        if cli.sample_every > 0 && step % cli.sample_every == 0 && step < cli.steps {
            let s = sample(
                &model,
                &corpus,
                &prime,
                cli.sample_len,
                cli.temperature,
                &mut sample_rng,
            );
            cli.common.log(
                &bar,
                format!("--- sample at step {step} ---\n{s}\n---------------------------"),
            );
        }
    }
    bar.finish_and_clear();
    let train_secs = started.elapsed().as_secs_f64();

    let final_bpc = val_bpc
        .last()
        .map(|&(_, b)| b)
        .expect("evaluated at the end");
    let final_sample = sample(
        &model,
        &corpus,
        &prime,
        cli.final_sample_len,
        cli.temperature,
        &mut sample_rng,
    );
    if !cli.common.quiet {
        println!("--- final sample (temperature {}) ---", cli.temperature);
        println!("{final_sample}");
        println!("--------------------------------------");
    }

    // Files.
    let sample_path = out_dir.join("sample.txt");
    std::fs::write(&sample_path, &final_sample)
        .map_err(|e| format!("cannot write {}: {e}", sample_path.display()))?;
    let ckpt_path = out_dir.join("checkpoint.safetensors");
    let vocab: String = corpus.vocab.iter().collect();
    unroll::rnn::io::save_checkpoint(
        &ckpt_path,
        &model,
        &opt,
        cli.steps as u64,
        &SavedConfig {
            cell: cli.cell,
            hidden: cli.hidden,
            layers: cli.layers,
            embed: cli.embed,
            vocab: vocab.clone(),
            unknown: corpus.unknown,
            seed: cli.common.seed,
            steps: cli.steps,
            layout: "embed -> rnn -> head; character i of vocab is id i",
        },
    )?;
    let to_bits = |l: f32| f64::from(l) / std::f64::consts::LN_2;
    let window = 50.min(losses.len());
    let train_bpc_end =
        to_bits(losses[losses.len() - window..].iter().sum::<f32>() / window as f32);
    let plot_path = out_dir.join("bpc.svg");
    let last_step = cli.steps as f64;
    common::line_plot(
        &plot_path,
        &Axes {
            title: &format!("char_lm ({}): bits per character", cli.cell),
            x: "step",
            y: "bits per character",
            log_y: false,
        },
        &[
            Series::new(
                "training loss (bpc, per step)",
                losses
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| ((i + 1) as f64, to_bits(l)))
                    .collect(),
            ),
            Series::new(
                "validation bpc",
                val_bpc.iter().map(|&(s, b)| (s as f64, b)).collect(),
            ),
            Series::new(
                "unigram baseline",
                vec![(1.0, unigram_bpc), (last_step, unigram_bpc)],
            ),
            Series::new(
                "bigram baseline",
                vec![(1.0, bigram_bpc), (last_step, bigram_bpc)],
            ),
        ],
    )?;

    let inspection = match cli.inspect {
        true => Some(inspect(&cli, &model, &corpus, &out_dir)?),
        false => None,
    };

    let metrics = json!({
        "inspection": inspection,
        "demo": "char_lm",
        "cell": cli.cell,
        "hidden": cli.hidden,
        "layers": cli.layers,
        "embed": cli.embed,
        "batch": cli.batch,
        "bptt": k,
        "steps": cli.steps,
        "lr": cli.lr,
        "clip": cli.clip,
        "temperature": cli.temperature,
        "seed": cli.common.seed,
        "parameters": model.num_params(),
        "vocab_size": v,
        "train_chars": corpus.train.len(),
        "val_chars": corpus.val.len(),
        "val_predictions": pairs.len(),
        "epochs_completed": epochs,
        "val_split": format!("last {}% of each play", cli.val_fraction * 100.0),
        "uniform_bpc": (v as f64).log2(),
        "unigram_bpc": unigram_bpc,
        "bigram_bpc": bigram_bpc,
        "final_val_bpc": final_bpc,
        "final_train_bpc": train_bpc_end,
        "beats_bigram": final_bpc < bigram_bpc,
        "val_bpc": val_bpc.iter().map(|&(s, b)| json!({"step": s, "bpc": b})).collect::<Vec<_>>(),
        "train_loss_nats": losses,
        "grad_norm_before_clip": grad_norms,
        "train_seconds": train_secs,
        "final_sample": final_sample,
    });
    common::write_metrics(&out_dir, &metrics)?;

    if !cli.common.quiet {
        common::print_table(
            &["model", "validation bits/char"],
            &[
                vec!["uniform".into(), format!("{:.3}", (v as f64).log2())],
                vec!["unigram (add-one)".into(), format!("{unigram_bpc:.3}")],
                vec!["bigram (add-one)".into(), format!("{bigram_bpc:.3}")],
                vec![
                    format!(
                        "{} {}x{} ({} steps)",
                        cli.cell, cli.layers, cli.hidden, cli.steps
                    ),
                    format!("{final_bpc:.3}"),
                ],
            ],
        );
        println!(
            "trained {} steps in {train_secs:.0}s; wrote {}, {}, {}, metrics.json in {}",
            cli.steps,
            plot_path.file_name().unwrap().to_string_lossy(),
            ckpt_path.file_name().unwrap().to_string_lossy(),
            sample_path.file_name().unwrap().to_string_lossy(),
            out_dir.display()
        );
    }
    if let (Some(found), false) = (&inspection, cli.common.quiet) {
        println!(
            "inspect: {} of units {:?} over {} validation characters",
            found.shows, found.units, found.passage_chars
        );
        for (gate, low, high) in &found.saturation {
            println!(
                "  {gate:<12} < 0.1: {:>5.1}%   > 0.9: {:>5.1}%",
                low * 100.0,
                high * 100.0
            );
        }
        let names: Vec<_> = found.files.iter().filter_map(|f| f.file_name()).collect();
        println!("  wrote {names:?}");
    }
    Ok(Report {
        losses,
        val_bpc,
        final_bpc,
        unigram_bpc,
        bigram_bpc,
        sample: final_sample,
        metrics,
        out_dir,
        inspection,
    })
}

/// This demo end to end on tiny settings, run by `cargo test` (the example is built once, as
/// its own test binary).
#[cfg(test)]
#[path = "../tests/demos/char_lm.rs"]
mod tests;
