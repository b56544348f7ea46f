//! `Linear` and `Embedding`, as in PyTorch.

use autograd::{Param, Tape, Var};
use tensor::{Float, Rng, Tensor};

use crate::module::Module;

/// y = x Wᵀ + b, with `weight [out, in]` and `bias [out]` (PyTorch's `nn.Linear`), both
/// initialised from U(−1/√in, 1/√in). Works on any `[..., in]` input.
pub struct Linear<T: Float> {
    /// `[out, in]`.
    pub weight: Param<T>,
    /// `[out]`.
    pub bias: Option<Param<T>>,
}

impl<T: Float> Linear<T> {
    /// A layer from `in_features` to `out_features`.
    pub fn new(in_features: usize, out_features: usize, bias: bool, rng: &mut Rng) -> Self {
        let k = T::from_f64(1.0 / (in_features as f64).sqrt());
        let weight = Param::new(
            "weight",
            Tensor::rand_uniform(&[out_features, in_features], -k, k, rng),
        );
        let bias =
            bias.then(|| Param::new("bias", Tensor::rand_uniform(&[out_features], -k, k, rng)));
        Linear { weight, bias }
    }

    /// x Wᵀ + b.
    ///
    /// # Panics
    /// If `x`'s last dim is not `in_features`.
    #[track_caller]
    pub fn forward(&self, x: &Var<T>) -> Var<T> {
        let w = self.weight.shape();
        if x.shape().last() != Some(&w[1]) {
            panic!(
                "Linear: input of shape {:?} does not fit in_features {} (weight {w:?})",
                x.shape(),
                w[1]
            );
        }
        let y = x.linear(&self.weight);
        match &self.bias {
            Some(b) => y + b,
            None => y,
        }
    }
}

impl<T: Float> Module<T> for Linear<T> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        let mut v = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }
}

/// A lookup table `weight [num_embeddings, dim]` (PyTorch's `nn.Embedding`), initialised from
/// N(0, 1). With a padding index, that row starts at zero and never receives a gradient.
pub struct Embedding<T: Float> {
    /// `[num_embeddings, dim]`.
    pub weight: Param<T>,
    /// The index whose row stays fixed.
    pub padding_idx: Option<usize>,
}

impl<T: Float> Embedding<T> {
    /// A table of `num_embeddings` vectors of size `dim`.
    ///
    /// # Panics
    /// If `padding_idx` is out of range.
    pub fn new(
        num_embeddings: usize,
        dim: usize,
        padding_idx: Option<usize>,
        rng: &mut Rng,
    ) -> Self {
        let mut w = Tensor::rand_normal(&[num_embeddings, dim], T::ZERO, T::ONE, rng);
        if let Some(p) = padding_idx {
            assert!(
                p < num_embeddings,
                "Embedding: padding_idx {p} >= {num_embeddings}"
            );
            w.as_mut_slice()[p * dim..(p + 1) * dim].fill(T::ZERO);
        }
        Embedding {
            weight: Param::new("weight", w),
            padding_idx,
        }
    }

    /// The vectors of `indices` (any shape), shaped `[..indices, dim]`.
    /// ∂/∂W = g added back at each looked-up row, except the padding row.
    ///
    /// # Panics
    /// If an index is out of range, negative ones included (PyTorch raises an `IndexError`).
    #[track_caller]
    pub fn forward(&self, tape: &Tape<T>, indices: &Tensor<i64>) -> Var<T> {
        let rows = self.weight.shape()[0];
        if let Some(bad) = indices
            .to_vec()
            .into_iter()
            .find(|&i| i < 0 || i >= rows as i64)
        {
            panic!("Embedding: index {bad} is out of range for {rows} embeddings (0..{rows})");
        }
        let w = tape.param(&self.weight);
        let flat = indices.flatten();
        let rows = w.value().index_select(0, &flat);
        let mut shape = indices.shape().to_vec();
        shape.push(w.shape()[1]);
        let value = rows.reshape(&shape);
        let (w_shape, pad) = (w.shape().to_vec(), self.padding_idx);
        Var::custom_op("embedding", &[&w], value, move |g| {
            let g = g.reshape(&[flat.numel(), w_shape[1]]);
            let mut dw = Tensor::zeros(&w_shape).index_add(0, &flat, &g);
            if let Some(p) = pad {
                dw.as_mut_slice()[p * w_shape[1]..(p + 1) * w_shape[1]].fill(T::ZERO);
            }
            vec![Some(dw)]
        })
    }
}

impl<T: Float> Module<T> for Embedding<T> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        vec![("weight".to_string(), self.weight.clone())]
    }
}
