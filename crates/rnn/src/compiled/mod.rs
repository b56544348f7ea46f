//! Compiled cells: any [`Cell`]'s `step`, traced once and run over whole sequences as one tape
//! node per layer and direction, like the built-in cells' fused kernels, with no kernel or
//! backward written by the cell's author.
//!
//! ```text
//! trace      step runs on a tracing tape (x_t, the state's parts and the parameters as
//!            leaves; three times, on different inputs, which must agree); every op is
//!            recorded as data (autograd::Prim)                                 build.rs
//! classify   each value by what it depends on: constants < parameters < x_t < the state
//! hoist      parameter-only values: replayed once per sequence on the caller's tape
//!            x_t-dependent values: replayed in the node a chunk of steps at a time, on a
//!            tape of the chunk's own (x_t W_ihᵀ for ~1024 rows of steps is one
//!            [K·B, I] × [I, N] product; its backward is that tape's)
//! program    the state-dependent ops become per-step instructions over slots of
//!            [rows, width]: elementwise, products with a packed weight, slices, concat,
//!            sums along the row
//! run        forward: per step, per block of rows, every instruction in turn, so a
//!            chain of elementwise ops stays in cache                            exec.rs
//!            backward: the steps in reverse, each instruction's rule in reverse
//!            (autograd's Unary/Binary rules, the ones the tape runs); the weight
//!            gradients as one product per chunk of steps, dW += dP_cᵀ A_c; with
//!            recompute, each segment's forward again from the state that entered it
//! ```
//!
//! Invariants:
//!
//! - Only ops that treat each row of the batch alone are compiled ([`build`]'s `row_wise`);
//!   anything else, an op with no `Prim`, a step whose trace (ops, constants, parameters,
//!   returned values) changes with its inputs' values, that draws random numbers, or that
//!   panics on the trace inputs makes the layer fall back to the composed path, and
//!   [`Layer::explain`](crate::Layer::explain) says which op and why. (Three traces on
//!   different inputs find most such steps; it is a check, not a proof.)
//! - What the step reads besides the tape (a constant, a frozen parameter's value) is baked
//!   into the program: programs are cached per batch size, training mode and the versions of
//!   the frozen parameters, and traced again when any of them changes.
//! - Past a sequence's end (`lengths`) the state carries over, the output is zero and no
//!   gradient enters that step's ops, as on the composed path.
//! - Compiled and composed paths agree to rounding (1e-12 in f64 in the tests); the order of
//!   additions in a product or a sum may differ.
//! - Results are bit-identical on one and two threads: a step's rows are split between
//!   threads only at block boundaries, blocks are the same either way, and sums across
//!   blocks (a bias's gradient) are taken per block, then over the blocks in order.

mod build;
mod exec;

use std::sync::Arc;

use autograd::{Param, Prim, Tape, Var};
use tensor::{Float, Rng, Tensor};

use crate::cell::{Cell, State};

pub(crate) use exec::run;

/// A value of the once-per-sequence part.
#[derive(Clone, Debug)]
enum PreOp<T: Float> {
    /// The layer's input, a chunk of steps' rows: `[K·B, I]`.
    X,
    /// The k-th parameter the step used.
    Param(usize),
    /// An op replayed on the caller's tape.
    Op(Prim<T>, Vec<PreArg<T>>),
}

#[derive(Clone, Debug)]
enum PreArg<T: Float> {
    Pre(usize),
    Const(Tensor<T>),
}

/// A value the per-step part reads that does not change with the step: a parameter-only
/// value (a bias, a weight) or a constant.
#[derive(Clone, Debug)]
enum Source<T: Float> {
    Pre(usize),
    Const(Tensor<T>),
}

/// An instruction's operand: a slot of rows, or a source broadcast along the rows.
#[derive(Clone, Copy, Debug)]
enum Operand {
    Slot(usize),
    Src(usize),
}

/// One per-step op; the last field is the slot it writes.
#[derive(Clone, Debug)]
enum Instr<T: Float> {
    Unary(autograd::Unary, usize, usize),
    AddScalar(T, usize, usize),
    MulScalar(T, usize, usize),
    Binary(autograd::Binary, Operand, Operand, usize),
    /// `slot [rows, k] · source [k, n]`, plus a slot of `[rows, n]` if the third field names
    /// one (a product and the sum it feeds, folded into one instruction by `build`).
    Matmul(usize, usize, Option<usize>, usize),
    /// Columns `start..start + len`.
    Narrow(usize, usize, usize, usize),
    Concat(Vec<usize>, usize),
    /// The sum (or mean, if true) of each row, keeping the dim.
    Sum(usize, bool, usize),
}

/// A compiled step.
#[derive(Debug)]
pub(crate) struct Program<T: Float> {
    /// The parameters the step uses, in the order they entered the trace ([`PreOp::Param`]).
    params: Vec<Param<T>>,
    pre: Vec<PreOp<T>>,
    /// Per value of `pre`: whether it depends on x (made by the node a chunk of steps at a
    /// time), or is parameter-only (made once per sequence on the caller's tape); and, for the
    /// parameter-only ones, whether an x-dependent op reads it (a leaf of the chunks' tapes).
    x_dep: Vec<bool>,
    read_by_x: Vec<bool>,
    sources: Vec<Source<T>>,
    /// `(pre value, slot)`: x-dependent values the step reads, one step's rows at a time.
    hoisted: Vec<(usize, usize)>,
    state_in: Vec<usize>,
    state_out: Vec<usize>,
    instrs: Vec<Instr<T>>,
    /// Per slot: its width, its offset in a block's arena (in columns), whether the backward
    /// reads its value.
    width: Vec<usize>,
    offset: Vec<usize>,
    saved: Vec<bool>,
    /// The sum of the widths.
    columns: usize,
}

impl<T: Float> Program<T> {
    fn empty() -> Self {
        Program {
            params: vec![],
            pre: vec![],
            x_dep: vec![],
            read_by_x: vec![],
            sources: vec![],
            hoisted: vec![],
            state_in: vec![],
            state_out: vec![],
            instrs: vec![],
            width: vec![],
            offset: vec![],
            saved: vec![],
            columns: 0,
        }
    }

    fn new_slot(&mut self, width: usize) -> usize {
        self.width.push(width);
        self.width.len() - 1
    }

    /// The index of `src` among the sources (a pre value used twice is one source).
    fn source(&mut self, src: Source<T>) -> usize {
        if let Source::Pre(k) = src {
            if let Some(i) =
                (self.sources.iter()).position(|s| matches!(s, Source::Pre(j) if *j == k))
            {
                return i;
            }
        }
        self.sources.push(src);
        self.sources.len() - 1
    }

    /// Lays the slots out (those nothing reads or writes any more, such as a product folded
    /// into the sum it fed, take no room), marks the ones whose values the backward reads, and
    /// which values of `pre` depend on x.
    fn finish(&mut self) {
        self.x_dep = vec![false; self.pre.len()];
        self.read_by_x = vec![false; self.pre.len()];
        for (k, op) in self.pre.iter().enumerate() {
            self.x_dep[k] = match op {
                PreOp::X => true,
                PreOp::Param(_) => false,
                PreOp::Op(_, args) => {
                    (args.iter()).any(|a| matches!(a, PreArg::Pre(j) if self.x_dep[*j]))
                }
            };
            if let (PreOp::Op(_, args), true) = (op, self.x_dep[k]) {
                for a in args {
                    if let PreArg::Pre(j) = a {
                        self.read_by_x[*j] |= !self.x_dep[*j];
                    }
                }
            }
        }
        let mut used = vec![false; self.width.len()];
        for instr in &self.instrs {
            for s in build::instr_operands(instr) {
                used[s] = true;
            }
            used[build::instr_out(instr)] = true;
        }
        let boundary = (self.state_in.iter().chain(&self.state_out))
            .chain(self.hoisted.iter().map(|(_, s)| s));
        for &s in boundary {
            used[s] = true;
        }
        for (w, used) in self.width.iter_mut().zip(used) {
            if !used {
                *w = 0;
            }
        }
        let mut at = 0;
        self.offset = (self.width.iter())
            .map(|w| {
                at += w;
                at - w
            })
            .collect();
        self.columns = at;
        let mut saved = vec![false; self.width.len()];
        for instr in &self.instrs {
            match instr {
                Instr::Unary(op, a, out) => match op.reads() {
                    autograd::Reads::Input => saved[*a] = true,
                    autograd::Reads::Output => saved[*out] = true,
                },
                Instr::Binary(op, a, b, out) => {
                    let mut save = |o: &Operand| {
                        if let Operand::Slot(s) = o {
                            saved[*s] = true;
                        }
                    };
                    match op {
                        autograd::Binary::Add | autograd::Binary::Sub => {}
                        autograd::Binary::Mul => {
                            save(a);
                            save(b);
                        }
                        autograd::Binary::Div => {
                            save(b);
                            saved[*out] = true;
                        }
                    }
                }
                Instr::Matmul(a, _, _, _) => saved[*a] = true,
                _ => {}
            }
        }
        self.saved = saved;
    }

    /// Per-step instructions.
    pub(crate) fn len(&self) -> usize {
        self.instrs.len()
    }

    /// Values hoisted out of the loop: computed once per sequence (parameter-only) or once
    /// per chunk of steps, over all its rows (x-dependent).
    pub(crate) fn hoisted_ops(&self) -> usize {
        (self.pre.iter())
            .filter(|p| matches!(p, PreOp::Op(..)))
            .count()
    }
}

/// Which path a layer's direction runs, as [`Layer::explain`](crate::Layer::explain) tells.
#[derive(Clone, Debug, PartialEq)]
pub enum Path {
    /// The cell's hand-written fused kernel.
    Fused,
    /// The compiled step.
    Compiled {
        /// Ops computed once per sequence (parameter-only) or per chunk of steps
        /// (x-dependent).
        hoisted: usize,
        /// Ops run per step.
        per_step: usize,
    },
    /// Op by op on the tape, and why.
    Composed(String),
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Fused => write!(f, "fused kernel"),
            Path::Compiled { hoisted, per_step } => write!(
                f,
                "compiled ({hoisted} ops hoisted out of the loop, {per_step} per step)"
            ),
            Path::Composed(why) => write!(f, "composed: {why}"),
        }
    }
}

/// A layer's cache of compiled programs, one per direction of each layer.
pub(crate) type Cache<T> = std::cell::RefCell<Vec<Option<Cached<T>>>>;

/// One cached compile result and what it was traced under.
pub(crate) struct Cached<T: Float> {
    key: Key,
    result: Result<Arc<Program<T>>, String>,
}

/// What a program bakes in: the batch size, training mode, and for each parameter whether it
/// is trained and, if not (it is then a constant in the trace), its version.
#[derive(Clone, PartialEq, Debug)]
pub(crate) struct Key {
    batch: usize,
    training: bool,
    params: Vec<(bool, u64)>,
}

impl Key {
    pub(crate) fn of<T: Float, C: Cell<T>>(cell: &C, batch: usize, training: bool) -> Self {
        let params = (cell.params().iter())
            .map(|p| match p.requires_grad() {
                true => (true, 0),
                false => (false, p.stamped_value().1),
            })
            .collect();
        Key {
            batch,
            training,
            params,
        }
    }
}

/// The program for `cell` at `key`, from `cache[slot]` or compiled now (and kept).
pub(crate) fn program<T: Float, C: Cell<T>>(
    cache: &Cache<T>,
    slot: usize,
    cell: &C,
    key: Key,
) -> Result<Arc<Program<T>>, String> {
    {
        let cache = cache.borrow();
        if let Some(Some(c)) = cache.get(slot) {
            if c.key == key {
                return c.result.clone();
            }
        }
    }
    let result = compile(cell, key.batch).map(Arc::new);
    let mut cache = cache.borrow_mut();
    if cache.len() <= slot {
        cache.resize_with(slot + 1, || None);
    }
    cache[slot] = Some(Cached {
        key,
        result: result.clone(),
    });
    result
}

/// Traces `cell.step` at `batch` rows three times, on different inputs, and builds its
/// program if the traces agree: the same ops with the same constants, the same parameters,
/// the same values returned, and no draw from the thread's generator (which is put back).
/// A `step` that panics on the trace inputs is reported, not propagated: the layer then runs
/// it composed, on the real inputs.
pub(crate) fn compile<T: Float, C: Cell<T>>(cell: &C, batch: usize) -> Result<Program<T>, String> {
    exec::has_loops::<T>()?;
    let saved_rng = crate::module::rng_state();
    let traces = [Inputs::Random, Inputs::NegatedFromZero, Inputs::Signed].map(|inputs| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| trace(cell, batch, inputs)))
            .unwrap_or_else(|payload| {
                let why = (payload.downcast_ref::<String>().cloned())
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(format!(
                    "step panicked on the compiler's trace inputs: {why}"
                ))
            })
    });
    let drew = crate::module::rng_state() != saved_rng;
    crate::module::set_rng_state(saved_rng);
    let [a, b, c] = traces;
    let (a, b, c) = (a?, b?, c?);
    if drew {
        return Err(
            "step draws from the thread's random generator (dropout inside step in \
                    training mode?): each step would need its own draw"
                .into(),
        );
    }
    for other in [&b, &c] {
        build::same_program(&a.ops, &other.ops)?;
        if other.outputs != a.outputs {
            return Err(
                "step returns different values for different inputs (it chooses \
                        what to return by values read outside the tape)"
                    .into(),
            );
        }
        let same_params = other.params.len() == a.params.len()
            && (other.params.iter().zip(&a.params)).all(|(p, q)| p.same(q));
        if !same_params {
            return Err(
                "step uses different parameters for different inputs (it chooses \
                        them by values read outside the tape)"
                    .into(),
            );
        }
    }
    let parts = C::State::num_parts();
    let mut program = build::build(&a.ops, build::Leaves { parts }, &a.outputs, batch)?;
    program.params = a.params;
    Ok(program)
}

/// The inputs of one trace.
#[derive(Clone, Copy)]
enum Inputs {
    /// `x_t` from U(−1, 1), the state from U(0.1, 0.9).
    Random,
    /// The same `x_t` negated, and the zero state every sequence starts from.
    NegatedFromZero,
    /// `x_t` from U(−3, 3), the state from U(−0.9, 0.9).
    Signed,
}

/// A trace, the node of each state part `step` returned, and the parameters in the order
/// they entered the trace.
struct Traced<T: Float> {
    ops: Vec<autograd::TracedOp<T>>,
    outputs: Vec<usize>,
    params: Vec<Param<T>>,
}

/// One trace of `step`.
fn trace<T: Float, C: Cell<T>>(
    cell: &C,
    batch: usize,
    inputs: Inputs,
) -> Result<Traced<T>, String> {
    let mut rng = Rng::seed_from_u64(match inputs {
        Inputs::Signed => 2,
        _ => 1,
    });
    let uniform = |shape: &[usize], lo: f64, hi: f64, rng: &mut Rng| {
        Tensor::rand_uniform(shape, T::from_f64(lo), T::from_f64(hi), rng)
    };
    let tape = Tape::<T>::tracing();
    let x_shape = [batch, cell.input_size()];
    let x = tape.var(match inputs {
        Inputs::Random => uniform(&x_shape, -1.0, 1.0, &mut rng),
        Inputs::NegatedFromZero => uniform(&x_shape, -1.0, 1.0, &mut rng).neg(),
        Inputs::Signed => uniform(&x_shape, -3.0, 3.0, &mut rng),
    });
    let parts: Vec<Var<T>> = (cell.state_sizes().into_iter())
        .map(|size| {
            tape.var(match inputs {
                Inputs::Random => uniform(&[batch, size], 0.1, 0.9, &mut rng),
                Inputs::NegatedFromZero => Tensor::zeros(&[batch, size]),
                Inputs::Signed => uniform(&[batch, size], -0.9, 0.9, &mut rng),
            })
        })
        .collect();
    let state = C::State::from_parts(parts);
    let next = cell.step(&x, &state);
    crate::cell::check_step_state(&next, batch, &cell.state_sizes());
    let mut outputs = Vec::new();
    for (k, part) in next.parts().iter().enumerate() {
        match part.id() {
            Some(id) => outputs.push(id),
            None => {
                return Err(format!(
                    "state part {k} returned by step is a constant (it depends on no input)"
                ))
            }
        }
    }
    Ok(Traced {
        ops: tape.trace(),
        outputs,
        params: tape.params(),
    })
}
