//! Tracing: a tape that remembers what each op was, so a computation recorded once can be
//! rebuilt and run again as a program (`rnn`'s compiled cells trace a cell's `step` this way).
//!
//! A tape made with [`Tape::tracing`] records, beside each node's backward rule, the op as
//! data (a [`Prim`]: its kind and attributes) and the values of its constant inputs.
//! [`Tape::trace`] hands the list back. Ops with no `Prim` (`index_select`, `softmax`,
//! custom ops, ...) appear with `prim: None`, so a consumer can say which op it could not
//! follow. A `Prim` can be replayed on any tape with [`Prim::apply`], which calls the same
//! `Var` method that recorded it.
//!
//! ```
//! use autograd::{Prim, Tape, TraceInput};
//! use tensor::Tensor;
//! let tape = Tape::<f64>::tracing();
//! let x = tape.var(Tensor::from_vec(vec![1.0, 2.0], &[1, 2]));
//! let y = (&x * 3.0).tanh();
//! let trace = tape.trace();
//! assert_eq!(trace.len(), 3); // leaf, mul_scalar, tanh
//! assert_eq!(trace[1].prim, Some(Prim::MulScalar(3.0)));
//! assert!(matches!(trace[2].inputs[..], [TraceInput::Node(1)]));
//! // Replayed on a fresh tape, the program gives the same value.
//! let again = Tape::<f64>::new();
//! let x2 = again.var(x.value().clone());
//! let m = trace[1].prim.as_ref().unwrap().apply(&[&x2]);
//! let y2 = trace[2].prim.as_ref().unwrap().apply(&[&m]);
//! assert_eq!(y2.value().to_vec(), y.value().to_vec());
//! ```

use tensor::{Float, Tensor};

use crate::ops::elementwise::{Binary, Unary};
use crate::tape::Tape;
use crate::var::Var;

/// An op as data: what [`Prim::apply`] needs to run it again.
#[derive(Clone, Debug, PartialEq)]
pub enum Prim<T: Float> {
    /// An elementwise function ([`Var::tanh`], [`Var::exp`], ...).
    Unary(Unary),
    /// [`Var::add`], [`Var::sub`], [`Var::mul`] or [`Var::div`], broadcasting.
    Binary(Binary),
    /// `x + s` ([`Var::add_scalar`]).
    AddScalar(T),
    /// `x · s` ([`Var::mul_scalar`]).
    MulScalar(T),
    /// [`Var::matmul`].
    Matmul,
    /// [`Var::t`].
    T,
    /// [`Var::transpose`] of two (resolved) dims.
    Transpose(usize, usize),
    /// [`Var::narrow`] (and so `chunk` and `split`), the dim resolved.
    Narrow {
        /// The dim.
        dim: usize,
        /// The first index kept.
        start: usize,
        /// How many are kept.
        len: usize,
    },
    /// [`Var::concat`] along a resolved dim.
    Concat(usize),
    /// [`Var::sum`] over one resolved dim.
    Sum {
        /// The dim.
        dim: usize,
        /// Whether it is kept with size 1.
        keepdim: bool,
    },
    /// [`Var::mean`] over one resolved dim.
    Mean {
        /// The dim.
        dim: usize,
        /// Whether it is kept with size 1.
        keepdim: bool,
    },
}

impl<T: Float> Prim<T> {
    /// Runs the op again on `inputs` (as many as it had when traced), recording it on their
    /// tape like the `Var` method it came from.
    ///
    /// # Panics
    /// If the number of inputs is wrong for the op, or the `Var` method panics.
    #[track_caller]
    pub fn apply(&self, inputs: &[&Var<T>]) -> Var<T> {
        let one = || match inputs {
            [a] => *a,
            _ => panic!("{self:?}: takes one input, got {}", inputs.len()),
        };
        let two = || match inputs {
            [a, b] => (*a, *b),
            _ => panic!("{self:?}: takes two inputs, got {}", inputs.len()),
        };
        match *self {
            Prim::Unary(op) => one().apply_unary(op),
            Prim::Binary(op) => {
                let (a, b) = two();
                match op {
                    Binary::Add => a.add(b),
                    Binary::Sub => a.sub(b),
                    Binary::Mul => a.mul(b),
                    Binary::Div => a.div(b),
                }
            }
            Prim::AddScalar(s) => one().add_scalar(s),
            Prim::MulScalar(s) => one().mul_scalar(s),
            Prim::Matmul => {
                let (a, b) = two();
                a.matmul(b)
            }
            Prim::T => one().t(),
            Prim::Transpose(a, b) => one().transpose(a, b),
            Prim::Narrow { dim, start, len } => one().narrow(dim, start, len),
            Prim::Concat(dim) => Var::concat(inputs, dim),
            Prim::Sum { dim, keepdim } => one().sum(&[dim], keepdim),
            Prim::Mean { dim, keepdim } => one().mean(&[dim], keepdim),
        }
    }
}

/// Where a traced op's input came from.
#[derive(Clone, Debug)]
pub enum TraceInput<T: Float> {
    /// An earlier node of the trace.
    Node(usize),
    /// A constant (not recorded): its value when traced.
    Const(Tensor<T>),
}

/// One node of a trace (see [`Tape::trace`]).
#[derive(Clone, Debug)]
pub struct TracedOp<T: Float> {
    /// The op's name (`"leaf"` and `"param"` for leaves).
    pub op: &'static str,
    /// The op as data; `None` for leaves and for ops that do not describe themselves.
    pub prim: Option<Prim<T>>,
    /// Its inputs in order, constants included.
    pub inputs: Vec<TraceInput<T>>,
    /// The shape of its output.
    pub shape: Vec<usize>,
}

impl<T: Float> Tape<T> {
    /// An empty tape that also records each op as data, for [`trace`](Self::trace).
    pub fn tracing() -> Self {
        let tape = Tape::new();
        tape.inner.tracing.set(true);
        tape
    }

    /// Whether this tape records ops as data (made by [`tracing`](Self::tracing)).
    pub fn is_tracing(&self) -> bool {
        self.inner.tracing.get()
    }

    /// Every node as data, in order. On a tape that is not [`tracing`](Self::tracing), every
    /// `prim` is `None` and constant inputs are missing.
    pub fn trace(&self) -> Vec<TracedOp<T>> {
        self.inner
            .nodes
            .borrow()
            .iter()
            .map(|n| {
                let inputs = (n.inputs.iter().enumerate())
                    .filter_map(|(k, i)| match i {
                        Some(id) => Some(TraceInput::Node(*id)),
                        None => n.consts.get(k).cloned().flatten().map(TraceInput::Const),
                    })
                    .collect();
                TracedOp {
                    op: n.op,
                    prim: n.prim.clone(),
                    inputs,
                    shape: n.shape.clone(),
                }
            })
            .collect()
    }
}

impl<T: Float> Var<T> {
    /// Notes the op that just made this variable, if its tape is tracing and it was recorded.
    pub(crate) fn traced(self, prim: impl FnOnce() -> Prim<T>) -> Self {
        if let (true, Some(id)) = (self.tape.is_tracing(), self.node) {
            self.tape.inner.nodes.borrow_mut()[id].prim = Some(prim());
        }
        self
    }

    /// [`traced`](Self::traced) for ops that describe only some of their forms.
    pub(crate) fn traced_if(self, prim: Option<Prim<T>>) -> Self {
        match prim {
            Some(p) => self.traced(|| p),
            None => self,
        }
    }
}
