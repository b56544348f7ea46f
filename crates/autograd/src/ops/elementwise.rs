//! Elementwise ops. Binary ops broadcast like NumPy; their backward sums the gradient back to
//! each input's shape with `sum_to`, undoing the broadcast.

use tensor::{Float, Tensor};

use crate::trace::Prim;
use crate::var::{IntoVar, Var};

impl<T: Float> Var<T> {
    /// a + b.  ∂/∂a = g,  ∂/∂b = g.
    #[track_caller]
    pub fn add(&self, other: impl IntoVar<T>) -> Var<T> {
        let b = self.lift(other);
        let (sa, sb) = (self.shape().to_vec(), b.shape().to_vec());
        self.binary(
            &b,
            "add",
            self.value.add(&b.value),
            move |g| g.sum_to(&sa),
            move |g| g.sum_to(&sb),
        )
        .traced(|| Prim::Binary(Binary::Add))
    }

    /// a − b.  ∂/∂a = g,  ∂/∂b = −g.
    #[track_caller]
    pub fn sub(&self, other: impl IntoVar<T>) -> Var<T> {
        let b = self.lift(other);
        let (sa, sb) = (self.shape().to_vec(), b.shape().to_vec());
        self.binary(
            &b,
            "sub",
            self.value.sub(&b.value),
            move |g| g.sum_to(&sa),
            move |g| g.neg().sum_to(&sb),
        )
        .traced(|| Prim::Binary(Binary::Sub))
    }

    /// a · b.  ∂/∂a = g · b,  ∂/∂b = g · a.
    #[track_caller]
    pub fn mul(&self, other: impl IntoVar<T>) -> Var<T> {
        let b = self.lift(other);
        let (a_val, b_val) = (self.value.clone(), b.value.clone());
        self.binary(
            &b,
            "mul",
            self.value.mul(&b.value),
            {
                let b_val = b_val.clone();
                let sa = a_val.shape().to_vec();
                move |g| g.mul(&b_val).sum_to(&sa)
            },
            move |g| g.mul(&a_val).sum_to(b_val.shape()),
        )
        .traced(|| Prim::Binary(Binary::Mul))
    }

    /// a / b.  ∂/∂a = g / b,  ∂/∂b = −g · a / b² = −g · y / b.
    #[track_caller]
    pub fn div(&self, other: impl IntoVar<T>) -> Var<T> {
        let b = self.lift(other);
        let y = self.value.div(&b.value);
        let (sa, b_val, y_out) = (self.shape().to_vec(), b.value.clone(), y.clone());
        let b_val2 = b_val.clone();
        self.binary(
            &b,
            "div",
            y,
            move |g| g.div(&b_val).sum_to(&sa),
            move |g| g.mul(&y_out).div(&b_val2).neg().sum_to(b_val2.shape()),
        )
        .traced(|| Prim::Binary(Binary::Div))
    }

    /// max(a, b) elementwise.  The gradient goes to the larger input; on a tie each gets g/2
    /// (PyTorch's rule).
    #[track_caller]
    pub fn maximum(&self, other: impl IntoVar<T>) -> Var<T> {
        self.extremum(other, "maximum", true)
    }

    /// min(a, b) elementwise.  The gradient goes to the smaller input; on a tie each gets g/2.
    #[track_caller]
    pub fn minimum(&self, other: impl IntoVar<T>) -> Var<T> {
        self.extremum(other, "minimum", false)
    }

    #[track_caller]
    fn extremum(&self, other: impl IntoVar<T>, op: &'static str, is_max: bool) -> Var<T> {
        let b = self.lift(other);
        let (a_val, b_val) = (self.value.clone(), b.value.clone());
        let value = if is_max {
            a_val.maximum(&b_val)
        } else {
            a_val.minimum(&b_val)
        };
        // Share of the gradient that goes to `a`: 1 where a wins, 1/2 on a tie, 0 where b wins.
        let half = T::from_f64(0.5);
        let share_a = a_val.zip_map(&b_val, op, move |x, y| {
            if x == y {
                half
            } else if (x > y) == is_max {
                T::ONE
            } else {
                T::ZERO
            }
        });
        let share_b = share_a.map(|s| T::ONE - s);
        let (sa, sb) = (a_val.shape().to_vec(), b_val.shape().to_vec());
        self.binary(
            &b,
            op,
            value,
            move |g| g.mul(&share_a).sum_to(&sa),
            move |g| g.mul(&share_b).sum_to(&sb),
        )
    }

    /// x + s.  ∂/∂x = g.
    pub fn add_scalar(&self, s: T) -> Var<T> {
        self.unary("add_scalar", self.value.add_scalar(s), |g| g.clone())
            .traced(|| Prim::AddScalar(s))
    }

    /// x · s.  ∂/∂x = s · g.
    pub fn mul_scalar(&self, s: T) -> Var<T> {
        self.unary("mul_scalar", self.value.mul_scalar(s), move |g| {
            g.mul_scalar(s)
        })
        .traced(|| Prim::MulScalar(s))
    }

    /// −x.  ∂/∂x = −g.
    pub fn neg(&self) -> Var<T> {
        self.apply_unary(Unary::Neg)
    }

    /// 1 / x.  ∂/∂x = −g / x² = −g · y².
    pub fn recip(&self) -> Var<T> {
        self.apply_unary(Unary::Recip)
    }

    /// e^x.  ∂/∂x = g · e^x = g · y.
    pub fn exp(&self) -> Var<T> {
        self.apply_unary(Unary::Exp)
    }

    /// ln x.  ∂/∂x = g / x.
    pub fn log(&self) -> Var<T> {
        self.apply_unary(Unary::Log)
    }

    /// tanh x.  ∂/∂x = g · (1 − tanh²x) = g · (1 − y²).
    pub fn tanh(&self) -> Var<T> {
        self.apply_unary(Unary::Tanh)
    }

    /// σ(x) = 1 / (1 + e^−x).  ∂/∂x = g · σ(x)(1 − σ(x)) = g · y(1 − y).
    pub fn sigmoid(&self) -> Var<T> {
        self.apply_unary(Unary::Sigmoid)
    }

    /// max(x, 0).  ∂/∂x = g where x > 0, else 0 (0 at the kink, as PyTorch).
    pub fn relu(&self) -> Var<T> {
        self.apply_unary(Unary::Relu)
    }

    /// √x.  ∂/∂x = g / (2√x) = g / (2y).
    pub fn sqrt(&self) -> Var<T> {
        self.apply_unary(Unary::Sqrt)
    }

    /// x².  ∂/∂x = 2 g x.
    pub fn square(&self) -> Var<T> {
        self.apply_unary(Unary::Square)
    }

    /// |x|.  ∂/∂x = g · sign(x)  (0 at x = 0, as PyTorch).
    pub fn abs(&self) -> Var<T> {
        self.apply_unary(Unary::Abs)
    }

    /// Any [`Unary`] op: its forward, and its rule [`Unary::grad`] applied to each element of
    /// `g` with the value the rule reads ([`Unary::reads`]).
    pub fn apply_unary(&self, op: Unary) -> Var<T> {
        let y = op.forward(&self.value);
        let read = match op.reads() {
            Reads::Input => self.value.clone(),
            Reads::Output => y.clone(),
        };
        // One closure per op, so each rule is inlined into its loop with no branch on `op`.
        crate::each_unary!(op, |u| self.unary(u.name(), y, move |g| {
            g.zip_map(&read, u.name(), |g, r| u.grad(g, r))
        }))
        .traced(|| Prim::Unary(op))
    }

    /// x^p.  ∂/∂x = g · p · x^(p−1)  (0 when p = 0, as PyTorch).
    pub fn powf(&self, p: T) -> Var<T> {
        let x = self.value.clone();
        self.unary("powf", x.powf(p), move |g| {
            if p == T::ZERO {
                return g.zeros_like();
            }
            g.zip_map(&x, "powf", move |g, x| g * p * x.powf(p - T::ONE))
        })
    }

    /// x clamped into `[lo, hi]`.  ∂/∂x = g where lo ≤ x ≤ hi, else 0.
    pub fn clamp(&self, lo: T, hi: T) -> Var<T> {
        let x = self.value.clone();
        self.unary("clamp", x.clamp(lo, hi), move |g| {
            g.zip_map(
                &x,
                "clamp",
                move |g, x| {
                    if x >= lo && x <= hi {
                        g
                    } else {
                        T::ZERO
                    }
                },
            )
        })
    }

    /// `cond ? a : b` elementwise, broadcasting (the condition is a constant mask).
    /// ∂/∂a = g where cond, ∂/∂b = g where not cond.
    #[track_caller]
    pub fn where_cond(cond: &Tensor<bool>, a: &Var<T>, b: impl IntoVar<T>) -> Var<T> {
        let b = a.lift(b);
        let value = Tensor::where_cond(cond, &a.value, &b.value);
        let zeros = Tensor::zeros(&[]);
        let (ca, cb) = (cond.clone(), cond.clone());
        let (za, zb) = (zeros.clone(), zeros);
        let (sa, sb) = (a.shape().to_vec(), b.shape().to_vec());
        a.binary(
            &b,
            "where_cond",
            value,
            move |g| Tensor::where_cond(&ca, g, &za).sum_to(&sa),
            move |g| Tensor::where_cond(&cb, &zb, g).sum_to(&sb),
        )
    }
}

/// The elementwise functions of one input, each with its forward and its derivative rule side
/// by side. The tape's ops ([`Var::tanh`], ...) and compiled cells (`rnn`'s compiler) both
/// run these, so each rule is written once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    /// −x
    Neg,
    /// e^x
    Exp,
    /// ln x
    Log,
    /// tanh x
    Tanh,
    /// σ(x)
    Sigmoid,
    /// max(x, 0)
    Relu,
    /// √x
    Sqrt,
    /// 1 / x
    Recip,
    /// x²
    Square,
    /// |x|
    Abs,
}

/// Runs `$body` with `$u` bound to the [`Unary`] `$op` as a constant, one match arm per op,
/// so a loop in `$body` over [`Unary::eval`] or [`Unary::grad`] is compiled once per op with
/// the function inlined and no branch on the op inside. The tape's unary ops and `rnn`'s
/// compiled cells both dispatch with it.
///
/// ```
/// use autograd::{each_unary, Unary};
/// let op = Unary::Tanh;
/// let y: Vec<f64> = each_unary!(op, |u| [0.5f64, -1.0].iter().map(|&x| u.eval(x)).collect());
/// assert_eq!(y, vec![0.5f64.tanh(), (-1.0f64).tanh()]);
/// ```
#[macro_export]
macro_rules! each_unary {
    ($op:expr, |$u:ident| $body:expr) => {
        $crate::each_unary!(@arms $op, $u, $body;
            Neg, Exp, Log, Tanh, Sigmoid, Relu, Sqrt, Recip, Square, Abs)
    };
    (@arms $op:expr, $u:ident, $body:expr; $($variant:ident),*) => {
        match $op {
            $($crate::Unary::$variant => {
                // A constant item, not a binding: closures in `$body` see the op itself.
                #[allow(non_upper_case_globals)]
                const $u: $crate::Unary = $crate::Unary::$variant;
                $body
            })*
        }
    };
}

/// Which value a [`Unary`] rule reads besides the gradient: the op's input or its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// The input x.
    Input,
    /// The output y.
    Output,
}

impl Unary {
    /// Every op, in declaration order.
    pub const ALL: [Unary; 10] = [
        Unary::Neg,
        Unary::Exp,
        Unary::Log,
        Unary::Tanh,
        Unary::Sigmoid,
        Unary::Relu,
        Unary::Sqrt,
        Unary::Recip,
        Unary::Square,
        Unary::Abs,
    ];

    /// The op's name on the tape, equal to its method's.
    pub fn name(self) -> &'static str {
        match self {
            Unary::Neg => "neg",
            Unary::Exp => "exp",
            Unary::Log => "log",
            Unary::Tanh => "tanh",
            Unary::Sigmoid => "sigmoid",
            Unary::Relu => "relu",
            Unary::Sqrt => "sqrt",
            Unary::Recip => "recip",
            Unary::Square => "square",
            Unary::Abs => "abs",
        }
    }

    /// y = f(x) for every element (`tensor`'s vectorised functions).
    pub fn forward<T: Float>(self, x: &Tensor<T>) -> Tensor<T> {
        match self {
            Unary::Neg => x.neg(),
            Unary::Exp => x.exp(),
            Unary::Log => x.log(),
            Unary::Tanh => x.tanh(),
            Unary::Sigmoid => x.sigmoid(),
            Unary::Relu => x.relu(),
            Unary::Sqrt => x.sqrt(),
            Unary::Recip => x.map(|v| T::ONE / v),
            Unary::Square => x.square(),
            Unary::Abs => x.abs(),
        }
    }

    /// y = f(x) for one element: the same function as [`forward`](Self::forward)'s, bit for
    /// bit (inline, so a loop over it vectorises).
    #[inline(always)]
    pub fn eval<T: Float>(self, x: T) -> T {
        match self {
            Unary::Neg => -x,
            Unary::Exp => x.vexp(),
            Unary::Log => x.ln(),
            Unary::Tanh => x.vtanh(),
            Unary::Sigmoid => x.vsigmoid(),
            Unary::Relu => {
                if x > T::ZERO || x.is_nan() {
                    x
                } else {
                    T::ZERO
                }
            }
            Unary::Sqrt => x.sqrt(),
            Unary::Recip => T::ONE / x,
            Unary::Square => x * x,
            Unary::Abs => x.abs(),
        }
    }

    /// What [`grad`](Self::grad) reads: the input or the output.
    pub fn reads(self) -> Reads {
        match self {
            Unary::Log | Unary::Square | Unary::Abs => Reads::Input,
            _ => Reads::Output,
        }
    }

    /// The rule: ∂L/∂x from g = ∂L/∂y and `r`, the value [`reads`](Self::reads) names.
    ///
    /// ```text
    /// neg      −g                 exp      g · y
    /// log      g / x              tanh     g · (1 − y²)
    /// sigmoid  g · y (1 − y)      relu     g where y > 0, else 0
    /// sqrt     g / (2y)           recip    −g · y²
    /// square   2 g x              abs      g · sign(x)  (0 at 0)
    /// ```
    #[inline(always)]
    pub fn grad<T: Float>(self, g: T, r: T) -> T {
        match self {
            Unary::Neg => -g,
            Unary::Exp => g * r,
            Unary::Log => g / r,
            Unary::Tanh => g * (T::ONE - r * r),
            Unary::Sigmoid => g * r * (T::ONE - r),
            Unary::Relu => {
                if r > T::ZERO {
                    g
                } else {
                    T::ZERO
                }
            }
            Unary::Sqrt => g / (T::from_f64(2.0) * r),
            Unary::Recip => -(g * (r * r)),
            Unary::Square => T::from_f64(2.0) * g * r,
            Unary::Abs => {
                if r > T::ZERO {
                    g
                } else if r < T::ZERO {
                    -g
                } else {
                    T::ZERO
                }
            }
        }
    }
}

/// The binary arithmetic ops' rules, for one element of the broadcast output, as compiled
/// cells apply them row by row. The tape's [`Var::add`], [`Var::sub`], [`Var::mul`] and
/// [`Var::div`] apply the same formulas with whole-tensor ops (`g · b` as `g.mul(&b)`) before
/// `sum_to` undoes the broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// a + b.  ∂/∂a = g,  ∂/∂b = g.
    Add,
    /// a − b.  ∂/∂a = g,  ∂/∂b = −g.
    Sub,
    /// a · b.  ∂/∂a = g · b,  ∂/∂b = g · a.
    Mul,
    /// a / b.  ∂/∂a = g / b,  ∂/∂b = −g · a / b² = −g · y / b.
    Div,
}

impl Binary {
    /// The op's name on the tape.
    pub fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
            Binary::Div => "div",
        }
    }

    /// y = a ∘ b for one element.
    #[inline(always)]
    pub fn eval<T: Float>(self, a: T, b: T) -> T {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
        }
    }

    /// ∂L/∂a from g, the operands and the output y.
    #[inline(always)]
    pub fn grad_a<T: Float>(self, g: T, _a: T, b: T, _y: T) -> T {
        match self {
            Binary::Add | Binary::Sub => g,
            Binary::Mul => g * b,
            Binary::Div => g / b,
        }
    }

    /// ∂L/∂b from g, the operands and the output y.
    #[inline(always)]
    pub fn grad_b<T: Float>(self, g: T, a: T, b: T, y: T) -> T {
        match self {
            Binary::Add => g,
            Binary::Sub => -g,
            Binary::Mul => g * a,
            Binary::Div => -(g * y / b),
        }
    }
}
