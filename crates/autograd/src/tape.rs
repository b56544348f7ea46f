//! The tape: a Wengert list of the ops a computation ran, and `backward`, which walks it in
//! reverse.
//!
//! Each differentiable op appends one [`Node`]: its name, the ids of its inputs, its output's
//! shape, and its backward rule — a closure that turns the gradient of the op's output into the
//! gradients of its inputs. Nodes are appended in the order ops run, so an op's inputs always
//! come before it, and walking the list backwards visits every node after all its consumers.
//!
//! A rule owns what its op saved for the backward (a sigmoid its output, a product both
//! operands). Unless the tape [retains the graph](Tape::set_retain_graph), the sweep drops
//! each rule once it has run, so a recurrent net's per-step values are freed as the backward
//! passes them, and memory falls during the backward instead of staying at its peak.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use tensor::{Float, Tensor};

use crate::inspect::{check_finite, l2_norm, Anomaly, Captured, Norms, Pass, Scope};
use crate::param::Param;
use crate::var::Var;

/// The gradient a backward rule sends to one input.
pub(crate) enum Grad<T: Float> {
    /// A gradient of the input's full shape.
    Full(Tensor<T>),
    /// A gradient for the slice `start..start + grad.dim(dim)` along `dim` of the input, zero
    /// elsewhere. `narrow` and `select` send these, so unrolling T steps out of one sequence
    /// costs O(T) in backward, not the O(T²) of padding every step's gradient with zeros.
    Slice {
        dim: usize,
        start: usize,
        grad: Tensor<T>,
    },
}

/// The backward rule of a node: given the gradient of its output, the gradient of each input
/// (`None` for an input that needs none). The flag says whether the graph is retained
/// ([`Tape::set_retain_graph`]): if not, this is the rule's last run, and it may consume what
/// it saved ([`Var::custom_op_consuming`]).
pub(crate) type BackwardFn<T> = Box<dyn FnMut(&Tensor<T>, bool) -> Vec<Option<Grad<T>>>>;

/// One recorded op.
pub(crate) struct Node<T: Float> {
    pub op: &'static str,
    /// The node id of each input, `None` for inputs that were not recorded (constants).
    pub inputs: Vec<Option<usize>>,
    pub shape: Vec<usize>,
    /// `None` for leaves, and once a backward that does not retain the graph has run it
    /// (what it saved is freed then: `freed` says so).
    pub backward: Cell<Option<BackwardFn<T>>>,
    pub freed: Cell<bool>,
    /// The [checkpointed](Tape::checkpoint) region this node was recorded in, whose re-run
    /// makes its rule again when a backward reaches it.
    pub region: Cell<Option<u32>>,
    /// Keep this node's gradient in the result of `backward` (leaves, and `retain_grad`).
    pub retain: bool,
    /// The parameter this leaf stands for.
    pub param: Option<Param<T>>,
    /// On a tracing tape: the op as data, set by the op after recording.
    pub prim: Option<crate::trace::Prim<T>>,
    /// On a tracing tape: for each input, its value if it is a constant (`None` otherwise);
    /// empty elsewhere.
    pub consts: Vec<Option<Tensor<T>>>,
    /// The name [`Var::label`] gave this node's value (`"forget_gate"`).
    pub label: Option<&'static str>,
    /// Where the node was recorded: the index in the tape's scopes of the [`Scope`] open at
    /// the time, if any (an index, so recording a node costs no reference count).
    pub scope: Option<u32>,
    /// Norms of the node's value and gradient, kept while [`Tape::set_inspect`] is on.
    pub norms: Norms,
}

pub(crate) struct TapeInner<T: Float> {
    pub nodes: RefCell<Vec<Node<T>>>,
    grad_enabled: Cell<bool>,
    pub(crate) anomaly: Cell<bool>,
    /// Keep the nodes' backward rules (and what they saved) after a backward has run them.
    retain_graph: Cell<bool>,
    pub(crate) tracing: Cell<bool>,
    /// Each parameter enters a tape once: its address → its leaf's node id.
    param_nodes: RefCell<HashMap<usize, usize>>,
    /// Every scope opened on this tape ([`Tape::scoped`], [`Tape::at_step`]), and the index of
    /// the one new nodes are recorded in.
    pub(crate) scopes: RefCell<Vec<Scope>>,
    pub(crate) scope: Cell<Option<u32>>,
    /// Where [`Var::label`] puts labelled values while [`Tape::capture`] runs.
    pub(crate) captured: RefCell<Option<Vec<Captured<T>>>>,
    /// Inside [`Tape::catch_anomaly`]: the first anomaly, kept instead of raised.
    pub(crate) catching: Cell<bool>,
    pub(crate) caught: RefCell<Option<Anomaly>>,
    /// The value of a caught forward anomaly that was not recorded (its op's inputs were
    /// constants), so that a [`Var::label`] given to it can still name it.
    pub(crate) caught_value: RefCell<Option<Tensor<T>>>,
    /// Keep each node's value and gradient norms ([`Tape::set_inspect`]).
    pub(crate) inspect: Cell<bool>,
    /// What to add to a backward anomaly at a node ([`Tape::on_backward_anomaly`]).
    pub(crate) explainers: RefCell<HashMap<usize, Explainer<T>>>,
    /// Each [checkpointed](Tape::checkpoint) region: its nodes, and the re-run that makes
    /// their rules again (taken when it runs).
    regions: RefCell<Vec<Region<T>>>,
}

/// A [checkpointed](Tape::checkpoint) region of a tape.
struct Region<T: Float> {
    nodes: std::ops::Range<usize>,
    again: Option<ReRun<T>>,
}

/// What records a checkpointed region's ops again, on a tape of its own.
type ReRun<T> = Box<dyn FnOnce(&Tape<T>)>;

/// Given the gradient of a node's output, more about where its backward went non-finite.
pub(crate) type Explainer<T> = Box<dyn Fn(&Tensor<T>) -> Option<String>>;

/// A tape that records differentiable ops. Cheap to clone (a shared handle).
///
/// Build a new tape for every training step; [`Param`]s hold the weights across steps.
///
/// ```
/// use autograd::Tape;
/// use tensor::Tensor;
///
/// let tape = Tape::<f64>::new();
/// let x = tape.var(Tensor::from_vec(vec![0.5, -1.0], &[2]));
/// let y = (&x * &x).tanh().sum_all(); // y = Σ tanh(x²)
/// let grads = y.backward();
/// // dy/dx = (1 − tanh²(x²)) · 2x
/// let expected: Vec<f64> = [0.5f64, -1.0].iter()
///     .map(|&v| (1.0 - (v * v).tanh().powi(2)) * 2.0 * v).collect();
/// assert_eq!(grads.wrt(&x).to_vec(), expected);
/// assert_eq!(tape.len(), 4); // x, mul, tanh, sum_all
/// ```
pub struct Tape<T: Float> {
    pub(crate) inner: Rc<TapeInner<T>>,
}

impl<T: Float> Clone for Tape<T> {
    fn clone(&self) -> Self {
        Tape {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Float> Default for Tape<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// What introspection shows of one node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    /// Position on the tape (the variable's id).
    pub index: usize,
    /// The op's name, equal to its method name (`"matmul"`, `"tanh"`), or `"leaf"`/`"param"`.
    pub op: &'static str,
    /// Shape of the op's output.
    pub shape: Vec<usize>,
    /// Ids of the recorded inputs.
    pub inputs: Vec<usize>,
    /// The parameter's name, for parameter leaves.
    pub param_name: Option<String>,
    /// The name [`Var::label`] gave the value, if any.
    pub label: Option<&'static str>,
    /// Where it was recorded ([`Tape::scoped`], [`Tape::at_step`]).
    pub scope: Option<Scope>,
}

impl<T: Float> Tape<T> {
    /// An empty tape, recording.
    pub fn new() -> Self {
        Tape {
            inner: Rc::new(TapeInner {
                nodes: RefCell::new(Vec::new()),
                grad_enabled: Cell::new(true),
                anomaly: Cell::new(false),
                retain_graph: Cell::new(false),
                tracing: Cell::new(false),
                param_nodes: RefCell::new(HashMap::new()),
                scopes: RefCell::new(Vec::new()),
                scope: Cell::new(None),
                captured: RefCell::new(None),
                catching: Cell::new(false),
                caught: RefCell::new(None),
                caught_value: RefCell::new(None),
                inspect: Cell::new(false),
                explainers: RefCell::new(HashMap::new()),
                regions: RefCell::new(Vec::new()),
            }),
        }
    }

    /// A leaf variable whose gradient `backward` will report.
    pub fn var(&self, value: Tensor<T>) -> Var<T> {
        if !self.grad_enabled() {
            return self.constant(value);
        }
        let id = self.push(Node {
            op: "leaf",
            inputs: vec![],
            shape: value.shape().to_vec(),
            backward: Cell::new(None),
            freed: Cell::new(false),
            region: Cell::new(None),
            retain: true,
            param: None,
            prim: None,
            consts: vec![],
            label: None,
            scope: None,
            norms: Norms::default(),
        });
        self.note_value(id, &value);
        Var::new(self.clone(), value, Some(id))
    }

    /// A constant: no gradient flows into it and nothing is recorded.
    pub fn constant(&self, value: Tensor<T>) -> Var<T> {
        Var::new(self.clone(), value, None)
    }

    /// The variable standing for `param` on this tape: a leaf, created on first use, whose
    /// gradient `backward` adds to the parameter's `grad`. In no-grad mode, a constant.
    pub fn param(&self, param: &Param<T>) -> Var<T> {
        if !self.grad_enabled() || !param.requires_grad() {
            return self.constant(param.value());
        }
        let key = param.key();
        if let Some(&id) = self.inner.param_nodes.borrow().get(&key) {
            return Var::new(self.clone(), param.value(), Some(id));
        }
        let value = param.value();
        let id = self.push(Node {
            op: "param",
            inputs: vec![],
            shape: value.shape().to_vec(),
            backward: Cell::new(None),
            freed: Cell::new(false),
            region: Cell::new(None),
            retain: true,
            param: Some(param.clone()),
            prim: None,
            consts: vec![],
            label: None,
            scope: None,
            norms: Norms::default(),
        });
        self.note_value(id, &value);
        self.inner.param_nodes.borrow_mut().insert(key, id);
        Var::new(self.clone(), value, Some(id))
    }

    /// Records an op: its output `value`, its inputs, and its backward rule, which must return
    /// one entry per input. If no input is recorded, or recording is off, nothing is added and
    /// the result is a constant. [`Var::custom_op`] is the public entry point.
    ///
    /// # Panics
    /// If the inputs belong to another tape.
    #[track_caller]
    pub(crate) fn record(
        &self,
        op: &'static str,
        inputs: &[&Var<T>],
        value: Tensor<T>,
        backward: impl Fn(&Tensor<T>) -> Vec<Option<Grad<T>>> + 'static,
    ) -> Var<T> {
        self.record_rule(op, inputs, value, Box::new(move |g, _| backward(g)))
    }

    /// [`record`](Self::record) for a rule told whether it will run again (see
    /// [`BackwardFn`]).
    #[track_caller]
    pub(crate) fn record_rule(
        &self,
        op: &'static str,
        inputs: &[&Var<T>],
        value: Tensor<T>,
        backward: BackwardFn<T>,
    ) -> Var<T> {
        for v in inputs {
            if !Rc::ptr_eq(&v.tape.inner, &self.inner) {
                panic!(
                    "{op}: variables from two different tapes were mixed; \
                     all inputs of one computation must come from the same Tape"
                );
            }
        }
        let ids: Vec<Option<usize>> = inputs.iter().map(|v| v.node).collect();
        let recorded = self.grad_enabled() && ids.iter().any(Option::is_some);
        if self.inner.anomaly.get() && !check_finite(&value) {
            if self.inner.catching.get() && !recorded && self.inner.caught.borrow().is_none() {
                *self.inner.caught_value.borrow_mut() = Some(value.clone());
            }
            self.raise(Anomaly {
                pass: Pass::Forward,
                op,
                node: recorded.then(|| self.len()),
                label: None,
                scope: self.scope(),
                input: None,
                detail: None,
            });
        }
        if !recorded {
            return self.constant(value);
        }
        let consts = match self.inner.tracing.get() {
            true => inputs
                .iter()
                .map(|v| v.node.is_none().then(|| v.value.clone()))
                .collect(),
            false => vec![],
        };
        let id = self.push(Node {
            op,
            inputs: ids,
            shape: value.shape().to_vec(),
            backward: Cell::new(Some(backward)),
            freed: Cell::new(false),
            region: Cell::new(None),
            retain: false,
            param: None,
            prim: None,
            consts,
            label: None,
            scope: self.inner.scope.get(),
            norms: Norms::default(),
        });
        self.note_value(id, &value);
        Var::new(self.clone(), value, Some(id))
    }

    fn push(&self, node: Node<T>) -> usize {
        let mut nodes = self.inner.nodes.borrow_mut();
        nodes.push(node);
        nodes.len() - 1
    }

    /// Whether ops are being recorded (false inside [`no_grad`](Self::no_grad)).
    pub fn grad_enabled(&self) -> bool {
        self.inner.grad_enabled.get()
    }

    /// Runs `f` with recording off: every op's result is a constant and the tape does not
    /// grow, so inference over a stream of any length uses constant memory.
    ///
    /// ```
    /// use autograd::Tape;
    /// use tensor::Tensor;
    /// let tape = Tape::<f32>::new();
    /// let w = tape.var(Tensor::ones(&[2, 2]));
    /// let mut h = tape.constant(Tensor::ones(&[1, 2]));
    /// tape.no_grad(|| {
    ///     for _ in 0..1000 {
    ///         h = h.matmul(&w).tanh();
    ///     }
    /// });
    /// assert_eq!(tape.len(), 1); // only `w`
    /// ```
    pub fn no_grad<R>(&self, f: impl FnOnce() -> R) -> R {
        let before = self.inner.grad_enabled.replace(false);
        let _restore = RestoreOnDrop(&self.inner.grad_enabled, before);
        f()
    }

    /// Turns anomaly detection on or off. When on, the first op whose forward output or
    /// backward gradient contains NaN or Inf panics with the op's name and node index, like
    /// `torch.autograd.detect_anomaly`, and with where it was recorded: its
    /// [scope](Self::scoped) (`[layer 1 reverse, t = 3]`), and in the backward its
    /// [label](Var::label). A forward op panics before the code that made it can label its
    /// value; run it inside [`catch_anomaly`](Self::catch_anomaly), which returns the anomaly
    /// with the label (layers do this for every step, so their reports name the gate). A
    /// gradient that becomes non-finite where the gradients from a value's consumers add up is
    /// reported at that value's node.
    pub fn set_anomaly_detection(&self, on: bool) {
        self.inner.anomaly.set(on);
    }

    /// Whether a backward keeps the graph (PyTorch's `retain_graph=True`), so that it can be
    /// differentiated again. Off by default: a backward frees what each node saved for it
    /// as it passes the node (a recurrent layer's activations, step by step), and a second
    /// backward through the same nodes panics, saying so.
    ///
    /// ```
    /// use autograd::Tape;
    /// use tensor::Tensor;
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![2.0], &[1]));
    /// tape.set_retain_graph(true);
    /// let y = (&x * &x).sum_all();
    /// let first = y.backward().wrt(&x).to_vec();
    /// assert_eq!(y.backward().wrt(&x).to_vec(), first); // again: the graph was kept
    /// ```
    pub fn set_retain_graph(&self, on: bool) {
        self.inner.retain_graph.set(on);
    }

    /// Whether backward keeps the graph ([`set_retain_graph`](Self::set_retain_graph)).
    pub fn retains_graph(&self) -> bool {
        self.inner.retain_graph.get()
    }

    /// Runs `f`, which records on this tape as usual, then frees what its ops saved for the
    /// backward (gradient checkpointing): when a backward reaches one of those ops, `again`
    /// runs on a fresh tape of its own, records the same ops (the same code on the same
    /// values, its inputs made leaves there where they are recorded here), and their rules
    /// take the freed ones' places. The gradients are the same bits as without the
    /// checkpoint: the same rules, run in the same order, from the same saved values.
    ///
    /// What stays alive between the forward and the backward is what the caller keeps (the
    /// values `f` returns) and `again`'s captures; a recurrent layer keeps the state entering
    /// each segment of steps (`LayerConfig::recompute` in the rnn crate).
    ///
    /// ```
    /// use autograd::Tape;
    /// use tensor::Tensor;
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![0.5, -1.0], &[2]));
    /// let x_value = x.value().clone();
    /// // y = tanh(tanh(x)): the inner tanh's output is freed, made again in the backward.
    /// let y = tape.checkpoint(
    ///     |_| x.tanh().tanh(),
    ///     move |t| {
    ///         let x = t.var(x_value);
    ///         x.tanh().tanh();
    ///     },
    /// );
    /// let dx = y.sum_all().backward().wrt(&x).to_vec();
    /// let plain = Tape::<f64>::new();
    /// let x2 = plain.var(Tensor::from_vec(vec![0.5, -1.0], &[2]));
    /// assert_eq!(dx, x2.tanh().tanh().sum_all().backward().wrt(&x2).to_vec());
    /// ```
    ///
    /// # Panics
    /// During the backward, if `again` records other ops than `f` did (names and count).
    pub fn checkpoint<R>(
        &self,
        f: impl FnOnce(&Tape<T>) -> R,
        again: impl FnOnce(&Tape<T>) + 'static,
    ) -> R {
        let start = self.len();
        let result = f(self);
        let end = self.len();
        let nodes = self.inner.nodes.borrow();
        let mut regions = self.inner.regions.borrow_mut();
        let region = u32::try_from(regions.len()).expect("fewer than 2³² regions");
        let mut any = false;
        for node in &nodes[start..end] {
            // Leaves (a parameter's first use, say) have no rule to free.
            if let Some(rule) = node.backward.take() {
                drop(rule);
                node.region.set(Some(region));
                any = true;
            }
        }
        if any {
            regions.push(Region {
                nodes: start..end,
                again: Some(Box::new(again)),
            });
        }
        result
    }

    /// Re-runs region `r` ([`checkpoint`](Self::checkpoint)) on a tape of its own and gives
    /// its ops' rules to this tape's nodes.
    fn rebuild(&self, nodes: &[Node<T>], r: u32) {
        let (range, again) = {
            let mut regions = self.inner.regions.borrow_mut();
            let region = &mut regions[r as usize];
            let again = region.again.take().expect("a region is re-run once");
            (region.nodes.clone(), again)
        };
        let fresh = Tape::new();
        again(&fresh);
        let made = fresh.inner.nodes.borrow();
        let mut made_ops = made.iter().filter(|n| n.op != "leaf" && n.op != "param");
        for (id, node) in nodes[range.clone()].iter().enumerate() {
            if node.region.get() != Some(r) {
                continue;
            }
            let again_node = made_ops.next();
            match again_node {
                Some(m) if m.op == node.op => node.backward.set(m.backward.take()),
                other => panic!(
                    "checkpoint: the re-run recorded {} where the forward recorded '{}' (node \
                     {}); a checkpoint's re-run must record the same ops as its forward",
                    other.map_or("nothing".to_string(), |m| format!("'{}'", m.op)),
                    node.op,
                    range.start + id
                ),
            }
            node.region.set(None);
        }
        if let Some(extra) = made_ops.next() {
            panic!(
                "checkpoint: the re-run recorded more ops than the forward (first extra: '{}')",
                extra.op
            );
        }
    }

    /// Whether anomaly detection is on.
    pub fn anomaly_detection(&self) -> bool {
        self.inner.anomaly.get()
    }

    /// Number of recorded nodes (leaves included).
    pub fn len(&self) -> usize {
        self.inner.nodes.borrow().len()
    }

    /// `true` if nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every node: index, op name, output shape and inputs.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        (0..self.len()).filter_map(|id| self.node(id)).collect()
    }

    /// Node `id`'s introspection, or `None` past the end of the tape.
    pub fn node(&self, id: usize) -> Option<NodeInfo> {
        let nodes = self.inner.nodes.borrow();
        let n = nodes.get(id)?;
        Some(NodeInfo {
            index: id,
            op: n.op,
            shape: n.shape.clone(),
            inputs: n.inputs.iter().flatten().copied().collect(),
            param_name: n.param.as_ref().map(|p| p.name()),
            label: n.label,
            scope: n.scope.map(|k| self.scope_at(k)),
        })
    }

    /// The parameters that have entered this tape (every [`Param`] an op used while recording,
    /// frozen ones excepted), in the order they first did.
    pub fn params(&self) -> Vec<Param<T>> {
        self.inner
            .nodes
            .borrow()
            .iter()
            .filter_map(|n| n.param.clone())
            .collect()
    }

    pub(crate) fn same_tape(&self, other: &Tape<T>) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn set_retain(&self, id: usize) {
        self.inner.nodes.borrow_mut()[id].retain = true;
    }

    /// Reverse-mode sweep from node `root`, seeded with `seed`. Returns the gradient of every
    /// retained node, and adds the gradients of parameter leaves to the parameters.
    pub(crate) fn backward(&self, root: usize, seed: Tensor<T>) -> Vec<Option<Tensor<T>>> {
        self.sweep(vec![(root, seed)], true, &[])
    }

    /// Reverse-mode sweep from several roots, each seeded with its gradient (seeds of one node
    /// add up). Returns the gradient of every retained node and of the nodes in `keep`; adds
    /// parameter leaves' gradients to the parameters only if `accumulate`. Unless the tape
    /// [retains the graph](Self::set_retain_graph), each node's rule is dropped once it has
    /// run, and with it what the node saved.
    pub(crate) fn sweep(
        &self,
        seeds: Vec<(usize, Tensor<T>)>,
        accumulate: bool,
        keep: &[usize],
    ) -> Vec<Option<Tensor<T>>> {
        let nodes = self.inner.nodes.borrow();
        let anomaly = self.inner.anomaly.get();
        let inspect = self.inner.inspect.get();
        let keep_graph = self.inner.retain_graph.get();
        let top = seeds.iter().map(|(id, _)| *id).max().map_or(0, |m| m + 1);
        let mut pending: Vec<Option<Tensor<T>>> = vec![None; top];
        let mut kept: Vec<Option<Tensor<T>>> = vec![None; nodes.len()];
        let mut keep_extra = vec![false; top];
        for &k in keep {
            if k < top {
                keep_extra[k] = true;
            }
        }
        for (id, seed) in seeds {
            pending[id] = Some(match pending[id].take() {
                Some(acc) => &acc + &seed,
                None => seed,
            });
        }
        for i in (0..top).rev() {
            let Some(grad) = pending[i].take() else {
                continue;
            };
            let node = &nodes[i];
            if inspect {
                node.norms.grad.set(Some(l2_norm(&grad)));
            }
            if node.freed.get() {
                panic!(
                    "backward: node {i} ('{}') was differentiated by an earlier backward, which \
                     freed what it saved; to differentiate a graph more than once, call \
                     tape.set_retain_graph(true) before the first backward (PyTorch's \
                     retain_graph=True)",
                    node.op
                );
            }
            if let Some(r) = node.region.get() {
                self.rebuild(&nodes, r); // a checkpointed region: its rules made again
            }
            if let Some(rule) = node.backward.take() {
                // Put back if the rule panics (or the graph is kept); dropped when it is done
                // otherwise, with what it saved.
                let mut rule = PutBack(&node.backward, Some(rule));
                let input_grads = (rule.1.as_mut().expect("just taken"))(&grad, keep_graph);
                if !keep_graph {
                    rule.1 = None;
                    node.freed.set(true);
                }
                assert_eq!(
                    input_grads.len(),
                    node.inputs.len(),
                    "{}: the backward rule returned {} gradients for {} inputs",
                    node.op,
                    input_grads.len(),
                    node.inputs.len()
                );
                for (k, (input, g)) in node.inputs.iter().zip(input_grads).enumerate() {
                    let (Some(j), Some(g)) = (*input, g) else {
                        continue;
                    };
                    let input_shape = &nodes[j].shape;
                    let (fits, part) = match &g {
                        Grad::Full(t) => (t.shape() == input_shape.as_slice(), t),
                        Grad::Slice { dim, start, grad } => (
                            grad.rank() == input_shape.len()
                                && *dim < input_shape.len()
                                && (0..input_shape.len()).all(|d| {
                                    if d == *dim {
                                        start + grad.shape()[d] <= input_shape[d]
                                    } else {
                                        grad.shape()[d] == input_shape[d]
                                    }
                                }),
                            grad,
                        ),
                    };
                    if !fits {
                        panic!(
                            "{}: the backward rule gave input {k} a gradient of shape {:?}, \
                             which does not fit that input's shape {:?}",
                            node.op,
                            part.shape(),
                            input_shape
                        );
                    }
                    if anomaly && !check_finite(part) {
                        // Past a caught first anomaly, no explainer needs to run again.
                        let first =
                            !self.inner.catching.get() || self.inner.caught.borrow().is_none();
                        let detail = (self.inner.explainers.borrow().get(&i))
                            .filter(|_| first)
                            .and_then(|explain| explain(&grad));
                        self.raise(Anomaly {
                            pass: Pass::Backward,
                            op: node.op,
                            node: Some(i),
                            label: node.label,
                            scope: node.scope.map(|k| self.scope_at(k)),
                            input: Some((k, j)),
                            detail,
                        });
                    }
                    // Fan-out: gradients from several consumers add up.
                    let fan_in = pending[j].is_some();
                    let sum = match (pending[j].take(), g) {
                        (None, Grad::Full(g)) => g,
                        (Some(acc), Grad::Full(g)) => &acc + &g,
                        (acc, Grad::Slice { dim, start, grad }) => {
                            let mut acc = acc.unwrap_or_else(|| Tensor::zeros(input_shape));
                            acc.narrow_add_assign(dim, start, &grad);
                            acc
                        }
                    };
                    // Finite parts can add up to an overflow: that is where the gradient of
                    // node j went non-finite, not in the next op that reads it.
                    if anomaly && fan_in && !check_finite(&sum) {
                        let target = &nodes[j];
                        self.raise(Anomaly {
                            pass: Pass::Backward,
                            op: target.op,
                            node: Some(j),
                            label: target.label,
                            scope: target.scope.map(|k| self.scope_at(k)),
                            input: None,
                            detail: Some(
                                "the gradients its consumers sent it add up to NaN or Inf"
                                    .to_string(),
                            ),
                        });
                    }
                    pending[j] = Some(sum);
                }
            }
            if let (true, Some(p)) = (accumulate, &node.param) {
                p.accumulate_grad(&grad);
            }
            if node.retain || keep_extra[i] {
                kept[i] = Some(grad);
            }
        }
        kept
    }

    /// Raises `anomaly`: panics with it, or, inside [`catch_anomaly`](Self::catch_anomaly),
    /// keeps it if it is the first.
    #[track_caller]
    fn raise(&self, anomaly: Anomaly) {
        if self.inner.catching.get() {
            let mut caught = self.inner.caught.borrow_mut();
            if caught.is_none() {
                *caught = Some(anomaly);
            }
            return;
        }
        panic!("{anomaly}");
    }

    /// With [`set_inspect`](Self::set_inspect) on, keeps the norm of node `id`'s value.
    fn note_value(&self, id: usize, value: &Tensor<T>) {
        if self.inner.inspect.get() {
            self.inner.nodes.borrow()[id]
                .norms
                .value
                .set(Some(l2_norm(value)));
        }
    }
}

/// A node's rule, put back in its place when dropped (if still held).
struct PutBack<'a, T: Float>(&'a Cell<Option<BackwardFn<T>>>, Option<BackwardFn<T>>);

impl<T: Float> Drop for PutBack<'_, T> {
    fn drop(&mut self) {
        if let Some(rule) = self.1.take() {
            self.0.set(Some(rule));
        }
    }
}

struct RestoreOnDrop<'a>(&'a Cell<bool>, bool);

impl Drop for RestoreOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(self.1);
    }
}

/// The gradients computed by one [`Var::backward`].
pub struct Gradients<T: Float> {
    pub(crate) tape: Tape<T>,
    pub(crate) grads: Vec<Option<Tensor<T>>>,
}

impl<T: Float> Gradients<T> {
    /// Whether these gradients come from `v`'s tape.
    pub fn same_tape_as(&self, v: &Var<T>) -> bool {
        self.tape.same_tape(&v.tape)
    }

    /// The gradient of the loss with respect to `v`, or `None` if `v` is not a leaf or
    /// retained variable on the loss's path.
    pub fn get(&self, v: &Var<T>) -> Option<&Tensor<T>> {
        if !self.tape.same_tape(&v.tape) {
            return None;
        }
        v.node.and_then(|id| self.grads.get(id)?.as_ref())
    }

    /// The gradient of the loss with respect to `v`.
    ///
    /// # Panics
    /// With a message saying why, if there is none: `v` is a constant (or was made in no-grad
    /// mode), belongs to another tape, is an intermediate result without
    /// [`retain_grad`](Var::retain_grad), or the loss does not depend on it.
    #[track_caller]
    pub fn wrt(&self, v: &Var<T>) -> &Tensor<T> {
        if let Some(g) = self.get(v) {
            return g;
        }
        let why = if !self.tape.same_tape(&v.tape) {
            "it belongs to another tape than the loss".to_string()
        } else {
            match v.node {
                None => "it is a constant (not recorded: made by `constant`, `detach`, or in \
                         no-grad mode)"
                    .to_string(),
                Some(id) => {
                    let nodes = self.tape.inner.nodes.borrow();
                    let node = &nodes[id];
                    if node.retain {
                        format!(
                            "node {id} ('{}') is not on the path from the loss: the loss does \
                             not depend on it",
                            node.op
                        )
                    } else {
                        format!(
                            "node {id} ('{}') is an intermediate result; call `retain_grad()` \
                             on it before `backward` to keep its gradient",
                            node.op
                        )
                    }
                }
            }
        };
        panic!("wrt: no gradient for this variable: {why}")
    }
}
