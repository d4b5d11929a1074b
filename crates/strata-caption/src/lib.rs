//! strata-caption: hierarchical captions {scene, relation, elements}, the spatial relation
//! knowledge collection (SRKC), relation extraction, the golden rule, expert corrections
//! and dataset formats. Section 3.1.2 of the paper. No ML dependencies: the networks plug
//! in through the traits of [`pipeline`].
//!
//! # Public API (stable)
//!
//! Knowledge
//! * [`Knowledge::embedded()`] — the default SRKC (`knowledge/srkc.toml`, compiled in);
//!   [`Knowledge::from_file`] / [`Knowledge::from_toml_str`] for a user file;
//!   [`knowledge::EMBEDDED_TOML`] is the text. [`Knowledge::element`] maps an alias or plural
//!   to its lexicon name, [`Knowledge::scene_name`] a dataset label to its scene concept.
//!
//! Extraction
//! * [`extract_relations`]`(&Knowledge, sentence) -> Vec<`[`RelationMention`]`>`: relation
//!   id, matched phrase and byte span, subject / object (/ second object for "between")
//!   elements in sentence order, `passive` when the phrase swaps roles ("surrounded by").
//! * [`analyze`] gives relations, vertical relations and element mentions at once;
//!   [`find_elements`], [`find_vertical`].
//!
//! Golden rule
//! * [`select_golden`]`(&Knowledge, candidates, max, `[`Fallback`]`) -> Option<`[`Selection`]`>`.
//!
//! Corrections (rules from the knowledge file, each logged as a [`Correction`])
//! * [`correct`] (all, in order), [`correct::remove_vertical_clauses`],
//!   [`correct::normalise_elements`], [`correct::add_relation_elements`],
//!   [`correct::check_elements`].
//!
//! Datasets
//! * [`MetadataRecord`] (one `metadata.jsonl` line), [`read_metadata`], [`read_dataset`],
//!   [`write_metadata`] (atomic), [`write_dataset`] (whole folder, atomic),
//!   [`assign_splits`] (seeded, stratified 8:2).
//! * Importers in [`import`]: Karpathy (RSICD / UCM / Sydney), COCO, class folders, kohya,
//!   with exporters for round trips.
//! * [`DatasetStats`]: the paper's 4.1 statistics.
//!
//! Pipeline
//! * [`pipeline::SceneClassifier`], [`pipeline::RelationCaptioner`],
//!   [`pipeline::ElementTagger`] and [`pipeline::caption_item`]; provenance in
//!   [`Provenance`].

pub mod caption;
pub mod correct;
pub mod dataset;
pub mod error;
pub mod extract;
pub mod golden;
pub mod import;
pub mod knowledge;
pub mod pipeline;
pub mod record;
pub mod stats;
pub mod text;

pub use caption::{
    CandidateRecord, HierarchicalCaption, Provenance, RelationTriple, SelectionRecord,
};
pub use correct::{correct, Correction, CorrectionRule};
pub use dataset::{
    assign_splits, read_dataset, read_metadata, write_dataset, write_metadata, MetadataRecord,
    Split, METADATA_FILE,
};
pub use error::{CaptionError, Result};
pub use extract::{
    analyze, extract_relations, find_elements, find_vertical, Analysis, ElementMention,
    RelationMention, VerticalMention,
};
pub use golden::{select_golden, Fallback, Selection, SelectionRule};
pub use knowledge::Knowledge;
pub use stats::{DatasetStats, StatsField};
