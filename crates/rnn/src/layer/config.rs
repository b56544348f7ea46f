//! [`LayerConfig`]: the options of a recurrent layer, named and defaulted as PyTorch's
//! `nn.RNN`/`nn.LSTM`/`nn.GRU` arguments, with builder-style setters, and the checks that
//! refuse what PyTorch refuses.
//!
//! A config is plain data (serialisable, so checkpoints can carry it); nothing here knows a
//! cell or a tape. The invariants a [`Layer`](super::Layer) relies on — `hidden_size > 0`,
//! `num_layers ≥ 1`, `dropout ∈ [0, 1]` and only between stacked layers,
//! `proj_size < hidden_size` — are enforced once, by [`LayerConfig::check`] when the layer
//! is built, not by the setters.

use serde::{Deserialize, Serialize};

use crate::nonlinearity::Nonlinearity;

/// The options of a recurrent layer, named and defaulted as in PyTorch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerConfig {
    /// Features of the input.
    pub input_size: usize,
    /// Features of the hidden state.
    pub hidden_size: usize,
    /// Stacked layers (default 1).
    pub num_layers: usize,
    /// Biases in the built-in cells (default true).
    pub bias: bool,
    /// Input and output as `[batch, seq, feature]` (default false: `[seq, batch, feature]`).
    pub batch_first: bool,
    /// Dropout on the outputs of every layer but the last, in training mode (default 0).
    pub dropout: f64,
    /// Run a second cell per layer from the end of the sequence backwards (default false).
    pub bidirectional: bool,
    /// The vanilla RNN's nonlinearity (default tanh; ignored by other cells).
    pub nonlinearity: Nonlinearity,
    /// The LSTM's projection of `h` to this many features (default 0: none), as
    /// `nn.LSTM(proj_size=…)`; other cells refuse it.
    #[serde(default)]
    pub proj_size: usize,
    /// What the forward keeps for the backward: every step's activations (the default), or
    /// only the states at segment boundaries, the rest recomputed during the backward
    /// ([`Recompute`]).
    #[serde(default)]
    pub recompute: Recompute,
}

/// Gradient checkpointing over time: what a training forward keeps for its backward.
///
/// Backpropagation through time needs every step's activations, so a layer's memory grows
/// with the sequence. With `Segments(k)` the forward cuts the sequence into `k` segments of
/// `⌈T / k⌉` steps and keeps only the state entering each segment; the backward reruns each
/// segment's forward from that state, the last segment first, just before it needs its
/// activations. The activations of one segment are alive at a time, plus the `k` boundary
/// states: `Sqrt` picks `k = ⌈√T⌉`, for memory `O(√T)` at the cost of a second forward
/// (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost").
///
/// The gradients are bit-identical to training without it: the recomputed activations are the
/// first forward's, bit for bit, and the backward runs the same arithmetic in the same order.
/// Inference (no-grad mode, or nothing that needs a gradient) keeps nothing either way.
///
/// It runs on the fused kernels of the built-in RNN, LSTM (with `proj_size` too) and GRU
/// (stacked, bidirectional, with lengths; the RNN's backward reads only its outputs, so it
/// has nothing to recompute), on the compiled step of any cell, whose node keeps the
/// segments' states and runs the program again, and on the composed path, where each
/// segment is a [checkpointed](autograd::Tape::checkpoint) region of the tape.
///
/// ```
/// use rnn::{Layer, LayerConfig, Recompute};
/// use tensor::Rng;
/// let config = LayerConfig::new(8, 16).recompute(Recompute::Sqrt);
/// let lstm = Layer::<f32, _>::lstm(config, &mut Rng::seed_from_u64(0));
/// assert_eq!(lstm.config().recompute.segments(100), 10);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recompute {
    /// Keep every step's activations (the default).
    #[default]
    Off,
    /// Keep the states entering `k` segments of `⌈T / k⌉` steps, recompute the rest.
    Segments(usize),
    /// `Segments(⌈√T⌉)`.
    Sqrt,
}

impl Recompute {
    /// How many segments a sequence of `steps` steps is cut into (1: nothing recomputed; no
    /// more than `steps`).
    pub fn segments(self, steps: usize) -> usize {
        let k = match self {
            Recompute::Off => 1,
            Recompute::Segments(k) => k,
            Recompute::Sqrt => (1..=steps).find(|k| k * k >= steps).unwrap_or(1),
        };
        k.clamp(1, steps.max(1))
    }

    /// The steps in each segment of a sequence of `steps` steps: `⌈steps / k⌉` for
    /// [`segments`](Self::segments) `k` (the last one may be shorter); `steps` when off.
    pub fn segment_len(self, steps: usize) -> usize {
        steps.div_ceil(self.segments(steps)).max(1)
    }
}

impl LayerConfig {
    /// One layer, one direction, with biases, sequence-first, no dropout.
    pub fn new(input_size: usize, hidden_size: usize) -> Self {
        LayerConfig {
            input_size,
            hidden_size,
            num_layers: 1,
            bias: true,
            batch_first: false,
            dropout: 0.0,
            bidirectional: false,
            nonlinearity: Nonlinearity::Tanh,
            proj_size: 0,
            recompute: Recompute::Off,
        }
    }

    /// Sets `recompute`: keep only segment boundaries in a training forward and recompute the
    /// rest in the backward ([`Recompute`]).
    pub fn recompute(mut self, r: Recompute) -> Self {
        self.recompute = r;
        self
    }

    /// Sets `proj_size`.
    pub fn proj_size(mut self, p: usize) -> Self {
        self.proj_size = p;
        self
    }

    /// The features of each direction's output `h`: `proj_size` if set, else `hidden_size`.
    pub fn output_size(&self) -> usize {
        if self.proj_size > 0 {
            self.proj_size
        } else {
            self.hidden_size
        }
    }

    /// Sets `num_layers`.
    pub fn num_layers(mut self, n: usize) -> Self {
        self.num_layers = n;
        self
    }

    /// Sets `bidirectional`.
    pub fn bidirectional(mut self, on: bool) -> Self {
        self.bidirectional = on;
        self
    }

    /// Sets `batch_first`.
    pub fn batch_first(mut self, on: bool) -> Self {
        self.batch_first = on;
        self
    }

    /// Sets `dropout`.
    pub fn dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    /// Sets `bias`.
    pub fn bias(mut self, on: bool) -> Self {
        self.bias = on;
        self
    }

    /// Sets the vanilla RNN's nonlinearity.
    pub fn nonlinearity(mut self, n: Nonlinearity) -> Self {
        self.nonlinearity = n;
        self
    }

    /// 2 if bidirectional, else 1.
    pub fn num_directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// Panics unless the options describe a layer PyTorch would build: called by
    /// [`Layer::new`](super::Layer::new), whose `# Panics` section lists these cases.
    #[track_caller]
    pub(super) fn check(&self) {
        assert!(
            self.hidden_size > 0,
            "Layer: hidden_size must be greater than zero"
        );
        assert!(self.num_layers > 0, "Layer: num_layers must be at least 1");
        assert!(
            (0.0..=1.0).contains(&self.dropout),
            "Layer: dropout {} is not in [0, 1]",
            self.dropout
        );
        assert!(
            self.proj_size < self.hidden_size,
            "Layer: proj_size {} has to be smaller than hidden_size {}",
            self.proj_size,
            self.hidden_size
        );
        assert!(
            self.recompute != Recompute::Segments(0),
            "Layer: Recompute::Segments(0): a sequence is cut into one segment at least"
        );
        assert!(
            self.dropout == 0.0 || self.num_layers > 1,
            "Layer: dropout {} with num_layers 1 would do nothing: dropout acts between \
             stacked layers only (PyTorch warns of this)",
            self.dropout
        );
    }
}
