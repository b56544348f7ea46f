//! Big buffers, reused from one use to the next: tensors' storage and kernels' scratch arrays.
//!
//! A training step of a large recurrent layer makes a few arrays of `[T·B, G·H]` values (the
//! input projection, the activations kept for the backward, the gate gradients; 105 MB each
//! on the large LSTM, [64, 200, 256, 512] in f32), and every step makes tensors of
//! `[T, B, H]`: outputs, their gradients, concatenated directions. glibc maps every allocation
//! above 32 MB afresh and unmaps it when it is freed, and gives the top of its heap back to
//! the kernel when enough of it is free, so each call pays a page fault per 4 KB it touches
//! again (letting glibc keep that memory took the large LSTM's training step, one thread,
//! from 692 to 548 ms).
//!
//! So a [`Buffer`] (what a [`Tensor`](crate::Tensor) keeps its elements in, and what the
//! fused kernels take their arrays as) goes back to a small pool when dropped, and the next
//! request of between half its size and its size takes it again ([`Buffer::zeroed`] zeroes
//! it: a memset is far cheaper than the faults). The pool keeps at most [`MAX_KEPT`] buffers
//! and [`MAX_KEPT_BYTES`] in all, dropping the oldest beyond that; [`release_buffers`]
//! empties it. Buffers under [`MIN_BYTES`] are left to the allocator, which reuses them well.
//!
//! Why down to 64 KB: the small configurations' arrays are 100–800 KB (a training step of the
//! LSTM at [16, 50, 32, 64] makes a dozen), and whether glibc kept or returned them depended
//! on where the heap happened to lie: the same binary, started from paths of different
//! lengths, ran those steps fast or at nearly half speed. Pooled from 64 KB, they run fast from
//! either path.

use std::any::Any;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use crate::element::Element;

/// Smaller buffers are not pooled.
pub const MIN_BYTES: usize = 1 << 16;
/// At most this many buffers are kept (a training step of the large LSTM frees about 40 of
/// 1 MB or more, one of the 2-layer bidirectional LSTM on `medium` more than 64, and every
/// step frees some of 64 KB to 1 MB as well)...
pub const MAX_KEPT: usize = 256;
/// ...and at most this many bytes.
pub const MAX_KEPT_BYTES: usize = 1 << 30;

/// The process-wide pool [`Buffer`]s come from and go back to.
static POOL: Mutex<Pool> = Mutex::new(Pool::new());

/// Frees the buffers kept for reuse (at most 1 GiB, usually a few arrays of
/// `[seq_len · batch, gates · hidden]` values), for a program that is done with training and
/// wants the memory back. The next request allocates afresh.
///
/// ```
/// tensor::pool::release_buffers();
/// ```
pub fn release_buffers() {
    pool().clear();
}

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    fix_mmap_threshold();
    // A panic while the lock is held cannot leave the list inconsistent (every change is one
    // push or remove), so a poisoned lock is still usable.
    POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// glibc's allocator serves requests above this many bytes from fresh mappings
/// ([`fix_mmap_threshold`]).
pub const MMAP_THRESHOLD: usize = 512 << 10;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD`] (its default starts at 128 KB and
/// rises to the size of each mapped block freed, up to 32 MB), once per process, before the
/// first pooled buffer; whether it did (not on other allocators, nor where the environment
/// already sets `MALLOC_MMAP_THRESHOLD_`, which glibc then honours instead).
///
/// Why: a composed recurrent layer keeps a few tensors of 128–512 KB per step, and every
/// product frees a packing buffer of about a megabyte that `matrixmultiply` allocates per
/// call. Once such a block has been freed, glibc's rising threshold puts the next ones on the
/// heap, where each step's kept tensors fill the hole the last packing buffer left and the
/// next one extends the heap: the LSTM's composed training step at [64, 200, 256, 512] kept
/// 187 MB in use in a heap of 380 MB (peak RSS growth 416 MB, 0.93× PyTorch's). With the
/// threshold fixed, blocks above it are mapped and unmapped whole and leave no holes: 261 MB
/// (0.58×), at the same speed (measured in `docs/performance.md`). Pooled buffers are reused,
/// not unmapped, so the mappings cost little.
pub fn fix_mmap_threshold() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *DONE.get_or_init(|| {
            if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
                return false;
            }
            extern "C" {
                fn mallopt(param: i32, value: i32) -> i32;
            }
            const M_MMAP_THRESHOLD: i32 = -3;
            // SAFETY: `mallopt` is glibc's setter for its allocator's parameters (malloc.h),
            // safe to call from any thread at any time (it takes the arena's lock); with
            // M_MMAP_THRESHOLD it takes a size in bytes up to 32 MB (512 KB here) and changes
            // only where later allocations come from: no existing block moves or is freed.
            // Exercised by the test `the_mmap_threshold_is_fixed_once` below.
            unsafe { mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD as i32) == 1 }
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// A `Vec<T>` that goes back to the pool when dropped, if it is large.
#[derive(Debug)]
pub struct Buffer<T: Element>(Vec<T>);

impl<T: Element> Buffer<T> {
    /// `len` zeros (`T::default()`), in a pooled buffer if one fits.
    ///
    /// ```
    /// let b = tensor::pool::Buffer::<f32>::zeroed(3);
    /// assert_eq!(&b[..], &[0.0, 0.0, 0.0]);
    /// ```
    pub fn zeroed(len: usize) -> Self {
        Buffer(match Self::reuse(len) {
            Some(mut v) => {
                v.resize(len, T::default());
                v
            }
            // `vec!` of zeros: the allocator may hand out pages that are zero already.
            None => vec![T::default(); len],
        })
    }

    /// `len` values that the caller will overwrite, every one, before reading any: a pooled
    /// buffer keeps what it held (stale values of its last use, up to its old length, zeros
    /// after), a new one is zeros. Nothing is written to hand it out where the pooled buffer
    /// was long enough, which saves [`zeroed`](Self::zeroed)'s memset: 800 KB for the small
    /// LSTM's gate gradients, about 2% of its training step.
    ///
    /// ```
    /// let mut b = tensor::pool::Buffer::<f32>::for_overwrite(3);
    /// assert_eq!(b.len(), 3);
    /// b.copy_from_slice(&[1.0, 2.0, 3.0]); // the contents are unspecified until written
    /// ```
    pub fn for_overwrite(len: usize) -> Self {
        Buffer(match Self::pooled(len) {
            Some(v) => set_len_keeping(v, len),
            None => vec![T::default(); len],
        })
    }

    /// An empty buffer with room for `len` values, pooled if one fits: for filling by
    /// `extend`, with nothing zeroed first.
    pub fn with_capacity(len: usize) -> Self {
        Buffer(Self::reuse(len).unwrap_or_else(|| Vec::with_capacity(len)))
    }

    /// A pooled buffer with room for `len` values, emptied, if `len` is large enough to pool
    /// and one fits.
    fn reuse(len: usize) -> Option<Vec<T>> {
        let mut v = Self::pooled(len)?;
        v.clear();
        Some(v)
    }

    /// A pooled buffer with room for `len` values, as it was given back, if `len` is large
    /// enough to pool and one fits.
    fn pooled(len: usize) -> Option<Vec<T>> {
        match len * size_of::<T>() >= MIN_BYTES {
            true => pool().take::<T>(len),
            false => None,
        }
    }

    /// The values as a plain `Vec`, which then no longer goes back to the pool.
    pub fn into_vec(mut self) -> Vec<T> {
        std::mem::take(&mut self.0)
    }
}

impl<T: Element> From<Vec<T>> for Buffer<T> {
    /// Adopts `v`: it goes to the pool when the buffer is dropped.
    fn from(v: Vec<T>) -> Self {
        Buffer(v)
    }
}

impl<T: Element> Clone for Buffer<T> {
    fn clone(&self) -> Self {
        let mut copy = Self::with_capacity(self.0.len());
        copy.0.extend_from_slice(&self.0);
        copy
    }
}

impl<T: Element> Drop for Buffer<T> {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() * size_of::<T>() >= MIN_BYTES {
            pool().give(v);
        }
    }
}

impl<T: Element> Deref for Buffer<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

impl<T: Element> DerefMut for Buffer<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.0
    }
}

/// `v` at length `len` (within its capacity), its values kept: shortening writes nothing,
/// lengthening writes zeros past the old end only.
fn set_len_keeping<T: Element>(mut v: Vec<T>, len: usize) -> Vec<T> {
    v.truncate(len);
    v.resize(len, T::default());
    v
}

/// Free buffers, oldest first, each a `Vec<T>` of some element type, with its size in bytes.
struct Pool {
    free: Vec<(usize, Box<dyn Any + Send>)>,
}

impl Pool {
    const fn new() -> Self {
        Pool { free: Vec::new() }
    }

    /// The smallest kept `Vec<T>` with room for `len` values and not more than twice that.
    fn take<T: Element>(&mut self, len: usize) -> Option<Vec<T>> {
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
    fn give<T: Element>(&mut self, v: Vec<T>) {
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

    /// On glibc (the CI machines), unless the environment sets the threshold itself, the
    /// first pooled buffer fixes it, and asking again changes nothing.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn the_mmap_threshold_is_fixed_once() {
        let _ = Buffer::<f32>::zeroed(BIG);
        let expected = std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none();
        assert_eq!(fix_mmap_threshold(), expected);
        assert_eq!(fix_mmap_threshold(), expected);
        // Allocation goes on as before, above and below the threshold.
        let big = vec![1u8; 2 * MMAP_THRESHOLD];
        let small = vec![2u8; MMAP_THRESHOLD / 4];
        assert_eq!((big[MMAP_THRESHOLD], small[7]), (1, 2));
    }

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
    fn buffers_come_back_zeroed() {
        for len in [BIG, BIG / 2, 7] {
            let mut s = Buffer::<f32>::zeroed(len);
            s.fill(5.0);
            drop(s);
            let s = Buffer::<f32>::zeroed(len);
            assert_eq!(s.len(), len);
            assert!(s.iter().all(|&x| x == 0.0));
        }
        release_buffers(); // other tests may use the pool at the same time: no count to check
    }

    /// `for_overwrite` hands out `len` values at any length; a pooled buffer comes back in
    /// place with its old values where it was long enough (nothing rewritten) and zeros past
    /// its old end.
    #[test]
    fn for_overwrite_keeps_a_pooled_buffer_unwritten() {
        for len in [BIG, BIG / 2 + 1, 7] {
            let mut s = Buffer::<f64>::for_overwrite(len);
            assert_eq!(s.len(), len);
            s.fill(5.0); // all of it writable
        }
        let mut pool = Pool::new();
        pool.give(vec![5.0f32; BIG]);
        let v = pool.take::<f32>(BIG / 2 + 1).expect("fits");
        let at = v.as_ptr();
        let shorter = set_len_keeping(v, BIG / 2 + 1);
        assert_eq!((shorter.as_ptr(), shorter.len()), (at, BIG / 2 + 1));
        assert!(shorter.iter().all(|&x| x == 5.0), "nothing rewritten");
        let longer = set_len_keeping(shorter, BIG);
        assert_eq!((longer.as_ptr(), longer.len()), (at, BIG));
        assert!(longer[..BIG / 2 + 1].iter().all(|&x| x == 5.0));
        assert!(
            longer[BIG / 2 + 1..].iter().all(|&x| x == 0.0),
            "zeros past the old end"
        );
        release_buffers();
    }

    /// A clone is a copy (in a buffer of its own); `into_vec` keeps the values.
    #[test]
    fn clone_copies_and_into_vec_keeps() {
        let a = Buffer::from(vec![1.5f64; BIG / 2]);
        let b = a.clone();
        assert_ne!(a.as_ptr(), b.as_ptr());
        assert_eq!(*a, *b);
        assert_eq!(b.into_vec(), vec![1.5f64; BIG / 2]);
    }
}
