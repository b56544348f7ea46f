//! Step-at-a-time inference: [`Layer::stream`] and [`Stream`].
//!
//! A stream feeds one time step through every layer and keeps the resulting state between
//! calls as plain tensor values, one `Vec` of state parts per layer. Each step runs on a fresh
//! tape in no-grad mode and nothing of it is kept, so memory stays constant however many
//! steps are fed; the outputs equal those of [`Layer::forward`] over the same steps.
//!
//! Only one direction can stream (the reverse one needs the sequence's end), so a stream uses
//! each layer's forward cell; the batch size is fixed by the first step until
//! [`Stream::reset`].

use autograd::Tape;
use tensor::{Float, Tensor};

use super::Layer;
use crate::cell::{check_step_state, Cell, State};

impl<T: Float, C: Cell<T>> Layer<T, C> {
    /// A stream over this layer: feed one step at a time with the state carried between calls,
    /// in no-grad mode, so memory stays constant however many steps are fed.
    ///
    /// # Panics
    /// If the layer is bidirectional (the reverse direction needs the whole sequence).
    pub fn stream(&self) -> Stream<'_, T, C> {
        assert!(
            !self.config.bidirectional,
            "Layer::stream: a bidirectional layer needs the whole sequence, it cannot stream"
        );
        Stream {
            layer: self,
            state: None,
        }
    }
}

/// Step-at-a-time inference; see [`Layer::stream`].
pub struct Stream<'a, T: Float, C: Cell<T>> {
    layer: &'a Layer<T, C>,
    /// Per layer, the state parts' values.
    state: Option<Vec<Vec<Tensor<T>>>>,
}

impl<T: Float, C: Cell<T>> Stream<'_, T, C> {
    /// Feeds one step `x_t` (`[batch, input]`) and returns the top layer's hidden output
    /// `[batch, hidden]`.
    ///
    /// # Panics
    /// If `x_t` is not `[batch, input_size]`, or its batch differs from the carried state's.
    #[track_caller]
    pub fn step(&mut self, x_t: &Tensor<T>) -> Tensor<T> {
        let input_size = self.layer.config.input_size;
        if x_t.rank() != 2 || x_t.shape()[1] != input_size {
            panic!(
                "Stream::step: x_t of shape {:?} does not fit input_size {input_size} (expected \
                 [batch, input])",
                x_t.shape()
            );
        }
        if let Some(batch) = self.state.as_ref().map(|s| s[0][0].shape()[0]) {
            if x_t.shape()[0] != batch {
                panic!(
                    "Stream::step: x_t has batch {}, the carried state has batch {batch} (reset() \
                     the stream to start another batch)",
                    x_t.shape()[0]
                );
            }
        }
        let tape = Tape::new();
        tape.no_grad(|| {
            let mut input = tape.constant(x_t.clone());
            let mut next_state = Vec::with_capacity(self.layer.cells.len());
            for (l, cells) in self.layer.cells.iter().enumerate() {
                let cell = &cells[0];
                let state = match &self.state {
                    Some(s) => C::State::from_parts(
                        s[l].iter().map(|p| tape.constant(p.clone())).collect(),
                    ),
                    None => cell.zero_state(&tape, x_t.shape()[0]),
                };
                let new = cell.step(&input, &state);
                check_step_state(&new, x_t.shape()[0], &cell.state_sizes());
                input = new.hidden().clone();
                next_state.push(new.parts().iter().map(|p| p.value().clone()).collect());
            }
            self.state = Some(next_state);
            input.value().clone()
        })
    }

    /// The carried state: per layer, the state parts `[batch, hidden]`.
    pub fn state(&self) -> Option<&Vec<Vec<Tensor<T>>>> {
        self.state.as_ref()
    }

    /// Starts again from zeros.
    pub fn reset(&mut self) {
        self.state = None;
    }
}
