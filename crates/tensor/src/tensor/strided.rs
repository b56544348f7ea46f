//! [`StridedIter`]: the storage offsets of a strided view, in row-major order of its shape.
//!
//! It counts its multi-index up like an odometer (the last dimension fastest) and moves the
//! offset by one stride per step, so a step costs an add or two rather than an index
//! computation. It can start at any element, which is how work on a non-contiguous tensor is
//! split into pieces: each piece starts its own iterator at its first element, and the
//! offsets it yields are the same whatever the split.

use crate::shape::numel;

/// Storage offsets of a strided view, in row-major order of its shape, starting at the
/// `start`-th element. The building block of every op that reads a non-contiguous tensor.
pub(crate) struct StridedIter<'a> {
    shape: &'a [usize],
    strides: &'a [usize],
    index: Vec<usize>,
    offset: usize,
    remaining: usize,
}

impl<'a> StridedIter<'a> {
    pub(crate) fn new(shape: &'a [usize], strides: &'a [usize], base: usize, start: usize) -> Self {
        let total = numel(shape);
        let mut index = vec![0; shape.len()];
        let mut offset = base;
        let mut rest = start.min(total);
        for d in (0..shape.len()).rev() {
            if shape[d] > 0 {
                index[d] = rest % shape[d];
                rest /= shape[d];
                offset += index[d] * strides[d];
            }
        }
        StridedIter {
            shape,
            strides,
            index,
            offset,
            remaining: total - start.min(total),
        }
    }
}

impl Iterator for StridedIter<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let current = self.offset;
        // Odometer increment: bump the last index, carry into earlier dims.
        for d in (0..self.shape.len()).rev() {
            self.index[d] += 1;
            self.offset += self.strides[d];
            if self.index[d] < self.shape[d] {
                break;
            }
            self.offset -= self.strides[d] * self.shape[d];
            self.index[d] = 0;
        }
        Some(current)
    }
}
