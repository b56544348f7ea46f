//! Write your own recurrent cell, and get stacking, bidirectionality, variable-length
//! batches, truncated BPTT and gradient checking for free.
//!
//! ```text
//! cargo run --release --example custom_cell
//! ```
//!
//! The cell is the minimal gated unit (Zhou et al., 2016): one gate instead of the GRU's two.
//! `docs/custom-cell.md` walks through this file; its code blocks are excerpts of it (the
//! `docs` test checks they still match, and `tests/all/demo_custom_cell.rs` runs it).

use unroll::autograd::{
    clip_grad_norm, gradcheck,
    optim::{Adam, AdamConfig, Optimizer},
    GradCheck, Param, Tape, Var,
};
use unroll::rnn::{mse_loss, Cell, Layer, LayerConfig, Linear, Module};
use unroll::tensor::{Float, Rng, Tensor};

// ------------------------------------------------------------------------------- the cell ---

/// Minimal gated unit:
///   f  = σ(x W_fᵀ + h U_fᵀ + b_f)
///   h̃  = tanh(x W_hᵀ + (f ⊙ h) U_hᵀ + b_h)
///   h' = (1 − f) ⊙ h + f ⊙ h̃  =  h + f ⊙ (h̃ − h)
struct Mgu<T: Float> {
    w_f: Param<T>,
    u_f: Param<T>,
    b_f: Param<T>,
    w_h: Param<T>,
    u_h: Param<T>,
    b_h: Param<T>,
}

impl<T: Float> Mgu<T> {
    fn new(input: usize, hidden: usize, rng: &mut Rng) -> Self {
        let k = T::from_f64(1.0 / (hidden as f64).sqrt());
        let mut p =
            |name: &str, shape: &[usize]| Param::new(name, Tensor::rand_uniform(shape, -k, k, rng));
        Mgu {
            w_f: p("w_f", &[hidden, input]),
            u_f: p("u_f", &[hidden, hidden]),
            b_f: p("b_f", &[hidden]),
            w_h: p("w_h", &[hidden, input]),
            u_h: p("u_h", &[hidden, hidden]),
            b_h: p("b_h", &[hidden]),
        }
    }
}

impl<T: Float> Cell<T> for Mgu<T> {
    type State = Var<T>;

    fn input_size(&self) -> usize {
        self.w_f.shape()[1]
    }

    fn hidden_size(&self) -> usize {
        self.u_f.shape()[0]
    }

    fn step(&self, x: &Var<T>, h: &Var<T>) -> Var<T> {
        let f = (x.linear(&self.w_f) + h.linear(&self.u_f) + &self.b_f).sigmoid();
        let h_tilde = (x.linear(&self.w_h) + (&f * h).linear(&self.u_h) + &self.b_h).tanh();
        h + &f * (h_tilde - h)
    }
}

/// The cell's parameters, by name: what optimizers, files and layers see.
impl<T: Float> Module<T> for Mgu<T> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        let named = [("w_f", &self.w_f), ("u_f", &self.u_f), ("b_f", &self.b_f)];
        let named2 = [("w_h", &self.w_h), ("u_h", &self.u_h), ("b_h", &self.b_h)];
        named
            .into_iter()
            .chain(named2)
            .map(|(n, p)| (n.to_string(), p.clone()))
            .collect()
    }
}

// -------------------------------------------------------------- a fused step (optional) ---

/// The same cell with its backward written by hand: each step is one node on the tape
/// instead of about fifteen, through [`Var::custom_op`].
///
/// ```text
/// forward:  a_f = x W_fᵀ + h U_fᵀ + b_f,   f = σ(a_f),   r = f ⊙ h
///           a_h = x W_hᵀ + r U_hᵀ + b_h,   h̃ = tanh(a_h),  h' = h + f ⊙ (h̃ − h)
/// backward, from g = ∂L/∂h':
///           da_h = g ⊙ f ⊙ (1 − h̃²)             dr = da_h U_h
///           da_f = (g ⊙ (h̃ − h) + dr ⊙ h) ⊙ f ⊙ (1 − f)
///           dx   = da_f W_f + da_h W_h           dh = g ⊙ (1 − f) + dr ⊙ f + da_f U_f
///           dW_f = da_fᵀ x,  dU_f = da_fᵀ h,  db_f = Σ_batch da_f
///           dW_h = da_hᵀ x,  dU_h = da_hᵀ r,  db_h = Σ_batch da_h
/// ```
struct MguFused<T: Float>(Mgu<T>);

impl<T: Float> Cell<T> for MguFused<T> {
    type State = Var<T>;

    fn input_size(&self) -> usize {
        self.0.input_size()
    }

    fn hidden_size(&self) -> usize {
        self.0.hidden_size()
    }

    fn step(&self, x: &Var<T>, h: &Var<T>) -> Var<T> {
        let c = &self.0;
        let tape = x.tape();
        let params = [&c.w_f, &c.u_f, &c.b_f, &c.w_h, &c.u_h, &c.b_h];
        let vars = params.map(|p| tape.param(p));
        let [w_f, u_f, b_f, w_h, u_h, b_h] = params.map(|p| p.value());
        let (x_v, h_v) = (x.value().clone(), h.value().clone());
        // Forward, keeping what the backward needs: f, r and h̃.
        let f = (x_v.matmul(&w_f.t()) + h_v.matmul(&u_f.t()) + &b_f).sigmoid();
        let r = &f * &h_v;
        let h_tilde = (x_v.matmul(&w_h.t()) + r.matmul(&u_h.t()) + &b_h).tanh();
        let h_next = &h_v + &f * (&h_tilde - &h_v);
        let mut inputs = vec![x, h];
        inputs.extend(&vars);
        Var::custom_op("mgu_step", &inputs, h_next, move |g| {
            let one_minus = |t: &Tensor<T>| t.map(|v| T::ONE - v);
            let da_h = g * &f * one_minus(&h_tilde.square());
            let dr = da_h.matmul(&u_h);
            let da_f = (g * (&h_tilde - &h_v) + &dr * &h_v) * &f * one_minus(&f);
            let dx = da_f.matmul(&w_f) + da_h.matmul(&w_h);
            let dh = g * one_minus(&f) + &dr * &f + da_f.matmul(&u_f);
            vec![
                Some(dx),
                Some(dh),
                Some(da_f.t().matmul(&x_v)),
                Some(da_f.t().matmul(&h_v)),
                Some(da_f.sum(&[0], false)),
                Some(da_h.t().matmul(&x_v)),
                Some(da_h.t().matmul(&r)),
                Some(da_h.sum(&[0], false)),
            ]
        })
    }
}

impl<T: Float> Module<T> for MguFused<T> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        self.0.named_params()
    }
}

// ------------------------------------------------------------------- what you get for free ---

/// What a run measured.
#[derive(Debug)]
pub struct Report {
    /// Largest error of the gradient checks (composed and fused cell).
    pub gradcheck_error: f64,
    /// Largest |fused − composed| over outputs and parameter gradients.
    pub fused_vs_composed: f64,
    /// Largest |compiled − composed| over outputs and parameter gradients.
    pub compiled_vs_composed: f64,
    /// Training loss (standardised units²) per epoch.
    pub train_loss: Vec<f32>,
    /// One-step-ahead RMSE on the test years, in sunspots, of the MGU and of persistence.
    pub test_rmse: f32,
    pub persistence_rmse: f32,
}

fn main() {
    run(60, true);
}

/// Runs the tour; `epochs` of training on the sunspots.
pub fn run(epochs: usize, verbose: bool) -> Report {
    let mut rng = Rng::seed_from_u64(0);

    // 1. Stacked, bidirectional, over a padded batch, gradient-checked in one call (f64).
    let config = LayerConfig::new(3, 4).num_layers(2).bidirectional(true);
    let layer = Layer::new(config, &mut rng, |input, rng| {
        Mgu::<f64>::new(input, 4, rng)
    });
    let x = Tensor::<f64>::rand_normal(&[5, 2, 3], 0.0, 1.0, &mut rng); // [seq, batch, input]
    let lengths = [5, 3];
    let report = gradcheck(
        |v| layer.forward_with(&v[0], None, Some(&lengths)).output,
        std::slice::from_ref(&x),
    );
    assert!(report.passed(), "{report}");
    let mut gradcheck_error = report.max_abs_error();
    if verbose {
        println!("2-layer bidirectional MGU, lengths {lengths:?}: {report}");
        let names: Vec<String> = layer.named_params().into_iter().map(|(n, _)| n).collect();
        println!("parameters: {names:?}");
    }

    // 2. The fused step: gradient-checked with respect to the input *and* the parameters,
    //    and equal to the composed cell on the same weights.
    let fused = Layer::new(
        LayerConfig::new(3, 4).bidirectional(true),
        &mut rng,
        |input, rng| MguFused(Mgu::<f64>::new(input, 4, rng)),
    );
    let report =
        GradCheck::new(|v: &[Var<f64>]| fused.forward_with(&v[0], None, Some(&lengths)).output)
            .inputs(std::slice::from_ref(&x))
            .params(&fused.params())
            .run();
    assert!(report.passed(), "{report}");
    gradcheck_error = gradcheck_error.max(report.max_abs_error());
    let composed = Layer::new(
        LayerConfig::new(3, 4).bidirectional(true),
        &mut rng,
        |input, rng| Mgu::<f64>::new(input, 4, rng),
    );
    composed.set_compiled(false); // op by op, as `step` is written (see 4.)
    for ((_, c), (_, f)) in composed.named_params().iter().zip(fused.named_params()) {
        c.set_value(f.value());
    }
    let fused_vs_composed = max_difference(&fused, &composed, &x, &lengths);
    if verbose {
        println!("fused MGU step: {report}");
        println!("fused vs composed: max |difference| {fused_vs_composed:.1e}");
    }

    // 4. Compiled: the same `step`, traced once per batch size and run as one tape node per
    //    layer and direction. It is the default; `set_compiled(false)` runs it composed.
    let mut own_rng = Rng::seed_from_u64(1); // leaves `rng`'s draws for 3. as they were
    let compiled = Layer::new(
        LayerConfig::new(3, 4).bidirectional(true),
        &mut own_rng,
        |input, rng| Mgu::<f64>::new(input, 4, rng),
    );
    for ((_, c), (_, f)) in compiled.named_params().iter().zip(composed.named_params()) {
        c.set_value(f.value());
    }
    let compiled_vs_composed = max_difference(&compiled, &composed, &x, &lengths);
    if verbose {
        for (l, d, path) in compiled.explain() {
            println!("MGU layer {l}, direction {d}: {path}");
        }
        for (l, d, path) in fused.explain() {
            println!("MguFused layer {l}, direction {d}: {path}");
        }
        println!("compiled vs composed: max |difference| {compiled_vs_composed:.1e}");
        time_paths(&mut own_rng);
    }

    // 3. Trained with truncated BPTT on the forecast demo's data: next year's sunspots.
    let (train_loss, test_rmse, persistence_rmse) = train_on_sunspots(epochs, &mut rng, verbose);
    Report {
        gradcheck_error,
        fused_vs_composed,
        compiled_vs_composed,
        train_loss,
        test_rmse,
        persistence_rmse,
    }
}

/// The training step (forward, loss, backward) of an MGU layer at batch 32, 100 steps, 32
/// inputs and 128 units in f32, composed and compiled: the median of 5 runs each.
fn time_paths(rng: &mut Rng) {
    let layer = Layer::new(LayerConfig::new(32, 128), rng, |i, rng| {
        Mgu::<f32>::new(i, 128, rng)
    });
    let x = Tensor::<f32>::rand_normal(&[100, 32, 32], 0.0, 1.0, rng);
    let median_ms = |compiled: bool| {
        layer.set_compiled(compiled);
        let mut times: Vec<f64> = (0..6)
            .map(|_| {
                let start = std::time::Instant::now();
                let tape = Tape::new();
                layer
                    .forward(&tape.constant(x.clone()))
                    .output
                    .sum_all()
                    .backward();
                start.elapsed().as_secs_f64() * 1e3
            })
            .skip(1) // the first run traces the step and warms the allocator
            .collect();
        times.sort_by(f64::total_cmp);
        times[2]
    };
    let (composed, compiled) = (median_ms(false), median_ms(true));
    println!(
        "training step, [100 steps, 32, 32] → 128 units, f32, {} thread(s): composed {composed:.1} \
         ms, compiled {compiled:.1} ms ({:.1}× faster)",
        rayon::current_num_threads(),
        composed / compiled
    );
}

/// Largest |a − b| between two layers' outputs and parameter gradients on the same input.
fn max_difference<A: Cell<f64>, B: Cell<f64>>(
    a: &Layer<f64, A>,
    b: &Layer<f64, B>,
    x: &Tensor<f64>,
    lengths: &[usize],
) -> f64 {
    let mut results = vec![];
    for params in [a.params(), b.params()] {
        for p in &params {
            p.zero_grad();
        }
    }
    for run in [
        &(|x: &Var<f64>| a.forward_with(x, None, Some(lengths)).output)
            as &dyn Fn(&Var<f64>) -> Var<f64>,
        &|x: &Var<f64>| b.forward_with(x, None, Some(lengths)).output,
    ] {
        let tape = Tape::new();
        let out = run(&tape.constant(x.clone()));
        out.square().sum_all().backward();
        results.push(out.value().clone());
    }
    let mut worst = (&results[0] - &results[1]).abs().max_all().item();
    for (p, q) in a.params().iter().zip(b.params()) {
        let (gp, gq) = (p.grad().expect("grad"), q.grad().expect("grad"));
        worst = worst.max((&gp - &gq).abs().max_all().item());
    }
    worst
}

/// One-step-ahead sunspot forecasts: the series standardised with the training years'
/// mean and deviation (up to 1920), TBPTT over the training years in chunks of 20, then the
/// state carried through the rest and scored on 1956–2008 against persistence.
fn train_on_sunspots(epochs: usize, rng: &mut Rng, verbose: bool) -> (Vec<f32>, f32, f32) {
    let csv = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/sunspots_yearly.csv"),
    )
    .expect("examples/data/sunspots_yearly.csv ships with the repository");
    let (years, spots): (Vec<i32>, Vec<f32>) = csv
        .lines()
        .skip(1)
        .map(|line| {
            let (y, v) = line.split_once(',').expect("YEAR,SUNACTIVITY");
            (
                y.parse::<i32>().expect("year"),
                v.parse::<f32>().expect("value"),
            )
        })
        .unzip();
    let train_end = years.iter().position(|&y| y == 1921).expect("1921");
    let test_start = years.iter().position(|&y| y == 1956).expect("1956");
    let n_train = train_end as f32;
    let mean = spots[..train_end].iter().sum::<f32>() / n_train;
    let std = (spots[..train_end]
        .iter()
        .map(|v| (v - mean).powi(2))
        .sum::<f32>()
        / n_train)
        .sqrt();
    let z: Vec<f32> = spots.iter().map(|v| (v - mean) / std).collect();
    let series =
        |from: usize, to: usize| Tensor::from_vec(z[from..to].to_vec(), &[to - from, 1, 1]);

    let mgu = Layer::new(LayerConfig::new(1, 24), rng, |i, rng| {
        Mgu::<f32>::new(i, 24, rng)
    });
    let head = Linear::<f32>::new(24, 1, true, rng);
    let mut params = mgu.params();
    params.extend(head.params());
    let mut opt = Adam::new(
        params,
        AdamConfig {
            lr: 0.01,
            ..Default::default()
        },
    );
    let (inputs, targets) = (series(0, train_end - 1), series(1, train_end));
    let mut losses = vec![];
    for epoch in 0..epochs {
        let mut total = 0.0;
        mgu.tbptt(&inputs, 20, None, |chunk| {
            let prediction = head.forward(&chunk.output);
            let target = targets.narrow(0, chunk.range.start, chunk.range.len());
            let loss = mse_loss(&prediction, &target);
            total += loss.item() * chunk.range.len() as f32;
            opt.zero_grad();
            loss.backward();
            clip_grad_norm(opt.params(), 1.0);
            opt.step();
        });
        losses.push(total / (train_end - 1) as f32);
        if verbose && (epoch % 10 == 0 || epoch + 1 == epochs) {
            println!("epoch {epoch:3}: training MSE {:.4}", losses[epoch]);
        }
    }
    // Forecast: run over the whole series (no gradients); the prediction made after year
    // t − 1 is scored against year t.
    let tape = Tape::new();
    let all = series(0, z.len() - 1);
    let predicted = tape.no_grad(|| head.forward(&mgu.forward(&tape.constant(all)).output));
    let predicted = predicted.value().to_vec();
    let (mut se, mut se_persistence) = (0.0, 0.0);
    for t in test_start..z.len() {
        let forecast = predicted[t - 1] * std + mean;
        se += (forecast - spots[t]).powi(2);
        se_persistence += (spots[t - 1] - spots[t]).powi(2);
    }
    let n = (z.len() - test_start) as f32;
    let (rmse, persistence) = ((se / n).sqrt(), (se_persistence / n).sqrt());
    if verbose {
        println!(
            "test 1956–2008, one year ahead: MGU RMSE {rmse:.1}, persistence {persistence:.1}"
        );
    }
    (losses, rmse, persistence)
}
