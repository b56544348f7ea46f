//! The ops, one file per family. Each op returns a new contiguous tensor.

pub mod elementwise;
pub mod matmul;
pub mod packed;
pub mod reduce;
pub mod softmax;
pub mod structure;

use rayon::prelude::*;

use crate::element::Element;
use crate::pool::Buffer;

/// Below this many elements of work an op runs on the calling thread: rayon's fork/join costs
/// microseconds (tens when its workers are asleep), more than a small op takes.
pub(crate) const PARALLEL_THRESHOLD: usize = 1 << 17;

/// Work per rayon task once an op is parallel. It depends only on the op's size, never on the
/// number of threads, so results are bit-identical whatever `RAYON_NUM_THREADS` is.
pub(crate) const CHUNK_WORK: usize = 1 << 13;

/// Builds a vector of `n` outputs, handing `fill_chunk(chunk, start)` consecutive pieces of it
/// (`start` is the index of the chunk's first element). `work_per_item` is how many input
/// elements one output reads; large jobs are split across rayon threads.
pub(crate) fn fill<U, F>(n: usize, work_per_item: usize, fill_chunk: F) -> Vec<U>
where
    U: Element,
    F: Fn(&mut [U], usize) + Sync,
{
    // Large outputs reuse a pooled buffer (see `pool`): zeroed, then overwritten.
    let mut out = Buffer::zeroed(n).into_vec();
    let work = n.saturating_mul(work_per_item.max(1));
    // One thread: the work stays here (handing it to rayon's one worker only adds a wake-up).
    if work < PARALLEL_THRESHOLD || n < 2 || rayon::current_num_threads() < 2 {
        fill_chunk(&mut out, 0);
    } else {
        let chunk = (CHUNK_WORK / work_per_item.max(1)).max(1);
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, piece)| fill_chunk(piece, i * chunk));
    }
    out
}
