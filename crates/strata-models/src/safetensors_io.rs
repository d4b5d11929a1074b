//! safetensors reading and atomic writing with header metadata: the one writer every
//! strata file goes through (training checkpoints and outputs, LoRA files, random models,
//! the fusion schedule). Written by hand rather than with `safetensors::serialize` so the
//! header keys are sorted and the same tensors and metadata always give the same bytes.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::ModelError;

struct Raw {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn raw(t: &Tensor) -> candle_core::Result<Raw> {
    let shape = t.dims().to_vec();
    let flat = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F16 => Raw {
            dtype: safetensors::Dtype::F16,
            shape,
            bytes: flat
                .to_vec1::<half::f16>()?
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        },
        DType::U32 => Raw {
            dtype: safetensors::Dtype::U32,
            shape,
            bytes: flat
                .to_vec1::<u32>()?
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        },
        _ => Raw {
            dtype: safetensors::Dtype::F32,
            shape,
            bytes: flat
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        },
    })
}

/// Bytes of a file written whole to a temporary file next to `path` (fsynced), then
/// renamed to `path` ([`strata_io::atomic::write`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    strata_io::atomic::write(path, bytes).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        what: "writing",
        source: e,
    })
}

/// Writes `tensors` (sorted by name; f16 stays f16, u32 stays u32, the rest as f32) with
/// `metadata`, atomically. The header is written by hand with sorted keys (the safetensors
/// crate orders metadata by hash map), so the same tensors and metadata give the same bytes.
pub fn save(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    metadata: Option<HashMap<String, String>>,
) -> Result<(), ModelError> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut header: std::collections::BTreeMap<String, serde_json::Value> =
        std::collections::BTreeMap::new();
    if let Some(m) = metadata {
        let sorted: std::collections::BTreeMap<String, String> = m.into_iter().collect();
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(sorted).expect("strings"),
        );
    }
    let mut body: Vec<u8> = vec![];
    for n in names {
        let r = raw(&tensors[n]).map_err(|e| ModelError::Candle {
            what: format!("serialising {n} into {}", path.display()),
            source: e,
        })?;
        let dtype = match r.dtype {
            safetensors::Dtype::F16 => "F16",
            safetensors::Dtype::U32 => "U32",
            _ => "F32",
        };
        let begin = body.len();
        body.extend_from_slice(&r.bytes);
        header.insert(n.clone(), serde_json::json!({"dtype": dtype, "shape": r.shape, "data_offsets": [begin, body.len()]}));
    }
    let mut h = serde_json::to_string(&header).expect("json");
    while !h.len().is_multiple_of(8) {
        h.push(' ');
    }
    let mut bytes = Vec::with_capacity(8 + h.len() + body.len());
    bytes.extend_from_slice(&(h.len() as u64).to_le_bytes());
    bytes.extend_from_slice(h.as_bytes());
    bytes.extend_from_slice(&body);
    write_atomic(path, &bytes)
}

/// safetensors header metadata.
pub type Metadata = HashMap<String, String>;

/// All tensors and the header metadata of a safetensors file.
pub fn load(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, Metadata), ModelError> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        what: "reading",
        source: e,
    })?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| ModelError::Format {
            path: path.to_path_buf(),
            what: format!("not a safetensors file ({e})"),
        })?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let tensors =
        candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| ModelError::Format {
            path: path.to_path_buf(),
            what: e.to_string(),
        })?;
    Ok((tensors, metadata))
}
