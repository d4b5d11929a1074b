//! BLIP's BERT WordPiece tokenizer, through Hugging Face's own `tokenizers` crate (the code
//! transformers runs behind `BertTokenizer`; candle already depends on it, so it costs no
//! build). A folder's `tokenizer.json` is used as is; a folder with only `vocab.txt` gets the
//! same pipeline transformers builds for `BertTokenizer` (BERT normaliser with
//! `do_lower_case`, BERT pre-tokeniser, WordPiece with `[UNK]`, `[CLS] … [SEP]` around a
//! sentence, the WordPiece decoder) and the special tokens of `tokenizer_config.json` /
//! `special_tokens_map.json` / `added_tokens.json` (BLIP's `[DEC]` and `[ENC]` follow the
//! BERT vocabulary).
//!
//! Decoding skips special tokens and, when `tokenizer_config.json` sets
//! `clean_up_tokenization_spaces`, applies transformers' clean-up after the decoder.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, Tokenizer};

use super::config::HINT;
use crate::error::{CaptionerError, Result};

/// The tokenizer of a BLIP folder.
#[derive(Clone)]
pub struct BlipTokenizer {
    inner: Tokenizer,
    clean_up_spaces: bool,
    /// The file the vocabulary came from (for messages).
    pub source: PathBuf,
}

impl std::fmt::Debug for BlipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlipTokenizer")
            .field("source", &self.source)
            .field("clean_up_spaces", &self.clean_up_spaces)
            .finish()
    }
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(s) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|e| CaptionerError::BadField {
                path: path.to_path_buf(),
                field: "(file)".into(),
                what: format!("not valid JSON ({e})"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CaptionerError::Io {
            path: path.to_path_buf(),
            what: "reading the tokenizer settings".into(),
            source: e,
        }),
    }
}

/// A special token's text from `tokenizer_config.json` / `special_tokens_map.json`, where it
/// is either a string or an `AddedToken` object with `content`.
fn token_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn tok_err(path: &Path, what: String) -> CaptionerError {
    CaptionerError::Weights {
        path: path.to_path_buf(),
        what,
        hint: HINT.into(),
    }
}

impl BlipTokenizer {
    /// Loads `tokenizer.json`, else `vocab.txt` with the settings files beside it.
    pub fn load(dir: &Path) -> Result<Self> {
        let cfg = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let clean_up_spaces = cfg
            .get("clean_up_tokenization_spaces")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            let inner = Tokenizer::from_file(&json).map_err(|e| {
                tok_err(
                    &json,
                    format!("not a Hugging Face tokenizer file ({e}); expected BLIP's BERT WordPiece tokenizer"),
                )
            })?;
            return Ok(BlipTokenizer {
                inner,
                clean_up_spaces,
                source: json,
            });
        }
        let vocab = dir.join("vocab.txt");
        if !vocab.is_file() {
            return Err(tok_err(
                &vocab,
                "no tokenizer.json or vocab.txt; expected a BlipForConditionalGeneration folder with its BERT tokenizer".into(),
            ));
        }
        let map = read_json(&dir.join("special_tokens_map.json"))?.unwrap_or(Value::Null);
        let special = |key: &str, default: &str| -> String {
            cfg.get(key)
                .and_then(token_text)
                .or_else(|| map.get(key).and_then(token_text))
                .unwrap_or_else(|| default.to_string())
        };
        let unk = special("unk_token", "[UNK]");
        let cls = special("cls_token", "[CLS]");
        let sep = special("sep_token", "[SEP]");
        let pad = special("pad_token", "[PAD]");
        let mask = special("mask_token", "[MASK]");
        let vocab_str = vocab.to_string_lossy().to_string();
        let model = WordPiece::from_file(&vocab_str)
            .unk_token(unk.clone())
            .build()
            .map_err(|e| tok_err(&vocab, format!("not a WordPiece vocabulary ({e})")))?;
        let lower = cfg
            .get("do_lower_case")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let strip_accents = cfg.get("strip_accents").and_then(Value::as_bool);
        let chinese = cfg
            .get("tokenize_chinese_chars")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let mut inner = Tokenizer::new(model);
        inner
            .with_normalizer(Some(BertNormalizer::new(
                true,
                chinese,
                strip_accents,
                lower,
            )))
            .map_err(|e| tok_err(&vocab, format!("tokenizer set-up failed ({e})")))?;
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        inner.with_decoder(Some(WordPieceDecoder::new("##".into(), true)));
        let id_of = |t: &Tokenizer, s: &str| -> Result<u32> {
            t.token_to_id(s).ok_or_else(|| {
                tok_err(
                    &vocab,
                    format!("the special token {s} is not in the vocabulary"),
                )
            })
        };
        // Tokens with fixed ids (added_tokens.json of older exports, or the
        // added_tokens_decoder of tokenizer_config.json) keep them; the others are appended.
        let mut fixed: Vec<(u32, String)> = Vec::new();
        if let Some(Value::Object(o)) = read_json(&dir.join("added_tokens.json"))? {
            for (k, v) in o {
                if let Some(id) = v.as_u64() {
                    fixed.push((id as u32, k));
                }
            }
        }
        if let Some(Value::Object(o)) = cfg.get("added_tokens_decoder") {
            for (k, v) in o {
                if let (Ok(id), Some(t)) = (k.parse::<u32>(), token_text(v)) {
                    if !fixed.iter().any(|(_, s)| *s == t) {
                        fixed.push((id, t));
                    }
                }
            }
        }
        fixed.sort();
        let mut extra: Vec<String> = Vec::new();
        if let Some(b) = cfg
            .get("bos_token")
            .and_then(token_text)
            .or_else(|| map.get("bos_token").and_then(token_text))
        {
            extra.push(b);
        }
        for key in ["additional_special_tokens", "extra_special_tokens"] {
            for src in [&cfg, &map] {
                if let Some(a) = src.get(key).and_then(Value::as_array) {
                    extra.extend(a.iter().filter_map(token_text));
                }
            }
        }
        let base = [pad.clone(), unk, cls.clone(), sep.clone(), mask];
        let mut to_add: Vec<AddedToken> = base
            .iter()
            .map(|s| AddedToken::from(s.clone(), true))
            .collect();
        for (_, t) in &fixed {
            to_add.push(AddedToken::from(t.clone(), true));
        }
        for t in extra {
            if !to_add.iter().any(|a| a.content == t) {
                to_add.push(AddedToken::from(t, true));
            }
        }
        inner
            .add_special_tokens(to_add)
            .map_err(|e| tok_err(&vocab, format!("adding the special tokens failed ({e})")))?;
        for (id, t) in &fixed {
            let got = id_of(&inner, t)?;
            if got != *id {
                return Err(tok_err(
                    &vocab,
                    format!(
                        "the added token {t} should have id {id} but follows the vocabulary at {got}; vocab.txt does not match the token list"
                    ),
                ));
            }
        }
        let sep_id = id_of(&inner, &sep)?;
        let cls_id = id_of(&inner, &cls)?;
        inner.with_post_processor(Some(BertProcessing::new((sep, sep_id), (cls, cls_id))));
        Ok(BlipTokenizer {
            inner,
            clean_up_spaces,
            source: vocab,
        })
    }

    /// Ids with `[CLS]` and `[SEP]`, as `tokenizer(text)["input_ids"]`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let e = self
            .inner
            .encode(text, true)
            .map_err(|e| CaptionerError::Setting(format!("tokenizing {text:?} failed: {e}")))?;
        Ok(e.get_ids().to_vec())
    }

    /// `tokenizer.decode(ids, skip_special_tokens=True)`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let s = self
            .inner
            .decode(ids, true)
            .map_err(|e| CaptionerError::Setting(format!("decoding ids {ids:?} failed: {e}")))?;
        Ok(if self.clean_up_spaces {
            clean_up_tokenization(&s)
        } else {
            s
        })
    }

    /// Ids of the vocabulary including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

/// transformers' `clean_up_tokenization`: no space before `. ? ! ,` and in English
/// contractions.
pub fn clean_up_tokenization(s: &str) -> String {
    s.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}
