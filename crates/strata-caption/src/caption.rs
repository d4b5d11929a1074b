//! The hierarchical caption of one image (paper Eq. 8), its flat rendering and its
//! provenance.

use serde::{Deserialize, Serialize};

use crate::correct::Correction;
use crate::extract::RelationMention;
use crate::golden::{Rejection, SelectionRule};

/// `C_hierarchical = {C_scene, C_relation, C_element}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HierarchicalCaption {
    /// Scene concept, e.g. "dense residential".
    pub scene: String,
    /// One or more sentences stating spatial relations between elements.
    pub relation: String,
    /// Geographical element tags, canonical lexicon names, e.g. ["building", "road"].
    pub elements: Vec<String>,
}

impl HierarchicalCaption {
    /// The "traditional" single-level caption used for comparisons: one flat sentence
    /// built from the same information.
    pub fn flat(&self) -> String {
        let mut out = String::new();
        if !self.scene.is_empty() {
            out.push_str(&format!("a remote sensing image of {}", self.scene));
        }
        if !self.elements.is_empty() {
            if !out.is_empty() {
                out.push_str(" with ");
            }
            out.push_str(&self.elements.join(", "));
        }
        out
    }

    /// The elements segment as it is encoded: comma-separated tags.
    pub fn elements_text(&self) -> String {
        self.elements.join(", ")
    }
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
}

/// One relation of the final caption, in the compact form stored in the `relations`
/// column: relation id, subject, object (sentence order), `passive`, second object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationTriple {
    pub relation: String,
    pub subject: Option<String>,
    pub object: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object2: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub passive: bool,
}

impl From<&RelationMention> for RelationTriple {
    fn from(m: &RelationMention) -> Self {
        RelationTriple {
            relation: m.relation.clone(),
            subject: m.subject.as_ref().map(|e| e.element.clone()),
            object: m.object.as_ref().map(|e| e.element.clone()),
            object2: m.object2.as_ref().map(|e| e.element.clone()),
            passive: m.passive,
        }
    }
}
