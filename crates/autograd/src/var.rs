//! [`Var`]: a tensor on a tape. Ops on variables compute their value with the `tensor` crate
//! and record their backward rule; the rules themselves live in `ops/`, one file per family.

use std::ops::{Add, Div, Mul, Neg, Sub};

use tensor::{Float, Tensor};

use crate::param::Param;
use crate::tape::{Grad, Gradients, Tape};

/// A value on a [`Tape`]: a tensor plus, when it is recorded, the id of the node that made it.
/// Cloning is cheap.
pub struct Var<T: Float> {
    pub(crate) tape: Tape<T>,
    pub(crate) value: Tensor<T>,
    pub(crate) node: Option<usize>,
}

impl<T: Float> Clone for Var<T> {
    fn clone(&self) -> Self {
        Var {
            tape: self.tape.clone(),
            value: self.value.clone(),
            node: self.node,
        }
    }
}

impl<T: Float> std::fmt::Debug for Var<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.node {
            Some(id) => write!(f, "Var(node {id}) {}", self.value),
            None => write!(f, "Var(constant) {}", self.value),
        }
    }
}

/// What can stand on the right of an op with a [`Var`]: another `Var`, a [`Param`] (entered
/// into the `Var`'s tape), or a plain [`Tensor`] (a constant).
pub trait IntoVar<T: Float> {
    /// This operand as a variable on `tape`.
    fn into_var(self, tape: &Tape<T>) -> Var<T>;
}

impl<T: Float> IntoVar<T> for Var<T> {
    fn into_var(self, _: &Tape<T>) -> Var<T> {
        self
    }
}
impl<T: Float> IntoVar<T> for &Var<T> {
    fn into_var(self, _: &Tape<T>) -> Var<T> {
        self.clone()
    }
}
impl<T: Float> IntoVar<T> for &Param<T> {
    fn into_var(self, tape: &Tape<T>) -> Var<T> {
        tape.param(self)
    }
}
impl<T: Float> IntoVar<T> for &Tensor<T> {
    fn into_var(self, tape: &Tape<T>) -> Var<T> {
        tape.constant(self.clone())
    }
}
impl<T: Float> IntoVar<T> for Tensor<T> {
    fn into_var(self, tape: &Tape<T>) -> Var<T> {
        tape.constant(self)
    }
}

/// A backward rule for one input: gradient of the output in, gradient of that input out.
pub(crate) type Rule<T> = Box<dyn Fn(&Tensor<T>) -> Tensor<T>>;

impl<T: Float> Var<T> {
    pub(crate) fn new(tape: Tape<T>, value: Tensor<T>, node: Option<usize>) -> Self {
        Var { tape, value, node }
    }

    /// The value.
    pub fn value(&self) -> &Tensor<T> {
        &self.value
    }

    /// The value's shape.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// The value of a one-element variable.
    #[track_caller]
    pub fn item(&self) -> T {
        self.value.item()
    }

    /// The tape this variable lives on.
    pub fn tape(&self) -> &Tape<T> {
        &self.tape
    }

    /// The node id on the tape, `None` for a constant.
    pub fn id(&self) -> Option<usize> {
        self.node
    }

    /// Whether gradients flow into this variable (it was recorded).
    pub fn requires_grad(&self) -> bool {
        self.node.is_some()
    }

    /// The same value cut off from the graph: no gradient flows through it (a stop-gradient,
    /// what truncated BPTT needs between chunks).
    pub fn detach(&self) -> Var<T> {
        self.tape.constant(self.value.clone())
    }

    /// Keeps this intermediate variable's gradient in the result of `backward` (leaves keep
    /// theirs anyway), like PyTorch's `retain_grad`. Returns `self` for chaining.
    pub fn retain_grad(self) -> Self {
        if let Some(id) = self.node {
            self.tape.set_retain(id);
        }
        self
    }

    /// Reverse-mode differentiation of this scalar: the gradients of every leaf (and
    /// retained variable) it depends on. Parameters also get theirs added to
    /// [`Param::grad`], as in PyTorch.
    ///
    /// # Panics
    /// If the variable has more than one element (use [`backward_with`](Self::backward_with))
    /// or is a constant.
    #[track_caller]
    pub fn backward(&self) -> Gradients<T> {
        if self.value.numel() != 1 {
            panic!(
                "backward: called on a variable of shape {:?}, which is not a scalar; reduce \
                 it to one element (e.g. with sum_all) or pass a seed gradient to backward_with",
                self.shape()
            );
        }
        self.backward_with(&Tensor::ones(self.shape()))
    }

    /// Reverse-mode differentiation seeded with `seed`, the gradient of some scalar with
    /// respect to this variable (so the result is the vector-Jacobian product).
    ///
    /// # Panics
    /// If `seed`'s shape is not this variable's, or this variable is a constant.
    #[track_caller]
    pub fn backward_with(&self, seed: &Tensor<T>) -> Gradients<T> {
        if seed.shape() != self.shape() {
            panic!(
                "backward_with: the seed has shape {:?} but the variable has shape {:?}",
                seed.shape(),
                self.shape()
            );
        }
        let Some(root) = self.node else {
            panic!(
                "backward: this variable was not recorded (it is a constant, detached, or made \
                 in no-grad mode), so there is nothing to differentiate"
            );
        };
        Gradients {
            tape: self.tape.clone(),
            grads: self.tape.backward(root, seed.clone()),
        }
    }

    /// Records a custom op with this variable as the only input; see [`Var::custom_op`].
    pub(crate) fn unary(
        &self,
        op: &'static str,
        value: Tensor<T>,
        rule: impl Fn(&Tensor<T>) -> Tensor<T> + 'static,
    ) -> Var<T> {
        Self::with_rules(op, &[self], value, vec![Box::new(rule)])
    }

    /// Records a two-input op with one backward rule per input.
    pub(crate) fn binary(
        &self,
        other: &Var<T>,
        op: &'static str,
        value: Tensor<T>,
        rule_self: impl Fn(&Tensor<T>) -> Tensor<T> + 'static,
        rule_other: impl Fn(&Tensor<T>) -> Tensor<T> + 'static,
    ) -> Var<T> {
        Self::with_rules(
            op,
            &[self, other],
            value,
            vec![Box::new(rule_self), Box::new(rule_other)],
        )
    }

    /// Records an op with one backward rule per input; the rules of inputs that need no
    /// gradient are dropped unrun.
    pub(crate) fn with_rules(
        op: &'static str,
        inputs: &[&Var<T>],
        value: Tensor<T>,
        rules: Vec<Rule<T>>,
    ) -> Var<T> {
        let rules: Vec<Option<Rule<T>>> = inputs
            .iter()
            .zip(rules)
            .map(|(v, r)| v.requires_grad().then_some(r))
            .collect();
        inputs[0].tape.record(
            op,
            inputs,
            value,
            Box::new(move |g: &Tensor<T>| {
                rules
                    .iter()
                    .map(|r| r.as_ref().map(|r| Grad::Full(r(g))))
                    .collect()
            }),
        )
    }

    /// Records a one-input op whose backward sends the gradient into a slice of the input.
    pub(crate) fn unary_slice(
        &self,
        op: &'static str,
        value: Tensor<T>,
        dim: usize,
        start: usize,
        rule: impl Fn(&Tensor<T>) -> Tensor<T> + 'static,
    ) -> Var<T> {
        self.tape.record(
            op,
            &[self],
            value,
            Box::new(move |g: &Tensor<T>| {
                vec![Some(Grad::Slice {
                    dim,
                    start,
                    grad: rule(g),
                })]
            }),
        )
    }

    /// The custom-op API: puts an op computed outside the tape on it. `value` is the op's
    /// output, computed by you from the inputs' values; `backward` gets the gradient of the
    /// output and returns one gradient per input, each of that input's shape (`None` for an
    /// input you do not differentiate). Fused kernels are built on this.
    ///
    /// ```
    /// use autograd::{gradcheck, Var};
    /// use tensor::Tensor;
    ///
    /// /// softplus(x) = log(1 + e^x), d/dx softplus(x) = sigmoid(x)
    /// fn softplus(x: &Var<f64>) -> Var<f64> {
    ///     let value = x.value().map(|v| v.exp().ln_1p());
    ///     let s = x.value().sigmoid();
    ///     Var::custom_op("softplus", &[x], value, move |g| vec![Some(g * &s)])
    /// }
    ///
    /// let x = Tensor::from_vec(vec![-2.0, 0.1, 3.0], &[3]);
    /// let report = gradcheck(|v| softplus(&v[0]), &[x]);
    /// assert!(report.passed(), "{report}");
    /// ```
    ///
    /// # Panics
    /// If `inputs` is empty or mixes tapes; during `backward`, if `backward` returns the wrong
    /// number of gradients or a gradient of the wrong shape.
    #[track_caller]
    pub fn custom_op(
        op: &'static str,
        inputs: &[&Var<T>],
        value: Tensor<T>,
        backward: impl Fn(&Tensor<T>) -> Vec<Option<Tensor<T>>> + 'static,
    ) -> Var<T> {
        Self::custom_op_consuming(op, inputs, value, move |g, _| backward(g))
    }

    /// [`custom_op`](Self::custom_op) for a backward rule that may consume what it saved.
    /// The rule is told whether the graph is retained ([`Tape::set_retain_graph`]): `false`
    /// means this is its last run, so it may reuse its saved buffers for its gradients (a
    /// kernel could write its gradients over the activations it kept); `true` means it may
    /// run again and must leave them intact.
    ///
    /// ```
    /// use autograd::{Tape, Var};
    /// use tensor::Tensor;
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![1.0, 2.0], &[2]));
    /// // y = 3x, whose rule hands its saved buffer over when it runs for the last time.
    /// let mut saved = Some(vec![3.0, 3.0]);
    /// let y = Var::custom_op_consuming("triple", &[&x], x.value() * 3.0, move |g, retained| {
    ///     let mut d = match retained {
    ///         true => saved.clone().expect("kept while retained"),
    ///         false => saved.take().expect("the last run comes once"),
    ///     };
    ///     d.iter_mut().zip(g.to_vec()).for_each(|(d, g)| *d *= g);
    ///     vec![Some(Tensor::from_vec(d, &[2]))]
    /// });
    /// assert_eq!(y.sum_all().backward().wrt(&x).to_vec(), vec![3.0, 3.0]);
    /// ```
    #[track_caller]
    pub fn custom_op_consuming(
        op: &'static str,
        inputs: &[&Var<T>],
        value: Tensor<T>,
        mut backward: impl FnMut(&Tensor<T>, bool) -> Vec<Option<Tensor<T>>> + 'static,
    ) -> Var<T> {
        let Some(first) = inputs.first() else {
            panic!("{op}: a custom op needs at least one input");
        };
        let n = inputs.len();
        first.tape.record_rule(
            op,
            inputs,
            value,
            Box::new(move |g, retained| {
                let grads = backward(g, retained);
                assert_eq!(
                    grads.len(),
                    n,
                    "{op}: the backward rule returned {} gradients for {n} inputs",
                    grads.len()
                );
                grads.into_iter().map(|g| g.map(Grad::Full)).collect()
            }),
        )
    }

    pub(crate) fn lift(&self, other: impl IntoVar<T>) -> Var<T> {
        other.into_var(&self.tape)
    }
}

// ---------------------------------------------------------------------------------------------
// Operators, so cell code reads like its equations: `&f * &h + (1.0 - &f) * &h_tilde`
// ---------------------------------------------------------------------------------------------

macro_rules! var_operator {
    ($trait:ident, $method:ident) => {
        impl<T: Float, R: IntoVar<T>> $trait<R> for &Var<T> {
            type Output = Var<T>;
            #[track_caller]
            fn $method(self, rhs: R) -> Var<T> {
                Var::$method(self, rhs)
            }
        }
        impl<T: Float, R: IntoVar<T>> $trait<R> for Var<T> {
            type Output = Var<T>;
            #[track_caller]
            fn $method(self, rhs: R) -> Var<T> {
                Var::$method(&self, rhs)
            }
        }
    };
}

var_operator!(Add, add);
var_operator!(Sub, sub);
var_operator!(Mul, mul);
var_operator!(Div, div);

/// `var op scalar` and `scalar op var` for the two concrete float types.
macro_rules! scalar_operators {
    ($($t:ty),*) => {$(
        impl Add<$t> for &Var<$t> { type Output = Var<$t>; fn add(self, s: $t) -> Var<$t> { self.add_scalar(s) } }
        impl Sub<$t> for &Var<$t> { type Output = Var<$t>; fn sub(self, s: $t) -> Var<$t> { self.add_scalar(-s) } }
        impl Mul<$t> for &Var<$t> { type Output = Var<$t>; fn mul(self, s: $t) -> Var<$t> { self.mul_scalar(s) } }
        impl Div<$t> for &Var<$t> { type Output = Var<$t>; fn div(self, s: $t) -> Var<$t> { self.mul_scalar(1.0 / s) } }
        impl Add<$t> for Var<$t> { type Output = Var<$t>; fn add(self, s: $t) -> Var<$t> { self.add_scalar(s) } }
        impl Sub<$t> for Var<$t> { type Output = Var<$t>; fn sub(self, s: $t) -> Var<$t> { self.add_scalar(-s) } }
        impl Mul<$t> for Var<$t> { type Output = Var<$t>; fn mul(self, s: $t) -> Var<$t> { self.mul_scalar(s) } }
        impl Div<$t> for Var<$t> { type Output = Var<$t>; fn div(self, s: $t) -> Var<$t> { self.mul_scalar(1.0 / s) } }
        impl Add<&Var<$t>> for $t { type Output = Var<$t>; fn add(self, v: &Var<$t>) -> Var<$t> { v.add_scalar(self) } }
        impl Sub<&Var<$t>> for $t { type Output = Var<$t>; fn sub(self, v: &Var<$t>) -> Var<$t> { v.neg().add_scalar(self) } }
        impl Mul<&Var<$t>> for $t { type Output = Var<$t>; fn mul(self, v: &Var<$t>) -> Var<$t> { v.mul_scalar(self) } }
        impl Div<&Var<$t>> for $t { type Output = Var<$t>; fn div(self, v: &Var<$t>) -> Var<$t> { v.recip().mul_scalar(self) } }
        impl Add<Var<$t>> for $t { type Output = Var<$t>; fn add(self, v: Var<$t>) -> Var<$t> { v.add_scalar(self) } }
        impl Sub<Var<$t>> for $t { type Output = Var<$t>; fn sub(self, v: Var<$t>) -> Var<$t> { v.neg().add_scalar(self) } }
        impl Mul<Var<$t>> for $t { type Output = Var<$t>; fn mul(self, v: Var<$t>) -> Var<$t> { v.mul_scalar(self) } }
        impl Div<Var<$t>> for $t { type Output = Var<$t>; fn div(self, v: Var<$t>) -> Var<$t> { v.recip().mul_scalar(self) } }
    )*};
}

scalar_operators!(f32, f64);

impl<T: Float> Neg for &Var<T> {
    type Output = Var<T>;
    fn neg(self) -> Var<T> {
        Var::neg(self)
    }
}

impl<T: Float> Neg for Var<T> {
    type Output = Var<T>;
    fn neg(self) -> Var<T> {
        Var::neg(&self)
    }
}
