//! Seeing inside a tape: labels, scopes, captures, caught anomalies (forward, backward, with
//! their place and an explainer's detail), `grad` against hand-derived values, norms, and the
//! DOT picture's clusters. Expected values are worked out by hand in each test.

use autograd::{grad, l2_norm, Param, Pass, Tape};
use tensor::Tensor;

fn t1(v: &[f64]) -> Tensor<f64> {
    Tensor::from_vec(v.to_vec(), &[v.len()])
}

#[test]
fn labels_and_scopes_are_kept_on_nodes() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[1.0]));
    let a = x.tanh(); // no scope
    let (b, c) = tape.scoped("layer 0", || {
        let b = tape.at_step(2, || x.sigmoid().label("gate"));
        let c = x.exp(); // group only
        (b, c)
    });
    let d = x.square(); // the scope ended
    let nodes = tape.nodes();
    let node = |v: &autograd::Var<f64>| nodes[v.id().unwrap()].clone();
    assert_eq!(node(&a).scope, None);
    assert_eq!(node(&b).label, Some("gate"));
    let scope = node(&b).scope.unwrap();
    assert_eq!((&*scope.group, scope.step), ("layer 0", Some(2)));
    assert_eq!(scope.to_string(), "layer 0, t = 2");
    assert_eq!(node(&c).scope.unwrap().step, None);
    assert_eq!(node(&c).label, None);
    assert_eq!(node(&d).scope, None);
    // A step outside any group.
    let e = tape.at_step(5, || x.exp());
    assert_eq!(
        tape.nodes()[e.id().unwrap()]
            .scope
            .as_ref()
            .unwrap()
            .to_string(),
        "t = 5"
    );
}

#[test]
fn a_scope_ends_even_when_its_closure_panics() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[1.0]));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tape.scoped("doomed", || -> () { panic!("inside") })
    }));
    assert!(caught.is_err());
    assert_eq!(tape.scope(), None);
    let y = x.exp();
    assert_eq!(tape.nodes()[y.id().unwrap()].scope, None);
}

#[test]
fn capture_sees_labelled_values_in_order_even_without_grad() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[0.0, 2.0]));
    let (y, seen) = tape.capture(|| {
        let s = x.sigmoid().label("s");
        let t = s.mul_scalar(2.0).label("twice");
        t.tanh()
    });
    assert_eq!(
        seen.iter().map(|c| c.name).collect::<Vec<_>>(),
        ["s", "twice"]
    );
    let s = [0.5, 1.0 / (1.0 + (-2.0f64).exp())];
    assert_eq!(seen[0].value.to_vec(), s);
    assert_eq!(seen[1].value.to_vec(), [1.0, 2.0 * s[1]]);
    assert!(seen[0].node.is_some());
    assert_eq!(y.value().to_vec(), [1.0f64.tanh(), (2.0 * s[1]).tanh()]);
    // Labels outside a capture go nowhere; in no-grad mode they are still captured.
    let _ = x.exp().label("unseen");
    let (_, seen) = tape.capture(|| tape.no_grad(|| x.exp().label("e")));
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].node, None);
    assert_eq!(seen[0].value.to_vec(), [1.0, 2.0f64.exp()]);
}

#[test]
fn catch_anomaly_returns_the_first_forward_fault_with_its_label_and_place() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[-1.0, 4.0]));
    let result = tape.catch_anomaly(|| {
        tape.scoped("cell", || {
            tape.at_step(3, || {
                let fine = x.sqrt().label("root"); // sqrt(−1): NaN, first
                let worse = x.mul_scalar(0.0).log(); // log(0) = −∞, second: not reported
                (fine, worse)
            })
        })
    });
    let a = result.unwrap_err();
    assert_eq!(
        (a.pass, a.op, a.label),
        (Pass::Forward, "sqrt", Some("root"))
    );
    assert_eq!(a.node, Some(1));
    assert_eq!(a.place(), "cell, t = 3, 'root'");
    assert_eq!(
        a.to_string(),
        "anomaly: the forward of op 'sqrt' (node 1) produced NaN or Inf [cell, t = 3, 'root']"
    );
    // Anomaly mode is back as it was (off), and a clean run is Ok.
    assert!(!tape.anomaly_detection());
    let clean = tape.catch_anomaly(|| x.exp().value().to_vec()).unwrap();
    assert!(clean.iter().all(|v| v.is_finite() && *v > 0.0));
}

#[test]
fn an_unrecorded_fault_is_named_by_the_label_of_its_own_value_only() {
    let tape = Tape::<f64>::new();
    let c = tape.constant(t1(&[-1.0]));
    let a = tape
        .catch_anomaly(|| {
            let bad = c.log(); // constants only: not recorded
            let _other = c.exp().label("not_it"); // another value: must not name the fault
            bad.label("log_c")
        })
        .unwrap_err();
    assert_eq!((a.op, a.node, a.label), ("log", None, Some("log_c")));
    assert!(a.to_string().contains("(not recorded)"));
}

#[test]
fn catch_anomaly_returns_a_backward_fault_with_the_input_and_the_explainers_detail() {
    let tape = Tape::<f64>::new();
    tape.set_retain_graph(true); // differentiated twice

    let x = tape.var(t1(&[0.0, 4.0])); // node 0
    let y = tape.at_step(7, || x.sqrt().label("root")); // node 1: ∂/∂x = 1/(2·0) at 0
    tape.on_backward_anomaly(1, |g| {
        Some(format!("its output's gradient was {:?}", g.to_vec()))
    });
    let a = tape
        .catch_anomaly(|| drop(y.sum_all().backward()))
        .unwrap_err();
    assert_eq!(
        (a.pass, a.op, a.node, a.input),
        (Pass::Backward, "sqrt", Some(1), Some((0, 0)))
    );
    assert_eq!(
        a.to_string(),
        "anomaly: the backward of op 'sqrt' (node 1) produced NaN or Inf in the gradient of \
         input 0 (node 0) [t = 7, 'root']; its output's gradient was [1.0, 1.0]"
    );
    // In anomaly mode proper, the same report is the panic message.
    tape.set_anomaly_detection(true);
    let msg = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| y.sum_all().backward()))
        .err()
        .and_then(|e| e.downcast_ref::<String>().cloned())
        .unwrap();
    assert_eq!(msg, a.to_string());
}

/// y = 2h, h = x², z = 3x: ∂(⟨1, y⟩ + ⟨2, z⟩)/∂h = 2, ∂/∂x = 2·2x + 6.
#[test]
fn grad_is_a_vector_jacobian_product_that_leaves_parameters_alone() {
    let tape = Tape::<f64>::new();
    tape.set_retain_graph(true); // differentiated twice
    let w = Param::new("w", t1(&[3.0]));
    let x = tape.param(&w);
    let h = x.square();
    let y = h.mul_scalar(2.0);
    let z = x.mul_scalar(3.0);
    let unrelated = tape.var(t1(&[1.0]));
    let g = grad(&[&y, &z], &[t1(&[1.0]), t1(&[2.0])], &[&h, &x, &unrelated]);
    assert_eq!(g[0].as_ref().unwrap().to_vec(), [2.0]);
    assert_eq!(g[1].as_ref().unwrap().to_vec(), [2.0 * 2.0 * 3.0 + 6.0]);
    assert!(g[2].is_none());
    assert!(
        w.grad().is_none(),
        "grad must not accumulate into parameters"
    );
    // Two seeds on one output add up.
    let g = grad(&[&y, &y], &[t1(&[1.0]), t1(&[0.5])], &[&h]);
    assert_eq!(g[0].as_ref().unwrap().to_vec(), [3.0]);
}

#[test]
#[should_panic(expected = "grad: a seed of shape [2] for an output of shape [1]")]
fn grad_refuses_a_seed_of_the_wrong_shape() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[1.0]));
    grad(&[&x.exp()], &[t1(&[1.0, 2.0])], &[&x]);
}

#[test]
fn inspect_keeps_value_and_gradient_norms_for_the_picture() {
    let tape = Tape::<f64>::new();
    tape.set_inspect(true);
    let x = tape.var(t1(&[3.0, 4.0])); // |x| = 5
    let y = x.mul_scalar(2.0); // |y| = 10, ∂L/∂y = 1s: |g| = √2
    let loss = y.sum_all(); // 14
    loss.backward();
    assert_eq!(
        tape.norms(x.id().unwrap()),
        (Some(5.0), Some(2.0 * 2f64.sqrt()))
    );
    assert_eq!(tape.norms(y.id().unwrap()), (Some(10.0), Some(2f64.sqrt())));
    assert_eq!(tape.norms(loss.id().unwrap()), (Some(14.0), Some(1.0)));
    assert_eq!(l2_norm(&t1(&[3.0, 4.0])), 5.0);
    let dot = tape.to_dot();
    assert!(dot.contains("|v| 1.000e1\\n|g| 1.414e0"), "{dot}");
    // Off: nothing kept.
    let plain = Tape::<f64>::new();
    let v = plain.var(t1(&[1.0]));
    v.exp().sum_all().backward();
    assert_eq!(plain.norms(v.id().unwrap()), (None, None));
}

#[test]
fn to_dot_clusters_by_group_and_step_and_labels_gates() {
    let tape = Tape::<f64>::new();
    let w = Param::new("w", t1(&[0.5, 0.5]));
    let x = tape.var(t1(&[1.0, 2.0]));
    let mut h = tape.constant(Tensor::zeros(&[2]));
    for (g, group) in ["up", "down"].iter().enumerate() {
        tape.scoped(group, || {
            for t in 0..2 {
                h = tape.at_step(t, || (&x * &w + &h).sigmoid().label("gate"));
            }
        });
        assert!(g < 2);
    }
    let dot = tape.to_dot();
    for needle in [
        "subgraph cluster_0 {\n    label=\"up\";",
        "subgraph cluster_1 {\n    label=\"down\";",
        "subgraph cluster_0_0 {\n      label=\"t = 0\";",
        "subgraph cluster_1_1 {\n      label=\"t = 1\";",
        " gate\\nsigmoid",
        "label=\"#0 input\\n[2]\"",
        "label=\"#1 w\\n[2]\"",
        "rankdir=TB",
    ] {
        assert!(dot.contains(needle), "missing {needle:?} in\n{dot}");
    }
    // Step 1 of each group hangs below step 0: its op with no input inside it (x ⊙ w, node 5
    // in "up") gets an invisible edge from step 0's last node (the sigmoid, node 4); the add
    // after it (node 6) reads node 5, so it needs none.
    assert!(dot.contains("n4 -> n5 [style=invis];"), "{dot}");
    assert!(!dot.contains("n4 -> n6 [style=invis];"), "{dot}");
    // Every one of the 4 steps has its sigmoid, in its own cluster; leaves sit outside.
    assert_eq!(dot.matches("gate\\nsigmoid").count(), 4);
    let first_cluster = dot.find("subgraph").unwrap();
    assert!(dot.find("n0 [label").unwrap() < first_cluster);
    // Quotes in names are escaped.
    let tape = Tape::<f64>::new();
    tape.scoped("a \"quoted\" group", || tape.var(t1(&[1.0])).exp());
    assert!(tape.to_dot().contains("label=\"a \\\"quoted\\\" group\""));
}

/// Two finite gradients that overflow when they add up: the report is at the node they reach,
/// not at the next op that reads the sum.
#[test]
fn an_overflowing_sum_of_gradients_is_reported_where_it_happens() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[1.0])); // node 0
    let h = x.mul_scalar(1.0).label("h"); // node 1, read twice
    let a = h.mul_scalar(f64::MAX); // node 2: ∂/∂h = MAX
    let b = h.mul_scalar(f64::MAX / 2.0); // node 3: ∂/∂h = MAX / 2
                                          // Seeded at both reads: their gradients to h are finite, their sum is not.
    let err = tape
        .catch_anomaly(|| {
            autograd::grad(&[&a, &b], &[t1(&[1.0]), t1(&[1.0])], &[&x]);
        })
        .unwrap_err();
    assert_eq!(
        (err.pass, err.op, err.node, err.label),
        (Pass::Backward, "mul_scalar", Some(1), Some("h"))
    );
    assert_eq!(err.input, None);
    assert!(
        err.to_string()
            .ends_with("['h']; the gradients its consumers sent it add up to NaN or Inf"),
        "{err}"
    );
}

/// A panic inside `catch_anomaly` leaves the tape as it was: modes, and an outer catch's
/// findings; a nested catch does not take the outer one's first anomaly.
#[test]
fn catch_anomaly_nests_and_restores_on_panic() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[-1.0]));
    let outer = tape.catch_anomaly(|| {
        let _ = x.log(); // the outer's first anomaly
        let inner = tape.catch_anomaly(|| x.sqrt().label("inner"));
        assert_eq!(inner.unwrap_err().label, Some("inner"));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tape.catch_anomaly(|| -> () { panic!("boom") })
        }));
        assert!(panicked.is_err());
        assert!(tape.catching_anomaly(), "still inside the outer catch");
    });
    assert_eq!(
        outer.unwrap_err().op,
        "log",
        "the outer keeps its own first anomaly"
    );
    assert!(!tape.catching_anomaly() && !tape.anomaly_detection());
}
