//! [`Layer`]: any [`Cell`] unrolled over time, stacked `num_layers` deep, optionally in both
//! directions, over batches of equal or variable lengths — with the shapes and semantics of
//! PyTorch's `nn.RNN`, `nn.LSTM` and `nn.GRU`.
//!
//! ```text
//! input   [seq, batch, input]   ([batch, seq, input] if batch_first)
//! output  [seq, batch, D·out]   (D = 2 if bidirectional; the reverse direction's output
//!                                 is concatenated after the forward one's; out = hidden,
//!                                 or proj_size for an LSTM with a projection)
//! state   each part [layers·D, batch, size], ordered l0, l0_reverse, l1, ... (size = out for
//!         h, hidden for the LSTM's c)
//! ```
//!
//! As in PyTorch, an unbatched input `[seq, input]` (whatever `batch_first` says) runs as a
//! batch of one: its initial state's parts are `[layers·D, hidden]`, and so are the final
//! state's, and the output is `[seq, D·hidden]`.
//!
//! The layer is `cells[layer][direction]` plus its config; the rest of this module is spread
//! by concern:
//!
//! - [`config`]: [`LayerConfig`] and the checks that refuse what PyTorch refuses;
//! - this file: the [`Layer`] type, its construction from any cell factory (sizes and
//!   parameter names checked once, here), its switches, and its parameters as a [`Module`];
//! - [`forward`]: a whole sequence at once — the fused kernels or the composed per-direction
//!   unroll, stacking, dropout between layers, masks for variable lengths, unbatched input;
//! - [`stream`]: [`Stream`], one step at a time with the state carried, no tape kept;
//! - [`tbptt`]: truncated BPTT, a fresh tape per [`Chunk`] and the state detached between;
//! - [`builtin`]: [`Layer::rnn`], [`Layer::lstm`] and [`Layer::gru`], the constructors for
//!   the built-in cells.
//!
//! Invariants every part relies on, established by [`Layer::new`]: there is at least one
//! layer; each layer has [`LayerConfig::num_directions`] cells, the reverse one second; the
//! first layer's cells take `input_size` features and the others `D · output_size`; every
//! cell's hidden size and output size agree with the config; every parameter has a unique
//! full name (`weight_hh_l1_reverse`); and every parameter a cell's `step` uses is listed by
//! its `named_params()` (run once at build time for cells without a fused kernel). The
//! `training` and `use_fused` switches are interior-mutable flags, so a shared `&Layer` can
//! be switched; they change which path runs, never the parameters.

mod builtin;
mod config;
mod forward;
mod inspect;
mod stream;
mod tbptt;

pub use config::{LayerConfig, Recompute};
pub use stream::Stream;
pub use tbptt::Chunk;

use std::cell::Cell as Flag;
use std::sync::Arc;

use autograd::{Param, Tape, Var};
use tensor::{Float, Rng, Tensor};

use crate::cell::{Cell, State};
use crate::compiled::{self, Path};
use crate::gru::GruCell;
use crate::lstm::LstmCell;
use crate::module::Module;
use crate::rnn_cell::RnnCell;

/// A recurrent layer over any cell.
pub struct Layer<T: Float, C: Cell<T>> {
    /// `cells[layer][direction]`, shared with the tape's re-runs when recomputing.
    cells: Vec<Vec<Arc<C>>>,
    config: LayerConfig,
    training: Flag<bool>,
    use_fused: Flag<bool>,
    use_compiled: Flag<bool>,
    /// The compiled programs, one per layer and direction (see [`crate::compiled`]).
    programs: compiled::Cache<T>,
    _marker: std::marker::PhantomData<T>,
}

/// A vanilla RNN layer (`nn.RNN`).
pub type Rnn<T> = Layer<T, RnnCell<T>>;
/// An LSTM layer (`nn.LSTM`).
pub type Lstm<T> = Layer<T, LstmCell<T>>;
/// A GRU layer (`nn.GRU`).
pub type Gru<T> = Layer<T, GruCell<T>>;

/// What a layer returns: the top layer's output at every step and the final state of every
/// layer and direction.
pub struct LayerOutput<T: Float, S> {
    /// `[seq, batch, D·hidden]` (`[batch, seq, D·hidden]` if batch_first); zero at padded steps.
    /// `[seq, D·hidden]` for an unbatched input.
    pub output: Var<T>,
    /// The final state; each part `[layers·D, batch, hidden]` (`[layers·D, hidden]` for an
    /// unbatched input).
    pub state: S,
}

impl<T: Float, S: State<T>> LayerOutput<T, S> {
    /// The final hidden state `h_n`, `[layers·D, batch, hidden]`.
    pub fn h_n(&self) -> &Var<T> {
        self.state.hidden()
    }
}

impl<T: Float> LayerOutput<T, (Var<T>, Var<T>)> {
    /// The LSTM's final cell state `c_n`, `[layers·D, batch, hidden]`.
    pub fn c_n(&self) -> &Var<T> {
        &self.state.1
    }
}

impl<T: Float, C: Cell<T>> Layer<T, C> {
    /// A layer whose cells come from `make_cell(input_size, rng)`: called once per layer and
    /// direction, with the input size that cell sees (`config.input_size` for the first layer,
    /// `D · output_size` above it).
    ///
    /// # Panics
    /// As PyTorch refuses (or warns): if `hidden_size` or `num_layers` is 0, `dropout` is not
    /// in `[0, 1]`, dropout is asked of a single layer (it acts between layers only), or
    /// `proj_size` is not smaller than `hidden_size`. Also if a cell's sizes (input, hidden,
    /// output) disagree with `config`, two parameters get one name, or a cell
    /// without a fused kernel uses a parameter in `step` that its `named_params()` does not list
    /// (found by running one step at build time), which no optimizer or file would see; or if
    /// `recompute` is `Segments(0)`.
    #[track_caller]
    pub fn new(
        config: LayerConfig,
        rng: &mut Rng,
        mut make_cell: impl FnMut(usize, &mut Rng) -> C,
    ) -> Self {
        config.check();
        let d = config.num_directions();
        let cells = (0..config.num_layers)
            .map(|l| {
                let input = if l == 0 {
                    config.input_size
                } else {
                    d * config.output_size()
                };
                (0..d)
                    .map(|_| {
                        let cell = make_cell(input, rng);
                        assert!(
                            cell.input_size() == input && cell.hidden_size() == config.hidden_size,
                            "Layer: the cell for layer {l} has sizes (input {}, hidden {}), \
                             expected (input {input}, hidden {})",
                            cell.input_size(),
                            cell.hidden_size(),
                            config.hidden_size
                        );
                        let output = cell.state_sizes()[0];
                        assert!(
                            output == config.output_size(),
                            "Layer: the cell for layer {l} outputs {output} features, expected \
                             {} (proj_size {}, hidden_size {})",
                            config.output_size(),
                            config.proj_size,
                            config.hidden_size
                        );
                        Arc::new(cell)
                    })
                    .collect()
            })
            .collect();
        let layer = Layer {
            cells,
            config,
            training: Flag::new(true),
            use_fused: Flag::new(true),
            use_compiled: Flag::new(true),
            programs: Default::default(),
            _marker: std::marker::PhantomData,
        };
        // Full names (`weight_hh_l1_reverse`), so gradcheck reports and tape graphs say which.
        let named = layer.named_params();
        for (i, (name, p)) in named.iter().enumerate() {
            assert!(
                named[..i].iter().all(|(other, _)| other != name),
                "Layer: two parameters are named '{name}' (a cell's named_params() repeats a name)"
            );
            p.set_name(name.clone());
        }
        for cell in layer.cells.iter().flatten() {
            check_params_listed(&**cell);
        }
        layer
    }

    /// The options.
    pub fn config(&self) -> &LayerConfig {
        &self.config
    }

    /// The cell of `layer` in `direction` (0 forward, 1 reverse).
    pub fn cell(&self, layer: usize, direction: usize) -> &C {
        &self.cells[layer][direction]
    }

    /// Whether dropout is active.
    pub fn is_training(&self) -> bool {
        self.training.get()
    }

    /// Whether the fused kernels run (the default, for the built-in cells): `false` forces
    /// the composed path, one op per equation per step, for every cell.
    pub fn set_fused(&self, on: bool) {
        self.use_fused.set(on);
    }

    /// Whether this layer runs fused kernels: the switch is on and its cells have one.
    pub fn is_fused(&self) -> bool {
        self.use_fused.get() && self.cells[0][0].fused().is_some()
    }

    /// Whether cells without a fused kernel (or with the fused switch off) run compiled (the
    /// default): `false` forces the composed path, where every op of every step is on the
    /// tape for you to read. [`explain`](Self::explain) says which path runs.
    pub fn set_compiled(&self, on: bool) {
        self.use_compiled.set(on);
    }

    /// Which path each layer and direction runs, and on the composed path, why: the op of
    /// `step` the compiler stopped at. Traces the step for a batch of 2 (the forward traces
    /// for its own batch size, and keeps the program).
    ///
    /// ```
    /// use rnn::{Layer, LayerConfig, Path};
    /// use tensor::Rng;
    /// let lstm = Layer::<f32, _>::lstm(LayerConfig::new(3, 4), &mut Rng::seed_from_u64(0));
    /// assert_eq!(lstm.explain()[0].2, Path::Fused);
    /// lstm.set_fused(false);
    /// assert!(matches!(lstm.explain()[0].2, Path::Compiled { .. }));
    /// lstm.set_compiled(false);
    /// assert!(matches!(lstm.explain()[0].2, Path::Composed(_)));
    /// ```
    pub fn explain(&self) -> Vec<(usize, usize, Path)> {
        let mut out = Vec::new();
        for (l, cells) in self.cells.iter().enumerate() {
            for (d, cell) in cells.iter().enumerate() {
                let path = if self.is_fused() {
                    Path::Fused
                } else if !self.use_compiled.get() {
                    Path::Composed("the compiled path is switched off (set_compiled)".into())
                } else {
                    match compiled::compile(&**cell, 2) {
                        Ok(p) => Path::Compiled {
                            hoisted: p.hoisted_ops(),
                            per_step: p.len(),
                        },
                        Err(why) => Path::Composed(why),
                    }
                };
                out.push((l, d, path));
            }
        }
        out
    }

    /// The compiled program of layer `l`'s direction `d` for `batch` rows, cached; `None` if
    /// the compiled path is off or the step does not compile.
    fn program(&self, l: usize, d: usize, batch: usize) -> Option<Arc<compiled::Program<T>>> {
        if !self.use_compiled.get() {
            return None;
        }
        let cell = &self.cells[l][d];
        let key = compiled::Key::of(&**cell, batch, self.is_training());
        let slot = l * self.config.num_directions() + d;
        compiled::program(&self.programs, slot, &**cell, key).ok()
    }
}

/// Runs one step of `cell` (batch of one, zeros) on a scratch tape and panics if it used a
/// parameter its `named_params()` does not list. Built-in cells (with a fused kernel) are known to
/// list theirs. The thread's generator is put back, in case `step` draws from it.
#[track_caller]
fn check_params_listed<T: Float, C: Cell<T>>(cell: &C) {
    if cell.fused().is_some() {
        return;
    }
    let tape = Tape::new();
    let x = tape.constant(Tensor::zeros(&[1, cell.input_size()]));
    crate::module::at_rng_state(None, || cell.step(&x, &cell.zero_state(&tape, 1)));
    let listed = cell.params();
    if let Some(p) = tape
        .params()
        .into_iter()
        .find(|p| !listed.iter().any(|q| q.same(p)))
    {
        panic!(
            "Layer: the cell's step uses parameter '{}' of shape {:?}, which its named_params() \
             does not list: no optimizer built from the layer's params() would train it, and no \
             saved file would hold it",
            p.name(),
            p.shape()
        );
    }
}

impl<T: Float, C: Cell<T>> Module<T> for Layer<T, C> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        let mut out = Vec::new();
        for (l, cells) in self.cells.iter().enumerate() {
            for (d, cell) in cells.iter().enumerate() {
                let suffix = if d == 1 { "_reverse" } else { "" };
                for (name, p) in cell.named_params() {
                    out.push((format!("{name}_l{l}{suffix}"), p));
                }
            }
        }
        out
    }

    /// Switches the layer's dropout and every cell's own (a cell with dropout inside `step`).
    fn set_training(&self, training: bool) {
        self.training.set(training);
        for cell in self.cells.iter().flatten() {
            cell.set_training(training);
        }
    }
}
