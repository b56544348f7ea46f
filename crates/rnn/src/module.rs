//! What every model has: named parameters and a train/eval mode, and the thread-local random
//! generator that initialisation and dropout draw from (like `torch.manual_seed`).

use std::cell::RefCell;

use autograd::Param;
use tensor::{Float, Rng};

/// A model or a piece of one.
pub trait Module<T: Float> {
    /// Every parameter with its full PyTorch-style name (`weight_ih_l0`,
    /// `encoder.bias_hh_l1_reverse`), in `state_dict` order.
    fn named_params(&self) -> Vec<(String, Param<T>)>;

    /// Switches between training (dropout active) and evaluation. Default: nothing to switch.
    fn set_training(&self, _training: bool) {}

    /// The parameters, in order.
    fn params(&self) -> Vec<Param<T>> {
        self.named_params().into_iter().map(|(_, p)| p).collect()
    }

    /// Total number of parameter elements.
    fn num_params(&self) -> usize {
        self.named_params().iter().map(|(_, p)| p.numel()).sum()
    }
}

/// `child`'s named parameters with `prefix.` in front, for composite models:
///
/// ```
/// use rnn::{prefixed, Linear, Module};
/// use tensor::Rng;
/// let head = Linear::<f32>::new(4, 2, true, &mut Rng::seed_from_u64(0));
/// let names: Vec<String> = prefixed("head", &head).into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["head.weight", "head.bias"]);
/// ```
pub fn prefixed<T: Float>(
    prefix: &str,
    child: &dyn Module<T>,
) -> Vec<(String, autograd::Param<T>)> {
    child
        .named_params()
        .into_iter()
        .map(|(name, p)| (format!("{prefix}.{name}"), p))
        .collect()
}

thread_local! {
    static RNG: RefCell<Rng> = RefCell::new(Rng::seed_from_u64(0));
}

/// Reseeds this thread's generator (used by dropout), like `torch.manual_seed`.
pub fn manual_seed(seed: u64) {
    RNG.with(|r| *r.borrow_mut() = Rng::seed_from_u64(seed));
}

/// This thread's generator state, for checkpoints.
pub fn rng_state() -> [u64; 4] {
    RNG.with(|r| r.borrow().state())
}

/// Restores this thread's generator from [`rng_state`].
pub fn set_rng_state(state: [u64; 4]) {
    RNG.with(|r| *r.borrow_mut() = Rng::from_state(state));
}

/// Runs `f` with this thread's generator.
pub fn with_rng<R>(f: impl FnOnce(&mut Rng) -> R) -> R {
    RNG.with(|r| f(&mut r.borrow_mut()))
}

/// Runs `f` with this thread's generator at `state` (where it is now, if `None`), then puts
/// the caller's generator back, on panic too: a re-run draws what an earlier run drew and
/// leaves the caller's next draw as it was.
pub(crate) fn at_rng_state<R>(state: Option<[u64; 4]>, f: impl FnOnce() -> R) -> R {
    struct Restore([u64; 4]);
    impl Drop for Restore {
        fn drop(&mut self) {
            set_rng_state(self.0);
        }
    }
    let _restore = Restore(rng_state());
    if let Some(state) = state {
        set_rng_state(state);
    }
    f()
}
