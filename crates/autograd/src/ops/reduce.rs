//! Reductions. The backward of a reduction spreads the gradient back over the reduced axes:
//! reshape `g` to the kept-dims shape, then broadcast it to the input's shape.

use tensor::{resolve_dim, Dim, Float, Tensor};

use crate::trace::Prim;
use crate::var::Var;

/// The input shape with the reduced axes set to 1 (the `keepdim` shape).
fn keepdim_shape<D: Dim>(op: &str, shape: &[usize], axes: &[D]) -> Vec<usize> {
    let mut kept = shape.to_vec();
    for &a in axes {
        kept[resolve_dim(op, a, shape.len())] = 1;
    }
    kept
}

/// The one dim `axes` names, resolved, or `None` for several (or none).
fn one_axis<D: Dim>(op: &str, axes: &[D], rank: usize) -> Option<usize> {
    match axes {
        [a] => Some(resolve_dim(op, *a, rank)),
        _ => None,
    }
}

impl<T: Float> Var<T> {
    /// Σ over `axes`.  ∂/∂x = g, broadcast back over the summed axes.
    #[track_caller]
    pub fn sum<D: Dim>(&self, axes: &[D], keepdim: bool) -> Var<T> {
        let shape = self.shape().to_vec();
        let kept = keepdim_shape("sum", &shape, axes);
        let one_dim = one_axis("sum", axes, self.rank());
        self.unary("sum", self.value.sum(axes, keepdim), move |g| {
            g.reshape(&kept).broadcast_to(&shape)
        })
        .traced_if(one_dim.map(|dim| Prim::Sum { dim, keepdim }))
    }

    /// Σ of all elements (a 0-d result).  ∂/∂x = g everywhere.
    pub fn sum_all(&self) -> Var<T> {
        let shape = self.shape().to_vec();
        self.unary("sum_all", self.value.sum_all(), move |g| {
            g.broadcast_to(&shape)
        })
    }

    /// Mean over `axes`.  ∂/∂x = g / n, broadcast back, n = number of elements averaged.
    #[track_caller]
    pub fn mean<D: Dim>(&self, axes: &[D], keepdim: bool) -> Var<T> {
        let shape = self.shape().to_vec();
        let kept = keepdim_shape("mean", &shape, axes);
        let n = T::from_f64((tensor::numel(&shape) / tensor::numel(&kept).max(1)) as f64);
        let one_dim = one_axis("mean", axes, self.rank());
        self.unary("mean", self.value.mean(axes, keepdim), move |g| {
            g.reshape(&kept).div_scalar(n).broadcast_to(&shape)
        })
        .traced_if(one_dim.map(|dim| Prim::Mean { dim, keepdim }))
    }

    /// Mean of all elements (a 0-d result).  ∂/∂x = g / n.
    pub fn mean_all(&self) -> Var<T> {
        let shape = self.shape().to_vec();
        let n = T::from_f64(self.value.numel() as f64);
        self.unary("mean_all", self.value.mean_all(), move |g| {
            g.div_scalar(n).broadcast_to(&shape)
        })
    }

    /// Maximum over `axes`, like `torch.amax`.  ∂/∂x = g at the maximal elements, shared
    /// evenly among ties; 0 elsewhere.
    #[track_caller]
    pub fn max<D: Dim>(&self, axes: &[D], keepdim: bool) -> Var<T> {
        self.extreme_over("max", axes, keepdim, self.value.max(axes, true))
    }

    /// Minimum over `axes`, like `torch.amin`.  ∂/∂x = g at the minimal elements, shared
    /// evenly among ties.
    #[track_caller]
    pub fn min<D: Dim>(&self, axes: &[D], keepdim: bool) -> Var<T> {
        self.extreme_over("min", axes, keepdim, self.value.min(axes, true))
    }

    #[track_caller]
    fn extreme_over<D: Dim>(
        &self,
        op: &'static str,
        axes: &[D],
        keepdim: bool,
        extreme_kept: Tensor<T>,
    ) -> Var<T> {
        let shape = self.shape().to_vec();
        let kept = extreme_kept.shape().to_vec();
        // mask / count: 1/k at each of the k elements equal to the extreme, 0 elsewhere.
        let mask = self.value.zip_map(
            &extreme_kept,
            op,
            |x, m| if x == m { T::ONE } else { T::ZERO },
        );
        let count = mask.sum(axes, true);
        let weights = mask.div(&count);
        let value = if keepdim {
            extreme_kept
        } else {
            let mut reduced = vec![false; shape.len()];
            for &a in axes {
                reduced[resolve_dim(op, a, shape.len())] = true;
            }
            let out_shape: Vec<usize> = (0..shape.len())
                .filter(|&d| !reduced[d])
                .map(|d| shape[d])
                .collect();
            extreme_kept.reshape(&out_shape)
        };
        self.unary(op, value, move |g| g.reshape(&kept).mul(&weights))
    }
}
