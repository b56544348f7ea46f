//! # autograd — a reverse-mode tape
//!
//! A [`Tape`] records every differentiable op as it runs (a Wengert list); a variable's
//! [`backward`](Var::backward) walks the list in reverse, each op's rule turning the gradient
//! of its output into gradients of its inputs. Every op lives in `ops/` with its forward and
//! its backward side by side and the derivative in its doc comment.
//!
//! [`Param`]s hold the weights across training steps while the tape is rebuilt every step, so a
//! training loop reads like PyTorch's:
//!
//! ```
//! use autograd::{clip_grad_norm, optim::{Adam, AdamConfig, Optimizer}, Param, Tape};
//! use tensor::{Rng, Tensor};
//!
//! let mut rng = Rng::seed_from_u64(0);
//! let w = Param::new("weight", Tensor::<f32>::rand_uniform(&[1, 3], -0.1, 0.1, &mut rng));
//! let b = Param::new("bias", Tensor::<f32>::zeros(&[1]));
//! let x = Tensor::<f32>::rand_normal(&[32, 3], 0.0, 1.0, &mut rng);
//! let y = x.matmul(&Tensor::from_vec(vec![1.0, -2.0, 0.5], &[3, 1])); // the target map
//! let mut opt = Adam::new(vec![w.clone(), b.clone()], AdamConfig { lr: 0.05, ..Default::default() });
//! let mut first = None;
//! for _ in 0..200 {
//!     let tape = Tape::new();                                   // a fresh tape per step
//!     let y_hat = tape.constant(x.clone()).linear(&w) + &b;     // forward
//!     let loss = (y_hat - &y).square().mean_all();               // loss
//!     first.get_or_insert(loss.item());
//!     opt.zero_grad();
//!     loss.backward();                                          // backward
//!     clip_grad_norm(opt.params(), 1.0);                        // clip
//!     opt.step();                                               // step
//! }
//! let tape = Tape::new();
//! let loss = ((tape.constant(x.clone()).linear(&w) + &b) - &y).square().mean_all();
//! assert!(loss.item() < 1e-3 * first.unwrap());
//! ```
//!
//! For learners: [`Tape::nodes`] and [`Tape::to_dot`] show what was recorded, and
//! [`Tape::set_anomaly_detection`] names the first op that produces NaN or Inf. For cell
//! authors: [`gradcheck`] compares the tape's gradients with finite differences in one call,
//! and [`Var::custom_op`] puts any hand-written forward/backward pair on the tape.

#![warn(missing_docs)]

mod clip;
mod dot;
mod gradcheck;
mod inspect;
mod ops;
pub mod optim;
mod param;
mod tape;
mod trace;
mod var;

pub use clip::{clip_grad_norm, clip_grad_value};
pub use gradcheck::{gradcheck, ElementCheck, GradCheck, GradcheckReport, Operand};
pub use inspect::{grad, l2_norm, Anomaly, Captured, Pass, Scope};
pub use ops::elementwise::{Binary, Reads, Unary};
pub use param::Param;
pub use tape::{Gradients, NodeInfo, Tape};
pub use trace::{Prim, TraceInput, TracedOp};
pub use var::{IntoVar, Var};
