//! The loops' entry points: each kernel's forward and backward loop, compiled for the widest
//! vector instructions the CPU has ([`with_simd`]; the loops are `#[inline(always)]`), the
//! forward with a [`StepHelper`] thread for the per-step products when one is free (the
//! backward's are set up in [`backward`](super::backward)).

use std::ops::Range;

use tensor::ops::packed::PackedMat;
use tensor::pool::Buffer;
use tensor::simd::{with_simd, SimdWork};
use tensor::Float;

use super::helper::with_step_helper;
use super::seq::{Acts, Forward, Rows, Saved, Seq};
use super::{gru, lstm, rnn, Kind};

/// The kernels' loops are `#[inline(always)]`, so `with_simd` compiles them for the widest
/// vector instructions the CPU has.
/// Each has a [`StepHelper`] thread for the per-step products when one is free.
pub(super) fn forward<T: Float>(kind: Kind, s: &Seq<'_, T>) -> Forward<T> {
    let rights: Vec<&PackedMat<T>> = [s.w_step, s.w_in].into_iter().flatten().collect();
    with_step_helper(&rights, s.batch, |helper| {
        forward_alone(kind, &Seq { helper, ..*s })
    })
}

/// A kernel's forward on the calling thread (and its helper, if `s` has one), into a buffer
/// of its own.
pub(super) fn forward_alone<T: Float>(kind: Kind, s: &Seq<'_, T>) -> Forward<T> {
    let mut out = Buffer::zeroed((s.steps + kind.parts()) * s.step(s.hidden)).into_vec();
    let saved = with_simd(ForwardWork(
        kind,
        s,
        &mut Rows::new(&mut out, s.batch, s.hidden),
    ));
    (out, saved)
}

/// The kernel, the sequence, and where its result goes.
pub(super) struct ForwardWork<'a, 'b, 'o, T: Float>(
    pub Kind,
    pub &'a Seq<'b, T>,
    pub &'a mut Rows<'o, T>,
);

impl<T: Float> SimdWork for ForwardWork<'_, '_, '_, T> {
    type Output = Saved<T>;
    #[inline(always)]
    fn run(self) -> Saved<T> {
        let ForwardWork(kind, s, out) = self;
        match kind {
            Kind::Rnn(nl) => rnn::forward(s, nl, out),
            Kind::Lstm => lstm::forward(s, out),
            Kind::Gru => gru::forward(s, out),
        }
    }
}

/// The kernel, the sequence, the activations, its packed result and that result's gradient,
/// the positions of the visiting order to run, the state's gradient carried through them, and
/// where their gate gradients go (one [`Rows`], two for the GRU).
pub(super) struct BackwardWork<'a, 'b, 'o, T: Float>(
    pub Kind,
    pub &'a Seq<'b, T>,
    pub &'a Acts<'a, T>,
    pub &'a [T],
    pub &'a [T],
    pub Range<usize>,
    pub &'a mut [Vec<T>],
    pub &'a mut [Rows<'o, T>],
);

impl<T: Float> SimdWork for BackwardWork<'_, '_, '_, T> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let BackwardWork(kind, s, acts, out, g, ks, d, dp) = self;
        match kind {
            Kind::Rnn(nl) => rnn::backward(s, nl, out, g, ks, d, &mut dp[0]),
            Kind::Lstm => lstm::backward(s, acts, g, ks, d, &mut dp[0]),
            Kind::Gru => gru::backward(s, acts, out, g, ks, d, dp),
        }
    }
}
