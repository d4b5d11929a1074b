//! The three parts of a pixel captioner, each seeing the decoded image: a scene
//! classifier, a relation captioner that yields candidate sentences lazily, and an element
//! tagger. [`crate::on_image`] adapts them to `strata_caption::pipeline`'s traits, so the
//! golden rule, the corrections and the provenance are the same as for imported sentences.

use strata_image::RgbImage;

use crate::error::Result;

/// A scene concept with the part's confidence (a probability, or a cosine for zero-shot).
#[derive(Debug, Clone, PartialEq)]
pub struct SceneGuess {
    /// The scene concept, as the knowledge file names it.
    pub scene: String,
    pub score: f32,
}

/// One element tag: the knowledge file's lexicon name and the part's score.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    pub element: String,
    pub score: f32,
}

/// One candidate relation sentence and how it was drawn, e.g. `greedy`, `beam 3`,
/// `nucleus p=0.9 T=0.7 seed 11`, with the text prompt when one was given. Both go into the
/// provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub text: String,
    pub decoding: String,
}

/// Classifies the scene of an image.
pub trait ImageScene {
    /// Recorded in the provenance, e.g. `clip-zero-shot:<folder>`.
    fn name(&self) -> String;
    /// The scene, or `None` when no scene reaches the part's threshold.
    fn classify(&mut self, image: &RgbImage) -> Result<Option<SceneGuess>>;
}

/// Draws candidate relation sentences for an image.
pub trait ImageCaptioner {
    /// Recorded in the provenance, e.g. `blip:<folder>`.
    fn name(&self) -> String;
    /// Candidates in drawing order; the caller stops pulling once one passes the golden
    /// rule, so a sampling captioner should do its work lazily, one candidate per `next`.
    /// `seed` makes the draws reproducible per image.
    fn candidates<'a>(
        &'a mut self,
        image: &'a RgbImage,
        seed: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<Candidate>> + 'a>>;
}

/// Tags the elements present in an image (multi-label).
pub trait ImageTagger {
    /// Recorded in the provenance, e.g. `clip-zero-shot:<folder>` or `onnx:<file>`.
    fn name(&self) -> String;
    /// The elements whose score reaches their threshold, most confident first.
    fn tag(&mut self, image: &RgbImage) -> Result<Vec<Tag>>;
}
