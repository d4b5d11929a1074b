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
    /// Where the captions come from: `synthetic` (the synthesiser's own captions, true by
    /// construction) or `pixels` (the caption stage on the images alone, as a user with
    /// plain tiles runs it; its accuracy against the synthetic truth is reported).
    #[serde(default)]
    pub captions: CaptionSource,
}

impl DataPlan {
    /// Synthetic scenes of all eleven classes at 64 px from seed 0, with the synthesiser's
    /// captions: the presets' data.
    fn synthetic(train_per_class: usize, test_images: usize) -> DataPlan {
        DataPlan {
            train_per_class,
            test_images,
            size: 64,
            classes: vec![],
            seed: 0,
            test_compositions: None,
            captions: CaptionSource::Synthetic,
        }
    }
}

/// Where a study's captions come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptionSource {
    /// The synthesiser's own captions.
    #[default]
    Synthetic,
    /// The caption stage on the pixels (the embedded pixel captioner).
    Pixels,
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

impl TrainPlan {
    /// The presets' LoRA: batch 8, learning rate 1e-3, rank 8 (α 8) on the attention
    /// projections, proj_in/out and the feed-forward.
    fn lora(steps: u64, checkpoint_every: u64) -> TrainPlan {
        TrainPlan {
            steps,
            batch: 8,
            lr: 1e-3,
            rank: 8,
            alpha: 8.0,
            targets: vec!["attention".into(), "proj".into(), "ff".into()],
            checkpoint_every,
        }
    }
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

/// Evaluation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalPlan {
    /// Held-out synthetic scenes the relation-fidelity segmenter is measured on (its mIoU
    /// is printed beside every relation-fidelity figure).
    pub segmenter_held_out: usize,
    /// Training steps of the GSHPS stand-in scene classifier (used without VGG16 weights).
    pub gshps_steps: usize,
}

impl Default for EvalPlan {
    fn default() -> Self {
        EvalPlan {
            segmenter_held_out: 110,
            gshps_steps: 200,
        }
    }
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
    #[serde(default)]
    pub eval: EvalPlan,
    pub stats: StatsPlan,
}

/// The presets, smallest first.
pub const PRESETS: [&str; 4] = ["ci", "demo", "small", "full"];

/// Wall-time costs with the embedded base model (64 px, x4 VAE, UNet 48/96/96) on two idle
/// cores of the development machine, release build (docs/demo.md): seconds per LoRA step
/// (batch 8, rank 8 on attention/proj/ff) and per generated image and DDIM step (both
/// guidance branches; model loading included). They size the demo preset to its budget and
/// give every study its estimate.
pub const SECONDS_PER_TRAIN_STEP: f64 = 0.477;
pub const SECONDS_PER_IMAGE_STEP: f64 = 0.038;

impl StudyConfig {
    /// A built-in preset.
    /// - `ci`: five arms (flat, the three hierarchical fusions, one ablation),
    ///   two seeds, a few steps of everything: the test suite's version, seconds in a release
    ///   build; its numbers mean nothing.
    /// - `demo`: flat against hierarchical (concatenated), one seed, captions from the
    ///   pixels, sized to a wall-time budget ([`StudyConfig::demo`]; 10 minutes here).
    /// - `small`: flat against hierarchical (fixed schedule, concatenated), three seeds,
    ///   220 test scenes: the smallest study that can answer (≈ 1 h on two idle cores).
    /// - `full`: all seven arms (the three hierarchical fusions and the one-segment
    ///   ablations), three seeds, 220 test scenes (≈ 3.5 h on two idle cores; it resumes).
    pub fn preset(name: &str) -> anyhow::Result<StudyConfig> {
        if name == "demo" {
            return StudyConfig::demo(10.0, 0);
        }
        Ok(match name {
            "ci" => StudyConfig {
                preset: "ci".into(),
                model: None,
                resolution: None,
                // the reference, every hierarchical fusion, one one-segment ablation
                arms: vec![
                    Arm::Flat,
                    Arm::HierarchicalConcat,
                    Arm::HierarchicalDecoupled,
                    Arm::HierarchicalLearned,
                    Arm::RelationOnly,
                ],
                seeds: vec![0, 1],
                data: DataPlan::synthetic(1, 11),
                train: TrainPlan {
                    steps: 2,
                    batch: 4,
                    rank: 4,
                    alpha: 4.0,
                    targets: vec!["attention".into()],
                    checkpoint_every: 1,
                    ..TrainPlan::lora(2, 1)
                },
                generate: GeneratePlan {
                    steps: 2,
                    cfg: 5.0,
                    batch: 11,
                },
                // enough to run every metric, not to measure anything
                eval: EvalPlan {
                    segmenter_held_out: 11,
                    gshps_steps: 4,
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
                data: DataPlan::synthetic(16, 220),
                train: TrainPlan::lora(400, 25),
                // Stable Diffusion's usual guidance: the embedded base model follows its
                // captions clearly only from about 8 (docs/base-model.md)
                generate: GeneratePlan {
                    steps: 20,
                    cfg: 7.5,
                    batch: 10,
                },
                eval: EvalPlan::default(),
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

    /// The demo: flat against hierarchical captions (fixed schedule, concatenated), one
    /// training seed, all eleven classes, captions made from the pixels by the caption stage,
    /// every number sized so the run takes about `minutes` on two idle cores of the
    /// development machine (release build, the embedded base model at 64 px). Scenes per
    /// class grow with the budget (one test scene in five); sampling gets 2.5 DDIM steps per
    /// minute (10 to 50); the two LoRA runs get the rest, at least 20 steps each.
    pub fn demo(minutes: f64, seed: u64) -> anyhow::Result<StudyConfig> {
        if !(minutes.is_finite() && minutes > 0.0) {
            bail!("--minutes must be a positive number of minutes");
        }
        let per_class = (minutes.round() as usize).clamp(5, 40);
        let train_per_class = (per_class as f64 * 0.8).round() as usize;
        let test_images = 11 * (per_class - train_per_class);
        let gen_steps = ((2.5 * minutes).round() as usize).clamp(10, 50);
        let mut c = StudyConfig {
            preset: "demo".into(),
            model: None,
            resolution: None,
            arms: vec![Arm::Flat, Arm::HierarchicalConcat],
            seeds: vec![seed],
            data: DataPlan {
                seed,
                captions: CaptionSource::Pixels,
                ..DataPlan::synthetic(train_per_class, test_images)
            },
            train: TrainPlan::lora(1, 10),
            generate: GeneratePlan {
                steps: gen_steps,
                cfg: 7.5,
                batch: 11,
            },
            eval: EvalPlan {
                segmenter_held_out: 110,
                gshps_steps: 100,
            },
            stats: StatsPlan {
                resamples: 2000,
                set_resamples: 200,
                confidence: 0.95,
            },
        };
        // the fixed costs at one LoRA step, then the steps that fill the budget
        let fixed = c.estimate_seconds(64) - 2.0 * SECONDS_PER_TRAIN_STEP;
        let left = (minutes * 60.0 - fixed).max(0.0);
        c.train.steps = (left / (2.0 * SECONDS_PER_TRAIN_STEP)).round().max(20.0) as u64;
        Ok(c)
    }

    /// A rough wall-time estimate in seconds on two idle cores (release build) at
    /// `resolution`, from the measured per-step costs of the embedded base model at 64 px
    /// (other models cost differently): data and captions, LoRA steps, generated
    /// image-steps, and per seed the evaluation.
    pub fn estimate_seconds(&self, resolution: usize) -> f64 {
        let px = (resolution as f64 / 64.0).powi(2);
        let runs = self.runs() as f64;
        let d = &self.data;
        let scenes = (d.train_per_class * self.classes().len() + d.test_images) as f64;
        let captions = match d.captions {
            CaptionSource::Synthetic => 0.0,
            CaptionSource::Pixels => 0.05 * scenes,
        };
        let train =
            runs * self.train.steps as f64 * SECONDS_PER_TRAIN_STEP * self.train.batch as f64 / 8.0;
        let gen = runs * (d.test_images * self.generate.steps) as f64 * SECONDS_PER_IMAGE_STEP;
        // model loading, the GSHPS stand-in (once), then per seed the segmenter's held-out
        // check and the scoring of every arm (measured in the small preset's study: 29 s
        // for the first seed, 18 s for each further one)
        let eval = 5.0
            + 0.055 * self.eval.gshps_steps as f64
            + self.seeds.len() as f64
                * (0.03 * self.eval.segmenter_held_out as f64
                    + 0.03 * (self.arms.len() * d.test_images) as f64);
        0.006 * scenes + captions + px * (train + gen) + eval
    }

    /// The preset named by `preset` (the file's `preset` key wins over the argument), with
    /// every key of the TOML file `text` laid over it. Unknown keys are refused by name.
    /// The preset `name`; `minutes` sizes the demo preset (and is refused with any other).
    pub fn sized(name: &str, minutes: Option<f64>) -> anyhow::Result<StudyConfig> {
        match (name, minutes) {
            ("demo", Some(m)) => StudyConfig::demo(m, 0),
            (_, None) => StudyConfig::preset(name),
            (other, Some(_)) => bail!(
                "--minutes sizes the demo preset only; the {other} preset has fixed sizes (change them in a --config file)"
            ),
        }
    }

    pub fn from_toml(
        text: &str,
        file: &Path,
        preset: &str,
        minutes: Option<f64>,
    ) -> anyhow::Result<StudyConfig> {
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
        let base = StudyConfig::sized(&name, minutes)
            .with_context(|| format!("{}: `preset`", file.display()))?;
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

    /// [`StudyConfig::estimate_seconds`] at the plan's resolution.
    pub fn estimate_seconds(&self) -> f64 {
        self.config.estimate_seconds(self.resolution)
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
            None,
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
    fn the_demo_preset_fills_its_budget() {
        let d = |m: f64| StudyConfig::demo(m, 0).unwrap();
        assert!(d(20.0).train.steps > d(10.0).train.steps);
        for m in [1.0, 2.0, 10.0, 60.0] {
            let c = d(m);
            c.validate().unwrap();
            assert!(c.data.test_images >= 11, "{m} minutes");
            assert_eq!(c.data.test_images % 11, 0, "{m} minutes");
            assert_eq!(c.arms, vec![Arm::Flat, Arm::HierarchicalConcat]);
            assert_eq!(c.data.captions, CaptionSource::Pixels);
        }
        for m in [5.0, 10.0, 20.0, 60.0] {
            let e = d(m).estimate_seconds(64) / 60.0;
            assert!((e - m).abs() < 0.1 * m, "{m} minutes planned as {e:.2}");
        }
        // ten minutes: ten scenes per class, one in five for the test
        assert_eq!(d(10.0).data.train_per_class, 8);
        assert_eq!(d(10.0).data.test_images, 22);
        assert_eq!(StudyConfig::preset("demo").unwrap(), d(10.0));
        assert!(StudyConfig::demo(0.0, 0).is_err());
        let e = format!("{:#}", StudyConfig::sized("small", Some(5.0)).unwrap_err());
        assert!(e.contains("--minutes"), "{e}");
        assert_eq!(StudyConfig::sized("demo", Some(20.0)).unwrap(), d(20.0));
    }

    /// A study.json written before the `captions` and `[eval]` keys existed reads as the
    /// settings it ran with, so such a study resumes.
    #[test]
    fn older_plans_read_with_the_settings_they_ran_with() {
        let mut v = serde_json::to_value(StudyConfig::preset("small").unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("eval");
        v["data"].as_object_mut().unwrap().remove("captions");
        let c: StudyConfig = serde_json::from_value(v).unwrap();
        assert_eq!(c, StudyConfig::preset("small").unwrap());
    }

    #[test]
    fn bad_files_name_the_key() {
        let f = Path::new("s.toml");
        let e = |t: &str| {
            format!(
                "{:#}",
                StudyConfig::from_toml(t, f, "small", None).unwrap_err()
            )
        };
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
