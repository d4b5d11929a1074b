//! The caption arms a study compares: how a training caption (and the test caption at
//! generation) is given to the model.

use serde::{Deserialize, Serialize};
use strata_caption::MetadataRecord;
use strata_models::fusion::FusionMode;
use strata_models::segments::SegmentTexts;
use strata_train::{Captions, FusionKind};

/// One segment of a hierarchical caption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    Scene,
    Relation,
    Elements,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arm {
    /// The traditional one-sentence caption (`text`).
    Flat,
    /// Scene · relation · elements, fused per timestep by the fixed schedule, concatenated.
    HierarchicalConcat,
    /// The same segments and schedule, each segment attended separately (decoupled).
    HierarchicalDecoupled,
    /// The segments with a learned timestep schedule (initialised from the fixed one).
    HierarchicalLearned,
    /// Ablation: the scene segment alone, as a one-sentence caption.
    SceneOnly,
    /// Ablation: the relation segment alone.
    RelationOnly,
    /// Ablation: the elements segment alone.
    ElementsOnly,
}

impl Arm {
    pub const ALL: [Arm; 7] = [
        Arm::Flat,
        Arm::HierarchicalConcat,
        Arm::HierarchicalDecoupled,
        Arm::HierarchicalLearned,
        Arm::SceneOnly,
        Arm::RelationOnly,
        Arm::ElementsOnly,
    ];

    /// The name in study files, folders and tables.
    pub fn id(self) -> &'static str {
        match self {
            Arm::Flat => "flat",
            Arm::HierarchicalConcat => "hierarchical-concat",
            Arm::HierarchicalDecoupled => "hierarchical-decoupled",
            Arm::HierarchicalLearned => "hierarchical-learned",
            Arm::SceneOnly => "scene-only",
            Arm::RelationOnly => "relation-only",
            Arm::ElementsOnly => "elements-only",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Arm::Flat => "the one-sentence caption",
            Arm::HierarchicalConcat => {
                "scene · relation · elements, fixed timestep schedule, concatenated"
            }
            Arm::HierarchicalDecoupled => {
                "scene · relation · elements, fixed timestep schedule, attended separately"
            }
            Arm::HierarchicalLearned => {
                "scene · relation · elements, learned timestep schedule, concatenated"
            }
            Arm::SceneOnly => "ablation: the scene segment alone",
            Arm::RelationOnly => "ablation: the relation segment alone",
            Arm::ElementsOnly => "ablation: the elements segment alone",
        }
    }

    /// The segment a one-segment arm keeps.
    pub fn segment(self) -> Option<Segment> {
        match self {
            Arm::SceneOnly => Some(Segment::Scene),
            Arm::RelationOnly => Some(Segment::Relation),
            Arm::ElementsOnly => Some(Segment::Elements),
            _ => None,
        }
    }

    /// How the trainer reads the captions.
    pub fn captions(self) -> Captions {
        match self {
            Arm::HierarchicalConcat | Arm::HierarchicalDecoupled | Arm::HierarchicalLearned => {
                Captions::Hierarchical
            }
            _ => Captions::Flat,
        }
    }

    /// The fusion of the hierarchical arms (ignored by the others).
    pub fn fusion(self) -> (FusionKind, FusionMode) {
        match self {
            Arm::HierarchicalDecoupled => (FusionKind::Fixed, FusionMode::Decoupled),
            Arm::HierarchicalLearned => (FusionKind::Learned, FusionMode::Concat),
            _ => (FusionKind::Fixed, FusionMode::Concat),
        }
    }

    /// The one-sentence caption this arm trains and generates with (flat and one-segment
    /// arms), from a record.
    pub fn flat_text(self, r: &MetadataRecord) -> String {
        // the segment exactly as the hierarchical arms see it
        let s = SegmentTexts::new(&r.scene, &r.relation, &r.elements);
        match self.segment() {
            Some(Segment::Scene) => s.scene,
            Some(Segment::Relation) => s.relation,
            Some(Segment::Elements) => s.elements,
            None => r.text.clone(),
        }
    }
}
