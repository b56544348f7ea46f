//! # rnn — recurrent networks on the Unroll tape
//!
//! Vanilla RNN, LSTM and GRU cells with exactly PyTorch's equations, gate order, parameter
//! names and initialisation; a [`Layer`] that unrolls *any* [`Cell`] over time, stacked,
//! bidirectional and over variable-length batches with the shapes of `nn.RNN`/`nn.LSTM`/
//! `nn.GRU`; [`Linear`], [`Embedding`], dropout and losses; and safetensors weights and
//! training checkpoints in [`io`].
//!
//! ```
//! use autograd::{clip_grad_norm, optim::{Adam, AdamConfig, Optimizer}, Tape};
//! use rnn::{mse_loss, Layer, LayerConfig, Linear, Lstm, Module};
//! use tensor::{Rng, Tensor};
//!
//! let mut rng = Rng::seed_from_u64(0);
//! // nn.LSTM(input_size=1, hidden_size=8, num_layers=2) and a linear read-out.
//! let lstm: Lstm<f32> = Layer::lstm(LayerConfig::new(1, 8).num_layers(2), &mut rng);
//! let head = Linear::new(8, 1, true, &mut rng);
//! let mut params = lstm.params();
//! params.extend(head.params());
//! let mut opt = Adam::new(params, AdamConfig { lr: 0.02, ..Default::default() });
//!
//! // Learn to output the running mean of the inputs: [seq, batch, 1].
//! let x = Tensor::<f32>::rand_uniform(&[10, 4, 1], 0.0, 1.0, &mut rng);
//! let counts = Tensor::arange(1.0, 11.0, 1.0).reshape(&[10, 1, 1]);
//! let mut running = x.to_vec();
//! for t in 1..10 { for b in 0..4 { running[t * 4 + b] += running[(t - 1) * 4 + b]; } }
//! let y = Tensor::from_vec(running, &[10, 4, 1]) / counts;
//!
//! let mut losses = vec![];
//! for _ in 0..60 {
//!     let tape = Tape::new();
//!     let out = lstm.forward(&tape.constant(x.clone()));   // output [10, 4, 8], h_n, c_n
//!     let loss = mse_loss(&head.forward(&out.output), &y);
//!     losses.push(loss.item());
//!     opt.zero_grad();
//!     loss.backward();
//!     clip_grad_norm(opt.params(), 1.0);
//!     opt.step();
//! }
//! assert!(losses[59] < 0.1 * losses[0]);
//! ```
//!
//! Write your own cell by implementing [`Cell`]; `examples/custom_cell.rs` shows a minimal
//! gated unit getting stacking, bidirectionality, variable lengths, truncated BPTT and
//! gradient checking with no further code.
#![warn(missing_docs)]

pub mod attention;
mod cell;
mod compiled;
mod dropout;
mod fused;
mod gru;
mod init;
pub mod io;
mod layer;
mod linear;
mod loss;
mod lstm;
mod module;
mod nonlinearity;
pub mod probe;
mod rnn_cell;

pub use attention::{padding_mask, AdditiveAttention, Attended, DotAttention};
pub use cell::{Cell, State};
pub use compiled::Path;
pub use dropout::{dropout, Dropout};
pub use fused::{release_buffers, Fused};
pub use gru::GruCell;
pub use layer::{Chunk, Gru, Layer, LayerConfig, LayerOutput, Lstm, Recompute, Rnn, Stream};
pub use linear::{Embedding, Linear};
pub use loss::{
    cross_entropy, cross_entropy_with, l1_loss, l1_loss_with, mse_loss, mse_loss_with, nll_loss,
    nll_loss_with, ClassLossOptions, Reduction,
};
pub use lstm::LstmCell;
pub use module::{manual_seed, prefixed, rng_state, set_rng_state, with_rng, Module};
pub use nonlinearity::Nonlinearity;
pub use probe::{Probe, Ran, Recording, Saturation};
pub use rnn_cell::RnnCell;
