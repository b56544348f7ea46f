//! Elementwise ops: unary maps, binary ops with NumPy broadcasting, comparisons and `where`.
//!
//! Binary ops broadcast both operands to a common shape (sizes must be equal or 1, aligned on
//! the last dimension) through stride-0 views, so no operand is copied to broadcast it.
//!
//! The named ops are one call each to one of two generic ones, defined first in this file:
//! [`map_to`](Tensor::map_to) (a function of each element) and [`zip_map`](Tensor::zip_map)
//! (a function of two broadcast operands); [`where_cond`](Tensor::where_cond), with three
//! operands, walks them itself. The loops that decide their speed are in `kernels.rs`. This
//! file is the list of ops, in the order unary math, binary math, comparisons, operators.
//! Each output element is computed by one thread from the same input elements, so results
//! are bit-identical whatever the number of threads.

use std::ops::{Add, Div, Mul, Neg, Sub};

use crate::element::{Element, Float};
use crate::ops::fill;
use crate::shape::{broadcast_panic, broadcast_shapes};
use crate::simd::with_simd;
use crate::tensor::{StridedIter, Tensor};

mod kernels;

use kernels::{fill_overwrite, zip_rows, MapRow};

// `sigmoid` is defined in `element` with the other scalar math (`f64`'s `fast_sigmoid` is
// `sigmoid`, and `element` depends on nothing in `ops`); re-exported so this path still works.
pub use crate::element::sigmoid;

// ---------------------------------------------------------------------------------------------
// The generic ops: a function of each element, a function of two broadcast operands, `where`
// ---------------------------------------------------------------------------------------------

impl<T: Element> Tensor<T> {
    /// Applies `f` to every element, giving a tensor of the same shape.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2]);
    /// assert_eq!(x.map_to(|v| v > 1.5).to_vec(), vec![false, true]);
    /// ```
    pub fn map_to<U: Element, F: Fn(T) -> U + Sync>(&self, f: F) -> Tensor<U> {
        let out = match self.as_slice() {
            Some(src) => fill_overwrite(src.len(), |chunk, start| {
                with_simd(MapRow(chunk, &src[start..], &f));
            }),
            // A view (a gate's `chunk` of a row, a transpose): as runs along its innermost
            // dims, paired with a 0-d operand that every run reads with step 0.
            None => {
                let none = Tensor::from_vec(vec![T::default()], &[]);
                zip_rows(self, &none, &self.shape, &|x, _: T| f(x))
            }
        };
        Tensor::from_contiguous(out, self.shape.clone())
    }

    /// Combines two tensors elementwise with broadcasting. `op` names the op in the panic.
    ///
    /// # Panics
    /// If the shapes do not broadcast.
    #[track_caller]
    pub fn zip_map<U: Element, V: Element, F: Fn(T, U) -> V + Sync>(
        &self,
        other: &Tensor<U>,
        op: &str,
        f: F,
    ) -> Tensor<V> {
        let shape = broadcast_shapes(&self.shape, &other.shape)
            .unwrap_or_else(|| broadcast_panic(op, &self.shape, &other.shape));
        let out = zip_rows(self, other, &shape, &f);
        Tensor::from_contiguous(out, shape)
    }

    /// `cond ? on_true : on_false`, elementwise, with all three broadcast together (like
    /// `torch.where`).
    ///
    /// # Panics
    /// If the three shapes do not broadcast.
    #[track_caller]
    pub fn where_cond(cond: &Tensor<bool>, on_true: &Self, on_false: &Self) -> Self {
        let op = "where_cond";
        let s = broadcast_shapes(&cond.shape, &on_true.shape)
            .unwrap_or_else(|| broadcast_panic(op, &cond.shape, &on_true.shape));
        let shape = broadcast_shapes(&s, &on_false.shape)
            .unwrap_or_else(|| broadcast_panic(op, &s, &on_false.shape));
        let (c, a, b) = (
            cond.broadcast_to(&shape),
            on_true.broadcast_to(&shape),
            on_false.broadcast_to(&shape),
        );
        let out = fill(crate::shape::numel(&shape), 1, |chunk, start| {
            let ic = StridedIter::new(&c.shape, &c.strides, c.offset, start);
            let ia = StridedIter::new(&a.shape, &a.strides, a.offset, start);
            let ib = StridedIter::new(&b.shape, &b.strides, b.offset, start);
            for (((o, k), i), j) in chunk.iter_mut().zip(ic).zip(ia).zip(ib) {
                *o = if c.data[k] { a.data[i] } else { b.data[j] };
            }
        });
        Tensor::from_contiguous(out, shape)
    }
}

// ---------------------------------------------------------------------------------------------
// Unary math
// ---------------------------------------------------------------------------------------------

impl<T: Float> Tensor<T> {
    /// Applies `f` to every element.
    pub fn map<F: Fn(T) -> T + Sync>(&self, f: F) -> Self {
        self.map_to(f)
    }

    /// -x.
    pub fn neg(&self) -> Self {
        self.map(|x| -x)
    }

    /// e^x (within 2 ulp, vectorised: [`Float::vexp`]).
    pub fn exp(&self) -> Self {
        self.map(T::vexp)
    }

    /// Natural logarithm (NaN below 0, -inf at 0).
    pub fn log(&self) -> Self {
        self.map(T::ln)
    }

    /// Hyperbolic tangent (within 2 ulp, vectorised: [`Float::vtanh`]).
    pub fn tanh(&self) -> Self {
        self.map(T::vtanh)
    }

    /// The logistic function 1 / (1 + e^-x), computed so it never overflows: for x < 0 it is
    /// e^x / (1 + e^x), whose exponential is at most 1 (within 2 ulp, vectorised:
    /// [`Float::vsigmoid`]).
    pub fn sigmoid(&self) -> Self {
        self.map(T::vsigmoid)
    }

    /// max(x, 0); NaN stays NaN, as in PyTorch.
    pub fn relu(&self) -> Self {
        self.map(|x| {
            if x > T::ZERO || x.is_nan() {
                x
            } else {
                T::ZERO
            }
        })
    }

    /// √x.
    pub fn sqrt(&self) -> Self {
        self.map(T::sqrt)
    }

    /// x^p.
    pub fn powf(&self, p: T) -> Self {
        self.map(|x| x.powf(p))
    }

    /// x².
    pub fn square(&self) -> Self {
        self.map(|x| x * x)
    }

    /// |x|.
    pub fn abs(&self) -> Self {
        self.map(T::abs)
    }

    /// x + s.
    pub fn add_scalar(&self, s: T) -> Self {
        self.map(|x| x + s)
    }

    /// x - s.
    pub fn sub_scalar(&self, s: T) -> Self {
        self.map(|x| x - s)
    }

    /// x · s.
    pub fn mul_scalar(&self, s: T) -> Self {
        self.map(|x| x * s)
    }

    /// x / s.
    pub fn div_scalar(&self, s: T) -> Self {
        self.map(|x| x / s)
    }

    /// max(x, s); NaN if x is NaN.
    pub fn maximum_scalar(&self, s: T) -> Self {
        self.map(|x| max(x, s))
    }

    /// min(x, s); NaN if x is NaN.
    pub fn minimum_scalar(&self, s: T) -> Self {
        self.map(|x| min(x, s))
    }

    /// Clamps into `[lo, hi]`.
    pub fn clamp(&self, lo: T, hi: T) -> Self {
        self.map(|x| {
            if x < lo {
                lo
            } else if x > hi {
                hi
            } else {
                x
            }
        })
    }
}

/// max that propagates NaN, like `torch.maximum`.
#[inline]
fn max<T: Float>(a: T, b: T) -> T {
    if a.is_nan() || a > b {
        a
    } else {
        b
    }
}

/// min that propagates NaN, like `torch.minimum`.
#[inline]
fn min<T: Float>(a: T, b: T) -> T {
    if a.is_nan() || a < b {
        a
    } else {
        b
    }
}

// ---------------------------------------------------------------------------------------------
// Binary math with broadcasting
// ---------------------------------------------------------------------------------------------

impl<T: Float> Tensor<T> {
    /// a + b, broadcasting.
    #[track_caller]
    pub fn add(&self, other: &Self) -> Self {
        self.zip_map(other, "add", |a, b| a + b)
    }

    /// a - b, broadcasting.
    #[track_caller]
    pub fn sub(&self, other: &Self) -> Self {
        self.zip_map(other, "sub", |a, b| a - b)
    }

    /// a · b (elementwise), broadcasting.
    #[track_caller]
    pub fn mul(&self, other: &Self) -> Self {
        self.zip_map(other, "mul", |a, b| a * b)
    }

    /// a / b, broadcasting.
    #[track_caller]
    pub fn div(&self, other: &Self) -> Self {
        self.zip_map(other, "div", |a, b| a / b)
    }

    /// Elementwise maximum, broadcasting; NaN if either is NaN.
    #[track_caller]
    pub fn maximum(&self, other: &Self) -> Self {
        self.zip_map(
            other,
            "maximum",
            |a, b| if b.is_nan() { b } else { max(a, b) },
        )
    }

    /// Elementwise minimum, broadcasting; NaN if either is NaN.
    #[track_caller]
    pub fn minimum(&self, other: &Self) -> Self {
        self.zip_map(
            other,
            "minimum",
            |a, b| if b.is_nan() { b } else { min(a, b) },
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Comparisons: boolean masks, broadcasting
// ---------------------------------------------------------------------------------------------

macro_rules! comparisons {
    ($($name:ident, $scalar:ident, $op:tt, $doc:literal;)*) => {
        impl<T: Float> Tensor<T> {
            $(
                #[doc = concat!("The mask `a ", $doc, " b`, broadcasting.")]
                #[track_caller]
                pub fn $name(&self, other: &Self) -> Tensor<bool> {
                    self.zip_map(other, stringify!($name), |a, b| a $op b)
                }

                #[doc = concat!("The mask `x ", $doc, " s`.")]
                pub fn $scalar(&self, s: T) -> Tensor<bool> {
                    self.map_to(|x| x $op s)
                }
            )*
        }
    };
}

comparisons! {
    gt, gt_scalar, >, ">";
    ge, ge_scalar, >=, ">=";
    lt, lt_scalar, <, "<";
    le, le_scalar, <=, "<=";
    eq, eq_scalar, ==, "==";
    ne, ne_scalar, !=, "!=";
}

impl Tensor<bool> {
    /// Logical not.
    pub fn not(&self) -> Self {
        self.map_to(|x| !x)
    }
}

// ---------------------------------------------------------------------------------------------
// Operator overloading: `&a + &b`, `a * b`, `&a - 1.0`, `2.0 * &a`, `-&a`
// ---------------------------------------------------------------------------------------------

macro_rules! binary_operator {
    ($trait:ident, $method:ident, $scalar_method:ident) => {
        impl<T: Float> $trait<&Tensor<T>> for &Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: &Tensor<T>) -> Tensor<T> {
                Tensor::$method(self, rhs)
            }
        }
        impl<T: Float> $trait<Tensor<T>> for Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: Tensor<T>) -> Tensor<T> {
                Tensor::$method(&self, &rhs)
            }
        }
        impl<T: Float> $trait<&Tensor<T>> for Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: &Tensor<T>) -> Tensor<T> {
                Tensor::$method(&self, rhs)
            }
        }
        impl<T: Float> $trait<Tensor<T>> for &Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: Tensor<T>) -> Tensor<T> {
                Tensor::$method(self, &rhs)
            }
        }
        impl<T: Float> $trait<T> for &Tensor<T> {
            type Output = Tensor<T>;
            fn $method(self, rhs: T) -> Tensor<T> {
                self.$scalar_method(rhs)
            }
        }
        impl<T: Float> $trait<T> for Tensor<T> {
            type Output = Tensor<T>;
            fn $method(self, rhs: T) -> Tensor<T> {
                self.$scalar_method(rhs)
            }
        }
    };
}

binary_operator!(Add, add, add_scalar);
binary_operator!(Sub, sub, sub_scalar);
binary_operator!(Mul, mul, mul_scalar);
binary_operator!(Div, div, div_scalar);

/// `scalar op tensor` for the two concrete float types (a generic impl is not allowed).
macro_rules! scalar_lhs_operators {
    ($($t:ty),*) => {$(
        impl Add<&Tensor<$t>> for $t {
            type Output = Tensor<$t>;
            fn add(self, rhs: &Tensor<$t>) -> Tensor<$t> { rhs.map(|x| self + x) }
        }
        impl Sub<&Tensor<$t>> for $t {
            type Output = Tensor<$t>;
            fn sub(self, rhs: &Tensor<$t>) -> Tensor<$t> { rhs.map(|x| self - x) }
        }
        impl Mul<&Tensor<$t>> for $t {
            type Output = Tensor<$t>;
            fn mul(self, rhs: &Tensor<$t>) -> Tensor<$t> { rhs.map(|x| self * x) }
        }
        impl Div<&Tensor<$t>> for $t {
            type Output = Tensor<$t>;
            fn div(self, rhs: &Tensor<$t>) -> Tensor<$t> { rhs.map(|x| self / x) }
        }
        impl Add<Tensor<$t>> for $t {
            type Output = Tensor<$t>;
            fn add(self, rhs: Tensor<$t>) -> Tensor<$t> { self + &rhs }
        }
        impl Sub<Tensor<$t>> for $t {
            type Output = Tensor<$t>;
            fn sub(self, rhs: Tensor<$t>) -> Tensor<$t> { self - &rhs }
        }
        impl Mul<Tensor<$t>> for $t {
            type Output = Tensor<$t>;
            fn mul(self, rhs: Tensor<$t>) -> Tensor<$t> { self * &rhs }
        }
        impl Div<Tensor<$t>> for $t {
            type Output = Tensor<$t>;
            fn div(self, rhs: Tensor<$t>) -> Tensor<$t> { self / &rhs }
        }
    )*};
}

scalar_lhs_operators!(f32, f64);

impl<T: Float> Neg for &Tensor<T> {
    type Output = Tensor<T>;
    fn neg(self) -> Tensor<T> {
        Tensor::neg(self)
    }
}

impl<T: Float> Neg for Tensor<T> {
    type Output = Tensor<T>;
    fn neg(self) -> Tensor<T> {
        Tensor::neg(&self)
    }
}
