//! The workspace's own integration tests, as one test binary (one link instead of one per
//! file): the bad-input suite over the whole API, the docs' claims, and each demo end to end
//! on tiny settings (each `demo_*` module compiles its example's source in).

// Each demo module compiles its example's source, and each example has its own
// `mod common;` (examples/common/): loaded once per demo here, as in each example's binary.
#![allow(clippy::duplicate_mod)]

mod bad_input;
mod demo_bptt_explorer;
mod demo_char_lm;
mod demo_custom_cell;
mod demo_forecast;
mod demo_tape_tour;
mod demo_translate;
mod docs;
