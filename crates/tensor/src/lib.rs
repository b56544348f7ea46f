//! # tensor — n-dimensional arrays for Unroll
//!
//! [`Tensor<T>`] holds `f32` or `f64` (and `i64` indices, `bool` masks) in shared, row-major
//! storage seen through a shape and strides, so views (`reshape`, `permute`, `transpose`,
//! `narrow`, `broadcast_to`) never copy. Elementwise ops broadcast like NumPy, reductions work
//! over any set of axes, and [`matmul`](Tensor::matmul) runs on `matrixmultiply`'s SIMD
//! kernels with strided operands. Large ops are split across `rayon` threads so that each
//! output element is computed by one thread in a fixed order: results are bit-identical
//! whatever the thread count.
//!
//! This crate knows nothing about gradients: the `autograd` crate builds on it.
//!
//! ```
//! use tensor::{Rng, Tensor};
//!
//! let mut rng = Rng::seed_from_u64(0);
//! let x = Tensor::<f32>::rand_normal(&[4, 3], 0.0, 1.0, &mut rng); // a batch of 4 inputs
//! let w = Tensor::<f32>::rand_uniform(&[3, 2], -0.5, 0.5, &mut rng);
//! let b = Tensor::<f32>::zeros(&[2]);
//! let h = (x.matmul(&w) + &b).tanh(); // [4, 2]; the bias broadcasts over the batch
//! assert_eq!(h.shape(), &[4, 2]);
//! let p = h.softmax(-1);
//! assert!((p.sum_all().item() - 4.0).abs() < 1e-5);
//! ```
//!
//! Shape errors are programmer errors: they panic, naming the op and both shapes, e.g.
//! `matmul: lhs [3, 4] and rhs [5, 2] do not agree on the inner dimension`.

#![warn(missing_docs)]

mod element;
mod error;
mod fmt;
mod math;
pub mod ops;
pub mod pool;
mod random;
mod shape;
pub mod simd;
mod tensor;

pub use element::{sigmoid, DType, Element, Float};
pub use error::ShapeError;
pub use random::Rng;
pub use shape::{
    broadcast_shapes, checked_numel, contiguous_strides, numel, resolve_dim, unravel, Dim,
};
pub use tensor::Tensor;
