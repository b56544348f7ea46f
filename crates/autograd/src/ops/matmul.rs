//! Matrix products.
//!
//! For Y = A · B:  ∂/∂A = G · Bᵀ,  ∂/∂B = Aᵀ · G. The transposes are views, so no operand is
//! copied; batched products broadcast their batch dims and sum the gradient back over them.

use tensor::{Float, Tensor};

use crate::trace::Prim;
use crate::var::{IntoVar, Var};

impl<T: Float> Var<T> {
    /// Matrix product with `torch.matmul` semantics (2-D, batched with broadcast batch dims,
    /// 1-D vectors).  ∂/∂A = G · Bᵀ,  ∂/∂B = Aᵀ · G.
    ///
    /// # Panics
    /// If the shapes do not agree; the message names both.
    #[track_caller]
    pub fn matmul(&self, other: impl IntoVar<T>) -> Var<T> {
        let b = self.lift(other);
        let value = self.value.matmul(&b.value);
        // Work on ≥2-D forms: a 1-D lhs is a row [1, k], a 1-D rhs a column [k, 1].
        let a2 = promote(&self.value, true);
        let b2 = promote(&b.value, false);
        let (sa, sb) = (self.shape().to_vec(), b.shape().to_vec());
        // The output with any squeezed vector dims put back: [..., m, n].
        let g_shape = {
            let (ra, rb) = (a2.rank(), b2.rank());
            let batch = tensor::broadcast_shapes(&a2.shape()[..ra - 2], &b2.shape()[..rb - 2])
                .expect("matmul checked the batch dims");
            [&batch[..], &[a2.shape()[ra - 2], b2.shape()[rb - 1]]].concat()
        };
        let (a_for_b, b_for_a, g_shape_b) = (a2.clone(), b2.clone(), g_shape.clone());
        self.binary(
            &b,
            "matmul",
            value,
            move |g| {
                let g = g.reshape(&g_shape);
                g.matmul(&b_for_a.transpose(-1, -2))
                    .sum_to(a2.shape())
                    .reshape(&sa)
            },
            move |g| {
                let g = g.reshape(&g_shape_b);
                if is_transposed_matrix(&b2) && a_for_b.rank() == 2 {
                    // `x.linear(&w)` multiplies by `wᵀ`, a view: its gradient is made in
                    // `w`'s own layout, (gᵀ · A)ᵀ, so that the transpose's backward hands `w`
                    // a contiguous gradient. (Aᵀ · g would reach `w` transposed, and adding
                    // that to `w`'s gradient reads it across rows, a cache miss an element.)
                    return g.transpose(-1, -2).matmul(&a_for_b).transpose(-1, -2);
                }
                a_for_b
                    .transpose(-1, -2)
                    .matmul(&g)
                    .sum_to(b2.shape())
                    .reshape(&sb)
            },
        )
        .traced(|| Prim::Matmul)
    }

    /// x · Wᵀ for a `weight` in PyTorch's `[out, in]` layout (`torch.nn.functional.linear`
    /// without the bias: add it with `+ &b`). The transpose is a view, not a copy.
    #[track_caller]
    pub fn linear(&self, weight: impl IntoVar<T>) -> Var<T> {
        self.matmul(self.lift(weight).t())
    }
}

/// Whether `t` is the transpose of a contiguous matrix (`w.t()`), a view.
fn is_transposed_matrix<T: Float>(t: &Tensor<T>) -> bool {
    let (shape, strides) = (t.shape(), t.strides());
    t.rank() == 2 && shape[0] > 1 && shape[1] > 1 && strides == [1, shape[0]]
}

fn promote<T: Float>(t: &Tensor<T>, lhs: bool) -> Tensor<T> {
    match (t.rank(), lhs) {
        (1, true) => t.unsqueeze(0),
        (1, false) => t.unsqueeze(1),
        _ => t.clone(),
    }
}
