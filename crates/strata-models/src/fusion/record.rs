//! How a model was trained on the text side — caption mode, fusion mode, and the fixed
//! schedule's parameters or the learned schedule's weights — written next to every training
//! output and read back by generation, so a model is generated the way it was trained.
//!
//! Where the record lives:
//!
//! * **LoRA files** (and textual-inversion embeddings): string entries in the safetensors
//!   header metadata ([`META_CAPTIONS`], [`META_MODE`], [`META_SCHEDULE`], [`META_FIXED`],
//!   [`META_LEARNED`], [`META_WEIGHTS`]). A learned schedule's four tensors go to a sidecar
//!   file `<stem>.fusion.safetensors` in the same folder ([`sidecar_path`]), not into the
//!   LoRA file itself: diffusers' `load_lora_weights` (0.42) refuses a kohya-layout file
//!   holding a key without `lora` in its name ("Invalid LoRA checkpoint. Make sure all LoRA
//!   param names contain `'lora'` substring"), and so does strata's own LoRA import, while
//!   the header metadata is ignored by diffusers (`scripts/check_fusion_record_loaders.py`
//!   shows both). The sidecar is written before the LoRA, so a LoRA that names one always
//!   has it.
//! * **diffusers folders** (full fine-tune, DreamBooth): a `fusion/` subfolder with
//!   `config.json` (the record as JSON) and, for a learned schedule, `schedule.safetensors`.
//!   diffusers loads only the components listed in `model_index.json`, so the folder is
//!   ignored by it (checked by the same script).
//!
//! The sidecar and `schedule.safetensors` have one format: the tensors
//! `hierarchical_fusion.linear_{1,2}.{weight,bias}` plus the same header entries, so
//! [`LearnedSchedule::load`] (and `strata encode --fusion-weights`) reads either.
//!
//! LoRA files written before these entries existed carried the fusion as one JSON entry
//! `strata_fusion` (mode, schedule, fixed parameters, learned tensors as numbers); it is
//! still read.
//!
//! [`resolve`] combines a record with command-line overrides into the fusion generation
//! applies, and a one-line account of what was applied and why;
//! [`conditioning_source`] builds the per-timestep conditioning of a caption the way the
//! trainer does.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::{
    FixedSchedule, Fusion, FusionError, FusionMode, LearnedConfig, LearnedSchedule, Schedule,
    LEARNED_PREFIX,
};
use crate::clip::ClipTextTransformer;
use crate::conditioning::Conditioning;
use crate::pipeline::{ConditioningSource, FixedConditioning, FusedSegments};
use crate::segments::SegmentTexts;
use crate::tokenizer::ClipTokenizer;

/// Header entry: `flat` or `hierarchical`.
pub const META_CAPTIONS: &str = "strata_captions";
/// Header entry: `concat` or `decoupled`.
pub const META_MODE: &str = "strata_fusion_mode";
/// Header entry: `fixed` or `learned`.
pub const META_SCHEDULE: &str = "strata_fusion_schedule";
/// Header entry: the fixed schedule as JSON (`centers`, `widths`, `floor`,
/// `num_train_timesteps`).
pub const META_FIXED: &str = "strata_fusion_fixed";
/// Header entry: the learned schedule's shape as JSON (`embedding_dim`, `hidden`,
/// `num_train_timesteps`).
pub const META_LEARNED: &str = "strata_fusion_learned";
/// Header entry: file name (same folder) of the learned schedule's tensors.
pub const META_WEIGHTS: &str = "strata_fusion_weights";
/// The single JSON entry of LoRA files written before the entries above.
pub const META_LEGACY: &str = "strata_fusion";
/// The subfolder of a diffusers model folder holding the record.
pub const MODEL_SUBDIR: &str = "fusion";
/// The record's JSON inside [`MODEL_SUBDIR`].
pub const MODEL_CONFIG: &str = "config.json";
/// The learned schedule's tensors inside [`MODEL_SUBDIR`].
pub const MODEL_WEIGHTS: &str = "schedule.safetensors";

/// Which caption a model was trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum CaptionMode {
    /// Three segments (scene, relation, elements), each in its own 77-token window, fused
    /// by timestep.
    Hierarchical,
    /// One 77-token prompt.
    Flat,
}

impl CaptionMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Hierarchical => "hierarchical",
            Self::Flat => "flat",
        }
    }
}

impl std::str::FromStr for CaptionMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hierarchical" => Ok(Self::Hierarchical),
            "flat" => Ok(Self::Flat),
            _ => Err(format!(
                "unknown captions mode {s:?}: use hierarchical or flat"
            )),
        }
    }
}

fn mode_name(m: FusionMode) -> &'static str {
    match m {
        FusionMode::Concat => "concat",
        FusionMode::Decoupled => "decoupled",
    }
}

/// How a model was trained on the text side. For flat captions `mode` and `schedule` are
/// what the run was configured with, unused by training and generation.
#[derive(Debug, Clone)]
pub struct FusionRecord {
    pub captions: CaptionMode,
    pub mode: FusionMode,
    pub schedule: Schedule,
}

/// The record as JSON (`fusion/config.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordJson {
    captions: CaptionMode,
    mode: FusionMode,
    /// `fixed` or `learned`.
    schedule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fixed: Option<FixedSchedule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    learned: Option<LearnedConfig>,
    /// File (same folder) of the learned tensors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weights: Option<String>,
}

/// `<folder>/<stem>.fusion.safetensors` for `<folder>/<stem>.safetensors`: where a learned
/// schedule of a LoRA (or embedding) file goes.
pub fn sidecar_path(file: &Path) -> PathBuf {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    file.with_file_name(format!("{stem}.fusion.safetensors"))
}

impl FusionRecord {
    /// The record of a hierarchical run with `fusion`.
    pub fn hierarchical(fusion: &Fusion) -> Self {
        Self {
            captions: CaptionMode::Hierarchical,
            mode: fusion.mode,
            schedule: fusion.schedule.clone(),
        }
    }

    /// The fusion generation applies: `None` for flat captions.
    pub fn fusion(&self) -> Option<Fusion> {
        match self.captions {
            CaptionMode::Flat => None,
            CaptionMode::Hierarchical => Some(Fusion::new(self.schedule.clone(), self.mode)),
        }
    }

    fn json(&self, weights: Option<&str>) -> RecordJson {
        let (schedule, fixed, learned) = match &self.schedule {
            Schedule::Fixed(f) => ("fixed", Some(f.clone()), None),
            Schedule::Learned(l) => ("learned", None, Some(l.config.clone())),
        };
        RecordJson {
            captions: self.captions,
            mode: self.mode,
            schedule: schedule.into(),
            fixed,
            learned,
            weights: weights.map(str::to_string),
        }
    }

    /// Header entries describing the record; `weights` names the file holding a learned
    /// schedule's tensors (same folder).
    pub fn metadata(&self, weights: Option<&str>) -> HashMap<String, String> {
        let j = self.json(weights);
        let mut m = HashMap::from([
            (META_CAPTIONS.to_string(), self.captions.name().to_string()),
            (META_MODE.to_string(), mode_name(self.mode).to_string()),
            (META_SCHEDULE.to_string(), j.schedule.clone()),
        ]);
        if let Some(f) = &j.fixed {
            m.insert(
                META_FIXED.into(),
                serde_json::to_string(f).expect("serialises"),
            );
        }
        if let Some(l) = &j.learned {
            m.insert(
                META_LEARNED.into(),
                serde_json::to_string(l).expect("serialises"),
            );
        }
        if let Some(w) = weights {
            m.insert(META_WEIGHTS.into(), w.to_string());
        }
        m
    }

    /// Writes the learned schedule's tensors (with the record's header entries, and the
    /// `strata.fusion` entry [`LearnedSchedule::load`] reads) to `path`, atomically. Nothing
    /// for a fixed schedule.
    pub fn write_weights(&self, path: &Path) -> Result<(), FusionError> {
        let Schedule::Learned(l) = &self.schedule else {
            return Ok(());
        };
        let tensors = l
            .to_tensors(LEARNED_PREFIX)
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?)))
            .collect::<candle_core::Result<HashMap<_, _>>>()?;
        // the file names itself as the weights, so its header is a complete record
        let own = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut meta = self.metadata(Some(&own));
        meta.insert(
            "strata.fusion".into(),
            serde_json::to_string(&l.config).expect("serialises"),
        );
        crate::safetensors_io::save(path, &tensors, Some(meta)).map_err(FusionError::from)
    }

    /// For an output file (a LoRA or an embedding) about to be written to `file`: writes a
    /// learned schedule's sidecar ([`sidecar_path`]) and returns the header entries to store
    /// in `file`.
    pub fn write_for_file(&self, file: &Path) -> Result<HashMap<String, String>, FusionError> {
        if self.captions == CaptionMode::Hierarchical
            && matches!(self.schedule, Schedule::Learned(_))
        {
            let side = sidecar_path(file);
            self.write_weights(&side)?;
            let name = side
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(self.metadata(Some(&name)))
        } else {
            Ok(self.metadata(None))
        }
    }

    /// Writes `<dir>/fusion/config.json` (and `schedule.safetensors` for a learned schedule).
    pub fn write_to_model_dir(&self, dir: &Path) -> Result<(), FusionError> {
        let sub = dir.join(MODEL_SUBDIR);
        std::fs::create_dir_all(&sub).map_err(|e| FusionError::Write {
            path: sub.clone(),
            source: e,
        })?;
        let learned = self.captions == CaptionMode::Hierarchical
            && matches!(self.schedule, Schedule::Learned(_));
        if learned {
            self.write_weights(&sub.join(MODEL_WEIGHTS))?;
        }
        let j = self.json(learned.then_some(MODEL_WEIGHTS));
        let text = serde_json::to_string_pretty(&j).expect("serialises");
        let p = sub.join(MODEL_CONFIG);
        strata_io::atomic::write(&p, text.as_bytes())
            .map_err(|e| FusionError::Write { path: p, source: e })
    }

    /// `fixed`, `learned` or `uniform`.
    pub fn schedule_kind(&self) -> &'static str {
        match &self.schedule {
            Schedule::Learned(_) => "learned",
            Schedule::Fixed(f) if *f == FixedSchedule::uniform() => "uniform",
            Schedule::Fixed(_) => "fixed",
        }
    }

    /// One phrase for the schedule: "learned schedule from F" / "fixed schedule (…)".
    pub fn describe_schedule(&self, learned_from: Option<&Path>) -> String {
        match &self.schedule {
            Schedule::Learned(_) => match learned_from {
                Some(p) => format!(
                    "learned schedule from {}",
                    p.file_name()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_else(|| p.display().to_string())
                ),
                None => "learned schedule".into(),
            },
            Schedule::Fixed(f) if *f == FixedSchedule::uniform() => "uniform weights".into(),
            Schedule::Fixed(f) => {
                let l = |v: &[f64; 3]| v.map(|x| format!("{x}")).join(",");
                let def = if *f == FixedSchedule::default() {
                    "default "
                } else {
                    ""
                };
                format!(
                    "{def}fixed schedule (centers {}, widths {}, floor {})",
                    l(&f.centers),
                    l(&f.widths),
                    f.floor
                )
            }
        }
    }
}

/// A schedule as a record names it, before any weights file is read.
#[derive(Debug, Clone)]
pub enum ScheduleRef {
    Fixed(FixedSchedule),
    /// Tensors in this file.
    Learned(PathBuf),
    /// Tensors carried in the record itself (the legacy `strata_fusion` entry).
    LearnedInline(LearnedSchedule),
}

/// A record as read from a header or `fusion/config.json`; [`RecordHeader::load`] reads
/// the learned weights it names.
#[derive(Debug, Clone)]
pub struct RecordHeader {
    pub captions: CaptionMode,
    pub mode: FusionMode,
    pub schedule: ScheduleRef,
    /// The file or folder the record was read from.
    pub origin: PathBuf,
    /// "the LoRA", "the model folder", …: for messages.
    pub container: &'static str,
}

impl RecordHeader {
    pub fn load(&self, device: &Device) -> Result<FusionRecord, FusionError> {
        let schedule = match &self.schedule {
            ScheduleRef::Fixed(f) => Schedule::Fixed(f.clone()),
            ScheduleRef::LearnedInline(l) => Schedule::Learned(l.clone()),
            ScheduleRef::Learned(p) => {
                if !p.is_file() {
                    return Err(FusionError::Record {
                        path: self.origin.clone(),
                        field: META_WEIGHTS.into(),
                        what: format!(
                            "it records a learned fusion schedule in {}, which is missing; copy that file next to it, or choose the schedule yourself (strata generate --fusion-weights FILE or --fusion-schedule fixed)",
                            p.display()
                        ),
                    });
                }
                Schedule::Learned(LearnedSchedule::load(p, device)?)
            }
        };
        Ok(FusionRecord {
            captions: self.captions,
            mode: self.mode,
            schedule,
        })
    }

    fn learned_file(&self) -> Option<&Path> {
        match &self.schedule {
            ScheduleRef::Learned(p) => Some(p),
            _ => None,
        }
    }
}

/// The header metadata of a safetensors file, reading only the header.
pub fn read_header_metadata(path: &Path) -> Result<HashMap<String, String>, FusionError> {
    let err = |what: String| FusionError::Record {
        path: path.to_path_buf(),
        field: "header".into(),
        what,
    };
    let mut f = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|e| err(format!("not a safetensors file ({e})")))?;
    let n = u64::from_le_bytes(n);
    if n > 100_000_000 {
        return Err(err(format!("not a safetensors file (header length {n})")));
    }
    let mut h = vec![0u8; n as usize];
    f.read_exact(&mut h)
        .map_err(|e| err(format!("not a safetensors file ({e})")))?;
    let v: serde_json::Value = serde_json::from_slice(&h)
        .map_err(|e| err(format!("not a safetensors file (header: {e})")))?;
    Ok(v.get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default())
}

fn parse_mode(s: &str) -> Result<FusionMode, String> {
    s.parse()
}

/// The record in a file's header entries (`path` for messages and to place the weights
/// file); `None` when it records nothing (a LoRA from another trainer).
pub fn header_from_metadata(
    meta: &HashMap<String, String>,
    path: &Path,
    container: &'static str,
) -> Result<Option<RecordHeader>, FusionError> {
    let bad = |field: &str, what: String| {
        FusionError::Record {
        path: path.to_path_buf(),
        field: field.into(),
        what: format!(
            "{what}; the entry is written by strata train — fix or remove it, or override the fusion on the command line"
        ),
    }
    };
    let Some(captions) = meta.get(META_CAPTIONS) else {
        return Ok(None);
    };
    let captions: CaptionMode = captions
        .parse()
        .map_err(|e: String| bad(META_CAPTIONS, e))?;
    if let Some(mode) = meta.get(META_MODE) {
        let mode = parse_mode(mode).map_err(|e| bad(META_MODE, e))?;
        let kind = meta
            .get(META_SCHEDULE)
            .map(String::as_str)
            .unwrap_or("fixed");
        let schedule = match kind {
            "fixed" => {
                let f: FixedSchedule = match meta.get(META_FIXED) {
                    Some(s) => serde_json::from_str(s)
                        .map_err(|e| bad(META_FIXED, format!("invalid JSON: {e}")))?,
                    None => FixedSchedule::default(),
                };
                f.validate().map_err(|e| bad(META_FIXED, e.to_string()))?;
                ScheduleRef::Fixed(f)
            }
            "learned" => {
                let w = meta.get(META_WEIGHTS).ok_or_else(|| {
                    bad(
                        META_WEIGHTS,
                        "a learned schedule without the name of its weights file".into(),
                    )
                })?;
                if w.contains('/') || w.contains('\\') || w.is_empty() || w == ".." {
                    return Err(bad(
                        META_WEIGHTS,
                        format!("{w:?} is not a file name in the same folder"),
                    ));
                }
                ScheduleRef::Learned(path.with_file_name(w))
            }
            other => {
                return Err(bad(
                    META_SCHEDULE,
                    format!("unknown schedule {other:?} (fixed or learned)"),
                ))
            }
        };
        return Ok(Some(RecordHeader {
            captions,
            mode,
            schedule,
            origin: path.to_path_buf(),
            container,
        }));
    }
    if let Some(legacy) = meta.get(META_LEGACY) {
        let (mode, schedule) = parse_legacy(legacy).map_err(|e| bad(META_LEGACY, e))?;
        return Ok(Some(RecordHeader {
            captions,
            mode,
            schedule,
            origin: path.to_path_buf(),
            container,
        }));
    }
    match captions {
        // older flat LoRAs carry only the caption mode, which is all a flat run needs
        CaptionMode::Flat => Ok(Some(RecordHeader {
            captions,
            mode: FusionMode::Concat,
            schedule: ScheduleRef::Fixed(FixedSchedule::default()),
            origin: path.to_path_buf(),
            container,
        })),
        CaptionMode::Hierarchical => Ok(None),
    }
}

/// The legacy single JSON entry: `{"mode", "schedule", "fixed"?, "learned_config"?,
/// "learned_tensors"?: {name: {"shape", "data"}}}`.
fn parse_legacy(s: &str) -> Result<(FusionMode, ScheduleRef), String> {
    let v: serde_json::Value = serde_json::from_str(s).map_err(|e| format!("invalid JSON: {e}"))?;
    let mode: FusionMode =
        serde_json::from_value(v["mode"].clone()).map_err(|e| format!("mode: {e}"))?;
    match v["schedule"].as_str() {
        Some("fixed") => {
            let f: FixedSchedule =
                serde_json::from_value(v["fixed"].clone()).map_err(|e| format!("fixed: {e}"))?;
            Ok((mode, ScheduleRef::Fixed(f)))
        }
        Some("learned") => {
            let cfg: LearnedConfig = serde_json::from_value(v["learned_config"].clone())
                .map_err(|e| format!("learned_config: {e}"))?;
            let obj = v["learned_tensors"]
                .as_object()
                .ok_or("learned_tensors missing")?;
            let mut tensors = HashMap::new();
            for (k, t) in obj {
                let shape: Vec<usize> = serde_json::from_value(t["shape"].clone())
                    .map_err(|e| format!("learned_tensors.{k}.shape: {e}"))?;
                let data: Vec<f32> = serde_json::from_value(t["data"].clone())
                    .map_err(|e| format!("learned_tensors.{k}.data: {e}"))?;
                let t = Tensor::from_vec(data, shape, &Device::Cpu)
                    .map_err(|e| format!("learned_tensors.{k}: {e}"))?;
                tensors.insert(k.clone(), t);
            }
            let l =
                LearnedSchedule::from_tensors(&tensors, "", cfg.num_train_timesteps, &Device::Cpu)?;
            Ok((mode, ScheduleRef::LearnedInline(l)))
        }
        other => Err(format!("unknown schedule {other:?}")),
    }
}

/// The record of a LoRA (or embedding) file, header only; `None` when it records nothing.
pub fn read_lora_header(path: &Path) -> Result<Option<RecordHeader>, FusionError> {
    let meta = read_header_metadata(path)?;
    header_from_metadata(&meta, path, "the LoRA")
}

/// The record of a LoRA file with its learned weights loaded.
pub fn read_from_lora(path: &Path, device: &Device) -> Result<Option<FusionRecord>, FusionError> {
    read_lora_header(path)?.map(|h| h.load(device)).transpose()
}

/// The record of a diffusers folder (`fusion/config.json`), weights not yet read; `None`
/// when the folder has none.
pub fn read_model_dir_header(dir: &Path) -> Result<Option<RecordHeader>, FusionError> {
    let p = dir.join(MODEL_SUBDIR).join(MODEL_CONFIG);
    if !p.is_file() {
        return Ok(None);
    }
    let bad = |field: &str, what: String| FusionError::Record {
        path: p.clone(),
        field: field.into(),
        what,
    };
    let text = std::fs::read_to_string(&p).map_err(|e| bad("file", e.to_string()))?;
    let j: RecordJson = serde_json::from_str(&text).map_err(|e| {
        bad(
            "JSON",
            format!("{e}; it is written by strata train (keys captions, mode, schedule, fixed, learned, weights)"),
        )
    })?;
    let schedule = match j.schedule.as_str() {
        "fixed" => {
            let f = j.fixed.unwrap_or_default();
            f.validate().map_err(|e| bad("fixed", e.to_string()))?;
            ScheduleRef::Fixed(f)
        }
        "learned" => {
            let w = j.weights.unwrap_or_else(|| MODEL_WEIGHTS.to_string());
            if w.contains('/') || w.contains('\\') || w == ".." {
                return Err(bad(
                    "weights",
                    format!("{w:?} is not a file name in fusion/"),
                ));
            }
            ScheduleRef::Learned(p.with_file_name(w))
        }
        other => {
            return Err(bad(
                "schedule",
                format!("unknown schedule {other:?} (fixed or learned)"),
            ))
        }
    };
    Ok(Some(RecordHeader {
        captions: j.captions,
        mode: j.mode,
        schedule,
        origin: p,
        container: "the model folder",
    }))
}

/// The record of a diffusers folder with its learned weights loaded.
pub fn read_from_model_dir(
    dir: &Path,
    device: &Device,
) -> Result<Option<FusionRecord>, FusionError> {
    read_model_dir_header(dir)?
        .map(|h| h.load(device))
        .transpose()
}

/// A learned schedule from a file strata writes: a schedule file (a LoRA's
/// `.fusion.safetensors` sidecar, a model's `fusion/schedule.safetensors`, or any file with
/// the `hierarchical_fusion.*` tensors), a LoRA file or a diffusers folder whose record
/// names one.
pub fn load_learned(path: &Path, device: &Device) -> Result<LearnedSchedule, FusionError> {
    let not_learned = |what: &str| {
        FusionError::Record {
        path: path.to_path_buf(),
        field: META_SCHEDULE.into(),
        what: format!(
            "{what}; give a learned schedule's weights file (written next to a LoRA as <name>.fusion.safetensors, or fusion/schedule.safetensors in a model folder)"
        ),
    }
    };
    let header = if path.is_dir() {
        match read_model_dir_header(path)? {
            Some(h) => h,
            None => return Err(not_learned("the folder has no fusion/config.json")),
        }
    } else {
        let meta = read_header_metadata(path)?;
        // a LoRA (or embedding) that names its sidecar: follow it
        match header_from_metadata(&meta, path, "the file")? {
            Some(h) if h.learned_file().is_some_and(|f| f != path) => h,
            _ => return LearnedSchedule::load(path, device),
        }
    };
    match header.load(device)?.schedule {
        Schedule::Learned(l) => Ok(l),
        Schedule::Fixed(_) => Err(not_learned("it records a fixed schedule")),
    }
}

/// `--fusion-schedule` of generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ScheduleChoice {
    /// The fixed Gaussian curves (the record's parameters, or the defaults).
    Fixed,
    /// The learned schedule the model recorded (or --fusion-weights).
    Learned,
    /// Equal weights 1/3 at every timestep.
    Uniform,
}

/// Command-line choices that replace parts of a record.
#[derive(Debug, Clone, Default)]
pub struct FusionOverrides {
    pub captions: Option<CaptionMode>,
    pub mode: Option<FusionMode>,
    pub schedule: Option<ScheduleChoice>,
    pub centers: Option<[f64; 3]>,
    pub widths: Option<[f64; 3]>,
    pub floor: Option<f64>,
    /// A learned schedule's weights ([`load_learned`]).
    pub weights: Option<PathBuf>,
}

impl FusionOverrides {
    fn fixed_params(&self) -> bool {
        self.centers.is_some() || self.widths.is_some() || self.floor.is_some()
    }
    fn any(&self) -> bool {
        self.captions.is_some()
            || self.mode.is_some()
            || self.schedule.is_some()
            || self.fixed_params()
            || self.weights.is_some()
    }
}

/// What generation applies, and the line that says so.
#[derive(Debug, Clone)]
pub struct AppliedFusion {
    pub record: FusionRecord,
    /// "fusion: learned schedule from lora.fusion.safetensors, decoupled mode (recorded in
    /// the LoRA)".
    pub summary: String,
}

/// The record of `lora` (if it has one), else of the `model` folder, with `overrides`
/// applied; defaults (hierarchical, default fixed schedule, concat) where neither records
/// nor overrides say anything.
pub fn resolve(
    lora: Option<&Path>,
    model: Option<&Path>,
    overrides: &FusionOverrides,
    device: &Device,
) -> Result<AppliedFusion, FusionError> {
    let mut header = match lora {
        Some(l) => read_lora_header(l)?,
        None => None,
    };
    if header.is_none() {
        if let Some(m) = model.filter(|m| m.is_dir()) {
            header = read_model_dir_header(m)?;
        }
    }
    resolve_header(header.as_ref(), overrides, device)
}

/// [`resolve`] on an already read record.
pub fn resolve_header(
    header: Option<&RecordHeader>,
    ov: &FusionOverrides,
    device: &Device,
) -> Result<AppliedFusion, FusionError> {
    let conflict = |what: &str| FusionError::Config(what.to_string());
    let captions = ov
        .captions
        .or(header.map(|h| h.captions))
        .unwrap_or(CaptionMode::Hierarchical);
    let mode = ov
        .mode
        .or(header.map(|h| h.mode))
        .unwrap_or(FusionMode::Concat);
    let recorded_fixed = match header.map(|h| &h.schedule) {
        Some(ScheduleRef::Fixed(f)) => Some(f.clone()),
        _ => None,
    };
    let mut learned_from: Option<PathBuf> = None;
    let schedule_overridden = ov.schedule.is_some() || ov.fixed_params() || ov.weights.is_some();
    let schedule = if let Some(w) = &ov.weights {
        if matches!(
            ov.schedule,
            Some(ScheduleChoice::Fixed | ScheduleChoice::Uniform)
        ) || ov.fixed_params()
        {
            return Err(conflict(
                "--fusion-weights gives a learned schedule; it cannot be combined with a fixed or uniform one",
            ));
        }
        learned_from = Some(w.clone());
        Schedule::Learned(load_learned(w, device)?)
    } else {
        match ov.schedule {
            Some(ScheduleChoice::Uniform) => {
                if ov.fixed_params() {
                    return Err(conflict(
                        "--fusion-schedule uniform has no centers, widths or floor to set",
                    ));
                }
                Schedule::Fixed(FixedSchedule::uniform())
            }
            Some(ScheduleChoice::Learned) => {
                if ov.fixed_params() {
                    return Err(conflict(
                        "--fusion-centers/--fusion-widths/--fusion-floor set a fixed schedule, not a learned one",
                    ));
                }
                match header {
                    Some(h) if matches!(h.schedule, ScheduleRef::Learned(_) | ScheduleRef::LearnedInline(_)) => {
                        learned_from = h.learned_file().map(Path::to_path_buf);
                        h.load(device)?.schedule
                    }
                    _ => {
                        return Err(conflict(
                            "--fusion-schedule learned: nothing given records a learned schedule; pass its weights with --fusion-weights FILE",
                        ))
                    }
                }
            }
            Some(ScheduleChoice::Fixed) | None if ov.schedule.is_some() || ov.fixed_params() => {
                let mut f = recorded_fixed.unwrap_or_default();
                if let Some(c) = ov.centers {
                    f.centers = c;
                }
                if let Some(w) = ov.widths {
                    f.widths = w;
                }
                if let Some(x) = ov.floor {
                    f.floor = x;
                }
                f.validate()?;
                Schedule::Fixed(f)
            }
            _ => match header {
                Some(h) => {
                    learned_from = h.learned_file().map(Path::to_path_buf);
                    if captions == CaptionMode::Flat {
                        // a flat model's schedule is never used: do not require its file
                        match &h.schedule {
                            ScheduleRef::Fixed(f) => Schedule::Fixed(f.clone()),
                            _ => Schedule::Fixed(FixedSchedule::default()),
                        }
                    } else {
                        h.load(device)?.schedule
                    }
                }
                None => Schedule::Fixed(FixedSchedule::default()),
            },
        }
    };
    let record = FusionRecord {
        captions,
        mode,
        schedule,
    };
    let provenance = match header {
        Some(h) if !ov.any() => format!("recorded in {}", h.container),
        Some(h) => {
            let mut parts = vec![];
            if ov.captions.is_some() {
                parts.push("captions");
            }
            if ov.mode.is_some() {
                parts.push("mode");
            }
            if schedule_overridden {
                parts.push("schedule");
            }
            format!(
                "{} from the command line, the rest recorded in {}",
                parts.join(" and "),
                h.container
            )
        }
        None if ov.any() => "command line; defaults for the rest".to_string(),
        None => "defaults: nothing records how the model was trained".to_string(),
    };
    let summary = match captions {
        CaptionMode::Flat => format!(
            "fusion: none, flat captions: the segments are joined into one prompt ({provenance})"
        ),
        CaptionMode::Hierarchical => format!(
            "fusion: {}, {} mode ({provenance})",
            record.describe_schedule(learned_from.as_deref()),
            mode_name(mode)
        ),
    };
    Ok(AppliedFusion { record, summary })
}

/// One caption for [`conditioning_source`]: its segments and, for flat-caption models, the
/// flat text the model was trained on when it is not the segments joined (a dataset's
/// one-sentence `text`).
#[derive(Debug, Clone)]
pub struct CaptionText {
    pub segments: SegmentTexts,
    pub flat: Option<String>,
}

impl CaptionText {
    pub fn segments(segments: SegmentTexts) -> Self {
        Self {
            segments,
            flat: None,
        }
    }
    /// The flat prompt: `flat`, else the segments joined ([`SegmentTexts::joined`]), as the
    /// trainer builds it.
    pub fn flat_text(&self) -> String {
        match &self.flat {
            Some(f) if !f.trim().is_empty() => f.clone(),
            _ => self.segments.joined(),
        }
    }
}

/// The per-timestep conditioning of `captions` (one batch entry each) under `record`, built
/// as the trainer builds it: hierarchical captions encoded segment by segment and fused by
/// the recorded schedule and mode (the unconditional branch: three empty segments); flat
/// captions encoded as one prompt (unconditional: the empty prompt).
pub fn conditioning_source(
    record: &FusionRecord,
    text: &ClipTextTransformer,
    tok: &ClipTokenizer,
    placeholders: &crate::embeddings::Placeholders,
    captions: &[CaptionText],
) -> candle_core::Result<Box<dyn ConditioningSource>> {
    use crate::embeddings::{encode_flat, encode_segments};
    let source: Box<dyn ConditioningSource> = match record.fusion() {
        Some(fusion) => {
            let segs: Vec<SegmentTexts> = captions.iter().map(|c| c.segments.clone()).collect();
            Box::new(FusedSegments {
                segments: encode_segments(text, tok, placeholders, &segs)?,
                uncond_segments: encode_segments(
                    text,
                    tok,
                    placeholders,
                    &[SegmentTexts::unconditional()],
                )?,
                fusion,
            })
        }
        None => {
            let flat: Vec<String> = captions.iter().map(CaptionText::flat_text).collect();
            let refs: Vec<&str> = flat.iter().map(String::as_str).collect();
            Box::new(FixedConditioning {
                cond: Conditioning::Context(encode_flat(text, tok, placeholders, &refs)?),
                uncond: Conditioning::Context(encode_flat(text, tok, placeholders, &[""])?),
            })
        }
    };
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custom_fixed() -> FixedSchedule {
        FixedSchedule {
            centers: [0.8, 0.45, 0.2],
            widths: [0.2, 0.4, 0.25],
            floor: 0.02,
            ..FixedSchedule::default()
        }
    }

    fn learned() -> LearnedSchedule {
        LearnedSchedule::init_from_fixed(
            &custom_fixed(),
            LearnedConfig {
                embedding_dim: 8,
                hidden: 5,
                ..LearnedConfig::default()
            },
            3,
            &Device::Cpu,
        )
        .unwrap()
    }

    /// A LoRA-like file: one tensor and the given header entries.
    fn write_file(path: &Path, meta: HashMap<String, String>) {
        let t = HashMap::from([(
            "lora_unet_x.alpha".to_string(),
            Tensor::new(1f32, &Device::Cpu).unwrap(),
        )]);
        crate::safetensors_io::save(path, &t, Some(meta)).unwrap();
    }

    fn vals(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn fixed_record_round_trips_through_header_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("a.safetensors");
        let r = FusionRecord {
            captions: CaptionMode::Hierarchical,
            mode: FusionMode::Decoupled,
            schedule: Schedule::Fixed(custom_fixed()),
        };
        let meta = r.write_for_file(&p).unwrap();
        assert!(
            !sidecar_path(&p).exists(),
            "no sidecar for a fixed schedule"
        );
        assert_eq!(meta[META_SCHEDULE], "fixed");
        assert_eq!(meta[META_MODE], "decoupled");
        write_file(&p, meta);
        let back = read_from_lora(&p, &Device::Cpu).unwrap().unwrap();
        assert_eq!(back.captions, CaptionMode::Hierarchical);
        assert_eq!(back.mode, FusionMode::Decoupled);
        match back.schedule {
            Schedule::Fixed(f) => assert_eq!(f, custom_fixed()),
            _ => panic!("fixed expected"),
        }
    }

    #[test]
    fn learned_record_goes_to_a_sidecar_and_back() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("my lora.safetensors");
        let l = learned();
        let r = FusionRecord {
            captions: CaptionMode::Hierarchical,
            mode: FusionMode::Concat,
            schedule: Schedule::Learned(l.clone()),
        };
        let meta = r.write_for_file(&p).unwrap();
        let side = tmp.path().join("my lora.fusion.safetensors");
        assert!(side.is_file());
        assert_eq!(meta[META_WEIGHTS], "my lora.fusion.safetensors");
        write_file(&p, meta);
        let back = read_from_lora(&p, &Device::Cpu).unwrap().unwrap();
        let Schedule::Learned(b) = back.schedule else {
            panic!("learned expected")
        };
        assert_eq!(b.config, l.config);
        for (x, y) in l.vars().iter().zip(b.vars()) {
            assert_eq!(vals(x.as_tensor()), vals(y.as_tensor()));
        }
        // the sidecar alone, the LoRA and LearnedSchedule::load all give the weights
        for src in [&side, &p] {
            let s = load_learned(src, &Device::Cpu).unwrap();
            assert_eq!(
                vals(s.linear_2_bias.as_tensor()),
                vals(l.linear_2_bias.as_tensor())
            );
        }
        LearnedSchedule::load(&side, &Device::Cpu).unwrap();
        // without its sidecar the LoRA names the missing file …
        std::fs::remove_file(&side).unwrap();
        let e = read_from_lora(&p, &Device::Cpu).unwrap_err().to_string();
        assert!(
            e.contains("my lora.fusion.safetensors") && e.contains("missing"),
            "{e}"
        );
        // … unless the schedule is overridden
        let ov = FusionOverrides {
            schedule: Some(ScheduleChoice::Uniform),
            ..Default::default()
        };
        let a = resolve(Some(p.as_path()), None, &ov, &Device::Cpu).unwrap();
        assert!(
            matches!(a.record.schedule, Schedule::Fixed(ref f) if *f == FixedSchedule::uniform())
        );
        assert_eq!(
            a.summary,
            "fusion: uniform weights, concat mode (schedule from the command line, the rest recorded in the LoRA)"
        );
    }

    #[test]
    fn model_folder_record_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let l = learned();
        let r = FusionRecord {
            captions: CaptionMode::Hierarchical,
            mode: FusionMode::Decoupled,
            schedule: Schedule::Learned(l.clone()),
        };
        r.write_to_model_dir(tmp.path()).unwrap();
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(tmp.path().join("fusion/config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(cfg["schedule"], "learned");
        assert_eq!(cfg["weights"], "schedule.safetensors");
        let back = read_from_model_dir(tmp.path(), &Device::Cpu)
            .unwrap()
            .unwrap();
        assert_eq!(back.mode, FusionMode::Decoupled);
        let Schedule::Learned(b) = back.schedule else {
            panic!()
        };
        assert_eq!(
            vals(b.linear_1_weight.as_tensor()),
            vals(l.linear_1_weight.as_tensor())
        );
        let a = resolve(None, Some(tmp.path()), &Default::default(), &Device::Cpu).unwrap();
        assert_eq!(
            a.summary,
            "fusion: learned schedule from schedule.safetensors, decoupled mode (recorded in the model folder)"
        );
        assert!(read_from_model_dir(&tmp.path().join("none"), &Device::Cpu)
            .unwrap()
            .is_none());
    }

    #[test]
    fn overrides_replace_parts_of_the_record() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("l.safetensors");
        let r = FusionRecord {
            captions: CaptionMode::Hierarchical,
            mode: FusionMode::Decoupled,
            schedule: Schedule::Fixed(custom_fixed()),
        };
        write_file(&p, r.write_for_file(&p).unwrap());
        let dev = Device::Cpu;
        // floor only: centres and widths stay as recorded
        let ov = FusionOverrides {
            floor: Some(0.5),
            ..Default::default()
        };
        let a = resolve(Some(p.as_path()), None, &ov, &dev).unwrap();
        let Schedule::Fixed(f) = &a.record.schedule else {
            panic!()
        };
        assert_eq!(
            (f.centers, f.widths, f.floor),
            ([0.8, 0.45, 0.2], [0.2, 0.4, 0.25], 0.5)
        );
        assert_eq!(a.record.mode, FusionMode::Decoupled);
        // mode only
        let ov = FusionOverrides {
            mode: Some(FusionMode::Concat),
            ..Default::default()
        };
        assert_eq!(
            resolve(Some(p.as_path()), None, &ov, &dev)
                .unwrap()
                .record
                .mode,
            FusionMode::Concat
        );
        // contradictions and impossible requests are refused
        for ov in [
            FusionOverrides {
                schedule: Some(ScheduleChoice::Learned),
                ..Default::default()
            },
            FusionOverrides {
                schedule: Some(ScheduleChoice::Uniform),
                floor: Some(0.1),
                ..Default::default()
            },
            FusionOverrides {
                widths: Some([0.3, -1.0, 0.3]),
                ..Default::default()
            },
        ] {
            assert!(
                resolve(Some(p.as_path()), None, &ov, &dev).is_err(),
                "{ov:?}"
            );
        }
        // nothing recorded: defaults, and the line says so
        let foreign = tmp.path().join("foreign.safetensors");
        write_file(&foreign, HashMap::new());
        let a = resolve(Some(foreign.as_path()), None, &Default::default(), &dev).unwrap();
        assert_eq!(a.record.captions, CaptionMode::Hierarchical);
        assert_eq!(a.record.mode, FusionMode::Concat);
        assert!(
            matches!(a.record.schedule, Schedule::Fixed(ref f) if *f == FixedSchedule::default())
        );
        assert!(
            a.summary
                .ends_with("(defaults: nothing records how the model was trained)"),
            "{}",
            a.summary
        );
    }

    #[test]
    fn legacy_single_entry_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("old.safetensors");
        // as LoRA files carried it before the separate entries (values written by hand)
        let legacy = r#"{"mode":"decoupled","weights":[],"schedule":"fixed","fixed":{"centers":[0.7,0.5,0.1],"widths":[0.3,0.3,0.3],"floor":0.05,"num_train_timesteps":1000}}"#;
        write_file(
            &p,
            HashMap::from([
                (META_CAPTIONS.to_string(), "hierarchical".to_string()),
                (META_LEGACY.to_string(), legacy.to_string()),
            ]),
        );
        let r = read_from_lora(&p, &Device::Cpu).unwrap().unwrap();
        assert_eq!(r.mode, FusionMode::Decoupled);
        let Schedule::Fixed(f) = r.schedule else {
            panic!()
        };
        assert_eq!(f.centers, [0.7, 0.5, 0.1]);
        // a broken entry names the file and the entry
        write_file(
            &p,
            HashMap::from([
                (META_CAPTIONS.to_string(), "hierarchical".to_string()),
                (META_MODE.to_string(), "sideways".to_string()),
            ]),
        );
        let e = read_from_lora(&p, &Device::Cpu).unwrap_err().to_string();
        assert!(
            e.contains("old.safetensors") && e.contains(META_MODE),
            "{e}"
        );
    }
}
