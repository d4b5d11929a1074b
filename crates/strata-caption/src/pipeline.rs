//! The captioning pipeline with its plug-in points. The paper uses EfficientNet (scene),
//! BLIP-2 (relation) and DeepDanbooru (elements); those networks implement these traits in
//! a later stage. The implementations here need no network: scene from the dataset label,
//! relation from the sentences that came with the image, elements from the lexicon.

use crate::caption::{
    CandidateRecord, HierarchicalCaption, Provenance, RelationTriple, SelectionRecord,
};

use crate::correct::correct;
use crate::dataset::MetadataRecord;
use crate::error::{CaptionError, Result};
use crate::extract::analyze;
use crate::golden::{select_golden, Fallback};
use crate::import::SourceItem;
use crate::knowledge::Knowledge;

/// Gives the scene concept of an image.
pub trait SceneClassifier {
    /// Recorded in the provenance, e.g. `label` or `efficientnet-b0`.
    fn name(&self) -> String;
    /// The scene, or `None` when it cannot tell.
    fn classify(&mut self, item: &SourceItem) -> Result<Option<String>>;
}

/// Produces candidate relation sentences for an image, lazily (a sampling captioner is
/// asked for more only while no candidate has passed the golden rule).
pub trait RelationCaptioner {
    fn name(&self) -> String;
    fn candidates<'a>(
        &'a mut self,
        item: &'a SourceItem,
    ) -> Result<Box<dyn Iterator<Item = String> + 'a>>;
    /// The candidates drawn by the last [`RelationCaptioner::candidates`] stream, with how
    /// each was drawn, for the provenance. A captioner that only replays sentences a
    /// dataset brought returns none (the default).
    fn drawn(&mut self) -> Vec<CandidateRecord> {
        Vec::new()
    }
    /// An error that ended the last stream early (a network failing on this image). The
    /// pipeline reports it for the item instead of falling back.
    fn take_error(&mut self) -> Option<CaptionError> {
        None
    }
}

/// Gives the element tags of an image (multi-label classification in the paper).
pub trait ElementTagger {
    fn name(&self) -> String;
    fn tag(&mut self, item: &SourceItem) -> Result<Vec<String>>;
}

/// Scene from the dataset's own label (folder name, file-name prefix, `scene` field),
/// mapped to the knowledge file's scene concepts.
pub struct LabelScene<'k> {
    pub knowledge: &'k Knowledge,
}

impl SceneClassifier for LabelScene<'_> {
    fn name(&self) -> String {
        "label".into()
    }
    fn classify(&mut self, item: &SourceItem) -> Result<Option<String>> {
        Ok(item
            .label
            .as_deref()
            .map(|l| self.knowledge.scene_name(l))
            .filter(|s| !s.is_empty()))
    }
}

/// Relation candidates from the sentences that came with the image, in their order.
pub struct ExistingSentences;

impl RelationCaptioner for ExistingSentences {
    fn name(&self) -> String {
        "sentences".into()
    }
    fn candidates<'a>(
        &'a mut self,
        item: &'a SourceItem,
    ) -> Result<Box<dyn Iterator<Item = String> + 'a>> {
        Ok(Box::new(item.sentences.iter().cloned()))
    }
}

/// Elements: lexicon elements named in any of the image's sentences, in order of first
/// mention.
pub struct LexiconTagger<'k> {
    pub knowledge: &'k Knowledge,
}

impl ElementTagger for LexiconTagger<'_> {
    fn name(&self) -> String {
        "lexicon".into()
    }
    fn tag(&mut self, item: &SourceItem) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for s in &item.sentences {
            for e in analyze(self.knowledge, s).element_names() {
                if !out.contains(&e) {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }
}

/// Pipeline settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptionConfig {
    pub fallback: Fallback,
    /// Stop drawing candidates after this many (`None`: until the stream ends).
    pub max_candidates: Option<usize>,
}

/// A captioned image: the final caption, its provenance and the relation triples of the
/// corrected relation text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionedItem {
    pub caption: HierarchicalCaption,
    pub provenance: Provenance,
    pub relations: Vec<RelationTriple>,
}

/// Captions one image: scene, golden-rule relation, elements, then the corrections.
pub fn caption_item(
    k: &Knowledge,
    item: &SourceItem,
    scene: &mut dyn SceneClassifier,
    captioner: &mut dyn RelationCaptioner,
    tagger: &mut dyn ElementTagger,
    cfg: &CaptionConfig,
) -> Result<CaptionedItem> {
    let scene_name = scene.classify(item)?.unwrap_or_default();
    let selection = {
        let stream = captioner.candidates(item)?;
        select_golden(k, stream, cfg.max_candidates, cfg.fallback)
    }
    .ok_or(CaptionError::NoGoldenCandidate {
        examined: item.sentences.len(),
    });
    if let Some(e) = captioner.take_error() {
        return Err(e);
    }
    let selection = selection?;
    let candidates = captioner.drawn();
    let elements = tagger.tag(item)?;
    let mut caption = HierarchicalCaption {
        scene: scene_name,
        relation: selection.text.clone(),
        elements,
    };
    let corrections = correct(k, &mut caption);
    let relations = crate::text::split_sentences(&caption.relation)
        .into_iter()
        .flat_map(|s| analyze(k, s).relations)
        .map(|m| RelationTriple::from(&m))
        .collect();
    let provenance = Provenance {
        scene_source: format!("{}:{}", scene.name(), item.origin),
        relation_source: format!("{}:{}", captioner.name(), item.origin),
        element_source: tagger.name(),
        selection: SelectionRecord {
            rule: selection.rule,
            candidate: selection.index,
            examined: selection.examined,
            rejected: selection.rejected,
            original: selection.text,
        },
        corrections,
        knowledge: format!("{} ({}, fnv1a {})", k.name, k.source, k.fingerprint),
        candidates,
    };
    Ok(CaptionedItem {
        caption,
        provenance,
        relations,
    })
}

/// The `metadata.jsonl` record for a captioned image. `text`, the traditional caption, is
/// the image's first source sentence when it has one (what a flat-caption dataset holds),
/// otherwise [`HierarchicalCaption::flat`].
pub fn to_record(item: &SourceItem, c: &CaptionedItem) -> MetadataRecord {
    let text = item
        .sentences
        .first()
        .cloned()
        .unwrap_or_else(|| c.caption.flat());
    let mut r = MetadataRecord::new(item.file_name.clone(), &c.caption, text);
    r.set_provenance(&c.provenance);
    r.set_relations(&c.relations);
    if let Some(s) = &item.source_split {
        r.extra
            .insert("source_split".into(), serde_json::Value::String(s.clone()));
    }
    r
}
