//! Text-to-image and image-to-image generation: sampling of our UNet with any
//! [`Scheduler`] (DDIM by default) and classifier-free guidance (the unconditional branch is
//! the empty caption), VAE decoding, and PNG output with the caption and settings in text
//! chunks (A1111's `parameters` convention, written by `strata_image::write_png_with_text`).
//!
//! The text side plugs in through [`ConditioningSource`]: a fixed conditioning (flat prompt)
//! or segment encodings fused per timestep by the fusion module.

use crate::conditioning::Conditioning;
use crate::fusion::Fusion;
use crate::schedulers::{NoiseSource, Sampler, Scheduler, SchedulerConfig};
use crate::unet::UNet2DConditionModel;
use crate::vae::AutoencoderKL;
use candle_core::{DType, Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use std::path::Path;

/// The conditional and unconditional conditioning of a batch at a timestep.
pub trait ConditioningSource {
    /// `(conditional, unconditional)` for `batch` samples at timestep `t` (fractional for
    /// some samplers).
    fn at(&self, t: f64, batch: usize) -> Result<(Conditioning, Conditioning)>;
}

/// A conditioning that does not depend on the timestep (flat prompt encodings, or a fusion
/// evaluated once). Tensors have batch 1 and are repeated to the batch.
pub struct FixedConditioning {
    pub cond: Conditioning,
    pub uncond: Conditioning,
}

/// Segment encodings (1, 3, N, D) of the caption and of the empty caption, fused by `fusion`
/// with the weights w(t) of each step. `segments` may also hold B different captions
/// (B, 3, N, D) for a batch of B; a batch-1 tensor is repeated to the batch.
pub struct FusedSegments {
    pub segments: Tensor,
    pub uncond_segments: Tensor,
    pub fusion: Fusion,
}

fn repeat_cond(c: &Conditioning, b: usize) -> Result<Conditioning> {
    let rep = |t: &Tensor| -> Result<Tensor> {
        if t.dim(0)? == b {
            Ok(t.clone())
        } else if t.dim(0)? == 1 {
            let mut dims = vec![b];
            dims.extend(std::iter::repeat_n(1, t.rank() - 1));
            t.repeat(dims)
        } else {
            candle_core::bail!("conditioning batch {} cannot be repeated to {b}", t.dim(0)?)
        }
    };
    Ok(match c {
        Conditioning::Context(x) => Conditioning::Context(rep(x)?),
        Conditioning::Decoupled { segments, weights } => Conditioning::Decoupled {
            segments: rep(segments)?,
            weights: rep(weights)?,
        },
    })
}

impl ConditioningSource for FixedConditioning {
    fn at(&self, _t: f64, b: usize) -> Result<(Conditioning, Conditioning)> {
        Ok((repeat_cond(&self.cond, b)?, repeat_cond(&self.uncond, b)?))
    }
}

impl ConditioningSource for FusedSegments {
    fn at(&self, t: f64, b: usize) -> Result<(Conditioning, Conditioning)> {
        let ts = |x: &Tensor| -> Result<Vec<f64>> { Ok(vec![t; x.dim(0)?]) };
        let c = self
            .fusion
            .condition(&self.segments, &ts(&self.segments)?)?;
        let u = self
            .fusion
            .condition(&self.uncond_segments, &ts(&self.uncond_segments)?)?;
        Ok((repeat_cond(&c, b)?, repeat_cond(&u, b)?))
    }
}

/// Stacks two conditionings along the batch (`[uncond; cond]` for one CFG pass).
pub fn cat_conditioning(a: &Conditioning, b: &Conditioning) -> Result<Conditioning> {
    match (a, b) {
        (Conditioning::Context(x), Conditioning::Context(y)) => {
            if x.dim(1)? != y.dim(1)? {
                candle_core::bail!(
                    "conditional and unconditional contexts differ in length ({} vs {})",
                    x.dim(1)?,
                    y.dim(1)?
                )
            }
            Ok(Conditioning::Context(Tensor::cat(&[x, y], 0)?))
        }
        (
            Conditioning::Decoupled {
                segments: s1,
                weights: w1,
            },
            Conditioning::Decoupled {
                segments: s2,
                weights: w2,
            },
        ) => Ok(Conditioning::Decoupled {
            segments: Tensor::cat(&[s1, s2], 0)?,
            weights: Tensor::cat(&[w1, w2], 0)?,
        }),
        _ => candle_core::bail!(
            "conditional and unconditional branches use different conditioning kinds"
        ),
    }
}

/// Standard-normal noise from a seed (ChaCha8 + Box–Muller): same seed, same values on every
/// machine.
pub fn seeded_normal(shape: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let mut v = Vec::with_capacity(n + 1);
    while v.len() < n {
        let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
        let u2: f64 = rng.gen::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let a = std::f64::consts::TAU * u2;
        v.push((r * a.cos()) as f32);
        v.push((r * a.sin()) as f32);
    }
    v.truncate(n);
    Tensor::from_vec(v, shape, device)
}

/// The per-step noise of stochastic samplers: draw k (0, 1, ...) is [`seeded_normal`] with
/// a seed derived from `seed` and k, so a run is reproducible from its seed alone.
pub struct SeededNoise {
    seed: u64,
    draws: u64,
    device: Device,
}

impl SeededNoise {
    pub fn new(seed: u64, device: &Device) -> Self {
        Self {
            seed,
            draws: 0,
            device: device.clone(),
        }
    }
}

impl NoiseSource for SeededNoise {
    fn normal(&mut self, shape: &[usize]) -> Result<Tensor> {
        self.draws += 1;
        // splitmix64-style mixing keeps the streams of nearby seeds and draws apart
        let mut z = self
            .seed
            .wrapping_add(0x5354_4550_u64.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .wrapping_add(self.draws.wrapping_mul(0xBF58_476D_1CE4_E5B9));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        seeded_normal(shape, z ^ (z >> 31), &self.device)
    }
}

/// Sampling settings.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub steps: usize,
    pub guidance_scale: f64,
    pub seed: u64,
    pub batch: usize,
    pub width: usize,
    pub height: usize,
    /// img2img strength in (0, 1]; used only with an init image.
    pub strength: f64,
    /// The sampler (default DDIM, η = 0).
    pub sampler: Sampler,
    /// The model's noise schedule (its `scheduler/scheduler_config.json`; default SD-1.5's).
    pub scheduler: SchedulerConfig,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            steps: 30,
            guidance_scale: 7.0,
            seed: 0,
            batch: 1,
            width: 512,
            height: 512,
            strength: 0.7,
            sampler: Sampler::Ddim,
            scheduler: SchedulerConfig::sd15(),
        }
    }
}

/// UNet + VAE; the sampler comes with the options or is given.
pub struct Pipeline<'a> {
    pub unet: &'a UNet2DConditionModel,
    pub vae: &'a AutoencoderKL,
}

impl Pipeline<'_> {
    /// Generates `opts.batch` images (B, 3, H, W) in [0, 1] with `opts.sampler` on
    /// `opts.scheduler`'s noise schedule and `opts.steps` steps. `init` — images (1 or B, 3,
    /// H, W) in [−1, 1] — switches to img2img with `opts.strength`. `progress(i, n)` is
    /// called after each denoising step.
    pub fn generate(
        &self,
        cond: &dyn ConditioningSource,
        opts: &GenerateOptions,
        init: Option<&Tensor>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor> {
        let sched = opts.sampler.build(&opts.scheduler, opts.steps)?;
        self.generate_with(cond, opts, sched, init, progress)
    }

    /// As [`Pipeline::generate`] with the given scheduler (already set to its number of
    /// steps; `opts.sampler`, `opts.scheduler` and `opts.steps` are not used). Stochastic
    /// samplers draw their per-step noise from [`SeededNoise`] on `opts.seed`.
    pub fn generate_with(
        &self,
        cond: &dyn ConditioningSource,
        opts: &GenerateOptions,
        mut sched: Box<dyn Scheduler>,
        init: Option<&Tensor>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor> {
        let f = self.vae.config.downscale();
        if !opts.width.is_multiple_of(f)
            || !opts.height.is_multiple_of(f)
            || opts.width == 0
            || opts.height == 0
        {
            candle_core::bail!("width and height must be positive multiples of {f} (the VAE's downscale), got {}x{}", opts.width, opts.height)
        }
        if opts.batch == 0 {
            candle_core::bail!("batch must be at least 1")
        }
        let dtype = self.unet_dtype();
        let device = self.unet_device();
        let b = opts.batch;
        let lc = self.unet.config.in_channels;
        let shape = [b, lc, opts.height / f, opts.width / f];
        let noise = seeded_normal(&shape, opts.seed, &device)?.to_dtype(dtype)?;
        let (mut latents, timesteps) = match init {
            None => (
                (noise * sched.init_noise_sigma())?,
                sched.timesteps().to_vec(),
            ),
            Some(img) => {
                let (ib, _, ih, iw) = img.dims4()?;
                if ih != opts.height || iw != opts.width || (ib != 1 && ib != b) {
                    candle_core::bail!(
                        "init image is {iw}x{ih} (batch {ib}); expected {}x{} (batch 1 or {b})",
                        opts.width,
                        opts.height
                    )
                }
                let img = if ib == 1 && b > 1 {
                    img.repeat((b, 1, 1, 1))?
                } else {
                    img.clone()
                };
                let enc_noise_shape = [
                    b,
                    self.vae.config.latent_channels,
                    opts.height / f,
                    opts.width / f,
                ];
                let enc_noise = seeded_normal(&enc_noise_shape, opts.seed ^ 0x5EED_1A7E, &device)?
                    .to_dtype(dtype)?;
                let start = sched.img2img_begin(opts.strength)?;
                let z0 = self.vae.encode(&img.to_dtype(dtype)?, Some(&enc_noise))?;
                let ts = sched.timesteps()[start..].to_vec();
                (sched.add_noise_at_step(&z0, &noise, start)?, ts)
            }
        };
        let mut step_noise = SeededNoise::new(opts.seed ^ 0x57E9_0015_E5EE_D000, &device);
        let n = timesteps.len();
        let do_cfg = opts.guidance_scale != 1.0;
        for (i, &t) in timesteps.iter().enumerate() {
            let (c, u) = cond.at(t, b)?;
            let input = sched.scale_model_input(&latents, t)?;
            let eps = if do_cfg {
                let both = cat_conditioning(&u, &c)?;
                let x = Tensor::cat(&[&input, &input], 0)?;
                let out = self.unet.forward_t(&x, t, &both)?;
                let eu = out.narrow(0, 0, b)?;
                let ec = out.narrow(0, b, b)?;
                (&eu + ((ec - &eu)? * opts.guidance_scale)?)?
            } else {
                self.unet.forward_t(&input, t, &c)?
            };
            // Detached: when the UNet holds trainable variables (LoRA adapters are `Var`s),
            // every op records its inputs for backprop, and without this each step's latents
            // would keep the whole graph of all previous steps alive (memory grows with the
            // step count: 13 GB for 11 images x 10 steps at 64 px with a rank-8 LoRA).
            latents = sched.step(&eps, t, &latents, &mut step_noise)?.detach();
            progress(i + 1, n);
        }
        let img = self.vae.decode(&latents)?;
        ((img.to_dtype(DType::F32)? / 2.0)? + 0.5)?.clamp(0f32, 1f32)
    }

    fn unet_dtype(&self) -> DType {
        self.unet.dtype()
    }

    fn unet_device(&self) -> Device {
        self.unet.device()
    }
}

/// (B, 3, H, W) in [0, 1] → one RGB8 buffer per image.
pub fn to_rgb8(images: &Tensor) -> Result<Vec<Vec<u8>>> {
    let (b, c, _, _) = images.dims4()?;
    if c != 3 {
        candle_core::bail!("expected 3 channels, got {c}")
    }
    let x = (images.to_dtype(DType::F32)? * 255.0)?
        .round()?
        .clamp(0f32, 255f32)?
        .permute((0, 2, 3, 1))?
        .to_dtype(DType::U8)?;
    (0..b)
        .map(|i| x.get(i)?.flatten_all()?.to_vec1::<u8>())
        .collect()
}

/// Reads an image (PNG, JPEG, TIFF, WebP or BMP: [`strata_image::read_rgb8`]) into
/// (1, 3, H, W) in [−1, 1] ([`strata_image::RgbImage::to_chw_f32`]). The error names the
/// file and says what to do.
pub fn read_png_image(path: &Path, device: &Device) -> std::result::Result<Tensor, String> {
    let img = strata_image::read_rgb8(path).map_err(|e| strata_image::error_chain(&e))?;
    Tensor::from_vec(img.to_chw_f32(), (1, 3, img.height, img.width), device)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A1111-style `parameters` text: the prompt, then one settings line.
pub fn a1111_parameters(prompt: &str, settings: &[(&str, String)]) -> String {
    let line: Vec<String> = settings.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{prompt}\nNegative prompt: \n{}", line.join(", "))
}

/// Everything `strata generate` needs from a model path.
pub struct LoadedModel {
    pub models: crate::loading::DiffusionModels,
    pub text: crate::clip::ClipTextTransformer,
    pub tokenizer: crate::tokenizer::ClipTokenizer,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelLoadError {
    #[error(transparent)]
    Weights(#[from] crate::loading::LoadError),
    #[error(transparent)]
    Text(#[from] crate::clip::ClipError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error("{path}: {msg}")]
    Other {
        path: std::path::PathBuf,
        msg: String,
    },
}

/// Loads UNet, VAE, text encoder and tokenizer from a diffusers folder or a single-file
/// checkpoint. `configs`: for a single file that is not SD-1.5, a diffusers folder whose
/// `unet/config.json`, `vae/config.json` (and optionally `text_encoder/config.json`)
/// describe it. `tokenizer`: overrides the model's
/// `tokenizer/` (required for a single file, which carries none).
pub fn load_model(
    model: &Path,
    tokenizer: Option<&Path>,
    configs: Option<&Path>,
    dtype: DType,
    device: &Device,
) -> std::result::Result<LoadedModel, ModelLoadError> {
    use crate::loading::{self, LoadError, ModelSource};
    use crate::unet::UNetConfig;
    use crate::vae::VaeConfig;
    let src = ModelSource::detect(model)?;
    let (models, text) = match &src {
        ModelSource::Diffusers(dir) => {
            let m = loading::load_diffusers(dir, dtype, device, dtype != DType::F32)?;
            (m, crate::clip::load_text_encoder(dir, dtype, device)?)
        }
        ModelSource::SingleFile(file) => {
            let (u, v) = match configs {
                Some(d) => {
                    let read = |p: std::path::PathBuf| -> std::result::Result<serde_json::Value, ModelLoadError> {
                        let s = std::fs::read_to_string(&p).map_err(|e| ModelLoadError::Other { path: p.clone(), msg: e.to_string() })?;
                        serde_json::from_str(&s).map_err(|e| ModelLoadError::Other { path: p.clone(), msg: format!("invalid JSON: {e}") })
                    };
                    let up = d.join("unet/config.json");
                    let vp = d.join("vae/config.json");
                    let u = UNetConfig::from_diffusers_json(&read(up.clone())?).map_err(|msg| {
                        LoadError::Config {
                            path: up,
                            field: "unet".into(),
                            msg,
                        }
                    })?;
                    let v = VaeConfig::from_diffusers_json(&read(vp.clone())?).map_err(|msg| {
                        LoadError::Config {
                            path: vp,
                            field: "vae".into(),
                            msg,
                        }
                    })?;
                    (u, v)
                }
                None => (UNetConfig::sd15(), VaeConfig::sd15()),
            };
            let m = loading::load_single_file(file, u, v, dtype, device)?;
            // the text encoder's shape is inferred from its tensors unless the config folder
            // has a text_encoder/config.json
            let tcfg = match configs.map(|d| d.join("text_encoder/config.json")) {
                Some(p) if p.is_file() => {
                    let s = std::fs::read_to_string(&p).map_err(|e| ModelLoadError::Other {
                        path: p.clone(),
                        msg: e.to_string(),
                    })?;
                    Some(
                        serde_json::from_str::<crate::clip::ClipTextConfig>(&s).map_err(|e| {
                            ModelLoadError::Other {
                                path: p.clone(),
                                msg: format!("not a CLIP text config: {e}"),
                            }
                        })?,
                    )
                }
                _ => None,
            };
            (
                m,
                crate::clip::text_encoder_from_safetensors(file, tcfg.as_ref(), dtype, device)?,
            )
        }
    };
    let tok_path = match (tokenizer, &src) {
        (Some(p), _) => p.to_path_buf(),
        (None, ModelSource::Diffusers(dir)) => dir.clone(),
        (None, ModelSource::SingleFile(f)) => {
            return Err(ModelLoadError::Other {
                path: f.clone(),
                msg: "a single-file checkpoint carries no tokenizer; pass one (the CLIP BPE file bpe_simple_vocab_16e6.txt.gz or a folder with vocab.json + merges.txt)".into(),
            })
        }
    };
    let tokenizer = crate::tokenizer::ClipTokenizer::load(&tok_path)?;
    Ok(LoadedModel {
        models,
        text,
        tokenizer,
    })
}
