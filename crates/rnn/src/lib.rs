//! # rnn — recurrent networks on the Unroll tape
//!
//! placeholder
#![warn(missing_docs)]

mod cell;
mod dropout;
mod gru;
mod init;
pub mod io;
mod layer;
mod linear;
mod loss;
mod lstm;
mod module;
mod rnn_cell;

pub use cell::{Cell, State};
pub use dropout::{dropout, Dropout};
pub use gru::GruCell;
pub use layer::{Chunk, Gru, Layer, LayerConfig, LayerOutput, Lstm, Rnn, Stream};
pub use linear::{Embedding, Linear};
pub use loss::{
    cross_entropy, cross_entropy_with, l1_loss, l1_loss_with, mse_loss, mse_loss_with, nll_loss,
    nll_loss_with, ClassLossOptions, Reduction,
};
pub use lstm::LstmCell;
pub use module::{manual_seed, prefixed, rng_state, set_rng_state, with_rng, Module};
pub use rnn_cell::{Nonlinearity, RnnCell};
