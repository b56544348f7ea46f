//! Elementwise ops. Binary ops broadcast like NumPy; their backward sums the gradient back to
//! each input's shape with `sum_to`, undoing the broadcast.

use tensor::{Float, Tensor};

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
    }

    /// x · s.  ∂/∂x = s · g.
    pub fn mul_scalar(&self, s: T) -> Var<T> {
        self.unary("mul_scalar", self.value.mul_scalar(s), move |g| {
            g.mul_scalar(s)
        })
    }

    /// −x.  ∂/∂x = −g.
    pub fn neg(&self) -> Var<T> {
        self.unary("neg", self.value.neg(), |g| g.neg())
    }

    /// 1 / x.  ∂/∂x = −g / x² = −g · y².
    pub fn recip(&self) -> Var<T> {
        let y = self.value.map(|x| T::ONE / x);
        let y_out = y.clone();
        self.unary("recip", y, move |g| g.mul(&y_out.square()).neg())
    }

    /// e^x.  ∂/∂x = g · e^x = g · y.
    pub fn exp(&self) -> Var<T> {
        let y = self.value.exp();
        let y_out = y.clone();
        self.unary("exp", y, move |g| g.mul(&y_out))
    }

    /// ln x.  ∂/∂x = g / x.
    pub fn log(&self) -> Var<T> {
        let x = self.value.clone();
        self.unary("log", x.log(), move |g| g.div(&x))
    }

    /// tanh x.  ∂/∂x = g · (1 − tanh²x) = g · (1 − y²).
    pub fn tanh(&self) -> Var<T> {
        let y = self.value.tanh();
        let y_out = y.clone();
        self.unary("tanh", y, move |g| {
            g.zip_map(&y_out, "tanh", |g, y| g * (T::ONE - y * y))
        })
    }

    /// σ(x) = 1 / (1 + e^−x).  ∂/∂x = g · σ(x)(1 − σ(x)) = g · y(1 − y).
    pub fn sigmoid(&self) -> Var<T> {
        let y = self.value.sigmoid();
        let y_out = y.clone();
        self.unary("sigmoid", y, move |g| {
            g.zip_map(&y_out, "sigmoid", |g, y| g * y * (T::ONE - y))
        })
    }

    /// max(x, 0).  ∂/∂x = g where x > 0, else 0 (0 at the kink, as PyTorch).
    pub fn relu(&self) -> Var<T> {
        let y = self.value.relu();
        let y_out = y.clone();
        self.unary("relu", y, move |g| {
            g.zip_map(&y_out, "relu", |g, y| if y > T::ZERO { g } else { T::ZERO })
        })
    }

    /// √x.  ∂/∂x = g / (2√x) = g / (2y).
    pub fn sqrt(&self) -> Var<T> {
        let y = self.value.sqrt();
        let y_out = y.clone();
        let two = T::from_f64(2.0);
        self.unary("sqrt", y, move |g| {
            g.zip_map(&y_out, "sqrt", move |g, y| g / (two * y))
        })
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

    /// x².  ∂/∂x = 2 g x.
    pub fn square(&self) -> Var<T> {
        let x = self.value.clone();
        let two = T::from_f64(2.0);
        self.unary("square", x.square(), move |g| {
            g.zip_map(&x, "square", move |g, x| two * g * x)
        })
    }

    /// |x|.  ∂/∂x = g · sign(x)  (0 at x = 0, as PyTorch).
    pub fn abs(&self) -> Var<T> {
        let x = self.value.clone();
        self.unary("abs", x.abs(), move |g| {
            g.zip_map(&x, "abs", |g, x| {
                if x > T::ZERO {
                    g
                } else if x < T::ZERO {
                    -g
                } else {
                    T::ZERO
                }
            })
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
