//! Loading SD-1.5 weights: a diffusers folder (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`,
//! fp32 or fp16 safetensors) or a single-file checkpoint `.safetensors` with the original LDM
//! key names (`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.*`).
//!
//! Every load is checked: missing, unexpected and mis-shaped tensors are collected while the
//! model is built and reported together in one error; nothing is skipped silently.
//! Pickle `.ckpt` files are refused (they can run code when loaded).

use crate::unet::{UNet2DConditionModel, UNetConfig};
use crate::vae::{AutoencoderKL, VaeConfig};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Everything that did not fit when building a model from a weights file.
#[derive(Debug, Clone)]
pub struct TensorReport {
    pub path: PathBuf,
    pub what: String,
    /// Human-readable listing (at most 40 names per kind).
    pub report: String,
    /// Expected tensors not in the file (`name [shape]`).
    pub missing: Vec<String>,
    /// Tensors in the file the model does not use.
    pub unexpected: Vec<String>,
    pub mismatched: Vec<Mismatch>,
}

/// A tensor that was present but had the wrong shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub name: String,
    pub expected: Vec<usize>,
    pub found: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },
    #[error(
        "{path}: this is a pickle checkpoint (.ckpt/.pt/.bin); strata does not load pickles because they can run code. \
Convert it once with diffusers (Python): `python -c \"from diffusers import StableDiffusionPipeline as P; \
P.from_single_file('{path}').save_pretrained('model-diffusers', safe_serialization=True)\"` and pass the folder, \
or re-save it as .safetensors"
    )]
    Pickle { path: PathBuf },
    #[error("{path}: not a diffusers folder (no unet/ with a config.json) nor a .safetensors file; pass a folder with unet/, vae/, text_encoder/, tokenizer/ or an SD-1.5 .safetensors checkpoint")]
    UnknownLayout { path: PathBuf },
    #[error("{path}: bad config {field}: {msg}")]
    Config {
        path: PathBuf,
        field: String,
        msg: String,
    },
    #[error("{}: the {} weights do not fit the configuration:\n{}\nCheck that the file is an SD-1.5-layout {} matching its config.json", .0.path.display(), .0.what, .0.report, .0.what)]
    Tensors(Box<TensorReport>),
    #[error("{path}: building the {what} failed")]
    Build {
        path: PathBuf,
        what: String,
        source: Box<candle_core::Error>,
    },
}

pub type Result<T> = std::result::Result<T, LoadError>;

fn io(path: &Path, e: impl std::fmt::Display) -> LoadError {
    LoadError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// Reads all tensors of a safetensors file.
pub fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    refuse_pickle(path)?;
    candle_core::safetensors::load(path, device).map_err(|e| io(path, e))
}

/// Refuses pickle checkpoints with conversion advice.
pub fn refuse_pickle(path: &Path) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if matches!(ext.as_str(), "ckpt" | "pt" | "pth" | "bin" | "pkl") {
        return Err(LoadError::Pickle {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

#[derive(Default)]
struct Record {
    used: BTreeSet<String>,
    missing: Vec<String>,
    mismatched: Vec<Mismatch>,
}

/// A VarBuilder backend over a name → tensor map that records what the model asked for, so
/// that all problems can be reported at once.
struct Checked {
    tensors: HashMap<String, Tensor>,
    record: std::sync::Arc<Mutex<Record>>,
}

impl SimpleBackend for Checked {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut r = self.record.lock().expect("record lock");
        match self.tensors.get(name) {
            None => {
                r.missing.push(format!("{name} {:?}", s.dims()));
                Tensor::zeros(s, dtype, dev)
            }
            Some(t) => {
                r.used.insert(name.to_string());
                if t.dims() != s.dims() {
                    r.mismatched.push(Mismatch {
                        name: name.to_string(),
                        expected: s.dims().to_vec(),
                        found: t.dims().to_vec(),
                    });
                    return Tensor::zeros(s, dtype, dev);
                }
                t.to_dtype(dtype)?.to_device(dev)
            }
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let mut r = self.record.lock().expect("record lock");
        match self.tensors.get(name) {
            None => {
                r.missing.push(name.to_string());
                candle_core::bail!("missing tensor {name}")
            }
            Some(t) => {
                r.used.insert(name.to_string());
                t.to_dtype(dtype)?.to_device(dev)
            }
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// Builds a model from `tensors` with `build`, then fails listing every missing, unexpected
/// or mis-shaped tensor.
pub fn build_checked<T>(
    tensors: HashMap<String, Tensor>,
    path: &Path,
    what: &str,
    dtype: DType,
    device: &Device,
    build: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
) -> Result<T> {
    let names: BTreeSet<String> = tensors.keys().cloned().collect();
    let record = std::sync::Arc::new(Mutex::new(Record::default()));
    let backend = Checked {
        tensors,
        record: record.clone(),
    };
    let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
    let built = build(vb);
    let r = record.lock().expect("record lock");
    let unexpected: Vec<String> = names.difference(&r.used).cloned().collect();
    if !r.missing.is_empty() || !unexpected.is_empty() || !r.mismatched.is_empty() {
        let mut report = String::new();
        let list = |title: &str, items: &[String], report: &mut String| {
            if !items.is_empty() {
                report.push_str(&format!("  {} {title}:\n", items.len()));
                for i in items.iter().take(40) {
                    report.push_str(&format!("    {i}\n"));
                }
                if items.len() > 40 {
                    report.push_str(&format!("    ... and {} more\n", items.len() - 40));
                }
            }
        };
        list("missing", &r.missing, &mut report);
        list("unexpected", &unexpected, &mut report);
        let mm: Vec<String> = r
            .mismatched
            .iter()
            .map(|m| {
                format!(
                    "{}: expected {:?}, file has {:?}",
                    m.name, m.expected, m.found
                )
            })
            .collect();
        list("mis-shaped", &mm, &mut report);
        return Err(LoadError::Tensors(Box::new(TensorReport {
            path: path.to_path_buf(),
            what: what.to_string(),
            report: report.trim_end().to_string(),
            missing: r.missing.clone(),
            unexpected,
            mismatched: r.mismatched.clone(),
        })));
    }
    built.map_err(|source| LoadError::Build {
        path: path.to_path_buf(),
        what: what.to_string(),
        source: Box::new(source),
    })
}

/// The UNet from a name → tensor map in diffusers layout.
pub fn unet_from_tensors(
    cfg: UNetConfig,
    tensors: HashMap<String, Tensor>,
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<UNet2DConditionModel> {
    build_checked(tensors, path, "UNet", dtype, device, |vb| {
        UNet2DConditionModel::new(cfg, vb)
    })
}

/// The VAE from a name → tensor map in diffusers layout.
pub fn vae_from_tensors(
    cfg: VaeConfig,
    tensors: HashMap<String, Tensor>,
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<AutoencoderKL> {
    build_checked(tensors, path, "VAE", dtype, device, |vb| {
        AutoencoderKL::new(cfg, vb)
    })
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let s = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    serde_json::from_str(&s).map_err(|e| io(path, format!("invalid JSON: {e}")))
}

/// `dir/diffusion_pytorch_model.safetensors`, or the `.fp16` variant when only that exists
/// (or `prefer_fp16`).
pub fn weights_file(dir: &Path, stem: &str, prefer_fp16: bool) -> Result<PathBuf> {
    let full = dir.join(format!("{stem}.safetensors"));
    let half = dir.join(format!("{stem}.fp16.safetensors"));
    let order = if prefer_fp16 {
        [&half, &full]
    } else {
        [&full, &half]
    };
    for p in order {
        if p.is_file() {
            return Ok(p.clone());
        }
    }
    for ext in ["bin", "ckpt"] {
        let p = dir.join(format!("{stem}.{ext}"));
        if p.is_file() {
            return Err(LoadError::Pickle { path: p });
        }
    }
    Err(io(&full, format!("not found (nor {})", half.display())))
}

/// Where the components of a model live.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A diffusers folder.
    Diffusers(PathBuf),
    /// A single SD-1.5 `.safetensors` checkpoint with LDM key names.
    SingleFile(PathBuf),
}

impl ModelSource {
    pub fn detect(path: &Path) -> Result<Self> {
        if path.is_dir() {
            if path.join("unet").join("config.json").is_file() {
                return Ok(Self::Diffusers(path.to_path_buf()));
            }
            return Err(LoadError::UnknownLayout {
                path: path.to_path_buf(),
            });
        }
        refuse_pickle(path)?;
        if !path.is_file() {
            return Err(io(path, "no such file or folder"));
        }
        if path.extension().and_then(|e| e.to_str()) == Some("safetensors") {
            return Ok(Self::SingleFile(path.to_path_buf()));
        }
        Err(LoadError::UnknownLayout {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        match self {
            Self::Diffusers(p) | Self::SingleFile(p) => p,
        }
    }
}

/// UNet + VAE of a model (the text side is loaded by the `clip` module from the same source).
pub struct DiffusionModels {
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKL,
}

/// Loads UNet and VAE from a diffusers folder. `prefer_fp16` picks the `.fp16` files when both
/// exist; weights are converted to `dtype` either way.
pub fn load_diffusers(
    dir: &Path,
    dtype: DType,
    device: &Device,
    prefer_fp16: bool,
) -> Result<DiffusionModels> {
    let ucfg_path = dir.join("unet").join("config.json");
    let ucfg = UNetConfig::from_diffusers_json(&read_json(&ucfg_path)?).map_err(|msg| {
        LoadError::Config {
            path: ucfg_path.clone(),
            field: "unet".into(),
            msg,
        }
    })?;
    let vcfg_path = dir.join("vae").join("config.json");
    let vcfg = VaeConfig::from_diffusers_json(&read_json(&vcfg_path)?).map_err(|msg| {
        LoadError::Config {
            path: vcfg_path.clone(),
            field: "vae".into(),
            msg,
        }
    })?;
    let uw = weights_file(&dir.join("unet"), "diffusion_pytorch_model", prefer_fp16)?;
    let unet = unet_from_tensors(ucfg, read_safetensors(&uw, device)?, &uw, dtype, device)?;
    let vw = weights_file(&dir.join("vae"), "diffusion_pytorch_model", prefer_fp16)?;
    let vae = vae_from_tensors(vcfg, read_safetensors(&vw, device)?, &vw, dtype, device)?;
    Ok(DiffusionModels { unet, vae })
}

/// Loads UNet and VAE from a single-file LDM checkpoint, given the configurations (SD-1.5's
/// for real checkpoints). Unknown prefixes other than `cond_stage_model.` (loaded by the text
/// side) and a few known non-weight buffers are reported as unexpected.
pub fn load_single_file(
    path: &Path,
    ucfg: UNetConfig,
    vcfg: VaeConfig,
    dtype: DType,
    device: &Device,
) -> Result<DiffusionModels> {
    let all = read_safetensors(path, device)?;
    let split = split_ldm(all, &ucfg, &vcfg).map_err(|msg| LoadError::Config {
        path: path.to_path_buf(),
        field: "keys".into(),
        msg,
    })?;
    let unet = unet_from_tensors(ucfg, split.unet, path, dtype, device)?;
    let vae = vae_from_tensors(vcfg, split.vae, path, dtype, device)?;
    Ok(DiffusionModels { unet, vae })
}

/// A single-file checkpoint's tensors split by component and renamed to diffusers names.
pub struct LdmSplit {
    pub unet: HashMap<String, Tensor>,
    pub vae: HashMap<String, Tensor>,
    /// `cond_stage_model.*` tensors with that prefix kept (for the text side).
    pub text: HashMap<String, Tensor>,
}

/// Ignorable non-weight entries of LDM checkpoints.
fn ldm_ignorable(k: &str) -> bool {
    matches!(
        k,
        "alphas_cumprod"
            | "alphas_cumprod_prev"
            | "betas"
            | "log_one_minus_alphas_cumprod"
            | "posterior_log_variance_clipped"
            | "posterior_mean_coef1"
            | "posterior_mean_coef2"
            | "posterior_variance"
            | "sqrt_alphas_cumprod"
            | "sqrt_one_minus_alphas_cumprod"
            | "sqrt_recip_alphas_cumprod"
            | "sqrt_recipm1_alphas_cumprod"
            | "model_ema.decay"
            | "model_ema.num_updates"
    ) || k.starts_with("model_ema.")
}

pub fn split_ldm(
    all: HashMap<String, Tensor>,
    ucfg: &UNetConfig,
    vcfg: &VaeConfig,
) -> std::result::Result<LdmSplit, String> {
    let mut out = LdmSplit {
        unet: HashMap::new(),
        vae: HashMap::new(),
        text: HashMap::new(),
    };
    for (k, t) in all {
        if let Some(rest) = k.strip_prefix("model.diffusion_model.") {
            // unknown keys keep their LDM name so they show up as "unexpected"
            let name = ldm_unet_key(rest, ucfg).unwrap_or_else(|| k.clone());
            out.unet.insert(name, t);
        } else if let Some(rest) = k.strip_prefix("first_stage_model.") {
            match ldm_vae_key(rest, vcfg) {
                Some(name) => {
                    // LDM stores the mid attention projections as 1x1 convs
                    let t = if name.contains(".attentions.0.to_") && t.rank() == 4 {
                        let d = t.dims().to_vec();
                        t.reshape((d[0], d[1])).map_err(|e| e.to_string())?
                    } else {
                        t
                    };
                    out.vae.insert(name, t);
                }
                None => {
                    out.vae.insert(k.clone(), t);
                }
            }
        } else if k.starts_with("cond_stage_model.") {
            out.text.insert(k, t);
        } else if !ldm_ignorable(&k) {
            out.unet.insert(k, t); // reported as unexpected
        }
    }
    Ok(out)
}

fn resnet_ldm(rest: &str) -> Option<String> {
    let map = [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("emb_layers.1.", "time_emb_proj."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("skip_connection.", "conv_shortcut."),
    ];
    map.iter()
        .find_map(|(a, b)| rest.strip_prefix(a).map(|r| format!("{b}{r}")))
}

/// LDM UNet key (after `model.diffusion_model.`) → diffusers name.
pub fn ldm_unet_key(k: &str, c: &UNetConfig) -> Option<String> {
    let l = c.layers_per_block;
    let n = c.block_out_channels.len();
    let simple = [
        ("time_embed.0.", "time_embedding.linear_1."),
        ("time_embed.2.", "time_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."),
        ("out.2.", "conv_out."),
    ];
    if let Some(s) = simple
        .iter()
        .find_map(|(a, b)| k.strip_prefix(a).map(|r| format!("{b}{r}")))
    {
        return Some(s);
    }
    if let Some(r) = k.strip_prefix("middle_block.") {
        let (idx, rest) = r.split_once('.')?;
        return match idx {
            "0" => resnet_ldm(rest).map(|r| format!("mid_block.resnets.0.{r}")),
            "1" => Some(format!("mid_block.attentions.0.{rest}")),
            "2" => resnet_ldm(rest).map(|r| format!("mid_block.resnets.1.{r}")),
            _ => None,
        };
    }
    let (idx, sub, rest) = split3(k, "input_blocks.").or_else(|| split3(k, "output_blocks."))?;
    if k.starts_with("input_blocks.") {
        if idx == 0 {
            return None;
        }
        let (i, j) = ((idx - 1) / (l + 1), (idx - 1) % (l + 1));
        if i >= n {
            return None;
        }
        if j == l {
            // downsampler: input_blocks.K.0.op.*
            let r = rest.strip_prefix("op.")?;
            return (sub == 0).then(|| format!("down_blocks.{i}.downsamplers.0.conv.{r}"));
        }
        return match sub {
            0 => resnet_ldm(rest).map(|r| format!("down_blocks.{i}.resnets.{j}.{r}")),
            1 if c.cross_attention[i] => Some(format!("down_blocks.{i}.attentions.{j}.{rest}")),
            _ => None,
        };
    }
    // output_blocks
    let (i, j) = (idx / (l + 1), idx % (l + 1));
    if i >= n {
        return None;
    }
    let cross = c.cross_attention[n - 1 - i];
    match sub {
        0 => resnet_ldm(rest).map(|r| format!("up_blocks.{i}.resnets.{j}.{r}")),
        1 if cross => Some(format!("up_blocks.{i}.attentions.{j}.{rest}")),
        s if j == l && i + 1 < n && ((s == 1 && !cross) || (s == 2 && cross)) => rest
            .strip_prefix("conv.")
            .map(|r| format!("up_blocks.{i}.upsamplers.0.conv.{r}")),
        _ => None,
    }
}

/// Splits `prefix{idx}.{sub}.{rest}`.
fn split3<'a>(k: &'a str, prefix: &str) -> Option<(usize, usize, &'a str)> {
    let r = k.strip_prefix(prefix)?;
    let (a, r) = r.split_once('.')?;
    let (b, r) = r.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?, r))
}

/// LDM VAE key (after `first_stage_model.`) → diffusers name.
pub fn ldm_vae_key(k: &str, c: &VaeConfig) -> Option<String> {
    let n = c.block_out_channels.len();
    for p in ["quant_conv.", "post_quant_conv."] {
        if k.starts_with(p) {
            return Some(k.to_string());
        }
    }
    let (part, rest) = if let Some(r) = k.strip_prefix("encoder.") {
        ("encoder", r)
    } else {
        ("decoder", k.strip_prefix("decoder.")?)
    };
    let simple = [
        ("conv_in.", "conv_in."),
        ("conv_out.", "conv_out."),
        ("norm_out.", "conv_norm_out."),
    ];
    if let Some(s) = simple
        .iter()
        .find_map(|(a, b)| rest.strip_prefix(a).map(|r| format!("{part}.{b}{r}")))
    {
        return Some(s);
    }
    let res = |r: &str| -> Option<String> {
        for (a, b) in [
            ("norm1.", "norm1."),
            ("conv1.", "conv1."),
            ("norm2.", "norm2."),
            ("conv2.", "conv2."),
            ("nin_shortcut.", "conv_shortcut."),
        ] {
            if let Some(x) = r.strip_prefix(a) {
                return Some(format!("{b}{x}"));
            }
        }
        None
    };
    if let Some(r) = rest.strip_prefix("mid.") {
        if let Some(x) = r.strip_prefix("block_1.") {
            return res(x).map(|x| format!("{part}.mid_block.resnets.0.{x}"));
        }
        if let Some(x) = r.strip_prefix("block_2.") {
            return res(x).map(|x| format!("{part}.mid_block.resnets.1.{x}"));
        }
        if let Some(x) = r.strip_prefix("attn_1.") {
            for (a, b) in [
                ("norm.", "group_norm."),
                ("q.", "to_q."),
                ("k.", "to_k."),
                ("v.", "to_v."),
                ("proj_out.", "to_out.0."),
            ] {
                if let Some(y) = x.strip_prefix(a) {
                    return Some(format!("{part}.mid_block.attentions.0.{b}{y}"));
                }
            }
        }
        return None;
    }
    let (dir, r) = if part == "encoder" {
        ("down", rest.strip_prefix("down.")?)
    } else {
        ("up", rest.strip_prefix("up.")?)
    };
    let (a, r) = r.split_once('.')?;
    let li: usize = a.parse().ok()?;
    if li >= n {
        return None;
    }
    // LDM numbers decoder levels from the bottom; diffusers from the top.
    let bi = if dir == "down" { li } else { n - 1 - li };
    let blocks = if dir == "down" {
        "down_blocks"
    } else {
        "up_blocks"
    };
    if let Some(x) = r.strip_prefix("block.") {
        let (j, x) = x.split_once('.')?;
        let j: usize = j.parse().ok()?;
        return res(x).map(|x| format!("{part}.{blocks}.{bi}.resnets.{j}.{x}"));
    }
    let sampler = if dir == "down" {
        "downsample.conv."
    } else {
        "upsample.conv."
    };
    let target = if dir == "down" {
        "downsamplers"
    } else {
        "upsamplers"
    };
    r.strip_prefix(sampler)
        .map(|x| format!("{part}.{blocks}.{bi}.{target}.0.conv.{x}"))
}
