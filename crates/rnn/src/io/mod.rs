//! Saving and loading: weights as safetensors (interchangeable with
//! `safetensors.torch.save_file(model.state_dict())` and PyTorch's `load_state_dict`), and
//! training checkpoints.
//!
//! - [`state`](state_dict): state dicts, loaded strictly or not and from under a prefix
//!   ([`LoadOptions`]), with float tensors converted to the model's type.
//! - `file`: safetensors files, read with every tensor in its own dtype ([`AnyTensor`]),
//!   written with a checksum; what a read verifies, for Unroll's files and for others, is in
//!   [`read_safetensors_any`].
//! - `atomic`: every save writes a temporary file of its own, syncs it and renames it over
//!   the target, so a crash or a racing save never leaves half a file or a stray temporary
//!   one ([`write_safetensors`] says what that means for links and permissions).
//! - `checkpoint`: a training checkpoint is one safetensors file, the model and optimizer
//!   tensors plus everything else as JSON (serde) in its metadata. Not bincode: every bincode
//!   release is marked unmaintained (RUSTSEC-2025-0141).
//!
//! Loading checks every name, shape and dtype before changing anything: a bad file is an
//! `Err` naming the first problem, never a panic, and the model is left as it was.

mod atomic;
mod checkpoint;
mod file;
mod state;

use std::path::{Path, PathBuf};

use tensor::Float;
use thiserror::Error;

use crate::module::Module;

pub use checkpoint::{load_checkpoint, save_checkpoint, CheckpointInfo};
pub use file::{
    read_safetensors, read_safetensors_any, write_safetensors, AnyTensor, SafetensorsFile,
};
pub use state::{
    load_safetensors, load_safetensors_with, load_state_dict, load_state_dict_with, state_dict,
    LoadOptions, LoadReport,
};

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
    /// The file says Unroll wrote it, but its checksum is gone: it was altered or corrupted.
    #[error("{path} is corrupted: its metadata says Unroll wrote it, but it has no checksum")]
    NoChecksum {
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

/// Why a file could not be written. The target is unchanged then, and no temporary file is
/// left behind.
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
    /// Two tensors (parameters) have one name, so one would be lost.
    #[error("cannot write {path}: two tensors are named '{name}'")]
    DuplicateName {
        /// The file.
        path: PathBuf,
        /// The name.
        name: String,
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

/// Writes the model's parameters as a safetensors file, atomically, with a checksum and
/// the mark `unroll_format = weights` in its metadata.
///
/// Through a symbolic link, the file the link points to is written and the link stays; an
/// existing file keeps its permissions; a read-only file is refused, not replaced.
///
/// # Errors
/// If the file cannot be written (see [`SaveError`]), or two parameters share a name.
pub fn save_safetensors<T: Float>(
    model: &dyn Module<T>,
    path: impl AsRef<Path>,
) -> Result<(), SaveError> {
    let metadata = [(file::FORMAT_KEY.to_string(), "weights".to_string())];
    write_safetensors(path.as_ref(), &state_dict(model), metadata.into())
}
