//! Gradient checking: compare the tape's gradients with central finite differences in `f64`.
//!
//! For each element x_j of each input (and parameter), the numeric derivative is
//! `(f(x + h e_j) − f(x − h e_j)) / 2h`. Its error is about `h²·|f'''|/6` (truncation) plus
//! `ε·|f|/h` (rounding, ε ≈ 1.1e-16), smallest near h = 1e-6 where both are ~1e-10 for
//! functions of moderate size; hence the defaults `eps = 1e-6`, `atol = 1e-5`, `rtol = 1e-3`
//! (PyTorch's `gradcheck` defaults), which leave a wide margin over that error yet catch any
//! wrong rule (a wrong rule is off by O(1)).

use std::fmt;

use tensor::{unravel, Rng, Tensor};

use crate::param::Param;
use crate::tape::Tape;
use crate::var::Var;

/// Which operand an error was found in.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// The i-th input tensor.
    Input(usize),
    /// A parameter, by name.
    Param(String),
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Input(i) => write!(f, "input {i}"),
            Operand::Param(name) => write!(f, "param '{name}'"),
        }
    }
}

/// One element's comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct ElementCheck {
    /// Where.
    pub operand: Operand,
    /// Multi-index of the element.
    pub index: Vec<usize>,
    /// The tape's gradient.
    pub analytic: f64,
    /// The finite-difference gradient.
    pub numeric: f64,
}

impl ElementCheck {
    /// |analytic − numeric|.
    pub fn abs_error(&self) -> f64 {
        (self.analytic - self.numeric).abs()
    }

    /// |analytic − numeric| / max(|numeric|, 1e-12).
    pub fn rel_error(&self) -> f64 {
        self.abs_error() / self.numeric.abs().max(1e-12)
    }
}

/// The result of a [`gradcheck`]: pass/fail, the worst errors and where they are.
#[derive(Clone, Debug)]
pub struct GradcheckReport {
    /// Number of elements compared.
    pub checked: usize,
    /// Elements with |analytic − numeric| > atol + rtol·|numeric|.
    pub failures: usize,
    /// The element with the largest absolute error.
    pub worst_abs: Option<ElementCheck>,
    /// The element with the largest relative error.
    pub worst_rel: Option<ElementCheck>,
    /// The tolerances used.
    pub atol: f64,
    /// The tolerances used.
    pub rtol: f64,
}

impl GradcheckReport {
    /// `true` if every element is within tolerance.
    pub fn passed(&self) -> bool {
        self.failures == 0
    }

    /// The largest |analytic − numeric|.
    pub fn max_abs_error(&self) -> f64 {
        self.worst_abs.as_ref().map_or(0.0, ElementCheck::abs_error)
    }

    /// The largest relative error.
    pub fn max_rel_error(&self) -> f64 {
        self.worst_rel.as_ref().map_or(0.0, ElementCheck::rel_error)
    }
}

impl fmt::Display for GradcheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "passed" } else { "FAILED" };
        write!(
            f,
            "gradcheck {verdict}: {} of {} elements outside atol {:e} + rtol {:e}·|numeric|",
            self.failures, self.checked, self.atol, self.rtol
        )?;
        let worst = [("absolute", &self.worst_abs), ("relative", &self.worst_rel)];
        for (what, worst) in worst {
            if let Some(w) = worst {
                let (err, other, other_name) = if what == "absolute" {
                    (w.abs_error(), w.rel_error(), "relative")
                } else {
                    (w.rel_error(), w.abs_error(), "absolute")
                };
                write!(
                    f,
                    "\n  worst {what} error {err:.3e} ({other_name} {other:.3e}) at {} {:?}: analytic {:.12e}, numeric {:.12e}",
                    w.operand,
                    w.index,
                    w.analytic,
                    w.numeric
                )?;
            }
        }
        Ok(())
    }
}

/// Checks the gradients of `f` with respect to each tensor in `inputs` against central finite
/// differences, with the default tolerances. `f` gets the inputs as variables on a fresh tape
/// and may return any shape: a non-scalar output `y` is checked through `Σ y · probe` for a
/// fixed random `probe`, so every output element's gradient counts with a different weight.
///
/// ```
/// use autograd::gradcheck;
/// use tensor::Tensor;
///
/// let a = Tensor::from_vec(vec![0.3, -0.7, 1.1, 0.2, 0.5, -0.4], &[2, 3]);
/// let b = Tensor::from_vec(vec![0.9, -0.1, 0.4], &[3]);
/// let report = gradcheck(|v| (&v[0] * &v[1]).tanh(), &[a, b]); // b broadcasts over rows
/// assert!(report.passed(), "{report}");
/// ```
pub fn gradcheck(f: impl Fn(&[Var<f64>]) -> Var<f64>, inputs: &[Tensor<f64>]) -> GradcheckReport {
    GradCheck::new(f).inputs(inputs).run()
}

/// A configurable gradient check, for parameters and custom tolerances.
///
/// ```
/// use autograd::{GradCheck, Param};
/// use tensor::{unravel, Rng, Tensor};
///
/// let mut rng = Rng::seed_from_u64(1);
/// let w = Param::new("w", Tensor::<f64>::rand_normal(&[3, 2], 0.0, 1.0, &mut rng));
/// let x = Tensor::<f64>::rand_normal(&[4, 3], 0.0, 1.0, &mut rng);
/// let report = GradCheck::new(|v| v[0].matmul(&w).sigmoid())
///     .inputs(&[x])
///     .params(&[w.clone()])
///     .run();
/// assert!(report.passed(), "{report}");
/// ```
pub struct GradCheck<F> {
    f: F,
    inputs: Vec<Tensor<f64>>,
    params: Vec<Param<f64>>,
    eps: f64,
    atol: f64,
    rtol: f64,
}

impl<F: Fn(&[Var<f64>]) -> Var<f64>> GradCheck<F> {
    /// A check of `f` with no operands yet and the default tolerances.
    pub fn new(f: F) -> Self {
        GradCheck {
            f,
            inputs: vec![],
            params: vec![],
            eps: 1e-6,
            atol: 1e-5,
            rtol: 1e-3,
        }
    }

    /// The input tensors, handed to `f` as variables.
    pub fn inputs(mut self, inputs: &[Tensor<f64>]) -> Self {
        self.inputs = inputs.to_vec();
        self
    }

    /// Parameters `f` uses; their gradients are checked too. Their values and gradients are
    /// restored afterwards.
    pub fn params(mut self, params: &[Param<f64>]) -> Self {
        self.params = params.to_vec();
        self
    }

    /// The finite-difference step h.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// The absolute tolerance.
    pub fn atol(mut self, atol: f64) -> Self {
        self.atol = atol;
        self
    }

    /// The relative tolerance.
    pub fn rtol(mut self, rtol: f64) -> Self {
        self.rtol = rtol;
        self
    }

    /// `f` reduced to a scalar: Σ f(x) · probe, with the probe fixed on first use.
    fn scalar(&self, vars: &[Var<f64>], probe: &mut Option<Tensor<f64>>) -> Var<f64> {
        let y = (self.f)(vars);
        if y.value().numel() == 1 {
            return y.sum_all();
        }
        let p = probe.get_or_insert_with(|| {
            Tensor::rand_uniform(y.shape(), 0.5, 1.5, &mut Rng::seed_from_u64(0x5eed))
        });
        (&y * &*p).sum_all()
    }

    fn eval(&self, inputs: &[Tensor<f64>], probe: &mut Option<Tensor<f64>>) -> f64 {
        let tape = Tape::new();
        tape.no_grad(|| {
            let vars: Vec<Var<f64>> = inputs.iter().map(|x| tape.constant(x.clone())).collect();
            self.scalar(&vars, probe).item()
        })
    }

    /// Runs the check.
    pub fn run(&self) -> GradcheckReport {
        let saved_grads: Vec<_> = self.params.iter().map(Param::grad).collect();
        let mut probe = None;

        // Analytic gradients from one backward pass.
        for p in &self.params {
            p.zero_grad();
        }
        let tape = Tape::new();
        let vars: Vec<Var<f64>> = self.inputs.iter().map(|x| tape.var(x.clone())).collect();
        let out = self.scalar(&vars, &mut probe);
        let grads = out.requires_grad().then(|| out.backward());
        let mut analytic: Vec<(Operand, Tensor<f64>)> = vars
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let g = grads.as_ref().and_then(|g| g.get(v).cloned());
                (
                    Operand::Input(i),
                    g.unwrap_or_else(|| v.value().zeros_like()),
                )
            })
            .collect();
        for p in &self.params {
            let g = p.grad().unwrap_or_else(|| p.value().zeros_like());
            analytic.push((Operand::Param(p.name()), g));
        }
        drop(tape);

        // Numeric gradients, one element at a time.
        let mut checks = Vec::new();
        for (k, (operand, grad)) in analytic.iter().enumerate() {
            let base = if k < self.inputs.len() {
                self.inputs[k].clone()
            } else {
                self.params[k - self.inputs.len()].value()
            };
            let shape = base.shape().to_vec();
            let values = base.to_vec();
            let grad = grad.to_vec();
            for j in 0..values.len() {
                let mut f_at = |delta: f64| {
                    let mut moved = values.clone();
                    moved[j] += delta;
                    let moved = Tensor::from_vec(moved, &shape);
                    if k < self.inputs.len() {
                        let mut inputs = self.inputs.clone();
                        inputs[k] = moved;
                        self.eval(&inputs, &mut probe)
                    } else {
                        let p = &self.params[k - self.inputs.len()];
                        p.set_value(moved);
                        let v = self.eval(&self.inputs, &mut probe);
                        p.set_value(base.clone());
                        v
                    }
                };
                let numeric = (f_at(self.eps) - f_at(-self.eps)) / (2.0 * self.eps);
                checks.push(ElementCheck {
                    operand: operand.clone(),
                    index: unravel(j, &shape),
                    analytic: grad[j],
                    numeric,
                });
            }
        }
        for (p, g) in self.params.iter().zip(saved_grads) {
            p.set_grad(g);
        }
        self.report(checks)
    }

    fn report(&self, checks: Vec<ElementCheck>) -> GradcheckReport {
        let fails = |c: &ElementCheck| {
            let err = c.abs_error();
            err.is_nan() || err > self.atol + self.rtol * c.numeric.abs()
        };
        let by = |key: fn(&ElementCheck) -> f64| {
            checks
                .iter()
                .max_by(|a, b| key(a).total_cmp(&key(b)))
                .cloned()
        };
        GradcheckReport {
            checked: checks.len(),
            failures: checks.iter().filter(|c| fails(c)).count(),
            worst_abs: by(|c| {
                if c.abs_error().is_nan() {
                    f64::INFINITY
                } else {
                    c.abs_error()
                }
            }),
            worst_rel: by(|c| {
                if c.rel_error().is_nan() {
                    f64::INFINITY
                } else {
                    c.rel_error()
                }
            }),
            atol: self.atol,
            rtol: self.rtol,
        }
    }
}
