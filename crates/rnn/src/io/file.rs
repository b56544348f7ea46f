//! Safetensors files: reading every tensor in its own dtype, writing with a checksum, and
//! telling Unroll's files from everyone else's.
//!
//! What a read verifies:
//! - **every file**: that it is a well-formed safetensors file (the `safetensors` crate checks
//!   the header, that every tensor's bytes lie inside the file without overlap, and that each
//!   tensor's byte length is its shape's element count times its dtype's size), and that no
//!   shape's element count overflows;
//! - **a file Unroll wrote**: also a 64-bit FNV-1a checksum over every tensor's name, dtype,
//!   shape and bytes and every metadata entry, so a flipped bit anywhere is an error rather
//!   than a silently wrong weight. A file says it was written by Unroll through two marks, any
//!   metadata key starting with `unroll` and a `format` starting with `unroll`: one corrupted
//!   mark leaves the other, and such a file without a valid checksum is refused.
//!
//! Files from elsewhere (`safetensors.torch.save_file` writes no checksum) load, but nothing
//! vouches for their values: a flipped bit in their data is a changed weight.

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use tensor::{DType, Float, Tensor};

use super::atomic::write_atomically;
use super::{LoadError, SaveError};

/// The metadata key of Unroll's checksum.
const CHECKSUM_KEY: &str = "unroll_checksum";
/// The metadata key that marks a weights file as Unroll's (checkpoints have their own marks).
pub(super) const FORMAT_KEY: &str = "unroll_format";

/// A tensor read from a file in its own element type. Half-precision floats (`F16`, `BF16`)
/// arrive widened to `F32` and integers of every width to `I64`, all exactly; dtypes Unroll has
/// no type for (8-bit floats, complex) arrive as [`AnyTensor::Other`], so that a file holding
/// one can still be read for its other tensors.
#[derive(Clone, Debug)]
pub enum AnyTensor {
    /// `F32`, `F16` or `BF16` in the file.
    F32(Tensor<f32>),
    /// `F64` in the file.
    F64(Tensor<f64>),
    /// An integer of any width in the file (a `U64` above `i64::MAX` is an error).
    I64(Tensor<i64>),
    /// `BOOL` in the file.
    Bool(Tensor<bool>),
    /// A dtype Unroll cannot hold.
    Other {
        /// The file's name for it (`"F8_E4M3"`).
        dtype: String,
        /// Its shape.
        shape: Vec<usize>,
    },
}

impl AnyTensor {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            AnyTensor::F32(t) => t.shape(),
            AnyTensor::F64(t) => t.shape(),
            AnyTensor::I64(t) => t.shape(),
            AnyTensor::Bool(t) => t.shape(),
            AnyTensor::Other { shape, .. } => shape,
        }
    }

    /// The element type's name: `"F32"`, `"F64"`, `"I64"`, `"BOOL"`, or the file's own name.
    pub fn dtype_name(&self) -> String {
        match self {
            AnyTensor::F32(_) => "F32".into(),
            AnyTensor::F64(_) => "F64".into(),
            AnyTensor::I64(_) => "I64".into(),
            AnyTensor::Bool(_) => "BOOL".into(),
            AnyTensor::Other { dtype, .. } => dtype.clone(),
        }
    }

    /// A float tensor converted to `T` (rounding `F64` to `f32` as PyTorch's `copy_` does;
    /// the same type is not copied), or `None` for integers, booleans and other dtypes.
    pub fn to_float<T: Float>(&self) -> Option<Tensor<T>> {
        match self {
            AnyTensor::F32(t) => Some(cast(t)),
            AnyTensor::F64(t) => Some(cast(t)),
            _ => None,
        }
    }
}

/// `t` as a tensor of `U`: a handle to the same storage if `F` is `U`, else converted.
fn cast<F: Float, U: Float>(t: &Tensor<F>) -> Tensor<U> {
    match (t as &dyn Any).downcast_ref::<Tensor<U>>() {
        Some(same) => same.clone(),
        None => t.map_to(|v| U::from_f64(v.to_f64())),
    }
}

/// The contents of a safetensors file.
pub struct SafetensorsFile<V> {
    /// The tensors in name order.
    pub tensors: Vec<(String, V)>,
    /// The string metadata.
    pub metadata: HashMap<String, String>,
    /// Whether the file carried an Unroll checksum (which was then verified).
    pub checksummed: bool,
}

/// Reads a safetensors file with every tensor in its own dtype (see [`AnyTensor`]), verifying
/// the checksum of a file Unroll wrote: PyTorch's `lengths` or targets (int64) beside its float
/// weights, say.
///
/// # Errors
/// If the file is unreadable or invalid, says it was written by Unroll and has no valid
/// checksum, or holds a shape whose element count overflows.
pub fn read_safetensors_any(path: &Path) -> Result<SafetensorsFile<AnyTensor>, LoadError> {
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
    let mut views: Vec<(String, TensorView<'_>)> = st.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let checksummed = match metadata.get(CHECKSUM_KEY) {
        Some(stored) if *stored == checksum(&views, &metadata) => true,
        Some(_) => return Err(LoadError::Checksum { path: path.into() }),
        None if claims_unroll(&metadata) => {
            return Err(LoadError::NoChecksum { path: path.into() })
        }
        None => false,
    };
    let tensors = views
        .iter()
        .map(|(name, view)| {
            let t = decode(view).map_err(|e| format_err(format!("tensor '{name}': {e}")))?;
            Ok((name.clone(), t))
        })
        .collect::<Result<_, LoadError>>()?;
    Ok(SafetensorsFile {
        tensors,
        metadata,
        checksummed,
    })
}

/// Reads a safetensors file of float tensors as `T` (converting `F32` and `F64`, widening
/// half precision), verifying the checksum of a file Unroll wrote.
///
/// # Errors
/// As [`read_safetensors_any`], and if a tensor is not a float (name and dtype given): use
/// [`read_safetensors_any`] for files that mix dtypes.
pub fn read_safetensors<T: Float>(path: &Path) -> Result<SafetensorsFile<Tensor<T>>, LoadError> {
    let file = read_safetensors_any(path)?;
    let tensors = file
        .tensors
        .into_iter()
        .map(|(name, t)| match t.to_float() {
            Some(f) => Ok((name, f)),
            None => Err(LoadError::DType {
                expected: format!("{:?}", T::DTYPE),
                found: t.dtype_name(),
                name,
            }),
        })
        .collect::<Result<_, _>>()?;
    Ok(SafetensorsFile {
        tensors,
        metadata: file.metadata,
        checksummed: file.checksummed,
    })
}

/// Whether the metadata says Unroll wrote the file: a key starting with `unroll`, or a
/// `format` starting with `unroll` (checkpoints).
fn claims_unroll(metadata: &HashMap<String, String>) -> bool {
    metadata.keys().any(|k| k.starts_with("unroll"))
        || metadata
            .get("format")
            .is_some_and(|f| f.starts_with("unroll"))
}

/// One tensor's bytes as an [`AnyTensor`].
fn decode(view: &TensorView<'_>) -> Result<AnyTensor, String> {
    let shape = view.shape();
    let data = view.data();
    let words = |size: usize| data.chunks_exact(size);
    let floats = |values: Vec<f32>| Tensor::try_from_vec(values, shape).map(AnyTensor::F32);
    let ints = |values: Vec<i64>| Tensor::try_from_vec(values, shape).map(AnyTensor::I64);
    let le = |b: &[u8]| -> [u8; 8] {
        let mut w = [0; 8];
        w[..b.len()].copy_from_slice(b);
        w
    };
    let result = match view.dtype() {
        Dtype::F64 => {
            Tensor::try_from_vec(words(8).map(|b| f64::from_le_bytes(le(b))).collect(), shape)
                .map(AnyTensor::F64)
        }
        Dtype::F32 => floats(
            words(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        Dtype::F16 => floats(words(2).map(|b| f16_to_f32(u16_le(b))).collect()),
        Dtype::BF16 => floats(words(2).map(|b| bf16_to_f32(u16_le(b))).collect()),
        Dtype::I64 => ints(words(8).map(|b| i64::from_le_bytes(le(b))).collect()),
        Dtype::I32 => ints(
            words(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                .collect(),
        ),
        Dtype::I16 => ints(words(2).map(|b| u16_le(b) as i16 as i64).collect()),
        Dtype::I8 => ints(data.iter().map(|&b| b as i8 as i64).collect()),
        Dtype::U8 => ints(data.iter().map(|&b| b as i64).collect()),
        Dtype::U16 => ints(words(2).map(|b| u16_le(b) as i64).collect()),
        Dtype::U32 => ints(
            words(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                .collect(),
        ),
        Dtype::U64 => {
            let values: Vec<u64> = words(8).map(|b| u64::from_le_bytes(le(b))).collect();
            if let Some(big) = values.iter().find(|&&v| v > i64::MAX as u64) {
                return Err(format!("U64 value {big} does not fit in I64"));
            }
            ints(values.into_iter().map(|v| v as i64).collect())
        }
        Dtype::BOOL => {
            if let Some(bad) = data.iter().find(|&&b| b > 1) {
                return Err(format!("BOOL byte {bad} is neither 0 nor 1"));
            }
            Tensor::try_from_vec(data.iter().map(|&b| b == 1).collect(), shape).map(AnyTensor::Bool)
        }
        other => {
            return Ok(AnyTensor::Other {
                dtype: format!("{other:?}"),
                shape: shape.to_vec(),
            })
        }
    };
    result.map_err(|e| e.to_string())
}

fn u16_le(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

/// IEEE 754 half precision to single, exactly (subnormals, infinities and NaN included).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exponent = ((h >> 10) & 0x1f) as u32;
    let mantissa = (h & 0x3ff) as u32;
    let bits = match (exponent, mantissa) {
        (0, 0) => sign,
        // Subnormal: ±mantissa · 2^−24, exact in f32.
        (0, m) => return sign_of(h) * m as f32 * f32::from_bits((127 - 24) << 23),
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

fn sign_of(h: u16) -> f32 {
    if h >> 15 == 1 {
        -1.0
    } else {
        1.0
    }
}

/// bfloat16 to single: the upper half of its bits.
pub(crate) fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Writes tensors and string metadata as a safetensors file with an Unroll checksum,
/// atomically: through a temporary file of its own, synced and renamed over `path`, so the
/// target is always the old file or the new one. Through a symbolic link the linked file is
/// written; an existing file keeps its permissions; a read-only one is refused.
///
/// # Errors
/// If two tensors share a name, or serialising, writing, syncing or renaming fails; the
/// target is unchanged then and no temporary file is left.
pub fn write_safetensors<T: Float>(
    path: &Path,
    tensors: &[(String, Tensor<T>)],
    mut metadata: BTreeMap<String, String>,
) -> Result<(), SaveError> {
    let mut seen = HashSet::new();
    if let Some((name, _)) = tensors.iter().find(|(n, _)| !seen.insert(n.as_str())) {
        return Err(SaveError::DuplicateName {
            path: path.into(),
            name: name.clone(),
        });
    }
    let owned: Vec<(String, Bytes)> = tensors
        .iter()
        .map(|(name, t)| (name.clone(), Bytes::from_tensor(t)))
        .collect();
    let views: Vec<(String, TensorView<'_>)> =
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
    write_atomically(path, &bytes).map_err(|source| SaveError::Io {
        path: path.into(),
        source,
    })
}

/// FNV-1a (64-bit) over every tensor's name, dtype, shape and bytes in name order, then every
/// metadata entry but the checksum itself in key order.
fn checksum(views: &[(String, TensorView<'_>)], metadata: &HashMap<String, String>) -> String {
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

/// A tensor's little-endian bytes.
struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Bytes {
    fn from_tensor<T: Float>(t: &Tensor<T>) -> Self {
        let values = t.to_vec();
        let (dtype, data) = match T::DTYPE {
            DType::F32 => (
                Dtype::F32,
                values
                    .iter()
                    .flat_map(|v| (v.to_f64() as f32).to_le_bytes())
                    .collect(),
            ),
            _ => (
                Dtype::F64,
                values
                    .iter()
                    .flat_map(|v| v.to_f64().to_le_bytes())
                    .collect(),
            ),
        };
        Bytes {
            dtype,
            shape: t.shape().to_vec(),
            data,
        }
    }

    fn view(&self) -> TensorView<'_> {
        TensorView::new(self.dtype, self.shape.clone(), &self.data)
            .expect("the byte length matches the shape")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Half-precision values whose f32 values are known exactly.
    #[test]
    fn half_precision_widens_exactly() {
        let cases: [(u16, f32); 9] = [
            (0x3c00, 1.0),
            (0xc000, -2.0),
            (0x3555, 0.333_251_95),
            (0x7bff, 65504.0),
            (0x0001, 5.960_464_5e-8), // smallest subnormal, 2^−24
            (0x8001, -5.960_464_5e-8),
            (0x03ff, 6.097_555e-5), // largest subnormal
            (0x7c00, f32::INFINITY),
            (0x8000, -0.0),
        ];
        for (h, want) in cases {
            let got = f16_to_f32(h);
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "f16 {h:#06x}: {got} vs {want}"
            );
        }
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc0a0), -5.0);
        assert_eq!(bf16_to_f32(0x3eab), 0.333_984_38);
    }
}
