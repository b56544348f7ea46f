//! From a trace of one `step` to a [`Program`]: each traced value is classed by what it
//! depends on, the ops the compiler cannot follow are refused with the reason, and the rest
//! is split into the part replayed once per sequence ([`PreOp`]) and the per-step
//! instructions ([`Instr`]).
//!
//! Classes, from the leaves up (an op's class is the largest of its inputs'):
//!
//! ```text
//! Const  < Param  < X  < State
//! (constants) (params only) (x_t, params) (the state: what runs per step)
//! ```
//!
//! Param and X values are replayed on the caller's tape by [`Prim::apply`], the X ones over
//! all `T·B` rows at once (so `x_t W_ihᵀ` becomes one `[T·B, I] × [I, N]` product); that is
//! only right for ops that treat each row alone, which [`row_wise`] checks. State values get a
//! slot of `[B, width]` per step.

use autograd::{Prim, TraceInput, TracedOp};
use tensor::Float;

use super::{Instr, Operand, PreArg, PreOp, Program, Source};

/// What a traced value depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Const,
    Param,
    X,
    State,
}

/// Where a traced value lives in the program.
#[derive(Clone, Debug)]
enum At {
    /// A value of the once-per-sequence part.
    Pre(usize),
    /// A per-step slot.
    Slot(usize),
}

/// The leaves of a trace: node 0 is `x_t`, nodes `1..=parts` the state's parts, the rest of
/// the leaves parameters (in the order of [`autograd::Tape::params`]).
pub(super) struct Leaves {
    pub parts: usize,
}

/// Builds the program of one traced step, or says why it cannot.
pub(super) fn build<T: Float>(
    trace: &[TracedOp<T>],
    leaves: Leaves,
    outputs: &[usize],
    batch: usize,
) -> Result<Program<T>, String> {
    let mut p = Program::empty();
    let mut class: Vec<Class> = Vec::with_capacity(trace.len());
    let mut at: Vec<At> = Vec::with_capacity(trace.len());
    // The pre part's value for each X value the step reads, made a slot once.
    let mut hoisted_slot: Vec<Option<usize>> = Vec::new();
    let mut params = 0;
    for (id, node) in trace.iter().enumerate() {
        let where_ = || describe(trace, id, leaves.parts);
        if node.op == "leaf" || node.op == "param" {
            let (c, a) = if id == 0 {
                p.pre.push(PreOp::X);
                (Class::X, At::Pre(p.pre.len() - 1))
            } else if id <= leaves.parts {
                let slot = p.new_slot(node.shape[1]);
                p.state_in.push(slot);
                (Class::State, At::Slot(slot))
            } else if node.op == "param" {
                p.pre.push(PreOp::Param(params));
                params += 1;
                (Class::Param, At::Pre(p.pre.len() - 1))
            } else {
                return Err(format!(
                    "{}: a variable made inside step (only x_t, the state and parameters can \
                     be leaves)",
                    where_()
                ));
            };
            class.push(c);
            at.push(a);
            hoisted_slot.push(None);
            continue;
        }
        let Some(prim) = &node.prim else {
            return Err(format!("{}: the compiler does not know this op", where_()));
        };
        let input_class: Vec<Class> = (node.inputs.iter())
            .map(|i| match i {
                TraceInput::Node(j) => class[*j],
                TraceInput::Const(_) => Class::Const,
            })
            .collect();
        let c = input_class.iter().copied().max().unwrap_or(Class::Const);
        let shapes: Vec<Vec<usize>> = (node.inputs.iter())
            .map(|i| match i {
                TraceInput::Node(j) => trace[*j].shape.clone(),
                TraceInput::Const(t) => t.shape().to_vec(),
            })
            .collect();
        if c >= Class::X {
            row_wise(prim, &input_class, &shapes, &node.shape, batch)
                .map_err(|why| format!("{}: {why}", where_()))?;
        }
        let a = match c {
            Class::Const => unreachable!("an op of constants only is not recorded"),
            Class::Param | Class::X => {
                let args = (node.inputs.iter())
                    .map(|i| match i {
                        TraceInput::Node(j) => match &at[*j] {
                            At::Pre(k) => PreArg::Pre(*k),
                            _ => unreachable!("a Param or X op reads no slot"),
                        },
                        TraceInput::Const(t) => PreArg::Const(t.clone()),
                    })
                    .collect();
                p.pre.push(PreOp::Op(prim.clone(), args));
                At::Pre(p.pre.len() - 1)
            }
            Class::State => {
                let mut operands = Vec::with_capacity(node.inputs.iter().len());
                for (i, input) in node.inputs.iter().enumerate() {
                    operands.push(match input {
                        TraceInput::Const(t) => Operand::Src(p.source(Source::Const(t.clone()))),
                        TraceInput::Node(j) => match (&at[*j], class[*j]) {
                            (At::Slot(s), _) => Operand::Slot(*s),
                            (At::Pre(k), Class::X) => Operand::Slot(hoist(
                                &mut p,
                                &mut hoisted_slot[*j],
                                *k,
                                shapes[i][1],
                            )),
                            (At::Pre(k), _) => Operand::Src(p.source(Source::Pre(*k))),
                        },
                    });
                }
                let out = p.new_slot(node.shape[1]);
                p.instrs.push(instr(prim, operands, out)?);
                At::Slot(out)
            }
        };
        class.push(c);
        at.push(a);
        hoisted_slot.push(None);
    }
    for (k, &id) in outputs.iter().enumerate() {
        let slot = match (&at[id], class[id]) {
            (At::Slot(s), _) => *s,
            (At::Pre(pre), Class::X) => {
                let width = trace[id].shape[1];
                hoist(&mut p, &mut hoisted_slot[id], *pre, width)
            }
            _ => {
                return Err(format!(
                    "state part {k} returned by step depends on no input or state (it is a \
                     parameter or a constant)"
                ))
            }
        };
        p.state_out.push(slot);
    }
    fold_sums_into_products(&mut p);
    p.finish();
    Ok(p)
}

/// `a + x W` (or `x W + a`), where the product is used only by that sum and `a` has the
/// product's shape, becomes one instruction: `a` is copied into the result and the product
/// added onto it (the `x_t W_ihᵀ + h W_hhᵀ` of most cells: one pass over the gates fewer,
/// forward and backward).
fn fold_sums_into_products<T: Float>(p: &mut Program<T>) {
    let mut uses = vec![0usize; p.width.len()];
    for instr in &p.instrs {
        for s in instr_operands(instr) {
            uses[s] += 1;
        }
    }
    for &s in &p.state_out {
        uses[s] += 1;
    }
    // The instruction that writes each slot.
    let mut writer: Vec<Option<usize>> = vec![None; p.width.len()];
    for (i, instr) in p.instrs.iter().enumerate() {
        writer[instr_out(instr)] = Some(i);
    }
    let mut removed = vec![false; p.instrs.len()];
    for i in 0..p.instrs.len() {
        let Instr::Binary(autograd::Binary::Add, Operand::Slot(x), Operand::Slot(y), out) =
            p.instrs[i]
        else {
            continue;
        };
        let product = |m: usize| match writer[m].map(|j| (j, &p.instrs[j])) {
            Some((j, Instr::Matmul(a, w, None, _))) if uses[m] == 1 && !removed[j] => {
                Some((j, *a, *w))
            }
            _ => None,
        };
        let (m, other) = match (product(y), product(x)) {
            (Some(found), _) if x != y && p.width[x] == p.width[y] => (found, x),
            (None, Some(found)) if x != y && p.width[x] == p.width[y] => (found, y),
            _ => continue,
        };
        let (j, a, w) = m;
        removed[j] = true;
        p.instrs[i] = Instr::Matmul(a, w, Some(other), out);
    }
    let mut k = 0;
    p.instrs.retain(|_| {
        k += 1;
        !removed[k - 1]
    });
}

/// The slots an instruction reads.
pub(super) fn instr_operands<T: Float>(instr: &Instr<T>) -> Vec<usize> {
    let slot = |o: &Operand| match o {
        Operand::Slot(s) => Some(*s),
        Operand::Src(_) => None,
    };
    match instr {
        Instr::Unary(_, a, _)
        | Instr::AddScalar(_, a, _)
        | Instr::MulScalar(_, a, _)
        | Instr::Narrow(a, _, _, _)
        | Instr::Sum(a, _, _) => vec![*a],
        Instr::Binary(_, a, b, _) => [slot(a), slot(b)].into_iter().flatten().collect(),
        Instr::Matmul(a, _, acc, _) => [Some(*a), *acc].into_iter().flatten().collect(),
        Instr::Concat(parts, _) => parts.clone(),
    }
}

/// The slot an instruction writes.
pub(super) fn instr_out<T: Float>(instr: &Instr<T>) -> usize {
    match instr {
        Instr::Unary(_, _, out)
        | Instr::AddScalar(_, _, out)
        | Instr::MulScalar(_, _, out)
        | Instr::Binary(_, _, _, out)
        | Instr::Matmul(_, _, _, out)
        | Instr::Narrow(_, _, _, out)
        | Instr::Concat(_, out)
        | Instr::Sum(_, _, out) => *out,
    }
}

/// The slot that holds, at each step, that step's rows of the pre value `pre`.
fn hoist<T: Float>(
    p: &mut Program<T>,
    kept: &mut Option<usize>,
    pre: usize,
    width: usize,
) -> usize {
    *kept.get_or_insert_with(|| {
        let slot = p.new_slot(width);
        p.hoisted.push((pre, slot));
        slot
    })
}

/// Checks that `prim`, reading values of `classes` and `shapes`, treats each of the batch's
/// rows on its own (so it can run per step on slots of rows, or over all steps' rows at
/// once): row values are `[batch, width]`, others broadcast along the rows, matrices stand
/// on the right of a product, and every structural op works on the last dim.
fn row_wise<T: Float>(
    prim: &Prim<T>,
    classes: &[Class],
    shapes: &[Vec<usize>],
    out: &[usize],
    batch: usize,
) -> Result<(), String> {
    let is_row = |k: usize| classes[k] >= Class::X;
    for (k, s) in shapes.iter().enumerate() {
        if is_row(k) && (s.len() != 2 || s[0] != batch) {
            return Err(format!(
                "input {k} of shape {s:?} depends on x_t or the state but is not [batch, \
                 features] (a reshape or a reduction over the batch)"
            ));
        }
    }
    if shapes
        .iter()
        .chain([&out.to_vec()])
        .any(|s| s.len() == 2 && s[1] == 0)
    {
        return Err("a value with no features (width 0)".into());
    }
    if out.len() != 2 || out[0] != batch {
        return Err(format!(
            "the result of shape {out:?} is not [batch, features] (only ops along the last \
             dim of [batch, features] values compile)"
        ));
    }
    let last = |dim: usize| {
        if dim == 1 {
            Ok(())
        } else {
            Err(format!(
                "works along dim {dim}; only the last dim (1) compiles"
            ))
        }
    };
    match prim {
        Prim::Unary(_) | Prim::AddScalar(_) | Prim::MulScalar(_) => Ok(()),
        Prim::Binary(_) => {
            for (k, s) in shapes.iter().enumerate() {
                if !is_row(k) && !broadcasts(s, out[1]) {
                    return Err(format!(
                        "operand {k} of shape {s:?} (a parameter or constant) does not broadcast \
                         along the rows: it must be [], [{w}] or [1, {w}] (a constant with the \
                         batch's shape, such as a random mask drawn in step, cannot be \
                         compiled)",
                        w = out[1]
                    ));
                }
            }
            Ok(())
        }
        Prim::Matmul => match (is_row(0), is_row(1), shapes[1].len()) {
            (true, false, 2) => Ok(()),
            _ => Err(
                "a product compiles only as [batch, k] (x_t or state) times a [k, n] matrix of \
                 parameters or constants"
                    .to_string(),
            ),
        },
        Prim::Narrow { dim, .. } | Prim::Concat(dim) => {
            if let Some(k) = (0..shapes.len()).find(|&k| !is_row(k)) {
                return Err(format!(
                    "operand {k} is a parameter or constant; concat compiles for rows only"
                ));
            }
            last(*dim)
        }
        Prim::Sum { dim, keepdim } | Prim::Mean { dim, keepdim } => {
            last(*dim)?;
            match keepdim {
                true => Ok(()),
                false => Err("a reduction over the last dim compiles with keepdim = true".into()),
            }
        }
        Prim::T | Prim::Transpose(..) => {
            Err("a transpose of a value that depends on x_t or the state".into())
        }
    }
}

/// Whether a value of `shape` broadcasts along rows of `width`: `[]`, `[w]`, `[1, w]` with w
/// the width or 1.
fn broadcasts(shape: &[usize], width: usize) -> bool {
    let fits = |w: usize| w == width || w == 1;
    match shape {
        [] => true,
        [w] => fits(*w),
        [1, w] => fits(*w),
        _ => false,
    }
}

/// The per-step instruction for a State op.
fn instr<T: Float>(
    prim: &Prim<T>,
    mut operands: Vec<Operand>,
    out: usize,
) -> Result<Instr<T>, String> {
    let slot = |o: &Operand| match o {
        Operand::Slot(s) => Ok(*s),
        Operand::Src(_) => Err("an operand that must be a row value is not".to_string()),
    };
    Ok(match prim {
        Prim::Unary(op) => Instr::Unary(*op, slot(&operands[0])?, out),
        Prim::AddScalar(s) => Instr::AddScalar(*s, slot(&operands[0])?, out),
        Prim::MulScalar(s) => Instr::MulScalar(*s, slot(&operands[0])?, out),
        Prim::Binary(op) => {
            let b = operands.pop().expect("two operands");
            let a = operands.pop().expect("two operands");
            Instr::Binary(*op, a, b, out)
        }
        Prim::Matmul => {
            let w = match operands.pop() {
                Some(Operand::Src(src)) => src,
                _ => unreachable!("row_wise checked the right side"),
            };
            Instr::Matmul(slot(&operands[0])?, w, None, out)
        }
        Prim::Narrow { start, len, .. } => Instr::Narrow(slot(&operands[0])?, *start, *len, out),
        Prim::Concat(_) => Instr::Concat(operands.iter().map(slot).collect::<Result<_, _>>()?, out),
        Prim::Sum { .. } => Instr::Sum(slot(&operands[0])?, false, out),
        Prim::Mean { .. } => Instr::Sum(slot(&operands[0])?, true, out),
        Prim::T | Prim::Transpose(..) => unreachable!("refused by row_wise"),
    })
}

/// "op 7 of step ('tanh' of 'add' #6)", for fallback reasons.
fn describe<T: Float>(trace: &[TracedOp<T>], id: usize, parts: usize) -> String {
    let name = |j: usize| match j {
        0 => "x_t".to_string(),
        j if j <= parts => format!("state part {}", j - 1),
        j => format!("'{}' #{j}", trace[j].op),
    };
    let inputs: Vec<String> = (trace[id].inputs.iter())
        .map(|i| match i {
            TraceInput::Node(j) => name(*j),
            TraceInput::Const(t) => format!("a constant {:?}", t.shape()),
        })
        .collect();
    format!(
        "op #{id} of step, '{}' of ({}), shape {:?}",
        trace[id].op,
        inputs.join(", "),
        trace[id].shape
    )
}

/// Two traces of one step, with different inputs, recorded the same ops (else `step`
/// depends on its inputs' values outside the tape: branches on them, scalars read from them,
/// random draws).
pub(super) fn same_program<T: Float>(a: &[TracedOp<T>], b: &[TracedOp<T>]) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!(
            "step recorded {} ops for one input and {} for another: it branches on values \
             (x_t's, the state's) outside the tape",
            a.len(),
            b.len()
        ));
    }
    for (id, (x, y)) in a.iter().zip(b).enumerate() {
        let same_inputs = x.inputs.len() == y.inputs.len()
            && x.inputs.iter().zip(&y.inputs).all(|(i, j)| match (i, j) {
                (TraceInput::Node(i), TraceInput::Node(j)) => i == j,
                (TraceInput::Const(s), TraceInput::Const(t)) => {
                    s.shape() == t.shape() && s.to_vec() == t.to_vec()
                }
                _ => false,
            });
        if x.op != y.op || x.prim != y.prim || x.shape != y.shape || !same_inputs {
            return Err(format!(
                "op #{id} of step ('{}') differs between two traces with different inputs: \
                 step reads values outside the tape (a scalar or constant computed from x_t \
                 or the state, or a random draw such as dropout in training mode)",
                x.op
            ));
        }
    }
    Ok(())
}
