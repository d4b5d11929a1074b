//! Hierarchical caption → three CLIP encodings (paper §3.2.2, Eq. 8–9).
//!
//! Each segment — scene, relation, elements — is tokenized and encoded on its own, so each
//! gets its own 77-token window: a long hierarchical caption (the paper's longest is 104
//! words) is not cut, whereas the same caption as one flat prompt loses everything after
//! 75 tokens. An empty segment encodes like SD's empty prompt (start, end, padding); the
//! unconditional input of classifier-free guidance is all three segments empty.

use candle_core::{Result as CandleResult, Tensor};

use crate::clip::ClipTextTransformer;
use crate::tokenizer::{ClipTokenizer, Encoding, CONTEXT_LENGTH, MAX_CONTENT_TOKENS};

/// Number of caption segments.
pub const NUM_SEGMENTS: usize = 3;

/// The three segments, in the order they are stacked everywhere (`(B, 3, …)` tensors,
/// weights, files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Segment {
    Scene,
    Relation,
    Elements,
}

impl Segment {
    pub const ALL: [Segment; NUM_SEGMENTS] = [Segment::Scene, Segment::Relation, Segment::Elements];
    pub fn name(self) -> &'static str {
        match self {
            Segment::Scene => "scene",
            Segment::Relation => "relation",
            Segment::Elements => "elements",
        }
    }
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The text of each segment of one caption.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentTexts {
    pub scene: String,
    pub relation: String,
    /// Element tags as one comma-separated list ("building, road, tree").
    pub elements: String,
}

impl SegmentTexts {
    pub fn new(scene: &str, relation: &str, elements: &[String]) -> Self {
        Self {
            scene: scene.trim().to_string(),
            relation: relation.trim().to_string(),
            elements: elements
                .iter()
                .map(|e| e.trim())
                .filter(|e| !e.is_empty())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// The unconditional caption: all segments empty.
    pub fn unconditional() -> Self {
        Self::default()
    }

    /// Parse `"scene | relation | elements"` (elements comma-separated); missing parts are
    /// empty.
    pub fn parse(caption: &str) -> Self {
        let mut parts = caption.splitn(3, '|').map(str::trim);
        let scene = parts.next().unwrap_or("");
        let relation = parts.next().unwrap_or("");
        let elements: Vec<String> = parts
            .next()
            .unwrap_or("")
            .split(',')
            .map(|s| s.to_string())
            .collect();
        Self::new(scene, relation, &elements)
    }

    pub fn get(&self, s: Segment) -> &str {
        match s {
            Segment::Scene => &self.scene,
            Segment::Relation => &self.relation,
            Segment::Elements => &self.elements,
        }
    }

    /// The whole caption as one flat prompt: "scene. relation. elements" (empty parts
    /// skipped). This is what a single 77-token prompt would have to hold.
    pub fn joined(&self) -> String {
        Segment::ALL
            .iter()
            .map(|&s| self.get(s).trim().trim_end_matches('.').to_string())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(". ")
    }
}

/// Token ids of one caption's segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentTokens {
    pub segments: [Encoding; NUM_SEGMENTS],
}

impl SegmentTokens {
    pub fn new(tok: &ClipTokenizer, texts: &SegmentTexts) -> Self {
        Self {
            segments: Segment::ALL.map(|s| tok.encode(texts.get(s))),
        }
    }
    /// Content tokens per segment (before any truncation).
    pub fn counts(&self) -> [usize; NUM_SEGMENTS] {
        self.segments.clone().map(|e| e.n_tokens)
    }
    pub fn any_truncated(&self) -> bool {
        self.segments.iter().any(Encoding::truncated)
    }
}

/// Ids of `B` captions as a `(B·3, 77)` u32 tensor (caption-major, segment-minor).
pub fn segment_ids(tokens: &[SegmentTokens], device: &candle_core::Device) -> CandleResult<Tensor> {
    let v: Vec<u32> = tokens
        .iter()
        .flat_map(|t| t.segments.iter().flat_map(|e| e.ids.iter().copied()))
        .collect();
    Tensor::from_vec(v, (tokens.len() * NUM_SEGMENTS, CONTEXT_LENGTH), device)
}

/// Segment encodings `(B, 3, 77, D)` of `B` captions: one text-encoder pass over the
/// `B·3` prompts.
pub fn encode_segments(
    model: &ClipTextTransformer,
    tok: &ClipTokenizer,
    captions: &[SegmentTexts],
) -> CandleResult<Tensor> {
    let tokens: Vec<SegmentTokens> = captions
        .iter()
        .map(|c| SegmentTokens::new(tok, c))
        .collect();
    encode_segment_tokens(model, &tokens)
}

/// Segment encodings `(B, 3, 77, D)` of captions already turned into ids (plain
/// tokenization, or with textual-inversion placeholders resolved).
pub fn encode_segment_tokens(
    model: &ClipTextTransformer,
    tokens: &[SegmentTokens],
) -> CandleResult<Tensor> {
    let ids = segment_ids(tokens, model.position_embedding.device())?;
    let h = model.forward(&ids)?;
    let (_, n, d) = h.dims3()?;
    h.reshape((tokens.len(), NUM_SEGMENTS, n, d))
}

/// Flat-prompt encodings `(B, 77, D)` (the traditional single-level caption).
pub fn encode_flat(
    model: &ClipTextTransformer,
    tok: &ClipTokenizer,
    prompts: &[&str],
) -> CandleResult<Tensor> {
    let encodings: Vec<Encoding> = prompts.iter().map(|p| tok.encode(p)).collect();
    encode_flat_ids(model, &encodings)
}

/// Flat-prompt encodings `(B, 77, D)` of prompts already turned into ids.
pub fn encode_flat_ids(model: &ClipTextTransformer, prompts: &[Encoding]) -> CandleResult<Tensor> {
    let v: Vec<u32> = prompts.iter().flat_map(|e| e.ids.iter().copied()).collect();
    let ids = Tensor::from_vec(
        v,
        (prompts.len(), CONTEXT_LENGTH),
        model.position_embedding.device(),
    )?;
    model.forward(&ids)
}

/// How many captions a 77-token window would cut, flat versus by segment.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TruncationReport {
    pub captions: usize,
    /// Captions whose whole text as one flat prompt ([`SegmentTexts::joined`]) exceeds 75
    /// content tokens.
    pub flat_truncated: usize,
    /// Content tokens dropped over all flat prompts.
    pub flat_tokens_dropped: usize,
    pub flat_tokens_max: usize,
    pub flat_tokens_mean: f64,
    /// Per segment (scene, relation, elements): captions whose segment exceeds 75 tokens.
    pub segment_truncated: [usize; NUM_SEGMENTS],
    pub segment_tokens_max: [usize; NUM_SEGMENTS],
    pub segment_tokens_mean: [f64; NUM_SEGMENTS],
}

impl TruncationReport {
    pub fn add(&mut self, tok: &ClipTokenizer, texts: &SegmentTexts) {
        let flat = tok.tokenize(&texts.joined()).len();
        let n = self.captions as f64;
        self.flat_tokens_mean = (self.flat_tokens_mean * n + flat as f64) / (n + 1.0);
        self.flat_tokens_max = self.flat_tokens_max.max(flat);
        if flat > MAX_CONTENT_TOKENS {
            self.flat_truncated += 1;
            self.flat_tokens_dropped += flat - MAX_CONTENT_TOKENS;
        }
        for s in Segment::ALL {
            let k = tok.tokenize(texts.get(s)).len();
            let i = s.index();
            self.segment_tokens_mean[i] = (self.segment_tokens_mean[i] * n + k as f64) / (n + 1.0);
            self.segment_tokens_max[i] = self.segment_tokens_max[i].max(k);
            if k > MAX_CONTENT_TOKENS {
                self.segment_truncated[i] += 1;
            }
        }
        self.captions += 1;
    }

    pub fn of<'a>(
        tok: &ClipTokenizer,
        captions: impl IntoIterator<Item = &'a SegmentTexts>,
    ) -> Self {
        let mut r = Self::default();
        for c in captions {
            r.add(tok, c);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_join() {
        let t = SegmentTexts::parse(
            " square | A roundabout is in the middle of the square. | building, road ,, tree ",
        );
        assert_eq!(t.scene, "square");
        assert_eq!(t.relation, "A roundabout is in the middle of the square.");
        assert_eq!(t.elements, "building, road, tree");
        assert_eq!(
            t.joined(),
            "square. A roundabout is in the middle of the square. building, road, tree"
        );
        let u = SegmentTexts::parse("park");
        assert_eq!((u.relation.as_str(), u.elements.as_str()), ("", ""));
        assert_eq!(SegmentTexts::unconditional().joined(), "");
    }
}
