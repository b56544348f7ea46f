//! Structural ops: joining, splitting and lookups. Their backward routes each piece of the
//! gradient to the input it came from: `concat`/`stack` cut `g` apart, `split`/`chunk` are
//! `narrow`s, `index_select` and `gather` add `g` back at the looked-up places.

use tensor::{resolve_dim, Dim, Float, Tensor};

use crate::trace::Prim;
use crate::var::{Rule, Var};

impl<T: Float> Var<T> {
    /// Joins along an existing dim.  ∂/∂xᵢ = the slice of g that came from xᵢ.
    ///
    /// # Panics
    /// If `vars` is empty, the shapes differ outside `dim`, or the tapes differ.
    #[track_caller]
    pub fn concat<D: Dim>(vars: &[&Var<T>], dim: D) -> Var<T> {
        let Some(first) = vars.first() else {
            panic!("concat: needs at least one variable");
        };
        let d = resolve_dim("concat", dim, first.rank());
        let values: Vec<&Tensor<T>> = vars.iter().map(|v| &v.value).collect();
        let value = Tensor::concat(&values, d);
        let mut start = 0;
        let rules: Vec<Rule<T>> = vars
            .iter()
            .map(|v| {
                let (s, len) = (start, v.shape()[d]);
                start += len;
                Box::new(move |g: &Tensor<T>| g.narrow(d, s, len).contiguous()) as Rule<T>
            })
            .collect();
        Var::with_rules("concat", vars, value, rules).traced(|| Prim::Concat(d))
    }

    /// Joins same-shaped variables along a new dim.  ∂/∂xᵢ = g's entry i along that dim.
    #[track_caller]
    pub fn stack<D: Dim>(vars: &[&Var<T>], dim: D) -> Var<T> {
        let Some(first) = vars.first() else {
            panic!("stack: needs at least one variable");
        };
        let d = resolve_dim("stack", dim, first.rank() + 1);
        let values: Vec<&Tensor<T>> = vars.iter().map(|v| &v.value).collect();
        let value = Tensor::stack(&values, d);
        let rules: Vec<Rule<T>> = (0..vars.len())
            .map(|i| Box::new(move |g: &Tensor<T>| g.select(d, i).contiguous()) as Rule<T>)
            .collect();
        Var::with_rules("stack", vars, value, rules)
    }

    /// Splits along `dim` into pieces of the given sizes (each a `narrow`).
    #[track_caller]
    pub fn split<D: Dim>(&self, sizes: &[usize], dim: D) -> Vec<Var<T>> {
        let d = resolve_dim("split", dim, self.rank());
        let pieces = self.value.split(sizes, d); // checks the sizes
        let mut start = 0;
        pieces
            .iter()
            .map(|p| {
                let v = self.narrow(d, start, p.shape()[d]);
                start += p.shape()[d];
                v
            })
            .collect()
    }

    /// Splits along `dim` into `chunks` pieces, like `torch.chunk` (each a `narrow`).
    #[track_caller]
    pub fn chunk<D: Dim>(&self, chunks: usize, dim: D) -> Vec<Var<T>> {
        let d = resolve_dim("chunk", dim, self.rank());
        let sizes: Vec<usize> = self
            .value
            .chunk(chunks, d)
            .iter()
            .map(|p| p.shape()[d])
            .collect();
        self.split(&sizes, d)
    }

    /// Picks entries along `dim` (an embedding lookup for a `[vocab, dim]` table and `dim` 0).
    /// ∂/∂x = zeros with g added back at each picked index (repeats accumulate).
    #[track_caller]
    pub fn index_select<D: Dim>(&self, dim: D, indices: &Tensor<i64>) -> Var<T> {
        let d = resolve_dim("index_select", dim, self.rank());
        let shape = self.shape().to_vec();
        let idx = indices.clone();
        self.unary(
            "index_select",
            self.value.index_select(d, indices),
            move |g| Tensor::zeros(&shape).index_add(d, &idx, g),
        )
    }

    /// `torch.gather` along `dim`.  ∂/∂x = zeros with g scatter-added at the gathered places.
    #[track_caller]
    pub fn gather<D: Dim>(&self, dim: D, index: &Tensor<i64>) -> Var<T> {
        let d = resolve_dim("gather", dim, self.rank());
        let shape = self.shape().to_vec();
        let idx = index.clone();
        self.unary("gather", self.value.gather(d, index), move |g| {
            Tensor::zeros(&shape).scatter_add(d, &idx, g)
        })
    }
}
