//! State dicts: a model's parameters by name, and loading them back, strictly or not, from the
//! whole of a larger model's dict or from under a prefix, as PyTorch's `load_state_dict`.

use std::collections::HashMap;
use std::path::Path;

use autograd::Param;
use tensor::{Float, Tensor};

use super::file::{read_safetensors_any, AnyTensor};
use super::LoadError;
use crate::module::Module;

/// The model's parameters by name, like PyTorch's `state_dict()`.
pub fn state_dict<T: Float>(model: &dyn Module<T>) -> Vec<(String, Tensor<T>)> {
    model
        .named_params()
        .into_iter()
        .map(|(name, p)| (name, p.value()))
        .collect()
}

/// How [`load_state_dict_with`] and [`load_safetensors_with`] match tensors to parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Every parameter must be found and every tensor used (PyTorch's `strict=True`, the
    /// default). When `false`, parameters without a tensor keep their values and both lists
    /// come back in the [`LoadReport`]. A tensor of the wrong shape is an error either way,
    /// as in PyTorch.
    pub strict: bool,
    /// Only the tensors named `{prefix}.{name}` are read, as `{name}`; the others are not
    /// this model's and are neither used nor reported (e.g. `"encoder.lstm"` to load one
    /// layer out of a whole PyTorch model's `state_dict`).
    pub prefix: Option<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            strict: true,
            prefix: None,
        }
    }
}

impl LoadOptions {
    /// Strict, no prefix.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `strict`.
    pub fn strict(mut self, on: bool) -> Self {
        self.strict = on;
        self
    }

    /// Sets the prefix (without its final `.`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// The model's name for a file's tensor, if it is under the prefix.
    fn local<'k>(&self, key: &'k str) -> Option<&'k str> {
        match &self.prefix {
            Some(p) => key.strip_prefix(p.as_str())?.strip_prefix('.'),
            None => Some(key),
        }
    }
}

/// What a non-strict load left out, as PyTorch's `_IncompatibleKeys`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// The model's parameters that had no tensor (they keep their values), in model order.
    pub missing_keys: Vec<String>,
    /// Tensors (under the prefix, with it) that no parameter took, in name order.
    pub unexpected_keys: Vec<String>,
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
    load_state_dict_with(model, tensors, &LoadOptions::default()).map(|_| ())
}

/// Loads parameters by name with [`LoadOptions`]: strict or not, from under a prefix.
/// Nothing is changed unless everything fits.
///
/// # Errors
/// A misshapen tensor; in strict mode also the first missing or unexpected one.
pub fn load_state_dict_with<T: Float>(
    model: &dyn Module<T>,
    tensors: &HashMap<String, Tensor<T>>,
    options: &LoadOptions,
) -> Result<LoadReport, LoadError> {
    let keys: Vec<&String> = tensors.keys().collect();
    let (assignments, report) = match_params(model, &keys, options, |k| Ok(tensors[k].clone()))?;
    commit(assignments);
    Ok(report)
}

/// Loads the model's parameters from a safetensors file, strictly, e.g. one written by
/// [`save_safetensors`](super::save_safetensors) or by
/// `safetensors.torch.save_file(model.state_dict(), path)`. Float tensors are converted to
/// the model's type (`F32`, `F64`, and `F16`/`BF16` widened), as PyTorch's `load_state_dict`
/// copies them; other tensors a parameter would take are an error. The file is verified as
/// [`read_safetensors_any`] says: a file Unroll wrote by its checksum, others only by their
/// structure.
///
/// # Errors
/// If the file cannot be read, is not valid, is corrupted, or does not fit the model; the
/// model is unchanged then.
pub fn load_safetensors<T: Float>(
    model: &dyn Module<T>,
    path: impl AsRef<Path>,
) -> Result<(), LoadError> {
    load_safetensors_with(model, path, &LoadOptions::default()).map(|_| ())
}

/// [`load_safetensors`] with [`LoadOptions`]: strict or not, from under a prefix.
///
/// ```no_run
/// use rnn::io::{load_safetensors_with, LoadOptions};
/// use rnn::{Layer, LayerConfig, Lstm};
/// use tensor::Rng;
///
/// // One LSTM out of `safetensors.torch.save_file(seq2seq.state_dict(), "model.safetensors")`.
/// let lstm: Lstm<f32> = Layer::lstm(LayerConfig::new(32, 64), &mut Rng::seed_from_u64(0));
/// let report =
///     load_safetensors_with(&lstm, "model.safetensors", &LoadOptions::new().prefix("encoder.lstm"))?;
/// assert!(report.missing_keys.is_empty());
/// # Ok::<(), rnn::io::LoadError>(())
/// ```
///
/// # Errors
/// As [`load_safetensors`]; when not strict, missing and unexpected tensors are reported
/// instead.
pub fn load_safetensors_with<T: Float>(
    model: &dyn Module<T>,
    path: impl AsRef<Path>,
    options: &LoadOptions,
) -> Result<LoadReport, LoadError> {
    let file = read_safetensors_any(path.as_ref())?;
    let tensors: HashMap<String, AnyTensor> = file.tensors.into_iter().collect();
    let keys: Vec<&String> = tensors.keys().collect();
    let (assignments, report) = match_params(model, &keys, options, |k| {
        let t = &tensors[k];
        t.to_float().ok_or_else(|| LoadError::DType {
            name: k.to_string(),
            expected: format!("{:?}", T::DTYPE),
            found: t.dtype_name(),
        })
    })?;
    commit(assignments);
    Ok(report)
}

/// A parameter and the value to load into it.
pub(super) type Assignment<T> = (Param<T>, Tensor<T>);

/// Pairs every parameter with its tensor (`get` fetches one by its key in the file), checking
/// names and shapes, without changing anything: the check half of a load, which checkpoints
/// run before touching the optimizer.
pub(super) fn match_params<T: Float>(
    model: &dyn Module<T>,
    keys: &[&String],
    options: &LoadOptions,
    get: impl Fn(&str) -> Result<Tensor<T>, LoadError>,
) -> Result<(Vec<Assignment<T>>, LoadReport), LoadError> {
    let local: HashMap<&str, &str> = keys
        .iter()
        .filter_map(|k| Some((options.local(k)?, k.as_str())))
        .collect();
    let params = model.named_params();
    let mut assignments = Vec::with_capacity(params.len());
    let mut report = LoadReport::default();
    for (name, p) in &params {
        let Some(key) = local.get(name.as_str()) else {
            if options.strict {
                return Err(LoadError::Missing { name: name.clone() });
            }
            report.missing_keys.push(name.clone());
            continue;
        };
        let t = get(key)?;
        if t.shape() != p.shape().as_slice() {
            return Err(LoadError::Shape {
                name: key.to_string(),
                expected: p.shape(),
                found: t.shape().to_vec(),
            });
        }
        assignments.push((p.clone(), t));
    }
    let mut extra: Vec<&str> = local
        .iter()
        .filter(|(name, _)| !params.iter().any(|(pn, _)| pn == *name))
        .map(|(_, key)| *key)
        .collect();
    extra.sort();
    if let (true, Some(first)) = (options.strict, extra.first()) {
        return Err(LoadError::Unexpected {
            name: first.to_string(),
        });
    }
    report.unexpected_keys = extra.into_iter().map(String::from).collect();
    Ok((assignments, report))
}

/// Writes matched values into their parameters.
pub(super) fn commit<T: Float>(assignments: Vec<Assignment<T>>) {
    for (p, t) in assignments {
        p.set_value(t);
    }
}
