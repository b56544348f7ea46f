//! Graphviz export of a tape, so the unrolled graph of an RNN can be drawn:
//! `dot -Tsvg graph.dot -o graph.svg`.
//!
//! Layout: time flows down the page. Nodes recorded in a [scope](Tape::scoped) are drawn in a
//! cluster per group (`layer 0`), and inside it one cluster per time step, so a T-step unroll
//! is T boxes stacked, each as wide as one step (invisible edges from each step's last node to
//! the next step's first nodes keep them in order). Inputs are blue, parameters orange, labelled
//! values (gates) green and bold; with [`Tape::set_inspect`] on, each node also shows its
//! value's and gradient's norms.

use std::fmt::Write;

use tensor::Float;

use crate::tape::{NodeInfo, Tape};

impl<T: Float> Tape<T> {
    /// The recorded graph in Graphviz DOT: one box per node with its index, label (if any), op
    /// name (or parameter name) and output shape, and an arrow from each input to its
    /// consumer; clusters per scope group and time step.
    ///
    /// ```
    /// use autograd::Tape;
    /// use tensor::Tensor;
    /// let tape = Tape::<f64>::new();
    /// let mut h = tape.var(Tensor::zeros(&[1, 2]));
    /// tape.scoped("rnn", || for t in 0..2 {
    ///     h = tape.at_step(t, || h.tanh().label("h_t"));
    /// });
    /// let dot = tape.to_dot();
    /// assert!(dot.contains("subgraph cluster_0_1")); // group 0, its second step
    /// assert!(dot.contains("h_t"));
    /// ```
    pub fn to_dot(&self) -> String {
        let nodes = self.nodes();
        let mut out = String::from(
            "digraph tape {\n  rankdir=TB;\n  newrank=true;\n  \
             node [fontname=\"monospace\", fontsize=10];\n  edge [arrowsize=0.6];\n",
        );
        // Groups and steps in the order they first appear.
        let mut groups: Vec<(String, Steps)> = Vec::new();
        let mut loose = Vec::new();
        for n in &nodes {
            let Some(scope) = &n.scope else {
                loose.push(n.index);
                continue;
            };
            let g = match groups.iter().position(|(name, _)| **name == *scope.group) {
                Some(g) => g,
                None => {
                    groups.push((scope.group.to_string(), Vec::new()));
                    groups.len() - 1
                }
            };
            let steps = &mut groups[g].1;
            match steps.iter_mut().find(|(s, _)| *s == scope.step) {
                Some((_, ids)) => ids.push(n.index),
                None => steps.push((scope.step, vec![n.index])),
            }
        }
        for &i in &loose {
            self.dot_node(&mut out, &nodes[i], "  ");
        }
        for (g, (name, steps)) in groups.iter().enumerate() {
            let _ = writeln!(
                out,
                "  subgraph cluster_{g} {{\n    label=\"{}\";\n    style=rounded;\n    \
                 color=\"#888888\";",
                escape(if name.is_empty() { "steps" } else { name })
            );
            for (k, (step, ids)) in steps.iter().enumerate() {
                let indent = match step {
                    Some(t) => {
                        let _ = writeln!(
                            out,
                            "    subgraph cluster_{g}_{k} {{\n      label=\"t = {t}\";\n      \
                             style=\"rounded,filled\";\n      fillcolor=\"#f6f6f6\";\n      \
                             color=\"#bbbbbb\";"
                        );
                        "      "
                    }
                    None => "    ",
                };
                for &i in ids {
                    self.dot_node(&mut out, &nodes[i], indent);
                }
                if step.is_some() {
                    out.push_str("    }\n");
                }
            }
            out.push_str("  }\n");
        }
        for n in &nodes {
            for i in &n.inputs {
                let _ = writeln!(out, "  n{i} -> n{};", n.index);
            }
        }
        // Each step below the one before: an invisible edge from a step's last node to each
        // node of the next step that has no input inside it (without these, the ops of every
        // step that read only the input and the weights would rank at the top, side by side).
        for (_, steps) in &groups {
            for pair in steps.windows(2) {
                let (Some(last), next) = (pair[0].1.last(), &pair[1].1) else {
                    continue;
                };
                for &i in next {
                    if !nodes[i].inputs.iter().any(|j| next.contains(j)) {
                        let _ = writeln!(out, "  n{last} -> n{i} [style=invis];");
                    }
                }
            }
        }
        out.push_str("}\n");
        out
    }

    fn dot_node(&self, out: &mut String, n: &NodeInfo, indent: &str) {
        let (mut label, style) = match (&n.param_name, n.op, n.label) {
            (Some(name), _, _) => (
                format!("#{} {}", n.index, escape(name)),
                "shape=box, style=filled, fillcolor=\"#fde6c8\"",
            ),
            (None, "leaf", label) => (
                format!("#{} {}", n.index, escape(label.unwrap_or("input"))),
                "shape=box, style=filled, fillcolor=\"#d8e8f8\"",
            ),
            (None, op, Some(label)) => (
                format!("#{} {}\\n{op}", n.index, escape(label)),
                "shape=box, style=\"rounded,filled,bold\", fillcolor=\"#d9f2d9\"",
            ),
            (None, op, None) => (format!("#{} {op}", n.index), "shape=ellipse"),
        };
        let _ = write!(label, "\\n{:?}", n.shape);
        let (value, grad) = self.norms(n.index);
        if let Some(v) = value {
            let _ = write!(label, "\\n|v| {v:.3e}");
        }
        if let Some(g) = grad {
            let _ = write!(label, "\\n|g| {g:.3e}");
        }
        let _ = writeln!(out, "{indent}n{} [label=\"{label}\", {style}];", n.index);
    }
}

/// A group's time steps (`None`: no step) and their nodes, in order of appearance.
type Steps = Vec<(Option<usize>, Vec<usize>)>;

/// `s` safe inside a DOT string.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
