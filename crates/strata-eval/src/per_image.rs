//! Per-image values: what every per-image metric gives each image of a folder, aligned with
//! the folder's image files, so that a caller can resample images (bootstrap confidence
//! intervals, paired differences between two generated sets) without rerunning the
//! networks.
//!
//! How the set values of the table come back from these:
//!
//! * relation fidelity = Σ honoured / Σ requested over the images with a `relations` entry;
//! * LPIPS, PieAPP = mean of `lpips` / `pieapp` over the name-matched images;
//! * CLIP-cos = mean of `clip_cosine`; CLIPScore = max(100 · mean(`clip_cosine`), 0);
//! * GSHPS = cosine between the mean of the generated images' `gshps_features` and the mean
//!   of their real pairs' `gshps_features` (the `real` rows); `gshps_pair_cosine` is the
//!   cosine of one pair alone, a per-image view that does *not* average to GSHPS;
//! * sFID*/sKID* = Fréchet distance / KID between the `seg_features` rows of the real
//!   folder and of the set.
//!
//! Written to `per_image.jsonl` by [`crate::report::write_outputs`] (one JSON object per
//! image, the folder named by `set`).

use serde::{Deserialize, Serialize};

use crate::fidelity::RelationFidelity;

/// One image's values; `None` where the metric was not asked for, could not be computed, or
/// does not apply to the image (no caption record, no name-matched real image).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageValues {
    /// The image's path relative to its folder, as read.
    pub file: String,
    /// Pairing key: the relative path without its extension.
    pub key: String,
    /// The name-matched real image's relative path (generated sets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_file: Option<String>,
    /// Relation triples `(honoured, requested)` of the image's caption record, checked on
    /// the segmenter's mask of the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relations: Option<(usize, usize)>,
    /// LPIPS against the real pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lpips: Option<f64>,
    /// PieAPP against the real pair (reference = real).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pieapp: Option<f64>,
    /// CLIP cosine between the image and its caption's `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_cosine: Option<f64>,
    /// Cosine between this image's GSHPS features and its real pair's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gshps_pair_cosine: Option<f64>,
    /// The GSHPS classifier's feature vector of the image (generated images with a real
    /// pair; every real image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gshps_features: Option<Vec<f64>>,
    /// The segmenter's pooled feature vector (the sFID*/sKID* feature space).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seg_features: Option<Vec<f64>>,
}

impl ImageValues {
    /// Empty values for the images of a folder, from their files and keys.
    pub fn for_files(files: &[String], keys: &[String]) -> Vec<ImageValues> {
        files
            .iter()
            .zip(keys)
            .map(|(f, k)| ImageValues {
                file: f.clone(),
                key: k.clone(),
                ..Default::default()
            })
            .collect()
    }
}

/// Fill `relations` of the images named in `f.images` (matched by pairing key).
pub fn fill_relations(values: &mut [ImageValues], f: &RelationFidelity) {
    for img in &f.images {
        if let Some(v) = values.iter_mut().find(|v| v.key == img.image) {
            let honoured = img.verdicts.iter().filter(|x| x.3).count();
            v.relations = Some((honoured, img.verdicts.len()));
        }
    }
}

/// Σ honoured / Σ requested over images with a `relations` entry (`None` when nothing was
/// requested): the set's relation fidelity.
pub fn relation_share(values: &[ImageValues]) -> Option<f64> {
    let (h, r) = values
        .iter()
        .filter_map(|v| v.relations)
        .fold((0, 0), |(h, r), (a, b)| (h + a, r + b));
    (r > 0).then(|| h as f64 / r as f64)
}

/// One line of `per_image.jsonl`: the folder (`real` or the set's label) and the values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PerImageLine {
    pub set: String,
    #[serde(flatten)]
    pub values: ImageValues,
}
