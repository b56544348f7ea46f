//! A tour of the tape: a 3-step vanilla RNN, unrolled by hand.
//!
//! ```text
//! cargo run --release --example tape_tour [-- OUT_DIR]
//! ```
//!
//! h_t = tanh(x_t · W + h_{t−1} · U + b),  loss = Σ h_3 · probe
//!
//! It prints every node on the tape, writes the graph as Graphviz DOT (draw it with
//! `dot -Tsvg rnn3.dot -o rnn3.svg`), and checks the gradients of W, U, b and the inputs
//! against finite differences.

use std::path::PathBuf;

use unroll::autograd::{GradCheck, Param, Tape, Var};
use unroll::tensor::{Rng, Tensor};

const STEPS: usize = 3;
const BATCH: usize = 2;
const INPUT: usize = 3;
const HIDDEN: usize = 4;

fn main() {
    let out_dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/tape_tour"));
    let mut rng = Rng::seed_from_u64(7);
    let w = Param::new(
        "W",
        Tensor::<f64>::rand_uniform(&[INPUT, HIDDEN], -0.5, 0.5, &mut rng),
    );
    let u = Param::new(
        "U",
        Tensor::<f64>::rand_uniform(&[HIDDEN, HIDDEN], -0.5, 0.5, &mut rng),
    );
    let b = Param::new("b", Tensor::<f64>::zeros(&[HIDDEN]));
    let xs = Tensor::<f64>::rand_normal(&[STEPS, BATCH, INPUT], 0.0, 1.0, &mut rng);
    let probe = Tensor::<f64>::rand_uniform(&[BATCH, HIDDEN], -1.0, 1.0, &mut rng);

    // The unrolled network, as a function of the input sequence.
    let rnn = |x: &Var<f64>| {
        let mut h = x.tape().constant(Tensor::zeros(&[BATCH, HIDDEN]));
        for t in 0..STEPS {
            let x_t = x.select(0, t);
            h = (x_t.matmul(&w) + h.matmul(&u) + &b).tanh();
        }
        (h * &probe).sum_all()
    };

    let tape = Tape::new();
    let x = tape.var(xs.clone());
    let loss = rnn(&x);
    println!("loss = {:.6}\n", loss.item());
    println!("{} nodes on the tape:", tape.len());
    for n in tape.nodes() {
        let name = n.param_name.clone().unwrap_or_else(|| n.op.to_string());
        println!(
            "  #{:<3} {:<10} {:?} <- {:?}",
            n.index, name, n.shape, n.inputs
        );
    }

    let grads = loss.backward();
    println!("\ndloss/dW =\n{}", w.grad().expect("W is on the path"));
    println!("dloss/dx_1 =\n{}", grads.wrt(&x).select(0, 0));

    std::fs::create_dir_all(&out_dir).expect("create the output directory");
    let dot_path = out_dir.join("rnn3.dot");
    std::fs::write(&dot_path, tape.to_dot()).expect("write the DOT file");
    println!("\nwrote {}", dot_path.display());

    let report = GradCheck::new(|v| rnn(&v[0]))
        .inputs(&[xs])
        .params(&[w.clone(), u.clone(), b.clone()])
        .run();
    println!("\n{report}");
    assert!(
        report.passed(),
        "the tape's gradients disagree with finite differences"
    );
}
