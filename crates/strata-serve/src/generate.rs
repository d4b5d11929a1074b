//! The one adapter between the server and the generation pipeline. Everything that touches
//! `strata_models` (loading, LoRA, textual-inversion embeddings, sampling) is here, so a
//! change of the pipeline's API is absorbed in this file alone.
//!
//! Sampling is `Pipeline::generate_with` itself. The page also needs to stop a job between
//! two steps and to see the latents for a preview, which the pipeline's progress callback
//! does not give; two thin wrappers do it without touching the loop: a conditioning source
//! that refuses to start the next step once the job is cancelled, and a scheduler that
//! keeps a copy of the latents each step returns. The test `wrappers_leave_pixels_unchanged`
//! checks that the result is the pipeline's, pixel for pixel.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use strata_models::conditioning::Conditioning;
use strata_models::pipeline::{
    self, ConditioningSource, FixedConditioning, GenerateOptions, LoadedModel, Pipeline,
};
use strata_models::schedulers::{
    self as sched, NoiseSchedule, NoiseSource, PredictionType, Sampler, Scheduler,
};
use strata_models::segments::{encode_flat, SegmentTexts};

/// The text of a request: hierarchical segments or one flat prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Segments {
        scene: String,
        relation: String,
        elements: Vec<String>,
    },
    Flat(String),
}

impl Prompt {
    /// The prompt line of the A1111 parameters text.
    pub fn text(&self) -> String {
        match self {
            Prompt::Segments {
                scene,
                relation,
                elements,
            } => SegmentTexts::new(scene, relation, elements).joined(),
            Prompt::Flat(p) => p.clone(),
        }
    }
}

/// One generation, already validated by the server.
#[derive(Debug, Clone)]
pub struct GenRequest {
    /// A diffusers folder or a single-file checkpoint.
    pub model: PathBuf,
    /// Tokenizer for a single-file checkpoint (a diffusers folder brings its own).
    pub tokenizer: Option<PathBuf>,
    pub lora: Option<(PathBuf, f64)>,
    /// Textual-inversion embeddings; the file stem is the trigger word.
    pub embeddings: Vec<PathBuf>,
    pub prompt: Prompt,
    pub steps: usize,
    pub cfg: f64,
    pub seed: u64,
    pub batch: usize,
    pub width: usize,
    pub height: usize,
    /// img2img: a PNG (any size; resized to width × height) and its strength.
    pub init_png: Option<Vec<u8>>,
    pub strength: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Failed(String),
}

fn fail(what: &str) -> impl Fn(candle_core::Error) -> GenError + '_ {
    move |e| GenError::Failed(format!("{what}: {e}"))
}

/// Called after each denoising step: (step, total, preview RGB8 of the first image, if one
/// was decoded for this step).
pub type StepFn<'a> = dyn FnMut(usize, usize, Option<Vec<u8>>) + 'a;

/// Holds the last loaded model (with its LoRA) so that consecutive jobs on the same model do
/// not reload it.
#[derive(Default)]
pub struct Engine {
    cache: Option<(PathBuf, Option<PathBuf>, LoadedModel)>,
}

/// The image side a diffusers folder was trained at (`vae/config.json` `sample_size`).
pub fn native_side(model: &Path) -> Option<usize> {
    std::fs::read_to_string(model.join("vae").join("config.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.get("sample_size")?.as_u64())
        .map(|n| n as usize)
        .filter(|&n| n >= 8)
}

/// What a `.safetensors` file under `--models` holds, judged from its tensor names (the
/// header only is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Checkpoint,
    Lora,
    Embedding,
}

pub fn classify_safetensors(path: &Path) -> Option<FileKind> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut n = [0u8; 8];
    f.read_exact(&mut n).ok()?;
    let n = u64::from_le_bytes(n);
    if n > 100 * 1024 * 1024 {
        return None;
    }
    let mut h = vec![0u8; n as usize];
    f.read_exact(&mut h).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&h).ok()?;
    let keys: Vec<&String> = v
        .as_object()?
        .keys()
        .filter(|k| *k != "__metadata__")
        .collect();
    // empty, or a learned fusion schedule (the sidecar of a LoRA, read with it)
    if keys.is_empty()
        || keys
            .iter()
            .all(|k| k.starts_with(strata_models::fusion::LEARNED_PREFIX))
    {
        return None;
    }
    if keys
        .iter()
        .any(|k| *k == "emb_params" || k.starts_with("string_to_param"))
        || (keys.len() == 1 && !keys[0].contains('.'))
    {
        return Some(FileKind::Embedding);
    }
    if keys
        .iter()
        .any(|k| k.contains("lora_down") || k.contains("lora_A") || k.contains("lora_up"))
    {
        return Some(FileKind::Lora);
    }
    Some(FileKind::Checkpoint)
}

impl Engine {
    fn load(&mut self, req: &GenRequest, dev: &Device) -> Result<&mut LoadedModel, GenError> {
        let lora_path = req.lora.as_ref().map(|(p, _)| p.clone());
        let hit = matches!(&self.cache, Some((m, l, _)) if *m == req.model && *l == lora_path);
        if !hit {
            self.cache = None;
            let mut loaded = pipeline::load_model(
                &req.model,
                req.tokenizer.as_deref(),
                None,
                DType::F32,
                dev,
            )
            .map_err(|e| GenError::Failed(format!("loading {}: {e}", req.model.display())))?;
            if let Some((path, scale)) = &req.lora {
                // UNet and text-encoder adapters (kohya lora_te_*, diffusers text_encoder.*)
                let imported = strata_models::lora_file::import_with_text(
                    &loaded.models.unet,
                    Some(&loaded.text),
                    path,
                    dev,
                )
                .map_err(|e| GenError::Failed(format!("LoRA {}: {e}", path.display())))?;
                strata_models::lora_file::install(&mut loaded.models.unet, &imported, *scale)
                    .map_err(|e| GenError::Failed(format!("LoRA {}: {e}", path.display())))?;
                strata_models::lora_file::install_text(&mut loaded.text, &imported, *scale)
                    .map_err(|e| GenError::Failed(format!("LoRA {}: {e}", path.display())))?;
            }
            self.cache = Some((req.model.clone(), lora_path, loaded));
        }
        let loaded = &mut self.cache.as_mut().expect("just loaded").2;
        let scale = req.lora.as_ref().map(|(_, s)| *s).unwrap_or(1.0);
        strata_models::lora::set_multiplier(&mut loaded.models.unet, scale);
        strata_models::lora::set_multiplier(&mut loaded.text, scale);
        Ok(loaded)
    }

    /// Generates `req.batch` images (RGB8, width × height each). `cancel` is checked before
    /// every denoising step; `on_step` gets the progress and, now and then, a preview.
    pub fn generate(
        &mut self,
        req: &GenRequest,
        cancel: &AtomicBool,
        on_step: &mut StepFn<'_>,
    ) -> Result<Vec<Vec<u8>>, GenError> {
        let dev = Device::Cpu;
        let loaded = self.load(req, &dev)?;
        // textual-inversion rows: each embedding's vectors become added tokens
        // added tokens live in the tokenizer: a fresh copy per job that uses embeddings
        let mut fresh = None;
        if !req.embeddings.is_empty() {
            let tok_path = req.tokenizer.clone().unwrap_or_else(|| req.model.clone());
            fresh = Some(
                strata_models::tokenizer::ClipTokenizer::load(&tok_path)
                    .map_err(|e| GenError::Failed(format!("tokenizer: {e}")))?,
            );
        }
        let mut rows: Vec<Tensor> = vec![];
        let mut replace: Vec<(String, String)> = vec![];
        for p in &req.embeddings {
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            let t = load_embedding(p, &dev)?;
            let n = t.dim(0).map_err(fail("embedding"))?;
            let mut expanded = vec![];
            for j in 0..n {
                let token = if j == 0 {
                    format!("<{name}>")
                } else {
                    format!("<{name}#{j}>")
                };
                fresh.as_mut().expect("loaded above").add_token(&token);
                expanded.push(token);
            }
            replace.push((name, expanded.join(" ")));
            rows.push(t);
        }
        let extra = if rows.is_empty() {
            None
        } else {
            Some(Tensor::cat(&rows, 0).map_err(fail("embeddings"))?)
        };
        let tok = fresh.as_ref().unwrap_or(&loaded.tokenizer);
        loaded
            .text
            .set_extra_tokens(extra)
            .map_err(|e| GenError::Failed(format!("embeddings: {e}")))?;
        let sub = |s: &str| -> String {
            let mut out = s.to_string();
            for (name, with) in &replace {
                out = replace_word(&out, name, with);
            }
            out
        };
        let source: Box<dyn ConditioningSource> = match &req.prompt {
            Prompt::Flat(p) => {
                let c = encode_flat(&loaded.text, tok, &[sub(p).as_str()])
                    .map_err(|e| GenError::Failed(format!("encoding the prompt: {e}")))?;
                let u = encode_flat(&loaded.text, tok, &[""])
                    .map_err(|e| GenError::Failed(format!("encoding the prompt: {e}")))?;
                Box::new(FixedConditioning {
                    cond: Conditioning::Context(c),
                    uncond: Conditioning::Context(u),
                })
            }
            Prompt::Segments {
                scene,
                relation,
                elements,
            } => {
                let el: Vec<String> = elements.iter().map(|e| sub(e)).collect();
                let texts = SegmentTexts::new(&sub(scene), &sub(relation), &el);
                // caption mode and fusion as the LoRA (else the model folder) records them
                let applied = strata_models::fusion::record::resolve(
                    req.lora.as_ref().map(|(p, _)| p.as_path()),
                    Some(req.model.as_path()),
                    &Default::default(),
                    &dev,
                )
                .map_err(|e| GenError::Failed(format!("fusion: {e}")))?;
                strata_models::fusion::record::conditioning_source(
                    &applied.record,
                    &loaded.text,
                    tok,
                    // embeddings are already in `tok` (their tokens added above)
                    &Default::default(),
                    &[strata_models::fusion::record::CaptionText::segments(texts)],
                )
                .map_err(|e| GenError::Failed(format!("encoding the caption: {e}")))?
            }
        };
        let init = match &req.init_png {
            Some(png) => Some(decode_image_resized(png, req.width, req.height, &dev)?),
            None => None,
        };
        let scheduler = if req.model.is_dir() {
            sched::read_model_scheduler_config(&req.model)
                .map_err(|e| GenError::Failed(format!("{}: {e}", req.model.display())))?
                .unwrap_or_default()
        } else {
            sched::SchedulerConfig::sd15()
        };
        let opts = GenerateOptions {
            steps: req.steps,
            guidance_scale: req.cfg,
            seed: req.seed,
            batch: req.batch,
            width: req.width,
            height: req.height,
            strength: req.strength,
            sampler: Sampler::Ddim,
            scheduler,
        };
        let images = run(
            &loaded.models.unet,
            &loaded.models.vae,
            source.as_ref(),
            &opts,
            init.as_ref(),
            cancel,
            on_step,
        )?;
        pipeline::to_rgb8(&images).map_err(fail("converting the images"))
    }
}

/// Replaces whole-word occurrences of `word` in `s`.
fn replace_word(s: &str, word: &str, with: &str) -> String {
    if word.is_empty() {
        return s.to_string();
    }
    let is_w = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(word) {
        let before = rest[..i].chars().last();
        let after = rest[i + word.len()..].chars().next();
        out.push_str(&rest[..i]);
        if before.is_some_and(is_w) || after.is_some_and(is_w) {
            out.push_str(word);
        } else {
            out.push_str(with);
        }
        rest = &rest[i + word.len()..];
    }
    out.push_str(rest);
    out
}

fn load_embedding(p: &Path, dev: &Device) -> Result<Tensor, GenError> {
    let map = candle_core::safetensors::load(p, dev)
        .map_err(|e| GenError::Failed(format!("embedding {}: {e}", p.display())))?;
    let t = map
        .get("emb_params")
        .or_else(|| {
            if map.len() == 1 {
                map.values().next()
            } else {
                None
            }
        })
        .ok_or_else(|| {
            GenError::Failed(format!(
                "embedding {}: no `emb_params` tensor (the layout `strata train --method textual-inversion` and A1111 write)",
                p.display()
            ))
        })?;
    let t = t.to_dtype(DType::F32).map_err(fail("embedding"))?;
    match t.rank() {
        2 => Ok(t),
        1 => t.unsqueeze(0).map_err(fail("embedding")),
        r => Err(GenError::Failed(format!(
            "embedding {}: a tensor of rank {r}; expected (vectors, width)",
            p.display()
        ))),
    }
}

/// Decodes an uploaded image and resizes it to `w` × `h` (Pillow's bilinear filter, as
/// `strata_image::resize`): (1, 3, h, w) in [−1, 1].
pub fn decode_image_resized(
    bytes: &[u8],
    w: usize,
    h: usize,
    dev: &Device,
) -> Result<Tensor, GenError> {
    let (sw, sh, rgb) = decode_image_rgb(bytes).map_err(GenError::Failed)?;
    let img = strata_image::RgbImage {
        width: sw,
        height: sh,
        data: rgb,
    };
    let img = strata_image::resize(&img, w, h, strata_image::Filter::Bilinear);
    Tensor::from_vec(img.to_chw_f32(), (1, 3, h, w), dev).map_err(fail("init image"))
}

/// Largest side of an uploaded image.
pub const MAX_UPLOAD_SIDE: usize = 4096;

/// Decodes an uploaded image (PNG, or any format strata-image reads) into RGB8; at most
/// [`MAX_UPLOAD_SIDE`] on each side, checked from the header before decoding.
pub fn decode_image_rgb(bytes: &[u8]) -> Result<(usize, usize, Vec<u8>), String> {
    let limits = strata_image::Limits {
        max_pixels: (MAX_UPLOAD_SIDE * MAX_UPLOAD_SIDE) as u64,
    };
    let img =
        strata_image::decode_rgb8(std::path::Path::new("upload"), bytes, &limits).map_err(|e| {
            match e {
                strata_image::ImageError::TooLarge { width, height, .. } => format!(
                    "the image is {width}x{height}; at most {MAX_UPLOAD_SIDE}x{MAX_UPLOAD_SIDE}"
                ),
                e => strata_image::error_chain(&e),
            }
        })?;
    if img.width > MAX_UPLOAD_SIDE || img.height > MAX_UPLOAD_SIDE {
        return Err(format!(
            "the image is {}x{}; at most {MAX_UPLOAD_SIDE}x{MAX_UPLOAD_SIDE}",
            img.width, img.height
        ));
    }
    Ok((img.width, img.height, img.data))
}

/// Latent pixels a job may have: self-attention memory grows with their square.
pub const MAX_LATENT_TOKENS: usize = 128 * 128;

/// Refuses to start another step once the job is cancelled (`at` is called before each
/// step's UNet pass).
struct CancelCheck<'a> {
    inner: &'a dyn ConditioningSource,
    cancel: &'a AtomicBool,
}

impl ConditioningSource for CancelCheck<'_> {
    fn at(&self, t: f64, batch: usize) -> candle_core::Result<(Conditioning, Conditioning)> {
        if self.cancel.load(Ordering::SeqCst) {
            candle_core::bail!("cancelled")
        }
        self.inner.at(t, batch)
    }
}

/// A scheduler that keeps the latents of the last step (for previews); everything else is
/// the wrapped scheduler's.
struct Keep {
    inner: Box<dyn Scheduler>,
    last: Arc<Mutex<Option<Tensor>>>,
}

impl Scheduler for Keep {
    fn class_name(&self) -> &'static str {
        self.inner.class_name()
    }
    fn schedule(&self) -> &NoiseSchedule {
        self.inner.schedule()
    }
    fn prediction_type(&self) -> PredictionType {
        self.inner.prediction_type()
    }
    fn set_timesteps(&mut self, n: usize) -> candle_core::Result<()> {
        self.inner.set_timesteps(n)
    }
    fn timesteps(&self) -> &[f64] {
        self.inner.timesteps()
    }
    fn sigmas(&self) -> &[f64] {
        self.inner.sigmas()
    }
    fn init_noise_sigma(&self) -> f64 {
        self.inner.init_noise_sigma()
    }
    fn scale_model_input(&self, sample: &Tensor, t: f64) -> candle_core::Result<Tensor> {
        self.inner.scale_model_input(sample, t)
    }
    fn step(
        &mut self,
        model_output: &Tensor,
        t: f64,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> candle_core::Result<Tensor> {
        let x = self.inner.step(model_output, t, sample, noise)?;
        if let Ok(mut g) = self.last.lock() {
            *g = Some(x.clone());
        }
        Ok(x)
    }
    fn set_begin_index(&mut self, index: usize) {
        self.inner.set_begin_index(index)
    }
    fn add_noise_at_step(
        &self,
        x0: &Tensor,
        noise: &Tensor,
        index: usize,
    ) -> candle_core::Result<Tensor> {
        self.inner.add_noise_at_step(x0, noise, index)
    }
    fn img2img_begin(&mut self, strength: f64) -> candle_core::Result<usize> {
        self.inner.img2img_begin(strength)
    }
    fn add_noise(
        &self,
        x0: &Tensor,
        noise: &Tensor,
        timesteps: &[usize],
    ) -> candle_core::Result<Tensor> {
        self.inner.add_noise(x0, noise, timesteps)
    }
    fn training_target(
        &self,
        x0: &Tensor,
        noise: &Tensor,
        timesteps: &[usize],
    ) -> candle_core::Result<Tensor> {
        self.inner.training_target(x0, noise, timesteps)
    }
}

/// `Pipeline::generate_with` with the cancel check and previews.
fn run(
    unet: &strata_models::unet::UNet2DConditionModel,
    vae: &strata_models::vae::AutoencoderKL,
    cond: &dyn ConditioningSource,
    opts: &GenerateOptions,
    init: Option<&Tensor>,
    cancel: &AtomicBool,
    on_step: &mut StepFn<'_>,
) -> Result<Tensor, GenError> {
    let f = vae.config.downscale();
    if !opts.width.is_multiple_of(f)
        || !opts.height.is_multiple_of(f)
        || opts.width == 0
        || opts.height == 0
    {
        return Err(GenError::Failed(format!(
            "width and height must be positive multiples of {f} for this model (its VAE's downscale), got {}x{}",
            opts.width, opts.height
        )));
    }
    let tokens = (opts.height / f) * (opts.width / f);
    if tokens > MAX_LATENT_TOKENS {
        return Err(GenError::Failed(format!(
            "{}x{} gives {}x{} latents for this model (VAE downscale {f}); at most {MAX_LATENT_TOKENS} latent pixels (e.g. 128x128): choose a smaller size",
            opts.width, opts.height, opts.width / f, opts.height / f
        )));
    }
    let last = Arc::new(Mutex::new(None));
    let inner = opts
        .sampler
        .build(&opts.scheduler, opts.steps)
        .map_err(fail("the sampler"))?;
    let sched = Box::new(Keep {
        inner,
        last: last.clone(),
    });
    let checked = CancelCheck {
        inner: cond,
        cancel,
    };
    // a preview costs one VAE decode of one image: every step for small latents, else about
    // ten per run
    let every = if tokens <= 32 * 32 {
        1
    } else {
        opts.steps.div_ceil(10).max(1)
    };
    let pipe = Pipeline { unet, vae };
    let r = pipe.generate_with(&checked, opts, sched, init, &mut |i, n| {
        let preview = if i < n && i % every == 0 {
            let l = last.lock().ok().and_then(|g| g.clone());
            l.and_then(|l| {
                l.narrow(0, 0, 1)
                    .and_then(|l| vae.decode(&l))
                    .and_then(|img| ((img.to_dtype(DType::F32)? / 2.0)? + 0.5)?.clamp(0f32, 1f32))
                    .and_then(|img| pipeline::to_rgb8(&img))
                    .ok()
                    .and_then(|mut v| v.pop())
            })
        } else {
            None
        };
        on_step(i, n, preview);
    });
    match r {
        Ok(t) => Ok(t),
        Err(_) if cancel.load(Ordering::SeqCst) => Err(GenError::Cancelled),
        Err(e) => Err(GenError::Failed(format!("generating: {e}"))),
    }
}

/// Encodes RGB8 as PNG with `tEXt`/`iTXt` chunks (A1111's `parameters` convention), in memory.
pub fn encode_png(
    rgb: &[u8],
    w: usize,
    h: usize,
    text: &[(&str, String)],
) -> Result<Vec<u8>, String> {
    strata_image::encode_png_with_text(std::path::Path::new("image"), rgb, w, h, text)
        .map_err(|e| strata_image::error_chain(&e))
}

/// A1111-style parameters text (delegates to the pipeline's formatter).
pub fn parameters_text(prompt: &str, settings: &[(&str, String)]) -> String {
    pipeline::a1111_parameters(prompt, settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_word_only_whole_words() {
        assert_eq!(
            replace_word("a roof and roofs", "roof", "<r>"),
            "a <r> and roofs"
        );
        assert_eq!(replace_word("roof", "roof", "<r> <r#1>"), "<r> <r#1>");
    }

    /// With the wrappers, `Pipeline::generate` gives the same pixels (same seed, same model).
    #[test]
    fn wrappers_leave_pixels_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        strata_models::testing::write_tiny_model(dir.path(), 3).unwrap();
        let dev = Device::Cpu;
        let loaded = pipeline::load_model(dir.path(), None, None, DType::F32, &dev).unwrap();
        let side = 32; // the tiny model's config says 512; its x2 VAE would make that huge
        let c = encode_flat(&loaded.text, &loaded.tokenizer, &["a road next to a tree"]).unwrap();
        let u = encode_flat(&loaded.text, &loaded.tokenizer, &[""]).unwrap();
        let src = FixedConditioning {
            cond: Conditioning::Context(c),
            uncond: Conditioning::Context(u),
        };
        for init in [false, true] {
            let opts = GenerateOptions {
                steps: 4,
                guidance_scale: 5.0,
                seed: 11,
                batch: 2,
                width: side,
                height: side,
                strength: 0.6,
                ..Default::default()
            };
            let init_t = init.then(|| {
                pipeline::seeded_normal(&[1, 3, side, side], 5, &dev)
                    .unwrap()
                    .clamp(-1f32, 1f32)
                    .unwrap()
            });
            let pipe = pipeline::Pipeline {
                unet: &loaded.models.unet,
                vae: &loaded.models.vae,
            };
            let a = pipe
                .generate(&src, &opts, init_t.as_ref(), &mut |_, _| {})
                .unwrap();
            let mut steps = 0;
            let b = run(
                &loaded.models.unet,
                &loaded.models.vae,
                &src,
                &opts,
                init_t.as_ref(),
                &AtomicBool::new(false),
                &mut |_, _, _| steps += 1,
            )
            .unwrap();
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "img2img {init}");
            assert!(steps > 0);
        }
    }

    #[test]
    fn cancel_stops_before_the_next_step() {
        let dir = tempfile::tempdir().unwrap();
        strata_models::testing::write_tiny_model(dir.path(), 3).unwrap();
        let mut eng = Engine::default();
        let side = 32; // the tiny model's config says 512; its x2 VAE would make that huge
        let req = GenRequest {
            model: dir.path().to_path_buf(),
            tokenizer: None,
            lora: None,
            embeddings: vec![],
            prompt: Prompt::Flat("a road".into()),
            steps: 20,
            cfg: 7.0,
            seed: 1,
            batch: 1,
            width: side,
            height: side,
            init_png: None,
            strength: 0.7,
        };
        let cancel = AtomicBool::new(false);
        let mut seen = 0;
        let r = eng.generate(&req, &cancel, &mut |i, _, _| {
            seen = i;
            if i == 3 {
                cancel.store(true, Ordering::SeqCst);
            }
        });
        assert!(matches!(r, Err(GenError::Cancelled)), "{r:?}");
        assert_eq!(seen, 3, "no step runs after the cancel");
    }
}
