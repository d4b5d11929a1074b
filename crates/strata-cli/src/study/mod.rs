//! `strata study`: does the caption format matter after fine-tuning? A designed comparison:
//! caption *arms* × training seeds × one test set, every arm trained on the same images in
//! the same order with the same steps, and every arm generating the same test captions from
//! the same noise, so differences between arms are paired per test image. Statistics are
//! paired bootstrap intervals ([`strata_eval::stats`]); a verdict names a winner only when
//! its interval excludes zero.
//!
//! The settings come from a preset, optionally overridden by a TOML file (`--config`); the
//! resolved settings are stored in `DIR/study.json` and a rerun into the same folder resumes
//! the same study (a changed setting is refused with the list of differences).
//!
//! Run folder layout:
//!
//! ```text
//! DIR/study.json                    the resolved plan (settings, model hash, compositions)
//! DIR/stages/<stage>.json           done-marker of each finished stage (summary, wall time)
//! DIR/data/train/                   training scenes (images, masks, metadata.jsonl)
//! DIR/data/test/                    the test scenes ("real" images + metadata.jsonl)
//! DIR/data/arms/<arm>/              one-segment arms: the training images (hard links)
//!                                   with the caption column set to that segment
//! DIR/runs/<arm>/seed-<k>/          strata train run folders
//! DIR/gen/<arm>/seed-<k>/           generated test images, same names as the test scenes
//! DIR/eval/seed-<k>/                strata eval of every arm of that seed
//! DIR/results.json, table.txt       per-arm metrics with intervals, paired differences
//! DIR/report.html                   the same, readable
//! ```

pub mod arms;
pub mod data;
pub mod report;
pub mod results;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

pub use arms::Arm;

/// Where the study's images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPlan {
    /// Training scenes per scene class (synthetic, from seeds disjoint from the test set's).
    pub train_per_class: usize,
    /// Test scenes in all (round-robin over the classes, or over the test compositions).
    pub test_images: usize,
    /// Side of the synthetic scenes in pixels (the trainer resizes to the resolution).
    pub size: u32,
    /// Scene classes (synth names); empty = all eleven.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Seed of the scenes.
    pub seed: u64,
    /// A JSON list of scene + element + relation combinations the test scenes are drawn
    /// for and every training scene is kept free of (see [`data::Composition`]).
    #[serde(default)]
    pub test_compositions: Option<PathBuf>,
}

/// LoRA training settings, the same for every arm and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainPlan {
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<String>,
    pub checkpoint_every: u64,
}

/// Sampling settings, the same for every arm and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratePlan {
    /// DDIM steps.
    pub steps: usize,
    pub cfg: f64,
    pub batch: usize,
}

/// Statistics settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsPlan {
    /// Bootstrap resamples for per-image metrics.
    pub resamples: usize,
    /// Bootstrap resamples for set-level metrics (sFID*, sKID*), which recompute on every
    /// resample.
    pub set_resamples: usize,
    /// Confidence level of every interval.
    pub confidence: f64,
}

/// Every setting of a study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    /// The preset these settings started from.
    pub preset: String,
    /// Base model (diffusers folder); empty = the embedded base model.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// Training and generation side in pixels; empty = the model's own side.
    #[serde(default)]
    pub resolution: Option<usize>,
    /// The arms, the first being the reference every other arm is compared with.
    pub arms: Vec<Arm>,
    /// Training seeds: each arm is trained once per seed.
    pub seeds: Vec<u64>,
    pub data: DataPlan,
    pub train: TrainPlan,
    pub generate: GeneratePlan,
    pub stats: StatsPlan,
}

/// The presets, smallest first.
pub const PRESETS: [&str; 3] = ["ci", "small", "full"];

impl StudyConfig {
    /// A built-in preset.
    /// - `ci`: every arm, two seeds, a few steps of everything: the test suite's version;
    ///   its numbers mean nothing.
    /// - `small`: flat against hierarchical (fixed schedule, concatenated), three seeds,
    ///   220 test scenes: the smallest study that can answer (≈ 1 h on two idle cores).
    /// - `full`: all seven arms (the three hierarchical fusions and the one-segment
    ///   ablations), three seeds, 220 test scenes (≈ 3.5 h on two idle cores; it resumes).
    pub fn preset(name: &str) -> anyhow::Result<StudyConfig> {
        let synth = |train_per_class, test_images| DataPlan {
            train_per_class,
            test_images,
            size: 64,
            classes: vec![],
            seed: 0,
            test_compositions: None,
        };
        let lora = |steps| TrainPlan {
            steps,
            batch: 8,
            lr: 1e-3,
            rank: 8,
            alpha: 8.0,
            targets: vec!["attention".into(), "proj".into(), "ff".into()],
            checkpoint_every: 25,
        };
        Ok(match name {
            "ci" => StudyConfig {
                preset: "ci".into(),
                model: None,
                resolution: None,
                arms: Arm::ALL.to_vec(),
                seeds: vec![0, 1],
                data: synth(1, 11),
                train: TrainPlan {
                    steps: 2,
                    batch: 4,
                    rank: 4,
                    alpha: 4.0,
                    targets: vec!["attention".into()],
                    checkpoint_every: 1,
                    ..lora(2)
                },
                generate: GeneratePlan {
                    steps: 2,
                    cfg: 5.0,
                    batch: 11,
                },
                stats: StatsPlan {
                    resamples: 200,
                    set_resamples: 50,
                    confidence: 0.95,
                },
            },
            "small" | "full" => StudyConfig {
                preset: name.into(),
                model: None,
                resolution: None,
                arms: if name == "small" {
                    vec![Arm::Flat, Arm::HierarchicalConcat]
                } else {
                    Arm::ALL.to_vec()
                },
                seeds: vec![0, 1, 2],
                data: synth(16, 220),
                train: lora(400),
                // Stable Diffusion's usual guidance: the embedded base model follows its
                // captions clearly only from about 8 (docs/base-model.md)
                generate: GeneratePlan {
                    steps: 20,
                    cfg: 7.5,
                    batch: 10,
                },
                stats: StatsPlan {
                    resamples: 2000,
                    set_resamples: 400,
                    confidence: 0.95,
                },
            },
            other => bail!(
                "unknown study preset {other:?}; use one of {}",
                PRESETS.join(", ")
            ),
        })
    }

    /// The preset named by `preset` (the file's `preset` key wins over the argument), with
    /// every key of the TOML file `text` laid over it. Unknown keys are refused by name.
    pub fn from_toml(text: &str, file: &Path, preset: &str) -> anyhow::Result<StudyConfig> {
        let over: toml::Table = toml::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "{}: {}",
                file.display(),
                strata_train::config::toml_error_line(text, &e)
            )
        })?;
        let name = match over.get("preset") {
            Some(toml::Value::String(s)) => s.clone(),
            Some(_) => bail!("{}: `preset` must be a string", file.display()),
            None => preset.to_string(),
        };
        let base =
            StudyConfig::preset(&name).with_context(|| format!("{}: `preset`", file.display()))?;
        let mut merged = toml::Table::try_from(&base).expect("a study config serialises");
        merge(&mut merged, over);
        let cfg: StudyConfig = merged
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{}: {}", file.display(), e.message()))?;
        cfg.validate()
            .with_context(|| format!("checking {}", file.display()))?;
        Ok(cfg)
    }

    /// Range checks, with the field named.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.arms.is_empty() {
            bail!("`arms` is empty: list at least two arms (the first is the reference)");
        }
        for (i, a) in self.arms.iter().enumerate() {
            if self.arms[..i].contains(a) {
                bail!("`arms` lists {} twice", a.id());
            }
        }
        if self.seeds.is_empty() {
            bail!("`seeds` is empty: give at least one training seed");
        }
        for (i, s) in self.seeds.iter().enumerate() {
            if self.seeds[..i].contains(s) {
                bail!("`seeds` lists {s} twice");
            }
        }
        let d = &self.data;
        if !(1..=10_000).contains(&d.train_per_class) {
            bail!(
                "`data.train_per_class` = {}: use 1 to 10000",
                d.train_per_class
            );
        }
        if !(1..=100_000).contains(&d.test_images) {
            bail!("`data.test_images` = {}: use 1 to 100000", d.test_images);
        }
        if !(strata_synth::MIN_SIZE..=strata_synth::MAX_SIZE).contains(&d.size) {
            bail!(
                "`data.size` = {}: use {} to {}",
                d.size,
                strata_synth::MIN_SIZE,
                strata_synth::MAX_SIZE
            );
        }
        for c in &d.classes {
            strata_synth::SceneClass::parse(c)
                .map_err(|e| anyhow::anyhow!("`data.classes`: {e}"))?;
        }
        let t = &self.train;
        if !(1..=1_000_000).contains(&t.steps) {
            bail!("`train.steps` = {}: use 1 to 1000000", t.steps);
        }
        if !(1..=4096).contains(&t.batch) {
            bail!("`train.batch` = {}: use 1 to 4096", t.batch);
        }
        if !(t.lr.is_finite() && t.lr > 0.0 && t.lr <= 1.0) {
            bail!("`train.lr` = {}: use a number in (0, 1]", t.lr);
        }
        if !(1..=1024).contains(&t.rank) {
            bail!("`train.rank` = {}: use 1 to 1024", t.rank);
        }
        if !(t.alpha.is_finite() && t.alpha > 0.0) {
            bail!("`train.alpha` = {}: use a positive number", t.alpha);
        }
        if t.checkpoint_every == 0 {
            bail!("`train.checkpoint_every` must be at least 1");
        }
        let g = &self.generate;
        if !(1..=1000).contains(&g.steps) {
            bail!("`generate.steps` = {}: use 1 to 1000", g.steps);
        }
        if !(g.cfg.is_finite() && (0.0..=100.0).contains(&g.cfg)) {
            bail!("`generate.cfg` = {}: use 0 to 100", g.cfg);
        }
        if !(1..=256).contains(&g.batch) {
            bail!("`generate.batch` = {}: use 1 to 256", g.batch);
        }
        let s = &self.stats;
        if !(100..=1_000_000).contains(&s.resamples) || !(20..=1_000_000).contains(&s.set_resamples)
        {
            bail!(
                "`stats.resamples` = {} / `stats.set_resamples` = {}: use at least 100 / 20",
                s.resamples,
                s.set_resamples
            );
        }
        if !(s.confidence > 0.5 && s.confidence < 1.0) {
            bail!(
                "`stats.confidence` = {}: use a level in (0.5, 1), e.g. 0.95",
                s.confidence
            );
        }
        Ok(())
    }

    /// The scene classes drawn from.
    pub fn classes(&self) -> Vec<strata_synth::SceneClass> {
        if self.data.classes.is_empty() {
            strata_synth::SceneClass::ALL.to_vec()
        } else {
            self.data
                .classes
                .iter()
                .filter_map(|c| strata_synth::SceneClass::parse(c).ok())
                .collect()
        }
    }

    /// Training runs in all.
    pub fn runs(&self) -> usize {
        self.arms.len() * self.seeds.len()
    }
}

/// Lays `over` onto `base` key by key (tables merge, everything else replaces).
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// A study's resolved plan, stored in `study.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub config: StudyConfig,
    /// The base model folder used (resolved).
    pub model: PathBuf,
    /// sha256 of its UNet weights.
    pub model_sha256: String,
    pub resolution: usize,
    /// The test compositions (read from the file when one was given).
    pub compositions: Vec<data::Composition>,
}

impl Plan {
    pub fn train_dir(&self, run: &Path) -> PathBuf {
        run.join("data/train")
    }
    pub fn test_dir(&self, run: &Path) -> PathBuf {
        run.join("data/test")
    }
    /// The training data folder of an arm (one-segment arms have their own caption column).
    pub fn arm_data(&self, run: &Path, arm: Arm) -> PathBuf {
        if arm.segment().is_some() {
            run.join("data/arms").join(arm.id())
        } else {
            self.train_dir(run)
        }
    }
    pub fn run_dir(&self, run: &Path, arm: Arm, seed: u64) -> PathBuf {
        run.join("runs").join(arm.id()).join(format!("seed-{seed}"))
    }
    pub fn gen_dir(&self, run: &Path, arm: Arm, seed: u64) -> PathBuf {
        run.join("gen").join(arm.id()).join(format!("seed-{seed}"))
    }
    pub fn eval_dir(&self, run: &Path, seed: u64) -> PathBuf {
        run.join("eval").join(format!("seed-{seed}"))
    }

    /// A rough wall-time estimate in seconds on an idle 2-core machine, from the demo's
    /// measured per-step costs of the embedded base model at 64 px (other models and sides
    /// cost differently): LoRA steps, generated image-steps (both guidance branches), and
    /// per seed the evaluation's fixed cost.
    pub fn estimate_seconds(&self) -> f64 {
        use crate::demo::{SECONDS_PER_IMAGE_STEP, SECONDS_PER_TRAIN_STEP};
        let c = &self.config;
        let px = (self.resolution as f64 / 64.0).powi(2);
        let runs = c.runs() as f64;
        let train =
            runs * c.train.steps as f64 * SECONDS_PER_TRAIN_STEP * c.train.batch as f64 / 8.0;
        let gen = runs * (c.data.test_images * c.generate.steps) as f64 * SECONDS_PER_IMAGE_STEP;
        // segmenter quality, GSHPS stand-in (once), scoring
        let eval = 60.0
            + c.seeds.len() as f64 * (20.0 + 0.05 * (c.arms.len() * c.data.test_images) as f64);
        px * (train + gen) + eval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_a_file_overrides_keys() {
        for p in PRESETS {
            StudyConfig::preset(p).unwrap().validate().unwrap();
        }
        let f = Path::new("study.toml");
        let c = StudyConfig::from_toml(
            "preset = \"small\"\nseeds = [4, 5]\n[train]\nsteps = 30\n",
            f,
            "ci",
        )
        .unwrap();
        assert_eq!(c.preset, "small");
        assert_eq!(c.seeds, vec![4, 5]);
        assert_eq!(c.train.steps, 30);
        // untouched keys keep the preset's values
        assert_eq!(c.train.batch, 8);
        assert_eq!(c.data.test_images, 220);
    }

    #[test]
    fn bad_files_name_the_key() {
        let f = Path::new("s.toml");
        let e = |t: &str| format!("{:#}", StudyConfig::from_toml(t, f, "small").unwrap_err());
        assert!(
            e("[train]\nstepz = 3\n").contains("stepz"),
            "{}",
            e("[train]\nstepz = 3\n")
        );
        assert!(e("arms = [\"flat\", \"fancy\"]\n").contains("fancy"));
        assert!(e("seeds = []\n").contains("seeds"));
        assert!(e("arms = [\"flat\", \"flat\"]\n").contains("twice"));
        assert!(e("[stats]\nconfidence = 1.5\n").contains("confidence"));
        assert!(e("preset = \"huge\"\n").contains("huge"));
        assert!(e("seeds = [1,\n").contains("s.toml"));
    }
}
