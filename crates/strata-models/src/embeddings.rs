//! Textual-inversion embeddings at inference: reading embedding files, appending their
//! vectors to the text encoder's token table, and the token ids of prompts that use their
//! placeholders.
//!
//! Files read:
//! - strata's own TI output (`embeddings/<token>.safetensors`: `emb_params` `(n, D)` and the
//!   placeholder in the `strata_placeholder_token` header entry);
//! - A1111's safetensors (`emb_params`, or `string_to_param.*`) and pickled `.pt` / `.bin`
//!   files (`string_to_param` = `{'*': tensor}`), read with candle's restricted unpickler
//!   (it rebuilds tensors only and runs no code); their placeholder is the file stem, as in
//!   A1111;
//! - diffusers' `learned_embeds` files (one tensor named after its token).
//!
//! A prompt uses an embedding by writing its placeholder; the placeholder stands for the
//! embedding's `n` vectors (A1111's method). Placeholders are matched verbatim in the raw
//! text, the earliest first and the longest on a tie, like the tokenizer's added tokens.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::clip::ClipTextTransformer;
use crate::error::{ModelError, Result};
use crate::segments::{SegmentTexts, SegmentTokens};
use crate::tokenizer::{ClipTokenizer, Encoding, CONTEXT_LENGTH, MAX_CONTENT_TOKENS};

/// The header entry in which strata records a TI file's placeholder.
pub const PLACEHOLDER_METADATA: &str = "strata_placeholder_token";

/// One embedding read from a file.
#[derive(Debug, Clone)]
pub struct Embedding {
    /// The placeholder that stands for the vectors in a prompt.
    pub token: String,
    /// `(n, D)` f32.
    pub vectors: Tensor,
    pub file: PathBuf,
}

impl Embedding {
    pub fn num_vectors(&self) -> usize {
        self.vectors.dims()[0]
    }
    pub fn width(&self) -> usize {
        self.vectors.dims()[1]
    }
}

fn bad(path: &Path, what: impl Into<String>) -> ModelError {
    ModelError::Format {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// `(D,)` or `(n, D)` as `(n, D)` f32.
fn as_rows(path: &Path, name: &str, t: &Tensor) -> Result<Tensor> {
    let t = t
        .to_dtype(DType::F32)
        .map_err(|e| bad(path, format!("{name}: {e}")))?;
    match t.rank() {
        1 => t
            .unsqueeze(0)
            .map_err(|e| bad(path, format!("{name}: {e}"))),
        2 => Ok(t),
        _ => Err(bad(
            path,
            format!(
                "{name} has shape {:?}; an embedding is a vector (D) or a matrix (vectors, D)",
                t.dims()
            ),
        )),
    }
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// Reads an embedding file (see the module header for the layouts). `token`: the placeholder
/// to use instead of the recorded one (strata files) or the file stem (others).
pub fn load_embedding(path: &Path, token: Option<&str>, device: &Device) -> Result<Embedding> {
    if !path.is_file() {
        return Err(bad(path, "no such file"));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let (vectors, recorded) = match ext.as_str() {
        "pt" | "pth" | "bin" | "ckpt" => (read_pickle(path)?, None),
        _ => read_safetensors(path)?,
    };
    let token = match (token, recorded) {
        (Some(t), _) => t.to_string(),
        (None, Some(r)) => r,
        (None, None) => stem(path),
    };
    if token.trim().is_empty() {
        return Err(bad(
            path,
            "the placeholder token is empty; give one with FILE=TOKEN",
        ));
    }
    let vectors = vectors
        .to_device(device)
        .map_err(|e| bad(path, e.to_string()))?;
    Ok(Embedding {
        token,
        vectors,
        file: path.to_path_buf(),
    })
}

/// Vectors and the recorded placeholder (strata files) of a safetensors embedding.
fn read_safetensors(path: &Path) -> Result<(Tensor, Option<String>)> {
    let (tensors, meta) = crate::safetensors_io::load(path, &Device::Cpu)?;
    let recorded = meta.get(PLACEHOLDER_METADATA).cloned();
    if let Some(t) = tensors.get("emb_params") {
        return Ok((as_rows(path, "emb_params", t)?, recorded));
    }
    let params: Vec<_> = tensors
        .iter()
        .filter(|(k, _)| k.starts_with("string_to_param."))
        .collect();
    if params.len() == 1 {
        let (k, t) = params[0];
        return Ok((as_rows(path, k, t)?, recorded));
    }
    if tensors.len() == 1 {
        // diffusers' learned_embeds: {"<token>": (D,)}; the key is the token
        let (k, t) = tensors.iter().next().expect("one tensor");
        return Ok((as_rows(path, k, t)?, recorded.or_else(|| Some(k.clone()))));
    }
    let mut keys: Vec<&String> = tensors.keys().collect();
    keys.sort();
    Err(bad(
        path,
        format!(
            "not a textual-inversion embedding: expected an `emb_params` tensor (strata, A1111) or one `string_to_param.*` tensor, found {}",
            keys.iter()
                .take(8)
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// The vectors of a pickled embedding: A1111's `string_to_param` dictionary (one entry), or a
/// dictionary holding a single tensor (diffusers' `learned_embeds.bin`).
fn read_pickle(path: &Path) -> Result<Tensor> {
    let read = |key: Option<&str>| candle_core::pickle::read_all_with_key(path, key);
    let found = match read(Some("string_to_param")) {
        Ok(v) if !v.is_empty() => v,
        _ => read(None).map_err(|e| {
            bad(
                path,
                format!("cannot read it as a PyTorch zip pickle ({e}); A1111 .pt embeddings hold a `string_to_param` dictionary"),
            )
        })?,
    };
    match found.as_slice() {
        [(name, t)] => as_rows(path, name, t),
        [] => Err(bad(
            path,
            "holds no tensor under `string_to_param` (an A1111 embedding) nor at the top level",
        )),
        many => Err(bad(
            path,
            format!(
                "holds {} tensors ({}); an embedding file holds one",
                many.len(),
                many.iter()
                    .take(8)
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Placeholders installed in a text encoder: each stands for ids `first..first + n`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placeholders {
    /// (placeholder, first id, number of vectors)
    pub entries: Vec<(String, u32, usize)>,
}

impl Placeholders {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Content ids of `text`: placeholders become their ids, the rest is tokenized.
    pub fn tokenize(&self, tok: &ClipTokenizer, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut rest = text;
        loop {
            let hit = self
                .entries
                .iter()
                .enumerate()
                .filter_map(|(i, (t, _, _))| {
                    rest.find(t.as_str())
                        .map(|p| (p, std::cmp::Reverse(t.len()), i))
                })
                .min();
            match hit {
                Some((p, std::cmp::Reverse(len), i)) => {
                    out.extend(tok.tokenize(&rest[..p]));
                    let (_, first, n) = &self.entries[i];
                    out.extend((0..*n as u32).map(|j| first + j));
                    rest = &rest[p + len..];
                }
                None => {
                    out.extend(tok.tokenize(rest));
                    return out;
                }
            }
        }
    }

    /// `text` as the 77 ids the text encoder takes (start, ≤ 75 content, end, padding).
    pub fn encode(&self, tok: &ClipTokenizer, text: &str) -> Encoding {
        if self.is_empty() {
            return tok.encode(text);
        }
        let content = self.tokenize(tok, text);
        let n_tokens = content.len();
        let mut ids = Vec::with_capacity(CONTEXT_LENGTH);
        ids.push(tok.bos_id());
        ids.extend(content.iter().take(MAX_CONTENT_TOKENS));
        ids.push(tok.eos_id());
        ids.resize(CONTEXT_LENGTH, tok.pad_id());
        Encoding { ids, n_tokens }
    }
}

/// Appends the vectors of `embeddings` to `text`'s token table (after any rows already there)
/// and returns the placeholders. Errors name the file when a width does not match the text
/// encoder or a placeholder is given twice.
pub fn install_embeddings(
    text: &mut ClipTextTransformer,
    embeddings: &[Embedding],
) -> Result<Placeholders> {
    let d = text.config.hidden_size;
    let mut rows = match &text.token_embedding.extra {
        Some(e) => vec![e.clone()],
        None => vec![],
    };
    let mut next = text
        .token_embedding
        .rows()
        .map_err(|e| ModelError::Candle {
            what: "token table".into(),
            source: e,
        })? as u32;
    let mut ph = Placeholders::default();
    for e in embeddings {
        if e.width() != d {
            return Err(bad(
                &e.file,
                format!(
                    "the embedding is {} wide, this model's text encoder is {d} wide; it was trained for another model (SD-1.x embeddings are 768 wide, SD-2.x 1024)",
                    e.width()
                ),
            ));
        }
        if ph.entries.iter().any(|(t, _, _)| *t == e.token) {
            return Err(bad(
                &e.file,
                format!(
                    "placeholder `{}` is used by another embedding; give this one another with FILE=TOKEN",
                    e.token
                ),
            ));
        }
        let dtype = text.token_embedding.weight.dtype();
        rows.push(
            e.vectors
                .to_dtype(dtype)
                .and_then(|v| v.to_device(text.position_embedding.device()))
                .map_err(|x| bad(&e.file, x.to_string()))?,
        );
        ph.entries.push((e.token.clone(), next, e.num_vectors()));
        next += e.num_vectors() as u32;
    }
    if !rows.is_empty() {
        let cat = Tensor::cat(&rows, 0).map_err(|e| ModelError::Candle {
            what: "embedding rows".into(),
            source: e,
        })?;
        text.set_extra_tokens(Some(cat))
            .map_err(|e| ModelError::Candle {
                what: "embedding rows".into(),
                source: e,
            })?;
    }
    Ok(ph)
}

/// Segment encodings `(B, 3, 77, D)` of `B` captions, placeholders resolved (with none, the
/// same as [`crate::segments::encode_segments`]).
pub fn encode_segments(
    model: &ClipTextTransformer,
    tok: &ClipTokenizer,
    placeholders: &Placeholders,
    captions: &[SegmentTexts],
) -> candle_core::Result<Tensor> {
    let tokens: Vec<SegmentTokens> = captions
        .iter()
        .map(|c| SegmentTokens {
            segments: crate::segments::Segment::ALL.map(|s| placeholders.encode(tok, c.get(s))),
        })
        .collect();
    crate::segments::encode_segment_tokens(model, &tokens)
}

/// Flat-prompt encodings `(B, 77, D)`, placeholders resolved.
pub fn encode_flat(
    model: &ClipTextTransformer,
    tok: &ClipTokenizer,
    placeholders: &Placeholders,
    prompts: &[&str],
) -> candle_core::Result<Tensor> {
    let encodings: Vec<Encoding> = prompts
        .iter()
        .map(|p| placeholders.encode(tok, p))
        .collect();
    crate::segments::encode_flat_ids(model, &encodings)
}
