//! The constructors for the built-in cells: [`Layer::rnn`], [`Layer::lstm`] and
//! [`Layer::gru`], PyTorch's `nn.RNN`, `nn.LSTM` and `nn.GRU`.
//!
//! Each passes the config's cell options (nonlinearity, bias, projection) to the cell's own
//! constructor and leaves the rest to [`Layer::new`]. As in PyTorch, only the LSTM accepts
//! `proj_size`; the others refuse it before any cell is built.

use tensor::{Float, Rng};

use super::{Layer, LayerConfig};
use crate::gru::GruCell;
use crate::lstm::LstmCell;
use crate::rnn_cell::RnnCell;

impl<T: Float> Layer<T, RnnCell<T>> {
    /// `nn.RNN`: vanilla RNN cells with `config.nonlinearity`.
    ///
    /// # Panics
    /// As [`Layer::new`], and if `config.proj_size` is set (an LSTM option, as PyTorch says).
    #[track_caller]
    pub fn rnn(config: LayerConfig, rng: &mut Rng) -> Self {
        no_projection("rnn", &config);
        let (nl, bias, h) = (config.nonlinearity, config.bias, config.hidden_size);
        Layer::new(config, rng, |input, rng| {
            RnnCell::with_options(input, h, nl, bias, rng)
        })
    }
}

impl<T: Float> Layer<T, LstmCell<T>> {
    /// `nn.LSTM`, with `proj_size` if set.
    #[track_caller]
    pub fn lstm(config: LayerConfig, rng: &mut Rng) -> Self {
        let (bias, h, p) = (config.bias, config.hidden_size, config.proj_size);
        Layer::new(config, rng, |input, rng| {
            LstmCell::with_projection(input, h, p, bias, rng)
        })
    }
}

impl<T: Float> Layer<T, GruCell<T>> {
    /// `nn.GRU`.
    ///
    /// # Panics
    /// As [`Layer::new`], and if `config.proj_size` is set (an LSTM option, as PyTorch says).
    #[track_caller]
    pub fn gru(config: LayerConfig, rng: &mut Rng) -> Self {
        no_projection("gru", &config);
        let (bias, h) = (config.bias, config.hidden_size);
        Layer::new(config, rng, |input, rng| {
            GruCell::with_bias(input, h, bias, rng)
        })
    }
}

/// PyTorch's refusal of `proj_size` for its RNN and GRU.
#[track_caller]
fn no_projection(layer: &str, config: &LayerConfig) {
    assert!(
        config.proj_size == 0,
        "Layer::{layer}: proj_size argument is only supported for LSTM, not RNN or GRU"
    );
}
