//! The records a caption's provenance is made of: how the relation sentence was chosen
//! (golden rule), which corrections were applied, and where each part came from. Plain data,
//! serialised into the `provenance` column of `metadata.jsonl`; the stages that produce them
//! ([`crate::golden`], [`crate::correct`]) and the caption itself ([`crate::caption`])
//! re-export them.

use serde::{Deserialize, Serialize};

/// Which rule made a correction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrectionRule {
    /// A clause stating a vertical relation was removed from the relation text.
    RemoveVerticalClause,
    /// An element tag was rewritten to its lexicon name.
    NormaliseElement,
    /// A repeated element tag was dropped.
    DropDuplicateElement,
    /// An element named in the relation text was added to the tags.
    AddRelationElement,
    /// An element implausible for the scene was flagged (kept) ...
    FlagImplausibleElement,
    /// ... or removed.
    RemoveImplausibleElement,
    /// A tag not in the lexicon was flagged (kept) ...
    FlagUnknownElement,
    /// ... or removed.
    RemoveUnknownElement,
}

/// One logged correction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correction {
    pub rule: CorrectionRule,
    /// Why, in words.
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// Why a candidate was passed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Rejection {
    /// It holds no SRKC relation.
    NoRelation { index: usize },
    /// It holds a vertical relation (the phrases found).
    Vertical { index: usize, phrases: Vec<String> },
}

/// How the chosen sentence was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelectionRule {
    Golden,
    FallbackStripVertical,
    FallbackFirst,
    FallbackMostRelations,
    FallbackEmpty,
    /// There were no candidates at all.
    NoCandidates,
}

/// How the relation sentence was chosen (the golden rule's record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectionRecord {
    pub rule: SelectionRule,
    /// Position of the chosen candidate in the captioner's stream.
    pub candidate: Option<usize>,
    /// How many candidates were drawn.
    pub examined: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<Rejection>,
    /// The chosen sentence before corrections.
    pub original: String,
}

/// Where each part of a caption came from and what was changed. Stored in the
/// `provenance` column of `metadata.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The scene classifier, e.g. `label:folder` or `classifier:efficientnet`.
    pub scene_source: String,
    /// The relation captioner, e.g. `sentences:karpathy` or `blip2:nucleus`.
    pub relation_source: String,
    /// The element tagger, e.g. `lexicon`.
    pub element_source: String,
    pub selection: SelectionRecord,
    /// Every correction, in the order applied.
    pub corrections: Vec<Correction>,
    /// The knowledge file used: `name (source, fnv1a FINGERPRINT)`.
    pub knowledge: String,
    /// Every candidate a sampling captioner drew, with how it was drawn (empty for
    /// sentences that came with the dataset: those are in the dataset already).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<CandidateRecord>,
}

/// One drawn candidate sentence: its position in the stream, its text and the decoding
/// that produced it (e.g. `beam 3`, `nucleus p=0.9 T=0.7 seed 12`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateRecord {
    pub index: usize,
    pub text: String,
    pub decoding: String,
}
