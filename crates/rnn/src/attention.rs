//! Attention over a sequence of encoder outputs, with padding masks: additive (Bahdanau et al.
//! 2015, "Neural Machine Translation by Jointly Learning to Align and Translate") and
//! dot-product (Luong et al. 2015, "Effective Approaches to Attention-based Neural Machine
//! Translation"; scaled as in Vaswani et al. 2017).
//!
//! A decoder at step t has a query `q` (`[B, Q]`, its state) and attends over the encoder's
//! keys `k_j` and values `v_j` (`[B, S, K]`, `[B, S, V]`; in a seq2seq model both are the
//! encoder's outputs):
//!
//! ```text
//! additive:  e_j = vᵀ tanh(W q + U k_j + b)          dot:      e_j = q · k_j
//!                                                     general:  e_j = (W q) · k_j
//!                                                     scaled:   e_j / √K
//! α = softmax_j(e_j) over the valid j  (padding: e_j = −∞, so α_j = 0 exactly)
//! context = Σ_j α_j v_j                                  [B, V]
//! ```
//!
//! Everything is composed of tape ops, so gradients need no rule of their own (and are
//! gradient-checked in the tests). `U k_j + b` does not depend on the query: compute it once
//! per batch with [`AdditiveAttention::project_keys`] and pass it to
//! [`AdditiveAttention::attend`] at every decoder step.

use autograd::{Param, Var};
use tensor::{Float, Rng, Tensor};

use crate::linear::Linear;
use crate::module::{prefixed, Module};

/// What an attention step gives: the context and the weights it was made with.
pub struct Attended<T: Float> {
    /// `Σ_j α_j v_j`, `[B, V]`.
    pub context: Var<T>,
    /// `α`, `[B, S]`: each row sums to 1 over its valid positions and is 0 at padding.
    pub weights: Var<T>,
}

/// The `[B, S]` mask of valid positions of a padded batch: `true` at `j < lengths[b]`.
///
/// # Panics
/// If a length is 0 (a row with nothing to attend to) or longer than `seq`.
#[track_caller]
pub fn padding_mask(lengths: &[usize], seq: usize) -> Tensor<bool> {
    if let Some(bad) = lengths.iter().find(|&&l| l == 0 || l > seq) {
        panic!("padding_mask: length {bad} is not in 1..={seq}");
    }
    let valid = lengths
        .iter()
        .flat_map(|&l| (0..seq).map(move |j| j < l))
        .collect();
    Tensor::from_vec(valid, &[lengths.len(), seq])
}

/// Additive (Bahdanau) attention: `e_j = vᵀ tanh(W q + U k_j + b)`, with `W` `[A, Q]`, `U`
/// `[A, K]`, `b` `[A]` and `v` `[1, A]` (parameters `w.weight`, `u.weight`, `u.bias`,
/// `v.weight`).
pub struct AdditiveAttention<T: Float> {
    /// `W`: the query's projection (no bias).
    pub w: Linear<T>,
    /// `U` and `b`: the keys' projection.
    pub u: Linear<T>,
    /// `v`: from the `A` features to a score (no bias).
    pub v: Linear<T>,
}

impl<T: Float> AdditiveAttention<T> {
    /// Attention for queries of `query_size` over keys of `key_size`, through
    /// `attention_size` features, initialised as `nn.Linear`.
    pub fn new(query_size: usize, key_size: usize, attention_size: usize, rng: &mut Rng) -> Self {
        AdditiveAttention {
            w: Linear::new(query_size, attention_size, false, rng),
            u: Linear::new(key_size, attention_size, true, rng),
            v: Linear::new(attention_size, 1, false, rng),
        }
    }

    /// `U k_j + b` for every key: `[B, S, K]` → `[B, S, A]`. Once per batch.
    #[track_caller]
    pub fn project_keys(&self, keys: &Var<T>) -> Var<T> {
        self.u.forward(keys)
    }

    /// One step: `query` `[B, Q]`, `projected_keys` from [`project_keys`](Self::project_keys),
    /// `values` `[B, S, V]`, and the valid positions (`[B, S]`, see [`padding_mask`]).
    ///
    /// # Panics
    /// If the shapes do not fit together.
    #[track_caller]
    pub fn attend(
        &self,
        query: &Var<T>,
        projected_keys: &Var<T>,
        values: &Var<T>,
        mask: Option<&Tensor<bool>>,
    ) -> Attended<T> {
        let (b, s) = batch_and_seq("AdditiveAttention", query, projected_keys, values, mask);
        let q = self.w.forward(query).unsqueeze(1); // [B, 1, A]
        let energy = (projected_keys + &q).tanh(); // [B, S, A]
        let scores = self.v.forward(&energy).reshape(&[b, s]);
        weigh(&scores, values, mask)
    }

    /// [`attend`](Self::attend) with the keys projected here (keys and values may be the same
    /// encoder outputs).
    #[track_caller]
    pub fn forward(
        &self,
        query: &Var<T>,
        keys: &Var<T>,
        values: &Var<T>,
        mask: Option<&Tensor<bool>>,
    ) -> Attended<T> {
        // Checked here too, so that a mistake is named in the shapes the caller passed.
        batch_and_seq("AdditiveAttention", query, keys, values, mask);
        self.attend(query, &self.project_keys(keys), values, mask)
    }
}

impl<T: Float> Module<T> for AdditiveAttention<T> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        let mut v = prefixed("w", &self.w);
        v.extend(prefixed("u", &self.u));
        v.extend(prefixed("v", &self.v));
        v
    }
}

/// Dot-product (Luong) attention: `e_j = q · k_j` ("dot", queries and keys of one size), or
/// `(W q) · k_j` with a learnt `W` `[K, Q]` ("general", parameter `w.weight`); either divided
/// by `√K` when scaled.
pub struct DotAttention<T: Float> {
    /// `W` for the "general" score, `None` for "dot".
    pub w: Option<Linear<T>>,
    /// Divide the scores by `√K`.
    pub scaled: bool,
}

impl<T: Float> DotAttention<T> {
    /// The "dot" score `q · k_j`: no parameters.
    pub fn dot(scaled: bool) -> Self {
        DotAttention { w: None, scaled }
    }

    /// The "general" score `(W q) · k_j`, `W` initialised as `nn.Linear`.
    pub fn general(query_size: usize, key_size: usize, scaled: bool, rng: &mut Rng) -> Self {
        DotAttention {
            w: Some(Linear::new(query_size, key_size, false, rng)),
            scaled,
        }
    }

    /// One step: `query` `[B, Q]`, `keys` `[B, S, K]`, `values` `[B, S, V]`, and the valid
    /// positions (`[B, S]`, see [`padding_mask`]).
    ///
    /// # Panics
    /// If the shapes do not fit together (for "dot", `Q` must be `K`).
    #[track_caller]
    pub fn forward(
        &self,
        query: &Var<T>,
        keys: &Var<T>,
        values: &Var<T>,
        mask: Option<&Tensor<bool>>,
    ) -> Attended<T> {
        let (b, s) = batch_and_seq("DotAttention", query, keys, values, mask);
        let q = match &self.w {
            Some(w) => w.forward(query),
            None => query.clone(),
        };
        let k = keys.shape()[2];
        if q.shape()[1] != k {
            panic!(
                "DotAttention: the query has {} features after projection, the keys {k}",
                q.shape()[1]
            );
        }
        let mut scores = keys.matmul(q.unsqueeze(2)).reshape(&[b, s]); // [B, S]
        if self.scaled {
            scores = scores.mul_scalar(T::from_f64(1.0 / (k as f64).sqrt()));
        }
        weigh(&scores, values, mask)
    }
}

impl<T: Float> Module<T> for DotAttention<T> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        self.w
            .as_ref()
            .map(|w| prefixed("w", w))
            .unwrap_or_default()
    }
}

/// Checks `query` `[B, Q]`, `keys` `[B, S, ·]`, `values` `[B, S, ·]` and the mask `[B, S]`
/// against each other; returns `(B, S)`.
#[track_caller]
fn batch_and_seq<T: Float>(
    op: &str,
    query: &Var<T>,
    keys: &Var<T>,
    values: &Var<T>,
    mask: Option<&Tensor<bool>>,
) -> (usize, usize) {
    let (q, k, v) = (query.shape(), keys.shape(), values.shape());
    let fits = q.len() == 2
        && k.len() == 3
        && v.len() == 3
        && k[0] == q[0]
        && v[..2] == k[..2]
        && k[1] > 0
        && mask.is_none_or(|m| m.shape() == &k[..2]);
    if !fits {
        panic!(
            "{op}: query {q:?}, keys {k:?}, values {v:?}{} do not fit (expected [B, Q], \
             [B, S, K], [B, S, V] and a [B, S] mask, S > 0)",
            mask.map(|m| format!(" and mask {:?}", m.shape()))
                .unwrap_or_default()
        );
    }
    if let Some(row) = mask.and_then(|m| {
        let m = m.to_vec();
        (0..k[0]).find(|&b| !m[b * k[1]..(b + 1) * k[1]].contains(&true))
    }) {
        panic!("{op}: row {row} of the mask has no valid position to attend to");
    }
    (k[0], k[1])
}

/// Softmax of the scores `[B, S]` over the valid positions, and the context `Σ_j α_j v_j`.
fn weigh<T: Float>(scores: &Var<T>, values: &Var<T>, mask: Option<&Tensor<bool>>) -> Attended<T> {
    let scores = match mask {
        Some(valid) => {
            let outside = Tensor::scalar(T::from_f64(f64::NEG_INFINITY));
            Var::where_cond(valid, scores, &outside)
        }
        None => scores.clone(),
    };
    let weights = scores.softmax(1); // [B, S]
    let (b, width) = (values.shape()[0], values.shape()[2]);
    let context = weights.unsqueeze(1).matmul(values).reshape(&[b, width]);
    Attended { context, weights }
}
