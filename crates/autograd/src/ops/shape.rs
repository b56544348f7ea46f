//! Views: ops that only rearrange elements. Their backward rearranges the gradient the
//! opposite way; `narrow` and `select` send it into their slice of the input, which the tape
//! adds in place (zero elsewhere).

use tensor::{resolve_dim, Dim, Float};

use crate::trace::Prim;
use crate::var::Var;

impl<T: Float> Var<T> {
    /// Number of dims.
    pub fn rank(&self) -> usize {
        self.value.rank()
    }

    /// The same elements in a new shape.  ∂/∂x = g reshaped back.
    #[track_caller]
    pub fn reshape(&self, shape: &[usize]) -> Var<T> {
        let input_shape = self.shape().to_vec();
        self.unary("reshape", self.value.reshape(shape), move |g| {
            g.reshape(&input_shape)
        })
    }

    /// Flattens to 1-D.  ∂/∂x = g reshaped back.
    pub fn flatten(&self) -> Var<T> {
        self.reshape(&[self.value.numel()])
    }

    /// Reorders dims.  ∂/∂x = g permuted by the inverse permutation.
    #[track_caller]
    pub fn permute<D: Dim>(&self, dims: &[D]) -> Var<T> {
        let value = self.value.permute(dims);
        let dims: Vec<usize> = dims
            .iter()
            .map(|&d| resolve_dim("permute", d, self.rank()))
            .collect();
        let mut inverse = vec![0; dims.len()];
        for (i, &d) in dims.iter().enumerate() {
            inverse[d] = i;
        }
        self.unary("permute", value, move |g| g.permute(&inverse))
    }

    /// Swaps two dims.  ∂/∂x = g with the same two dims swapped.
    #[track_caller]
    pub fn transpose<D: Dim>(&self, dim0: D, dim1: D) -> Var<T> {
        let (a, b) = (
            resolve_dim("transpose", dim0, self.rank()),
            resolve_dim("transpose", dim1, self.rank()),
        );
        self.unary("transpose", self.value.transpose(a, b), move |g| {
            g.transpose(a, b)
        })
        .traced(|| Prim::Transpose(a, b))
    }

    /// Transpose of a 2-D variable.  ∂/∂x = gᵀ.
    #[track_caller]
    pub fn t(&self) -> Var<T> {
        self.unary("t", self.value.t(), |g| g.t())
            .traced(|| Prim::T)
    }

    /// The slice `start..start + len` along `dim`.  ∂/∂x = g in that slice, 0 elsewhere.
    #[track_caller]
    pub fn narrow<D: Dim>(&self, dim: D, start: usize, len: usize) -> Var<T> {
        let d = resolve_dim("narrow", dim, self.rank());
        self.unary_slice("narrow", self.value.narrow(d, start, len), d, start, |g| {
            g.clone()
        })
        .traced(|| Prim::Narrow { dim: d, start, len })
    }

    /// The entry `index` along `dim`, that dim removed.  ∂/∂x = g at that entry, 0 elsewhere.
    #[track_caller]
    pub fn select<D: Dim>(&self, dim: D, index: usize) -> Var<T> {
        let d = resolve_dim("select", dim, self.rank());
        self.unary_slice("select", self.value.select(d, index), d, index, move |g| {
            g.unsqueeze(d)
        })
    }

    /// Inserts a size-1 dim.  ∂/∂x = g with it removed.
    #[track_caller]
    pub fn unsqueeze<D: Dim>(&self, dim: D) -> Var<T> {
        let input_shape = self.shape().to_vec();
        self.unary("unsqueeze", self.value.unsqueeze(dim), move |g| {
            g.reshape(&input_shape)
        })
    }

    /// Removes a size-1 dim.  ∂/∂x = g with it put back.
    #[track_caller]
    pub fn squeeze<D: Dim>(&self, dim: D) -> Var<T> {
        let input_shape = self.shape().to_vec();
        self.unary("squeeze", self.value.squeeze(dim), move |g| {
            g.reshape(&input_shape)
        })
    }

    /// Broadcasts to `shape` (a view).  ∂/∂x = g summed back to the input's shape.
    #[track_caller]
    pub fn broadcast_to(&self, shape: &[usize]) -> Var<T> {
        let input_shape = self.shape().to_vec();
        self.unary("broadcast_to", self.value.broadcast_to(shape), move |g| {
            g.sum_to(&input_shape)
        })
    }
}
