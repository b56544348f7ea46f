//! The workspace's own integration tests, as one test binary (one link instead of one per
//! file): the bad-input suite over the whole API and the docs' claims. Each demo's end-to-end
//! test is in `tests/demos/NAME.rs`, compiled into the example itself (`test = true` in
//! `Cargo.toml`), so `cargo test` builds each demo once, not as an example and again here.

mod bad_input;
mod docs;
