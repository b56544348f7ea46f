//! The sequence-to-sequence model: a bidirectional recurrent encoder, a decoder stepped one
//! token at a time with additive (Bahdanau) attention over the encoder's outputs — or, for the
//! baseline, without attention, conditioned only on the encoder's final states — teacher-forced
//! training, and greedy and beam-search decoding.

use serde::Serialize;
use unroll::autograd::{Param, Tape, Var};
use unroll::rnn::{
    cross_entropy_with, padding_mask, prefixed, AdditiveAttention, Cell, ClassLossOptions,
    Embedding, GruCell, LayerConfig, Linear, LstmCell, Module, RnnCell,
};
use unroll::tensor::{Rng, Tensor};

use super::common::{CellKind, Recurrent};
use super::numbers::{Example, BOS, EOS, PAD, SRC_VOCAB, TGT_VOCAB};

/// Longest German output the decoders produce (the longest real one is 11 morphemes + EOS).
pub const MAX_DECODE: usize = 16;

/// The shape of a model.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ModelConfig {
    /// Encoder and decoder cell.
    pub cell: CellKind,
    /// Embedding size (both languages).
    pub embed: usize,
    /// Decoder state size; the encoder has `hidden / 2` per direction, so its outputs (the
    /// attention's keys and values) have `hidden` features too.
    pub hidden: usize,
    /// Bahdanau attention (`false`: the fixed-size-bottleneck baseline).
    pub attention: bool,
}

/// The decoder's cell, stepped by hand.
enum DecoderCell {
    Rnn(RnnCell<f32>),
    Gru(GruCell<f32>),
    Lstm(LstmCell<f32>),
}

impl DecoderCell {
    fn new(kind: CellKind, input: usize, hidden: usize, rng: &mut Rng) -> Self {
        match kind {
            CellKind::Rnn => DecoderCell::Rnn(RnnCell::new(input, hidden, rng)),
            CellKind::Gru => DecoderCell::Gru(GruCell::new(input, hidden, rng)),
            CellKind::Lstm => DecoderCell::Lstm(LstmCell::new(input, hidden, rng)),
        }
    }

    /// One step; `state` is `[h]` or `[h, c]`.
    fn step(&self, x: &Var<f32>, state: &[Var<f32>]) -> Vec<Var<f32>> {
        match self {
            DecoderCell::Rnn(c) => vec![c.step(x, &state[0])],
            DecoderCell::Gru(c) => vec![c.step(x, &state[0])],
            DecoderCell::Lstm(c) => {
                let (h, c) = c.step(x, &(state[0].clone(), state[1].clone()));
                vec![h, c]
            }
        }
    }

    fn named_params(&self) -> Vec<(String, Param<f32>)> {
        match self {
            DecoderCell::Rnn(c) => c.named_params(),
            DecoderCell::Gru(c) => c.named_params(),
            DecoderCell::Lstm(c) => c.named_params(),
        }
    }
}

/// A padded batch: sources `[S, B]`, their lengths, and for training the teacher-forced
/// decoder inputs `[T, B]` (BOS, y₁ … y_{n}) and targets `[T·B]` (y₁ … y_n, EOS, PAD …).
pub struct Batch {
    /// English ids, time-major `[S, B]`, padded with PAD.
    pub src: Tensor<i64>,
    /// English lengths.
    pub lengths: Vec<usize>,
    /// Decoder inputs `[T, B]`.
    pub dec_in: Tensor<i64>,
    /// Targets `[T·B]` in time-major order, PAD where there is none.
    pub targets: Tensor<i64>,
}

impl Batch {
    /// Pads `examples` into one batch.
    pub fn new(examples: &[&Example]) -> Self {
        let b = examples.len();
        let s = examples.iter().map(|e| e.src.len()).max().unwrap_or(1);
        let t = examples.iter().map(|e| e.tgt.len() + 1).max().unwrap_or(1);
        let mut src = vec![PAD as i64; s * b];
        let mut dec_in = vec![PAD as i64; t * b];
        let mut targets = vec![PAD as i64; t * b];
        for (j, e) in examples.iter().enumerate() {
            for (i, &id) in e.src.iter().enumerate() {
                src[i * b + j] = id as i64;
            }
            dec_in[j] = BOS as i64;
            for (i, &id) in e.tgt.iter().enumerate() {
                dec_in[(i + 1) * b + j] = id as i64;
                targets[i * b + j] = id as i64;
            }
            targets[e.tgt.len() * b + j] = EOS as i64;
        }
        Batch {
            src: Tensor::from_vec(src, &[s, b]),
            lengths: examples.iter().map(|e| e.src.len()).collect(),
            dec_in: Tensor::from_vec(dec_in, &[t, b]),
            targets: Tensor::from_vec(targets, &[t * b]),
        }
    }
}

/// What the decoder needs from the encoder, per batch row.
#[derive(Clone)]
struct Encoded {
    /// Encoder outputs `[B, S, hidden]` (zero at padded positions).
    annotations: Var<f32>,
    /// `U h_j + b` for every j, computed once per batch: `[B, S, hidden]`.
    keys: Option<Var<f32>>,
    /// The valid source positions: `[B, S]`.
    mask: Tensor<bool>,
    /// The decoder's initial state parts, `[B, hidden]` each.
    init: Vec<Var<f32>>,
}

impl Encoded {
    /// The rows `rows` of everything (for beam search: each example repeated per beam).
    fn select_rows(&self, rows: &Tensor<i64>) -> Encoded {
        Encoded {
            annotations: self.annotations.index_select(0, rows),
            keys: self.keys.as_ref().map(|k| k.index_select(0, rows)),
            mask: self.mask.index_select(0, rows),
            init: self.init.iter().map(|p| p.index_select(0, rows)).collect(),
        }
    }
}

/// One decoded sentence: target ids (without EOS) and, with attention, the weights over the
/// source at every output step (EOS step included).
pub struct Decoded {
    /// Target ids, EOS excluded.
    pub ids: Vec<usize>,
    /// `alphas[t][j]`: the weight of source token j when emitting output t.
    pub alphas: Vec<Vec<f32>>,
}

/// A decoder step's context `[B, hidden]` and attention weights `[B, S]`.
type Attended = (Var<f32>, Var<f32>);

/// The encoder–decoder.
pub struct Seq2Seq {
    /// Its shape.
    pub config: ModelConfig,
    src_embed: Embedding<f32>,
    encoder: Recurrent,
    init_h: Linear<f32>,
    init_c: Option<Linear<f32>>,
    tgt_embed: Embedding<f32>,
    decoder: DecoderCell,
    /// score(s, h_j) = vᵀ tanh(W s + U h_j + b).
    attention: Option<AdditiveAttention<f32>>,
    out: Linear<f32>,
}

impl Seq2Seq {
    /// A freshly initialised model.
    ///
    /// # Panics
    /// If `hidden` is odd (the encoder has `hidden / 2` units per direction).
    pub fn new(config: ModelConfig, rng: &mut Rng) -> Self {
        let (e, h) = (config.embed, config.hidden);
        assert!(h % 2 == 0 && h > 0, "hidden size {h} must be even");
        let src_embed = Embedding::new(SRC_VOCAB, e, Some(PAD), rng);
        let encoder = Recurrent::new(
            config.cell,
            LayerConfig::new(e, h / 2).bidirectional(true),
            rng,
        );
        let init_h = Linear::new(h, h, true, rng);
        let init_c = (config.cell == CellKind::Lstm).then(|| Linear::new(h, h, true, rng));
        let tgt_embed = Embedding::new(TGT_VOCAB, e, Some(PAD), rng);
        let ctx = if config.attention { h } else { 0 };
        let decoder = DecoderCell::new(config.cell, e + ctx, h, rng);
        let attention = config
            .attention
            .then(|| AdditiveAttention::new(h, h, h, rng));
        let out = Linear::new(h + ctx + e, TGT_VOCAB, true, rng);
        Seq2Seq {
            config,
            src_embed,
            encoder,
            init_h,
            init_c,
            tgt_embed,
            decoder,
            attention,
            out,
        }
    }

    /// Runs the encoder over a padded batch.
    fn encode(&self, tape: &Tape<f32>, src: &Tensor<i64>, lengths: &[usize]) -> Encoded {
        let (s, b) = (src.shape()[0], src.shape()[1]);
        let x = self.src_embed.forward(tape, src); // [S, B, E]
        let (output, finals) = self.encoder.forward(&x, None, Some(lengths));
        let annotations = output.transpose(0, 1); // [B, S, hidden]
                                                  // The final forward state (at each sequence's own end) and the final backward state
                                                  // (at its start): the whole input summarised in `hidden` numbers.
        let summary = |part: &Var<f32>| Var::concat(&[&part.select(0, 0), &part.select(0, 1)], 1);
        let mut init = vec![self.init_h.forward(&summary(&finals[0])).tanh()];
        if let Some(init_c) = &self.init_c {
            init.push(init_c.forward(&summary(&finals[1])));
        }
        let keys = self
            .attention
            .as_ref()
            .map(|a| a.project_keys(&annotations));
        debug_assert_eq!(lengths.len(), b);
        Encoded {
            annotations,
            keys,
            mask: padding_mask(lengths, s),
            init,
        }
    }

    /// One decoder step from the previous token's embedding `[B, E]`: returns the new state,
    /// the context `[B, hidden]` and the attention weights `[B, S]` (with attention).
    fn step(
        &self,
        enc: &Encoded,
        y_emb: &Var<f32>,
        state: &[Var<f32>],
    ) -> (Vec<Var<f32>>, Option<Attended>) {
        match (&self.attention, &enc.keys) {
            (Some(att), Some(keys)) => {
                // e_j = vᵀ tanh(W s + U h_j + b), softmax over the valid j.
                let a = att.attend(&state[0], keys, &enc.annotations, Some(&enc.mask));
                let x = Var::concat(&[y_emb, &a.context], 1);
                (self.decoder.step(&x, state), Some((a.context, a.weights)))
            }
            _ => (self.decoder.step(y_emb, state), None),
        }
    }

    /// The output layer's input: [s_t; c_t; emb(y_{t−1})].
    fn features(&self, h: &Var<f32>, context: Option<&Var<f32>>, y_emb: &Var<f32>) -> Var<f32> {
        match context {
            Some(c) => Var::concat(&[h, c, y_emb], -1),
            None => Var::concat(&[h, y_emb], -1),
        }
    }

    /// The teacher-forced cross-entropy of a batch (mean over the real target tokens).
    pub fn loss(&self, tape: &Tape<f32>, batch: &Batch) -> Var<f32> {
        let enc = self.encode(tape, &batch.src, &batch.lengths);
        let (t_len, b) = (batch.dec_in.shape()[0], batch.dec_in.shape()[1]);
        let emb = self.tgt_embed.forward(tape, &batch.dec_in); // [T, B, E]
        let mut state = enc.init.clone();
        let mut hs = Vec::with_capacity(t_len);
        let mut contexts = Vec::with_capacity(t_len);
        for t in 0..t_len {
            let (next, attended) = self.step(&enc, &emb.select(0, t), &state);
            state = next;
            hs.push(state[0].clone());
            if let Some((c, _)) = attended {
                contexts.push(c);
            }
        }
        let hs = Var::stack(&hs.iter().collect::<Vec<_>>(), 0); // [T, B, H]
        let contexts =
            (!contexts.is_empty()).then(|| Var::stack(&contexts.iter().collect::<Vec<_>>(), 0));
        let features = self.features(&hs, contexts.as_ref(), &emb);
        let width = features.shape()[2];
        let logits = self.out.forward(&features.reshape(&[t_len * b, width]));
        cross_entropy_with(
            &logits,
            &batch.targets,
            &ClassLossOptions {
                ignore_index: Some(PAD as i64),
                ..Default::default()
            },
        )
    }

    /// Log-probabilities `[rows, V]` of the next token, and the new state, from the previous
    /// tokens.
    fn next_log_probs(
        &self,
        tape: &Tape<f32>,
        enc: &Encoded,
        prev: &[usize],
        state: &[Var<f32>],
    ) -> (Vec<f32>, Vec<Var<f32>>, Option<Var<f32>>) {
        let ids = Tensor::from_vec(prev.iter().map(|&i| i as i64).collect(), &[prev.len()]);
        let y_emb = self.tgt_embed.forward(tape, &ids);
        let (next, attended) = self.step(enc, &y_emb, state);
        let context = attended.as_ref().map(|(c, _)| c);
        let logits = self.out.forward(&self.features(&next[0], context, &y_emb));
        let log_probs = logits.value().log_softmax(1).to_vec();
        (log_probs, next, attended.map(|(_, a)| a))
    }

    /// Greedy decoding of `examples` as one batch: at every step the most likely token (PAD
    /// and BOS are never emitted; the first maximum wins ties).
    pub fn greedy(&self, examples: &[&Example]) -> Vec<Decoded> {
        let tape = Tape::new();
        tape.no_grad(|| {
            let batch = Batch::new(examples);
            let b = examples.len();
            let enc = self.encode(&tape, &batch.src, &batch.lengths);
            let mut state = enc.init.clone();
            let mut prev = vec![BOS; b];
            let mut out: Vec<Decoded> = (0..b)
                .map(|_| Decoded {
                    ids: vec![],
                    alphas: vec![],
                })
                .collect();
            let mut done = vec![false; b];
            for _ in 0..MAX_DECODE {
                let (log_probs, next, alpha) = self.next_log_probs(&tape, &enc, &prev, &state);
                state = next;
                let alpha = alpha.map(|a| a.value().to_vec());
                let s = batch.src.shape()[0];
                for j in 0..b {
                    if done[j] {
                        continue;
                    }
                    let row = &log_probs[j * TGT_VOCAB..(j + 1) * TGT_VOCAB];
                    let mut best = EOS;
                    for v in EOS + 1..TGT_VOCAB {
                        if row[v] > row[best] {
                            best = v;
                        }
                    }
                    if let Some(a) = &alpha {
                        out[j]
                            .alphas
                            .push(a[j * s..j * s + examples[j].src.len()].to_vec());
                    }
                    if best == EOS {
                        done[j] = true;
                    } else {
                        out[j].ids.push(best);
                    }
                    prev[j] = best;
                }
                if done.iter().all(|&d| d) {
                    break;
                }
            }
            out
        })
    }

    /// Beam search with `width` hypotheses per example, all examples and beams in one batch
    /// of `examples × width` rows. A hypothesis's score is the sum of its tokens'
    /// log-probabilities; a finished one (EOS emitted) keeps its score and competes with the
    /// unfinished ones. Candidates are ranked by score, then by the last token's
    /// log-probability, then by (beam, token) order — so width 1 is exactly greedy.
    pub fn beam(&self, examples: &[&Example], width: usize) -> Vec<Vec<usize>> {
        assert!(width >= 1, "beam width must be at least 1");
        let tape = Tape::new();
        tape.no_grad(|| {
            let batch = Batch::new(examples);
            let b = examples.len();
            let k = width;
            let enc = self.encode(&tape, &batch.src, &batch.lengths);
            let repeat: Vec<i64> = (0..b * k).map(|r| (r / k) as i64).collect();
            let enc = enc.select_rows(&Tensor::from_vec(repeat, &[b * k]));
            let mut state = enc.init.clone();
            // Only beam 0 of each example is live at the start (they are all the same).
            let mut scores: Vec<f64> = (0..b * k)
                .map(|r| if r % k == 0 { 0.0 } else { f64::NEG_INFINITY })
                .collect();
            let mut tokens: Vec<Vec<usize>> = vec![vec![]; b * k];
            let mut finished = vec![false; b * k];
            let mut prev = vec![BOS; b * k];
            for _ in 0..MAX_DECODE {
                if finished.iter().all(|&f| f) {
                    break;
                }
                let (log_probs, next, _) = self.next_log_probs(&tape, &enc, &prev, &state);
                let mut parents = Vec::with_capacity(b * k);
                let mut new_scores = Vec::with_capacity(b * k);
                let mut new_tokens = Vec::with_capacity(b * k);
                let mut new_finished = Vec::with_capacity(b * k);
                let mut new_prev = Vec::with_capacity(b * k);
                for ex in 0..b {
                    // (score, last log-prob, parent row, token or None for "stay finished")
                    let mut cands: Vec<(f64, f64, usize, Option<usize>)> = Vec::new();
                    for r in ex * k..(ex + 1) * k {
                        if finished[r] {
                            cands.push((scores[r], 0.0, r, None));
                            continue;
                        }
                        let row = &log_probs[r * TGT_VOCAB..(r + 1) * TGT_VOCAB];
                        for (v, &lp) in row.iter().enumerate().skip(EOS) {
                            let lp = f64::from(lp);
                            cands.push((scores[r] + lp, lp, r, Some(v)));
                        }
                    }
                    // Stable sort: equal keys keep (beam, token) order.
                    cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)));
                    for &(score, _, parent, token) in cands.iter().take(k) {
                        parents.push(parent as i64);
                        new_scores.push(score);
                        let mut t = tokens[parent].clone();
                        match token {
                            None => {
                                new_finished.push(true);
                                new_prev.push(EOS);
                            }
                            Some(v) => {
                                new_finished.push(v == EOS);
                                if v != EOS {
                                    t.push(v);
                                }
                                new_prev.push(v);
                            }
                        }
                        new_tokens.push(t);
                    }
                }
                let parents = Tensor::from_vec(parents, &[b * k]);
                state = next.iter().map(|p| p.index_select(0, &parents)).collect();
                scores = new_scores;
                tokens = new_tokens;
                finished = new_finished;
                prev = new_prev;
            }
            (0..b)
                .map(|ex| {
                    // The best finished hypothesis, else the best one (rows are sorted).
                    let rows = ex * k..(ex + 1) * k;
                    let best = rows
                        .clone()
                        .filter(|&r| finished[r])
                        .max_by(|&x, &y| scores[x].total_cmp(&scores[y]).then(y.cmp(&x)))
                        .unwrap_or(ex * k);
                    tokens[best].clone()
                })
                .collect()
        })
    }
}

impl Module<f32> for Seq2Seq {
    fn named_params(&self) -> Vec<(String, Param<f32>)> {
        let mut v = prefixed("src_embed", &self.src_embed);
        v.extend(prefixed("encoder", &self.encoder));
        v.extend(prefixed("init_h", &self.init_h));
        if let Some(c) = &self.init_c {
            v.extend(prefixed("init_c", c));
        }
        v.extend(prefixed("tgt_embed", &self.tgt_embed));
        v.extend(
            self.decoder
                .named_params()
                .into_iter()
                .map(|(n, p)| (format!("decoder.{n}"), p)),
        );
        if let Some(a) = &self.attention {
            v.extend(prefixed("attention", a));
        }
        v.extend(prefixed("out", &self.out));
        v
    }
}
