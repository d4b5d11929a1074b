//! diffusers' `scheduler/scheduler_config.json`: reading (with diffusers' per-class defaults
//! for absent fields and clear errors for values we do not implement), writing, and
//! building a `Box<dyn Scheduler>` either from the file's `_class_name` or from a sampler
//! chosen by the user ([`Sampler`]) on the file's noise schedule.

use super::dpm_solver::{DpmSolverMultistepScheduler, DpmSolverOptions};
use super::euler_ancestral::EulerAncestralScheduler;
use super::sigmas::FinalSigma;
use super::unipc::{UniPcOptions, UniPcScheduler, UniPcSolverType};
use super::{
    BetaSchedule, DdimConfig, DdimScheduler, DdpmConfig, DdpmScheduler, NoiseSchedule,
    PredictionType, Scheduler, TimestepSpacing,
};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// The diffusers classes whose sampler strata implements.
pub const SAMPLER_CLASSES: [&str; 5] = [
    "DDIMScheduler",
    "DDPMScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "UniPCMultistepScheduler",
];

/// Every `_class_name` accepted in a model folder: the five above, plus classes whose file
/// only lends its noise schedule (SD-1.5 ships `PNDMScheduler`, SD-2 and SDXL
/// `EulerDiscreteScheduler`); the sampler is then the one chosen for generation.
pub const SUPPORTED_CLASSES: [&str; 8] = [
    "DDIMScheduler",
    "DDPMScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "UniPCMultistepScheduler",
    "PNDMScheduler",
    "EulerDiscreteScheduler",
    "LMSDiscreteScheduler",
];

/// A bad or unsupported scheduler config: where (file or "scheduler config"), which field,
/// and what is wrong / what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{origin}: {field}: {msg}")]
pub struct SchedulerConfigError {
    pub origin: String,
    pub field: String,
    pub msg: String,
}

/// The fields of a diffusers scheduler config that strata uses. `None` means "absent": the
/// class's diffusers default applies (they differ between classes, e.g. DDIM defaults to
/// "leading" spacing and clipping, DPM-Solver++ to "linspace").
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// `_class_name` ("" when absent).
    pub class_name: String,
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: PredictionType,
    pub steps_offset: usize,
    pub timestep_spacing: Option<TimestepSpacing>,
    pub set_alpha_to_one: Option<bool>,
    pub clip_sample: Option<bool>,
    pub clip_sample_range: Option<f64>,
    pub use_karras_sigmas: Option<bool>,
    pub solver_order: Option<usize>,
    /// DPM-Solver++: "midpoint"; UniPC: "bh1" or "bh2".
    pub solver_type: Option<String>,
    pub final_sigmas_type: Option<FinalSigma>,
    pub lower_order_final: Option<bool>,
    pub euler_at_final: Option<bool>,
    pub disable_corrector: Option<Vec<usize>>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self::sd15()
    }
}

impl SchedulerConfig {
    /// Stable Diffusion 1.5's noise schedule (the fields of its published
    /// `scheduler_config.json`): 1000 steps, scaled-linear betas 0.00085–0.012, ε-prediction,
    /// `steps_offset` 1, `set_alpha_to_one` and `clip_sample` false. The class is DDIM,
    /// strata's default sampler.
    pub fn sd15() -> Self {
        Self {
            class_name: "DDIMScheduler".into(),
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            steps_offset: 1,
            timestep_spacing: None,
            set_alpha_to_one: Some(false),
            clip_sample: Some(false),
            clip_sample_range: None,
            use_karras_sigmas: None,
            solver_order: None,
            solver_type: None,
            final_sigmas_type: None,
            lower_order_final: None,
            euler_at_final: None,
            disable_corrector: None,
        }
    }

    /// Parses a scheduler config. Fields strata does not use are ignored (as diffusers'
    /// `from_config` does); values that would change the sampler in a way strata does not
    /// implement are errors. `origin` names the source in errors.
    pub fn from_json(v: &Value, origin: &str) -> Result<Self, SchedulerConfigError> {
        let err = |field: &str, msg: String| SchedulerConfigError {
            origin: origin.to_string(),
            field: field.to_string(),
            msg,
        };
        let obj = v
            .as_object()
            .ok_or_else(|| err("(top level)", "expected a JSON object".into()))?;
        let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
        let string = |k: &str| -> Result<Option<String>, SchedulerConfigError> {
            match get(k) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(err(k, format!("expected a string, found {other}"))),
            }
        };
        let boolean = |k: &str| -> Result<Option<bool>, SchedulerConfigError> {
            match get(k) {
                None => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(other) => Err(err(k, format!("expected true or false, found {other}"))),
            }
        };
        let float = |k: &str| -> Result<Option<f64>, SchedulerConfigError> {
            match get(k) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .map(Some)
                    .ok_or_else(|| err(k, format!("expected a number, found {v}"))),
            }
        };
        let uint = |k: &str| -> Result<Option<usize>, SchedulerConfigError> {
            match get(k) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(|x| Some(x as usize))
                    .ok_or_else(|| err(k, format!("expected a whole number ≥ 0, found {v}"))),
            }
        };
        let class_name = string("_class_name")?.unwrap_or_default();
        if !class_name.is_empty() && !SUPPORTED_CLASSES.contains(&class_name.as_str()) {
            return Err(err(
                "_class_name",
                format!(
                    "{class_name:?} is not a scheduler strata supports; supported: {}",
                    SUPPORTED_CLASSES.join(", ")
                ),
            ));
        }
        let num_train_timesteps = uint("num_train_timesteps")?.unwrap_or(1000);
        if num_train_timesteps < 2 {
            return Err(err(
                "num_train_timesteps",
                format!("{num_train_timesteps} training steps; need at least 2"),
            ));
        }
        let beta_schedule = match string("beta_schedule")?.as_deref() {
            None | Some("linear") => BetaSchedule::Linear,
            Some("scaled_linear") => BetaSchedule::ScaledLinear,
            Some("squaredcos_cap_v2") => BetaSchedule::SquaredCosCapV2,
            Some(other) => {
                return Err(err(
                    "beta_schedule",
                    format!(
                    "{other:?} is not supported; use linear, scaled_linear or squaredcos_cap_v2"
                ),
                ))
            }
        };
        let trained_betas = match get("trained_betas") {
            None => None,
            Some(Value::Array(a)) => {
                let b: Option<Vec<f64>> = a.iter().map(|x| x.as_f64()).collect();
                let b =
                    b.ok_or_else(|| err("trained_betas", "expected a list of numbers".into()))?;
                if b.len() != num_train_timesteps {
                    return Err(err(
                        "trained_betas",
                        format!("{} betas for {num_train_timesteps} training steps", b.len()),
                    ));
                }
                if b.iter().any(|&x| !(x > 0.0 && x < 1.0)) {
                    return Err(err("trained_betas", "every beta must be in (0, 1)".into()));
                }
                Some(b)
            }
            Some(other) => {
                return Err(err(
                    "trained_betas",
                    format!("expected a list of numbers or null, found {other}"),
                ))
            }
        };
        let prediction_type = match string("prediction_type")?.as_deref() {
            None | Some("epsilon") => PredictionType::Epsilon,
            Some("v_prediction") => PredictionType::VPrediction,
            Some(other) => {
                return Err(err(
                    "prediction_type",
                    format!("{other:?} is not supported; use epsilon or v_prediction"),
                ))
            }
        };
        let timestep_spacing = match string("timestep_spacing")?.as_deref() {
            None => None,
            Some("linspace") => Some(TimestepSpacing::Linspace),
            Some("leading") => Some(TimestepSpacing::Leading),
            Some("trailing") => Some(TimestepSpacing::Trailing),
            Some(other) => {
                return Err(err(
                    "timestep_spacing",
                    format!("{other:?} is not supported; use linspace, leading or trailing"),
                ))
            }
        };
        let final_sigmas_type = match string("final_sigmas_type")?.as_deref() {
            None => None,
            Some("zero") => Some(FinalSigma::Zero),
            Some("sigma_min") => Some(FinalSigma::SigmaMin),
            Some(other) => {
                return Err(err(
                    "final_sigmas_type",
                    format!("{other:?} is not supported; use zero or sigma_min"),
                ))
            }
        };
        // features that change the result and that strata does not implement
        for k in [
            "thresholding",
            "rescale_betas_zero_snr",
            "use_exponential_sigmas",
            "use_beta_sigmas",
            "use_lu_lambdas",
            "use_flow_sigmas",
            "use_dynamic_shifting",
        ] {
            if boolean(k)? == Some(true) {
                return Err(err(
                    k,
                    "true is not supported by strata's schedulers; set it to false".into(),
                ));
            }
        }
        if let Some(v) = string("variance_type")? {
            if v != "fixed_small" {
                return Err(err(
                    "variance_type",
                    format!("{v:?} is not supported (a model that predicts its variance); use fixed_small"),
                ));
            }
        }
        if class_name == "DPMSolverMultistepScheduler" {
            if let Some(a) = string("algorithm_type")? {
                if a != "dpmsolver++" && a != "deis" {
                    return Err(err(
                        "algorithm_type",
                        format!("{a:?} is not supported; strata implements dpmsolver++"),
                    ));
                }
            }
        }
        if class_name == "UniPCMultistepScheduler" {
            if boolean("predict_x0")? == Some(false) {
                return Err(err(
                    "predict_x0",
                    "false is not supported; strata's UniPC uses the data prediction".into(),
                ));
            }
            if get("solver_p").is_some() {
                return Err(err(
                    "solver_p",
                    "a separate predictor is not supported".into(),
                ));
            }
        }
        let disable_corrector = match get("disable_corrector") {
            None => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|x| x.as_u64().map(|u| u as usize))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        err(
                            "disable_corrector",
                            "expected a list of step indices".into(),
                        )
                    })?,
            ),
            Some(other) => {
                return Err(err(
                    "disable_corrector",
                    format!("expected a list of step indices, found {other}"),
                ))
            }
        };
        let cfg = Self {
            class_name,
            num_train_timesteps,
            beta_start: float("beta_start")?.unwrap_or(0.0001),
            beta_end: float("beta_end")?.unwrap_or(0.02),
            beta_schedule,
            trained_betas,
            prediction_type,
            steps_offset: uint("steps_offset")?.unwrap_or(0),
            timestep_spacing,
            set_alpha_to_one: boolean("set_alpha_to_one")?,
            clip_sample: boolean("clip_sample")?,
            clip_sample_range: float("clip_sample_range")?,
            use_karras_sigmas: boolean("use_karras_sigmas")?,
            solver_order: uint("solver_order")?,
            solver_type: string("solver_type")?,
            final_sigmas_type,
            lower_order_final: boolean("lower_order_final")?,
            euler_at_final: boolean("euler_at_final")?,
            disable_corrector,
        };
        if !(cfg.beta_start > 0.0 && cfg.beta_end < 1.0 && cfg.beta_start <= cfg.beta_end)
            && cfg.trained_betas.is_none()
        {
            return Err(err(
                "beta_start/beta_end",
                format!(
                    "{} to {} is not an increasing range inside (0, 1)",
                    cfg.beta_start, cfg.beta_end
                ),
            ));
        }
        Ok(cfg)
    }

    /// Reads and parses `path` (a `scheduler_config.json`).
    pub fn read(path: &Path) -> Result<Self, SchedulerConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SchedulerConfigError {
            origin: origin.clone(),
            field: "(file)".into(),
            msg: format!("cannot read: {e}"),
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| SchedulerConfigError {
            origin: origin.clone(),
            field: "(file)".into(),
            msg: format!("invalid JSON: {e}"),
        })?;
        Self::from_json(&v, &origin)
    }

    /// The config as diffusers writes it (absent optional fields left out, so each class's
    /// defaults apply when diffusers loads it).
    pub fn to_diffusers_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("_class_name".into(), json!(self.class_name));
        m.insert("_diffusers_version".into(), json!("0.35.2"));
        m.insert(
            "num_train_timesteps".into(),
            json!(self.num_train_timesteps),
        );
        m.insert("beta_start".into(), json!(self.beta_start));
        m.insert("beta_end".into(), json!(self.beta_end));
        m.insert(
            "beta_schedule".into(),
            json!(match self.beta_schedule {
                BetaSchedule::Linear => "linear",
                BetaSchedule::ScaledLinear => "scaled_linear",
                BetaSchedule::SquaredCosCapV2 => "squaredcos_cap_v2",
            }),
        );
        m.insert("trained_betas".into(), json!(self.trained_betas));
        m.insert(
            "prediction_type".into(),
            json!(match self.prediction_type {
                PredictionType::Epsilon => "epsilon",
                PredictionType::VPrediction => "v_prediction",
            }),
        );
        m.insert("steps_offset".into(), json!(self.steps_offset));
        let mut opt = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        };
        opt(
            "timestep_spacing",
            self.timestep_spacing.map(|s| {
                json!(match s {
                    TimestepSpacing::Linspace => "linspace",
                    TimestepSpacing::Leading => "leading",
                    TimestepSpacing::Trailing => "trailing",
                })
            }),
        );
        opt("set_alpha_to_one", self.set_alpha_to_one.map(|b| json!(b)));
        opt("clip_sample", self.clip_sample.map(|b| json!(b)));
        opt(
            "clip_sample_range",
            self.clip_sample_range.map(|b| json!(b)),
        );
        opt(
            "use_karras_sigmas",
            self.use_karras_sigmas.map(|b| json!(b)),
        );
        opt("solver_order", self.solver_order.map(|b| json!(b)));
        opt("solver_type", self.solver_type.as_ref().map(|b| json!(b)));
        opt(
            "final_sigmas_type",
            self.final_sigmas_type.map(|f| {
                json!(match f {
                    FinalSigma::Zero => "zero",
                    FinalSigma::SigmaMin => "sigma_min",
                })
            }),
        );
        opt(
            "lower_order_final",
            self.lower_order_final.map(|b| json!(b)),
        );
        opt("euler_at_final", self.euler_at_final.map(|b| json!(b)));
        opt(
            "disable_corrector",
            self.disable_corrector.as_ref().map(|b| json!(b)),
        );
        Value::Object(m)
    }

    /// The forward-process schedule these fields describe.
    pub fn noise_schedule(&self) -> NoiseSchedule {
        match &self.trained_betas {
            Some(b) => NoiseSchedule::from_betas(b.clone()),
            None => NoiseSchedule::new(
                self.num_train_timesteps,
                self.beta_start,
                self.beta_end,
                self.beta_schedule,
            ),
        }
    }

    fn clip(&self) -> Option<f64> {
        // diffusers' DDIM and DDPM clip by default
        if self.clip_sample.unwrap_or(true) {
            Some(self.clip_sample_range.unwrap_or(1.0))
        } else {
            None
        }
    }

    fn ddim(&self, n: usize) -> candle_core::Result<DdimScheduler> {
        let cfg = DdimConfig {
            train_steps: self.num_train_timesteps,
            beta_start: self.beta_start,
            beta_end: self.beta_end,
            beta_schedule: self.beta_schedule,
            prediction_type: self.prediction_type,
            steps_offset: self.steps_offset,
            set_alpha_to_one: self.set_alpha_to_one.unwrap_or(true),
            clip_sample: self.clip(),
            eta: 0.0,
        };
        DdimScheduler::with_schedule(
            cfg,
            self.noise_schedule(),
            self.timestep_spacing.unwrap_or(TimestepSpacing::Leading),
            n,
        )
    }

    fn ddpm(&self, n: usize) -> candle_core::Result<DdpmScheduler> {
        let cfg = DdpmConfig {
            train_steps: self.num_train_timesteps,
            beta_start: self.beta_start,
            beta_end: self.beta_end,
            beta_schedule: self.beta_schedule,
            prediction_type: self.prediction_type,
            clip_sample: self.clip(),
        };
        let mut s = DdpmScheduler::with_schedule(
            cfg,
            self.noise_schedule(),
            self.timestep_spacing.unwrap_or(TimestepSpacing::Leading),
            self.steps_offset,
        );
        s.set_timesteps(n)?;
        Ok(s)
    }

    fn euler_a(&self, n: usize) -> candle_core::Result<EulerAncestralScheduler> {
        EulerAncestralScheduler::new(
            self.noise_schedule(),
            self.prediction_type,
            self.timestep_spacing.unwrap_or(TimestepSpacing::Linspace),
            self.steps_offset,
            n,
        )
    }

    fn dpm_options(&self, karras: bool, order: usize) -> DpmSolverOptions {
        DpmSolverOptions {
            solver_order: order,
            use_karras_sigmas: karras,
            timestep_spacing: self.timestep_spacing.unwrap_or(TimestepSpacing::Linspace),
            steps_offset: self.steps_offset,
            ..Default::default()
        }
    }

    fn unipc_options(&self, order: usize) -> UniPcOptions {
        UniPcOptions {
            solver_order: order,
            timestep_spacing: self.timestep_spacing.unwrap_or(TimestepSpacing::Linspace),
            steps_offset: self.steps_offset,
            ..Default::default()
        }
    }
}

/// A sampler chosen for generation, run on a model's noise schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sampler {
    /// DDIM, η = 0 (deterministic).
    #[default]
    Ddim,
    /// DDPM ancestral sampling (`fixed_small` variance).
    Ddpm,
    /// Euler ancestral ("Euler a").
    EulerAncestral,
    /// DPM-Solver++ 2M.
    DpmPp2M,
    /// DPM-Solver++ 2M with Karras sigmas.
    DpmPp2MKarras,
    /// UniPC (bh2, order 2).
    UniPc,
}

impl Sampler {
    pub const ALL: [Sampler; 6] = [
        Sampler::Ddim,
        Sampler::Ddpm,
        Sampler::EulerAncestral,
        Sampler::DpmPp2M,
        Sampler::DpmPp2MKarras,
        Sampler::UniPc,
    ];

    /// The command-line name (`ddim`, `ddpm`, `euler-a`, `dpmpp-2m`, `dpmpp-2m-karras`,
    /// `unipc`).
    pub fn name(self) -> &'static str {
        match self {
            Sampler::Ddim => "ddim",
            Sampler::Ddpm => "ddpm",
            Sampler::EulerAncestral => "euler-a",
            Sampler::DpmPp2M => "dpmpp-2m",
            Sampler::DpmPp2MKarras => "dpmpp-2m-karras",
            Sampler::UniPc => "unipc",
        }
    }

    /// The name A1111-style tools show (written into PNG `parameters`).
    pub fn display_name(self) -> &'static str {
        match self {
            Sampler::Ddim => "DDIM",
            Sampler::Ddpm => "DDPM",
            Sampler::EulerAncestral => "Euler a",
            Sampler::DpmPp2M => "DPM++ 2M",
            Sampler::DpmPp2MKarras => "DPM++ 2M Karras",
            Sampler::UniPc => "UniPC",
        }
    }

    /// The scheduler for this sampler on `cfg`'s noise schedule (training steps, betas,
    /// prediction type, `steps_offset`, `timestep_spacing`, and for DDIM/DDPM
    /// `set_alpha_to_one`/`clip_sample`), with the sampler's own settings otherwise —
    /// what diffusers' `XScheduler.from_config(model_config)` gives — and `n` inference
    /// steps.
    pub fn build(self, cfg: &SchedulerConfig, n: usize) -> candle_core::Result<Box<dyn Scheduler>> {
        Ok(match self {
            Sampler::Ddim => Box::new(cfg.ddim(n)?),
            Sampler::Ddpm => Box::new(cfg.ddpm(n)?),
            Sampler::EulerAncestral => Box::new(cfg.euler_a(n)?),
            Sampler::DpmPp2M | Sampler::DpmPp2MKarras => {
                Box::new(DpmSolverMultistepScheduler::new(
                    cfg.noise_schedule(),
                    cfg.prediction_type,
                    cfg.dpm_options(self == Sampler::DpmPp2MKarras, 2),
                    n,
                )?)
            }
            Sampler::UniPc => Box::new(UniPcScheduler::new(
                cfg.noise_schedule(),
                cfg.prediction_type,
                cfg.unipc_options(2),
                n,
            )?),
        })
    }
}

impl std::fmt::Display for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Sampler {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Sampler::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Sampler::ALL.iter().map(|x| x.name()).collect();
                format!("unknown sampler {s:?}; use one of {}", names.join(", "))
            })
    }
}

/// The scheduler a config's `_class_name` names, with every field of the config honoured
/// (like diffusers' `SchedulerMixin.from_config`), set to `n` inference steps.
pub fn scheduler_from_config(
    cfg: &SchedulerConfig,
    n: usize,
) -> Result<Box<dyn Scheduler>, SchedulerConfigError> {
    let err = |field: &str, msg: String| SchedulerConfigError {
        origin: "scheduler config".into(),
        field: field.into(),
        msg,
    };
    let ce = |e: candle_core::Error| err("(scheduler)", e.to_string());
    let built: Box<dyn Scheduler> = match cfg.class_name.as_str() {
        "DDIMScheduler" => Box::new(cfg.ddim(n).map_err(ce)?),
        "DDPMScheduler" => Box::new(cfg.ddpm(n).map_err(ce)?),
        "EulerAncestralDiscreteScheduler" => Box::new(cfg.euler_a(n).map_err(ce)?),
        "DPMSolverMultistepScheduler" => {
            let order = cfg.solver_order.unwrap_or(2);
            match cfg.solver_type.as_deref() {
                None | Some("midpoint") | Some("bh1") | Some("bh2") | Some("logrho") => {}
                Some(other) => {
                    return Err(err(
                        "solver_type",
                        format!("{other:?} is not supported; strata implements midpoint"),
                    ))
                }
            }
            let mut o = cfg.dpm_options(cfg.use_karras_sigmas.unwrap_or(false), order);
            o.final_sigma = cfg.final_sigmas_type.unwrap_or(FinalSigma::Zero);
            o.lower_order_final = cfg.lower_order_final.unwrap_or(true);
            o.euler_at_final = cfg.euler_at_final.unwrap_or(false);
            Box::new(
                DpmSolverMultistepScheduler::new(cfg.noise_schedule(), cfg.prediction_type, o, n)
                    .map_err(ce)?,
            )
        }
        "UniPCMultistepScheduler" => {
            let mut o = cfg.unipc_options(cfg.solver_order.unwrap_or(2));
            o.solver_type = match cfg.solver_type.as_deref() {
                Some("bh1") => UniPcSolverType::Bh1,
                // diffusers maps the DPM-Solver names to bh2
                None | Some("bh2") | Some("midpoint") | Some("heun") | Some("logrho") => {
                    UniPcSolverType::Bh2
                }
                Some(other) => {
                    return Err(err(
                        "solver_type",
                        format!("{other:?} is not supported; use bh1 or bh2"),
                    ))
                }
            };
            o.use_karras_sigmas = cfg.use_karras_sigmas.unwrap_or(false);
            o.final_sigma = cfg.final_sigmas_type.unwrap_or(FinalSigma::Zero);
            o.lower_order_final = cfg.lower_order_final.unwrap_or(true);
            o.disable_corrector = cfg.disable_corrector.clone().unwrap_or_default();
            Box::new(
                UniPcScheduler::new(cfg.noise_schedule(), cfg.prediction_type, o, n).map_err(ce)?,
            )
        }
        other => {
            return Err(err(
                "_class_name",
                format!(
                    "{other:?} has no sampler in strata (its noise schedule can still be used with a chosen sampler); samplers: {}",
                    SAMPLER_CLASSES.join(", ")
                ),
            ))
        }
    };
    Ok(built)
}

/// `model/scheduler/scheduler_config.json` when `model` is a folder that has one.
pub fn model_scheduler_config_path(model: &Path) -> Option<PathBuf> {
    let p = model.join("scheduler").join("scheduler_config.json");
    p.is_file().then_some(p)
}

/// The noise-schedule config of a diffusers model folder: its
/// `scheduler/scheduler_config.json` when present, else `None` (callers then use
/// [`SchedulerConfig::sd15`]).
pub fn read_model_scheduler_config(
    model: &Path,
) -> Result<Option<SchedulerConfig>, SchedulerConfigError> {
    match model_scheduler_config_path(model) {
        Some(p) => SchedulerConfig::read(&p).map(Some),
        None => Ok(None),
    }
}

/// Writes `cfg` as `model_dir/scheduler/scheduler_config.json` (atomically), the file
/// diffusers and strata read a model's noise schedule from.
pub fn write_scheduler_config(model_dir: &Path, cfg: &SchedulerConfig) -> std::io::Result<PathBuf> {
    let p = model_dir.join("scheduler").join("scheduler_config.json");
    let text =
        serde_json::to_string_pretty(&cfg.to_diffusers_json()).map_err(std::io::Error::other)?;
    strata_io::atomic::write(&p, text.as_bytes())?;
    Ok(p)
}

/// The training-side scheduler of a noise schedule: DDPM over all training steps (what
/// diffusers' training scripts load from a model's `scheduler/` folder), for `add_noise`
/// and the ε or v targets.
pub fn training_scheduler(cfg: &SchedulerConfig) -> Box<dyn Scheduler> {
    let ddpm = DdpmConfig {
        train_steps: cfg.num_train_timesteps,
        beta_start: cfg.beta_start,
        beta_end: cfg.beta_end,
        beta_schedule: cfg.beta_schedule,
        prediction_type: cfg.prediction_type,
        clip_sample: cfg.clip(),
    };
    Box::new(DdpmScheduler::with_schedule(
        ddpm,
        cfg.noise_schedule(),
        TimestepSpacing::Leading,
        0,
    ))
}

/// Makes sure the model folder `model_dir` has a `scheduler/scheduler_config.json`: keeps an
/// existing one (a copied base model's), else writes SD-1.5's noise schedule
/// ([`SchedulerConfig::sd15`], the schedule strata trains with when a base model has none).
pub fn ensure_scheduler_config(model_dir: &Path) -> std::io::Result<()> {
    if model_scheduler_config_path(model_dir).is_none() {
        write_scheduler_config(model_dir, &SchedulerConfig::sd15())?;
    }
    Ok(())
}
