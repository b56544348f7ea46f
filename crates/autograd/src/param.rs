//! [`Param`]: a trainable tensor that outlives the tapes. Each training step builds a new
//! tape; a parameter enters it as a leaf the first time an op uses it, and `backward` adds
//! the gradient to the parameter's `grad`, where clipping and optimizers find it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tensor::{Float, Tensor};

struct ParamData<T: Float> {
    name: String,
    value: Tensor<T>,
    /// See [`Param::stamped_value`]: renewed with every change of `value`.
    stamp: u64,
    grad: Option<Tensor<T>>,
    requires_grad: bool,
}

/// A trainable tensor with a name and an accumulated gradient. Cloning gives another handle to
/// the same parameter (as a model and its optimizer both hold it).
///
/// ```
/// use autograd::{Param, Tape};
/// use tensor::Tensor;
///
/// let w = Param::new("w", Tensor::<f64>::from_vec(vec![2.0], &[1]));
/// for _ in 0..2 {
///     let tape = Tape::new();
///     let x = tape.constant(Tensor::from_vec(vec![3.0], &[1]));
///     let loss = (&x * &w).sum_all(); // d loss / dw = x = 3
///     loss.backward();
/// }
/// assert_eq!(w.grad().unwrap().to_vec(), vec![6.0]); // accumulated over two steps
/// w.zero_grad();
/// assert!(w.grad().is_none());
/// ```
pub struct Param<T: Float> {
    data: Arc<RwLock<ParamData<T>>>,
}

/// A stamp no value has had before (see [`Param::stamped_value`]).
fn new_stamp() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl<T: Float> Clone for Param<T> {
    fn clone(&self) -> Self {
        Param {
            data: self.data.clone(),
        }
    }
}

impl<T: Float> std::fmt::Debug for Param<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Param '{}' {}", self.name(), self.value())
    }
}

impl<T: Float> Param<T> {
    /// A parameter called `name` (PyTorch-style, e.g. `weight_ih_l0`) holding `value`.
    pub fn new(name: impl Into<String>, value: Tensor<T>) -> Self {
        Param {
            data: Arc::new(RwLock::new(ParamData {
                name: name.into(),
                value: value.contiguous(),
                stamp: new_stamp(),
                grad: None,
                requires_grad: true,
            })),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, ParamData<T>> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, ParamData<T>> {
        self.data.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The name.
    pub fn name(&self) -> String {
        self.read().name.clone()
    }

    /// Renames the parameter (models prefix their children's names: `encoder.weight_ih_l0`).
    pub fn set_name(&self, name: impl Into<String>) {
        self.write().name = name.into();
    }

    /// The current value (a cheap handle to the same storage).
    pub fn value(&self) -> Tensor<T> {
        self.read().value.clone()
    }

    /// The current value and its stamp: a number that changes whenever the value does (by
    /// [`set_value`](Self::set_value) or [`update`](Self::update)) and that no other value,
    /// of this parameter or any other, ever has. Something computed from the value (the
    /// recurrent layers' packed weights) can be kept and reused while the stamp is the same.
    ///
    /// ```
    /// use autograd::Param;
    /// use tensor::Tensor;
    ///
    /// let w = Param::new("w", Tensor::<f32>::from_vec(vec![1.0, 2.0], &[2]));
    /// let (_, before) = w.stamped_value();
    /// assert_eq!(w.stamped_value().1, before); // reading changes nothing
    /// w.update(|v| v[0] = 3.0);
    /// let (value, after) = w.stamped_value();
    /// assert_ne!(after, before);
    /// assert_eq!(value.to_vec(), vec![3.0, 2.0]);
    /// ```
    pub fn stamped_value(&self) -> (Tensor<T>, u64) {
        let d = self.read();
        (d.value.clone(), d.stamp)
    }

    /// The value's shape.
    pub fn shape(&self) -> Vec<usize> {
        self.read().value.shape().to_vec()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.read().value.numel()
    }

    /// Replaces the value.
    ///
    /// # Panics
    /// If the new value's shape differs.
    #[track_caller]
    pub fn set_value(&self, value: Tensor<T>) {
        let mut d = self.write();
        if value.shape() != d.value.shape() {
            panic!(
                "set_value: parameter '{}' has shape {:?}, the new value has shape {:?}",
                d.name,
                d.value.shape(),
                value.shape()
            );
        }
        d.value = value.contiguous();
        d.stamp = new_stamp();
    }

    /// Changes the value in place (copy-on-write if a tape still holds the old value).
    pub fn update(&self, f: impl FnOnce(&mut [T])) {
        let mut d = self.write();
        d.stamp = new_stamp();
        f(d.value.as_mut_slice());
    }

    /// The accumulated gradient, `None` until a `backward` reaches this parameter (or after
    /// [`zero_grad`](Self::zero_grad)).
    pub fn grad(&self) -> Option<Tensor<T>> {
        self.read().grad.clone()
    }

    /// Replaces the gradient (clipping uses this).
    ///
    /// # Panics
    /// If the gradient's shape is not the parameter's (as PyTorch refuses to assign it).
    #[track_caller]
    pub fn set_grad(&self, grad: Option<Tensor<T>>) {
        let mut d = self.write();
        if let Some(g) = &grad {
            if g.shape() != d.value.shape() {
                let (name, shape) = (d.name.clone(), d.value.shape().to_vec());
                drop(d);
                panic!(
                    "set_grad: parameter '{name}' has shape {shape:?}, the gradient has shape \
                     {:?}",
                    g.shape()
                );
            }
        }
        d.grad = grad;
    }

    /// Forgets the gradient (PyTorch's `zero_grad(set_to_none=True)`).
    pub fn zero_grad(&self) {
        self.write().grad = None;
    }

    /// Whether tapes record this parameter (freezing it makes it a constant).
    pub fn requires_grad(&self) -> bool {
        self.read().requires_grad
    }

    /// Freezes (`false`) or unfreezes the parameter.
    pub fn set_requires_grad(&self, on: bool) {
        self.write().requires_grad = on;
    }

    /// `true` if both handles are the same parameter.
    pub fn same(&self, other: &Param<T>) -> bool {
        Arc::ptr_eq(&self.data, &other.data)
    }

    pub(crate) fn key(&self) -> usize {
        Arc::as_ptr(&self.data) as usize
    }

    pub(crate) fn accumulate_grad(&self, g: &Tensor<T>) {
        let mut d = self.write();
        d.grad = Some(match d.grad.take() {
            Some(acc) => &acc + g,
            None => g.clone(),
        });
    }
}
