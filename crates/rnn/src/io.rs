//! Saving and loading: weights as safetensors (interchangeable with
//! `safetensors.torch.save_file(model.state_dict())`), and training checkpoints.
//!
//! A checkpoint is one safetensors file: the model's tensors under `model/<name>`, the
//! optimizer's buffers under `optimizer/<key>`, and everything else (step, RNG state,
//! optimizer kind and step counts, your config) as JSON, written with serde, in the file's
//! metadata. Not bincode: every bincode release is marked unmaintained (RUSTSEC-2025-0141)
//! and bincode 3.0 is a deliberate compile error.
//!
//! Every file Unroll writes carries a 64-bit FNV-1a checksum of its tensors and JSON, so a
//! flipped bit is an error on load rather than a silently wrong weight. Files are written to a
//! temporary name in the same directory, synced, and renamed over the target, so a crash
//! mid-save never leaves a half-written file. Loading checks every name, shape and dtype
//! before changing anything: a bad file is an `Err` naming the first problem, and the model
//! is left as it was.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use autograd::optim::{Optimizer, OptimizerState};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use tensor::{DType, Float, Tensor};
use thiserror::Error;

use crate::module::{rng_state, set_rng_state, Module};

/// Why a file could not be loaded. The model and optimizer are unchanged when this is returned.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The bytes are not a valid safetensors file (truncated, corrupted, or another format).
    #[error("{path} is not a valid safetensors file: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The checksum Unroll wrote does not match the contents: the file was corrupted.
    #[error("{path} is corrupted: its checksum does not match its contents")]
    Checksum {
        /// The file.
        path: PathBuf,
    },
    /// A valid safetensors file, but not what was asked for (e.g. not a checkpoint).
    #[error("{path} is not {expected}: {reason}")]
    Foreign {
        /// The file.
        path: PathBuf,
        /// What was expected.
        expected: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The model has a parameter the file lacks.
    #[error("missing tensor '{name}': the model has this parameter, the file does not")]
    Missing {
        /// The parameter.
        name: String,
    },
    /// The file has a tensor the model lacks.
    #[error("unexpected tensor '{name}': the file has it, the model has no such parameter")]
    Unexpected {
        /// The tensor.
        name: String,
    },
    /// A tensor of the wrong shape.
    #[error("tensor '{name}' has shape {found:?} in the file, the model expects {expected:?}")]
    Shape {
        /// The tensor.
        name: String,
        /// The model's shape.
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
    },
    /// A tensor of the wrong element type.
    #[error("tensor '{name}' is {found} in the file, the model is {expected}")]
    DType {
        /// The tensor.
        name: String,
        /// The model's type.
        expected: String,
        /// The file's type.
        found: String,
    },
    /// The optimizer state in a checkpoint does not fit the optimizer.
    #[error("optimizer state: {0}")]
    Optimizer(#[from] autograd::optim::StateError),
}

/// Why a file could not be written. Nothing is left at the target path then.
#[derive(Debug, Error)]
pub enum SaveError {
    /// Writing, syncing or renaming failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The tensors or metadata could not be serialised.
    #[error("cannot serialise {path}: {reason}")]
    Serialize {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

// ---------------------------------------------------------------------------------------------
// State dicts
// ---------------------------------------------------------------------------------------------

/// The model's parameters by name, like PyTorch's `state_dict()`.
pub fn state_dict<T: Float>(model: &dyn Module<T>) -> Vec<(String, Tensor<T>)> {
    model
        .named_params()
        .into_iter()
        .map(|(name, p)| (name, p.value()))
        .collect()
}

/// Loads parameters by name, strictly: every parameter must be present with its shape, and
/// no other tensor may be. Nothing is changed unless everything fits.
///
/// # Errors
/// The first missing, unexpected or misshapen tensor.
pub fn load_state_dict<T: Float>(
    model: &dyn Module<T>,
    tensors: &HashMap<String, Tensor<T>>,
) -> Result<(), LoadError> {
    for (p, t) in match_state_dict(model, tensors)? {
        p.set_value(t.clone());
    }
    Ok(())
}

/// A parameter and the tensor to load into it.
type Assignment<'a, T> = (autograd::Param<T>, &'a Tensor<T>);

/// Pairs every parameter with its tensor, checking names and shapes strictly, without changing
/// anything: the check half of [`load_state_dict`], which checkpoints run before touching the
/// optimizer.
fn match_state_dict<'a, T: Float>(
    model: &dyn Module<T>,
    tensors: &'a HashMap<String, Tensor<T>>,
) -> Result<Vec<Assignment<'a, T>>, LoadError> {
    let params = model.named_params();
    let mut assignments = Vec::with_capacity(params.len());
    for (name, p) in &params {
        let t = tensors
            .get(name)
            .ok_or_else(|| LoadError::Missing { name: name.clone() })?;
        if t.shape() != p.shape().as_slice() {
            return Err(LoadError::Shape {
                name: name.clone(),
                expected: p.shape(),
                found: t.shape().to_vec(),
            });
        }
        assignments.push((p.clone(), t));
    }
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    if let Some(extra) = names
        .into_iter()
        .find(|n| !params.iter().any(|(pn, _)| pn == *n))
    {
        return Err(LoadError::Unexpected {
            name: extra.clone(),
        });
    }
    Ok(assignments)
}

/// Writes the model's parameters as a safetensors file (atomically).
///
/// # Errors
/// If the file cannot be written.
pub fn save_safetensors<T: Float>(
    model: &dyn Module<T>,
    path: impl AsRef<Path>,
) -> Result<(), SaveError> {
    write_safetensors(path.as_ref(), &state_dict(model), BTreeMap::new())
}

/// Loads the model's parameters from a safetensors file, e.g. one written by
/// `safetensors.torch.save_file(model.state_dict(), path)`.
///
/// # Errors
/// If the file cannot be read, is not valid, is corrupted, or does not fit the model.
pub fn load_safetensors<T: Float>(
    model: &dyn Module<T>,
    path: impl AsRef<Path>,
) -> Result<(), LoadError> {
    let file = read_safetensors::<T>(path.as_ref())?;
    load_state_dict(model, &file.tensors.into_iter().collect())
}

// ---------------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------------

const CHECKPOINT_FORMAT: &str = "unroll-checkpoint";
const CHECKPOINT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct CheckpointMeta {
    version: u32,
    step: u64,
    rng: [u64; 4],
    optimizer_kind: String,
    optimizer_lr: f64,
    optimizer_steps: Vec<u64>,
    config: serde_json::Value,
}

/// What a loaded checkpoint says besides the tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointInfo {
    /// The training step it was saved at.
    pub step: u64,
    /// The configuration saved with it.
    pub config: serde_json::Value,
}

/// Saves a training checkpoint: the model, the optimizer's state, the step, this thread's
/// generator state (see [`manual_seed`](crate::manual_seed)) and `config`, so training resumes
/// bit-exactly with [`load_checkpoint`].
///
/// # Errors
/// If the file cannot be written or `config` cannot be serialised.
pub fn save_checkpoint<T: Float>(
    path: impl AsRef<Path>,
    model: &dyn Module<T>,
    optimizer: &dyn Optimizer<T>,
    step: u64,
    config: &impl Serialize,
) -> Result<(), SaveError> {
    let path = path.as_ref();
    let opt = optimizer.state();
    let config = serde_json::to_value(config).map_err(|e| SaveError::Serialize {
        path: path.into(),
        reason: e.to_string(),
    })?;
    let meta = CheckpointMeta {
        version: CHECKPOINT_VERSION,
        step,
        rng: rng_state(),
        optimizer_kind: opt.kind.clone(),
        optimizer_lr: opt.lr,
        optimizer_steps: opt.steps.clone(),
        config,
    };
    let json = serde_json::to_string(&meta).map_err(|e| SaveError::Serialize {
        path: path.into(),
        reason: e.to_string(),
    })?;
    let mut tensors: Vec<(String, Tensor<T>)> = state_dict(model)
        .into_iter()
        .map(|(n, t)| (format!("model/{n}"), t))
        .collect();
    tensors.extend(
        opt.buffers
            .into_iter()
            .map(|(k, t)| (format!("optimizer/{k}"), t)),
    );
    let metadata = BTreeMap::from([
        ("format".to_string(), CHECKPOINT_FORMAT.to_string()),
        ("unroll".to_string(), json),
    ]);
    write_safetensors(path, &tensors, metadata)
}

/// Restores a checkpoint written by [`save_checkpoint`] into `model` and `optimizer`, and
/// restores this thread's generator. Everything is checked before anything changes.
///
/// # Errors
/// If the file is unreadable, truncated, corrupted, not a checkpoint, or does not fit the
/// model or optimizer; the error names the first problem.
pub fn load_checkpoint<T: Float>(
    path: impl AsRef<Path>,
    model: &dyn Module<T>,
    optimizer: &mut dyn Optimizer<T>,
) -> Result<CheckpointInfo, LoadError> {
    let path = path.as_ref();
    let file = read_safetensors::<T>(path)?;
    let foreign = |reason: String| LoadError::Foreign {
        path: path.into(),
        expected: "an Unroll checkpoint",
        reason,
    };
    match file.metadata.get("format") {
        Some(f) if f == CHECKPOINT_FORMAT => {}
        other => return Err(foreign(format!("its metadata format is {other:?}"))),
    }
    if !file.checksummed {
        return Err(foreign("it has no checksum".into()));
    }
    let json = file
        .metadata
        .get("unroll")
        .ok_or_else(|| foreign("its metadata has no 'unroll' entry".into()))?;
    let meta: CheckpointMeta = serde_json::from_str(json)
        .map_err(|e| foreign(format!("its JSON metadata is invalid: {e}")))?;
    if meta.version != CHECKPOINT_VERSION {
        return Err(foreign(format!(
            "it is version {}, this is version {CHECKPOINT_VERSION}",
            meta.version
        )));
    }
    let mut model_tensors = HashMap::new();
    let mut buffers = Vec::new();
    for (name, t) in file.tensors {
        if let Some(n) = name.strip_prefix("model/") {
            model_tensors.insert(n.to_string(), t);
        } else if let Some(k) = name.strip_prefix("optimizer/") {
            buffers.push((k.to_string(), t));
        } else {
            return Err(LoadError::Unexpected { name });
        }
    }
    // Check the model fully without changing it, then the optimizer (which changes only on
    // success), then commit the model.
    let assignments = match_state_dict(model, &model_tensors)?;
    optimizer.load_state(&OptimizerState {
        kind: meta.optimizer_kind,
        lr: meta.optimizer_lr,
        steps: meta.optimizer_steps,
        buffers,
    })?;
    for (p, t) in assignments {
        p.set_value(t.clone());
    }
    set_rng_state(meta.rng);
    Ok(CheckpointInfo {
        step: meta.step,
        config: meta.config,
    })
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// The contents of a safetensors file.
pub struct SafetensorsFile<T: Float> {
    /// The tensors in file order.
    pub tensors: Vec<(String, Tensor<T>)>,
    /// The string metadata.
    pub metadata: HashMap<String, String>,
    /// Whether the file carried an Unroll checksum (which was then verified).
    pub checksummed: bool,
}

/// Reads a safetensors file of `T` tensors, verifying the Unroll checksum if it has one.
///
/// # Errors
/// If the file is unreadable, invalid, corrupted, or holds tensors of another dtype.
pub fn read_safetensors<T: Float>(path: &Path) -> Result<SafetensorsFile<T>, LoadError> {
    let bytes = fs::read(path).map_err(|source| LoadError::Io {
        path: path.into(),
        source,
    })?;
    let format_err = |reason: String| LoadError::Format {
        path: path.into(),
        reason,
    };
    let st = SafeTensors::deserialize(&bytes).map_err(|e| format_err(e.to_string()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| format_err(e.to_string()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let mut tensors = Vec::new();
    let mut views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, view) in &views {
        let expected = dtype_of::<T>();
        if view.dtype() != expected {
            return Err(LoadError::DType {
                name: name.clone(),
                expected: format!("{:?}", expected),
                found: format!("{:?}", view.dtype()),
            });
        }
        let values: Vec<T> = match T::DTYPE {
            DType::F32 => view
                .data()
                .chunks_exact(4)
                .map(|b| T::from_f64(f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64))
                .collect(),
            _ => view
                .data()
                .chunks_exact(8)
                .map(|b| T::from_f64(f64::from_le_bytes(b.try_into().expect("8 bytes"))))
                .collect(),
        };
        let t = Tensor::try_from_vec(values, view.shape())
            .map_err(|e| format_err(format!("tensor '{name}': {e}")))?;
        tensors.push((name.clone(), t));
    }
    let checksummed = match metadata.get(CHECKSUM_KEY) {
        Some(stored) => {
            if *stored != checksum(&views, &metadata) {
                return Err(LoadError::Checksum { path: path.into() });
            }
            true
        }
        None => false,
    };
    Ok(SafetensorsFile {
        tensors,
        metadata,
        checksummed,
    })
}

/// Writes tensors and string metadata as a safetensors file, with an Unroll checksum, through
/// a temporary file that is synced and renamed over `path`.
///
/// # Errors
/// If serialising, writing, syncing or renaming fails; no file is left at `path` then (an
/// older file there is kept).
pub fn write_safetensors<T: Float>(
    path: &Path,
    tensors: &[(String, Tensor<T>)],
    mut metadata: BTreeMap<String, String>,
) -> Result<(), SaveError> {
    let owned: Vec<(String, Bytes)> = tensors
        .iter()
        .map(|(name, t)| (name.clone(), Bytes::from_tensor(t)))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> =
        owned.iter().map(|(n, b)| (n.clone(), b.view())).collect();
    let mut sorted = views.clone();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    metadata.remove(CHECKSUM_KEY);
    let as_map: HashMap<String, String> = metadata.clone().into_iter().collect();
    metadata.insert(CHECKSUM_KEY.to_string(), checksum(&sorted, &as_map));
    let bytes =
        safetensors::serialize(views, Some(metadata.into_iter().collect())).map_err(|e| {
            SaveError::Serialize {
                path: path.into(),
                reason: e.to_string(),
            }
        })?;
    write_atomically(path, &bytes)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SaveError> {
    let io = |source| SaveError::Io {
        path: path.into(),
        source,
    };
    let file_name = path.file_name().ok_or_else(|| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path has no file name",
        ))
    })?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}

const CHECKSUM_KEY: &str = "unroll_checksum";

/// FNV-1a (64-bit) over every tensor's name, dtype, shape and bytes in name order, then every
/// metadata entry but the checksum itself in key order.
fn checksum(
    views: &[(String, safetensors::tensor::TensorView<'_>)],
    metadata: &HashMap<String, String>,
) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (name, v) in views {
        feed(name.as_bytes());
        feed(format!("\0{:?}{:?}\0", v.dtype(), v.shape()).as_bytes());
        feed(v.data());
    }
    let mut keys: Vec<&String> = metadata.keys().filter(|k| *k != CHECKSUM_KEY).collect();
    keys.sort();
    for k in keys {
        feed(k.as_bytes());
        feed(b"\0");
        feed(metadata[k].as_bytes());
        feed(b"\0");
    }
    format!("{h:016x}")
}

fn dtype_of<T: Float>() -> Dtype {
    match T::DTYPE {
        DType::F32 => Dtype::F32,
        _ => Dtype::F64,
    }
}

/// A tensor's little-endian bytes.
struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Bytes {
    fn from_tensor<T: Float>(t: &Tensor<T>) -> Self {
        let values = t.to_vec();
        let data = match T::DTYPE {
            DType::F32 => values
                .iter()
                .flat_map(|v| (v.to_f64() as f32).to_le_bytes())
                .collect(),
            _ => values
                .iter()
                .flat_map(|v| v.to_f64().to_le_bytes())
                .collect(),
        };
        Bytes {
            dtype: dtype_of::<T>(),
            shape: t.shape().to_vec(),
            data,
        }
    }

    fn view(&self) -> safetensors::tensor::TensorView<'_> {
        safetensors::tensor::TensorView::new(self.dtype, self.shape.clone(), &self.data)
            .expect("the byte length matches the shape")
    }
}
