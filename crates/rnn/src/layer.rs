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

use std::cell::Cell as Flag;
use std::ops::Range;

use autograd::{Param, Tape, Var};
use serde::{Deserialize, Serialize};
use tensor::{Float, Rng, Tensor};

use crate::cell::{Cell, State};
use crate::dropout::dropout;
use crate::fused;
use crate::gru::GruCell;
use crate::lstm::LstmCell;
use crate::module::Module;
use crate::nonlinearity::Nonlinearity;
use crate::rnn_cell::RnnCell;

/// The options of a recurrent layer, named and defaulted as in PyTorch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerConfig {
    /// Features of the input.
    pub input_size: usize,
    /// Features of the hidden state.
    pub hidden_size: usize,
    /// Stacked layers (default 1).
    pub num_layers: usize,
    /// Biases in the built-in cells (default true).
    pub bias: bool,
    /// Input and output as `[batch, seq, feature]` (default false: `[seq, batch, feature]`).
    pub batch_first: bool,
    /// Dropout on the outputs of every layer but the last, in training mode (default 0).
    pub dropout: f64,
    /// Run a second cell per layer from the end of the sequence backwards (default false).
    pub bidirectional: bool,
    /// The vanilla RNN's nonlinearity (default tanh; ignored by other cells).
    pub nonlinearity: Nonlinearity,
    /// The LSTM's projection of `h` to this many features (default 0: none), as
    /// `nn.LSTM(proj_size=…)`; other cells refuse it.
    #[serde(default)]
    pub proj_size: usize,
}

impl LayerConfig {
    /// One layer, one direction, with biases, sequence-first, no dropout.
    pub fn new(input_size: usize, hidden_size: usize) -> Self {
        LayerConfig {
            input_size,
            hidden_size,
            num_layers: 1,
            bias: true,
            batch_first: false,
            dropout: 0.0,
            bidirectional: false,
            nonlinearity: Nonlinearity::Tanh,
            proj_size: 0,
        }
    }

    /// Sets `proj_size`.
    pub fn proj_size(mut self, p: usize) -> Self {
        self.proj_size = p;
        self
    }

    /// The features of each direction's output `h`: `proj_size` if set, else `hidden_size`.
    pub fn output_size(&self) -> usize {
        if self.proj_size > 0 {
            self.proj_size
        } else {
            self.hidden_size
        }
    }

    /// Sets `num_layers`.
    pub fn num_layers(mut self, n: usize) -> Self {
        self.num_layers = n;
        self
    }

    /// Sets `bidirectional`.
    pub fn bidirectional(mut self, on: bool) -> Self {
        self.bidirectional = on;
        self
    }

    /// Sets `batch_first`.
    pub fn batch_first(mut self, on: bool) -> Self {
        self.batch_first = on;
        self
    }

    /// Sets `dropout`.
    pub fn dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    /// Sets `bias`.
    pub fn bias(mut self, on: bool) -> Self {
        self.bias = on;
        self
    }

    /// Sets the vanilla RNN's nonlinearity.
    pub fn nonlinearity(mut self, n: Nonlinearity) -> Self {
        self.nonlinearity = n;
        self
    }

    /// 2 if bidirectional, else 1.
    pub fn num_directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }
}

/// A recurrent layer over any cell.
pub struct Layer<T: Float, C: Cell<T>> {
    /// `cells[layer][direction]`.
    cells: Vec<Vec<C>>,
    config: LayerConfig,
    training: Flag<bool>,
    use_fused: Flag<bool>,
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
    /// (found by running one step at build time), which no optimizer or file would see.
    #[track_caller]
    pub fn new(
        config: LayerConfig,
        rng: &mut Rng,
        mut make_cell: impl FnMut(usize, &mut Rng) -> C,
    ) -> Self {
        assert!(
            config.hidden_size > 0,
            "Layer: hidden_size must be greater than zero"
        );
        assert!(
            config.num_layers > 0,
            "Layer: num_layers must be at least 1"
        );
        assert!(
            (0.0..=1.0).contains(&config.dropout),
            "Layer: dropout {} is not in [0, 1]",
            config.dropout
        );
        assert!(
            config.proj_size < config.hidden_size,
            "Layer: proj_size {} has to be smaller than hidden_size {}",
            config.proj_size,
            config.hidden_size
        );
        assert!(
            config.dropout == 0.0 || config.num_layers > 1,
            "Layer: dropout {} with num_layers 1 would do nothing: dropout acts between \
             stacked layers only (PyTorch warns of this)",
            config.dropout
        );
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
                        cell
                    })
                    .collect()
            })
            .collect();
        let layer = Layer {
            cells,
            config,
            training: Flag::new(true),
            use_fused: Flag::new(true),
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
            check_params_listed(cell);
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

    /// Runs the layer from zero initial states over full-length sequences.
    #[track_caller]
    pub fn forward(&self, x: &Var<T>) -> LayerOutput<T, C::State> {
        self.forward_with(x, None, None)
    }

    /// Runs the layer.
    ///
    /// - `x`: `[seq, batch, input]` (`[batch, seq, input]` if batch_first), or unbatched
    ///   `[seq, input]`, as PyTorch accepts it, which runs as a batch of one.
    /// - `init`: the initial state, each part `[layers·D, batch, hidden]` (zeros if `None`);
    ///   `[layers·D, hidden]` for an unbatched input.
    /// - `lengths`: the length of each sequence in the batch, for padded batches. As with
    ///   PyTorch's packed sequences, steps past a sequence's end leave its state unchanged and
    ///   output zeros, its final state is taken at its own last step, and the reverse direction
    ///   starts at its own end.
    ///
    /// # Panics
    /// If `x` is not 3-D (or 2-D) with `input_size` features, the sequence is empty (as
    /// PyTorch), `init` has the wrong shape, or a length is 0 or longer than the sequence, or
    /// lengths are given for an unbatched input.
    #[track_caller]
    pub fn forward_with(
        &self,
        x: &Var<T>,
        init: Option<&C::State>,
        lengths: Option<&[usize]>,
    ) -> LayerOutput<T, C::State> {
        self.run(x, init, lengths, false)
    }

    /// [`forward_with`](Self::forward_with), where `ended_ok` also allows lengths of 0
    /// (sequences that ended before this chunk of [`tbptt_with`](Self::tbptt_with)): they keep
    /// their initial state and output zeros.
    #[track_caller]
    fn run(
        &self,
        x: &Var<T>,
        init: Option<&C::State>,
        lengths: Option<&[usize]>,
        ended_ok: bool,
    ) -> LayerOutput<T, C::State> {
        let cfg = &self.config;
        if !matches!(x.rank(), 2 | 3) || x.shape().last() != Some(&cfg.input_size) {
            panic!(
                "Layer::forward: input of shape {:?} does not fit input_size {} (expected \
                 {}, or [seq, input] unbatched)",
                x.shape(),
                cfg.input_size,
                if cfg.batch_first {
                    "[batch, seq, input]"
                } else {
                    "[seq, batch, input]"
                }
            );
        }
        let time_dim = usize::from(cfg.batch_first && x.rank() == 3);
        if x.shape()[time_dim] == 0 {
            panic!(
                "Layer::forward: the sequence is empty (input of shape {:?})",
                x.shape()
            );
        }
        if x.rank() == 2 {
            return self.forward_unbatched(x, init, lengths);
        }
        let x = if cfg.batch_first {
            x.transpose(0, 1)
        } else {
            x.clone()
        };
        let (seq, batch) = (x.shape()[0], x.shape()[1]);
        let masks = lengths.map(|l| step_masks(l, seq, batch, ended_ok));
        let init_parts = init.map(|s| self.check_init(s, batch));
        let d = cfg.num_directions();

        // An empty batch runs composed: its outputs are empty either way.
        let fused = self.is_fused() && batch > 0;
        let mut input = x.clone();
        let mut finals: Vec<C::State> = Vec::with_capacity(cfg.num_layers * d);
        for (l, layer_cells) in self.cells.iter().enumerate() {
            let init_of = |dir: usize, cell: &C| match &init_parts {
                Some(parts) => {
                    C::State::from_parts(parts.iter().map(|p| p.select(0, l * d + dir)).collect())
                }
                None => cell.zero_state(x.tape(), batch),
            };
            let outputs: Vec<Var<T>> = if fused {
                let directions = layer_cells
                    .iter()
                    .enumerate()
                    .map(|(dir, cell)| fused::Direction {
                        fused: cell.fused().expect("checked by is_fused"),
                        init: init_of(dir, cell).parts(),
                        reverse: dir == 1,
                    })
                    .collect();
                fused::run(&input, directions, lengths)
                    .into_iter()
                    .map(|(out, last)| {
                        finals.push(C::State::from_parts(last));
                        out
                    })
                    .collect()
            } else {
                let steps: Vec<Var<T>> = (0..seq).map(|t| input.select(0, t)).collect();
                layer_cells
                    .iter()
                    .enumerate()
                    .map(|(dir, cell)| {
                        let (out, last) = run_direction(
                            cell,
                            &steps,
                            init_of(dir, cell),
                            masks.as_deref(),
                            dir == 1,
                        );
                        finals.push(last);
                        Var::stack(&out.iter().collect::<Vec<_>>(), 0)
                    })
                    .collect()
            };
            input = match &outputs[..] {
                [only] => only.clone(),
                [forward, backward] => Var::concat(&[forward, backward], 2),
                _ => unreachable!("one or two directions"),
            };
            if l + 1 < cfg.num_layers && self.is_training() && cfg.dropout > 0.0 {
                input = dropout(&input, cfg.dropout);
            }
        }
        let mut output = input;
        if cfg.batch_first {
            output = output.transpose(0, 1);
        }
        let parts = (0..C::State::num_parts())
            .map(|k| {
                let per_cell: Vec<Var<T>> = finals.iter().map(|s| s.parts()[k].clone()).collect();
                Var::stack(&per_cell.iter().collect::<Vec<_>>(), 0)
            })
            .collect();
        LayerOutput {
            output,
            state: C::State::from_parts(parts),
        }
    }

    /// An unbatched input `[seq, input]` as a batch of one (as PyTorch runs it).
    #[track_caller]
    fn forward_unbatched(
        &self,
        x: &Var<T>,
        init: Option<&C::State>,
        lengths: Option<&[usize]>,
    ) -> LayerOutput<T, C::State> {
        if lengths.is_some() {
            panic!(
                "Layer::forward: lengths are for a padded batch, not an unbatched input of shape \
                 {:?}",
                x.shape()
            );
        }
        let rows = self.config.num_layers * self.config.num_directions();
        let sizes = self.cells[0][0].state_sizes();
        let init = init.map(|s| {
            let parts = s.parts();
            for (k, (p, size)) in parts.iter().zip(sizes).enumerate() {
                if p.shape() != [rows, size] {
                    panic!(
                        "Layer::forward: for an unbatched input, initial state part {k} must be \
                         [layers·directions, hidden] = [{rows}, {size}], not {:?}",
                        p.shape()
                    );
                }
            }
            C::State::from_parts(parts.iter().map(|p| p.unsqueeze(1)).collect())
        });
        let batch_dim = usize::from(!self.config.batch_first);
        let out = self.forward_with(&x.unsqueeze(batch_dim), init.as_ref(), None);
        let parts = out.state.parts().iter().map(|p| p.squeeze(1)).collect();
        LayerOutput {
            output: out.output.squeeze(batch_dim),
            state: C::State::from_parts(parts),
        }
    }

    #[track_caller]
    fn check_init(&self, init: &C::State, batch: usize) -> Vec<Var<T>> {
        let rows = self.config.num_layers * self.config.num_directions();
        let parts = init.parts();
        for (k, (p, size)) in parts.iter().zip(self.cells[0][0].state_sizes()).enumerate() {
            let expected = [rows, batch, size];
            if p.shape() != expected {
                panic!(
                    "Layer::forward: initial state part {k} has shape {:?}, expected {expected:?} \
                     ([layers·directions, batch, size])",
                    p.shape()
                );
            }
        }
        parts
    }

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

/// Runs one step of `cell` (batch of one, zeros) on a scratch tape and panics if it used a
/// parameter its `named_params()` does not list. Built-in cells (with a fused kernel) are known to
/// list theirs. The thread's generator is put back, in case `step` draws from it.
#[track_caller]
fn check_params_listed<T: Float, C: Cell<T>>(cell: &C) {
    if cell.fused().is_some() {
        return;
    }
    let rng = crate::module::rng_state();
    let tape = Tape::new();
    let x = tape.constant(Tensor::zeros(&[1, cell.input_size()]));
    cell.step(&x, &cell.zero_state(&tape, 1));
    crate::module::set_rng_state(rng);
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

/// Per-step validity masks `[batch, 1]` for variable lengths; `None` at steps where every
/// sequence is still running (so full batches pay nothing).
pub(crate) type StepMasks = Vec<Option<Tensor<bool>>>;

#[track_caller]
fn step_masks(lengths: &[usize], seq: usize, batch: usize, ended_ok: bool) -> StepMasks {
    if lengths.len() != batch {
        panic!(
            "Layer::forward: {} lengths for a batch of {batch}",
            lengths.len()
        );
    }
    let shortest = usize::from(!ended_ok);
    if let Some(&bad) = lengths.iter().find(|&&l| l < shortest || l > seq) {
        panic!("Layer::forward: length {bad} is not in {shortest}..={seq} (the sequence length)");
    }
    (0..seq)
        .map(|t| {
            let valid: Vec<bool> = lengths.iter().map(|&l| t < l).collect();
            (!valid.iter().all(|&v| v)).then(|| Tensor::from_vec(valid, &[batch, 1]))
        })
        .collect()
}

/// Unrolls one cell over the steps, forwards or backwards. Returns the hidden output at every
/// step (in time order) and the final state.
fn run_direction<T: Float, C: Cell<T>>(
    cell: &C,
    inputs: &[Var<T>],
    mut state: C::State,
    masks: Option<&[Option<Tensor<bool>>]>,
    reverse: bool,
) -> (Vec<Var<T>>, C::State) {
    let seq = inputs.len();
    let mut outputs: Vec<Option<Var<T>>> = vec![None; seq];
    let order: Box<dyn Iterator<Item = usize>> = if reverse {
        Box::new((0..seq).rev())
    } else {
        Box::new(0..seq)
    };
    let zero = Tensor::<T>::zeros(&[]);
    for t in order {
        let next = cell.step(&inputs[t], &state);
        match masks.and_then(|m| m[t].as_ref()) {
            // Past its end, a sequence keeps its state and outputs zeros.
            Some(valid) => {
                let blended = next
                    .parts()
                    .iter()
                    .zip(state.parts())
                    .map(|(new, old)| Var::where_cond(valid, new, &old))
                    .collect();
                outputs[t] = Some(Var::where_cond(valid, next.hidden(), &zero));
                state = C::State::from_parts(blended);
            }
            None => {
                outputs[t] = Some(next.hidden().clone());
                state = next;
            }
        }
    }
    (
        outputs
            .into_iter()
            .map(|o| o.expect("every step ran"))
            .collect(),
        state,
    )
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

impl<T: Float> Layer<T, RnnCell<T>> {
    /// `nn.RNN`: vanilla RNN cells with `config.nonlinearity`.
    ///
    /// # Panics
    /// As [`Layer::new`], and if `config.proj_size` is set (an LSTM option, as PyTorch says).
    #[track_caller]
    pub fn rnn(config: LayerConfig, rng: &mut Rng) -> Self {
        no_projection("rnn", &config);
        let (nl, bias, h) = (config.nonlinearity, config.bias, config.hidden_size);
        Layer::new(config, rng, |input, rng| {
            RnnCell::with_options(input, h, nl, bias, rng)
        })
    }
}

impl<T: Float> Layer<T, LstmCell<T>> {
    /// `nn.LSTM`, with `proj_size` if set.
    #[track_caller]
    pub fn lstm(config: LayerConfig, rng: &mut Rng) -> Self {
        let (bias, h, p) = (config.bias, config.hidden_size, config.proj_size);
        Layer::new(config, rng, |input, rng| {
            LstmCell::with_projection(input, h, p, bias, rng)
        })
    }
}

impl<T: Float> Layer<T, GruCell<T>> {
    /// `nn.GRU`.
    ///
    /// # Panics
    /// As [`Layer::new`], and if `config.proj_size` is set (an LSTM option, as PyTorch says).
    #[track_caller]
    pub fn gru(config: LayerConfig, rng: &mut Rng) -> Self {
        no_projection("gru", &config);
        let (bias, h) = (config.bias, config.hidden_size);
        Layer::new(config, rng, |input, rng| {
            GruCell::with_bias(input, h, bias, rng)
        })
    }
}

/// PyTorch's refusal of `proj_size` for its RNN and GRU.
#[track_caller]
fn no_projection(layer: &str, config: &LayerConfig) {
    assert!(
        config.proj_size == 0,
        "Layer::{layer}: proj_size argument is only supported for LSTM, not RNN or GRU"
    );
}
