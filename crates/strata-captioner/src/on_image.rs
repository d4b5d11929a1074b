//! Captioning one decoded image with pixel parts, through the same pipeline as imported
//! sentences: [`caption_image`] runs the scene part and the tagger once, then hands the
//! captioner's lazy candidate stream to `strata_caption::pipeline::caption_item`, so the
//! golden rule, the corrections and the provenance are the dataset path's own. Every
//! candidate drawn from a pixel captioner is recorded with its decoding; a part that fails
//! on the image makes the item fail (reported, the batch goes on) instead of falling back.

use strata_caption::error::CaptionError;
use strata_caption::import::SourceItem;
use strata_caption::pipeline::{
    caption_item, CaptionConfig, CaptionedItem, ElementTagger, ExistingSentences, LabelScene,
    LexiconTagger, RelationCaptioner, SceneClassifier,
};
use strata_caption::{CandidateRecord, Knowledge};
use strata_image::RgbImage;

use crate::error::CaptionerError;
use crate::parts::{ImageCaptioner, ImageScene, ImageTagger, SceneGuess, Tag};

/// Where each part of the caption comes from for one run.
pub struct Parts<'p> {
    /// `None`: the dataset's label (folder name, label file).
    pub scene: Option<&'p mut dyn ImageScene>,
    /// `None`: only the sentences that came with the dataset.
    pub captioner: Option<&'p mut dyn ImageCaptioner>,
    /// `None`: the lexicon elements named in the chosen sentences' source.
    pub tagger: Option<&'p mut dyn ImageTagger>,
}

/// What the parts said about one image besides the caption: the scene score and the tag
/// scores, for reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartScores {
    pub scene: Option<SceneGuess>,
    pub tags: Vec<Tag>,
}

fn part_error(part: &str, e: CaptionerError) -> CaptionError {
    CaptionError::Other(format!("{part}: {e}"))
}

/// Captions `item` whose pixels are `image`. The dataset's own sentences, when it has any,
/// come first in the candidate stream; the captioner's draws follow (seeded with `seed`).
/// When a scene part finds no scene above its threshold, the dataset label is used if there
/// is one.
pub fn caption_image(
    k: &Knowledge,
    item: &SourceItem,
    image: &RgbImage,
    seed: u64,
    parts: Parts<'_>,
    cfg: &CaptionConfig,
) -> Result<(CaptionedItem, PartScores), CaptionError> {
    let mut scores = PartScores::default();
    let mut label = LabelScene { knowledge: k };
    let mut scene_fixed;
    let scene: &mut dyn SceneClassifier = match parts.scene {
        Some(p) => {
            let guess = p.classify(image).map_err(|e| part_error(&p.name(), e))?;
            let from_label = label.classify(item)?;
            scores.scene = guess.clone();
            scene_fixed = Fixed {
                name: match (&guess, &from_label) {
                    (None, Some(_)) => format!("{} (no scene passed; label used)", p.name()),
                    _ => p.name(),
                },
                scene: guess.map(|g| g.scene).or(from_label),
                tags: Vec::new(),
            };
            &mut scene_fixed
        }
        None => &mut label,
    };
    let mut lexicon = LexiconTagger { knowledge: k };
    let mut tags_fixed;
    let tagger: &mut dyn ElementTagger = match parts.tagger {
        Some(p) => {
            let tags = p.tag(image).map_err(|e| part_error(&p.name(), e))?;
            scores.tags = tags.clone();
            tags_fixed = Fixed {
                name: p.name(),
                scene: None,
                tags: tags.into_iter().map(|t| t.element).collect(),
            };
            &mut tags_fixed
        }
        None => &mut lexicon,
    };
    let captioned = match parts.captioner {
        Some(p) => {
            let mut c = OnImage {
                part: p,
                image,
                seed,
                drawn: Vec::new(),
                error: None,
            };
            caption_item(k, item, scene, &mut c, tagger, cfg)?
        }
        None => caption_item(k, item, scene, &mut ExistingSentences, tagger, cfg)?,
    };
    Ok((captioned, scores))
}

/// A scene or tag list computed before the pipeline runs.
struct Fixed {
    name: String,
    scene: Option<String>,
    tags: Vec<String>,
}

impl SceneClassifier for Fixed {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn classify(&mut self, _: &SourceItem) -> strata_caption::error::Result<Option<String>> {
        Ok(self.scene.clone())
    }
}

impl ElementTagger for Fixed {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn tag(&mut self, _: &SourceItem) -> strata_caption::error::Result<Vec<String>> {
        Ok(self.tags.clone())
    }
}

/// A pixel captioner seen as a pipeline captioner on one image.
struct OnImage<'p, 'i> {
    part: &'p mut dyn ImageCaptioner,
    image: &'i RgbImage,
    seed: u64,
    drawn: Vec<CandidateRecord>,
    error: Option<CaptionerError>,
}

impl RelationCaptioner for OnImage<'_, '_> {
    fn name(&self) -> String {
        self.part.name()
    }

    fn candidates<'a>(
        &'a mut self,
        item: &'a SourceItem,
    ) -> strata_caption::error::Result<Box<dyn Iterator<Item = String> + 'a>> {
        self.drawn.clear();
        self.error = None;
        let OnImage {
            part,
            image,
            seed,
            drawn,
            error,
        } = self;
        let own = item.sentences.len();
        let dataset = item.sentences.iter().enumerate().map(|(index, s)| {
            (
                index,
                Ok(crate::parts::Candidate {
                    text: s.clone(),
                    decoding: "dataset sentence".into(),
                }),
            )
        });
        let drawn_stream = match part.candidates(image, *seed) {
            Ok(s) => s,
            Err(e) => {
                *error = Some(e);
                Box::new(std::iter::empty())
            }
        };
        let stream = dataset
            .chain(drawn_stream.enumerate().map(move |(i, c)| (own + i, c)))
            .map_while(move |(index, c)| match c {
                Ok(c) => {
                    if index >= own {
                        drawn.push(CandidateRecord {
                            index,
                            text: c.text.clone(),
                            decoding: c.decoding,
                        });
                    }
                    Some(c.text)
                }
                Err(e) => {
                    *error = Some(e);
                    None
                }
            });
        Ok(Box::new(stream))
    }

    fn drawn(&mut self) -> Vec<CandidateRecord> {
        std::mem::take(&mut self.drawn)
    }

    fn take_error(&mut self) -> Option<CaptionError> {
        let name = self.part.name();
        self.error.take().map(|e| part_error(&name, e))
    }
}
