//! Saving and loading: safetensors round trips, errors that name the problem and leave the
//! model as it was, atomic writes, corrupted checkpoints (every truncation, random bit flips),
//! and bit-exact resumption of training from a checkpoint.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use autograd::optim::{Adam, AdamConfig, Optimizer, OptimizerState, Sgd, SgdConfig};
use autograd::{Param, Tape};
use common::assert_bits_eq;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rnn::io::{
    load_checkpoint, load_safetensors, save_checkpoint, save_safetensors, state_dict, LoadError,
    SaveError,
};
use rnn::{manual_seed, mse_loss, prefixed, rng_state, LayerConfig, Linear, Lstm, Module};
use tensor::{Float, Rng, Tensor};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("unroll-rnn-io-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Corruption {
    /// A fresh file name for the next corrupted copy.
    fn target(&mut self) -> PathBuf {
        self.cases += 1;
        self.dir
            .file(&format!("corrupt-{}.safetensors", self.cases))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small model: an LSTM (2 layers, dropout between them) and a linear head.
struct Net<T: Float> {
    rnn: Lstm<T>,
    head: Linear<T>,
}

fn config(hidden: usize, bias: bool) -> LayerConfig {
    LayerConfig::new(2, hidden)
        .num_layers(2)
        .dropout(0.3)
        .bias(bias)
}

impl<T: Float> Net<T> {
    fn new(cfg: LayerConfig, seed: u64) -> Self {
        let mut rng = Rng::seed_from_u64(seed);
        let hidden = cfg.hidden_size;
        Net {
            rnn: Lstm::lstm(cfg, &mut rng),
            head: Linear::new(hidden, 1, true, &mut rng),
        }
    }
}

impl<T: Float> Module<T> for Net<T> {
    fn named_params(&self) -> Vec<(String, Param<T>)> {
        let mut v = prefixed("rnn", &self.rnn);
        v.extend(prefixed("head", &self.head));
        v
    }
    fn set_training(&self, on: bool) {
        self.rnn.set_training(on);
    }
}

fn snapshot<T: Float>(m: &dyn Module<T>) -> Vec<(String, Tensor<T>)> {
    state_dict(m)
}

#[track_caller]
fn assert_same_weights<T: Float>(what: &str, a: &[(String, Tensor<T>)], b: &[(String, Tensor<T>)]) {
    assert_eq!(a.len(), b.len(), "{what}");
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb, "{what}");
        assert_bits_eq(&format!("{what}: {na}"), ta, tb);
    }
}

fn differ<T: Float>(a: &[(String, Tensor<T>)], b: &[(String, Tensor<T>)]) -> bool {
    a.iter()
        .zip(b)
        .any(|((_, x), (_, y))| x.to_vec() != y.to_vec())
}

// ---------------------------------------------------------------------------------------------
// Weights
// ---------------------------------------------------------------------------------------------

fn round_trip<T: Float>(dir: &TempDir) {
    let path = dir.file("weights.safetensors");
    let a = Net::<T>::new(config(3, true), 1);
    let b = Net::<T>::new(config(3, true), 2);
    assert!(
        differ(&snapshot(&a), &snapshot(&b)),
        "different seeds, different weights"
    );
    save_safetensors(&a, &path).unwrap();
    assert_eq!(
        dir.entries(),
        ["weights.safetensors"],
        "no temp file is left beside it"
    );
    load_safetensors(&b, &path).unwrap();
    assert_same_weights("after loading", &snapshot(&b), &snapshot(&a));
}

#[test]
fn safetensors_round_trip_f64() {
    round_trip::<f64>(&TempDir::new("round-trip-f64"));
}

#[test]
fn safetensors_round_trip_f32() {
    round_trip::<f32>(&TempDir::new("round-trip-f32"));
}

#[test]
fn files_without_a_checksum_load() {
    // As written by `safetensors.torch.save_file(model.state_dict())`: no Unroll checksum.
    let dir = TempDir::new("foreign");
    let a = Net::<f64>::new(config(3, true), 1);
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = state_dict(&a)
        .into_iter()
        .map(|(n, t)| {
            let data = t.to_vec().iter().flat_map(|v| v.to_le_bytes()).collect();
            (n, data, t.shape().to_vec())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, d, s)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F64, s.clone(), d);
            (n.clone(), v.unwrap())
        })
        .collect();
    let path = dir.file("torch.safetensors");
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    let b = Net::<f64>::new(config(3, true), 2);
    load_safetensors(&b, &path).unwrap();
    assert_same_weights("torch file", &snapshot(&b), &snapshot(&a));
}

/// Saves `from`, loads into `into`, expects an error whose message contains `expected`, and
/// checks that `into` is unchanged.
#[track_caller]
fn expect_load_error<T: Float, U: Float>(
    dir: &TempDir,
    from: &dyn Module<T>,
    into: &dyn Module<U>,
    expected: &str,
) -> LoadError {
    let path = dir.file("model.safetensors");
    save_safetensors(from, &path).unwrap();
    let before = snapshot(into);
    let err = load_safetensors(into, &path).expect_err("the load should fail");
    let msg = err.to_string();
    assert!(
        msg.contains(expected),
        "error «{msg}» does not say «{expected}»"
    );
    assert_same_weights("after a failed load", &snapshot(into), &before);
    err
}

#[test]
fn missing_tensor_is_named() {
    let dir = TempDir::new("missing");
    let err = expect_load_error(
        &dir,
        &Net::<f64>::new(config(3, false), 1),
        &Net::<f64>::new(config(3, true), 2),
        "missing tensor 'rnn.bias_ih_l0'",
    );
    assert!(matches!(err, LoadError::Missing { name } if name == "rnn.bias_ih_l0"));
}

#[test]
fn unexpected_tensor_is_named() {
    let dir = TempDir::new("unexpected");
    let err = expect_load_error(
        &dir,
        &Net::<f64>::new(config(3, true), 1),
        &Net::<f64>::new(config(3, false), 2),
        "unexpected tensor 'rnn.bias_hh_l0'",
    );
    assert!(matches!(err, LoadError::Unexpected { .. }));
}

#[test]
fn wrong_shape_is_named() {
    let dir = TempDir::new("shape");
    let err = expect_load_error(
        &dir,
        &Net::<f64>::new(config(3, true), 1),
        &Net::<f64>::new(config(4, true), 2),
        "tensor 'rnn.weight_ih_l0' has shape [12, 2] in the file, the model expects [16, 2]",
    );
    assert!(matches!(err, LoadError::Shape { .. }));
}

#[test]
fn wrong_dtype_is_named() {
    let dir = TempDir::new("dtype");
    let err = expect_load_error(
        &dir,
        &Net::<f32>::new(config(3, true), 1),
        &Net::<f64>::new(config(3, true), 2),
        "is F32 in the file, the model is F64",
    );
    assert!(matches!(err, LoadError::DType { .. }));
}

#[test]
fn unreadable_and_invalid_files_are_errors() {
    let dir = TempDir::new("not-a-file");
    let model = Net::<f64>::new(config(3, true), 1);
    let before = snapshot(&model);
    // A directory.
    let err = load_safetensors(&model, &dir.0).unwrap_err();
    assert!(matches!(err, LoadError::Io { .. }), "{err}");
    assert!(err.to_string().starts_with("cannot read"), "{err}");
    // Nothing there.
    let err = load_safetensors(&model, dir.file("nope.safetensors")).unwrap_err();
    assert!(err.to_string().contains("nope.safetensors"), "{err}");
    // Not safetensors.
    let text = dir.file("notes.txt");
    std::fs::write(&text, "hello, not a tensor file").unwrap();
    let err = load_safetensors(&model, &text).unwrap_err();
    assert!(
        err.to_string().contains("is not a valid safetensors file"),
        "{err}"
    );
    // Empty.
    let empty = dir.file("empty");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        load_safetensors(&model, &empty).unwrap_err(),
        LoadError::Format { .. }
    ));
    assert_same_weights("after failed loads", &snapshot(&model), &before);
}

#[test]
fn save_errors_leave_nothing_behind() {
    let dir = TempDir::new("save-errors");
    let model = Net::<f64>::new(config(3, true), 1);
    let err = save_safetensors(&model, dir.file("no/such/dir/w.safetensors")).unwrap_err();
    assert!(matches!(err, SaveError::Io { .. }), "{err}");
    assert!(err.to_string().contains("cannot write"), "{err}");
    assert!(dir.entries().is_empty(), "left {:?}", dir.entries());
}

// ---------------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------------

fn adam<T: Float>(net: &Net<T>, lr: f64) -> Adam<T> {
    Adam::new(
        net.params(),
        AdamConfig {
            lr,
            ..Default::default()
        },
    )
}

/// One training step on data determined by `step` (so a resumed run sees the same data); the
/// dropout masks come from this thread's generator.
fn train_step<T: Float>(net: &Net<T>, opt: &mut dyn Optimizer<T>, step: u64) {
    let mut data = Rng::seed_from_u64(1000 + step);
    let x = Tensor::<T>::rand_normal(&[5, 3, 2], T::ZERO, T::ONE, &mut data);
    let y = Tensor::<T>::rand_normal(&[5, 3, 1], T::ZERO, T::ONE, &mut data);
    let tape = Tape::new();
    let out = net.rnn.forward(&tape.constant(x));
    let loss = mse_loss(&net.head.forward(&out.output), &y);
    opt.zero_grad();
    loss.backward();
    opt.step();
}

fn trained_checkpoint(dir: &TempDir) -> (PathBuf, Net<f64>, Adam<f64>) {
    manual_seed(3);
    let net = Net::<f64>::new(config(3, true), 1);
    let mut opt = adam(&net, 0.01);
    for step in 0..2 {
        train_step(&net, &mut opt, step);
    }
    let path = dir.file("ckpt.safetensors");
    save_checkpoint(&path, &net, &opt, 2, &config(3, true)).unwrap();
    (path, net, opt)
}

#[test]
fn checkpoint_save_is_atomic_and_replaces() {
    let dir = TempDir::new("atomic");
    let (path, net, mut opt) = trained_checkpoint(&dir);
    assert_eq!(
        dir.entries(),
        ["ckpt.safetensors"],
        "a temp file was left beside it"
    );
    let first = std::fs::read(&path).unwrap();
    train_step(&net, &mut opt, 2);
    save_checkpoint(&path, &net, &opt, 3, &config(3, true)).unwrap();
    assert_eq!(dir.entries(), ["ckpt.safetensors"]);
    assert_ne!(
        std::fs::read(&path).unwrap(),
        first,
        "the file was replaced"
    );
    let fresh = Net::<f64>::new(config(3, true), 9);
    let info = load_checkpoint(&path, &fresh, &mut adam(&fresh, 0.01)).unwrap();
    assert_eq!(info.step, 3);
    assert_same_weights("latest checkpoint", &snapshot(&fresh), &snapshot(&net));
}

#[test]
fn checkpoint_errors_leave_model_and_optimizer_unchanged() {
    let dir = TempDir::new("ckpt-errors");
    let (path, _, _) = trained_checkpoint(&dir);

    // The wrong optimizer: nothing changes, not even the model (checked before committing)
    // or the generator (restored only on success).
    manual_seed(123);
    let rng_before = rng_state();
    let model = Net::<f64>::new(config(3, true), 5);
    let mut sgd = Sgd::new(model.params(), SgdConfig::default());
    let before = (snapshot(&model), sgd.state());
    let err = load_checkpoint(&path, &model, &mut sgd).unwrap_err();
    assert!(
        err.to_string()
            .contains("optimizer state is for 'adam', not 'sgd'"),
        "{err}"
    );
    assert_same_weights("model", &snapshot(&model), &before.0);
    assert_eq!(sgd.state(), before.1);
    assert_eq!(rng_state(), rng_before);

    // The wrong model: the optimizer keeps its state.
    let other = Net::<f64>::new(config(4, true), 5);
    let mut opt = adam(&other, 0.01);
    train_step(&other, &mut opt, 0);
    let before = (snapshot(&other), opt.state(), rng_state());
    let err = load_checkpoint(&path, &other, &mut opt).unwrap_err();
    assert!(
        err.to_string().contains("has shape [12, 2] in the file"),
        "{err}"
    );
    assert_same_weights("model", &snapshot(&other), &before.0);
    assert_eq!(opt.state(), before.1);
    assert_eq!(rng_state(), before.2);

    // A weights file is not a checkpoint.
    let weights = dir.file("weights.safetensors");
    save_safetensors(&model, &weights).unwrap();
    let err = load_checkpoint(&weights, &model, &mut adam(&model, 0.01)).unwrap_err();
    assert!(
        err.to_string().contains("is not an Unroll checkpoint"),
        "{err}"
    );
}

/// The model's weights, the optimizer's state and the generator's state before a load.
type Before = (Vec<(String, Tensor<f64>)>, OptimizerState<f64>, [u64; 4]);

/// Loads `bytes` as a checkpoint inside `catch_unwind`: it must be an `Err`, not a panic and
/// not a success, and must leave the model, the optimizer and the generator as they were.
fn must_reject(
    path: &Path,
    bytes: &[u8],
    model: &Net<f64>,
    opt: &mut Adam<f64>,
    before: &Before,
    what: &str,
) -> Result<(), TestCaseError> {
    // A new file each time, removed straight after: rewriting one file in place makes ext4
    // flush it to disk on every close (its replace-by-truncate heuristic), which is slow.
    std::fs::write(path, bytes).unwrap();
    let result = catch_unwind(AssertUnwindSafe(|| load_checkpoint(path, model, opt)));
    std::fs::remove_file(path).unwrap();
    match result {
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Err(TestCaseError::fail(format!(
                "{what}: load_checkpoint panicked: {msg}"
            )));
        }
        Ok(Ok(_)) => {
            return Err(TestCaseError::fail(format!("{what}: was loaded")));
        }
        Ok(Err(_)) => {}
    }
    let unchanged =
        snapshot(model) == before.0 && opt.state() == before.1 && rng_state() == before.2;
    prop_assert!(
        unchanged,
        "{}: the model, optimizer or generator changed",
        what
    );
    Ok(())
}

struct Corruption {
    dir: TempDir,
    cases: usize,
    bytes: Vec<u8>,
    model: Net<f64>,
    opt: Adam<f64>,
    before: Before,
}

/// A real checkpoint's bytes, and a model and optimizer (with state of their own) to throw
/// corrupted copies at.
fn corruption_setup(name: &str) -> Corruption {
    let dir = TempDir::new(name);
    let (path, _, _) = trained_checkpoint(&dir);
    let bytes = std::fs::read(&path).unwrap();
    let model = Net::<f64>::new(config(3, true), 8);
    let mut opt = adam(&model, 0.05);
    manual_seed(77);
    train_step(&model, &mut opt, 9);
    // The intact file loads (so every rejection below is due to the corruption).
    {
        let m = Net::<f64>::new(config(3, true), 8);
        load_checkpoint(&path, &m, &mut adam(&m, 0.05)).expect("the intact checkpoint loads");
    }
    manual_seed(77);
    let before = (snapshot(&model), opt.state(), rng_state());
    Corruption {
        dir,
        cases: 0,
        bytes,
        model,
        opt,
        before,
    }
}

#[test]
fn every_truncation_of_a_checkpoint_is_an_error() {
    let mut c = corruption_setup("truncate");
    for len in 0..c.bytes.len() {
        let target = c.target();
        let r = must_reject(
            &target,
            &c.bytes[..len],
            &c.model,
            &mut c.opt,
            &c.before,
            &format!("truncated to {len} of {} bytes", c.bytes.len()),
        );
        if let Err(e) = r {
            panic!("{e}");
        }
    }
}

/// Runs `strategy` through `check` with a fresh runner, panicking with the failure.
fn run_property<S: Strategy>(
    cases: u32,
    strategy: S,
    check: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(e) = runner.run(&strategy, check) {
        panic!("{e}");
    }
}

#[test]
fn corrupted_checkpoints_are_errors() {
    let c = corruption_setup("bitflip");
    let bits = c.bytes.len() * 8;
    let c = std::cell::RefCell::new(c);
    let flip = |bytes: &[u8], which: &[usize]| {
        let mut b = bytes.to_vec();
        for &k in which {
            b[k / 8] ^= 1 << (k % 8);
        }
        b
    };
    // Single bit flips anywhere: header length, JSON header, metadata, tensor data.
    run_property(1500, 0..bits, |k| {
        let c = &mut *c.borrow_mut();
        let bytes = flip(&c.bytes, &[k]);
        let target = c.target();
        must_reject(
            &target,
            &bytes,
            &c.model,
            &mut c.opt,
            &c.before,
            &format!("bit {k} flipped"),
        )
    });
    // Several distinct bits at once.
    run_property(
        500,
        proptest::collection::btree_set(0..bits, 2..=16),
        |ks| {
            let c = &mut *c.borrow_mut();
            let ks: Vec<usize> = ks.into_iter().collect();
            let bytes = flip(&c.bytes, &ks);
            let target = c.target();
            must_reject(
                &target,
                &bytes,
                &c.model,
                &mut c.opt,
                &c.before,
                &format!("bits {ks:?} flipped"),
            )
        },
    );
    // Truncated and then bit-flipped.
    let len = c.borrow().bytes.len();
    run_property(300, (0..len, 0..bits), |(cut, k)| {
        let c = &mut *c.borrow_mut();
        let mut bytes = flip(&c.bytes, &[k]);
        bytes.truncate(cut);
        let target = c.target();
        must_reject(
            &target,
            &bytes,
            &c.model,
            &mut c.opt,
            &c.before,
            &format!("bit {k} flipped, cut at {cut}"),
        )
    });
}

// ---------------------------------------------------------------------------------------------
// Resuming
// ---------------------------------------------------------------------------------------------

/// Train N steps, checkpoint, train M more: the reference. Then a fresh model and optimizer
/// (other initial weights, other learning rate, other generator state) restored from the
/// checkpoint and trained the same M steps end bit-identical to the reference. Dropout 0.3
/// between the LSTM's layers makes the generator state part of what must be restored, and a
/// control run that does not restore it diverges.
fn resume_is_bit_exact<T: Float>(name: &str) {
    let (n, m) = (4, 3);
    let dir = TempDir::new(name);
    let path = dir.file("ckpt.safetensors");
    let cfg = config(4, true);

    manual_seed(42);
    let net = Net::<T>::new(cfg.clone(), 1);
    let mut opt = adam(&net, 0.01);
    for step in 0..n {
        train_step(&net, &mut opt, step);
    }
    save_checkpoint(&path, &net, &opt, n, &cfg).unwrap();
    let at_checkpoint = snapshot(&net);
    for step in n..n + m {
        train_step(&net, &mut opt, step);
    }
    let reference = snapshot(&net);

    let resume = |restore_rng: bool| {
        manual_seed(1234);
        let fresh = Net::<T>::new(cfg.clone(), 2);
        let mut opt = adam(&fresh, 0.5);
        assert!(differ(&snapshot(&fresh), &at_checkpoint));
        let info = load_checkpoint(&path, &fresh, &mut opt).unwrap();
        assert_eq!(info.step, n);
        let saved: LayerConfig = serde_json::from_value(info.config).unwrap();
        assert_eq!(saved, cfg);
        assert_eq!(opt.lr(), 0.01, "the learning rate is restored");
        assert_same_weights("restored", &snapshot(&fresh), &at_checkpoint);
        if !restore_rng {
            manual_seed(1234);
        }
        for step in info.step..info.step + m {
            train_step(&fresh, &mut opt, step);
        }
        snapshot(&fresh)
    };
    assert_same_weights("resumed run", &resume(true), &reference);
    assert!(
        differ(&resume(false), &reference),
        "the generator state made no difference: dropout was not exercised"
    );
}

#[test]
fn resuming_from_a_checkpoint_is_bit_exact_f64() {
    resume_is_bit_exact::<f64>("resume-f64");
}

#[test]
fn resuming_from_a_checkpoint_is_bit_exact_f32() {
    resume_is_bit_exact::<f32>("resume-f32");
}

#[test]
fn checkpoint_without_optimizer_history_round_trips() {
    // A checkpoint saved before any step: Adam has no buffers yet, and loading one resets a
    // trained optimizer to that empty state.
    let dir = TempDir::new("empty-opt");
    let net = Net::<f64>::new(config(3, true), 1);
    let opt = adam(&net, 0.01);
    let path = dir.file("c.safetensors");
    save_checkpoint(&path, &net, &opt, 0, &"no config").unwrap();
    let other = Net::<f64>::new(config(3, true), 2);
    let mut trained = adam(&other, 0.01);
    train_step(&other, &mut trained, 0);
    assert!(!trained.state().buffers.is_empty());
    let info = load_checkpoint(&path, &other, &mut trained).unwrap();
    assert_eq!(info.config, serde_json::json!("no config"));
    assert_eq!(trained.state(), opt.state());
}
