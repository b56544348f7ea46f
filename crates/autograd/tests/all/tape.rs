//! The tape's behaviour: how gradients flow (fan-out, broadcasting, detach, no-grad,
//! retain_grad, seeds, parameters), its error messages, anomaly mode, introspection, and the
//! custom-op API. Expected gradients are derived by hand in each test.

use autograd::{gradcheck, GradCheck, Param, Tape, Var};
use tensor::{Rng, Tensor};

fn t1(v: &[f64]) -> Tensor<f64> {
    Tensor::from_vec(v.to_vec(), &[v.len()])
}

fn t2(v: &[f64], rows: usize, cols: usize) -> Tensor<f64> {
    Tensor::from_vec(v.to_vec(), &[rows, cols])
}

fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
            "got {got:?}, want {want:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// How gradients flow
// ---------------------------------------------------------------------------------------------

#[test]
fn fan_out_gradients_add_up() {
    let tape = Tape::<f64>::new();
    let xs = [0.5, -1.5, 2.0];
    let x = tape.var(t1(&xs));
    // x feeds two consumers: L = Σ (3x + x²), so dL/dx = 3 + 2x.
    let a = x.mul_scalar(3.0);
    let b = x.square();
    let loss = (&a + &b).sum_all();
    let grads = loss.backward();
    let want: Vec<f64> = xs.iter().map(|x| 3.0 + 2.0 * x).collect();
    assert_close(&grads.wrt(&x).to_vec(), &want);

    // x used twice by one op: L = Σ x·x, dL/dx = 2x.
    let loss = (&x * &x).sum_all();
    let want: Vec<f64> = xs.iter().map(|x| 2.0 * x).collect();
    assert_close(&loss.backward().wrt(&x).to_vec(), &want);
}

#[test]
fn broadcast_gradients_are_summed_back_to_the_input_shape() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t2(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3));
    let row = tape.var(t1(&[10.0, 20.0, 30.0])); // [3], broadcast over the 2 rows
    let col = tape.var(t2(&[-1.0, 2.0], 2, 1)); // [2, 1], broadcast over the 3 columns
    let s = tape.var(Tensor::scalar(0.5)); // [], broadcast everywhere
                                           // L = Σ_ij (x_ij + row_j) · col_i · s
    let loss = ((&x + &row) * &col * &s).sum_all();
    let g = loss.backward();
    assert_eq!(g.wrt(&row).shape(), &[3]);
    assert_eq!(g.wrt(&col).shape(), &[2, 1]);
    assert_eq!(g.wrt(&s).shape(), &[] as &[usize]);
    // dL/dx_ij = col_i · s
    assert_close(&g.wrt(&x).to_vec(), &[-0.5, -0.5, -0.5, 1.0, 1.0, 1.0]);
    // dL/drow_j = Σ_i col_i · s = (−1 + 2)·0.5
    assert_close(&g.wrt(&row).to_vec(), &[0.5, 0.5, 0.5]);
    // dL/dcol_i = s · Σ_j (x_ij + row_j): row 0: (6 + 60)·0.5, row 1: (15 + 60)·0.5
    assert_close(&g.wrt(&col).to_vec(), &[33.0, 37.5]);
    // dL/ds = Σ_ij (x_ij + row_j)·col_i = −66 + 2·75
    assert_close(&g.wrt(&s).to_vec(), &[84.0]);
}

#[test]
fn detach_stops_gradients() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[1.5, -2.0]));
    let d = x.detach();
    assert!(!d.requires_grad());
    assert_eq!(d.value().to_vec(), x.value().to_vec());
    // L = Σ stop(x)·x: only the live factor carries a gradient, dL/dx = x (not 2x).
    let loss = (&d * &x).sum_all();
    let g = loss.backward();
    assert_close(&g.wrt(&x).to_vec(), &[1.5, -2.0]);
    assert!(g.get(&d).is_none());

    // A loss that depends on x only through a detached value cannot be differentiated.
    let only_detached = d.square().sum_all();
    assert!(!only_detached.requires_grad());
}

#[test]
fn no_grad_records_nothing_over_1000_steps() {
    let mut rng = Rng::seed_from_u64(3);
    let w = Param::new(
        "w",
        Tensor::<f64>::rand_uniform(&[4, 4], -0.5, 0.5, &mut rng),
    );
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::rand_uniform(&[1, 4], -1.0, 1.0, &mut rng));
    let before = tape.len();
    assert_eq!(before, 1);
    let h = tape.no_grad(|| {
        assert!(!tape.grad_enabled());
        let mut h = x.clone();
        for _ in 0..1000 {
            h = (h.matmul(&w) + &x).tanh();
            assert_eq!(tape.len(), before);
        }
        // Leaves made in no-grad mode are constants too.
        assert!(!tape.var(Tensor::ones(&[1])).requires_grad());
        h
    });
    assert_eq!(tape.len(), before);
    assert!(!h.requires_grad());
    assert!(tape.grad_enabled(), "recording is back on after no_grad");
    // Recording resumes: one more op is one more node.
    let _ = x.tanh();
    assert_eq!(tape.len(), before + 1);
}

#[test]
fn no_grad_restores_recording_after_a_panic() {
    let tape = Tape::<f64>::new();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tape.no_grad(|| panic!("inside no_grad"));
    }));
    assert!(caught.is_err());
    assert!(tape.grad_enabled());
}

#[test]
fn retain_grad_keeps_an_intermediate_gradient() {
    let tape = Tape::<f64>::new();
    let xs = [0.3, -0.8];
    let x = tape.var(t1(&xs));
    let h = x.tanh().retain_grad();
    let loss = h.square().sum_all();
    let g = loss.backward();
    // dL/dh = 2h; dL/dx = 2h·(1 − h²)
    let hs: Vec<f64> = xs.iter().map(|v: &f64| v.tanh()).collect();
    assert_close(
        &g.wrt(&h).to_vec(),
        &hs.iter().map(|h| 2.0 * h).collect::<Vec<_>>(),
    );
    assert_close(
        &g.wrt(&x).to_vec(),
        &hs.iter()
            .map(|h| 2.0 * h * (1.0 - h * h))
            .collect::<Vec<_>>(),
    );
}

#[test]
fn backward_with_a_seed_is_a_vector_jacobian_product() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[1.0, 2.0, 3.0]));
    let y = x.square(); // Jacobian diag(2x)
    let seed = t1(&[1.0, -1.0, 0.5]);
    let g = y.backward_with(&seed);
    assert_close(&g.wrt(&x).to_vec(), &[2.0, -4.0, 3.0]);

    // A seed on a matrix through matmul: dL/dA = S·Bᵀ for L = Σ (A·B) ⊙ S.
    let a = tape.var(t2(&[1.0, 2.0, 3.0, 4.0], 2, 2));
    let b = tape.constant(t2(&[5.0, 6.0, 7.0, 8.0], 2, 2));
    let s = t2(&[1.0, 0.0, 0.0, 2.0], 2, 2);
    let g = a.matmul(&b).backward_with(&s);
    // S·Bᵀ = [[1·5, 1·7], [2·6, 2·8]]
    assert_close(&g.wrt(&a).to_vec(), &[5.0, 7.0, 12.0, 16.0]);
}

#[test]
fn params_accumulate_gradients_across_backward_calls() {
    let w = Param::new("w", t1(&[2.0, -1.0]));
    let tape = Tape::<f64>::new();
    tape.set_retain_graph(true); // for the second backward below
    let x = tape.constant(t1(&[3.0, 4.0]));
    // The same parameter used twice on one tape is one leaf.
    let wa = tape.param(&w);
    let wb = tape.param(&w);
    assert_eq!(wa.id(), wb.id());
    // L = Σ x·w + Σ w²: dL/dw = x + 2w = [7, 2]
    let loss = (&x * &wa).sum_all() + (&wb * &wb).sum_all();
    assert_eq!(tape.len(), 1 + 5, "w, then mul, sum_all, mul, sum_all, add");
    let g = loss.backward();
    assert_close(&g.wrt(&wa).to_vec(), &[7.0, 2.0]);
    assert_close(&w.grad().unwrap().to_vec(), &[7.0, 2.0]);
    // A second backward adds to the parameter's gradient.
    loss.backward();
    assert_close(&w.grad().unwrap().to_vec(), &[14.0, 4.0]);
    // So does a backward on a new tape.
    let tape2 = Tape::<f64>::new();
    (tape2.param(&w).sum_all()).backward(); // dL/dw = 1
    assert_close(&w.grad().unwrap().to_vec(), &[15.0, 5.0]);
    w.zero_grad();
    assert!(w.grad().is_none());
}

/// `narrow` and `select` add their gradient into a slice of the input's accumulated gradient
/// in place; that must never write into a gradient another node still holds.
#[test]
fn slice_gradients_do_not_write_into_shared_gradients() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[1.0, 2.0, 3.0, 4.0]));
    let y = x.mul_scalar(2.0);
    let first = y.narrow(0, 1, 2); // consumer 1 of y: a slice
    let picked = y.select(0, 3); // consumer 2 of y: a slice
                                 // Consumer 3, processed first in backward: its rule passes its own gradient — a
                                 // broadcast view of the loss's seed, kept by `retain_grad` — straight through to y.
    let z = y.add_scalar(0.0).retain_grad();
    // L = Σ y[1..3] + 10·y[3] + Σ z, z = y: dL/dy = [1, 2, 2, 11], dL/dx = 2·dL/dy.
    let loss = first.sum_all() + picked.mul_scalar(10.0) + z.sum_all();
    let g = loss.backward();
    assert_close(&g.wrt(&z).to_vec(), &[1.0, 1.0, 1.0, 1.0]);
    assert_close(&g.wrt(&x).to_vec(), &[2.0, 4.0, 4.0, 22.0]);
}

#[test]
fn a_frozen_param_is_a_constant() {
    let w = Param::new("w", t1(&[1.0, 2.0]));
    w.set_requires_grad(false);
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[3.0, 5.0]));
    let loss = (&x * &w).sum_all();
    let g = loss.backward();
    assert_close(&g.wrt(&x).to_vec(), &[1.0, 2.0]);
    assert!(w.grad().is_none());
    assert_eq!(tape.len(), 3, "x, mul, sum_all; no param node");
}

/// At kinks and ties the rules follow PyTorch: relu'(0) = 0, abs'(0) = 0, a tie in
/// maximum/minimum gives each side g/2, a tie in a max/min reduction shares g evenly.
#[test]
fn kink_and_tie_conventions() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[0.0, 1.0, -1.0]));
    assert_close(
        &x.relu().sum_all().backward().wrt(&x).to_vec(),
        &[0.0, 1.0, 0.0],
    );
    assert_close(
        &x.abs().sum_all().backward().wrt(&x).to_vec(),
        &[0.0, 1.0, -1.0],
    );

    let a = tape.var(t1(&[1.0, 2.0, 3.0]));
    let b = tape.var(t1(&[1.0, 5.0, 0.0]));
    let g = a.maximum(&b).sum_all().backward();
    assert_close(&g.wrt(&a).to_vec(), &[0.5, 0.0, 1.0]);
    assert_close(&g.wrt(&b).to_vec(), &[0.5, 1.0, 0.0]);
    let g = a.minimum(&b).sum_all().backward();
    assert_close(&g.wrt(&a).to_vec(), &[0.5, 1.0, 0.0]);
    assert_close(&g.wrt(&b).to_vec(), &[0.5, 0.0, 1.0]);

    let m = tape.var(t2(&[3.0, 1.0, 3.0, 2.0, 2.0, 2.0], 2, 3));
    let g = m.max(&[1], false).sum_all().backward();
    assert_close(
        &g.wrt(&m).to_vec(),
        &[0.5, 0.0, 0.5, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0],
    );
    let g = m.min(&[0], true).sum_all().backward();
    assert_close(&g.wrt(&m).to_vec(), &[0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
}

// ---------------------------------------------------------------------------------------------
// Clear errors
// ---------------------------------------------------------------------------------------------

#[test]
#[should_panic(expected = "backward: called on a variable of shape [2], which is not a scalar")]
fn backward_on_a_non_scalar_needs_a_seed() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[1.0, 2.0]));
    x.square().backward();
}

#[test]
#[should_panic(expected = "backward_with: the seed has shape [3] but the variable has shape [2]")]
fn backward_with_a_seed_of_the_wrong_shape() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[1.0, 2.0]));
    x.square().backward_with(&t1(&[1.0, 1.0, 1.0]));
}

#[test]
#[should_panic(expected = "backward: this variable was not recorded")]
fn backward_on_a_constant() {
    let tape = Tape::<f64>::new();
    tape.constant(Tensor::scalar(1.0)).backward();
}

#[test]
#[should_panic(expected = "mul: variables from two different tapes were mixed")]
fn mixing_two_tapes() {
    let (t1_, t2_) = (Tape::<f64>::new(), Tape::<f64>::new());
    let a = t1_.var(t1(&[1.0]));
    let b = t2_.var(t1(&[2.0]));
    let _ = &a * &b;
}

#[test]
#[should_panic(expected = "is not on the path from the loss: the loss does not depend on it")]
fn wrt_a_variable_off_the_path() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[1.0]));
    let unused = tape.var(t1(&[2.0]));
    let g = x.square().sum_all().backward();
    g.wrt(&unused);
}

#[test]
#[should_panic(expected = "is an intermediate result; call `retain_grad()` on it")]
fn wrt_an_intermediate_without_retain_grad() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[1.0]));
    let h = x.tanh();
    let g = h.square().sum_all().backward();
    g.wrt(&h);
}

#[test]
#[should_panic(expected = "it is a constant")]
fn wrt_a_constant() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[1.0]));
    let c = tape.constant(t1(&[3.0]));
    let g = (&x * &c).sum_all().backward();
    g.wrt(&c);
}

#[test]
#[should_panic(expected = "it belongs to another tape than the loss")]
fn wrt_a_variable_of_another_tape() {
    let (t1_, t2_) = (Tape::<f64>::new(), Tape::<f64>::new());
    let x = t1_.var(t1(&[1.0]));
    let other = t2_.var(t1(&[1.0]));
    let g = x.square().sum_all().backward();
    g.wrt(&other);
}

#[test]
fn get_is_none_where_wrt_would_panic() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[1.0]));
    let unused = tape.var(t1(&[2.0]));
    let h = x.tanh();
    let g = h.sum_all().backward();
    assert!(g.get(&x).is_some());
    assert!(g.get(&unused).is_none());
    assert!(g.get(&h).is_none());
    assert!(g.get(&tape.constant(t1(&[1.0]))).is_none());
}

// ---------------------------------------------------------------------------------------------
// Anomaly mode
// ---------------------------------------------------------------------------------------------

#[test]
#[should_panic(expected = "anomaly: the forward of op 'log' (node 2) produced NaN or Inf")]
fn anomaly_names_the_forward_op_that_made_a_nan() {
    let tape = Tape::<f64>::new();
    tape.set_anomaly_detection(true);
    let x = tape.var(t1(&[1.0, 2.0]));
    let y = x.mul_scalar(-1.0); // node 1
    let _ = y.log(); // node 2: log of a negative number is NaN
}

#[test]
#[should_panic(
    expected = "anomaly: the backward of op 'sqrt' (node 1) produced NaN or Inf in the gradient \
                of input 0 (node 0)"
)]
fn anomaly_names_the_backward_op_that_made_an_inf() {
    let tape = Tape::<f64>::new();
    tape.set_anomaly_detection(true);
    let x = tape.var(t1(&[0.0, 4.0])); // node 0
    let y = x.sqrt().sum_all(); // sqrt(0) = 0 is fine forward; its gradient 1/(2·0) is not
    y.backward();
}

#[test]
fn without_anomaly_mode_non_finite_values_pass_silently() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[0.0, 4.0]));
    let g = x.sqrt().sum_all().backward();
    let g = g.wrt(&x).to_vec();
    assert!(g[0].is_infinite());
    assert_close(&g[1..], &[0.25]);
    assert!(x.mul_scalar(-1.0).log().value().to_vec()[1].is_nan()); // log(−4)
}

// ---------------------------------------------------------------------------------------------
// Introspection
// ---------------------------------------------------------------------------------------------

/// h_t = tanh(x_t·W + h_{t−1}·U + b), three steps, inputs and h_0 constant.
fn vanilla_rnn(tape: &Tape<f64>, w: &Param<f64>, u: &Param<f64>, b: &Param<f64>) -> Var<f64> {
    let mut rng = Rng::seed_from_u64(11);
    let mut h = tape.constant(Tensor::zeros(&[2, 4]));
    for _ in 0..3 {
        let x_t = tape.constant(Tensor::rand_uniform(&[2, 3], -1.0, 1.0, &mut rng));
        h = (x_t.matmul(w) + h.matmul(u) + b).tanh();
    }
    h
}

fn rnn_params() -> (Param<f64>, Param<f64>, Param<f64>) {
    let mut rng = Rng::seed_from_u64(5);
    (
        Param::new("W", Tensor::rand_uniform(&[3, 4], -0.5, 0.5, &mut rng)),
        Param::new("U", Tensor::rand_uniform(&[4, 4], -0.5, 0.5, &mut rng)),
        Param::new("b", Tensor::rand_uniform(&[4], -0.5, 0.5, &mut rng)),
    )
}

#[test]
fn nodes_of_a_three_step_rnn() {
    let (w, u, b) = rnn_params();
    let tape = Tape::<f64>::new();
    let _h = vanilla_rnn(&tape, &w, &u, &b);
    let nodes = tape.nodes();
    let summary: Vec<(usize, &str, Vec<usize>, Vec<usize>)> = nodes
        .iter()
        .map(|n| (n.index, n.op, n.shape.clone(), n.inputs.clone()))
        .collect();
    let hb = vec![2, 4];
    #[rustfmt::skip]
    let want: Vec<(usize, &str, Vec<usize>, Vec<usize>)> = vec![
        // step 1: each parameter enters the tape the first time it is used
        (0, "param", vec![3, 4], vec![]),
        (1, "matmul", hb.clone(), vec![0]),      // x_1·W (x_1 is a constant)
        (2, "param", vec![4, 4], vec![]),
        (3, "matmul", hb.clone(), vec![2]),      // h_0·U (h_0 is a constant)
        (4, "add", hb.clone(), vec![1, 3]),
        (5, "param", vec![4], vec![]),
        (6, "add", hb.clone(), vec![4, 5]),      // + b, broadcast
        (7, "tanh", hb.clone(), vec![6]),        // h_1
        // step 2: the same parameter nodes, and h_1 feeds the recurrence
        (8, "matmul", hb.clone(), vec![0]),
        (9, "matmul", hb.clone(), vec![7, 2]),
        (10, "add", hb.clone(), vec![8, 9]),
        (11, "add", hb.clone(), vec![10, 5]),
        (12, "tanh", hb.clone(), vec![11]),      // h_2
        // step 3
        (13, "matmul", hb.clone(), vec![0]),
        (14, "matmul", hb.clone(), vec![12, 2]),
        (15, "add", hb.clone(), vec![13, 14]),
        (16, "add", hb.clone(), vec![15, 5]),
        (17, "tanh", hb.clone(), vec![16]),      // h_3
    ];
    assert_eq!(summary, want);
    let names: Vec<Option<String>> = nodes.iter().map(|n| n.param_name.clone()).collect();
    assert_eq!(names[0].as_deref(), Some("W"));
    assert_eq!(names[2].as_deref(), Some("U"));
    assert_eq!(names[5].as_deref(), Some("b"));
    assert_eq!(names.iter().filter(|n| n.is_some()).count(), 3);
    assert_eq!(tape.len(), 18);
}

#[test]
fn to_dot_draws_the_rnn() {
    let (w, u, b) = rnn_params();
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::ones(&[1])); // an input leaf, to see its style
    let _h = vanilla_rnn(&tape, &w, &u, &b);
    let dot = tape.to_dot();
    assert!(dot.starts_with("digraph tape {"), "{dot}");
    assert!(dot.trim_end().ends_with('}'), "{dot}");
    for needle in [
        r##"n0 [label="#0 input\n[1]""##,
        r##"n1 [label="#1 W\n[3, 4]""##,
        r##"n3 [label="#3 U\n[4, 4]""##,
        r##"n6 [label="#6 b\n[4]""##,
        r##"n8 [label="#8 tanh\n[2, 4]", shape=ellipse]"##,
        r##"n2 [label="#2 matmul\n[2, 4]", shape=ellipse]"##,
        "n1 -> n2;",  // W into the first matmul
        "n8 -> n10;", // h_1 into step 2's h·U
        "n3 -> n15;", // U into step 3's h·U
        "n6 -> n17;", // b into step 3's bias add
        "n17 -> n18;",
    ] {
        assert!(dot.contains(needle), "missing {needle} in\n{dot}");
    }
    // One line per node, one arrow per recorded input.
    let edges = dot.matches(" -> ").count();
    let inputs: usize = tape.nodes().iter().map(|n| n.inputs.len()).sum();
    assert_eq!(edges, inputs);
    // Per step: x·W 1, h·U 2, two adds 2 + 2, tanh 1; but h_0 is a constant in step 1.
    assert_eq!(edges, 3 * 8 - 1);
    assert!(x.requires_grad());
}

#[test]
fn the_rnn_gradients_pass_gradcheck() {
    let (w, u, b) = rnn_params();
    let (w2, u2, b2) = (w.clone(), u.clone(), b.clone());
    let report = GradCheck::new(move |v| {
        let h = vanilla_rnn(v[0].tape(), &w2, &u2, &b2);
        (&h * &v[0]).sum_all()
    })
    .inputs(&[Tensor::rand_uniform(
        &[2, 4],
        -1.0,
        1.0,
        &mut Rng::seed_from_u64(9),
    )])
    .params(&[w, u, b])
    .run();
    assert!(report.passed(), "{report}");
    assert_eq!(report.checked, 8 + 12 + 16 + 4);
}

// ---------------------------------------------------------------------------------------------
// Custom ops
// ---------------------------------------------------------------------------------------------

/// hypot(a, b) = √(a² + b²), elementwise, same shapes.
/// ∂/∂a = g·a/y, ∂/∂b = g·b/y.
fn hypot(a: &Var<f64>, b: &Var<f64>) -> Var<f64> {
    let (av, bv) = (a.value().clone(), b.value().clone());
    let y = av.square().add(&bv.square()).sqrt();
    let y_out = y.clone();
    Var::custom_op("hypot", &[a, b], y, move |g| {
        vec![Some(g.mul(&av).div(&y_out)), Some(g.mul(&bv).div(&y_out))]
    })
}

#[test]
fn a_custom_op_with_a_hand_written_backward_passes_gradcheck() {
    let mut rng = Rng::seed_from_u64(21);
    // Away from a = b = 0, where hypot has a cone point.
    let a = Tensor::rand_uniform(&[3, 2], 0.5, 2.0, &mut rng);
    let b = Tensor::rand_uniform(&[3, 2], -2.0, -0.5, &mut rng);
    let report = gradcheck(|v| hypot(&v[0], &v[1]).tanh(), &[a.clone(), b]);
    assert!(report.passed(), "{report}");
    assert_eq!(report.checked, 12);

    // It is recorded under its name, like the built-in ops.
    let tape = Tape::<f64>::new();
    let (x, y) = (tape.var(a.clone()), tape.var(a));
    let h = hypot(&x, &y);
    assert_eq!(tape.nodes()[h.id().unwrap()].op, "hypot");
    assert_eq!(tape.nodes()[h.id().unwrap()].inputs, vec![0, 1]);
}

#[test]
fn a_custom_op_may_leave_an_input_undifferentiated() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[1.0, 2.0]));
    let k = tape.var(t1(&[5.0, 7.0]));
    // y = x·k, but the rule only differentiates x (k treated as fixed).
    let kv = k.value().clone();
    let y = Var::custom_op("scale", &[&x, &k], x.value().mul(&kv), move |g| {
        vec![Some(g.mul(&kv)), None]
    });
    let g = y.sum_all().backward();
    assert_close(&g.wrt(&x).to_vec(), &[5.0, 7.0]);
    assert!(g.get(&k).is_none());
}

#[test]
#[should_panic(expected = "bad_count: the backward rule returned 1 gradients for 2 inputs")]
fn a_custom_op_must_return_one_gradient_per_input() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[1.0]));
    let y = Var::custom_op("bad_count", &[&x, &x], x.value().clone(), |g| {
        vec![Some(g.clone())]
    });
    y.sum_all().backward();
}

#[test]
#[should_panic(
    expected = "bad_shape: the backward rule gave input 0 a gradient of shape [3], which does not \
                fit that input's shape [2]"
)]
fn a_custom_op_must_return_gradients_of_the_input_shape() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[1.0, 2.0]));
    let y = Var::custom_op("bad_shape", &[&x], x.value().clone(), |_| {
        vec![Some(Tensor::zeros(&[3]))]
    });
    y.sum_all().backward();
}

#[test]
#[should_panic(expected = "empty: a custom op needs at least one input")]
fn a_custom_op_needs_an_input() {
    let _ = Var::<f64>::custom_op("empty", &[], Tensor::zeros(&[1]), |_| vec![]);
}

/// An op on constants only is never recorded, so the anomaly report must not name a node.
#[test]
#[should_panic(expected = "anomaly: the forward of op 'log' (not recorded) produced NaN or Inf")]
fn anomaly_on_an_unrecorded_op_names_no_node() {
    let tape = Tape::<f64>::new();
    tape.set_anomaly_detection(true);
    let c = tape.constant(tensor::Tensor::from_vec(vec![-1.0], &[1]));
    let _ = c.log();
}

/// A backward frees what each node it passes saved (as PyTorch does without `retain_graph`),
/// and a second backward through those nodes panics and says why; with the graph retained, the
/// rules stay and run again, told so.
#[test]
fn backward_frees_what_nodes_saved_unless_the_graph_is_retained() {
    use std::rc::Rc;
    for retain in [false, true] {
        let tape = Tape::<f64>::new();
        tape.set_retain_graph(retain);
        assert_eq!(tape.retains_graph(), retain);
        let x = tape.var(t1(&[1.0, 2.0]));
        let saved = Rc::new(t1(&[3.0, 3.0]));
        let held = saved.clone();
        let runs = Rc::new(std::cell::RefCell::new(Vec::new()));
        let log = runs.clone();
        let y = Var::custom_op_consuming("triple", &[&x], x.value() * 3.0, move |g, retained| {
            log.borrow_mut().push(retained);
            vec![Some(g * &*held)]
        });
        let loss = y.sum_all();
        assert_eq!(
            Rc::strong_count(&saved),
            2,
            "the rule holds its saved tensor"
        );
        assert_eq!(loss.backward().wrt(&x).to_vec(), [3.0, 3.0]);
        if retain {
            assert_eq!(Rc::strong_count(&saved), 2, "kept for the next backward");
            assert_eq!(loss.backward().wrt(&x).to_vec(), [3.0, 3.0]);
            assert_eq!(*runs.borrow(), [true, true]);
        } else {
            assert_eq!(Rc::strong_count(&saved), 1, "freed by the backward");
            assert_eq!(*runs.borrow(), [false]);
            let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loss.backward()));
            let msg = again
                .err()
                .and_then(|e| e.downcast_ref::<String>().cloned())
                .expect("a second backward panics");
            assert!(
                msg.contains("node 2 ('sum_all') was differentiated by an earlier backward")
                    && msg.contains("set_retain_graph(true)"),
                "{msg}"
            );
        }
    }
}

/// A rule that panics is put back, so the graph is not left half-freed by a failed backward;
/// nodes a backward does not reach keep their rules.
#[test]
fn a_rule_that_panics_and_nodes_off_the_path_are_not_freed() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t1(&[1.0]));
    let fail = std::rc::Rc::new(std::cell::Cell::new(true));
    let flag = fail.clone();
    let y = Var::custom_op("flaky", &[&x], x.value().clone(), move |g| {
        assert!(!flag.get(), "flaky fails the first time");
        vec![Some(g.clone())]
    });
    let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| y.sum_all().backward()));
    assert!(first.is_err());
    fail.set(false);
    // Its rule was put back: a new loss over the same `y` differentiates through it.
    assert_eq!(y.sum_all().backward().wrt(&x).to_vec(), [1.0]);
    // `z` is off the path of `w`'s backward: its rule is still there.
    let z = x.exp();
    let w = x.square().sum_all();
    w.backward();
    assert_eq!(z.sum_all().backward().wrt(&x).to_vec(), z.value().to_vec());
}

/// A checkpointed region frees what its ops saved as soon as it is recorded, and the backward
/// makes the rules again from the re-run: the same bits as without the checkpoint, with the
/// graph retained or not; a re-run that records other ops is refused, naming both.
#[test]
fn a_checkpoint_frees_its_saved_values_and_the_backward_makes_them_again() {
    use std::rc::Rc;
    let x0 = Tensor::from_vec(vec![0.3, -1.2, 2.0], &[3]);
    let plain = Tape::<f64>::new();
    let xp = plain.var(x0.clone());
    let expected = (xp.tanh() * xp.exp())
        .sum_all()
        .backward()
        .wrt(&xp)
        .to_vec();
    for retain in [false, true] {
        let tape = Tape::<f64>::new();
        tape.set_retain_graph(retain);
        let x = tape.var(x0.clone());
        let marker = Rc::new(());
        let (held, again_x) = (marker.clone(), x0.clone());
        // A custom op inside the region holds `marker`: freed with the region's rules.
        let y = tape.checkpoint(
            |_| {
                let m = held.clone();
                let t = Var::custom_op("tanh_marked", &[&x], x.value().tanh(), move |g| {
                    let _ = &m;
                    vec![Some(g.clone())]
                });
                drop(held);
                let _ = t;
                x.tanh() * x.exp()
            },
            move |t| {
                let x = t.var(again_x);
                let _ = Var::custom_op("tanh_marked", &[&x], x.value().tanh(), |g| {
                    vec![Some(g.clone())]
                });
                let _ = x.tanh() * x.exp();
            },
        );
        assert_eq!(
            Rc::strong_count(&marker),
            1,
            "the region's rules were freed"
        );
        let loss = y.sum_all();
        assert_eq!(loss.backward().wrt(&x).to_vec(), expected);
        if retain {
            assert_eq!(loss.backward().wrt(&x).to_vec(), expected, "rules kept");
        }
    }
    // A re-run that records something else.
    let tape = Tape::<f64>::new();
    let x = tape.var(x0.clone());
    let y = tape.checkpoint(
        |_| x.exp(),
        move |t| {
            let _ = t.var(x0).tanh();
        },
    );
    let msg = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| y.sum_all().backward()))
        .err()
        .and_then(|e| e.downcast_ref::<String>().cloned())
        .expect("refused");
    assert!(
        msg.contains("the re-run recorded 'tanh' where the forward recorded 'exp'"),
        "{msg}"
    );
}
