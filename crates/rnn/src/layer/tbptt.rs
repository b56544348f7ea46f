//! Truncated backpropagation through time: [`Layer::tbptt`] and [`Layer::tbptt_with`], which
//! hand each [`Chunk`] to the caller.
//!
//! The sequence is cut into chunks of `k` steps (the last may be shorter). Each chunk runs
//! [`Layer::forward_with`] on its own tape, starting from the previous chunk's final state
//! brought in as constants: the state's *values* carry on across the boundary while gradients
//! stop there, so a backward pass costs at most `k` steps. With lengths, each chunk gets each
//! sequence's length within it, and a sequence that has already ended gets 0 (it keeps its
//! state and outputs zeros), so the chunks' outputs and the final state are those of one
//! forward over the whole batch. Only one direction is allowed: a reverse direction would
//! restart at every chunk's end.

use std::ops::Range;

use autograd::{Tape, Var};
use tensor::{Float, Tensor};

use super::forward::step_masks;
use super::Layer;
use crate::cell::{Cell, State};

impl<T: Float, C: Cell<T>> Layer<T, C> {
    /// Truncated backpropagation through time: runs over `x` (`[seq, batch, input]`, or
    /// batch-first) in chunks of `k` steps. Each chunk gets a fresh tape, starts from the
    /// previous chunk's final state *detached* (so gradients stop at chunk boundaries while the
    /// state carries on), and is handed to `on_chunk` to compute a loss and step an optimizer.
    /// Returns the final state's values.
    ///
    /// # Panics
    /// If `k` is 0, or as [`tbptt_with`](Self::tbptt_with).
    #[track_caller]
    pub fn tbptt(
        &self,
        x: &Tensor<T>,
        k: usize,
        init: Option<Vec<Tensor<T>>>,
        on_chunk: impl FnMut(Chunk<T, C::State>),
    ) -> Vec<Tensor<T>> {
        self.tbptt_with(x, k, init, None, on_chunk)
    }

    /// [`tbptt`](Self::tbptt) over a padded batch: `lengths` as for
    /// [`forward_with`](Self::forward_with), for the whole sequence. Each chunk runs with each
    /// sequence's length within it; a sequence that ended in an earlier chunk keeps its state
    /// through the later ones and outputs zeros there, so the outputs and final states are
    /// those of one [`forward_with`](Self::forward_with) over the whole batch.
    ///
    /// # Panics
    /// If `k` is 0, `x` is not 3-D, the layer is bidirectional (each chunk would run its
    /// reverse direction from the chunk's end), or a length is not in `1..=seq`.
    #[track_caller]
    pub fn tbptt_with(
        &self,
        x: &Tensor<T>,
        k: usize,
        init: Option<Vec<Tensor<T>>>,
        lengths: Option<&[usize]>,
        mut on_chunk: impl FnMut(Chunk<T, C::State>),
    ) -> Vec<Tensor<T>> {
        assert!(k > 0, "Layer::tbptt: the chunk length k must be at least 1");
        if x.rank() != 3 || self.config.bidirectional {
            panic!(
                "Layer::tbptt: needs a batched [seq, batch, input] input (got {:?}) and one \
                 direction (bidirectional: {})",
                x.shape(),
                self.config.bidirectional
            );
        }
        let time_dim = usize::from(self.config.batch_first);
        let seq = x.shape()[time_dim];
        if let Some(l) = lengths {
            step_masks(l, seq, x.shape()[1 - time_dim], false);
        }
        let mut carried = init;
        let mut start = 0;
        while start < seq {
            let len = k.min(seq - start);
            let tape = Tape::new();
            let input = tape.constant(x.narrow(time_dim, start, len).contiguous());
            let init_state = carried.as_ref().map(|parts| {
                C::State::from_parts(parts.iter().map(|p| tape.constant(p.clone())).collect())
            });
            let within: Option<Vec<usize>> = lengths.map(|l| {
                l.iter()
                    .map(|&l| l.saturating_sub(start).min(len))
                    .collect()
            });
            let out = self.run(&input, init_state.as_ref(), within.as_deref(), true);
            carried = Some(
                out.state
                    .parts()
                    .iter()
                    .map(|p| p.value().clone())
                    .collect(),
            );
            on_chunk(Chunk {
                tape,
                range: start..start + len,
                output: out.output,
                state: out.state,
            });
            start += len;
        }
        carried.unwrap_or_default()
    }
}

/// One chunk of [`Layer::tbptt`].
pub struct Chunk<T: Float, S> {
    /// The chunk's own tape.
    pub tape: Tape<T>,
    /// The time steps it covers.
    pub range: Range<usize>,
    /// The layer's output over the chunk.
    pub output: Var<T>,
    /// The state at the chunk's end.
    pub state: S,
}
