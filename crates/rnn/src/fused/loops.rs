//! The loops' entry points: each kernel's forward and backward loop, compiled for the widest
//! vector instructions the CPU has ([`with_simd`]; the loops are `#[inline(always)]`), with a
//! [`StepHelper`] thread for the per-step products when one is free.

use tensor::ops::packed::PackedMat;
use tensor::pool::Buffer;
use tensor::simd::{with_simd, SimdWork};
use tensor::Float;

use super::helper::with_step_helper;
use super::seq::{Forward, LoopGrads, Rows, Saved, Seq};
use super::split::backward_by_rows;
use super::{gru, lstm, rnn, Kind};

/// The kernels' loops are `#[inline(always)]`, so `with_simd` compiles them for the widest
/// vector instructions the CPU has.
/// Each has a [`StepHelper`] thread for the per-step products when one is free.
pub(super) fn forward<T: Float>(kind: Kind, s: &Seq<'_, T>) -> Forward<T> {
    let rights: Vec<&PackedMat<T>> = [Some(s.w_step), s.w_in].into_iter().flatten().collect();
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

/// Buffers `[T, B, G·H]` for a backward's gate gradients: of the input projection's
/// pre-activations, and for the GRU, whose hidden projection's differ, of those as well. Not
/// zeroed: the backward loops write every row of every step (zeros past a sequence's end).
pub(super) fn gate_grad_buffers<T: Float>(kind: Kind, s: &Seq<'_, T>) -> Vec<Buffer<T>> {
    let count = if kind == Kind::Gru { 2 } else { 1 };
    let len = s.steps * s.step(kind.gates() * s.hidden);
    (0..count).map(|_| Buffer::for_overwrite(len)).collect()
}

/// The gate gradients from [`gate_grad_buffers`], filled, and the initial state's.
pub(super) fn loop_grads<T: Float>(dps: Vec<Buffer<T>>, d_init: Vec<Vec<T>>) -> LoopGrads<T> {
    let mut dps = dps.into_iter();
    LoopGrads {
        dp_x: dps.next().expect("one at least"),
        dp_h: dps.next(),
        d_init,
    }
}

pub(super) fn backward_loop<T: Float>(
    kind: Kind,
    s: &Seq<'_, T>,
    saved: &Saved<T>,
    out: &[T],
    g: &[T],
) -> LoopGrads<T> {
    let w_hh = s.pack_w_hh(kind.gates());
    let (width, mut dps) = (kind.gates() * s.hidden, gate_grad_buffers(kind, s));
    let d_init = match &saved.halves {
        Some(h) => backward_by_rows(kind, s, h, out, g, &w_hh, &mut dps),
        None => {
            let mut rows: Vec<Rows<'_, T>> = (dps.iter_mut())
                .map(|dp| Rows::new(dp, s.batch, width))
                .collect();
            with_step_helper(&[&w_hh], s.batch, |helper| {
                let s = Seq {
                    helper,
                    w_hh_packed: Some(&w_hh),
                    ..*s
                };
                with_simd(BackwardWork(kind, &s, saved, out, g, &mut rows))
            })
        }
    };
    loop_grads(dps, d_init)
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

/// The kernel, the sequence, what the forward kept, its packed result, the gradient of that
/// result, and where the gate gradients go (see [`gate_grad_buffers`]).
pub(super) struct BackwardWork<'a, 'b, 'o, T: Float>(
    pub Kind,
    pub &'a Seq<'b, T>,
    pub &'a Saved<T>,
    pub &'a [T],
    pub &'a [T],
    pub &'a mut [Rows<'o, T>],
);

impl<T: Float> SimdWork for BackwardWork<'_, '_, '_, T> {
    /// The gradients of the initial state's parts.
    type Output = Vec<Vec<T>>;
    #[inline(always)]
    fn run(self) -> Vec<Vec<T>> {
        let BackwardWork(kind, s, saved, out, g, dp) = self;
        match kind {
            Kind::Rnn(nl) => rnn::backward(s, nl, out, g, &mut dp[0]),
            Kind::Lstm => lstm::backward(s, saved, g, &mut dp[0]),
            Kind::Gru => gru::backward(s, saved, out, g, dp),
        }
    }
}
