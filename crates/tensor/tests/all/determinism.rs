//! Large ops (elementwise, which splits across threads from 2^20 elements, reductions, softmax, batched and large
//! 2-D matmul) give bit-identical results on 1 and on 2 rayon threads; and the sums, which
//! promise an order (a sequential row-major fold per output, or 16 interleaved partial sums
//! over a contiguous run), equal a fold in that order bit for bit.

use tensor::{Element, Float, Rng, Tensor};

fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        assert_eq!(rayon::current_num_threads(), threads);
        f()
    })
}

/// The bits of every element (f32 → f64 is exact, so nothing is lost).
fn bits<T: Element>(t: &Tensor<T>) -> Vec<u64> {
    t.to_vec().iter().map(|v| v.to_f64().to_bits()).collect()
}

/// Runs a batch of large ops and returns their shapes and bits.
fn large_ops<T: Float>() -> Vec<(Vec<usize>, Vec<u64>)> {
    let mut rng = Rng::seed_from_u64(123);
    let x = Tensor::<T>::rand_normal(&[400, 400], T::ZERO, T::ONE, &mut rng); // 160 000 elements
    let y = Tensor::<T>::rand_normal(&[400], T::ZERO, T::ONE, &mut rng);
    let xt = x.t(); // a strided view
    let a = Tensor::<T>::rand_normal(&[8, 64, 48], T::ZERO, T::ONE, &mut rng);
    let w = Tensor::<T>::rand_normal(&[48, 56], T::ZERO, T::ONE, &mut rng);
    let bw = Tensor::<T>::rand_normal(&[8, 56, 48], T::ZERO, T::ONE, &mut rng);
    // Big enough (≈ 20M multiply-adds) for one 2-D product to be split across threads.
    let big_a = Tensor::<T>::rand_normal(&[128, 256], T::ZERO, T::ONE, &mut rng);
    let big_b = Tensor::<T>::rand_normal(&[600, 256], T::ZERO, T::ONE, &mut rng);
    let results = vec![
        x.exp(),
        x.tanh(),
        x.sigmoid(),
        &x * &y,
        xt.mul(&xt),
        (&xt + T::ONE).log(),
        x.maximum(&y.unsqueeze(0)),
        x.gt(&y).cast::<T>(),
        x.sum(&[0], false),
        x.sum(&[1], true),
        xt.sum(&[1], false),
        x.mean(&[0, 1], false),
        x.sum_all(),
        x.max(&[0], false),
        xt.min(&[0], false),
        x.argmax(1, false).cast::<T>(),
        x.softmax(1),
        xt.log_softmax(1),
        x.logsumexp(0, false),
        x.sum_to(&[1, 400]),
        a.matmul(&w),
        a.matmul(&bw.transpose(-1, -2)),
        a.unsqueeze(0).matmul(&bw.transpose(1, 2).unsqueeze(1)),
        big_a.matmul(&big_b.t()),
        // More rows than columns, split by rows: plain, and with a transposed left side (a
        // weight gradient's `dPᵀ X`).
        big_b.matmul(&big_a.t()),
        big_b.t().matmul(&big_b.narrow(1, 0, 128)),
    ];
    results
        .iter()
        .map(|t| (t.shape().to_vec(), bits(t)))
        .collect()
}

fn same_on_one_and_two_threads<T: Float>() {
    let one = on_threads(1, large_ops::<T>);
    let two = on_threads(2, large_ops::<T>);
    assert_eq!(one.len(), two.len());
    for (i, (a, b)) in one.iter().zip(&two).enumerate() {
        assert_eq!(a.0, b.0, "op {i}: shapes differ");
        assert!(a.1 == b.1, "op {i}: results differ between 1 and 2 threads");
    }
}

#[test]
fn bit_identical_on_1_and_2_threads_f32() {
    same_on_one_and_two_threads::<f32>();
}

#[test]
fn bit_identical_on_1_and_2_threads_f64() {
    same_on_one_and_two_threads::<f64>();
}

fn sums_in_their_order<T: Float>() {
    let mut rng = Rng::seed_from_u64(77);
    let x = Tensor::<T>::rand_normal(&[200, 300], T::ZERO, T::ONE, &mut rng);
    let v = x.to_vec();
    let fold = |it: &mut dyn Iterator<Item = T>| it.fold(T::ZERO, |a, b| a + b);
    // A contiguous run: element i into partial sum i mod 16 (all but the last n mod 16
    // elements), the partial sums added pairwise (0 + 8, 1 + 9, ..., then 0 + 4, ...), then the
    // last n mod 16 elements in order.
    let lanes = |run: &[T]| {
        let full = run.len() / 16 * 16;
        let mut partial: Vec<T> = (0..16)
            .map(|lane| fold(&mut run[..full].iter().skip(lane).step_by(16).copied()))
            .collect();
        while partial.len() > 1 {
            let half = partial.len() / 2;
            partial = (0..half).map(|i| partial[i] + partial[i + half]).collect();
        }
        run[full..].iter().fold(partial[0], |a, &b| a + b)
    };
    for threads in [1, 2] {
        let (all, rows, cols) = on_threads(threads, || {
            (x.sum_all(), x.sum(&[1], false), x.sum(&[0], false))
        });
        assert_eq!(all.item().to_f64().to_bits(), lanes(&v).to_f64().to_bits());
        for (r, got) in rows.to_vec().into_iter().enumerate() {
            let want = lanes(&v[r * 300..(r + 1) * 300]);
            assert_eq!(got.to_f64().to_bits(), want.to_f64().to_bits(), "row {r}");
        }
        // Down a column: strided, so a sequential fold.
        for (c, got) in cols.to_vec().into_iter().enumerate() {
            let want = fold(&mut (0..200).map(|r| v[r * 300 + c]));
            assert_eq!(got.to_f64().to_bits(), want.to_f64().to_bits(), "col {c}");
        }
    }
}

#[test]
fn sums_add_in_their_documented_order_f32() {
    sums_in_their_order::<f32>();
}

#[test]
fn sums_add_in_their_documented_order_f64() {
    sums_in_their_order::<f64>();
}

#[test]
fn random_tensors_do_not_depend_on_threads() {
    let draw = || {
        let mut rng = Rng::seed_from_u64(5);
        let u = Tensor::<f32>::rand_uniform(&[100_000], -1.0, 1.0, &mut rng);
        let n = Tensor::<f64>::rand_normal(&[50_000], 0.0, 1.0, &mut rng);
        (bits(&u), bits(&n), rng.state())
    };
    assert!(on_threads(1, draw) == on_threads(2, draw));
}

/// Elementwise ops big enough to split across threads (2^20 elements and more), with runs
/// that do not divide the pieces each thread gets (rows of 1001), so pieces start mid-run,
/// and a reduction over leading dims of the same size: on 2 threads as on 1, bit for bit.
#[test]
fn ops_split_mid_run_give_the_same_bits_on_two_threads() {
    let run = || {
        let mut rng = Rng::seed_from_u64(9);
        let x = Tensor::<f32>::rand_normal(&[1100, 1001], 0.0, 1.0, &mut rng);
        let bias = Tensor::<f32>::rand_normal(&[1001], 0.0, 1.0, &mut rng);
        let xt = x.t(); // a strided view: runs along its inner dim step by 1001
        [
            &x + &bias,
            xt.exp(),
            &xt * &xt.contiguous(),
            x.sigmoid(),
            x.sum(&[0], false),
        ]
        .map(|t| bits(&t))
    };
    let (one, two) = (on_threads(1, run), on_threads(2, run));
    for (k, (a, b)) in one.iter().zip(&two).enumerate() {
        assert!(a == b, "result {k} differs between 1 and 2 threads");
    }
    // And the split values are the right ones: the bias added to the last row.
    let mut rng = Rng::seed_from_u64(9);
    let x = Tensor::<f32>::rand_normal(&[1100, 1001], 0.0, 1.0, &mut rng);
    let bias = Tensor::<f32>::rand_normal(&[1001], 0.0, 1.0, &mut rng);
    let want: Vec<u64> = (x.select(0, 1099).to_vec().iter().zip(bias.to_vec()))
        .map(|(a, b)| ((a + b) as f64).to_bits())
        .collect();
    assert_eq!(&two[0][1099 * 1001..], &want[..]);
}
