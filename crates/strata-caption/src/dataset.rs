//! Dataset format: an image folder plus `metadata.jsonl` in the Hugging Face image-folder
//! convention (`file_name` first), with strata's columns.

use serde::{Deserialize, Serialize};

/// Which part of the seeded 8:2 split an image belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

/// One line of `metadata.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataRecord {
    /// Image path relative to the folder holding `metadata.jsonl`.
    pub file_name: String,
    pub scene: String,
    pub relation: String,
    pub elements: Vec<String>,
    /// The traditional flat caption (what a flat-caption run trains on).
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    /// Any further columns (masks, provenance, relation triples, ...), kept as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}
