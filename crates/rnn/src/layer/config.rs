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
        }
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
            self.dropout == 0.0 || self.num_layers > 1,
            "Layer: dropout {} with num_layers 1 would do nothing: dropout acts between \
             stacked layers only (PyTorch warns of this)",
            self.dropout
        );
    }
}
