//! # Unroll — automatic differentiation and recurrent networks, from scratch
//!
//! Unroll is three crates, re-exported here:
//!
//! - [`tensor`]: n-dimensional `f32`/`f64` arrays with broadcasting, reductions and SIMD
//!   matrix products;
//! - [`autograd`]: a reverse-mode tape where every op's forward and backward rule sit side by
//!   side, with gradient checking, optimizers and clipping;
//! - [`rnn`]: vanilla RNN, LSTM and GRU layers with PyTorch's equations, gate order and
//!   parameter names (stacked, bidirectional, variable-length), fused kernels for speed, a
//!   [`Cell`](rnn::Cell) trait for your own cells, safetensors weights and checkpoints.
//!
//! A GRU reads a sequence, a linear head predicts from its last state, and one training step
//! flows through all three crates:
//!
//! ```
//! use unroll::autograd::{clip_grad_norm, optim::{Adam, AdamConfig, Optimizer}, Tape};
//! use unroll::rnn::{mse_loss, Gru, Layer, LayerConfig, Linear, Module};
//! use unroll::tensor::{Rng, Tensor};
//!
//! let mut rng = Rng::seed_from_u64(0);
//! let gru: Gru<f32> = Layer::gru(LayerConfig::new(2, 16), &mut rng); // nn.GRU(2, 16)
//! let head = Linear::new(16, 1, true, &mut rng);                     // nn.Linear(16, 1)
//! let mut params = gru.params();
//! params.extend(head.params());
//! let mut opt = Adam::new(params, AdamConfig { lr: 0.01, ..Default::default() });
//!
//! // Task: the sum of each sequence's first channel. x is [seq, batch, input].
//! let x = Tensor::<f32>::rand_uniform(&[8, 32, 2], 0.0, 1.0, &mut rng);
//! let y = x.narrow(2, 0, 1).sum(&[0], false); // [32, 1]
//! let mut losses = vec![];
//! for _ in 0..150 {
//!     let tape = Tape::new();                          // 1. a fresh tape records the step
//!     let out = gru.forward(&tape.constant(x.clone())); // 2. forward (a fused GRU kernel)
//!     let h_last = out.h_n().select(0, 0);              //    final state [32, 16]
//!     let loss = mse_loss(&head.forward(&h_last), &y);
//!     losses.push(loss.item());
//!     opt.zero_grad();
//!     loss.backward();                                  // 3. backward through time
//!     clip_grad_norm(opt.params(), 1.0);                // 4. clip and update
//!     opt.step();
//! }
//! assert!(losses[149] < 0.05 * losses[0]);
//! ```
//!
//! Where to go next:
//!
//! - `docs/bptt.md`: backpropagation through time for the three cells, equation by equation,
//!   with links to the code that implements each;
//! - `docs/custom-cell.md`: write, gradient-check, train and fuse your own cell;
//! - `docs/architecture.md`: what each crate owns and where to add an op, a cell, an optimizer
//!   or a loss;
//! - the demos: `cargo run --release --example forecast` (also `translate`, `char_lm`,
//!   `bptt_explorer`), each with `--help`.

#![warn(missing_docs)]

pub use autograd;
pub use rnn;
pub use tensor;
