//! The workspace's own integration tests, as one test binary (one link instead of one per
//! file): the bad-input suite over the whole API, the docs' claims, and the custom-cell demo
//! against its guide (it runs the example's binary, so its source is compiled in here too).
//! Every other demo's end-to-end test is in `tests/demos/NAME.rs`, compiled into the example
//! itself (`test = true` in `Cargo.toml`), so `cargo test` builds those demos once, not as an
//! example and again here.

mod bad_input;
mod demo_custom_cell;
mod docs;
