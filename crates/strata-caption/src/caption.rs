//! The hierarchical caption of one image (paper Eq. 8) and its flat rendering.

use serde::{Deserialize, Serialize};

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
