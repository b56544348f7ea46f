//! The tensor crate's integration tests, as one test binary (one link instead of one per
//! file): each module is one family of ops or one property, `common` their shared helpers.

mod common;
mod determinism;
mod elementwise;
mod errors;
mod matmul;
mod random;
mod reduce;
mod structure;
mod views;
