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
//!            x_t-dependent values: replayed once over all T·B rows (x_t W_ihᵀ for every
//!            step is one [T·B, I] × [I, N] product)
//! program    the state-dependent ops become per-step instructions over slots of
//!            [rows, width]: elementwise, products with a packed weight, slices, concat,
//!            sums along the row
//! run        forward: per step, per block of rows, every instruction in turn, so a
//!            chain of elementwise ops stays in cache                            exec.rs
//!            backward: the steps in reverse, each instruction's rule in reverse
//!            (autograd's Unary/Binary rules, the ones the tape runs); the weight
//!            gradients as one product over all steps, dW = dPᵀ A
//! ```
//!
//! Invariants:
//!
//! - Only ops that treat each row of the batch alone are compiled ([`build`]'s `row_wise`);
//!   anything else, an op with no `Prim`, or a step whose trace changes with its inputs'
//!   values (traced three times with different inputs to find out: a check that catches
//!   most such steps, not a proof) makes the layer fall back to the composed path, and
//!   [`Layer::explain`](crate::Layer::explain) says which op and why.
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
    /// The layer's input, all steps' rows: `[T·B, I]`.
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
    /// into the sum it fed, take no room) and marks the ones whose values the backward reads.
    fn finish(&mut self) {
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
    /// over all steps' rows (x-dependent).
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
        /// Ops computed once per sequence (parameter-only, or x-dependent over all steps).
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

/// Traces `cell.step` at `batch` rows three times, with different inputs (random; their
/// negation; random at a larger scale), and builds its program if the traces agree. The
/// thread's generator is put back afterwards (a step may draw from it).
pub(crate) fn compile<T: Float, C: Cell<T>>(cell: &C, batch: usize) -> Result<Program<T>, String> {
    let saved_rng = crate::module::rng_state();
    // The generator runs on from trace to trace, so a random draw in `step` differs.
    let traces =
        [(1u64, 1.0), (1, -1.0), (2, 3.0)].map(|(seed, scale)| trace(cell, batch, seed, scale));
    crate::module::set_rng_state(saved_rng);
    let [(a, outputs, params), (b, _, _), (c, _, _)] = traces;
    let (a, b, c) = (a?, b?, c?);
    build::same_program(&a, &b)?;
    build::same_program(&a, &c)?;
    let parts = C::State::num_parts();
    let mut program = build::build(&a, build::Leaves { parts }, &outputs, batch)?;
    program.params = params;
    Ok(program)
}

/// A trace, the node of each state part `step` returned, and the parameters in the order
/// they entered the trace.
type Traced<T> = (
    Result<Vec<autograd::TracedOp<T>>, String>,
    Vec<usize>,
    Vec<Param<T>>,
);

/// One trace of `step` on random inputs drawn from `seed`, `x_t` from U(−1, 1) times `scale`.
fn trace<T: Float, C: Cell<T>>(cell: &C, batch: usize, seed: u64, scale: f64) -> Traced<T> {
    let mut rng = Rng::seed_from_u64(seed);
    let tape = Tape::<T>::tracing();
    let x = tape.var(
        Tensor::rand_uniform(
            &[batch, cell.input_size()],
            T::from_f64(-1.0),
            T::ONE,
            &mut rng,
        )
        .mul_scalar(T::from_f64(scale)),
    );
    let parts: Vec<Var<T>> = (cell.state_sizes().into_iter())
        .map(|size| {
            tape.var(Tensor::rand_uniform(
                &[batch, size],
                T::from_f64(0.1),
                T::from_f64(0.9),
                &mut rng,
            ))
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
                return (
                    Err(format!(
                        "state part {k} returned by step is a constant (it depends on no input)"
                    )),
                    vec![],
                    vec![],
                )
            }
        }
    }
    (Ok(tape.trace()), outputs, tape.params())
}
