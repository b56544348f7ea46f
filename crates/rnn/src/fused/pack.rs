//! The weights packed for the per-step products ([`PackedMat`]), and a layer's cache of them
//! for inference, which reuses them while the weights are unchanged.

use std::sync::{Arc, Mutex};

use tensor::ops::matmul::MatRef;
use tensor::ops::packed::PackedMat;
use tensor::{Float, Tensor};

use super::{slice, Kind};

/// A layer's packed weights for its inference forward, kept and reused while the weights are
/// unchanged (the stamps of `W_ih` and `W_hh` are the same; see [`Param::stamped_value`]).
/// Training packs on every call: each step changes the weights.
#[derive(Default)]
pub(crate) struct PackCache<T: Float>(Mutex<Option<Packs<T>>>);

/// One direction's packed right sides (see [`Inputs`]) and the stamps of the weights they
/// were packed from.
#[derive(Clone)]
pub(super) struct Packs<T: Float> {
    pub stamps: [u64; 2],
    pub w_step: Arc<PackedMat<T>>,
    pub w_in: Option<Arc<PackedMat<T>>>,
}

impl<T: Float> PackCache<T> {
    /// The packs kept for weights with `stamps`, or new ones from `pack`, then kept.
    pub(super) fn get_or_pack(
        &self,
        stamps: [u64; 2],
        pack: impl FnOnce() -> Packs<T>,
    ) -> Packs<T> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &*kept {
            Some(packs) if packs.stamps == stamps => packs.clone(),
            _ => kept.insert(pack()).clone(),
        }
    }
}

/// The forward's per-step right side, packed: `[W_ih | W_hh]ᵀ` (`[I + H, G·H]`) for LSTM and
/// RNN, `W_hhᵀ` for GRU (whose inference packs `W_ihᵀ` apart, for [`Seq::input_product`]).
pub(super) fn pack_step_weights<T: Float>(
    kind: Kind,
    w_ih: &Tensor<T>,
    w_hh: &Tensor<T>,
) -> PackedMat<T> {
    let [rows, hidden] = <[usize; 2]>::try_from(w_hh.shape()).expect("2-D weight");
    if kind == Kind::Gru {
        return pack_t(slice(w_hh), rows, hidden);
    }
    let input = w_ih.shape()[1];
    PackedMat::pack_stacked(&[
        MatRef::new(slice(w_ih), rows, input).t(),
        MatRef::new(slice(w_hh), rows, hidden).t(),
    ])
}

/// The transpose of the row-major `rows × cols` matrix `w`, packed for [`gemm_packed`].
pub(super) fn pack_t<T: Float>(w: &[T], rows: usize, cols: usize) -> PackedMat<T> {
    PackedMat::pack(MatRef::new(w, rows, cols).t())
}
