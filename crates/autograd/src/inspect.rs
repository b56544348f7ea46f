//! Seeing inside a recorded computation: names, places and faults.
//!
//! - **Labels** ([`Var::label`]): a name for a value, `"forget_gate"`, kept on its node. Cells
//!   label their gates; anomaly reports, [`Tape::to_dot`] and [`Tape::capture`] show them.
//! - **Scopes** ([`Tape::scoped`], [`Tape::at_step`]): where a node was recorded, a group
//!   (`"layer 1 reverse"`) and a time step; every node recorded inside carries it.
//!   [`Tape::to_dot`] draws one cluster per group and step.
//! - **Captures** ([`Tape::capture`]): the labelled values a closure made, in order, even in
//!   no-grad mode, which is how a probe reads a cell's gates.
//! - **Anomalies** ([`Anomaly`]): the first op whose forward value or backward gradient is not
//!   finite, with its op, node, label and scope. Anomaly mode panics with it;
//!   [`Tape::catch_anomaly`] returns it, so a caller can add what it knows.
//! - **Gradients of anything** ([`grad`]): vector-Jacobian products from several outputs to
//!   any recorded variables, leaving the parameters' gradients alone (`torch.autograd.grad`).
//! - **Norms** ([`Tape::set_inspect`]): every node's value and gradient norm, for pictures.
//!
//! All of it is free when unused: a label is one store into its node, a scope one
//! reference-count increment per node, and captures, catching and norms cost nothing unless on.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;

use tensor::{Float, Tensor};

use crate::tape::Tape;
use crate::var::Var;

/// Where a node was recorded: a group (a layer and direction, say) and a time step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// The group, as [`Tape::scoped`] named it.
    pub group: Rc<str>,
    /// The time step, as [`Tape::at_step`] set it.
    pub step: Option<usize>,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.step {
            Some(t) if self.group.is_empty() => write!(f, "t = {t}"),
            Some(t) => write!(f, "{}, t = {t}", self.group),
            None => write!(f, "{}", self.group),
        }
    }
}

/// Which sweep found an anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// An op's output.
    Forward,
    /// A gradient a backward rule sent to one of its op's inputs.
    Backward,
}

/// The first non-finite value (NaN or ±Inf) an op produced, and where.
#[derive(Clone, Debug, PartialEq)]
pub struct Anomaly {
    /// The forward value or a backward gradient.
    pub pass: Pass,
    /// The op's name.
    pub op: &'static str,
    /// Its node; `None` for a forward op that was not recorded (all inputs constant).
    pub node: Option<usize>,
    /// The node's [label](Var::label), if it has one.
    pub label: Option<&'static str>,
    /// The [scope](Tape::scoped) it was recorded in.
    pub scope: Option<Scope>,
    /// Backward: which input's gradient (its position among the op's inputs, and its node).
    pub input: Option<(usize, usize)>,
    /// More about where, from whoever knows the op's insides (a layer that replays a fused
    /// kernel op by op: [`Tape::on_backward_anomaly`]).
    pub detail: Option<String>,
}

impl Anomaly {
    /// Where, in words: `"layer 1 reverse, t = 3, 'forget_gate'"` (empty if nothing is known).
    pub fn place(&self) -> String {
        let scope = self.scope.as_ref().map(Scope::to_string);
        let label = self.label.map(|l| format!("'{l}'"));
        [scope, label]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = match self.node {
            Some(n) => format!("node {n}"),
            None => "not recorded".to_string(),
        };
        let pass = match self.pass {
            Pass::Forward => "forward",
            Pass::Backward => "backward",
        };
        write!(
            f,
            "anomaly: the {pass} of op '{}' ({at}) produced NaN or Inf",
            self.op
        )?;
        if let Some((k, j)) = self.input {
            write!(f, " in the gradient of input {k} (node {j})")?;
        }
        let place = self.place();
        if !place.is_empty() {
            write!(f, " [{place}]")?;
        }
        if let Some(detail) = &self.detail {
            write!(f, "; {detail}")?;
        }
        Ok(())
    }
}

/// A labelled value seen by [`Tape::capture`].
#[derive(Clone, Debug)]
pub struct Captured<T: Float> {
    /// The label.
    pub name: &'static str,
    /// The value.
    pub value: Tensor<T>,
    /// Its node, if it was recorded.
    pub node: Option<usize>,
}

/// A node's value and gradient norms, kept while [`Tape::set_inspect`] is on.
#[derive(Default)]
pub(crate) struct Norms {
    pub value: Cell<Option<f64>>,
    pub grad: Cell<Option<f64>>,
}

/// Whether every element of `t` is finite.
pub(crate) fn check_finite<T: Float>(t: &Tensor<T>) -> bool {
    t.to_vec().iter().all(|v| v.is_finite())
}

/// Restores a tape's scope when dropped (also when the closure panics).
struct ScopeGuard<'a, T: Float>(&'a Tape<T>, Option<u32>);

impl<T: Float> Drop for ScopeGuard<'_, T> {
    fn drop(&mut self) {
        self.0.inner.scope.set(self.1);
    }
}

impl<T: Float> Tape<T> {
    /// Runs `f` with every node it records in group `group` (a layer and direction, a block of
    /// a model), which anomaly reports name and [`to_dot`](Self::to_dot) draws as a cluster.
    /// Inside another group, the name is joined to it: `"encoder / layer 0"`.
    ///
    /// ```
    /// use autograd::Tape;
    /// use tensor::Tensor;
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::ones(&[2]));
    /// let y = tape.scoped("encoder", || tape.scoped("layer 0", || tape.at_step(0, || x.tanh())));
    /// let node = &tape.nodes()[y.id().unwrap()];
    /// assert_eq!(node.scope.as_ref().unwrap().to_string(), "encoder / layer 0, t = 0");
    /// ```
    pub fn scoped<R>(&self, group: &str, f: impl FnOnce() -> R) -> R {
        let group: Rc<str> = match self.scope() {
            Some(outer) if !outer.group.is_empty() => format!("{} / {group}", outer.group).into(),
            _ => Rc::from(group),
        };
        self.enter(Scope { group, step: None }, f)
    }

    /// Runs `f` with every node it records at time step `t` of the current group (of no group,
    /// outside [`scoped`](Self::scoped)).
    pub fn at_step<R>(&self, t: usize, f: impl FnOnce() -> R) -> R {
        let group = match self.scope() {
            Some(s) => s.group,
            None => Rc::from(""),
        };
        self.enter(
            Scope {
                group,
                step: Some(t),
            },
            f,
        )
    }

    fn enter<R>(&self, scope: Scope, f: impl FnOnce() -> R) -> R {
        let index = {
            let mut scopes = self.inner.scopes.borrow_mut();
            scopes.push(scope);
            u32::try_from(scopes.len() - 1).expect("fewer than 2³² scopes")
        };
        let _restore = ScopeGuard(self, self.inner.scope.replace(Some(index)));
        f()
    }

    /// The scope nodes are being recorded in.
    pub fn scope(&self) -> Option<Scope> {
        self.inner.scope.get().map(|k| self.scope_at(k))
    }

    pub(crate) fn scope_at(&self, index: u32) -> Scope {
        self.inner.scopes.borrow()[index as usize].clone()
    }

    /// Runs `f` and returns, with its result, every value it [labelled](Var::label), in
    /// order. Works in no-grad mode too (nothing is recorded, the values are still seen).
    ///
    /// ```
    /// use autograd::Tape;
    /// use tensor::Tensor;
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![0.0, 1.0], &[2]));
    /// let (_, seen) = tape.capture(|| x.sigmoid().label("gate").tanh());
    /// assert_eq!(seen.len(), 1);
    /// assert_eq!(seen[0].name, "gate");
    /// assert_eq!(seen[0].value.to_vec()[0], 0.5);
    /// ```
    pub fn capture<R>(&self, f: impl FnOnce() -> R) -> (R, Vec<Captured<T>>) {
        struct Restore<'a, T: Float>(&'a Tape<T>, Option<Vec<Captured<T>>>);
        impl<T: Float> Drop for Restore<'_, T> {
            fn drop(&mut self) {
                *self.0.inner.captured.borrow_mut() = self.1.take();
            }
        }
        let before = self.inner.captured.borrow_mut().replace(Vec::new());
        let restore = Restore(self, before);
        let out = f();
        let seen = self.inner.captured.borrow_mut().take().unwrap_or_default();
        drop(restore);
        (out, seen)
    }

    /// Runs `f` with anomaly detection on, and returns the first anomaly (forward or backward)
    /// instead of panicking at it; `f` runs to its end either way (on non-finite values past
    /// the first). The anomaly's label is read when `f` returns, so a label given just after
    /// the op that failed (`x.sigmoid().label("forget_gate")`) is in it.
    ///
    /// ```
    /// use autograd::{Pass, Tape};
    /// use tensor::Tensor;
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![-1.0], &[1]));
    /// let err = tape.catch_anomaly(|| tape.at_step(3, || x.log().label("oops"))).unwrap_err();
    /// assert_eq!((err.pass, err.op, err.label), (Pass::Forward, "log", Some("oops")));
    /// assert_eq!(err.scope.unwrap().step, Some(3));
    /// ```
    pub fn catch_anomaly<R>(&self, f: impl FnOnce() -> R) -> Result<R, Box<Anomaly>> {
        /// Puts back the modes and the outer catch's findings, also when `f` panics.
        struct Restore<'a, T: Float> {
            tape: &'a Tape<T>,
            catching: bool,
            anomaly: bool,
            caught: Option<Anomaly>,
            caught_value: Option<Tensor<T>>,
        }
        impl<T: Float> Drop for Restore<'_, T> {
            fn drop(&mut self) {
                let inner = &self.tape.inner;
                inner.catching.set(self.catching);
                inner.anomaly.set(self.anomaly);
                *inner.caught.borrow_mut() = self.caught.take();
                *inner.caught_value.borrow_mut() = self.caught_value.take();
            }
        }
        let inner = &self.inner;
        let restore = Restore {
            tape: self,
            catching: inner.catching.replace(true),
            anomaly: inner.anomaly.replace(true),
            caught: inner.caught.borrow_mut().take(),
            caught_value: inner.caught_value.borrow_mut().take(),
        };
        let out = f();
        let caught = inner.caught.borrow_mut().take();
        drop(restore);
        match caught {
            None => Ok(out),
            Some(mut anomaly) => {
                if let Some(id) = anomaly.node {
                    anomaly.label = anomaly.label.or(inner.nodes.borrow()[id].label);
                }
                Err(Box::new(anomaly))
            }
        }
    }

    /// Inside [`catch_anomaly`](Self::catch_anomaly): runs `f`, and if the first anomaly was
    /// caught during it, lets `detail` say more about it (a layer adds where its fused kernel's
    /// fault is, op by op). Elsewhere, just runs `f`.
    pub fn annotate_anomaly<R>(
        &self,
        f: impl FnOnce() -> R,
        detail: impl FnOnce(&Anomaly) -> Option<String>,
    ) -> R {
        let before = self.inner.caught.borrow().is_some();
        let out = f();
        if self.inner.catching.get() && !before {
            let found = self.inner.caught.borrow().clone();
            if let Some(found) = found.filter(|a| a.detail.is_none()) {
                let more = detail(&found);
                if let Some(a) = self.inner.caught.borrow_mut().as_mut() {
                    a.detail = more;
                }
            }
        }
        out
    }

    /// Registers what a backward anomaly at node `node` should add to its report: `explain`
    /// gets the gradient of the node's output and may say more (which step and gate inside a
    /// fused kernel went non-finite). Used by layers in anomaly mode. The tape keeps `explain`
    /// as long as it lives: a closure that holds a variable of this same tape would keep the
    /// tape alive forever (a reference cycle), so give it values or another tape's variables.
    ///
    /// ```
    /// use autograd::Tape;
    /// use tensor::Tensor;
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![0.0], &[1]));
    /// let y = x.sqrt(); // ∂y/∂x = ∞ at 0
    /// tape.on_backward_anomaly(y.id().unwrap(), |g| Some(format!("seeded with {:?}", g.to_vec())));
    /// let err = tape.catch_anomaly(|| drop(y.sum_all().backward())).unwrap_err();
    /// assert!(err.to_string().ends_with("; seeded with [1.0]"));
    /// ```
    pub fn on_backward_anomaly(
        &self,
        node: usize,
        explain: impl Fn(&Tensor<T>) -> Option<String> + 'static,
    ) {
        (self.inner.explainers.borrow_mut()).insert(node, Box::new(explain));
    }

    /// Whether [`catch_anomaly`](Self::catch_anomaly) is running: anomalies are being
    /// collected, not raised.
    pub fn catching_anomaly(&self) -> bool {
        self.inner.catching.get()
    }

    /// Keeps the norm of every node's value from now on, and of its gradient in every
    /// backward, for [`to_dot`](Self::to_dot)'s annotations (off by default: it reads every
    /// value once more).
    ///
    /// ```
    /// use autograd::Tape;
    /// use tensor::Tensor;
    /// let tape = Tape::<f64>::new();
    /// tape.set_inspect(true);
    /// let x = tape.var(Tensor::from_vec(vec![3.0, 4.0], &[2]));
    /// x.sum_all().backward();
    /// assert_eq!(tape.norms(x.id().unwrap()), (Some(5.0), Some(2f64.sqrt())));
    /// assert!(tape.to_dot().contains("|v| 5.000e0"));
    /// ```
    pub fn set_inspect(&self, on: bool) {
        self.inner.inspect.set(on);
    }

    /// The norms kept for node `id` by [`set_inspect`](Self::set_inspect): its value's and
    /// its last gradient's L2 norm.
    pub fn norms(&self, id: usize) -> (Option<f64>, Option<f64>) {
        let nodes = self.inner.nodes.borrow();
        nodes
            .get(id)
            .map_or((None, None), |n| (n.norms.value.get(), n.norms.grad.get()))
    }
}

impl<T: Float> Var<T> {
    /// Names this value (`"forget_gate"`): the name goes on its node, where anomaly reports and
    /// [`Tape::to_dot`] show it, and to [`Tape::capture`], where a probe reads it. Returns
    /// `self`, so it chains: `(x_f + h_f).sigmoid().label("forget_gate")`. Costs one store.
    ///
    /// ```
    /// use autograd::Tape;
    /// use tensor::Tensor;
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![-1.0], &[1]));
    /// let f = x.sigmoid().label("forget_gate");
    /// assert_eq!(tape.nodes()[f.id().unwrap()].label, Some("forget_gate"));
    /// // In anomaly mode the label is in the report.
    /// let err = tape.catch_anomaly(|| x.sqrt().label("root")).unwrap_err();
    /// assert!(err.to_string().ends_with("produced NaN or Inf ['root']"));
    /// ```
    pub fn label(self, name: &'static str) -> Self {
        let inner = &self.tape.inner;
        if let Some(id) = self.node {
            inner.nodes.borrow_mut()[id].label = Some(name);
        } else if (inner.caught_value.borrow_mut())
            .take_if(|v| v.same_view(&self.value))
            .is_some()
        {
            // The caught anomaly's value, unrecorded: the label is its only name.
            if let Some(anomaly) = inner.caught.borrow_mut().as_mut() {
                anomaly.label.get_or_insert(name);
            }
        }
        if let Some(seen) = self.tape.inner.captured.borrow_mut().as_mut() {
            seen.push(Captured {
                name,
                value: self.value.clone(),
                node: self.node,
            });
        }
        self
    }
}

/// The gradients of `Σ_k ⟨seeds[k], outputs[k]⟩` with respect to each of `inputs`: a
/// vector-Jacobian product from several outputs at once, like `torch.autograd.grad`. Unlike
/// [`Var::backward`], it adds nothing to the parameters' gradients, and `inputs` may be any
/// recorded variables, intermediate ones included. `None` for an input the outputs do not
/// depend on (or a constant).
///
/// # Panics
/// If the lengths of `outputs` and `seeds` differ, a seed's shape is not its output's, or the
/// variables are on different tapes.
///
/// ```
/// use autograd::{grad, Tape};
/// use tensor::Tensor;
/// let tape = Tape::<f64>::new();
/// let x = tape.var(Tensor::from_vec(vec![3.0], &[1]));
/// let h = x.square();            // h = x²
/// let y = h.mul_scalar(2.0);     // y = 2h
/// let g = grad(&[&y], &[Tensor::from_vec(vec![1.0], &[1])], &[&h, &x]);
/// assert_eq!(g[0].as_ref().unwrap().to_vec(), [2.0]);   // ∂y/∂h
/// assert_eq!(g[1].as_ref().unwrap().to_vec(), [12.0]);  // ∂y/∂x = 2 · 2x
/// ```
#[track_caller]
pub fn grad<T: Float>(
    outputs: &[&Var<T>],
    seeds: &[Tensor<T>],
    inputs: &[&Var<T>],
) -> Vec<Option<Tensor<T>>> {
    assert_eq!(
        outputs.len(),
        seeds.len(),
        "grad: {} outputs but {} seeds",
        outputs.len(),
        seeds.len()
    );
    let Some(tape) = outputs.iter().chain(inputs).map(|v| v.tape()).next() else {
        return vec![];
    };
    for v in outputs.iter().chain(inputs) {
        assert!(
            tape.same_tape(v.tape()),
            "grad: variables from two different tapes were mixed"
        );
    }
    let mut roots = Vec::new();
    for (out, seed) in outputs.iter().zip(seeds) {
        assert_eq!(
            seed.shape(),
            out.shape(),
            "grad: a seed of shape {:?} for an output of shape {:?}",
            seed.shape(),
            out.shape()
        );
        if let Some(id) = out.id() {
            roots.push((id, seed.clone()));
        }
    }
    let keep: Vec<usize> = inputs.iter().filter_map(|v| v.id()).collect();
    let kept = tape.sweep(roots, false, &keep);
    inputs
        .iter()
        .map(|v| v.id().and_then(|id| kept[id].clone()))
        .collect()
}

/// The L2 norm of a tensor's elements, in f64 (what the probe and the pictures report).
pub fn l2_norm<T: Float>(t: &Tensor<T>) -> f64 {
    t.to_vec()
        .iter()
        .map(|v| v.to_f64() * v.to_f64())
        .sum::<f64>()
        .sqrt()
}
