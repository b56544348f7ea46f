//! Graphviz export of a tape, so the unrolled graph of an RNN can be drawn:
//! `dot -Tsvg graph.dot -o graph.svg`.

use std::fmt::Write;

use tensor::Float;

use crate::tape::Tape;

impl<T: Float> Tape<T> {
    /// The recorded graph in Graphviz DOT: one box per node labelled with its index, op name
    /// (or parameter name) and output shape, and an arrow from each input to its consumer.
    pub fn to_dot(&self) -> String {
        let mut out =
            String::from("digraph tape {\n  rankdir=LR;\n  node [fontname=\"monospace\"];\n");
        for n in self.nodes() {
            let (label, style) = match (&n.param_name, n.op) {
                (Some(name), _) => (
                    format!("#{} {name}", n.index),
                    "shape=box, style=filled, fillcolor=\"#fde6c8\"",
                ),
                (None, "leaf") => (
                    format!("#{} input", n.index),
                    "shape=box, style=filled, fillcolor=\"#d8e8f8\"",
                ),
                (None, op) => (format!("#{} {op}", n.index), "shape=ellipse"),
            };
            let _ = writeln!(
                out,
                "  n{} [label=\"{label}\\n{:?}\", {style}];",
                n.index, n.shape
            );
            for i in &n.inputs {
                let _ = writeln!(out, "  n{i} -> n{};", n.index);
            }
        }
        out.push_str("}\n");
        out
    }
}
