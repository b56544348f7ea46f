//! The differentiable ops, one file per family. Each op computes its value with the `tensor`
//! crate and, right beside it, gives the rule that carries the gradient back to each input;
//! the derivative is written in the op's doc comment.
//!
//! Conventions: `g` is the gradient of the loss with respect to the op's output; rules prefer
//! to reuse the output `y` over recomputing from the input (`1 − y²` for tanh); ops that
//! broadcast end their rules with `sum_to(input shape)`.

pub mod elementwise;
pub mod matmul;
pub mod reduce;
pub mod shape;
pub mod softmax;
pub mod structure;
