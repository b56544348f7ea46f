//! Shape errors are programmer errors: they panic with a message naming the op and the shapes
//! involved. Each test pins the whole message.

use tensor::{Rng, Tensor};

fn t(shape: &[usize]) -> Tensor<f32> {
    Tensor::zeros(shape)
}

fn idx(v: &[i64], shape: &[usize]) -> Tensor<i64> {
    Tensor::from_vec(v.to_vec(), shape)
}

// ---------------------------------------------------------------------------------------------
// matmul
// ---------------------------------------------------------------------------------------------

#[test]
#[should_panic(expected = "matmul: lhs [3, 4] and rhs [5, 2] do not agree on the inner dimension")]
fn matmul_inner_dimension() {
    t(&[3, 4]).matmul(&t(&[5, 2]));
}

#[test]
#[should_panic(expected = "matmul: lhs [3] and rhs [4] do not agree on the inner dimension")]
fn matmul_vectors_of_different_lengths() {
    t(&[3]).matmul(&t(&[4]));
}

#[test]
#[should_panic(
    expected = "matmul: lhs [2, 3, 4] and rhs [2, 5, 6] do not agree on the inner dimension"
)]
fn matmul_batched_inner_dimension() {
    t(&[2, 3, 4]).matmul(&t(&[2, 5, 6]));
}

#[test]
#[should_panic(
    expected = "matmul: batch dims of lhs [2, 3, 4] and rhs [3, 4, 5] cannot be broadcast together"
)]
fn matmul_batch_dims() {
    t(&[2, 3, 4]).matmul(&t(&[3, 4, 5]));
}

#[test]
#[should_panic(expected = "matmul: both operands need at least one dim, got lhs [] and rhs [3]")]
fn matmul_scalar() {
    t(&[]).matmul(&t(&[3]));
}

// ---------------------------------------------------------------------------------------------
// Broadcasting
// ---------------------------------------------------------------------------------------------

#[test]
#[should_panic(expected = "add: shapes [2, 3] and [4] cannot be broadcast together")]
fn add_broadcast() {
    let _ = t(&[2, 3]).add(&t(&[4]));
}

#[test]
#[should_panic(expected = "add: shapes [2, 3] and [3, 2] cannot be broadcast together")]
fn add_operator_broadcast() {
    let _ = &t(&[2, 3]) + &t(&[3, 2]);
}

#[test]
#[should_panic(expected = "sub: shapes [5] and [4] cannot be broadcast together")]
fn sub_broadcast() {
    let _ = t(&[5]) - t(&[4]);
}

#[test]
#[should_panic(expected = "mul: shapes [2, 1, 3] and [2, 2] cannot be broadcast together")]
fn mul_broadcast() {
    let _ = t(&[2, 1, 3]) * &t(&[2, 2]);
}

#[test]
#[should_panic(expected = "div: shapes [3] and [2] cannot be broadcast together")]
fn div_broadcast() {
    let _ = &t(&[3]) / t(&[2]);
}

#[test]
#[should_panic(expected = "maximum: shapes [3] and [2] cannot be broadcast together")]
fn maximum_broadcast() {
    t(&[3]).maximum(&t(&[2]));
}

#[test]
#[should_panic(expected = "minimum: shapes [3] and [2] cannot be broadcast together")]
fn minimum_broadcast() {
    t(&[3]).minimum(&t(&[2]));
}

#[test]
#[should_panic(expected = "gt: shapes [3] and [2] cannot be broadcast together")]
fn comparison_broadcast() {
    t(&[3]).gt(&t(&[2]));
}

#[test]
#[should_panic(expected = "where_cond: shapes [2] and [3] cannot be broadcast together")]
fn where_cond_broadcast() {
    let cond = Tensor::from_vec(vec![true, false], &[2]);
    Tensor::where_cond(&cond, &t(&[3]), &t(&[1]));
}

#[test]
#[should_panic(expected = "where_cond: shapes [4, 2] and [3] cannot be broadcast together")]
fn where_cond_broadcast_third() {
    let cond = Tensor::from_vec(vec![true, false], &[2]);
    Tensor::where_cond(&cond, &t(&[4, 1]), &t(&[3]));
}

#[test]
#[should_panic(expected = "broadcast_to: shapes [3] and [4] cannot be broadcast together")]
fn broadcast_to_wrong_size() {
    t(&[3]).broadcast_to(&[4]);
}

#[test]
#[should_panic(expected = "broadcast_to: shapes [2, 3] and [3] cannot be broadcast together")]
fn broadcast_to_fewer_dims() {
    t(&[2, 3]).broadcast_to(&[3]);
}

#[test]
#[should_panic(expected = "sum_to: shapes [3] and [2, 4] cannot be broadcast together")]
fn sum_to_wrong_size() {
    t(&[2, 4]).sum_to(&[3]);
}

#[test]
#[should_panic(expected = "sum_to: shapes [1, 4] and [4] cannot be broadcast together")]
fn sum_to_more_dims() {
    t(&[4]).sum_to(&[1, 4]);
}

// ---------------------------------------------------------------------------------------------
// Structure
// ---------------------------------------------------------------------------------------------

#[test]
#[should_panic(expected = "concat: shapes [2, 3] and [2, 4] differ outside dim 0")]
fn concat_shapes() {
    Tensor::concat(&[&t(&[2, 3]), &t(&[2, 4])], 0);
}

#[test]
#[should_panic(expected = "concat: shapes [2, 3] and [3] differ outside dim 1")]
fn concat_ranks() {
    Tensor::concat(&[&t(&[2, 3]), &t(&[3])], -1);
}

#[test]
#[should_panic(expected = "concat: needs at least one tensor")]
fn concat_nothing() {
    Tensor::<f32>::concat(&[], 0);
}

#[test]
#[should_panic(expected = "stack: shapes [2] and [3] differ")]
fn stack_shapes() {
    Tensor::stack(&[&t(&[2]), &t(&[3])], 0);
}

#[test]
#[should_panic(expected = "split: sizes [1, 1] do not add up to dim 0 of shape [3]")]
fn split_sizes() {
    t(&[3]).split(&[1, 1], 0);
}

#[test]
#[should_panic(expected = "chunk: chunks must be at least 1")]
fn chunk_zero() {
    t(&[3]).chunk(0, 0);
}

#[test]
#[should_panic(expected = "index_select: index 5 is out of range for a dim of size 3")]
fn index_select_out_of_range() {
    t(&[3, 2]).index_select(0, &idx(&[0, 5], &[2]));
}

#[test]
#[should_panic(expected = "index_select: index -4 is out of range for a dim of size 3")]
fn index_select_negative_out_of_range() {
    t(&[3, 2]).index_select(0, &idx(&[-4], &[1]));
}

#[test]
#[should_panic(expected = "index_select: indices must be 1-D, got shape [1, 2]")]
fn index_select_2d_indices() {
    t(&[3, 2]).index_select(0, &idx(&[0, 1], &[1, 2]));
}

#[test]
#[should_panic(expected = "gather: index [2, 3] does not fit input [2, 2] along dim 0")]
fn gather_index_too_wide() {
    t(&[2, 2]).gather(0, &idx(&[0; 6], &[2, 3]));
}

#[test]
#[should_panic(expected = "gather: index 2 is out of range for a dim of size 2")]
fn gather_index_out_of_range() {
    t(&[2, 2]).gather(1, &idx(&[0, 2], &[1, 2]));
}

#[test]
#[should_panic(
    expected = "scatter_add: index [2, 2] does not fit input [2, 2] and src [2, 1] along dim 1"
)]
fn scatter_add_src_too_small() {
    t(&[2, 2]).scatter_add(1, &idx(&[0; 4], &[2, 2]), &t(&[2, 1]));
}

#[test]
#[should_panic(
    expected = "index_add: self [3, 2], indices [2] and src [3, 2] do not agree along dim 0"
)]
fn index_add_src_shape() {
    t(&[3, 2]).index_add(0, &idx(&[0, 1], &[2]), &t(&[3, 2]));
}

// ---------------------------------------------------------------------------------------------
// Views and accessors
// ---------------------------------------------------------------------------------------------

#[test]
#[should_panic(expected = "reshape: cannot reshape [2, 3] (6 elements) into [4] (4 elements)")]
fn reshape_numel() {
    t(&[2, 3]).reshape(&[4]);
}

#[test]
#[should_panic(expected = "from_vec: data of length 5 does not fit shape [2, 3] (6 elements)")]
fn from_vec_length() {
    Tensor::from_vec(vec![0.0f32; 5], &[2, 3]);
}

#[test]
#[should_panic(expected = "permute: [0, 0] is not a permutation of the 2 dims of [2, 3]")]
fn permute_repeated_dim() {
    t(&[2, 3]).permute(&[0, 0]);
}

#[test]
#[should_panic(expected = "permute: [1] is not a permutation of the 2 dims of [2, 3]")]
fn permute_too_few_dims() {
    t(&[2, 3]).permute(&[1]);
}

#[test]
#[should_panic(expected = "transpose: dim 2 is out of range for a tensor of rank 2")]
fn transpose_dim() {
    t(&[2, 3]).transpose(0, 2);
}

#[test]
#[should_panic(expected = "t: expected a 2-D tensor, got shape [2, 3, 4]")]
fn t_of_3d() {
    t(&[2, 3, 4]).t();
}

#[test]
#[should_panic(expected = "narrow: range 2..5 is out of bounds for dim 1 of shape [2, 4]")]
fn narrow_range() {
    t(&[2, 4]).narrow(1, 2, 3);
}

#[test]
#[should_panic(expected = "select: index 3 is out of bounds for dim 0 of shape [3, 2]")]
fn select_index() {
    t(&[3, 2]).select(0, 3);
}

#[test]
#[should_panic(expected = "squeeze: dim 0 of shape [2, 1] is not of size 1")]
fn squeeze_not_one() {
    t(&[2, 1]).squeeze(0);
}

#[test]
#[should_panic(expected = "item: expected a tensor with one element, got shape [2]")]
fn item_of_many() {
    t(&[2]).item();
}

#[test]
#[should_panic(expected = "get: index [0, 3] is out of bounds for shape [2, 3]")]
fn get_out_of_bounds() {
    t(&[2, 3]).get(&[0, 3]);
}

#[test]
#[should_panic(expected = "get: index [0] is out of bounds for shape [2, 3]")]
fn get_wrong_rank() {
    t(&[2, 3]).get(&[0]);
}

#[test]
#[should_panic(expected = "dim: dim -3 is out of range for a tensor of rank 2")]
fn dim_negative_out_of_range() {
    t(&[2, 3]).dim(-3);
}

#[test]
#[should_panic(expected = "arange: step 0 cannot go from 0 to 1")]
fn arange_zero_step() {
    Tensor::arange(0.0f32, 1.0, 0.0);
}

#[test]
#[should_panic(expected = "arange: step 1 cannot go from 5 to 0")]
fn arange_wrong_direction() {
    Tensor::arange(5.0f64, 0.0, 1.0);
}

// ---------------------------------------------------------------------------------------------
// Reductions and softmax
// ---------------------------------------------------------------------------------------------

#[test]
#[should_panic(expected = "sum: dim 2 is out of range for a tensor of rank 2")]
fn sum_dim_out_of_range() {
    t(&[2, 3]).sum(&[2], false);
}

#[test]
#[should_panic(expected = "mean: dim -3 is out of range for a tensor of rank 2")]
fn mean_negative_dim_out_of_range() {
    t(&[2, 3]).mean(&[-3], false);
}

#[test]
#[should_panic(expected = "sum: dim 1 appears twice in [1, -1]")]
fn sum_dim_twice() {
    t(&[2, 3]).sum(&[1, -1], false);
}

#[test]
#[should_panic(expected = "max: cannot reduce over an empty dim of shape [0, 3] (axes [0])")]
fn max_over_empty() {
    t(&[0, 3]).max(&[0], false);
}

#[test]
#[should_panic(expected = "min: cannot reduce over an empty dim of shape [0] (axes [0])")]
fn min_all_of_empty() {
    t(&[0]).min_all();
}

#[test]
#[should_panic(expected = "argmax: cannot reduce over an empty dim of shape [2, 0] (axes [1])")]
fn argmax_over_empty() {
    t(&[2, 0]).argmax(1, false);
}

#[test]
#[should_panic(expected = "argmin: dim 2 is out of range for a tensor of rank 2")]
fn argmin_dim_out_of_range() {
    t(&[2, 3]).argmin(2, false);
}

#[test]
#[should_panic(expected = "softmax: dim -3 is out of range for a tensor of rank 2")]
fn softmax_dim() {
    t(&[2, 3]).softmax(-3);
}

#[test]
#[should_panic(expected = "log_softmax: dim 2 is out of range for a tensor of rank 2")]
fn log_softmax_dim() {
    t(&[2, 3]).log_softmax(2);
}

#[test]
#[should_panic(expected = "logsumexp: dim 2 is out of range for a tensor of rank 2")]
fn logsumexp_dim() {
    t(&[2, 3]).logsumexp(2, true);
}

// ---------------------------------------------------------------------------------------------
// Rng
// ---------------------------------------------------------------------------------------------

#[test]
#[should_panic(expected = "Rng::below: n must be positive")]
fn below_zero() {
    Rng::seed_from_u64(0).below(0);
}

// ---------------------------------------------------------------------------------------------
// Negative indices: an error, as in PyTorch, never a row counted from the end
// ---------------------------------------------------------------------------------------------

#[test]
#[should_panic(expected = "index_select: index -1 is out of range for a dim of size 3 (0..3)")]
fn index_select_negative() {
    t(&[3, 2]).index_select(0, &idx(&[0, -1], &[2]));
}

#[test]
#[should_panic(expected = "gather: index -1 is out of range for a dim of size 2 (0..2)")]
fn gather_negative() {
    t(&[2, 2]).gather(1, &idx(&[0, -1], &[1, 2]));
}

#[test]
#[should_panic(expected = "index_add: index -2 is out of range for a dim of size 3 (0..3)")]
fn index_add_negative() {
    t(&[3, 2]).index_add(0, &idx(&[-2], &[1]), &t(&[1, 2]));
}

#[test]
#[should_panic(expected = "scatter_add: index -1 is out of range for a dim of size 2 (0..2)")]
fn scatter_add_negative() {
    t(&[2, 2]).scatter_add(0, &idx(&[-1, 0], &[1, 2]), &t(&[1, 2]));
}

// ---------------------------------------------------------------------------------------------
// Shapes too large to address: a clear panic (or `Err` for data from outside), never a tensor
// whose element count wrapped around
// ---------------------------------------------------------------------------------------------

#[test]
#[should_panic(
    expected = "zeros: shape [4294967296, 4294967296] has more elements than this machine can address"
)]
fn zeros_whose_count_overflows() {
    Tensor::<f32>::zeros(&[1 << 32, 1 << 32]);
}

#[test]
#[should_panic(
    expected = "ones: shape [18446744073709551615] has more elements than this machine can address"
)]
fn ones_of_usize_max() {
    Tensor::<f64>::ones(&[usize::MAX]);
}

#[test]
#[should_panic(
    expected = "full: a tensor of shape [4611686018427387904] needs 4611686018427387904 elements of 4 bytes, more than one allocation can hold"
)]
fn full_whose_bytes_overflow() {
    Tensor::<f32>::full(&[1 << 62], 1.0);
}

#[test]
#[should_panic(
    expected = "rand_uniform: shape [0, 1099511627776, 1099511627776] has more elements than this machine can address"
)]
fn rand_uniform_whose_strides_overflow() {
    Tensor::<f32>::rand_uniform(&[0, 1 << 40, 1 << 40], 0.0, 1.0, &mut Rng::seed_from_u64(0));
}

#[test]
#[should_panic(
    expected = "rand_normal: shape [8589934592, 8589934592] has more elements than this machine can address"
)]
fn rand_normal_whose_count_overflows() {
    Tensor::<f64>::rand_normal(&[1 << 33, 1 << 33], 0.0, 1.0, &mut Rng::seed_from_u64(0));
}

#[test]
#[should_panic(
    expected = "reshape: shape [0, 1099511627776, 1099511627776] has more elements than this machine can address"
)]
fn reshape_into_an_overflowing_shape() {
    t(&[0]).reshape(&[0, 1 << 40, 1 << 40]);
}

#[test]
#[should_panic(
    expected = "broadcast_to: shape [4294967296, 4294967296] has more elements than this machine can address"
)]
fn broadcast_to_an_overflowing_shape() {
    t(&[1]).broadcast_to(&[1 << 32, 1 << 32]);
}

#[test]
#[should_panic(expected = "arange: step NaN cannot go from 0 to 1")]
fn arange_nan_step() {
    Tensor::<f64>::arange(0.0, 1.0, f64::NAN);
}

#[test]
#[should_panic(
    expected = "arange: 1000000000000000000000 elements from 0 to 1000000000000000000000 by 1 are too many"
)]
fn arange_too_many() {
    Tensor::<f64>::arange(0.0, 1e21, 1.0);
}

#[test]
fn try_from_vec_refuses_an_overflowing_shape() {
    let err = Tensor::<f32>::try_from_vec(vec![], &[0, 1 << 40, 1 << 40]).unwrap_err();
    assert_eq!(
        err,
        tensor::ShapeError::TooLarge {
            shape: vec![0, 1 << 40, 1 << 40]
        }
    );
    assert_eq!(
        err.to_string(),
        "shape [0, 1099511627776, 1099511627776] has more elements than this machine can address"
    );
    // Shapes with zeros that stay addressable are fine, as in PyTorch.
    assert_eq!(Tensor::<f32>::zeros(&[0, 1 << 20, 1 << 20]).numel(), 0);
}
