//! The kernels' big arrays, reused from one call to the next.
//!
//! A training step of a large layer makes a few arrays of `[T·B, G·H]` values: the input
//! projection, the activations kept for the backward, the gate gradients. On the large LSTM,
//! [64, 200, 256, 512] in f32, each is 105 MB. glibc maps every allocation above 32 MB
//! afresh and unmaps it when it is freed, so each call pays a page fault per 4 KB it touches
//! (about 25 000 per array), on the thread that runs the recurrent loop. Measured on one
//! thread, with glibc told to keep such memory (`GLIBC_TUNABLES=glibc.malloc.mmap_threshold=
//! 4294967296:glibc.malloc.trim_threshold=4294967296`, which only helps the main thread):
//! LSTM large training step 692 → 548 ms, GRU 573 → 426, RNN 191 → 153.
//!
//! So the kernels take these arrays as [`Scratch`] buffers: a dropped one goes back to a
//! small pool, and the next request of between half its size and its size takes it again,
//! zeroed (a memset
//! is far cheaper than the faults). The pool keeps at most [`MAX_KEPT`] buffers and
//! [`MAX_KEPT_BYTES`] in all, dropping the oldest beyond that; [`release_buffers`] empties it.
//! Buffers under [`MIN_BYTES`] are left to the allocator, which reuses them well.

use std::any::Any;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use tensor::Float;

/// Smaller buffers are not pooled.
pub const MIN_BYTES: usize = 1 << 20;
/// At most this many buffers are kept (a 2-layer bidirectional LSTM step uses 12)...
pub const MAX_KEPT: usize = 16;
/// ...and at most this many bytes.
pub const MAX_KEPT_BYTES: usize = 1 << 30;

/// The process-wide pool the kernels' [`Scratch`] buffers come from and go back to.
static POOL: Mutex<Pool> = Mutex::new(Pool::new());

/// Frees the buffers the fused kernels keep for their next call (at most 1 GiB, usually a few
/// arrays of `[seq_len · batch, gates · hidden]` values), for a program that is done with
/// training and wants the memory back. The next call allocates afresh.
///
/// ```
/// rnn::release_buffers();
/// ```
pub fn release_buffers() {
    pool().clear();
}

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    // A panic while the lock is held cannot leave the list inconsistent (every change is one
    // push or remove), so a poisoned lock is still usable.
    POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A zeroed `Vec<T>` that goes back to the pool when dropped.
pub(crate) struct Scratch<T: Float>(Vec<T>);

impl<T: Float> Scratch<T> {
    /// `len` zeros, in a pooled buffer if one is large enough.
    pub fn zeroed(len: usize) -> Self {
        let reused = match len * size_of::<T>() >= MIN_BYTES {
            true => pool().take::<T>(len),
            false => None,
        };
        Scratch(match reused {
            Some(mut v) => {
                v.clear();
                v.resize(len, T::ZERO);
                v
            }
            None => vec![T::ZERO; len],
        })
    }
}

impl<T: Float> Drop for Scratch<T> {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() * size_of::<T>() >= MIN_BYTES {
            pool().give(v);
        }
    }
}

impl<T: Float> Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: Float> DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

/// Free buffers, oldest first, each a `Vec<T>` of some float type, with its size in bytes.
struct Pool {
    free: Vec<(usize, Box<dyn Any + Send>)>,
}

impl Pool {
    const fn new() -> Self {
        Pool { free: Vec::new() }
    }

    /// The smallest kept `Vec<T>` with room for `len` values and not more than twice that.
    fn take<T: Float>(&mut self, len: usize) -> Option<Vec<T>> {
        let capacity = |b: &Box<dyn Any + Send>| b.downcast_ref::<Vec<T>>().map(Vec::capacity);
        let (at, _) = self
            .free
            .iter()
            .enumerate()
            .filter_map(|(i, (_, b))| {
                capacity(b)
                    .filter(|&c| c >= len && c / 2 <= len)
                    .map(|c| (i, c))
            })
            .min_by_key(|&(_, c)| c)?;
        let (_, b) = self.free.remove(at);
        b.downcast::<Vec<T>>().ok().map(|v| *v)
    }

    /// Keeps `v`, then drops the oldest buffers while over either limit.
    fn give<T: Float>(&mut self, v: Vec<T>) {
        self.free.push((v.capacity() * size_of::<T>(), Box::new(v)));
        while self.free.len() > MAX_KEPT || self.bytes() > MAX_KEPT_BYTES {
            self.free.remove(0);
        }
    }

    fn bytes(&self) -> usize {
        self.free.iter().map(|(bytes, _)| bytes).sum()
    }

    fn clear(&mut self) {
        self.free.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: usize = MIN_BYTES / 4 + 3; // f32 values: just over MIN_BYTES

    #[test]
    fn a_given_buffer_is_taken_again_by_a_request_it_fits() {
        let mut pool = Pool::new();
        let v = vec![1.0f32; BIG];
        let at = v.as_ptr();
        pool.give(v);
        assert!(
            pool.take::<f64>(10).is_none(),
            "an f32 buffer is no f64 buffer"
        );
        assert!(pool.take::<f32>(BIG + 1).is_none(), "too small");
        assert!(pool.take::<f32>(BIG / 2 - 1).is_none(), "too big");
        let again = pool.take::<f32>(BIG - 100).expect("reused");
        assert_eq!(again.as_ptr(), at);
        assert!(pool.take::<f32>(1).is_none(), "taken once only");
    }

    #[test]
    fn the_smallest_fitting_buffer_is_taken() {
        let mut pool = Pool::new();
        for len in [3 * BIG, BIG, 2 * BIG] {
            pool.give(vec![0.0f32; len]);
        }
        let v = pool.take::<f32>(BIG + 1).expect("fits");
        assert_eq!(v.capacity(), 2 * BIG);
    }

    #[test]
    fn the_pool_drops_its_oldest_buffers_beyond_its_limits() {
        let mut pool = Pool::new();
        let first = vec![0.0f32; BIG];
        let first_at = first.as_ptr();
        pool.give(first);
        for _ in 0..MAX_KEPT {
            pool.give(vec![0.0f32; BIG]);
        }
        assert_eq!(pool.free.len(), MAX_KEPT);
        while let Some(v) = pool.take::<f32>(BIG) {
            assert_ne!(v.as_ptr(), first_at, "the oldest was dropped");
        }
        let huge = MAX_KEPT_BYTES / 8 * 5; // f64 values: 5/8 of the byte limit each
        pool.give(vec![0.0f64; huge / 8]);
        pool.give(vec![0.0f64; huge / 8]);
        assert_eq!(pool.free.len(), 1);
        assert!(pool.bytes() <= MAX_KEPT_BYTES);
        pool.clear();
        assert_eq!(pool.bytes(), 0);
    }

    /// Through the process-wide pool: a dirtied buffer comes back as zeros, at any length.
    #[test]
    fn scratch_buffers_come_back_zeroed() {
        for len in [BIG, BIG / 2, 7] {
            let mut s = Scratch::<f32>::zeroed(len);
            s.fill(5.0);
            drop(s);
            let s = Scratch::<f32>::zeroed(len);
            assert_eq!(s.len(), len);
            assert!(s.iter().all(|&x| x == 0.0));
        }
        release_buffers(); // other tests may use the pool at the same time: no count to check
    }
}
