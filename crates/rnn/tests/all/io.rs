//! Saving and loading: safetensors round trips, errors that name the problem and leave the
//! model as it was, atomic writes, corrupted checkpoints (every truncation, random bit flips),
//! and bit-exact resumption of training from a checkpoint.

use crate::common;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use autograd::optim::{Adam, AdamConfig, Optimizer, OptimizerState, Sgd, SgdConfig};
use autograd::{Param, Tape};
use common::assert_bits_eq;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rnn::io::{
    load_checkpoint, load_safetensors, load_safetensors_with, load_state_dict_with,
    read_safetensors, read_safetensors_any, save_checkpoint, save_safetensors, state_dict,
    write_safetensors, AnyTensor, LoadError, LoadOptions, LoadReport, SaveError,
};
use rnn::{manual_seed, mse_loss, prefixed, rng_state, LayerConfig, Linear, Lstm, Module};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
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
    // Integers where a weight should be: PyTorch would copy them in, we refuse.
    let dir = TempDir::new("dtype");
    let model = Net::<f64>::new(config(3, true), 2);
    let mut tensors = raw_state_dict(&Net::<f64>::new(config(3, true), 1));
    let at = tensors.iter().position(|t| t.0 == "head.bias").unwrap();
    tensors[at] = (
        "head.bias".into(),
        Dtype::I64,
        vec![1],
        7i64.to_le_bytes().to_vec(),
    );
    let path = dir.file("ints.safetensors");
    write_raw(&path, &tensors, None);
    let before = snapshot(&model);
    let err = load_safetensors(&model, &path).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor 'head.bias' is I64 in the file, the model is F64"
    );
    assert!(matches!(err, LoadError::DType { .. }));
    assert_same_weights("after a failed load", &snapshot(&model), &before);
}

/// A model's tensors as (name, dtype, shape, little-endian bytes), as PyTorch would write
/// them (f64 values as `Dtype::F64`, f32 as `Dtype::F32`).
type Raw = (String, Dtype, Vec<usize>, Vec<u8>);

fn raw_state_dict<T: Float>(m: &dyn Module<T>) -> Vec<Raw> {
    state_dict(m)
        .into_iter()
        .map(|(n, t)| {
            let (dtype, data) = match T::DTYPE {
                tensor::DType::F32 => (
                    Dtype::F32,
                    t.to_vec()
                        .iter()
                        .flat_map(|v| (v.to_f64() as f32).to_le_bytes())
                        .collect(),
                ),
                _ => (
                    Dtype::F64,
                    t.to_vec()
                        .iter()
                        .flat_map(|v| v.to_f64().to_le_bytes())
                        .collect(),
                ),
            };
            (n, dtype, t.shape().to_vec(), data)
        })
        .collect()
}

/// Writes tensors and metadata with the safetensors crate alone: no Unroll checksum.
fn write_raw(path: &Path, tensors: &[Raw], metadata: Option<HashMap<String, String>>) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, dtype, shape, data)| {
            (
                n.clone(),
                TensorView::new(*dtype, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, metadata).unwrap()).unwrap();
}

/// A file's tensors and metadata as the safetensors crate reads them.
fn read_raw(path: &Path) -> (Vec<Raw>, HashMap<String, String>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut tensors: Vec<Raw> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    (tensors, header.metadata().clone().unwrap_or_default())
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

// ---------------------------------------------------------------------------------------------
// Integrity: a file that says Unroll wrote it must prove it
// ---------------------------------------------------------------------------------------------

/// Bit `bit` of `data` flipped.
fn flipped(data: &[u8], bit: usize) -> Vec<u8> {
    let mut d = data.to_vec();
    d[bit / 8] ^= 1 << (bit % 8);
    d
}

#[test]
fn an_unroll_file_without_its_checksum_is_refused() {
    let dir = TempDir::new("no-checksum");
    let source = Net::<f32>::new(config(3, true), 1);
    let original = dir.file("w.safetensors");
    save_safetensors(&source, &original).unwrap();
    let (tensors, metadata) = read_raw(&original);
    assert_eq!(metadata["unroll_format"], "weights");
    let model = Net::<f32>::new(config(3, true), 2);
    let before = snapshot(&model);
    let mut cases = 0;
    // The checksum key renamed (or dropped), and one bit of one weight flipped: every tensor,
    // every bit of its first element.
    for renamed in ["renamed_key", "checksum", ""] {
        let mut meta = metadata.clone();
        let sum = meta.remove("unroll_checksum").unwrap();
        if !renamed.is_empty() {
            meta.insert(renamed.into(), sum);
        }
        for t in 0..tensors.len() {
            for bit in 0..32 {
                let mut changed = tensors.clone();
                changed[t].3 = flipped(&changed[t].3, bit);
                let path = dir.file("altered.safetensors");
                write_raw(&path, &changed, Some(meta.clone()));
                let err = load_safetensors(&model, &path).expect_err("an altered file loaded");
                assert!(matches!(err, LoadError::NoChecksum { .. }), "{err}");
                cases += 1;
            }
        }
        // Renamed with the data intact is refused too: nothing vouches for it any more.
        let path = dir.file("renamed.safetensors");
        write_raw(&path, &tensors, Some(meta.clone()));
        let err = load_safetensors(&model, &path).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("its metadata says Unroll wrote it, but it has no checksum"),
            "{err}"
        );
    }
    assert!(cases >= 3 * 6 * 32);
    // Either mark alone says it: the checksum key without the format mark, and the format
    // mark without the checksum.
    let mut only_sum = metadata.clone();
    only_sum.remove("unroll_format");
    let path = dir.file("only-sum.safetensors");
    write_raw(&path, &tensors, Some(only_sum));
    assert!(
        matches!(
            load_safetensors(&model, &path),
            Err(LoadError::Checksum { .. })
        ),
        "the format mark is covered by the checksum"
    );
    assert_same_weights("after refused loads", &snapshot(&model), &before);
    // A file from elsewhere (no marks) loads: nothing vouches for its values, as documented.
    let path = dir.file("foreign.safetensors");
    write_raw(&path, &tensors, None);
    load_safetensors(&model, &path).unwrap();
    assert_same_weights("foreign file", &snapshot(&model), &snapshot(&source));
}

#[test]
fn corrupted_weights_files_are_errors() {
    // As the checkpoint sweep below, for a weights file: any flipped bits, never a load.
    let dir = TempDir::new("weights-bitflip");
    let path = dir.file("w.safetensors");
    save_safetensors(&Net::<f32>::new(config(3, true), 1), &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let model = Net::<f32>::new(config(3, true), 2);
    let before = snapshot(&model);
    let target = dir.file("corrupt.safetensors");
    run_property(
        600,
        proptest::collection::btree_set(0..bytes.len() * 8, 1..=8),
        |bits| {
            let mut b = bytes.clone();
            for &k in &bits {
                b = flipped(&b, k);
            }
            std::fs::write(&target, &b).unwrap();
            let result = catch_unwind(AssertUnwindSafe(|| load_safetensors(&model, &target)));
            prop_assert!(
                matches!(result, Ok(Err(_))),
                "bits {:?}: not an error (a panic, or loaded)",
                bits
            );
            prop_assert!(
                snapshot(&model) == before,
                "bits {:?}: weights changed",
                bits
            );
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Saves: racing, killed, through links, over protected files
// ---------------------------------------------------------------------------------------------

#[test]
fn racing_saves_to_one_path_all_succeed_and_leave_one_whole_file() {
    let dir = TempDir::new("race");
    let path = dir.file("w.safetensors");
    // A model per thread (layers are not Sync), the same ones every round.
    let states: Vec<_> = (0..4)
        .map(|s| snapshot(&Net::<f64>::new(config(8, true), s)))
        .collect();
    for round in 0..25 {
        std::thread::scope(|scope| {
            for seed in 0..4 {
                let path = &path;
                scope.spawn(move || {
                    let m = Net::<f64>::new(config(8, true), seed);
                    save_safetensors(&m, path).unwrap_or_else(|e| panic!("round {round}: {e}"))
                });
            }
        });
        let loaded = Net::<f64>::new(config(8, true), 99);
        load_safetensors(&loaded, &path).unwrap();
        let got = snapshot(&loaded);
        assert!(
            states.contains(&got),
            "round {round}: the file holds none of the saved models"
        );
        assert_eq!(dir.entries(), ["w.safetensors"], "round {round}");
    }
}

/// With `UNROLL_SAVE_FOREVER` set (by the test below, in a child process), saves a large
/// model to that path until killed; otherwise does nothing.
#[test]
fn save_forever_when_asked() {
    let Ok(path) = std::env::var("UNROLL_SAVE_FOREVER") else {
        return;
    };
    let model = Linear::<f32>::new(1000, 2000, true, &mut Rng::seed_from_u64(1));
    loop {
        save_safetensors(&model, &path).unwrap();
    }
}

/// The name the test harness gives test `name` of this module: its path without the crate's
/// name (`io::name` in the crate's one test binary).
fn this_module_test(name: &str) -> String {
    let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
    format!("{module}::{name}")
}

#[test]
fn a_killed_save_leaves_the_old_or_new_file_and_no_temporary_one_for_long() {
    let dir = TempDir::new("kill");
    let path = dir.file("w.safetensors");
    let exe = std::env::current_exe().unwrap();
    let model = Linear::<f32>::new(1000, 2000, true, &mut Rng::seed_from_u64(1));
    let mut stale_seen = 0;
    // At least 12 rounds, and more (up to 40) until some kill has landed mid-save: on a
    // loaded machine the child can take most of a short wait just to start.
    for round in 0..40 {
        if round >= 12 && stale_seen > 0 {
            break;
        }
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                &this_module_test("save_forever_when_asked"),
                "--test-threads=1",
            ])
            .env("UNROLL_SAVE_FOREVER", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Long enough for the child to start and be mid-way through some save.
        std::thread::sleep(std::time::Duration::from_millis(150 + 37 * (round % 12)));
        child.kill().unwrap();
        child.wait().unwrap();
        stale_seen += usize::from(dir.entries().len() > 1);
        if path.exists() {
            let loaded = Linear::<f32>::new(1000, 2000, true, &mut Rng::seed_from_u64(2));
            load_safetensors(&loaded, &path)
                .unwrap_or_else(|e| panic!("round {round}: the surviving file is broken: {e}"));
            assert_same_weights("surviving file", &snapshot(&loaded), &snapshot(&model));
        }
        // The next save removes what a killed one left behind.
        save_safetensors(&model, &path).unwrap();
        assert_eq!(dir.entries(), ["w.safetensors"], "round {round}");
    }
    // Not an assertion of the test's purpose, but of its power: some kills must have hit a
    // save mid-way, or the rounds above proved nothing.
    assert!(stale_seen > 0, "no kill landed mid-save in 40 rounds");
}

#[cfg(unix)]
#[test]
fn a_save_through_a_symbolic_link_writes_the_linked_file() {
    use std::os::unix::fs::symlink;
    let dir = TempDir::new("symlink");
    std::fs::create_dir(dir.file("store")).unwrap();
    let target = dir.file("store/weights.safetensors");
    let a = Net::<f64>::new(config(3, true), 1);
    save_safetensors(&Net::<f64>::new(config(3, true), 5), &target).unwrap();
    // A relative link, a link to that link, and a dangling one.
    symlink("store/weights.safetensors", dir.file("latest")).unwrap();
    symlink(dir.file("latest"), dir.file("latest-2")).unwrap();
    symlink("store/new.safetensors", dir.file("dangling")).unwrap();
    for link in ["latest", "latest-2", "dangling"] {
        save_safetensors(&a, dir.file(link)).unwrap();
        let meta = std::fs::symlink_metadata(dir.file(link)).unwrap();
        assert!(meta.file_type().is_symlink(), "{link} is no longer a link");
    }
    for file in ["store/weights.safetensors", "store/new.safetensors"] {
        let b = Net::<f64>::new(config(3, true), 2);
        load_safetensors(&b, dir.file(file)).unwrap();
        assert_same_weights(file, &snapshot(&b), &snapshot(&a));
    }
    let mut store: Vec<String> = std::fs::read_dir(dir.file("store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    store.sort();
    assert_eq!(store, ["new.safetensors", "weights.safetensors"]);
}

#[cfg(unix)]
#[test]
fn a_save_keeps_the_files_mode_and_refuses_a_read_only_one() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("mode");
    let path = dir.file("w.safetensors");
    let a = Net::<f64>::new(config(3, true), 1);
    save_safetensors(&a, &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    save_safetensors(&Net::<f64>::new(config(3, true), 2), &path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the mode was reset to {mode:o}");
    // Read-only: refused, the file and its mode as they were.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let err = save_safetensors(&a, &path).unwrap_err();
    assert!(
        matches!(&err, SaveError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied),
        "{err}"
    );
    assert!(err.to_string().contains("read-only"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o444);
    assert_eq!(dir.entries(), ["w.safetensors"]);
    // A directory in the way is refused too.
    std::fs::create_dir(dir.file("d")).unwrap();
    let err = save_safetensors(&a, dir.file("d")).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

/// Two parameters called `w`.
struct Twins(Param<f64>, Param<f64>);

impl Module<f64> for Twins {
    fn named_params(&self) -> Vec<(String, Param<f64>)> {
        vec![("w".into(), self.0.clone()), ("w".into(), self.1.clone())]
    }
}

#[test]
fn two_parameters_of_one_name_are_a_save_error() {
    let dir = TempDir::new("twins");
    let twins = Twins(
        Param::new("a", Tensor::zeros(&[2])),
        Param::new("b", Tensor::ones(&[3])),
    );
    let path = dir.file("w.safetensors");
    let err = save_safetensors(&twins, &path).unwrap_err();
    assert!(matches!(err, SaveError::DuplicateName { ref name, .. } if name == "w"));
    assert!(
        err.to_string().ends_with("two tensors are named 'w'"),
        "{err}"
    );
    let err = save_checkpoint(
        &path,
        &twins,
        &Sgd::new(twins.params(), SgdConfig::default()),
        0,
        &(),
    )
    .unwrap_err();
    assert!(
        err.to_string().ends_with("two tensors are named 'model/w'"),
        "{err}"
    );
    assert!(dir.entries().is_empty(), "left {:?}", dir.entries());
}

// ---------------------------------------------------------------------------------------------
// Checkpoints whose fields an optimizer would refuse (the checksum recomputed, as a hostile
// editor would)
// ---------------------------------------------------------------------------------------------

/// `path`'s checkpoint with its JSON changed by `edit_json` and its tensors by
/// `edit_tensors`, written with a valid checksum to `out`.
fn tampered(
    path: &Path,
    out: &Path,
    edit_json: impl FnOnce(&mut serde_json::Value),
    edit_tensors: impl FnOnce(&mut Vec<(String, Tensor<f64>)>),
) {
    let file = read_safetensors::<f64>(path).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&file.metadata["unroll"]).unwrap();
    edit_json(&mut json);
    let mut tensors = file.tensors;
    edit_tensors(&mut tensors);
    let metadata = [
        ("format".to_string(), file.metadata["format"].clone()),
        ("unroll".to_string(), json.to_string()),
    ];
    write_safetensors(out, &tensors, metadata.into()).unwrap();
}

#[test]
fn checkpoint_fields_are_checked_as_the_optimizer_checks_its_own() {
    let dir = TempDir::new("tampered");
    let (path, _, _) = trained_checkpoint(&dir);
    let model = Net::<f64>::new(config(3, true), 8);
    let mut opt = adam(&model, 0.05);
    manual_seed(5);
    train_step(&model, &mut opt, 9);
    let before: Before = (snapshot(&model), opt.state(), rng_state());
    let out = dir.file("tampered.safetensors");
    let set = |key: &'static str, v: serde_json::Value| move |j: &mut serde_json::Value| j[key] = v;
    let none = |_: &mut Vec<(String, Tensor<f64>)>| {};
    type Case<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let cases: Vec<Case> = vec![
        (
            "Invalid step count 18446744073709551615 for parameter 0",
            Box::new(|| {
                tampered(
                    &path,
                    &out,
                    |j| j["optimizer_steps"][0] = u64::MAX.into(),
                    none,
                )
            }),
        ),
        (
            "Invalid learning rate: 1e308",
            Box::new(|| tampered(&path, &out, set("optimizer_lr", 1e308.into()), none)),
        ),
        (
            "Invalid learning rate: -1",
            Box::new(|| tampered(&path, &out, set("optimizer_lr", (-1.0).into()), none)),
        ),
        (
            "optimizer state has no buffer '3.exp_avg', which parameter 3 would have after 2 \
             steps",
            Box::new(|| {
                tampered(
                    &path,
                    &out,
                    |_| {},
                    |t| t.retain(|(n, _)| n != "optimizer/3.exp_avg"),
                )
            }),
        ),
        (
            "optimizer state has a buffer '0.max_exp_avg_sq', which this optimizer would not \
             have: its configuration does not use 'max_exp_avg_sq'",
            Box::new(|| {
                tampered(
                    &path,
                    &out,
                    |_| {},
                    |t| {
                        let m = t
                            .iter()
                            .find(|(n, _)| n == "optimizer/0.exp_avg_sq")
                            .unwrap();
                        let copy = ("optimizer/0.max_exp_avg_sq".to_string(), m.1.clone());
                        t.push(copy);
                    },
                )
            }),
        ),
        (
            "optimizer buffer '1.exp_avg_sq' holds -1, which adam never makes",
            Box::new(|| {
                tampered(
                    &path,
                    &out,
                    |_| {},
                    |t| {
                        let b = t
                            .iter_mut()
                            .find(|(n, _)| n == "optimizer/1.exp_avg_sq")
                            .unwrap();
                        b.1.as_mut_slice()[0] = -1.0;
                    },
                )
            }),
        ),
        (
            "optimizer buffer '2.exp_avg' holds NaN, which adam never makes",
            Box::new(|| {
                tampered(
                    &path,
                    &out,
                    |_| {},
                    |t| {
                        let b = t
                            .iter_mut()
                            .find(|(n, _)| n == "optimizer/2.exp_avg")
                            .unwrap();
                        b.1.as_mut_slice()[0] = f64::NAN;
                    },
                )
            }),
        ),
        (
            "its generator state is all zeros",
            Box::new(|| {
                tampered(
                    &path,
                    &out,
                    set("rng", serde_json::json!([0, 0, 0, 0])),
                    none,
                )
            }),
        ),
        (
            "unknown field `extra`",
            Box::new(|| tampered(&path, &out, set("extra", 1.into()), none)),
        ),
    ];
    for (expected, make) in cases {
        make();
        let err = load_checkpoint(&out, &model, &mut opt).expect_err(expected);
        assert!(
            err.to_string().contains(expected),
            "error «{err}» does not say «{expected}»"
        );
        assert_same_weights(expected, &snapshot(&model), &before.0);
        assert_eq!(opt.state(), before.1, "{expected}");
        assert_eq!(rng_state(), before.2, "{expected}");
    }
    // The untouched checkpoint, rewritten the same way, still loads.
    tampered(&path, &out, |_| {}, none);
    load_checkpoint(&out, &model, &mut opt).unwrap();
}

// ---------------------------------------------------------------------------------------------
// PyTorch's files as they come: mixed dtypes, larger models, other float types
// ---------------------------------------------------------------------------------------------

#[test]
fn every_tensor_is_read_in_its_own_dtype() {
    let dir = TempDir::new("any-dtype");
    let path = dir.file("mixed.safetensors");
    let f16: Vec<u8> = [0x3c00u16, 0xc000, 0x3555]
        .iter()
        .flat_map(|h| h.to_le_bytes())
        .collect();
    let bf16: Vec<u8> = [0x3f80u16, 0xc0a0]
        .iter()
        .flat_map(|h| h.to_le_bytes())
        .collect();
    let tensors: Vec<Raw> = vec![
        (
            "weight".into(),
            Dtype::F32,
            vec![2],
            [1.5f32, -2.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (
            "lengths".into(),
            Dtype::I64,
            vec![3],
            [5i64, 3, 1].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        ("half".into(), Dtype::F16, vec![3], f16),
        ("brain".into(), Dtype::BF16, vec![2], bf16),
        ("mask".into(), Dtype::BOOL, vec![2], vec![1, 0]),
        ("bytes".into(), Dtype::U8, vec![2], vec![255, 7]),
        (
            "small".into(),
            Dtype::I32,
            vec![1],
            (-4i32).to_le_bytes().to_vec(),
        ),
        ("fp8".into(), Dtype::F8_E4M3, vec![2], vec![0x38, 0x40]),
    ];
    write_raw(&path, &tensors, None);
    let file = read_safetensors_any(&path).unwrap();
    let get = |name: &str| &file.tensors.iter().find(|(n, _)| n == name).unwrap().1;
    assert!(matches!(get("weight"), AnyTensor::F32(t) if t.to_vec() == [1.5, -2.0]));
    assert!(matches!(get("lengths"), AnyTensor::I64(t) if t.to_vec() == [5, 3, 1]));
    assert!(matches!(get("half"), AnyTensor::F32(t) if t.to_vec() == [1.0, -2.0, 0.333_251_95]));
    assert!(matches!(get("brain"), AnyTensor::F32(t) if t.to_vec() == [1.0, -5.0]));
    assert!(matches!(get("mask"), AnyTensor::Bool(t) if t.to_vec() == [true, false]));
    assert!(matches!(get("bytes"), AnyTensor::I64(t) if t.to_vec() == [255, 7]));
    assert!(matches!(get("small"), AnyTensor::I64(t) if t.to_vec() == [-4]));
    assert!(
        matches!(get("fp8"), AnyTensor::Other { dtype, shape } if dtype == "F8_E4M3" && shape == &[2])
    );
    assert_eq!(get("half").dtype_name(), "F32");
    assert!(!file.checksummed);
    // The float reader names the first tensor it cannot give as a float.
    let err = read_safetensors::<f32>(&path).err().unwrap();
    assert_eq!(
        err.to_string(),
        "tensor 'bytes' is I64 in the file, the model is F32"
    );
}

#[test]
fn float_tensors_load_into_either_float_type() {
    // As `load_state_dict` copies a float16/32/64 tensor into a parameter of another type.
    let dir = TempDir::new("cast");
    let path = dir.file("w.safetensors");
    let f64_model = Net::<f64>::new(config(3, true), 1);
    save_safetensors(&f64_model, &path).unwrap();
    let f32_model = Net::<f32>::new(config(3, true), 2);
    load_safetensors(&f32_model, &path).unwrap();
    for ((n, a), (_, b)) in snapshot(&f32_model).iter().zip(snapshot(&f64_model)) {
        let rounded: Vec<f32> = b.to_vec().iter().map(|&v| v as f32).collect();
        assert_eq!(a.to_vec(), rounded, "{n}");
    }
    save_safetensors(&f32_model, &path).unwrap();
    let back = Net::<f64>::new(config(3, true), 3);
    load_safetensors(&back, &path).unwrap();
    for ((n, a), (_, b)) in snapshot(&back).iter().zip(snapshot(&f32_model)) {
        let widened: Vec<f64> = b.to_vec().iter().map(|&v| v as f64).collect();
        assert_eq!(a.to_vec(), widened, "{n}");
    }
    // A checkpoint resumes exactly, so it does not convert.
    let (ckpt, _, _) = trained_checkpoint(&dir);
    let err = load_checkpoint(&ckpt, &f32_model, &mut adam(&f32_model, 0.1)).unwrap_err();
    assert!(
        err.to_string()
            .contains("is F64 in the file, the model is F32"),
        "{err}"
    );
}

#[test]
fn a_layer_loads_from_under_a_prefix_of_a_larger_models_state_dict() {
    // `safetensors.torch.save_file(seq2seq.state_dict())`: an encoder LSTM, a decoder and
    // integer buffers beside them.
    let dir = TempDir::new("prefix");
    let path = dir.file("seq2seq.safetensors");
    let source: Lstm<f32> = Lstm::lstm(LayerConfig::new(3, 4), &mut Rng::seed_from_u64(1));
    let head = Linear::<f32>::new(4, 2, true, &mut Rng::seed_from_u64(2));
    let mut tensors: Vec<Raw> = raw_state_dict(&source)
        .into_iter()
        .map(|(n, d, s, b)| (format!("encoder.lstm.{n}"), d, s, b))
        .collect();
    tensors.extend(
        raw_state_dict(&head)
            .into_iter()
            .map(|(n, d, s, b)| (format!("decoder.{n}"), d, s, b)),
    );
    tensors.push((
        "encoder.steps".into(),
        Dtype::I64,
        vec![],
        9i64.to_le_bytes().to_vec(),
    ));
    write_raw(
        &path,
        &tensors,
        Some([("format".into(), "pt".into())].into()),
    );

    let lstm: Lstm<f32> = Lstm::lstm(LayerConfig::new(3, 4), &mut Rng::seed_from_u64(3));
    // Strict and without a prefix: the first of the layer's names is missing.
    let err = load_safetensors(&lstm, &path).unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing tensor 'weight_ih_l0': the model has this parameter, the file does not"
    );
    // Under the prefix, strictly: exactly the layer's tensors.
    let report =
        load_safetensors_with(&lstm, &path, &LoadOptions::new().prefix("encoder.lstm")).unwrap();
    assert_eq!(report, LoadReport::default());
    assert_same_weights(
        "from under the prefix",
        &snapshot(&lstm),
        &snapshot(&source),
    );
    // Under "encoder", the layer's names are one level down: missing.
    let err =
        load_safetensors_with(&lstm, &path, &LoadOptions::new().prefix("encoder")).unwrap_err();
    assert!(matches!(err, LoadError::Missing { .. }), "{err}");
    // Not strict, no prefix: nothing matches, and both lists say so.
    let fresh: Lstm<f32> = Lstm::lstm(LayerConfig::new(3, 4), &mut Rng::seed_from_u64(4));
    let untouched = snapshot(&fresh);
    let report = load_safetensors_with(&fresh, &path, &LoadOptions::new().strict(false)).unwrap();
    assert_eq!(
        report.missing_keys,
        ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    );
    assert_eq!(report.unexpected_keys.len(), tensors.len());
    assert_eq!(report.unexpected_keys[0], "decoder.bias");
    assert_same_weights("nothing loaded", &snapshot(&fresh), &untouched);
}

#[test]
fn a_non_strict_load_reports_and_keeps_what_is_missing_but_refuses_a_wrong_shape() {
    let mut d: HashMap<String, Tensor<f64>> = state_dict(&Net::<f64>::new(config(3, true), 1))
        .into_iter()
        .collect();
    let model = Net::<f64>::new(config(3, true), 2);
    let kept = model.head.weight.value();
    d.remove("head.weight");
    d.insert("extra.scale".into(), Tensor::ones(&[1]));
    let non_strict = LoadOptions::new().strict(false);
    let report = load_state_dict_with(&model, &d, &non_strict).unwrap();
    assert_eq!(report.missing_keys, ["head.weight"]);
    assert_eq!(report.unexpected_keys, ["extra.scale"]);
    assert_bits_eq("kept", &model.head.weight.value(), &kept);
    assert_bits_eq(
        "loaded",
        &model.head.bias.as_ref().unwrap().value(),
        &d["head.bias"],
    );
    // A wrong shape is an error even when not strict, as in PyTorch, and changes nothing.
    d.insert("head.bias".into(), Tensor::zeros(&[2]));
    let before = snapshot(&model);
    let err = load_state_dict_with(&model, &d, &non_strict).unwrap_err();
    assert!(matches!(err, LoadError::Shape { .. }), "{err}");
    assert_same_weights("after a failed load", &snapshot(&model), &before);
}

#[test]
fn a_cell_is_a_module_with_pytorchs_names() {
    let dir = TempDir::new("cell-module");
    let path = dir.file("cell.safetensors");
    let cell = rnn::LstmCell::<f64>::new(3, 2, &mut Rng::seed_from_u64(1));
    save_safetensors(&cell, &path).unwrap();
    let names: Vec<String> = read_raw(&path).0.into_iter().map(|t| t.0).collect();
    assert_eq!(names, ["bias_hh", "bias_ih", "weight_hh", "weight_ih"]);
    let other = rnn::LstmCell::<f64>::new(3, 2, &mut Rng::seed_from_u64(2));
    load_safetensors(&other, &path).unwrap();
    assert_same_weights("cell", &snapshot(&other), &snapshot(&cell));
}

#[test]
fn a_file_shape_whose_strides_overflow_is_an_error() {
    // [0, 2^40, 2^40] has no elements, so no bytes, but strides of 2^80: written by hand, as
    // a hostile file would be.
    let dir = TempDir::new("huge-shape");
    let header =
        r#"{"x":{"dtype":"F32","shape":[0,1099511627776,1099511627776],"data_offsets":[0,0]}}"#;
    let mut header = header.as_bytes().to_vec();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(&header);
    let path = dir.file("huge.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let result = catch_unwind(|| read_safetensors_any(&path).map(|_| ()));
    let err = result.expect("no panic").expect_err("an error");
    assert!(matches!(err, LoadError::Format { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("more elements than this machine can address")
            || err.to_string().contains("overflow"),
        "{err}"
    );
}
