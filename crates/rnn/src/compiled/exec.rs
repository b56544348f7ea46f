//! Running a [`Program`] over one direction of a sequence, as one tape node.
//!
//! ```text
//! run        replay the parameter-only part on the caller's tape, pack each weight once,
//!            run the forward loop, record the node (its inputs: x's rows, the initial
//!            state, the parameter-only values it reads)
//! forward    for each chunk of steps: its x-dependent values on a tape of its own
//!            for each step (in this direction's order), for each block of rows:
//!              slots ← the state's rows, the hoisted values' rows of this step
//!              every instruction, in order, each writing its own slot
//!              the state ← the state_out slots (rows still running), output ← h
//!              keep the slots the backward reads (with recompute: only the state
//!              entering each segment)
//! backward   for each step in reverse, for each block of rows:
//!              (with recompute, entering a segment: its forward again, from its state)
//!              seed the state_out slots' gradients (the next step's, the output's)
//!              every instruction's rule, in reverse, into its operands' gradients
//!              the state's gradient ← the state_in slots'
//!            after each chunk of steps, each weight's gradient: dW += dP_cᵀ A_c, and
//!            the chunk's x-dependent ops' backward on its tape (dX_c, and the
//!            parameter-only values' gradients)
//! ```
//!
//! A block's slots live in one buffer (the arena), slot after slot, `[rows, width]` each.
//! An instruction's operands are always earlier slots than its result (the trace is in
//! order), so one split of the arena gives the operands to read and the result to write.
//!
//! Memory. Between its forward and its backward the node keeps its value (the outputs and
//! the final state), each slot the backward reads at every step, and each chunk's tape of
//! x-dependent values. With recompute it keeps only the state entering each segment: the
//! backward makes a chunk's x-dependent values again when a segment's forward first needs
//! them and drops them once the chunk is done. The backward holds one chunk's product
//! gradients `dP` and hoisted values' gradients at a time; x's gradient is written a chunk of
//! rows at a time. Arrays that end up in a tensor come from [`tensor::pool`]: a tensor's
//! storage goes back to the pool when dropped, so a plain `Vec` there would add a buffer to
//! the pool on every call that no request takes again.

use std::ops::Range;
use std::sync::Arc;

use autograd::{each_unary, grad, Binary, Tape, Var};
use tensor::ops::matmul::{gemm_into, MatRef};
use tensor::ops::packed::{gemm_packed, PackedMat};
use tensor::pool::Buffer;
use tensor::simd::{with_simd, SimdWork};
use tensor::{Float, Tensor};

use super::build::instr_out;
use super::{Instr, Operand, PreArg, PreOp, Program, Source};
use crate::fused::{chunk_steps, running, time_at, times_at};
use crate::Recompute;

/// A block holds at most this many elements (rows × all slots' widths), unless one row is
/// wider: its slots stay in the core's L2 cache from one instruction to the next.
const BLOCK_ELEMENTS: usize = 1 << 15;

/// A step's rows split across two threads from this many multiply-adds in its products (the
/// handoff costs a few microseconds; a step this size takes tens).
const SPLIT_MACS: usize = 1 << 20;

/// Runs `program` (one cell's compiled step) over `x` (`[T, B, I]`) from the state `init`,
/// forwards or in `reverse`, and records it as one node. Returns the outputs `[T, B, H]` and
/// the final state's parts.
pub(crate) fn run<T: Float>(
    x: &Var<T>,
    program: &Arc<Program<T>>,
    init: &[Var<T>],
    lengths: Option<&[usize]>,
    reverse: bool,
    recompute: Recompute,
) -> (Var<T>, Vec<Var<T>>) {
    let (steps, batch) = (x.shape()[0], x.shape()[1]);
    let tape = x.tape();
    let x_rows = x.reshape(&[steps * batch, x.shape()[2]]);
    // The parameter-only part, on the caller's tape (its backward is the tape's); the
    // x-dependent part runs in the node, a chunk at a time.
    let mut pre: Vec<Option<Var<T>>> = Vec::with_capacity(program.pre.len());
    for (k, op) in program.pre.iter().enumerate() {
        let v = match op {
            _ if program.x_dep[k] => None,
            PreOp::X => unreachable!("x is x-dependent"),
            PreOp::Param(k) => Some(tape.param(&program.params[*k])),
            PreOp::Op(prim, args) => Some(apply_pre(tape, prim, args, |j| {
                pre[j].clone().expect("parameter-only")
            })),
        };
        pre.push(v);
    }
    // The node's inputs: x's rows (if the step reads anything x-dependent), the initial
    // state, then each parameter-only value the node reads, once.
    let mut vars: Vec<Var<T>> = vec![];
    let x_input = (!program.hoisted.is_empty()).then(|| {
        vars.push(x_rows.clone());
        0
    });
    vars.extend(init.iter().cloned());
    let mut pre_input: Vec<Option<usize>> = vec![None; program.pre.len()];
    let mut input_of = |k: usize, vars: &mut Vec<Var<T>>| {
        *pre_input[k].get_or_insert_with(|| {
            vars.push(pre[k].clone().expect("parameter-only"));
            vars.len() - 1
        })
    };
    let source_input: Vec<Option<usize>> = (program.sources.iter())
        .map(|src| match src {
            Source::Pre(k) => Some(input_of(*k, &mut vars)),
            Source::Const(_) => None,
        })
        .collect();
    for k in (0..program.pre.len()).filter(|&k| program.read_by_x[k]) {
        input_of(k, &mut vars);
    }
    let needs: Vec<bool> = vars.iter().map(Var::requires_grad).collect();
    let keep = tape.grad_enabled() && needs.contains(&true);
    let sources: Vec<Tensor<T>> = (program.sources.iter())
        .map(|s| match s {
            Source::Pre(k) => pre[*k]
                .as_ref()
                .expect("parameter-only")
                .value()
                .contiguous(),
            Source::Const(t) => t.contiguous(),
        })
        .collect();
    let mut packed: Vec<Option<PackedMat<T>>> = vec![None; sources.len()];
    for instr in &program.instrs {
        if let Instr::Matmul(_, w, _, _) = instr {
            let [k, n] = <[usize; 2]>::try_from(sources[*w].shape()).expect("2-D");
            packed[*w]
                .get_or_insert_with(|| PackedMat::pack(MatRef::new(slice(&sources[*w]), k, n)));
        }
    }
    let exec = Exec {
        prog: program.clone(),
        steps,
        batch,
        x_rows: x_input.map(|_| x_rows.value().contiguous()),
        pre_values: (pre.iter().zip(&program.read_by_x))
            .map(|(v, &read)| v.as_ref().filter(|_| read).map(|v| v.value().contiguous()))
            .collect(),
        pre_input,
        x_input,
        needs: needs.clone(),
        sources,
        packed,
        source_input,
        lengths: lengths.map(<[usize]>::to_vec),
        reverse,
        keep,
        segment: match keep {
            true => recompute.segment_len(steps),
            false => steps,
        },
        chunk: chunk_steps(batch).min(steps),
    };
    let init_values: Vec<Tensor<T>> = init.iter().map(|v| v.value().contiguous()).collect();
    let (value, mut kept) = loops::forward(&exec, &init_values);
    let out_width = program.width[program.state_out[0]];
    let part_widths: Vec<usize> = program
        .state_out
        .iter()
        .map(|&s| program.width[s])
        .collect();
    let refs: Vec<&Var<T>> = vars.iter().collect();
    let total = value.len();
    let node = Var::custom_op_consuming(
        "compiled_sequence",
        &refs,
        Tensor::from_vec(value, &[total]),
        move |g, retained| {
            let g = g.contiguous();
            loops::backward(&exec, &g, &mut kept, retained)
        },
    );
    let output = node
        .narrow(0, 0, steps * batch * out_width)
        .reshape(&[steps, batch, out_width]);
    let mut at = steps * batch * out_width;
    let finals = (part_widths.iter())
        .map(|&w| {
            let part = node.narrow(0, at, batch * w).reshape(&[batch, w]);
            at += batch * w;
            part
        })
        .collect();
    (output, finals)
}

/// `prim` replayed on `tape`, on earlier values of the hoisted part (`value(k)`) and
/// constants.
fn apply_pre<T: Float>(
    tape: &Tape<T>,
    prim: &autograd::Prim<T>,
    args: &[PreArg<T>],
    value: impl Fn(usize) -> Var<T>,
) -> Var<T> {
    let args: Vec<Var<T>> = (args.iter())
        .map(|a| match a {
            PreArg::Pre(k) => value(*k),
            PreArg::Const(t) => tape.constant(t.clone()),
        })
        .collect();
    prim.apply(&args.iter().collect::<Vec<_>>())
}

/// The loops, compiled once, here, for `f32` and `f64`.
///
/// Called generically, `Exec::<T>::forward` and `backward` (every instruction's kernel, three
/// times over for [`with_simd`]'s instruction sets) would be compiled again in every crate
/// that runs a layer, examples and test binaries included: about a minute of a fresh
/// `cargo test`. So the generic entry points look `T` up and call these non-generic
/// functions, whose code is this crate's. (Arguments are `&Vec`s, not slices: `Any` looks up
/// sized types only.)
#[allow(clippy::ptr_arg)]
mod loops {
    use std::any::TypeId;

    use std::any::Any;

    use tensor::{Float, Tensor};

    use super::{Exec, Kept};

    type Forward<T> = (Vec<T>, Kept<T>);

    /// `Ok` if the loops exist for `T` (f32 and f64), else why a program cannot run.
    pub(in crate::compiled) fn has_loops<T: Float>() -> Result<(), String> {
        match [TypeId::of::<f32>(), TypeId::of::<f64>()].contains(&TypeId::of::<T>()) {
            true => Ok(()),
            false => Err("the compiled loops exist for f32 and f64 only".into()),
        }
    }

    /// [`Exec::forward`] through the non-generic functions below.
    pub(super) fn forward<T: Float>(exec: &Exec<T>, init: &Vec<Tensor<T>>) -> Forward<T> {
        let (exec, init): (&dyn Any, &dyn Any) = (exec, init);
        let out: Box<dyn Any> = match (exec.downcast_ref(), init.downcast_ref()) {
            (Some(e), Some(i)) => Box::new(forward_f32(e, i)),
            _ => match (exec.downcast_ref(), init.downcast_ref()) {
                (Some(e), Some(i)) => Box::new(forward_f64(e, i)),
                _ => unreachable!("Layer::program compiles for f32 and f64 only"),
            },
        };
        *out.downcast().expect("the result of the same T")
    }

    /// [`Exec::backward`] through the non-generic functions below.
    pub(super) fn backward<T: Float>(
        exec: &Exec<T>,
        g: &Tensor<T>,
        kept: &mut Kept<T>,
        retained: bool,
    ) -> Vec<Option<Tensor<T>>> {
        let (exec, g, kept): (&dyn Any, &dyn Any, &mut dyn Any) = (exec, g, kept);
        let out: Box<dyn Any> = match (exec.downcast_ref(), g.downcast_ref()) {
            (Some(e), Some(g)) => {
                let kept = kept.downcast_mut().expect("the same T");
                Box::new(backward_f32(e, g, kept, retained))
            }
            _ => match (exec.downcast_ref(), g.downcast_ref()) {
                (Some(e), Some(g)) => {
                    let kept = kept.downcast_mut().expect("the same T");
                    Box::new(backward_f64(e, g, kept, retained))
                }
                _ => unreachable!("Layer::program compiles for f32 and f64 only"),
            },
        };
        *out.downcast().expect("the result of the same T")
    }

    fn forward_f32(exec: &Exec<f32>, init: &Vec<Tensor<f32>>) -> Forward<f32> {
        exec.forward(init)
    }

    fn forward_f64(exec: &Exec<f64>, init: &Vec<Tensor<f64>>) -> Forward<f64> {
        exec.forward(init)
    }

    fn backward_f32(
        exec: &Exec<f32>,
        g: &Tensor<f32>,
        kept: &mut Kept<f32>,
        retained: bool,
    ) -> Vec<Option<Tensor<f32>>> {
        exec.backward(super::slice(g), kept, retained)
    }

    fn backward_f64(
        exec: &Exec<f64>,
        g: &Tensor<f64>,
        kept: &mut Kept<f64>,
        retained: bool,
    ) -> Vec<Option<Tensor<f64>>> {
        exec.backward(super::slice(g), kept, retained)
    }
}

pub(super) use loops::has_loops;

fn slice<T: Float>(t: &Tensor<T>) -> &[T] {
    t.as_slice().expect("made contiguous")
}

/// Everything one direction's loops read, owned, so the backward can run later.
struct Exec<T: Float> {
    prog: Arc<Program<T>>,
    steps: usize,
    batch: usize,
    /// The input's rows, `[T·B, I]`, if the step reads x-dependent values.
    x_rows: Option<Tensor<T>>,
    /// Per value of the hoisted part: the parameter-only ones that x-dependent ones read.
    pre_values: Vec<Option<Tensor<T>>>,
    /// Per value of the hoisted part: its place among the node's inputs, if it is one.
    pre_input: Vec<Option<usize>>,
    /// The place of x's rows among the node's inputs (the initial state's parts follow).
    x_input: Option<usize>,
    /// Per node input: whether it wants a gradient.
    needs: Vec<bool>,
    /// Per source: its value (contiguous).
    sources: Vec<Tensor<T>>,
    /// Per source on the right of a product: it packed for [`gemm_packed`].
    packed: Vec<Option<PackedMat<T>>>,
    /// Per source: its place among the node's inputs (`None` for constants).
    source_input: Vec<Option<usize>>,
    lengths: Option<Vec<usize>>,
    reverse: bool,
    /// Whether a backward may follow: the forward then keeps the slots it reads.
    keep: bool,
    /// Steps per recompute segment ([`Recompute::segment_len`]; `steps` when off).
    segment: usize,
    /// Steps per chunk of the backward's weight products ([`chunk_steps`]).
    chunk: usize,
}

/// What the forward kept for the backward.
struct Kept<T: Float> {
    /// Per slot the backward reads (empty for the others): its rows at every step, step
    /// after step in this direction's order. Empty with recompute.
    saved: Vec<Buffer<T>>,
    /// With recompute: the state entering each segment, in this direction's order.
    bounds: Vec<Vec<Vec<T>>>,
    /// Without recompute, when gradients are wanted: each chunk's x-dependent values, with
    /// the tape that made them.
    chunks: Vec<Option<PreChunk<T>>>,
}

/// The x-dependent values of the hoisted part over one chunk of steps, made on a tape of
/// their own from x's rows and the parameter-only values: the forward reads their rows, and
/// when the backward has finished the chunk's steps, it runs their rules from their
/// gradients to those of x's rows and of the parameter-only values.
struct PreChunk<T: Float> {
    /// The time steps it covers.
    times: Range<usize>,
    /// Per hoisted value: its rows, `[steps·B, width]`.
    rows: Vec<Tensor<T>>,
    /// Where gradients are wanted: the variables of the chunk's tape.
    graph: Option<ChunkGraph<T>>,
}

/// A chunk's tape, as the backward reads it.
struct ChunkGraph<T: Float> {
    /// Per hoisted value: the variable.
    outputs: Vec<Var<T>>,
    /// x's rows, if they want a gradient.
    x: Option<Var<T>>,
    /// Each parameter-only value that wants a gradient, by its place in the hoisted part.
    leaves: Vec<(usize, Var<T>)>,
}

/// A forward's working memory: a block's arena per thread, and where a step's rows are split
/// between them ([`Exec::split_row`]).
struct Arenas<T> {
    mid: usize,
    blocks: [Vec<T>; 2],
}

/// An operand as a block sees it: rows of a slot (`width` 1 broadcasts along the row), or a
/// source broadcast over the rows (one element, or one row).
#[derive(Clone, Copy)]
enum View<'a, T> {
    Rows(&'a [T], usize),
    Bcast(&'a [T]),
}

/// One row of an operand: a run of values, or one value for the whole row.
#[derive(Clone, Copy)]
enum RowArg<'a, T> {
    Run(&'a [T]),
    One(T),
}

impl<'a, T: Float> View<'a, T> {
    #[inline(always)]
    fn row(self, r: usize) -> RowArg<'a, T> {
        match self {
            View::Rows(s, 1) => RowArg::One(s[r]),
            View::Rows(s, w) => RowArg::Run(&s[r * w..][..w]),
            View::Bcast([one]) => RowArg::One(*one),
            View::Bcast(s) => RowArg::Run(s),
        }
    }
}

/// Runs `$body` with `$b` bound to `$op` as a constant in each arm, so every op gets its own
/// loop with the rule inlined and no branch on the op inside (as `autograd::each_unary!`).
macro_rules! each_binary {
    ($op:expr, |$b:ident| $body:expr) => {
        match $op {
            Binary::Add => {
                let $b = Binary::Add;
                $body
            }
            Binary::Sub => {
                let $b = Binary::Sub;
                $body
            }
            Binary::Mul => {
                let $b = Binary::Mul;
                $body
            }
            Binary::Div => {
                let $b = Binary::Div;
                $body
            }
        }
    };
}

/// `out = f(a, b)` over one row.
#[inline(always)]
fn zip_row<T: Float>(out: &mut [T], a: RowArg<'_, T>, b: RowArg<'_, T>, f: impl Fn(T, T) -> T) {
    match (a, b) {
        (RowArg::Run(a), RowArg::Run(b)) => {
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *o = f(x, y);
            }
        }
        (RowArg::Run(a), RowArg::One(y)) => {
            for (o, &x) in out.iter_mut().zip(a) {
                *o = f(x, y);
            }
        }
        (RowArg::One(x), RowArg::Run(b)) => {
            for (o, &y) in out.iter_mut().zip(b) {
                *o = f(x, y);
            }
        }
        (RowArg::One(x), RowArg::One(y)) => out.fill(f(x, y)),
    }
}

/// The arena's slots before `out` (to read) and `out`'s own (to write).
fn split_out<'a, T: Float>(
    p: &Program<T>,
    arena: &'a mut [T],
    rows: usize,
    out: usize,
) -> (&'a mut [T], &'a mut [T]) {
    let (lo, hi) = arena.split_at_mut(p.offset[out] * rows);
    (lo, &mut hi[..p.width[out] * rows])
}

/// Slot `s`'s rows in an arena (or the part of one before a later slot).
fn slot_of<'a, T: Float>(p: &Program<T>, arena: &'a [T], rows: usize, s: usize) -> &'a [T] {
    &arena[p.offset[s] * rows..][..p.width[s] * rows]
}

fn slot_mut<'a, T: Float>(
    p: &Program<T>,
    arena: &'a mut [T],
    rows: usize,
    s: usize,
) -> &'a mut [T] {
    &mut arena[p.offset[s] * rows..][..p.width[s] * rows]
}

/// One block's forward: every instruction over `rows` rows, under [`with_simd`].
struct ForwardBlock<'a, T: Float> {
    exec: &'a Exec<T>,
    arena: &'a mut [T],
    rows: usize,
}

impl<T: Float> SimdWork for ForwardBlock<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let ForwardBlock { exec, arena, rows } = self;
        let p = &*exec.prog;
        for instr in &p.instrs {
            match instr {
                Instr::Unary(op, a, out) => {
                    let (lo, y) = split_out(p, arena, rows, *out);
                    let x = slot_of(p, lo, rows, *a);
                    each_unary!(*op, |u| {
                        for (o, &v) in y.iter_mut().zip(x) {
                            *o = u.eval(v);
                        }
                    });
                }
                Instr::AddScalar(s, a, out) => {
                    let (lo, y) = split_out(p, arena, rows, *out);
                    for (o, &v) in y.iter_mut().zip(slot_of(p, lo, rows, *a)) {
                        *o = v + *s;
                    }
                }
                Instr::MulScalar(s, a, out) => {
                    let (lo, y) = split_out(p, arena, rows, *out);
                    for (o, &v) in y.iter_mut().zip(slot_of(p, lo, rows, *a)) {
                        *o = v * *s;
                    }
                }
                Instr::Binary(op, a, b, out) => {
                    let w = p.width[*out];
                    let (lo, y) = split_out(p, arena, rows, *out);
                    let (va, vb) = (exec.view(lo, rows, *a), exec.view(lo, rows, *b));
                    each_binary!(*op, |bin| {
                        for (r, y_r) in y.chunks_exact_mut(w).enumerate() {
                            zip_row(y_r, va.row(r), vb.row(r), |x, z| bin.eval(x, z));
                        }
                    });
                }
                Instr::Matmul(a, src, acc, out) => {
                    let (lo, y) = split_out(p, arena, rows, *out);
                    let w = exec.packed[*src].as_ref().expect("packed in run");
                    let beta = match acc {
                        Some(s) => {
                            y.copy_from_slice(slot_of(p, lo, rows, *s));
                            T::ONE
                        }
                        None => T::ZERO,
                    };
                    gemm_packed(slot_of(p, lo, rows, *a), rows, w, beta, y);
                }
                Instr::Narrow(a, start, len, out) => {
                    let wa = p.width[*a];
                    let (lo, y) = split_out(p, arena, rows, *out);
                    let x = slot_of(p, lo, rows, *a);
                    for (y_r, x_r) in y.chunks_exact_mut(*len).zip(x.chunks_exact(wa)) {
                        y_r.copy_from_slice(&x_r[*start..][..*len]);
                    }
                }
                Instr::Concat(parts, out) => {
                    let w = p.width[*out];
                    let (lo, y) = split_out(p, arena, rows, *out);
                    let mut at = 0;
                    for &s in parts {
                        let ws = p.width[s];
                        let x = slot_of(p, lo, rows, s);
                        for (y_r, x_r) in y.chunks_exact_mut(w).zip(x.chunks_exact(ws)) {
                            y_r[at..][..ws].copy_from_slice(x_r);
                        }
                        at += ws;
                    }
                }
                Instr::Sum(a, mean, out) => {
                    let wa = p.width[*a];
                    let (lo, y) = split_out(p, arena, rows, *out);
                    let x = slot_of(p, lo, rows, *a);
                    let n = T::from_f64(wa as f64);
                    for (o, x_r) in y.iter_mut().zip(x.chunks_exact(wa)) {
                        let s = x_r.iter().fold(T::ZERO, |acc, &v| acc + v);
                        *o = if *mean { s / n } else { s };
                    }
                }
            }
        }
    }
}

impl<T: Float> Exec<T> {
    fn valid(&self, t: usize, b: usize) -> bool {
        running(self.lengths.as_deref(), t, b)
    }

    /// Rows per block: a fixed partition of the batch, whatever the thread count.
    fn block_rows(&self) -> usize {
        let fit = (BLOCK_ELEMENTS / self.prog.columns.max(1)).max(1);
        if fit >= self.batch {
            self.batch
        } else {
            (fit / 8 * 8).max(8).min(self.batch)
        }
    }

    fn view<'a>(&'a self, arena: &'a [T], rows: usize, o: Operand) -> View<'a, T> {
        match o {
            Operand::Slot(s) => View::Rows(slot_of(&self.prog, arena, rows, s), self.prog.width[s]),
            Operand::Src(i) => View::Bcast(slice(&self.sources[i])),
        }
    }

    /// Where this step's rows are split between two threads: the first row of the second
    /// half, at a block boundary (`batch` when the step runs on one thread). The blocks are
    /// the same either way, and each block's arithmetic is its own, so the result does not
    /// depend on the split.
    fn split_row(&self) -> usize {
        let block = self.block_rows();
        let blocks = self.batch.div_ceil(block);
        let macs: usize = (self.prog.instrs.iter())
            .map(|i| match i {
                Instr::Matmul(a, _, _, out) => self.prog.width[*a] * self.prog.width[*out],
                _ => 0,
            })
            .sum::<usize>()
            * self.batch;
        match rayon::current_num_threads() >= 2 && blocks >= 2 && macs >= SPLIT_MACS {
            true => (blocks / 2 * block).min(self.batch),
            false => self.batch,
        }
    }

    /// The time step at position `k` of this direction's order.
    fn time(&self, k: usize) -> usize {
        time_at(self.steps, self.reverse, k)
    }

    /// Whether the forward keeps only segment boundaries, and the backward recomputes.
    fn recomputes(&self) -> bool {
        self.keep && self.segment < self.steps
    }

    /// The time steps of chunk `c` (positions `c·K..` of this direction's order).
    fn chunk_times(&self, c: usize) -> Range<usize> {
        let ks = c * self.chunk..((c + 1) * self.chunk).min(self.steps);
        times_at(self.steps, self.reverse, ks)
    }

    /// Chunk `c`'s x-dependent values, replayed on a tape of their own: x's rows and the
    /// parameter-only values are its leaves (variables where a gradient is wanted and
    /// `grad`, constants otherwise).
    fn pre_chunk(&self, c: usize, grad: bool) -> PreChunk<T> {
        let p = &*self.prog;
        let times = self.chunk_times(c);
        if p.hoisted.is_empty() {
            return PreChunk {
                times,
                rows: vec![],
                graph: None,
            };
        }
        let tape = Tape::new();
        // The node's rule may run again (retain_graph); the chunk is dropped when it won't.
        tape.set_retain_graph(true);
        let wants = |input: Option<usize>| grad && input.is_some_and(|i| self.needs[i]);
        let leaf = |value: Tensor<T>, want: bool| match want {
            true => tape.var(value),
            false => tape.constant(value),
        };
        let x_rows = self.x_rows.as_ref().expect("read by the hoisted values");
        let rows = x_rows.narrow(0, times.start * self.batch, times.len() * self.batch);
        let x = leaf(rows.contiguous(), wants(self.x_input));
        let mut values: Vec<Option<Var<T>>> = vec![None; p.pre.len()];
        let mut leaves = vec![];
        for (k, op) in p.pre.iter().enumerate() {
            values[k] = match (op, &self.pre_values[k]) {
                (_, Some(v)) => {
                    let want = wants(self.pre_input[k]);
                    let v = leaf(v.clone(), want);
                    if want {
                        leaves.push((k, v.clone()));
                    }
                    Some(v)
                }
                _ if !p.x_dep[k] => None,
                (PreOp::X, _) => Some(x.clone()),
                (PreOp::Op(prim, args), _) => Some(apply_pre(&tape, prim, args, |j| {
                    values[j].clone().expect("read by an x-dependent op")
                })),
                (PreOp::Param(_), _) => unreachable!("a parameter does not depend on x"),
            };
        }
        let outputs: Vec<Var<T>> = (p.hoisted.iter())
            .map(|&(k, _)| values[k].clone().expect("hoisted values depend on x"))
            .collect();
        let rows = outputs.iter().map(|v| v.value().contiguous()).collect();
        let wanted = outputs.iter().any(Var::requires_grad);
        PreChunk {
            times,
            rows,
            graph: wanted.then(|| ChunkGraph {
                outputs,
                x: x.requires_grad().then_some(x),
                leaves,
            }),
        }
    }

    /// Step `t`'s rows of each hoisted value in `chunk`.
    fn pre_rows<'c>(&self, chunk: &'c PreChunk<T>, t: usize) -> Vec<&'c [T]> {
        let p = &*self.prog;
        (chunk.rows.iter().zip(&p.hoisted))
            .map(|(v, &(_, s))| {
                let n = self.batch * p.width[s];
                &slice(v)[(t - chunk.times.start) * n..][..n]
            })
            .collect()
    }

    /// A buffer of `steps` steps' rows per slot the backward reads (empty for the others, and
    /// for all when no backward follows).
    fn saved_buffers(&self, steps: usize) -> Vec<Buffer<T>> {
        let p = &*self.prog;
        (0..p.width.len())
            .map(|s| match self.keep && p.saved[s] {
                // Every row of every step is written before the backward reads it.
                true => Buffer::for_overwrite(steps * self.batch * p.width[s]),
                false => Buffer::with_capacity(0),
            })
            .collect()
    }

    fn arenas(&self) -> Arenas<T> {
        let (block, mid) = (self.block_rows(), self.split_row());
        let arena = |on: bool| match on {
            true => vec![T::ZERO; block * self.prog.columns],
            false => vec![],
        };
        Arenas {
            mid,
            blocks: [arena(true), arena(mid < self.batch)],
        }
    }

    /// The forward loop. Returns the node's value (the outputs `[T, B, H]`, then each final
    /// state part `[B, w]`) and what the backward reads: each kept slot's value at every step
    /// or, with recompute, the state entering each segment.
    fn forward(&self, init: &[Tensor<T>]) -> (Vec<T>, Kept<T>) {
        let p = &*self.prog;
        let (steps, batch) = (self.steps, self.batch);
        let mut state: Vec<Vec<T>> = init.iter().map(|t| slice(t).to_vec()).collect();
        let out_w = p.width[p.state_out[0]];
        let parts_len: usize = p.state_out.iter().map(|&s| batch * p.width[s]).sum();
        // Pooled buffers: a training step's arrays are the size of the last one's.
        let mut value = Buffer::zeroed(steps * batch * out_w + parts_len).into_vec();
        let recompute = self.recomputes();
        let mut kept = Kept {
            saved: self.saved_buffers(if recompute { 0 } else { steps }),
            bounds: vec![],
            chunks: vec![],
        };
        let mut arenas = self.arenas();
        let mut chunk = None;
        for k in 0..steps {
            if recompute && k.is_multiple_of(self.segment) {
                kept.bounds.push(state.clone());
            }
            if k.is_multiple_of(self.chunk) {
                // Kept for the backward; with recompute made again when it needs them, and in
                // inference dropped once their steps have run.
                let grad = self.keep && !recompute;
                kept.chunks.extend(chunk.take().filter(|_| grad).map(Some));
                chunk = Some(self.pre_chunk(k / self.chunk, grad));
            }
            let t = self.time(k);
            let pre_t = self.pre_rows(chunk.as_ref().expect("made above"), t);
            let value_t = &mut value[t * batch * out_w..][..batch * out_w];
            let saved = (&mut kept.saved[..], k);
            self.forward_step(t, &pre_t, &mut state, value_t, saved, &mut arenas);
        }
        if self.keep && !recompute {
            kept.chunks.extend(chunk.map(Some));
        }
        let mut at = steps * batch * out_w;
        for part in &state {
            value[at..][..part.len()].copy_from_slice(part);
            at += part.len();
        }
        (value, kept)
    }

    /// Step `t` (reading `pre_t`, its rows of the hoisted values): from `state` to the next,
    /// its output rows into `value_t`, its kept slots' rows into `saved` at the given step of
    /// theirs.
    fn forward_step(
        &self,
        t: usize,
        pre_t: &[&[T]],
        state: &mut [Vec<T>],
        value_t: &mut [T],
        (saved, row): (&mut [Buffer<T>], usize),
        arenas: &mut Arenas<T>,
    ) {
        let p = &*self.prog;
        let (batch, mid) = (self.batch, arenas.mid);
        let out_w = p.width[p.state_out[0]];
        // This step's rows of everything it writes, cut at `mid`.
        let state_parts = state.iter_mut().map(|v| &mut v[..]);
        let (state_a, state_b) =
            split_rows(state_parts, (0, batch, mid), |k| p.width[p.state_in[k]]);
        let (value_a, value_b) = value_t.split_at_mut(mid * out_w);
        let saved_t = saved.iter_mut().map(|v| &mut v[..]);
        let (saved_a, saved_b) = split_rows(saved_t, (row, batch, mid), |s| p.width[s]);
        let [arena_a, arena_b] = &mut arenas.blocks;
        let first = Half {
            rows: 0..mid,
            state: state_a,
            value: value_a,
            saved: saved_a,
        };
        if mid < batch {
            let second = Half {
                rows: mid..batch,
                state: state_b,
                value: value_b,
                saved: saved_b,
            };
            crate::fused::team::join(
                || self.forward_rows(t, pre_t, first, arena_a),
                || self.forward_rows(t, pre_t, second, arena_b),
            );
        } else {
            self.forward_rows(t, pre_t, first, arena_a);
        }
    }

    /// Step `t`'s forward over the rows of `half`, block by block.
    fn forward_rows(&self, t: usize, pre_t: &[&[T]], half: Half<'_, T>, arena: &mut [T]) {
        let p = &*self.prog;
        let block = self.block_rows();
        let Half {
            rows: range,
            mut state,
            value,
            mut saved,
        } = half;
        let out_w = p.width[p.state_out[0]];
        for r0 in range.clone().step_by(block) {
            let rows = block.min(range.end - r0);
            let at = r0 - range.start; // this block's first row within the half
            let arena = &mut arena[..rows * p.columns];
            for (k, &s) in p.state_in.iter().enumerate() {
                let w = p.width[s];
                slot_mut(p, arena, rows, s).copy_from_slice(&state[k][at * w..][..rows * w]);
            }
            for (h, &(_, s)) in p.hoisted.iter().enumerate() {
                let w = p.width[s];
                let src = &pre_t[h][r0 * w..][..rows * w];
                slot_mut(p, arena, rows, s).copy_from_slice(src);
            }
            with_simd(ForwardBlock {
                exec: self,
                arena: &mut *arena,
                rows,
            });
            for (k, &s) in p.state_out.iter().enumerate() {
                let w = p.width[s];
                let new = slot_of(p, arena, rows, s);
                for r in (0..rows).filter(|&r| self.valid(t, r0 + r)) {
                    state[k][(at + r) * w..][..w].copy_from_slice(&new[r * w..][..w]);
                }
            }
            for r in (0..rows).filter(|&r| self.valid(t, r0 + r)) {
                value[(at + r) * out_w..][..out_w]
                    .copy_from_slice(&state[0][(at + r) * out_w..][..out_w]);
            }
            for (s, keep) in saved.iter_mut().enumerate() {
                if !keep.is_empty() {
                    let w = p.width[s];
                    keep[at * w..][..rows * w].copy_from_slice(slot_of(p, arena, rows, s));
                }
            }
        }
    }

    /// The backward loop, from `g`, the gradient of the node's value. Returns a gradient per
    /// node input (`None` where `needs` says none is wanted).
    ///
    /// The steps run in reverse, a chunk of [`Exec::chunk`] steps at a time: each product's
    /// result gradient dP is kept for the chunk's steps only, and the chunk's weight
    /// gradients are one product, `dWᵀ += dP_cᵀ A_c`. With recompute, before the loop
    /// reaches a segment, the segment's forward runs again from the state that entered it
    /// (the same code on the same inputs: the same values to the bit); the chunk's operand
    /// rows `A_c` are copied out as the steps pass, since a chunk may straddle two segments.
    /// Chunks are cut the same way either way, so the gradients are bit-identical.
    fn backward(&self, g: &[T], kept: &mut Kept<T>, retained: bool) -> Vec<Option<Tensor<T>>> {
        let p = &*self.prog;
        let needs = &self.needs[..];
        let (steps, batch, chunk) = (self.steps, self.batch, self.chunk);
        let recompute = self.recomputes();
        let out_w = p.width[p.state_out[0]];
        let mut at = steps * batch * out_w;
        let mut carried: Vec<Vec<T>> = (p.state_out.iter())
            .map(|&s| {
                // Pooled, as everything that ends in a tensor (whose storage goes back to
                // the pool when dropped: a plain vector would add to it every call).
                let n = batch * p.width[s];
                let mut part = Buffer::for_overwrite(n).into_vec();
                part.copy_from_slice(&g[at..][..n]);
                at += part.len();
                part
            })
            .collect();
        let mut next: Vec<Vec<T>> = (carried.iter())
            .map(|c| Buffer::for_overwrite(c.len()).into_vec())
            .collect();
        // The hoisted values' gradients over a chunk's steps (written in full as the steps go
        // by), if x's rows or a parameter-only value they read wants a gradient; and those.
        let wanted = |input: Option<usize>| input.is_some_and(|i| needs[i]);
        let pre_wanted = wanted(self.x_input)
            || (0..p.pre.len()).any(|k| self.pre_values[k].is_some() && wanted(self.pre_input[k]));
        let mut hoisted_grads: Vec<Vec<T>> = (p.hoisted.iter())
            .map(|&(_, s)| match pre_wanted {
                true => Buffer::for_overwrite(chunk * batch * p.width[s]).into_vec(),
                false => vec![],
            })
            .collect();
        let mut dx = match wanted(self.x_input) {
            true => {
                let x_rows = self.x_rows.as_ref().expect("an input");
                Buffer::zeroed(x_rows.numel()).into_vec()
            }
            false => vec![],
        };
        let mut pre_grads: Vec<Option<Tensor<T>>> = vec![None; p.pre.len()];
        // With recompute, the chunks' x-dependent values, made when a segment's forward
        // first needs them and dropped once the chunk's backward is done.
        let mut live: Vec<Option<PreChunk<T>>> = match recompute {
            true => (0..steps.div_ceil(chunk)).map(|_| None).collect(),
            false => vec![],
        };
        let needs_source = |i: usize| self.source_input[i].is_some_and(|k| needs[k]);
        let block = self.block_rows();
        let blocks = batch.div_ceil(block);
        // Per block of rows, per source: the gradient of a broadcast operand, summed over the
        // block's rows and the steps (then over the blocks, in order, whatever the threads).
        let mut source_grads: Vec<Vec<Vec<T>>> = (0..blocks)
            .map(|_| {
                (0..self.sources.len())
                    .map(|i| match needs_source(i) {
                        true => vec![T::ZERO; self.sources[i].numel()],
                        false => vec![],
                    })
                    .collect()
            })
            .collect();
        // Per product whose weight wants a gradient: its dP over a chunk's steps, `[K·B, n]`,
        // and with recompute its operand's rows, `[K·B, k]`.
        let chunk_buffer = |width: fn(&Instr<T>) -> Option<usize>| -> Vec<Buffer<T>> {
            (p.instrs.iter())
                .map(|instr| match (instr, width(instr)) {
                    (Instr::Matmul(_, w, _, _), Some(n)) if needs_source(*w) => {
                        Buffer::for_overwrite(chunk * batch * p.width[n])
                    }
                    _ => Buffer::with_capacity(0),
                })
                .collect()
        };
        let mut dp = chunk_buffer(|i| Some(instr_out(i)));
        let mut a_rows = match recompute {
            true => chunk_buffer(|i| match i {
                Instr::Matmul(a, ..) => Some(*a),
                _ => None,
            }),
            false => vec![],
        };
        let packed_t: Vec<Option<PackedMat<T>>> = (self.sources.iter().enumerate())
            .map(|(i, src)| {
                self.packed[i].as_ref().map(|_| {
                    let [k, n] = <[usize; 2]>::try_from(src.shape()).expect("2-D");
                    PackedMat::pack(MatRef::new(slice(src), k, n).t())
                })
            })
            .collect();
        let widest = p.width.iter().copied().max().unwrap_or(0);
        let mid = self.split_row();
        let scratch = |on: bool| match on {
            // Scratch for the binary rules: a row of results and three of broadcast operands.
            true => (vec![T::ZERO; block * p.columns], vec![T::ZERO; 4 * widest]),
            false => (vec![], vec![]),
        };
        let mut scratches = [scratch(true), scratch(mid < batch)];
        // With recompute: one segment's kept slots, the forward's arenas, a step's outputs
        // (not needed again), and the position of the segment's first step.
        let mut segment = match recompute {
            true => self.saved_buffers(self.segment),
            false => vec![],
        };
        let (mut arenas, mut value_t) = match recompute {
            true => (Some(self.arenas()), vec![T::ZERO; batch * out_w]),
            false => (None, vec![]),
        };
        let mut first = 0;
        // The weights' gradients, made as [n, k] (dWᵀ = dPᵀ A), so the parameter (whose
        // transpose the product used) gets it in its layout.
        let mut weight_grads: Vec<Option<Vec<T>>> = vec![None; self.sources.len()];
        for k in (0..steps).rev() {
            let t = self.time(k);
            if let (Some(arenas), true) = (
                &mut arenas,
                k % self.segment == self.segment - 1 || k == steps - 1,
            ) {
                first = k / self.segment * self.segment;
                let mut state = kept.bounds[k / self.segment].clone();
                for j in first..=k {
                    let made =
                        live[j / chunk].get_or_insert_with(|| self.pre_chunk(j / chunk, true));
                    let u = self.time(j);
                    let pre_u = self.pre_rows(made, u);
                    let buffers = (&mut segment[..], j - first);
                    self.forward_step(u, &pre_u, &mut state, &mut value_t, buffers, arenas);
                }
            }
            let saved = if recompute {
                &segment[..]
            } else {
                &kept.saved[..]
            };
            let c0 = k / chunk * chunk;
            let t0 = self.chunk_times(k / chunk).start;
            let next_parts = next.iter_mut().map(|v| &mut v[..]);
            let (next_a, next_b) =
                split_rows(next_parts, (0, batch, mid), |k| p.width[p.state_in[k]]);
            let hoisted_t = hoisted_grads.iter_mut().map(|v| &mut v[..]);
            let (hoisted_a, hoisted_b) =
                split_rows(hoisted_t, (t - t0, batch, mid), |h| p.width[p.hoisted[h].1]);
            let dp_t = dp.iter_mut().map(|v| &mut v[..]);
            let (dp_a, dp_b) = split_rows(dp_t, (k - c0, batch, mid), |i| {
                p.width[instr_out(&p.instrs[i])]
            });
            let (sources_a, sources_b) = source_grads.split_at_mut(mid.div_ceil(block));
            let [scratch_a, scratch_b] = &mut scratches;
            let step = StepGrads {
                g,
                saved,
                row: k - first,
                carried: &carried,
                packed_t: &packed_t,
            };
            let first_half = HalfGrads {
                rows: 0..mid,
                next: next_a,
                hoisted: hoisted_a,
                dp: dp_a,
                sources: sources_a,
            };
            if mid < batch {
                let second = HalfGrads {
                    rows: mid..batch,
                    next: next_b,
                    hoisted: hoisted_b,
                    dp: dp_b,
                    sources: sources_b,
                };
                crate::fused::team::join(
                    || self.backward_rows(t, &step, first_half, scratch_a),
                    || self.backward_rows(t, &step, second, scratch_b),
                );
            } else {
                self.backward_rows(t, &step, first_half, scratch_a);
            }
            std::mem::swap(&mut carried, &mut next);
            for (i, instr) in p.instrs.iter().enumerate() {
                if let (Instr::Matmul(a, ..), false) = (instr, dp[i].is_empty() || !recompute) {
                    let w = p.width[*a];
                    a_rows[i][(k - c0) * batch * w..][..batch * w]
                        .copy_from_slice(&saved[*a][(k - first) * batch * w..][..batch * w]);
                }
            }
            if k != c0 {
                continue;
            }
            let a = match recompute {
                true => Operands::Copied(&a_rows),
                false => Operands::Kept(&kept.saved),
            };
            self.weight_products(c0, &dp, a, &mut weight_grads);
            // The chunk's x-dependent ops, their rules from the hoisted values' gradients.
            if pre_wanted {
                let c = k / chunk;
                let made = match recompute {
                    true => live[c].take(),
                    false if retained => None,
                    false => kept.chunks[c].take(),
                };
                let made = made
                    .as_ref()
                    .or(kept.chunks.get(c).and_then(Option::as_ref));
                let made = made.expect("made in the forward or the recompute");
                self.pre_backward(made, &mut hoisted_grads, &mut dx, &mut pre_grads);
            }
        }
        let mut grads: Vec<Option<Tensor<T>>> = vec![None; needs.len()];
        let mut add = |input: usize, g: Tensor<T>| {
            grads[input] = Some(match grads[input].take() {
                Some(acc) => &acc + &g,
                None => g,
            });
        };
        if let (Some(i), true) = (self.x_input, !dx.is_empty()) {
            let shape = self.x_rows.as_ref().expect("an input").shape().to_vec();
            add(i, Tensor::from_vec(dx, &shape));
        }
        let first_part = usize::from(self.x_input.is_some());
        for (k, part) in carried.into_iter().enumerate() {
            if needs[first_part + k] {
                let w = p.width[p.state_in[k]];
                add(first_part + k, Tensor::from_vec(part, &[batch, w]));
            }
        }
        for (i, weight) in weight_grads.into_iter().enumerate() {
            let Some(input) = self.source_input[i].filter(|&k| needs[k]) else {
                continue;
            };
            let shape = self.sources[i].shape();
            let mut bcast = Buffer::zeroed(self.sources[i].numel()).into_vec();
            for per_block in &source_grads {
                for (d, &v) in bcast.iter_mut().zip(&per_block[i]) {
                    *d += v;
                }
            }
            // A view: the parameter this is the transpose of gets it contiguous.
            let mut total = match weight {
                Some(wt) => Tensor::from_vec(wt, &[shape[1], shape[0]]).t(),
                None => Tensor::zeros(shape),
            };
            if bcast.iter().any(|&v| v != T::ZERO) {
                total = &total + &Tensor::from_vec(bcast, shape);
            }
            add(input, total);
        }
        for (k, g) in pre_grads.into_iter().enumerate() {
            if let (Some(g), Some(input)) = (g, self.pre_input[k]) {
                add(input, g);
            }
        }
        grads
    }

    /// The share of the weights' gradients of the chunk from position `c0`, once the backward
    /// has passed its steps: for each product whose weight wants one, `dWᵀ += dP_cᵀ A_c` over
    /// the chunk's rows.
    fn weight_products(
        &self,
        c0: usize,
        dp: &[Buffer<T>],
        a: Operands<'_, T>,
        weight_grads: &mut [Option<Vec<T>>],
    ) {
        let p = &*self.prog;
        let m = self.chunk.min(self.steps - c0) * self.batch;
        for (i, instr) in p.instrs.iter().enumerate() {
            if let (Instr::Matmul(s, w, _, out), false) = (instr, dp[i].is_empty()) {
                let (k, n) = (p.width[*s], p.width[*out]);
                let a = match a {
                    Operands::Copied(rows) => &rows[i][..m * k],
                    Operands::Kept(saved) => &saved[*s][c0 * self.batch * k..][..m * k],
                };
                let acc =
                    (weight_grads[*w]).get_or_insert_with(|| Buffer::zeroed(n * k).into_vec());
                gemm_into(
                    T::ONE,
                    MatRef::new(&dp[i][..m * n], m, n).t(),
                    MatRef::new(a, m, k),
                    T::ONE,
                    acc,
                );
            }
        }
    }

    /// The backward of chunk `made`'s x-dependent ops: from its hoisted values' gradients
    /// (`grads`, the chunk's rows of each) into x's rows (`dx`, its rows of the chunk's
    /// steps) and the sums of the parameter-only values' (`pre_grads`, by place in the
    /// hoisted part).
    fn pre_backward(
        &self,
        made: &PreChunk<T>,
        grads: &mut [Vec<T>],
        dx: &mut [T],
        pre_grads: &mut [Option<Tensor<T>>],
    ) {
        let Some(ChunkGraph { outputs, x, leaves }) = &made.graph else {
            return;
        };
        let p = &*self.prog;
        let rows = made.times.len() * self.batch;
        // The chunk's gradient buffers become the seeds, and pooled ones (those of the chunk
        // before, once dropped) take their places: no copy, and nothing added to the pool.
        let seeds: Vec<Tensor<T>> = (grads.iter_mut().zip(&p.hoisted))
            .map(|(g, &(_, s))| {
                let fresh = Buffer::for_overwrite(g.len()).into_vec();
                let mut seed = std::mem::replace(g, fresh);
                seed.truncate(rows * p.width[s]);
                Tensor::from_vec(seed, &[rows, p.width[s]])
            })
            .collect();
        let inputs: Vec<&Var<T>> = x.iter().chain(leaves.iter().map(|(_, v)| v)).collect();
        let mut got = grad(&outputs.iter().collect::<Vec<_>>(), &seeds, &inputs).into_iter();
        if let Some(x) = x {
            if let Some(g) = got.next().flatten() {
                let at = made.times.start * self.batch * x.shape()[1];
                dx[at..][..g.numel()].copy_from_slice(slice(&g.contiguous()));
            }
        }
        for ((k, _), g) in leaves.iter().zip(got) {
            if let Some(g) = g {
                pre_grads[*k] = Some(match pre_grads[*k].take() {
                    Some(acc) => &acc + &g,
                    None => g,
                });
            }
        }
    }

    /// Step `t`'s backward over the rows of `half`, block by block.
    fn backward_rows(
        &self,
        t: usize,
        step: &StepGrads<'_, T>,
        half: HalfGrads<'_, T>,
        (garena, tmp): &mut (Vec<T>, Vec<T>),
    ) {
        let p = &*self.prog;
        let (batch, block) = (self.batch, self.block_rows());
        let out_w = p.width[p.state_out[0]];
        let HalfGrads {
            rows: range,
            mut next,
            mut hoisted,
            mut dp,
            sources,
        } = half;
        for (b, r0) in range.clone().step_by(block).enumerate() {
            let rows = block.min(range.end - r0);
            let at = r0 - range.start;
            let ga = &mut garena[..rows * p.columns];
            ga.fill(T::ZERO);
            // Seeds: the next step's state gradient, and the output's.
            for (k, &s) in p.state_out.iter().enumerate() {
                let w = p.width[s];
                let gs = slot_mut(p, ga, rows, s);
                for r in (0..rows).filter(|&r| self.valid(t, r0 + r)) {
                    let row = r0 + r;
                    let dst = &mut gs[r * w..][..w];
                    for (d, &c) in dst.iter_mut().zip(&step.carried[k][row * w..][..w]) {
                        *d += c;
                    }
                    if k == 0 {
                        let go = &step.g[(t * batch + row) * out_w..][..out_w];
                        for (d, &c) in dst.iter_mut().zip(go) {
                            *d += c;
                        }
                    }
                }
            }
            let val = |s: usize| -> &[T] {
                let w = p.width[s];
                &step.saved[s][(step.row * batch + r0) * w..][..rows * w]
            };
            with_simd(BackwardBlock {
                exec: self,
                ga: &mut *ga,
                rows,
                val: &val,
                source_grads: &mut sources[b],
                packed_t: step.packed_t,
                tmp: &mut tmp[..],
                dp: &mut dp,
                dp_at: at,
            });
            for (k, &s) in p.state_in.iter().enumerate() {
                let w = p.width[s];
                let gs = slot_of(p, ga, rows, s);
                for r in 0..rows {
                    let row = r0 + r;
                    let src = match self.valid(t, row) {
                        true => &gs[r * w..][..w],
                        false => &step.carried[k][row * w..][..w],
                    };
                    next[k][(at + r) * w..][..w].copy_from_slice(src);
                }
            }
            for (h, &(_, s)) in p.hoisted.iter().enumerate() {
                if !hoisted[h].is_empty() {
                    let w = p.width[s];
                    hoisted[h][at * w..][..rows * w].copy_from_slice(slot_of(p, ga, rows, s));
                }
            }
        }
    }

    /// One instruction's rule over a block: from its result's gradient into its operands'
    /// (slots in `ga`, or broadcast sources' sums in `source_grads`).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn instr_backward<'v>(
        &self,
        instr: &Instr<T>,
        ga: &mut [T],
        rows: usize,
        val: &dyn Fn(usize) -> &'v [T],
        source_grads: &mut [Vec<T>],
        packed_t: &[Option<PackedMat<T>>],
        tmp: &mut [T],
    ) where
        T: 'v,
    {
        let p = &*self.prog;
        match instr {
            Instr::Unary(op, a, out) => {
                let (lo, g) = split_out(p, ga, rows, *out);
                let r = match op.reads() {
                    autograd::Reads::Input => val(*a),
                    autograd::Reads::Output => val(*out),
                };
                let gx = slot_mut(p, lo, rows, *a);
                each_unary!(*op, |u| {
                    for ((d, &g), &r) in gx.iter_mut().zip(&*g).zip(r) {
                        *d += u.grad(g, r);
                    }
                });
            }
            Instr::AddScalar(_, a, out) => {
                let (lo, g) = split_out(p, ga, rows, *out);
                for (d, &g) in slot_mut(p, lo, rows, *a).iter_mut().zip(&*g) {
                    *d += g;
                }
            }
            Instr::MulScalar(s, a, out) => {
                let (lo, g) = split_out(p, ga, rows, *out);
                for (d, &g) in slot_mut(p, lo, rows, *a).iter_mut().zip(&*g) {
                    *d += g * *s;
                }
            }
            Instr::Binary(op, a, b, out) => {
                let w = p.width[*out];
                let (lo, g) = split_out(p, ga, rows, *out);
                // The values the rules read (a placeholder where a rule reads none).
                let none: &[T] = &[T::ZERO];
                let value = |o: &Operand| match o {
                    Operand::Slot(s) if p.saved[*s] => View::Rows(val(*s), p.width[*s]),
                    Operand::Slot(_) => View::Bcast(none),
                    Operand::Src(i) => View::Bcast(slice(&self.sources[*i])),
                };
                let (va, vb) = (value(a), value(b));
                let vy = match p.saved[*out] {
                    true => View::Rows(val(*out), w),
                    false => View::Bcast(none),
                };
                for (side, operand) in [(0, a), (1, b)] {
                    let target = match operand {
                        Operand::Slot(s) => Target::Rows(slot_mut(p, lo, rows, *s), p.width[*s]),
                        Operand::Src(i) if !source_grads[*i].is_empty() => {
                            Target::Sum(&mut source_grads[*i])
                        }
                        Operand::Src(_) => continue,
                    };
                    each_binary!(*op, |bin| {
                        binary_grad(g, w, va, vb, vy, target, tmp, |g, x, z, y| match side {
                            0 => bin.grad_a(g, x, z, y),
                            _ => bin.grad_b(g, x, z, y),
                        })
                    });
                }
            }
            Instr::Matmul(a, w, acc, out) => {
                let (lo, g) = split_out(p, ga, rows, *out);
                if let Some(s) = acc {
                    for (d, &g) in slot_mut(p, lo, rows, *s).iter_mut().zip(&*g) {
                        *d += g;
                    }
                }
                let wt = packed_t[*w].as_ref().expect("packed for the backward");
                gemm_packed(g, rows, wt, T::ONE, slot_mut(p, lo, rows, *a));
            }
            Instr::Narrow(a, start, len, out) => {
                let wa = p.width[*a];
                let (lo, g) = split_out(p, ga, rows, *out);
                let gx = slot_mut(p, lo, rows, *a);
                for (d_r, g_r) in gx.chunks_exact_mut(wa).zip(g.chunks_exact(*len)) {
                    for (d, &g) in d_r[*start..][..*len].iter_mut().zip(g_r) {
                        *d += g;
                    }
                }
            }
            Instr::Concat(parts, out) => {
                let w = p.width[*out];
                let (lo, g) = split_out(p, ga, rows, *out);
                let mut at = 0;
                for &s in parts {
                    let ws = p.width[s];
                    let gx = slot_mut(p, lo, rows, s);
                    for (d_r, g_r) in gx.chunks_exact_mut(ws).zip(g.chunks_exact(w)) {
                        for (d, &g) in d_r.iter_mut().zip(&g_r[at..][..ws]) {
                            *d += g;
                        }
                    }
                    at += ws;
                }
            }
            Instr::Sum(a, mean, out) => {
                let wa = p.width[*a];
                let (lo, g) = split_out(p, ga, rows, *out);
                let n = T::from_f64(wa as f64);
                let gx = slot_mut(p, lo, rows, *a);
                for (d_r, &g) in gx.chunks_exact_mut(wa).zip(&*g) {
                    let g = if *mean { g / n } else { g };
                    for d in d_r {
                        *d += g;
                    }
                }
            }
        }
    }
}

/// One block's backward: every instruction's rule, in reverse, under [`with_simd`]; each
/// product's result gradient is also kept (in `dp`, from row `dp_at` of the half) for its
/// weight's.
struct BackwardBlock<'a, 'b, 'v, T: Float> {
    exec: &'a Exec<T>,
    ga: &'a mut [T],
    rows: usize,
    val: &'a dyn Fn(usize) -> &'v [T],
    source_grads: &'a mut [Vec<T>],
    packed_t: &'a [Option<PackedMat<T>>],
    tmp: &'a mut [T],
    /// Per instruction: its result gradient's rows of this half at this step, or empty.
    dp: &'a mut [&'b mut [T]],
    dp_at: usize,
}

impl<T: Float> SimdWork for BackwardBlock<'_, '_, '_, T> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let p = &*self.exec.prog;
        for (i, instr) in p.instrs.iter().enumerate().rev() {
            self.exec.instr_backward(
                instr,
                self.ga,
                self.rows,
                self.val,
                self.source_grads,
                self.packed_t,
                self.tmp,
            );
            if let (Instr::Matmul(_, _, _, out), false) = (instr, self.dp[i].is_empty()) {
                let w = p.width[*out];
                self.dp[i][self.dp_at * w..][..self.rows * w]
                    .copy_from_slice(slot_of(p, self.ga, self.rows, *out));
            }
        }
    }
}

/// Where a chunk's weight products read their operands' rows `A_c`.
enum Operands<'a, T: Float> {
    /// Per product: the chunk's rows, copied aside as the steps went by (recompute).
    Copied(&'a [Buffer<T>]),
    /// Per slot: every step's rows, as the forward kept them.
    Kept(&'a [Buffer<T>]),
}

/// One thread's share of a forward step: its rows, and those rows of the state, of the step's
/// output and of each kept slot at this step (empty for slots not kept).
struct Half<'a, T> {
    rows: Range<usize>,
    state: Vec<&'a mut [T]>,
    value: &'a mut [T],
    saved: Vec<&'a mut [T]>,
}

/// What every share of a backward step reads.
struct StepGrads<'a, T: Float> {
    g: &'a [T],
    /// The kept slots, and this step's place in them.
    saved: &'a [Buffer<T>],
    row: usize,
    carried: &'a [Vec<T>],
    packed_t: &'a [Option<PackedMat<T>>],
}

/// One thread's share of a backward step: its rows, and those rows of the state's gradient
/// (for the step before), of each hoisted value's and product's gradient at this step, and
/// its blocks' sums for the broadcast sources.
struct HalfGrads<'a, T> {
    rows: Range<usize>,
    next: Vec<&'a mut [T]>,
    hoisted: Vec<&'a mut [T]>,
    dp: Vec<&'a mut [T]>,
    sources: &'a mut [Vec<Vec<T>>],
}

/// Step `t`'s rows of each `[·, B, width(k)]` buffer of `parts` (`t` = 0 for a `[B, w]`
/// one), cut at row `mid`; empty buffers (slots not kept, gradients not wanted) stay empty
/// on both sides.
#[allow(clippy::type_complexity)]
fn split_rows<'a, T: 'a>(
    parts: impl Iterator<Item = &'a mut [T]>,
    (t, batch, mid): (usize, usize, usize),
    width: impl Fn(usize) -> usize,
) -> (Vec<&'a mut [T]>, Vec<&'a mut [T]>) {
    parts
        .enumerate()
        .map(|(k, v)| match v.is_empty() {
            true => (v, &mut [][..]),
            false => {
                let w = width(k);
                v[t * batch * w..][..batch * w].split_at_mut(mid * w)
            }
        })
        .unzip()
}

/// Where a binary op's rule sends one operand's gradient: its slot's rows (`width` 1: each
/// row's sum), or a broadcast source's running sum (one element, or one row).
enum Target<'a, T> {
    Rows(&'a mut [T], usize),
    Sum(&'a mut [T]),
}

/// Applies `rule(g, a, b, y)` to every element of a `[rows, w]` result and adds each row of
/// it into `target`, summed where the operand was broadcast. `scratch` holds four rows: the
/// results, and the operands that are one value for a whole row, spread out, so the loop
/// over a row reads four plain runs and vectorises.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn binary_grad<T: Float>(
    g: &[T],
    w: usize,
    a: View<'_, T>,
    b: View<'_, T>,
    y: View<'_, T>,
    target: Target<'_, T>,
    scratch: &mut [T],
    rule: impl Fn(T, T, T, T) -> T,
) {
    let (tmp, rest) = scratch.split_at_mut(w);
    let (spread_a, rest) = rest.split_at_mut(w);
    let (spread_b, rest) = rest.split_at_mut(w);
    let spread_y = &mut rest[..w];
    let mut target = target;
    for (r, g_r) in g.chunks_exact(w).enumerate() {
        let ar = match a.row(r) {
            RowArg::Run(s) => s,
            RowArg::One(v) => {
                spread_a.fill(v);
                &spread_a[..]
            }
        };
        let br = match b.row(r) {
            RowArg::Run(s) => s,
            RowArg::One(v) => {
                spread_b.fill(v);
                &spread_b[..]
            }
        };
        let yr = match y.row(r) {
            RowArg::Run(s) => s,
            RowArg::One(v) => {
                spread_y.fill(v);
                &spread_y[..]
            }
        };
        let values = g_r.iter().zip(ar).zip(br).zip(yr);
        match &mut target {
            Target::Rows(t, tw) if *tw == w => {
                for (d, (((&g, &a), &b), &y)) in t[r * w..][..w].iter_mut().zip(values) {
                    *d += rule(g, a, b, y);
                }
            }
            Target::Sum(t) if t.len() == w => {
                for (d, (((&g, &a), &b), &y)) in t.iter_mut().zip(values) {
                    *d += rule(g, a, b, y);
                }
            }
            Target::Rows(..) | Target::Sum(_) => {
                for (d, (((&g, &a), &b), &y)) in tmp.iter_mut().zip(values) {
                    *d = rule(g, a, b, y);
                }
                let sum = tmp.iter().fold(T::ZERO, |s, &c| s + c);
                match &mut target {
                    Target::Rows(t, _) => t[r] += sum,
                    Target::Sum(t) => t[0] += sum,
                }
            }
        }
    }
}
