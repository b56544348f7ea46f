//! Training checkpoints: the model, the optimizer's state, the step, the generator and your
//! config in one safetensors file, so that training resumes bit-exactly.
//!
//! The model's tensors are stored under `model/<name>`, the optimizer's buffers under
//! `optimizer/<key>`, and everything else as JSON (serde) in the metadata entry `unroll`, with
//! `format = unroll-checkpoint`. A load checks everything before it changes anything: the
//! checksum, the names, shapes and dtypes, and every field as the optimizer checks its own
//! configuration (learning rate, step counts, which buffers a step count implies, their
//! values); the generator's state must be one Xoshiro can be in.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use autograd::optim::{Optimizer, OptimizerState};
use serde::{Deserialize, Serialize};
use tensor::{Float, Tensor};

use super::file::{read_safetensors_any, write_safetensors};
use super::state::{commit, match_params, state_dict, LoadOptions};
use super::{LoadError, SaveError};
use crate::module::{rng_state, set_rng_state, Module};

const CHECKPOINT_FORMAT: &str = "unroll-checkpoint";
const CHECKPOINT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
/// If the file cannot be written, `config` cannot be serialised, or two parameters share a
/// name.
pub fn save_checkpoint<T: Float>(
    path: impl AsRef<Path>,
    model: &dyn Module<T>,
    optimizer: &dyn Optimizer<T>,
    step: u64,
    config: &impl Serialize,
) -> Result<(), SaveError> {
    let path = path.as_ref();
    let serialize = |e: serde_json::Error| SaveError::Serialize {
        path: path.into(),
        reason: e.to_string(),
    };
    let opt = optimizer.state();
    let meta = CheckpointMeta {
        version: CHECKPOINT_VERSION,
        step,
        rng: rng_state(),
        optimizer_kind: opt.kind.clone(),
        optimizer_lr: opt.lr,
        optimizer_steps: opt.steps.clone(),
        config: serde_json::to_value(config).map_err(serialize)?,
    };
    let json = serde_json::to_string(&meta).map_err(serialize)?;
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
/// If the file is unreadable, truncated, corrupted, not a checkpoint, holds a field the
/// optimizer would refuse (see the module doc), or does not fit the model or optimizer; the
/// error names the first problem.
pub fn load_checkpoint<T: Float>(
    path: impl AsRef<Path>,
    model: &dyn Module<T>,
    optimizer: &mut dyn Optimizer<T>,
) -> Result<CheckpointInfo, LoadError> {
    let path = path.as_ref();
    let file = read_safetensors_any(path)?;
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
    if meta.rng == [0; 4] {
        return Err(foreign(
            "its generator state is all zeros, which no generator can be in".into(),
        ));
    }
    // A checkpoint resumes exactly, so its tensors must be of the model's type already.
    let mut model_tensors = HashMap::new();
    let mut buffers = Vec::new();
    for (name, t) in file.tensors {
        let same_type = t.dtype_name() == dtype::<T>();
        let Some(value) = same_type.then(|| t.to_float::<T>()).flatten() else {
            return Err(LoadError::DType {
                name,
                expected: dtype::<T>(),
                found: t.dtype_name(),
            });
        };
        if let Some(n) = name.strip_prefix("model/") {
            model_tensors.insert(n.to_string(), value);
        } else if let Some(k) = name.strip_prefix("optimizer/") {
            buffers.push((k.to_string(), value));
        } else {
            return Err(LoadError::Unexpected { name });
        }
    }
    // Check the model fully without changing it, then the optimizer (which changes only on
    // success), then commit the model.
    let keys: Vec<&String> = model_tensors.keys().collect();
    let (assignments, _) = match_params(model, &keys, &LoadOptions::default(), |k| {
        Ok(model_tensors[k].clone())
    })?;
    optimizer.load_state(&OptimizerState {
        kind: meta.optimizer_kind,
        lr: meta.optimizer_lr,
        steps: meta.optimizer_steps,
        buffers,
    })?;
    commit(assignments);
    set_rng_state(meta.rng);
    Ok(CheckpointInfo {
        step: meta.step,
        config: meta.config,
    })
}

/// The file's name for `T`'s dtype (`"F32"`).
fn dtype<T: Float>() -> String {
    format!("{:?}", T::DTYPE)
}
