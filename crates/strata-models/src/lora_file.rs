//! LoRA files: export in the kohya / A1111 / ComfyUI key layout
//! (`lora_unet_<module path, dots as underscores>.lora_down.weight` = A,
//! `.lora_up.weight` = B, `.alpha`; text-encoder adapters as `lora_te_<path>`), and import
//! from that layout or the diffusers / PEFT one
//! (`<path>.lora_A.weight` / `.lora_B.weight`, optionally prefixed `unet.` or
//! `base_model.model.`; also diffusers' older `<path>.lora.down.weight` / `.lora.up.weight`).
//!
//! 1×1-convolution projections (SD-1.5's `proj_in` / `proj_out`) are written with
//! `(out, in, 1, 1)`-shaped kernels as kohya does; import accepts both shapes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::clip::ClipTextTransformer;
use crate::error::{ModelError, Result};
use crate::lora::{self, LoraAdapter, VisitLinears};
use crate::unet::UNet2DConditionModel;
use candle_core::{DType, Device, Tensor, Var};

/// kohya's name of a diffusers module path.
pub fn kohya_name(path: &str) -> String {
    format!("lora_unet_{}", path.replace('.', "_"))
}

/// kohya's name of a text-encoder module path
/// (`text_model.encoder.layers.0.self_attn.q_proj` → `lora_te_text_model_encoder_layers_0_self_attn_q_proj`).
pub fn kohya_te_name(path: &str) -> String {
    format!("lora_te_{}", path.replace('.', "_"))
}

/// Exports every adapter of `unet` with `metadata` (string map stored in the safetensors
/// header). Written atomically.
pub fn export_kohya(
    unet: &UNet2DConditionModel,
    path: &Path,
    metadata: HashMap<String, String>,
) -> Result<usize> {
    export_kohya_with_text(unet, None, path, metadata)
}

/// kohya tensors (`.lora_down.weight`, `.lora_up.weight`, `.alpha`) of every adapter of
/// `model`, named by `name`.
fn kohya_tensors<M: VisitLinears + ?Sized>(
    model: &M,
    name: fn(&str) -> String,
    tensors: &mut HashMap<String, Tensor>,
) -> Result<usize> {
    let mut conv = HashMap::new();
    model.visit_linears(&mut |l| {
        conv.insert(l.path.clone(), l.conv1x1);
    });
    let ads = lora::adapters(model);
    for (p, a) in &ads {
        let name = name(p);
        let (mut down, mut up) = (
            a.a.as_tensor().to_dtype(DType::F32),
            a.b.as_tensor().to_dtype(DType::F32),
        );
        if conv.get(p).copied().unwrap_or(false) {
            down = down.and_then(|t| t.unsqueeze(2)?.unsqueeze(3));
            up = up.and_then(|t| t.unsqueeze(2)?.unsqueeze(3));
        }
        let err = |e| ModelError::Candle {
            what: format!("exporting {p}"),
            source: e,
        };
        tensors.insert(format!("{name}.lora_down.weight"), down.map_err(err)?);
        tensors.insert(format!("{name}.lora_up.weight"), up.map_err(err)?);
        tensors.insert(
            format!("{name}.alpha"),
            Tensor::new(a.alpha as f32, &Device::Cpu).map_err(|e| ModelError::Candle {
                what: "alpha".into(),
                source: e,
            })?,
        );
    }
    Ok(ads.len())
}

/// Exports the adapters of `unet` (`lora_unet_…`) and, when given, of the text encoder
/// (`lora_te_…`) into one kohya file with `metadata`. Written atomically. Returns the number
/// of adapters written.
pub fn export_kohya_with_text(
    unet: &UNet2DConditionModel,
    text: Option<&ClipTextTransformer>,
    path: &Path,
    metadata: HashMap<String, String>,
) -> Result<usize> {
    let mut tensors = HashMap::new();
    let mut n = kohya_tensors(unet, kohya_name, &mut tensors)?;
    if let Some(t) = text {
        n += kohya_tensors(t, kohya_te_name, &mut tensors)?;
    }
    crate::safetensors_io::save(path, &tensors, Some(metadata))?;
    Ok(n)
}

/// A, B and alpha of one module as they are found.
type Parts = (Option<Tensor>, Option<Tensor>, Option<f64>);

/// One adapter read from a file.
#[derive(Debug, Clone)]
pub struct ImportedAdapter {
    pub path: String,
    pub a: Tensor,
    pub b: Tensor,
    pub alpha: f64,
}

/// Which layout a file used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraLayout {
    Kohya,
    Peft,
}

/// A LoRA file's adapters (by diffusers module path of `unet`) and header metadata.
pub struct ImportedLora {
    pub layout: LoraLayout,
    pub adapters: Vec<ImportedAdapter>,
    /// Text-encoder adapters, by transformers module path
    /// (`text_model.encoder.layers.N.self_attn.q_proj`); empty unless read by
    /// [`import_with_text`].
    pub text_adapters: Vec<ImportedAdapter>,
    pub metadata: HashMap<String, String>,
}

fn to2(t: &Tensor) -> candle_core::Result<Tensor> {
    match t.rank() {
        2 => Ok(t.clone()),
        4 if t.dim(2)? == 1 && t.dim(3)? == 1 => t.reshape((t.dim(0)?, t.dim(1)?)),
        _ => candle_core::bail!(
            "expected a matrix or a 1×1 kernel, got shape {:?}",
            t.dims()
        ),
    }
}

/// Reads a LoRA file in the kohya or PEFT layout. Module names are resolved against `unet`'s
/// projections; a key naming no projection (e.g. a text-encoder `lora_te_` key) is an error
/// listing it, so nothing is dropped silently. [`import_with_text`] also reads text-encoder
/// adapters.
pub fn import(unet: &UNet2DConditionModel, path: &Path, device: &Device) -> Result<ImportedLora> {
    import_with_text(unet, None, path, device)
}

/// Which model an adapter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Owner {
    Unet,
    Text,
}

/// Reads a LoRA file in the kohya or PEFT layout with UNet and, when `text` is given,
/// text-encoder adapters: kohya `lora_te_text_model_encoder_layers_N_{self_attn_{q,k,v,out}_proj,
/// mlp_fc1, mlp_fc2}` keys, and PEFT / diffusers `text_encoder.<path>.lora_A.weight` (or a bare
/// `text_model.…` path). A key naming no projection of either model is an error listing it.
/// A LoRA tensor must hold floating-point numbers, all finite: integer tensors are another
/// file's data, and one NaN or infinity would turn every generated image black.
fn check_weights(t: &Tensor) -> std::result::Result<(), String> {
    if !t.dtype().is_float() {
        return Err(format!(
            "is a {:?} tensor; LoRA weights are floating point (F16, BF16 or F32): the file is not a LoRA or is damaged",
            t.dtype()
        ));
    }
    let v = t
        .to_dtype(DType::F32)
        .and_then(|x| x.flatten_all()?.to_vec1::<f32>())
        .map_err(|e| e.to_string())?;
    if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
        return Err(format!(
            "holds {bad} (not a finite number); the training run that wrote it diverged: use an earlier checkpoint"
        ));
    }
    Ok(())
}

pub fn import_with_text(
    unet: &UNet2DConditionModel,
    text: Option<&ClipTextTransformer>,
    path: &Path,
    device: &Device,
) -> Result<ImportedLora> {
    let (tensors, metadata) = crate::safetensors_io::load(path, device)?;
    let bad = |what: String| ModelError::Lora {
        path: path.to_path_buf(),
        what,
    };
    let unet_paths = unet.projection_paths();
    let text_paths = text.map(|t| t.projection_paths()).unwrap_or_default();
    let mut kohya_to_path: HashMap<String, (Owner, String)> = unet_paths
        .iter()
        .map(|p| (kohya_name(p), (Owner::Unet, p.clone())))
        .collect();
    kohya_to_path.extend(
        text_paths
            .iter()
            .map(|p| (kohya_te_name(p), (Owner::Text, p.clone()))),
    );
    let known_unet: std::collections::HashSet<&str> =
        unet_paths.iter().map(String::as_str).collect();
    let known_text: std::collections::HashSet<&str> =
        text_paths.iter().map(String::as_str).collect();
    let kohya = tensors.keys().any(|k| {
        k.contains(".lora_down.") || k.starts_with("lora_unet_") || k.starts_with("lora_te_")
    });
    // (owner, path) → (A, B, alpha)
    let mut parts: BTreeMap<(Owner, String), Parts> = BTreeMap::new();
    let mut unknown = vec![];
    for (k, t) in &tensors {
        let (module, role) = if kohya {
            let (m, r) = if let Some(m) = k.strip_suffix(".lora_down.weight") {
                (m, 'a')
            } else if let Some(m) = k.strip_suffix(".lora_up.weight") {
                (m, 'b')
            } else if let Some(m) = k.strip_suffix(".alpha") {
                (m, 'α')
            } else {
                unknown.push(k.clone());
                continue;
            };
            match kohya_to_path.get(m) {
                Some(p) => (p.clone(), r),
                None => {
                    unknown.push(k.clone());
                    continue;
                }
            }
        } else {
            let s = k.strip_prefix("base_model.model.").unwrap_or(k);
            let (m, r) = if let Some(m) = s
                .strip_suffix(".lora_A.weight")
                .or_else(|| s.strip_suffix(".lora.down.weight"))
            {
                (m, 'a')
            } else if let Some(m) = s
                .strip_suffix(".lora_B.weight")
                .or_else(|| s.strip_suffix(".lora.up.weight"))
            {
                (m, 'b')
            } else if let Some(m) = s.strip_suffix(".alpha") {
                (m, 'α')
            } else {
                unknown.push(k.clone());
                continue;
            };
            let te = m.strip_prefix("text_encoder.").unwrap_or(m);
            // transformers 5 names CLIPTextModel's modules without the `text_model.` level
            let te_full = format!("text_model.{te}");
            let un = m.strip_prefix("unet.").unwrap_or(m);
            if !m.starts_with("text_encoder.") && known_unet.contains(un) {
                ((Owner::Unet, un.to_string()), r)
            } else if !m.starts_with("unet.") && known_text.contains(te) {
                ((Owner::Text, te.to_string()), r)
            } else if !m.starts_with("unet.") && known_text.contains(te_full.as_str()) {
                ((Owner::Text, te_full), r)
            } else {
                unknown.push(k.clone());
                continue;
            }
        };
        check_weights(t).map_err(|w| bad(format!("{k}: {w}")))?;
        let e = parts.entry(module).or_default();
        match role {
            'a' => e.0 = Some(to2(t).map_err(|e| bad(format!("{k}: {e}")))?),
            'b' => e.1 = Some(to2(t).map_err(|e| bad(format!("{k}: {e}")))?),
            _ => {
                let v = t
                    .to_dtype(DType::F64)
                    .and_then(|x| x.flatten_all()?.to_vec1::<f64>())
                    .map_err(|e| bad(format!("{k}: {e}")))?;
                e.2 = v.first().copied();
            }
        }
    }
    if !unknown.is_empty() {
        unknown.sort();
        let which = if text.is_some() {
            "UNet or text-encoder projection"
        } else {
            "UNet projection (text-encoder keys are read only where the text encoder is loaded too)"
        };
        return Err(bad(format!(
            "{} key(s) name no {which} of this model: {}",
            unknown.len(),
            unknown
                .iter()
                .take(8)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if parts.is_empty() {
        return Err(bad(
            "no LoRA tensors (expected lora_unet_* / lora_te_* .lora_down/up.weight or *.lora_A/B.weight keys)"
                .into(),
        ));
    }
    let mut adapters = vec![];
    let mut text_adapters = vec![];
    for ((owner, p), (a, b, alpha)) in parts {
        let a = a.ok_or_else(|| bad(format!("{p}: down/A matrix missing")))?;
        let b = b.ok_or_else(|| bad(format!("{p}: up/B matrix missing")))?;
        let rank = a.dim(0).unwrap_or(0);
        // PEFT files carry no alpha: their scale is lora_alpha / r from adapter_config.json;
        // without it the neutral choice is alpha = r (scale 1).
        let alpha = alpha.unwrap_or(rank as f64);
        let ad = ImportedAdapter {
            path: p,
            a,
            b,
            alpha,
        };
        match owner {
            Owner::Unet => adapters.push(ad),
            Owner::Text => text_adapters.push(ad),
        }
    }
    Ok(ImportedLora {
        layout: if kohya {
            LoraLayout::Kohya
        } else {
            LoraLayout::Peft
        },
        adapters,
        text_adapters,
        metadata,
    })
}

/// Installs `adapters` on `model` (in `dtype`) with inference multiplier `multiplier`.
fn install_on<M: VisitLinears + ?Sized>(
    model: &mut M,
    adapters: &[ImportedAdapter],
    dtype: DType,
    multiplier: f64,
) -> Result<()> {
    for ad in adapters {
        let err = |e: candle_core::Error| ModelError::Candle {
            what: format!("installing LoRA {}", ad.path),
            source: e,
        };
        let a = Var::from_tensor(&ad.a.to_dtype(dtype).map_err(err)?).map_err(err)?;
        let b = Var::from_tensor(&ad.b.to_dtype(dtype).map_err(err)?).map_err(err)?;
        lora::install(
            model,
            &ad.path,
            LoraAdapter {
                a,
                b,
                alpha: ad.alpha,
                multiplier,
            },
        )
        .map_err(err)?;
    }
    Ok(())
}

/// Installs the imported text-encoder adapters on `text` (in the dtype of its weights), with
/// inference multiplier `multiplier`.
pub fn install_text(
    text: &mut ClipTextTransformer,
    lora: &ImportedLora,
    multiplier: f64,
) -> Result<()> {
    let dtype = text.token_embedding.weight.dtype();
    install_on(text, &lora.text_adapters, dtype, multiplier)
}

/// Installs imported adapters on `unet` (in the UNet's dtype), with inference multiplier
/// `multiplier`.
pub fn install(
    unet: &mut UNet2DConditionModel,
    lora: &ImportedLora,
    multiplier: f64,
) -> Result<()> {
    let dtype = unet.dtype();
    install_on(unet, &lora.adapters, dtype, multiplier)
}

/// Writes the same adapters in the PEFT layout (`<path>.lora_A.weight`, `.lora_B.weight`),
/// scale folded into B so a loader without alpha reproduces the outputs.
pub fn export_peft(unet: &UNet2DConditionModel, path: &Path) -> Result<usize> {
    let mut tensors = HashMap::new();
    let ads = lora::adapters(unet);
    for (p, a) in &ads {
        let err = |e| ModelError::Candle {
            what: format!("exporting {p}"),
            source: e,
        };
        let scale = a.alpha / a.rank() as f64;
        tensors.insert(
            format!("unet.{p}.lora_A.weight"),
            a.a.as_tensor().to_dtype(DType::F32).map_err(err)?,
        );
        tensors.insert(
            format!("unet.{p}.lora_B.weight"),
            (a.b.as_tensor().to_dtype(DType::F32).map_err(err)? * scale).map_err(err)?,
        );
    }
    crate::safetensors_io::save(path, &tensors, None)?;
    Ok(ads.len())
}
