//! Errors for data that comes from outside the program.

use thiserror::Error;

/// A shape that does not fit the data it was given.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShapeError {
    /// The data's length is not the product of the shape.
    #[error(
        "data of length {len} does not fit shape {shape:?} ({} elements)",
        crate::shape::numel(shape)
    )]
    LengthMismatch {
        /// Length of the data.
        len: usize,
        /// The requested shape.
        shape: Vec<usize>,
    },
    /// The shape has more elements than this machine can address.
    #[error("shape {shape:?} has more elements than this machine can address")]
    TooLarge {
        /// The requested shape.
        shape: Vec<usize>,
    },
}
