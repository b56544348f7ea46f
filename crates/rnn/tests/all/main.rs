//! The rnn crate's integration tests, as one test binary (one link instead of one per file):
//! cells, layers, the fused kernels, modules, files, and parity with PyTorch; `common` holds
//! their shared helpers.

mod anomaly;
mod cells;
mod common;
mod compiled;
mod custom_cells;
mod fused;
mod io;
mod layers;
mod modules;
mod probe;
mod recompute;
mod torch_parity;
