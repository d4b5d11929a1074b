//! The golden-rule loop over a pixel captioner's stream: a stub captioner yields a fixed
//! sequence of sentences and counts how many it was asked for.

use std::cell::Cell;
use std::rc::Rc;

use strata_caption::error::CaptionError;
use strata_caption::import::SourceItem;
use strata_caption::pipeline::{CaptionConfig, CaptionedItem};
use strata_caption::record::{Rejection, SelectionRule};
use strata_caption::{Fallback, Knowledge};
use strata_captioner::{
    caption_image, Candidate, CaptionerError, ImageCaptioner, ImageScene, ImageTagger, PartScores,
    Parts, SceneGuess, Tag,
};
use strata_image::RgbImage;

struct Stub {
    sentences: Vec<&'static str>,
    pulled: Rc<Cell<usize>>,
    fail_at: Option<usize>,
}

impl ImageCaptioner for Stub {
    fn name(&self) -> String {
        "stub".into()
    }
    fn candidates<'a>(
        &'a mut self,
        _image: &'a RgbImage,
        seed: u64,
    ) -> strata_captioner::Result<Box<dyn Iterator<Item = strata_captioner::Result<Candidate>> + 'a>>
    {
        let pulled = self.pulled.clone();
        let fail_at = self.fail_at;
        Ok(Box::new(self.sentences.iter().enumerate().map(
            move |(i, s)| {
                pulled.set(pulled.get() + 1);
                if Some(i) == fail_at {
                    return Err(CaptionerError::Setting("the network failed".into()));
                }
                Ok(Candidate {
                    text: s.to_string(),
                    decoding: format!("draw {i} seed {seed}"),
                })
            },
        )))
    }
}

struct StubScene(Option<&'static str>);
impl ImageScene for StubScene {
    fn name(&self) -> String {
        "stub-scene".into()
    }
    fn classify(&mut self, _: &RgbImage) -> strata_captioner::Result<Option<SceneGuess>> {
        Ok(self.0.map(|s| SceneGuess {
            scene: s.into(),
            score: 0.9,
        }))
    }
}

struct StubTags;
impl ImageTagger for StubTags {
    fn name(&self) -> String {
        "stub-tags".into()
    }
    fn tag(&mut self, _: &RgbImage) -> strata_captioner::Result<Vec<Tag>> {
        Ok(vec![
            Tag {
                element: "river".into(),
                score: 0.8,
            },
            Tag {
                element: "road".into(),
                score: 0.6,
            },
        ])
    }
}

fn item(label: Option<&str>, sentences: &[&str]) -> SourceItem {
    SourceItem {
        file_name: "a/tile.png".into(),
        image: "a/tile.png".into(),
        label: label.map(String::from),
        sentences: sentences.iter().map(|s| s.to_string()).collect(),
        source_split: None,
        origin: "images".into(),
    }
}

fn image() -> RgbImage {
    RgbImage {
        width: 2,
        height: 2,
        data: vec![0; 12],
    }
}

/// Captions `item` with `cap` as the only pixel part (scene from the label, elements from
/// the lexicon).
fn caption_with(
    k: &Knowledge,
    item: &SourceItem,
    seed: u64,
    cap: &mut Stub,
    cfg: &CaptionConfig,
) -> Result<(CaptionedItem, PartScores), CaptionError> {
    caption_image(
        k,
        item,
        &image(),
        seed,
        Parts {
            scene: None,
            captioner: Some(cap),
            tagger: None,
        },
        cfg,
    )
}

const NO_RELATION: &str = "many green trees.";
const VERTICAL: &str = "a parking lot is above the building.";
const PASSES: &str = "a road runs along the river.";
const PASSES_TOO: &str = "there is a bridge over the river.";

#[test]
fn first_passing_candidate_is_chosen_and_no_more_are_drawn() {
    let k = Knowledge::embedded();
    let pulled = Rc::new(Cell::new(0));
    let mut cap = Stub {
        sentences: vec![NO_RELATION, VERTICAL, PASSES, PASSES_TOO],
        pulled: pulled.clone(),
        fail_at: None,
    };
    let (c, _) = caption_with(
        &k,
        &item(Some("river"), &[]),
        7,
        &mut cap,
        &CaptionConfig::default(),
    )
    .unwrap();
    assert_eq!(c.caption.relation, PASSES);
    let sel = &c.provenance.selection;
    assert_eq!(sel.rule, SelectionRule::Golden);
    assert_eq!(sel.candidate, Some(2));
    assert_eq!(sel.examined, 3);
    // The vertical one is dropped for its phrase, the first for holding no relation.
    assert!(matches!(
        sel.rejected[0],
        Rejection::NoRelation { index: 0 }
    ));
    match &sel.rejected[1] {
        Rejection::Vertical { index, phrases } => {
            assert_eq!(*index, 1);
            assert_eq!(phrases, &vec!["above".to_string()]);
        }
        other => panic!("expected a vertical rejection, got {other:?}"),
    }
    // Lazy: the fourth sentence was never drawn.
    assert_eq!(pulled.get(), 3);
    // Every drawn candidate is in the provenance with how it was drawn.
    let drawn: Vec<(usize, &str, &str)> = c
        .provenance
        .candidates
        .iter()
        .map(|r| (r.index, r.text.as_str(), r.decoding.as_str()))
        .collect();
    assert_eq!(
        drawn,
        vec![
            (0, NO_RELATION, "draw 0 seed 7"),
            (1, VERTICAL, "draw 1 seed 7"),
            (2, PASSES, "draw 2 seed 7")
        ]
    );
    assert_eq!(c.provenance.relation_source, "stub:images");
    // The provenance column round-trips through JSON with the candidates in it.
    let v = serde_json::to_value(&c.provenance).unwrap();
    assert_eq!(v["candidates"][1]["decoding"], "draw 1 seed 7");
}

#[test]
fn the_cap_is_honoured_and_the_fallback_applies() {
    let k = Knowledge::embedded();
    let pulled = Rc::new(Cell::new(0));
    let mut cap = Stub {
        sentences: vec![NO_RELATION, VERTICAL, PASSES],
        pulled: pulled.clone(),
        fail_at: None,
    };
    let cfg = CaptionConfig {
        fallback: Fallback::Skip,
        max_candidates: Some(2),
    };
    let r = caption_with(&k, &item(None, &[]), 1, &mut cap, &cfg);
    assert!(r.is_err(), "no passing sentence within the cap: skipped");
    assert_eq!(pulled.get(), 2, "the cap stops the drawing");

    // With the default fallback the vertical clause is stripped by the corrections.
    let pulled = Rc::new(Cell::new(0));
    let mut cap = Stub {
        sentences: vec![
            NO_RELATION,
            "a road runs along the river. a parking lot is above the building.",
            PASSES,
        ],
        pulled: pulled.clone(),
        fail_at: None,
    };
    let cfg = CaptionConfig {
        fallback: Fallback::StripVertical,
        max_candidates: Some(2),
    };
    let (c, _) = caption_with(&k, &item(None, &[]), 1, &mut cap, &cfg).unwrap();
    assert_eq!(pulled.get(), 2);
    assert_eq!(
        c.provenance.selection.rule,
        SelectionRule::FallbackStripVertical
    );
    assert!(
        !c.caption.relation.contains("above"),
        "{}",
        c.caption.relation
    );
    assert!(c.caption.relation.contains("along the river"));
}

#[test]
fn dataset_sentences_come_first_then_the_captioner() {
    let k = Knowledge::embedded();
    let pulled = Rc::new(Cell::new(0));
    let mut cap = Stub {
        sentences: vec![PASSES_TOO],
        pulled: pulled.clone(),
        fail_at: None,
    };
    let (c, _) = caption_with(
        &k,
        &item(Some("river"), &[NO_RELATION, VERTICAL]),
        0,
        &mut cap,
        &CaptionConfig::default(),
    )
    .unwrap();
    assert_eq!(c.caption.relation, PASSES_TOO);
    assert_eq!(c.provenance.selection.candidate, Some(2));
    // Only the captioner's draw is recorded; the dataset's own sentences are in the dataset.
    assert_eq!(c.provenance.candidates.len(), 1);
    assert_eq!(c.provenance.candidates[0].index, 2);
}

#[test]
fn scene_and_tags_come_from_the_parts() {
    let k = Knowledge::embedded();
    let mut cap = Stub {
        sentences: vec![PASSES],
        pulled: Rc::new(Cell::new(0)),
        fail_at: None,
    };
    let mut scene = StubScene(Some("river"));
    let mut tags = StubTags;
    let (c, scores) = caption_image(
        &k,
        &item(Some("forest"), &[]),
        &image(),
        0,
        Parts {
            scene: Some(&mut scene),
            captioner: Some(&mut cap),
            tagger: Some(&mut tags),
        },
        &CaptionConfig::default(),
    )
    .unwrap();
    assert_eq!(c.caption.scene, "river");
    assert_eq!(c.caption.elements, vec!["river", "road"]);
    assert_eq!(c.provenance.scene_source, "stub-scene:images");
    assert_eq!(c.provenance.element_source, "stub-tags");
    assert_eq!(scores.tags.len(), 2);

    // No scene above threshold: the label is used, and the provenance says so.
    let mut scene = StubScene(None);
    let (c, _) = caption_image(
        &k,
        &item(Some("forest"), &[]),
        &image(),
        0,
        Parts {
            scene: Some(&mut scene),
            captioner: Some(&mut cap),
            tagger: None,
        },
        &CaptionConfig::default(),
    )
    .unwrap();
    assert_eq!(c.caption.scene, k.scene_name("forest"));
    assert!(c.provenance.scene_source.contains("label used"));
}

#[test]
fn a_failing_network_fails_the_item_instead_of_falling_back() {
    let k = Knowledge::embedded();
    let mut cap = Stub {
        sentences: vec![NO_RELATION, PASSES],
        pulled: Rc::new(Cell::new(0)),
        fail_at: Some(1),
    };
    let e = caption_with(&k, &item(None, &[]), 0, &mut cap, &CaptionConfig::default()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("stub") && msg.contains("the network failed"),
        "{msg}"
    );
}
