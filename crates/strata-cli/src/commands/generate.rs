//! `strata generate`: sampling of the latent diffusion model (DDIM by default, `--sampler` for
//! the others) from a hierarchical caption (or a flat prompt), with classifier-free guidance,
//! optional img2img, PNG output with the caption and settings in text chunks.

use super::numbers::{self, End};
use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use strata_models::clip::DType;
use strata_models::conditioning::Conditioning;
use strata_models::device::DeviceSpec;
use strata_models::fusion::record::{conditioning_source, CaptionMode, CaptionText};
use strata_models::pipeline::{
    self, ConditioningSource, FixedConditioning, GenerateOptions, Pipeline,
};
use strata_models::schedulers::{self, Sampler};
use strata_models::segments::SegmentTexts;
use strata_models::text_side::{self, CaptionInput, EmbeddingSpec};

fn parse_embedding(s: &str) -> Result<EmbeddingSpec, String> {
    EmbeddingSpec::parse(s)
}

/// The samplers of `--sampler`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamplerArg {
    /// DDIM with η = 0: deterministic
    Ddim,
    /// DDPM ancestral sampling: stochastic, needs many steps
    Ddpm,
    /// Euler ancestral ("Euler a"): stochastic
    #[value(name = "euler-a")]
    EulerA,
    /// DPM-Solver++ 2M: deterministic, good in 20-30 steps
    #[value(name = "dpmpp-2m")]
    Dpmpp2m,
    /// DPM-Solver++ 2M with Karras sigmas
    #[value(name = "dpmpp-2m-karras")]
    Dpmpp2mKarras,
    /// UniPC (bh2, order 2): deterministic, good in 10-20 steps
    Unipc,
}

impl From<SamplerArg> for Sampler {
    fn from(s: SamplerArg) -> Self {
        match s {
            SamplerArg::Ddim => Sampler::Ddim,
            SamplerArg::Ddpm => Sampler::Ddpm,
            SamplerArg::EulerA => Sampler::EulerAncestral,
            SamplerArg::Dpmpp2m => Sampler::DpmPp2M,
            SamplerArg::Dpmpp2mKarras => Sampler::DpmPp2MKarras,
            SamplerArg::Unipc => Sampler::UniPc,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model: a diffusers folder (unet/, vae/, text_encoder/, tokenizer/) or an SD-1.5
    /// single-file `.safetensors` checkpoint [default: the embedded base model (64 px, trained
    /// by strata on synthetic scenes; see docs/base-model.md), written once to the cache].
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Scene segment of the hierarchical caption.
    #[arg(long, default_value = "", value_parser = super::caption_text)]
    pub scene: String,
    /// Relation segment.
    #[arg(long, default_value = "", value_parser = super::caption_text)]
    pub relation: String,
    /// Element phrases (repeat the flag or separate with ';') [default: none].
    #[arg(long, value_delimiter = ';', value_name = "PHRASE", value_parser = super::caption_text)]
    pub elements: Vec<String>,
    /// A flat prompt instead of the segments (one 77-token context).
    #[arg(long, value_parser = super::caption_text)]
    pub prompt: Option<String>,
    /// Caption mode and fusion (default: as the LoRA or model records it was trained).
    #[command(flatten)]
    pub fusion: super::fusion_args::FusionArgs,
    /// A LoRA file to apply (kohya / A1111 / ComfyUI or diffusers/PEFT layout, detected); its
    /// text-encoder adapters (`lora_te_…`, `text_encoder.…`) apply to the text encoder.
    #[arg(long, value_name = "FILE")]
    pub lora: Option<PathBuf>,
    /// A textual-inversion embedding to load (repeat for several): strata's TI output or an
    /// A1111 `.safetensors` / `.pt` file. Its placeholder (the recorded one for strata files,
    /// the file stem otherwise; `FILE=TOKEN` to choose) stands for its vectors in any
    /// segment and in --prompt [default: none].
    #[arg(long = "embedding", value_name = "FILE[=TOKEN]", value_parser = parse_embedding)]
    pub embeddings: Vec<EmbeddingSpec>,
    /// Multiplier of the LoRA update (0 = base model, 1 = as trained).
    #[arg(long, default_value_t = 1.0, value_name = "S", value_parser = numbers::finite)]
    pub lora_scale: f64,
    /// img2img: start from this image (PNG, JPEG, TIFF, WebP or BMP; must have the output
    /// size).
    #[arg(long, value_name = "IMAGE")]
    pub init_image: Option<PathBuf>,
    /// img2img: how strongly the init image is changed, in (0, 1]: the share of the
    /// denoising steps run from the noised init image (1 = start from pure noise).
    #[arg(long, default_value_t = 0.7, value_parser = numbers::float(End::Open(0.0), End::Closed(1.0)))]
    pub strength: f64,
    /// Denoising steps.
    #[arg(long, default_value_t = 30, value_parser = numbers::int(1usize, 10_000))]
    pub steps: usize,
    /// Sampler (default: ddim). The noise schedule comes from the model's
    /// scheduler/scheduler_config.json (for a single file: the --configs folder's) when there
    /// is one, else SD-1.5's.
    #[arg(long, value_enum, default_value_t = SamplerArg::Ddim)]
    pub sampler: SamplerArg,
    /// Classifier-free guidance scale (1 = no guidance).
    #[arg(long, default_value_t = 7.0, value_parser = numbers::float(End::Closed(0.0), End::Closed(100.0)))]
    pub cfg: f64,
    /// Seed of the initial noise (same seed and options → same images).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images generated together from the same caption.
    #[arg(long, default_value_t = 1, value_parser = numbers::int(1usize, 4_096))]
    pub batch: usize,
    /// Image width in pixels [default: the model's side: `vae/config.json` sample_size, else
    /// `unet/config.json` sample_size × the VAE's down-sampling, else 512 (512 for SD-1.5, 64
    /// for the embedded base model)].
    #[arg(long, value_name = "PX", value_parser = numbers::int(8usize, numbers::MAX_SIDE))]
    pub width: Option<usize>,
    /// Image height in pixels [default: as the width's default].
    #[arg(long, value_name = "PX", value_parser = numbers::int(8usize, numbers::MAX_SIDE))]
    pub height: Option<usize>,
    /// Tokenizer (BPE .txt.gz or a folder with vocab.json + merges.txt) [default: the
    /// model's tokenizer/ folder].
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// For a single-file checkpoint that is not SD-1.5: a diffusers folder whose
    /// unet/config.json and vae/config.json describe it.
    #[arg(long, value_name = "DIR")]
    pub configs: Option<PathBuf>,
    /// Where the model runs: cpu, cuda (the first GPU) or cuda:N (cuda needs a build with
    /// the `cuda` feature).
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceSpec,
    /// Weight and activation precision (f16/bf16 are meant for GPUs).
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    pub dtype: DTypeArg,
    /// Output folder (created if missing).
    #[arg(short = 'o', long, value_name = "DIR")]
    pub output: PathBuf,
    /// Start even when the memory estimate exceeds the available memory (the estimate is
    /// still printed).
    #[arg(long)]
    pub force: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub image_limit: super::ImageLimit,
}

/// `--dtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DTypeArg {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    Bf16,
}

fn dtype(d: DTypeArg) -> DType {
    match d {
        DTypeArg::F32 => DType::F32,
        DTypeArg::F16 => DType::F16,
        DTypeArg::Bf16 => DType::BF16,
    }
}

/// Estimates the generation's peak memory before the model is loaded: printed, and on the
/// CPU compared with what is available (refused unless `--force`).
fn check_memory(
    args: &Args,
    model: &std::path::Path,
    width: usize,
    height: usize,
    dt: DType,
) -> anyhow::Result<()> {
    use strata_models::memory;
    let shape = memory::ModelShape::read(model, args.configs.as_deref())
        .map_err(|e| anyhow::anyhow!("--model: {e}"))?;
    let lora_bytes = match &args.lora {
        // adapters are held in f32 whatever the file stores
        Some(p) => Some(
            std::fs::metadata(p)
                .with_context(|| format!("--lora {}", p.display()))?
                .len()
                * 2,
        ),
        None => None,
    };
    let est = memory::generation(
        &shape,
        &memory::GenerateShape {
            width,
            height,
            batch: args.batch.max(1),
            dtype: dt,
            guidance: args.cfg != 1.0,
            context: if args.prompt.is_some() {
                memory::Context::Tokens(memory::CONTEXT_TOKENS)
            } else {
                memory::Context::Tokens(3 * memory::CONTEXT_TOKENS)
            },
            lora_bytes,
            init_image: args.init_image.is_some(),
        },
    );
    let avail = super::memory_gate(est.total, &args.device, args.force, |a| {
        format!(
            "generating {} image(s) of {width}x{height} needs about {} of memory at its peak, but {} is available ({}). Estimate: {est}. Lower it with --batch (now {}), --width/--height, --dtype f16 or bf16 (now {}); or pass --force to start anyway.",
            args.batch,
            memory::human(est.total),
            memory::human(a.bytes),
            a.source,
            args.batch,
            format!("{:?}", args.dtype).to_lowercase(),
        )
    })?;
    if !args.quiet {
        eprintln!("memory estimate: {est}; {avail}");
    }
    Ok(())
}

pub fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    args.image_limit.apply();
    let model = match args.model.take() {
        Some(m) => m,
        None => crate::base_model::ensure().context("the embedded base model (no --model)")?,
    };
    let default_side = super::model_side(&model);
    let (width, height) = (
        args.width.unwrap_or(default_side),
        args.height.unwrap_or(default_side),
    );
    let dt = dtype(args.dtype);
    check_memory(&args, &model, width, height, dt)?;
    let dev = args.device.open()?;
    let mut loaded = pipeline::load_model(
        &model,
        args.tokenizer.as_deref(),
        args.configs.as_deref(),
        dt,
        &dev,
    )?;
    let (placeholders, additions) = text_side::apply_text_additions(
        &mut loaded,
        &args.embeddings,
        args.lora.as_deref().map(|p| (p, args.lora_scale)),
        &dev,
    )?;
    for (token, n, file) in &additions.embeddings {
        eprintln!("embedding {}: `{token}` ({n} vectors)", file.display());
    }
    if let (Some(path), Some((layout, nu, nt))) = (&args.lora, additions.lora) {
        eprintln!(
            "LoRA {}: {nu} UNet + {nt} text-encoder adapters ({layout:?} layout), scale {}",
            path.display(),
            args.lora_scale
        );
    }
    let mut unet = loaded.models.unet;
    strata_models::lora::set_multiplier(&mut unet, args.lora_scale);
    let vae = loaded.models.vae;

    let caption = SegmentTexts::new(&args.scene, &args.relation, &args.elements);
    let mut applied = None;
    let (source, prompt_text): (Box<dyn ConditioningSource>, String) = match &args.prompt {
        Some(p) => {
            eprintln!("fusion: none, --prompt is one flat prompt");
            let (c, u) = text_side::caption_encodings(
                &loaded.text,
                &loaded.tokenizer,
                &placeholders,
                &CaptionInput::Flat(p.clone()),
            )?;
            (
                Box::new(FixedConditioning {
                    cond: Conditioning::Context(c),
                    uncond: Conditioning::Context(u),
                }),
                p.clone(),
            )
        }
        None => {
            if args.scene.is_empty() && args.relation.is_empty() && args.elements.is_empty() {
                bail!("give a caption: --scene/--relation/--elements, or --prompt")
            }
            // as the LoRA (else the model folder) records it was trained, options overriding
            let a = args.fusion.resolve(args.lora.as_deref(), &model, &dev)?;
            eprintln!("{}", a.summary);
            let text = CaptionText::segments(caption.clone());
            let source = conditioning_source(
                &a.record,
                &loaded.text,
                &loaded.tokenizer,
                &placeholders,
                std::slice::from_ref(&text),
            )?;
            let prompt = match a.record.captions {
                CaptionMode::Flat => text.flat_text(),
                CaptionMode::Hierarchical => caption.joined(),
            };
            applied = Some(a);
            (source, prompt)
        }
    };
    let init = match &args.init_image {
        Some(p) => Some(pipeline::read_png_image(p, &dev).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let sampler = Sampler::from(args.sampler);
    let sched_dir = match (&args.configs, model.is_dir()) {
        (_, true) => Some(model.as_path()),
        (Some(c), false) => Some(c.as_path()),
        (None, false) => None,
    };
    let sched_cfg = match sched_dir {
        Some(d) => schedulers::read_model_scheduler_config(d)?.unwrap_or_default(),
        None => schedulers::SchedulerConfig::sd15(),
    };
    let opts = GenerateOptions {
        steps: args.steps,
        guidance_scale: args.cfg,
        seed: args.seed,
        batch: args.batch,
        width,
        height,
        strength: args.strength,
        sampler,
        scheduler: sched_cfg,
    };
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.steps as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} steps {elapsed_precise} ({eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("denoising");
    let pipe = Pipeline {
        unet: &unet,
        vae: &vae,
    };
    let images = pipe.generate(source.as_ref(), &opts, init.as_ref(), &mut |i, n| {
        bar.set_length(n as u64);
        bar.set_position(i as u64);
    })?;
    bar.finish_and_clear();

    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let rgb = pipeline::to_rgb8(&images)?;
    let model_name = model
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut settings: Vec<(&str, String)> = vec![
        ("Steps", args.steps.to_string()),
        ("Sampler", sampler.display_name().into()),
        ("CFG scale", args.cfg.to_string()),
        ("Seed", args.seed.to_string()),
        ("Size", format!("{width}x{height}")),
        ("Model", model_name),
    ];
    if let Some(a) = &applied {
        match a.record.captions {
            CaptionMode::Flat => settings.push(("Captions", "flat".into())),
            CaptionMode::Hierarchical => {
                let name = clap::ValueEnum::to_possible_value(&a.record.mode)
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default();
                settings.push(("Fusion", name));
                settings.push(("Fusion schedule", a.record.schedule_kind().into()));
            }
        }
    }
    if args.init_image.is_some() {
        settings.push(("Denoising strength", args.strength.to_string()));
    }
    let caption_json = serde_json::json!({"scene": args.scene, "relation": args.relation, "elements": args.elements, "prompt": args.prompt});
    let mut written = vec![];
    for (i, px) in rgb.iter().enumerate() {
        let mut s = settings.clone();
        s.push(("Batch pos", i.to_string()));
        let text = vec![
            ("parameters", pipeline::a1111_parameters(&prompt_text, &s)),
            ("caption", caption_json.to_string()),
            ("Software", "strata".to_string()),
        ];
        let path = args.output.join(format!("{:06}-{i:02}.png", args.seed));
        strata_image::write_png_with_text(&path, px, width, height, &text)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    for p in &written {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
