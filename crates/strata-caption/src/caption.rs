//! The hierarchical caption of one image (paper Eq. 8), its flat rendering and its
//! provenance.

use serde::{Deserialize, Serialize};

use crate::extract::RelationMention;
pub use crate::record::{CandidateRecord, Provenance, SelectionRecord};

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
