//! Views and the basics: creation, `reshape permute transpose t narrow select squeeze unsqueeze
//! broadcast_to flatten`, `contiguous to_vec into_vec as_mut_slice get item cast`, and
//! `Display`. Views are checked against the naive reference on random shapes and layouts, and
//! checked not to copy: by their strides, and by counting the bytes they allocate.

use crate::common;

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::cell::Cell;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tensor::{contiguous_strides, DType, Element, Float, ShapeError, Tensor};

// ---------------------------------------------------------------------------------------------
// A counting allocator, to see that views do not copy the data
// ---------------------------------------------------------------------------------------------

/// The system allocator, counting the bytes each thread asks for.
struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to `System`; the counter is a const-initialised
// thread-local `Cell` without a destructor, so touching it never allocates or re-enters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size()));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns what it returned and how many bytes it allocated on this thread.
fn allocated_by<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCATED.with(Cell::get);
    let r = f();
    (r, ALLOCATED.with(Cell::get) - before)
}

/// A view allocates its shape and strides (a few words); the data here is 1 MiB.
const VIEW_BUDGET: usize = 1024;

/// A named op that makes a view.
type NamedView<'a> = (&'static str, Box<dyn Fn() -> Tensor<f32> + 'a>);

#[test]
fn views_do_not_copy_the_data() {
    let x = Tensor::<f32>::zeros(&[512, 512]);
    let views: Vec<NamedView> = vec![
        ("clone", Box::new(|| x.clone())),
        ("reshape", Box::new(|| x.reshape(&[256, 2, 512]))),
        ("flatten", Box::new(|| x.flatten())),
        ("permute", Box::new(|| x.permute(&[1, 0]))),
        ("transpose", Box::new(|| x.transpose(0, -1))),
        ("t", Box::new(|| x.t())),
        ("narrow", Box::new(|| x.narrow(1, 100, 300))),
        ("select", Box::new(|| x.select(0, 7))),
        ("unsqueeze", Box::new(|| x.unsqueeze(1))),
        ("squeeze", Box::new(|| x.narrow(0, 3, 1).squeeze(0))),
        ("broadcast_to", Box::new(|| x.broadcast_to(&[3, 512, 512]))),
        ("contiguous", Box::new(|| x.contiguous())),
        (
            "reshape of a transpose",
            Box::new(|| x.t().reshape(&[512, 2, 256])),
        ),
        ("split", Box::new(|| x.split(&[12, 500], 1).swap_remove(1))),
        ("chunk", Box::new(|| x.chunk(3, 0).swap_remove(2))),
    ];
    for (name, view) in &views {
        let (v, bytes) = allocated_by(view);
        assert!(bytes < VIEW_BUDGET, "{name} allocated {bytes} bytes");
        assert!(v.numel() > 0);
    }
    // The counter does see copies: a reshape that strides cannot express, and an op. (Of a
    // tensor under `pool::MIN_BYTES`: a larger copy may reuse a pooled buffer instead.)
    let rows = tensor::pool::MIN_BYTES / (512 * 4) / 2;
    let y = x.narrow(0, 0, rows);
    let y_bytes = rows * 512 * 4;
    let (_, bytes) = allocated_by(|| y.t().flatten());
    assert!(
        bytes >= y_bytes,
        "a copying reshape allocated only {bytes} bytes"
    );
    let (_, bytes) = allocated_by(|| y.t().contiguous());
    assert!(bytes >= y_bytes);
    let (_, bytes) = allocated_by(|| y.exp());
    assert!(bytes >= y_bytes);
}

#[test]
fn view_strides_are_as_expected() {
    let x = Tensor::from_vec((0..24).map(f64::from).collect(), &[2, 3, 4]);
    assert_eq!(x.strides(), &[12, 4, 1]);
    assert!(x.is_contiguous());

    let r = x.reshape(&[6, 4]);
    assert_eq!(r.strides(), &[4, 1]);
    assert!(r.is_contiguous());

    let p = x.permute(&[2, 0, 1]);
    assert_eq!(p.shape(), &[4, 2, 3]);
    assert_eq!(p.strides(), &[1, 12, 4]);
    assert!(!p.is_contiguous());
    assert_eq!(x.transpose(0, -1).strides(), &[1, 4, 12]);

    let n = x.narrow(2, 1, 2);
    assert_eq!(n.shape(), &[2, 3, 2]);
    assert_eq!(n.strides(), &[12, 4, 1]);
    assert!(!n.is_contiguous());
    assert_eq!(n.get(&[1, 2, 0]), 12.0 + 8.0 + 1.0);
    // Narrowing the outermost dim keeps a contiguous block.
    assert!(x.narrow(0, 1, 1).is_contiguous());
    assert_eq!(x.narrow(0, 1, 1).to_vec()[0], 12.0);

    let s = x.select(1, 2);
    assert_eq!(s.shape(), &[2, 4]);
    assert_eq!(s.strides(), &[12, 1]);
    assert_eq!(
        s.to_vec(),
        vec![8.0, 9.0, 10.0, 11.0, 20.0, 21.0, 22.0, 23.0]
    );

    // Broadcast dims (repeated size-1 dims and new leading dims) have stride 0.
    let col = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3, 1]);
    let b = col.broadcast_to(&[2, 3, 4]);
    assert_eq!(b.strides(), &[0, 1, 0]);
    assert_eq!(b.get(&[1, 2, 3]), 3.0);
    assert!(!b.is_contiguous());

    // A transposed matrix, reshaped where strides can express it: still a view.
    let m = Tensor::from_vec((0..12).map(f64::from).collect(), &[3, 4]).t();
    assert_eq!(m.strides(), &[1, 4]);
    let v = m.reshape(&[2, 2, 3]);
    assert_eq!(v.strides(), &[2, 1, 4]);
    assert_eq!(
        v.to_vec(),
        vec![0.0, 4.0, 8.0, 1.0, 5.0, 9.0, 2.0, 6.0, 10.0, 3.0, 7.0, 11.0]
    );
    // ...and where they cannot: a contiguous copy with the same values, as torch.reshape.
    let f = m.reshape(&[12]);
    assert_eq!(f.strides(), &[1]);
    assert_eq!(f.to_vec(), m.to_vec());
    // A non-contiguous view split along a dim is still a view with the original strides.
    let sp = n.reshape(&[1, 2, 3, 2]);
    assert_eq!(&sp.strides()[1..], &[12, 4, 1]);
    assert_eq!(sp.to_vec(), n.to_vec());

    let u = x.unsqueeze(-1);
    assert_eq!(u.shape(), &[2, 3, 4, 1]);
    assert!(u.is_contiguous());
    assert_eq!(x.unsqueeze(0).shape(), &[1, 2, 3, 4]);
    assert_eq!(u.squeeze(3).strides(), x.strides());
}

// ---------------------------------------------------------------------------------------------
// Views against the reference
// ---------------------------------------------------------------------------------------------

fn check_is_view_of<T: Element>(v: &Tensor<T>, want: &Ref) -> Result<(), TestCaseError> {
    check_exact(v, want)?;
    // `to_vec` and element-wise `get` agree.
    prop_assert_eq!(Ref::of(v), want.clone());
    Ok(())
}

fn permute_case<T: Float>(x: &Input, perm: &[usize], signed: bool) -> Result<(), TestCaseError> {
    let (r, t) = x.build::<T>();
    let rank = r.rank() as isize;
    let p = if signed {
        let dims: Vec<isize> = perm.iter().map(|&d| d as isize - rank).collect();
        t.permute(&dims)
    } else {
        t.permute(perm)
    };
    let strides: Vec<usize> = perm.iter().map(|&d| t.strides()[d]).collect();
    prop_assert_eq!(p.strides(), &strides[..]);
    check_is_view_of(&p, &r.permute(perm))?;
    // Transposing any two dims is the permutation that swaps them.
    if r.rank() >= 2 {
        let (a, b) = (perm[0], perm[1]);
        let mut swap: Vec<usize> = (0..r.rank()).collect();
        swap.swap(a, b);
        check_is_view_of(&t.transpose(a, b), &r.permute(&swap))?;
        check_is_view_of(
            &t.transpose(a as i32 - rank as i32, b as i32),
            &r.permute(&swap),
        )?;
    }
    if r.rank() == 2 {
        let tt = t.t();
        check_is_view_of(&tt, &r.permute(&[1, 0]))?;
        prop_assert_eq!(tt.strides(), &[t.strides()[1], t.strides()[0]]);
    }
    Ok(())
}

fn narrow_select_case<T: Float>(
    x: &Input,
    dim: usize,
    a: usize,
    b: usize,
) -> Result<(), TestCaseError> {
    let (r, t) = x.build::<T>();
    let n = r.shape[dim];
    let start = a % (n + 1);
    let len = b % (n - start + 1);
    let v = t.narrow(dim, start, len);
    prop_assert_eq!(v.strides(), t.strides());
    let mut shape = r.shape.clone();
    shape[dim] = len;
    let want = Ref::from_fn(&shape, |i| {
        let mut j = i.to_vec();
        j[dim] += start;
        r.at(&j)
    });
    check_is_view_of(&v, &want)?;
    check_is_view_of(
        &t.narrow(dim as isize - r.rank() as isize, start, len),
        &want,
    )?;
    if n > 0 {
        let index = a % n;
        let s = t.select(dim, index);
        let mut strides = t.strides().to_vec();
        strides.remove(dim);
        prop_assert_eq!(s.strides(), &strides[..]);
        let mut shape = r.shape.clone();
        shape.remove(dim);
        let want = Ref::from_fn(&shape, |i| {
            let mut j = i.to_vec();
            j.insert(dim, index);
            r.at(&j)
        });
        check_is_view_of(&s, &want)?;
        check_is_view_of(&t.select(-(r.rank() as i32) + dim as i32, index), &want)?;
    }
    Ok(())
}

fn unsqueeze_case<T: Float>(x: &Input, at: usize) -> Result<(), TestCaseError> {
    let (r, t) = x.build::<T>();
    let at = at % (r.rank() + 1);
    let u = t.unsqueeze(at);
    let mut shape = r.shape.clone();
    shape.insert(at, 1);
    let want = Ref::new(&shape, r.data.clone());
    check_is_view_of(&u, &want)?;
    // Negative: -1 is a new last dim.
    let neg = at as isize - r.rank() as isize - 1;
    check_is_view_of(&t.unsqueeze(neg), &want)?;
    let back = u.squeeze(at);
    prop_assert_eq!(back.strides(), t.strides());
    check_is_view_of(&back, &r)?;
    check_is_view_of(&u.squeeze(neg), &r)?;
    Ok(())
}

fn broadcast_case<T: Float>(x: &Input, out: &[usize]) -> Result<(), TestCaseError> {
    let (r, t) = x.build::<T>();
    let b = t.broadcast_to(out);
    let lead = out.len() - r.rank();
    for (d, &s) in b.strides().iter().enumerate() {
        if d < lead || (r.shape[d - lead] == 1 && out[d] != 1) {
            prop_assert_eq!(s, 0, "dim {} of {:?} -> {:?}", d, r.shape, out);
        } else {
            prop_assert_eq!(s, t.strides()[d - lead]);
        }
    }
    check_is_view_of(&b, &r.broadcast_to(out))
}

fn prime_factors(mut n: usize) -> Vec<usize> {
    let mut out = vec![];
    let mut p = 2;
    while n > 1 {
        while n.is_multiple_of(p) {
            out.push(p);
            n /= p;
        }
        p += 1;
    }
    out
}

/// A random shape with `numel` elements.
fn arb_shape_with_numel(numel: usize) -> BoxedStrategy<Vec<usize>> {
    if numel == 0 {
        return (arb_shape(3, 3, 0), 0..4usize)
            .prop_map(|(mut s, at)| {
                let at = at.min(s.len());
                s.insert(at, 0);
                s
            })
            .boxed();
    }
    let primes = prime_factors(numel);
    let np = primes.len();
    (
        0..=4usize,
        prop::collection::vec(0..4usize, np),
        prop::collection::vec(0..=4usize, 0..=2),
    )
        .prop_map(move |(k, buckets, ones)| {
            let k = if np > 0 { k.max(1) } else { k };
            let mut shape = vec![1; k];
            for (p, b) in primes.iter().zip(buckets) {
                shape[b % k] *= p;
            }
            for o in ones {
                shape.insert(o.min(shape.len()), 1);
            }
            shape
        })
        .boxed()
}

fn reshape_case<T: Float>(x: &Input, shape: &[usize]) -> Result<(), TestCaseError> {
    let (r, t) = x.build::<T>();
    let v = t.reshape(shape);
    // The same elements in the same row-major order, whatever the input's layout.
    check_is_view_of(&v, &Ref::new(shape, r.data.clone()))?;
    if t.is_contiguous() {
        // A view with row-major strides (the stride of a size-1 dim is never used, and may
        // be anything, as in PyTorch).
        prop_assert!(v.is_contiguous());
        let row_major = contiguous_strides(shape);
        for d in 0..shape.len() {
            if shape[d] != 1 {
                prop_assert_eq!(v.strides()[d], row_major[d]);
            }
        }
    }
    let f = t.flatten();
    check_is_view_of(&f, &Ref::new(&[r.numel()], r.data.clone()))?;
    // `contiguous`, `to_vec`, `into_vec`.
    let c = t.contiguous();
    prop_assert!(c.is_contiguous());
    prop_assert_eq!(c.as_slice().map(<[T]>::to_vec), Some(t.to_vec()));
    check_is_view_of(&c, &r)?;
    prop_assert_eq!(t.clone().into_vec(), t.to_vec());
    Ok(())
}

fn mutation_case<T: Float>(x: &Input) -> Result<(), TestCaseError> {
    let (r, t) = x.build::<T>();
    let view = t.clone();
    let mut m = t.clone();
    for v in m.as_mut_slice() {
        *v *= T::from_f64(2.0); // exact, so the reference needs no rounding
    }
    // Copy-on-write: the other tensors sharing the storage are untouched.
    check_exact(&t, &r)?;
    check_exact(&view, &r)?;
    check_exact(&m, &r.map(|v| v * 2.0))?;
    prop_assert!(m.is_contiguous());
    Ok(())
}

fn cast_case<T: Float>(x: &Input) -> Result<(), TestCaseError> {
    let (r, t) = x.build::<T>();
    check_exact(&t.cast::<f64>(), &r)?;
    // f64 -> f32 rounds to nearest, as `as` does.
    check_exact(&t.cast::<f32>(), &r.map(|v| f64::from(v as f32)))?;
    check_exact(&t.cast::<i64>(), &r.map(f64::trunc))?;
    check_exact(
        &t.cast::<bool>(),
        &r.map(|v| if v != 0.0 { 1.0 } else { 0.0 }),
    )?;
    prop_assert_eq!(t.cast::<i64>().dtype(), DType::I64);
    Ok(())
}

macro_rules! suite {
    ($name:ident, $t:ty) => {
        mod $name {
            use super::*;

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(128))]

                #[test]
                fn permute_transpose_t(
                    (x, perm) in arb_input(Vals::Any, 10).prop_flat_map(|x| {
                        let rank = x.r.rank();
                        (Just(x), Just((0..rank).collect::<Vec<usize>>()).prop_shuffle())
                    }),
                    signed in any::<bool>(),
                ) {
                    permute_case::<$t>(&x, &perm, signed)?;
                }

                #[test]
                fn narrow_and_select(
                    (x, dim) in prop::collection::vec(arb_dim(5, 10), 1..=4)
                        .prop_flat_map(|s| arb_input_of(s, Vals::Any))
                        .prop_flat_map(|x| {
                            let rank = x.r.rank();
                            (Just(x), 0..rank)
                        }),
                    a in 0..100usize,
                    b in 0..100usize,
                ) {
                    narrow_select_case::<$t>(&x, dim, a, b)?;
                }

                #[test]
                fn unsqueeze_and_squeeze(x in arb_input(Vals::Any, 10), at in 0..5usize) {
                    unsqueeze_case::<$t>(&x, at)?;
                }

                #[test]
                fn broadcast_to(
                    (x, out) in arb_shape(4, 4, 10).prop_flat_map(|out| (
                        arb_broadcastable_to(out.clone()),
                        Just(out),
                    )).prop_flat_map(|(s, out)| (arb_input_of(s, Vals::Any), Just(out))),
                ) {
                    broadcast_case::<$t>(&x, &out)?;
                }

                #[test]
                fn reshape_keeps_row_major_order(
                    (x, shape) in arb_input(Vals::Any, 10).prop_flat_map(|x| {
                        let n = x.r.numel();
                        (Just(x), arb_shape_with_numel(n))
                    }),
                ) {
                    reshape_case::<$t>(&x, &shape)?;
                }

                #[test]
                fn as_mut_slice_copies_on_write(x in arb_input(Vals::Any, 10)) {
                    mutation_case::<$t>(&x)?;
                }

                #[test]
                fn cast(x in arb_input(Vals::Any, 10)) {
                    cast_case::<$t>(&x)?;
                }

                #[test]
                fn realize_builds_the_values_it_reports(x in arb_input(Vals::Any, 10)) {
                    // The test harness itself: `get` at every index sees the reported values.
                    let (r, t) = x.build::<$t>();
                    prop_assert_eq!(Ref::of(&t), r);
                }
            }
        }
    };
}

suite!(on_f32, f32);
suite!(on_f64, f64);

// ---------------------------------------------------------------------------------------------
// Empty views
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_views_of_empty_tensors() {
    // A view into an empty tensor may start past the end of the (empty) storage; everything
    // reading it must still see zero elements.
    let x = Tensor::<f32>::zeros(&[0, 5]);
    let n = x.narrow(1, 4, 1);
    assert_eq!(n.shape(), &[0, 1]);
    for v in [
        n.reshape(&[0]),
        n.flatten(),
        x.select(1, 3).reshape(&[0, 1, 1]),
    ] {
        assert_eq!(v.numel(), 0);
        assert_eq!(v.to_vec(), Vec::<f32>::new());
        assert_eq!(v.as_slice(), Some(&[][..]));
        assert_eq!(v.exp().shape(), v.shape());
        assert_eq!((&v + 1.0).numel(), 0);
        assert_eq!(v.sum_all().item(), 0.0);
        assert_eq!(v.clone().into_vec(), Vec::<f32>::new());
        assert_eq!(v.contiguous().numel(), 0);
    }
    let e = Tensor::<f64>::from_vec(vec![], &[2, 0, 3]);
    assert_eq!(e.permute(&[2, 0, 1]).shape(), &[3, 2, 0]);
    assert_eq!(e.narrow(0, 1, 1).to_vec(), Vec::<f64>::new());
    assert_eq!(e.broadcast_to(&[4, 2, 0, 3]).numel(), 0);
    // Broadcasting a size-1 dim to size 0 is allowed, as in NumPy.
    assert_eq!(
        Tensor::<f64>::ones(&[1, 3]).broadcast_to(&[0, 3]).shape(),
        &[0, 3]
    );
}

// ---------------------------------------------------------------------------------------------
// Creation and accessors
// ---------------------------------------------------------------------------------------------

#[test]
fn creation() {
    let z = Tensor::<f32>::zeros(&[2, 3]);
    assert_eq!(z.shape(), &[2, 3]);
    assert_eq!(z.to_vec(), vec![0.0; 6]);
    assert_eq!(Tensor::<f64>::ones(&[4]).to_vec(), vec![1.0; 4]);
    assert_eq!(Tensor::full(&[2, 2], 7.5f32).to_vec(), vec![7.5; 4]);
    assert_eq!(z.ones_like().to_vec(), vec![1.0; 6]);
    assert_eq!(z.ones_like().zeros_like().to_vec(), vec![0.0; 6]);
    assert_eq!(Tensor::<f32>::zeros(&[]).shape(), &[] as &[usize]);
    assert_eq!(Tensor::<f32>::zeros(&[]).numel(), 1);
    assert_eq!(Tensor::<f32>::zeros(&[3, 0]).numel(), 0);

    let s = Tensor::scalar(3.5f64);
    assert_eq!(s.rank(), 0);
    assert_eq!(s.item(), 3.5);
    assert_eq!(s.get(&[]), 3.5);

    let x = Tensor::from_vec(vec![1i64, 2, 3, 4, 5, 6], &[3, 2]);
    assert_eq!(x.get(&[2, 1]), 6);
    assert_eq!(x.dim(0), 3);
    assert_eq!(x.dim(-1), 2);
    assert_eq!(x.dim(-2isize), 3);
    assert_eq!(x.rank(), 2);
    assert_eq!(x.numel(), 6);
    assert_eq!(x.dtype(), DType::I64);
    assert!(Tensor::from_vec(vec![true], &[1, 1]).item());

    let ok = Tensor::try_from_vec(vec![1.0f32, 2.0], &[2, 1]).unwrap();
    assert_eq!(ok.shape(), &[2, 1]);
    let err = Tensor::try_from_vec(vec![1.0f32, 2.0, 3.0], &[2, 2]).unwrap_err();
    assert_eq!(
        err,
        ShapeError::LengthMismatch {
            len: 3,
            shape: vec![2, 2]
        }
    );
    assert_eq!(
        err.to_string(),
        "data of length 3 does not fit shape [2, 2] (4 elements)"
    );
}

#[test]
fn arange() {
    assert_eq!(
        Tensor::arange(0.0f32, 5.0, 1.0).to_vec(),
        vec![0.0, 1.0, 2.0, 3.0, 4.0]
    );
    assert_eq!(
        Tensor::arange(1.0f64, 2.0, 0.25).to_vec(),
        vec![1.0, 1.25, 1.5, 1.75]
    );
    // The end is excluded even when the last step does not land on it.
    assert_eq!(
        Tensor::arange(0.0f64, 1.1, 0.5).to_vec(),
        vec![0.0, 0.5, 1.0]
    );
    assert_eq!(
        Tensor::arange(3.0f64, 0.0, -1.0).to_vec(),
        vec![3.0, 2.0, 1.0]
    );
    assert_eq!(Tensor::arange(2.0f32, 2.0, 1.0).shape(), &[0]);
    // torch.arange(0, 1, 0.1) has 10 elements.
    assert_eq!(Tensor::arange(0.0f32, 1.0, 0.1).numel(), 10);
    assert_eq!(Tensor::arange(0.0f64, 1.0, 0.1).numel(), 10);
}

#[test]
fn into_vec_and_as_slice() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    assert_eq!(x.as_slice(), Some(&[1.0, 2.0, 3.0, 4.0][..]));
    assert_eq!(x.t().as_slice(), None);
    assert_eq!(x.t().into_vec(), vec![1.0, 3.0, 2.0, 4.0]);
    assert_eq!(x.narrow(0, 1, 1).as_slice(), Some(&[3.0, 4.0][..]));
    assert_eq!(x.narrow(0, 1, 1).into_vec(), vec![3.0, 4.0]);
    let shared = x.clone();
    assert_eq!(x.into_vec(), vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(shared.to_vec(), vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn as_mut_slice_on_a_view_writes_a_copy() {
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let mut col = x.narrow(1, 1, 1);
    col.as_mut_slice().copy_from_slice(&[20.0, 50.0]);
    assert_eq!(col.to_vec(), vec![20.0, 50.0]);
    assert_eq!(col.shape(), &[2, 1]);
    assert_eq!(x.to_vec(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    // An unshared, contiguous tensor is written in place and keeps its values elsewhere.
    let mut y = Tensor::<f32>::zeros(&[3]);
    y.as_mut_slice()[1] = 1.0;
    assert_eq!(y.to_vec(), vec![0.0, 1.0, 0.0]);
}

// ---------------------------------------------------------------------------------------------
// Display
// ---------------------------------------------------------------------------------------------

#[test]
fn display_small_tensors() {
    let x = Tensor::from_vec(vec![1.0f32, 2.5, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    assert_eq!(
        x.to_string(),
        "Tensor[2, 3] f32\n[[1, 2.5, 3],\n [4, 5, 6]]"
    );
    // A view prints its logical values.
    assert_eq!(
        x.t().to_string(),
        "Tensor[3, 2] f32\n[[1, 4],\n [2.5, 5],\n [3, 6]]"
    );
    assert_eq!(format!("{x:?}"), x.to_string());
    assert_eq!(Tensor::scalar(2.0f64).to_string(), "Tensor[] f64\n2");
    assert_eq!(
        Tensor::from_vec(vec![true, false], &[2]).to_string(),
        "Tensor[2] bool\n[true, false]"
    );
    assert_eq!(
        Tensor::from_vec(vec![3i64, -1], &[1, 2]).to_string(),
        "Tensor[1, 2] i64\n[[3, -1]]"
    );
    assert_eq!(Tensor::<f32>::zeros(&[0]).to_string(), "Tensor[0] f32\n[]");
    let cube = Tensor::from_vec((0..8).map(f64::from).collect(), &[2, 2, 2]);
    assert_eq!(
        cube.to_string(),
        "Tensor[2, 2, 2] f64\n[[[0, 1],\n  [2, 3]],\n [[4, 5],\n  [6, 7]]]"
    );
}

#[test]
fn display_abbreviates_big_tensors() {
    let x = Tensor::from_vec((0..2000).map(f64::from).collect(), &[2000]);
    let s = x.to_string();
    assert_eq!(s, "Tensor[2000] f64\n[0, 1, 2, ..., 1997, 1998, 1999]");

    let m = Tensor::from_vec((0..40 * 50).map(|v| v as f32).collect(), &[40, 50]);
    let s = m.to_string();
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[0], "Tensor[40, 50] f32");
    // Three rows, "...", three rows.
    assert_eq!(lines.len(), 1 + 7);
    assert_eq!(lines[1], "[[0, 1, 2, ..., 47, 48, 49],");
    assert_eq!(lines[4].trim(), "...,");
    assert_eq!(lines[7], " [1950, 1951, 1952, ..., 1997, 1998, 1999]]");
    // Small enough tensors are printed in full.
    let full = Tensor::<f32>::zeros(&[10, 100]).to_string();
    assert!(!full.contains("..."));
    assert_eq!(full.lines().count(), 11);
}

/// Elementwise ops read views (transposes, narrows, selects, permutes, broadcasts) in runs
/// along their innermost dims: each result must equal the same op on a contiguous copy, bit
/// for bit, whatever the view's strides.
#[test]
fn elementwise_ops_on_views_equal_the_ops_on_contiguous_copies() {
    let mut rng = tensor::Rng::seed_from_u64(3);
    let base = Tensor::<f32>::rand_normal(&[6, 5, 8], 0.0, 1.0, &mut rng);
    let other = Tensor::<f32>::rand_normal(&[8, 8, 8], 0.0, 1.0, &mut rng);
    let views = [
        base.permute(&[2, 1, 0]),
        base.narrow(2, 3, 4).permute(&[0, 2, 1]).transpose(0, 1),
        base.select(1, 2).t().unsqueeze(1).broadcast_to(&[8, 5, 6]),
        base.narrow(0, 1, 4)
            .narrow(2, 1, 6)
            .permute(&[2, 0, 1])
            .narrow(1, 0, 1),
    ];
    for (k, v) in views.iter().enumerate() {
        let c = v.contiguous();
        let bits = |t: &Tensor<f32>| t.to_vec().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&v.tanh()), bits(&c.tanh()), "view {k}: tanh");
        assert_eq!(bits(&v.exp()), bits(&c.exp()), "view {k}: exp");
        let [d0, d1, d2] = [v.shape()[0], v.shape()[1], v.shape()[2]];
        let o = other.narrow(0, 0, d0).narrow(1, 0, d1).narrow(2, 0, d2);
        assert_eq!(
            bits(&(v + &o)),
            bits(&(&c + &o.contiguous())),
            "view {k}: add"
        );
        assert_eq!(
            bits(&(&o * v)),
            bits(&(&o.contiguous() * &c)),
            "view {k}: mul"
        );
        let row = other.select(0, 1).select(0, 2).narrow(0, 0, d2);
        assert_eq!(
            bits(&(v - &row)),
            bits(&(&c - &row)),
            "view {k}: broadcast sub"
        );
    }
}
