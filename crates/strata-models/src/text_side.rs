//! The text side of generation, in one place for `strata generate`, `strata serve` and the
//! round-trip tests: applying textual-inversion embeddings and a LoRA file (UNet and text
//! encoder) to a loaded model, and the text encodings of a caption.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::clip::ClipTextTransformer;
use crate::embeddings::{self, Placeholders};
use crate::error::{ModelError, Result};
use crate::lora_file::{self, LoraLayout};
use crate::pipeline::LoadedModel;
use crate::segments::SegmentTexts;
use crate::tokenizer::ClipTokenizer;

/// A caption as generation takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptionInput {
    /// Scene, relation and elements, each encoded in its own 77-token window.
    Segments(SegmentTexts),
    /// One flat prompt.
    Flat(String),
}

/// `--embedding FILE[=TOKEN]`: a file and an optional placeholder override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingSpec {
    pub file: PathBuf,
    pub token: Option<String>,
}

impl EmbeddingSpec {
    /// Parses `FILE` or `FILE=TOKEN` (the last `=` splits, so paths may contain `=` when a
    /// token is given).
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let plain = Self {
            file: PathBuf::from(s),
            token: None,
        };
        if Path::new(s).is_file() {
            return Ok(plain);
        }
        match s.rsplit_once('=') {
            Some((f, t)) if !f.is_empty() && !t.trim().is_empty() => Ok(Self {
                file: PathBuf::from(f),
                token: Some(t.trim().to_string()),
            }),
            Some((_, _)) => Err(format!("`{s}`: expected FILE or FILE=TOKEN")),
            None => Ok(plain),
        }
    }
}

/// What [`apply_text_additions`] did, for reporting.
#[derive(Debug, Clone, Default)]
pub struct AppliedAdditions {
    /// (placeholder, vectors, file)
    pub embeddings: Vec<(String, usize, PathBuf)>,
    /// (layout, UNet adapters, text-encoder adapters)
    pub lora: Option<(LoraLayout, usize, usize)>,
}

/// Loads `embeddings` into the model's text encoder and applies a LoRA file (`lora`, with its
/// multiplier) to the UNet and the text encoder. Returns the placeholders for encoding
/// captions.
pub fn apply_text_additions(
    model: &mut LoadedModel,
    embeddings_in: &[EmbeddingSpec],
    lora: Option<(&Path, f64)>,
    device: &Device,
) -> Result<(Placeholders, AppliedAdditions)> {
    let mut applied = AppliedAdditions::default();
    let mut embs = vec![];
    for e in embeddings_in {
        let emb = embeddings::load_embedding(&e.file, e.token.as_deref(), device)?;
        applied
            .embeddings
            .push((emb.token.clone(), emb.num_vectors(), emb.file.clone()));
        embs.push(emb);
    }
    let placeholders = embeddings::install_embeddings(&mut model.text, &embs)?;
    if let Some((path, scale)) = lora {
        let imported =
            lora_file::import_with_text(&model.models.unet, Some(&model.text), path, device)?;
        // a shape that does not fit the layer is a LoRA for another model: name the file
        let named = |e: ModelError| {
            ModelError::Lora {
            path: path.to_path_buf(),
            what: format!("{e}; the LoRA was trained for another model (use the base model it was trained on)"),
        }
        };
        lora_file::install(&mut model.models.unet, &imported, scale).map_err(named)?;
        lora_file::install_text(&mut model.text, &imported, scale).map_err(named)?;
        applied.lora = Some((
            imported.layout,
            imported.adapters.len(),
            imported.text_adapters.len(),
        ));
    }
    Ok((placeholders, applied))
}

/// The text encodings `(1, 3, 77, D)` (segments) or `(1, 77, D)` (flat) of one caption, with
/// embeddings' placeholders resolved and any text-encoder LoRA in effect; also those of the
/// empty caption (classifier-free guidance's unconditional input).
pub fn caption_encodings(
    text: &ClipTextTransformer,
    tok: &ClipTokenizer,
    placeholders: &Placeholders,
    caption: &CaptionInput,
) -> Result<(Tensor, Tensor)> {
    let err = |what: &str| {
        let what = what.to_string();
        move |source| ModelError::Candle { what, source }
    };
    match caption {
        CaptionInput::Flat(p) => Ok((
            embeddings::encode_flat(text, tok, placeholders, &[p.as_str()])
                .map_err(err("encoding the prompt"))?,
            embeddings::encode_flat(text, tok, placeholders, &[""])
                .map_err(err("encoding the empty prompt"))?,
        )),
        CaptionInput::Segments(s) => Ok((
            embeddings::encode_segments(text, tok, placeholders, std::slice::from_ref(s))
                .map_err(err("encoding the caption segments"))?,
            embeddings::encode_segments(text, tok, placeholders, &[SegmentTexts::unconditional()])
                .map_err(err("encoding the empty caption"))?,
        )),
    }
}
