//! Relation fidelity: the share of requested relation triples that the synth relation
//! checker finds in a mask (predicted by the segmenter for generated images), per relation
//! type and per scene.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_synth::{check, MaskView, Triple};

/// Honoured / requested counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Share {
    pub honoured: usize,
    pub requested: usize,
    /// `honoured / requested`, `null` when nothing was requested.
    pub share: Option<f64>,
}

impl Share {
    fn add(&mut self, holds: bool) {
        self.requested += 1;
        self.honoured += holds as usize;
        self.share = Some(self.honoured as f64 / self.requested as f64);
    }
}

/// One image's verdicts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRelations {
    pub image: String,
    pub scene: String,
    /// `(relation id, subject, object, holds, detail)` per requested triple.
    pub verdicts: Vec<(String, String, String, bool, String)>,
}

/// The metric for one set of images.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RelationFidelity {
    pub overall: Share,
    pub per_relation: BTreeMap<String, Share>,
    pub per_scene: BTreeMap<String, Share>,
    pub images: Vec<ImageRelations>,
    /// `(image, problem)` for triples the checker could not parse.
    pub errors: Vec<(String, String)>,
}

/// One image to score: its name, scene label, `side × side` mask and requested triples.
pub struct MaskedImage<'a> {
    pub image: &'a str,
    pub scene: &'a str,
    pub side: usize,
    pub mask: &'a [u8],
    pub triples: &'a [Triple],
}

/// Check every requested triple of every image against its mask.
pub fn relation_fidelity(items: &[MaskedImage]) -> RelationFidelity {
    let mut out = RelationFidelity::default();
    for it in items {
        let view = match MaskView::new(it.side, it.side, it.mask) {
            Ok(v) => v,
            Err(e) => {
                out.errors.push((it.image.to_string(), e.to_string()));
                continue;
            }
        };
        let mut img = ImageRelations {
            image: it.image.to_string(),
            scene: it.scene.to_string(),
            verdicts: Vec::new(),
        };
        for t in it.triples {
            match check(&view, t) {
                Ok(v) => {
                    out.overall.add(v.holds);
                    out.per_relation
                        .entry(t.relation.clone())
                        .or_default()
                        .add(v.holds);
                    out.per_scene
                        .entry(it.scene.to_string())
                        .or_default()
                        .add(v.holds);
                    img.verdicts.push((
                        t.relation.clone(),
                        t.subject.clone(),
                        t.object.clone(),
                        v.holds,
                        v.detail,
                    ));
                }
                Err(e) => out.errors.push((
                    it.image.to_string(),
                    format!("triple {}/{}/{}: {e}", t.relation, t.subject, t.object),
                )),
            }
        }
        out.images.push(img);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_synth::{generate, SceneClass};

    #[test]
    fn ground_truth_masks_honour_their_relations_and_negatives_do_not() {
        let scenes: Vec<_> = [SceneClass::Park, SceneClass::Square, SceneClass::Resort]
            .iter()
            .enumerate()
            .map(|(i, &c)| generate(c, 64, 11 + i as u64))
            .collect();
        let names: Vec<String> = (0..scenes.len()).map(|i| format!("s{i}.png")).collect();
        let items: Vec<MaskedImage> = scenes
            .iter()
            .zip(&names)
            .map(|(s, n)| MaskedImage {
                image: n,
                scene: s.class.name(),
                side: 64,
                mask: &s.mask,
                triples: &s.triples,
            })
            .collect();
        let f = relation_fidelity(&items);
        assert!(f.overall.requested > 0);
        assert_eq!(f.overall.share, Some(1.0), "{:?}", f.images);
        assert_eq!(f.per_scene.len(), 3);
        // an all-bare-land mask honours none of them
        let blank = vec![0u8; 64 * 64];
        let items: Vec<MaskedImage> = scenes
            .iter()
            .zip(&names)
            .map(|(s, n)| MaskedImage {
                image: n,
                scene: s.class.name(),
                side: 64,
                mask: &blank,
                triples: &s.triples,
            })
            .collect();
        let f0 = relation_fidelity(&items);
        assert_eq!(f0.overall.honoured, 0);
        assert_eq!(f0.overall.requested, f.overall.requested);
    }

    #[test]
    fn bad_triples_are_reported_not_fatal() {
        let t = vec![Triple {
            relation: "hovers_over".into(),
            subject: "tree".into(),
            object: "pond".into(),
            object2: None,
        }];
        let m = vec![0u8; 64 * 64];
        let f = relation_fidelity(&[MaskedImage {
            image: "x.png",
            scene: "park",
            side: 64,
            mask: &m,
            triples: &t,
        }]);
        assert_eq!(f.errors.len(), 1);
        assert_eq!(f.overall.requested, 0);
        assert_eq!(f.overall.share, None);
    }
}
