//! `strata eval`: compare generated folders with real images — the paper's metrics where
//! weights allow, strata's relation fidelity and strata-synthetic FID/KID — and write
//! `metrics.json`, `table.txt` and `report.html`.

use super::numbers;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use strata_eval::seg::TrainOptions;
use strata_eval::{evaluate, EvalOptions, GeneratedSet, Metric, WeightPaths};

#[derive(clap::Args)]
pub struct Args {
    /// Folder of real (reference) PNG images; a strata dataset folder works (images/ and its
    /// metadata.jsonl are used, masks/ is skipped).
    #[arg(long, value_name = "DIR")]
    real: PathBuf,
    /// A folder of generated PNGs, `LABEL=DIR` with LABEL `method/caption-kind`
    /// (e.g. `lora/hierarchical=gen/h`); repeat for each table row. Images pair with real
    /// ones by relative file name.
    #[arg(long, value_name = "[LABEL=]DIR", required = true)]
    generated: Vec<String>,
    /// metadata.jsonl holding the requested captions and relation triples of the generated
    /// images [default: the real folder's metadata.jsonl].
    #[arg(long, value_name = "FILE")]
    captions: Option<PathBuf>,
    /// Metrics, comma-separated, or `all`.
    #[arg(long, value_delimiter = ',', default_value = "all", value_parser = metric_names())]
    metrics: Vec<String>,
    /// Output folder for metrics.json, table.txt, relation_fidelity.svg and report.html.
    #[arg(long, value_name = "DIR", default_value = "eval-report")]
    out: PathBuf,
    /// The segmenter behind relation fidelity and sFID*/sKID*: `embedded` (the embedded
    /// captioner's network, compiled in), `train` (train strata's small segmenter now and
    /// save it as OUT/segmenter.safetensors), or a .safetensors FILE of that small segmenter
    /// (loaded if it exists, else trained and saved there). Its held-out quality is measured
    /// and printed beside every relation-fidelity figure.
    #[arg(long, value_name = "embedded|train|FILE", default_value = "embedded")]
    segmenter: String,
    /// Segmenter training steps (`--segmenter train` or a FILE that does not exist yet).
    #[arg(long, default_value_t = 400, value_parser = numbers::int(1usize, numbers::MAX_COUNT))]
    seg_steps: usize,
    /// Synthetic scenes the segmenter trains on.
    #[arg(long, default_value_t = 550, value_parser = numbers::int(1usize, numbers::MAX_COUNT))]
    seg_train_scenes: usize,
    /// KID: number of random subsets averaged.
    #[arg(long, default_value_t = 100, value_parser = numbers::int(1usize, 1_000_000))]
    kid_subsets: usize,
    /// KID: images per subset; KID and sKID* are not computed when a folder has fewer.
    #[arg(long, default_value_t = 1000, value_parser = numbers::int(2usize, numbers::MAX_COUNT))]
    kid_subset_size: usize,
    /// Seed for segmenter training and KID subsets.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Scenes shown in the report's image grid.
    #[arg(long, default_value_t = 12, value_parser = numbers::int(1usize, 1_000))]
    grid: usize,
    /// Where the metric networks run: cpu, cuda or cuda:N (cuda needs a build with the
    /// `cuda` feature).
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    device: strata_models::device::DeviceSpec,
    /// pytorch-fid's Inception weights (pt_inception-2015-12-05-*.pth) for standard FID/KID.
    #[arg(long, value_name = "FILE")]
    inception_weights: Option<PathBuf>,
    /// LPIPS backbone: torchvision's alexnet-owt-7be5be79.pth or vgg16-397923af.pth (or a
    /// safetensors file with the same `features.N.*` keys); the network is detected.
    #[arg(long, value_name = "FILE")]
    lpips_backbone: Option<PathBuf>,
    /// LPIPS linear heads (lpips 0.1.4 `weights/v0.1/{alex,vgg}.pth`) [default: the copy
    /// shipped with strata (BSD-2, crates/strata-eval/weights/lpips/)].
    #[arg(long, value_name = "FILE")]
    lpips_heads: Option<PathBuf>,
    /// CLIP for CLIPScore: a transformers folder (e.g. openai/clip-vit-base-patch32 with
    /// model.safetensors, config.json, vocab.json, merges.txt) or its model.safetensors.
    #[arg(long, value_name = "DIR|FILE")]
    clip_weights: Option<PathBuf>,
    /// VGG16 scene classifier (torchvision layout, .pth or .safetensors) for GSHPS. Without
    /// it GSHPS uses a stand-in CNN strata trains on images disjoint from every scored one
    /// (--gshps-train, or fresh synthetic scenes), labelled "GSHPS (stand-in)" in every
    /// output.
    #[arg(long, value_name = "FILE")]
    vgg16_weights: Option<PathBuf>,
    /// The GSHPS stand-in classifier: loaded if the file and its .train.json record exist,
    /// else trained and saved there [default: OUT/gshps_standin.safetensors].
    #[arg(long, value_name = "FILE")]
    gshps_classifier: Option<PathBuf>,
    /// Images the GSHPS stand-in trains on: a folder (a strata dataset's images/ works) with
    /// a metadata.jsonl giving each image's `scene`. Refused when an image has the pixels
    /// of a scored one [default: 110 fresh synthetic scenes].
    #[arg(long, value_name = "DIR")]
    gshps_train: Option<PathBuf>,
    /// Training steps of the GSHPS stand-in classifier.
    #[arg(long, default_value_t = 200, value_parser = numbers::int(1usize, numbers::MAX_COUNT))]
    gshps_steps: usize,
    /// PieAPP weights.
    #[arg(long, value_name = "FILE")]
    pieapp_weights: Option<PathBuf>,
    #[command(flatten)]
    pub image_limit: super::ImageLimit,
    /// Start even when the memory estimate exceeds the available memory (the estimate is
    /// still printed).
    #[arg(long)]
    force: bool,
}

/// `(width, height)` of a PNG from its header, else `None`.
fn png_size(p: &std::path::Path) -> Option<(usize, usize)> {
    use std::io::Read;
    let mut h = [0u8; 24];
    std::fs::File::open(p).ok()?.read_exact(&mut h).ok()?;
    if &h[..8] != b"\x89PNG\r\n\x1a\n" || &h[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    Some((be(&h[16..20]), be(&h[20..24])))
}

/// Images of a folder and their largest size (PNG headers; other formats count at the
/// largest PNG size found, else 512×512).
fn folder_images(dir: &std::path::Path) -> (usize, u64, (usize, usize)) {
    let files = strata_eval::images::list_images(dir).unwrap_or_default();
    // images over the decode limit are refused one by one when read, never decoded: they
    // take no memory, and counting them would refuse the run before the file is named
    let max = strata_image::decode::Limits::default().max_pixels;
    let sizes: Vec<Option<(usize, usize)>> = files
        .iter()
        .map(|r| png_size(&strata_eval::images::join(dir, r)))
        .filter(|s| s.is_none_or(|(w, h)| (w as u64) * (h as u64) <= max))
        .collect();
    let largest = sizes
        .iter()
        .flatten()
        .copied()
        .max_by_key(|&(w, h)| w * h)
        .unwrap_or((512, 512));
    let bytes = sizes
        .iter()
        .map(|s| {
            let (w, h) = s.unwrap_or(largest);
            3 * (w * h) as u64
        })
        .sum();
    (files.len(), bytes, largest)
}

/// Peak-memory estimate of the evaluation: every image held decoded (8-bit RGB), the
/// weights given, and the largest of the feature networks' passes at their batch sizes and
/// input sizes (Inception at 299 px in fours, LPIPS pairs at the real images' size, CLIP in
/// sixteens at 224 px, the VGG16 classifier in eights at 224 px, PieAPP's 64-px patches in
/// sixteens with every patch's features of a pair, the segmenter and stand-in classifier on
/// 64-px scenes in batches of 32).
fn estimate(
    args: &Args,
    metrics: &[Metric],
    sets: &[GeneratedSet],
) -> strata_models::memory::Estimate {
    use strata_models::memory::{
        feature_net_peak, Estimate, Part, ALEXNET, INCEPTION_STEM, RUNTIME_BYTES, VGG16,
    };
    let want = |m: Metric| metrics.contains(&m);
    let (_, real_bytes, (rw, rh)) = folder_images(&args.real);
    let mut held = real_bytes;
    let (mut gw, mut gh) = (rw, rh);
    for g in sets {
        let (_, b, (w, h)) = folder_images(&g.dir);
        held += b;
        if w * h > gw * gh {
            (gw, gh) = (w, h);
        }
    }
    let file = |p: &Option<PathBuf>| -> u64 {
        p.as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| if m.is_dir() { 0 } else { m.len() })
            .unwrap_or(0)
    };
    let clip_file = args.clip_weights.as_ref().map(|p| {
        if p.is_dir() {
            p.join("model.safetensors")
        } else {
            p.clone()
        }
    });
    let mut weights = 0u64;
    let mut passes: Vec<u64> = vec![];
    if (want(Metric::Fid) || want(Metric::Kid)) && args.inception_weights.is_some() {
        weights += file(&args.inception_weights);
        passes.push(feature_net_peak(INCEPTION_STEM, 4, 299, 299, false));
    }
    if want(Metric::Lpips) && args.lpips_backbone.is_some() {
        weights += file(&args.lpips_backbone);
        let vgg = args
            .lpips_backbone
            .as_ref()
            .is_some_and(|p| p.to_string_lossy().to_lowercase().contains("vgg"));
        let net = if vgg { VGG16 } else { ALEXNET };
        passes.push(2 * feature_net_peak(net, 1, rw, rh, true) + 2 * 3 * (rw * rh) as u64 * 4);
    }
    if (want(Metric::ClipScore) || want(Metric::ClipCosine)) && clip_file.is_some() {
        weights += file(&clip_file);
        // ViT-B/32 on 16 images: 50 tokens × 768 channels, a 3072-wide MLP
        passes.push(16 * 50 * (3072 + 8 * 768) * 4 + 16 * 3 * 224 * 224 * 4 * 2);
    }
    if want(Metric::Gshps) {
        if args.vgg16_weights.is_some() {
            weights += file(&args.vgg16_weights);
            passes.push(feature_net_peak(VGG16, 8, 224, 224, false));
        } else {
            passes.push(feature_net_peak(VGG16, 32, 64, 64, false) / 4);
        }
    }
    if want(Metric::PieApp) && args.pieapp_weights.is_some() {
        weights += file(&args.pieapp_weights);
        let patches = |s: usize| ((s.saturating_sub(64)) / 27 + 1) as u64;
        let per_pair =
            2 * patches(rw) * patches(rh) * (strata_eval::pieapp::MULTISCALE_DIM as u64) * 4;
        passes.push(per_pair + feature_net_peak(VGG16, 16, 64, 64, false));
    }
    if (want(Metric::RelationFidelity) || want(Metric::SynthFid) || want(Metric::SynthKid))
        && args.segmenter != "embedded"
    {
        // the segmenter: its synthetic training scenes and a batch of 32 at 64 px
        let scenes = (args.seg_train_scenes as u64 + 64) * 64 * 64 * 4 * 4;
        passes.push(scenes + feature_net_peak(VGG16, 32, 64, 64, false) / 4);
    }
    // decoding and resizing one image of the largest size at a time (f32 copies)
    let decode = 3 * (gw * gh) as u64 * 4 * 3;
    let nets = passes.into_iter().max().unwrap_or(0);
    Estimate {
        total: RUNTIME_BYTES + held + weights * 2 + nets.max(decode),
        parts: vec![
            Part {
                name: "images",
                bytes: held,
            },
            Part {
                name: "weights",
                bytes: weights * 2,
            },
            Part {
                name: "feature networks",
                bytes: nets,
            },
            Part {
                name: "decode + resize",
                bytes: decode,
            },
            Part {
                name: "runtime",
                bytes: RUNTIME_BYTES,
            },
        ],
    }
}

/// `--metrics` values: every metric id and `all`, listed in `--help` and checked.
fn metric_names() -> super::Checked {
    let mut values: Vec<String> = Metric::ALL.iter().map(|m| m.id().to_string()).collect();
    values.push("all".into());
    super::Checked {
        values,
        check: |s| {
            if s.trim().eq_ignore_ascii_case("all") || Metric::parse(s).is_some() {
                Ok(())
            } else {
                Err(format!(
                    "unknown metric `{s}`; known: {}, all",
                    Metric::ALL.map(|m| m.id()).join(", ")
                ))
            }
        },
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    args.image_limit.apply();
    let mut metrics = Vec::new();
    for m in &args.metrics {
        if m.trim().eq_ignore_ascii_case("all") {
            metrics.extend(Metric::ALL);
            continue;
        }
        match Metric::parse(m) {
            Some(x) => metrics.push(x),
            None => bail!(
                "unknown metric `{m}`; known: {}, all",
                Metric::ALL.map(|m| m.id()).join(", ")
            ),
        }
    }
    metrics.sort();
    metrics.dedup();
    if args.seg_steps == 0 {
        bail!("--seg-steps must be at least 1");
    }
    if args.gshps_steps == 0 {
        bail!("--gshps-steps must be at least 1");
    }
    let generated: Vec<GeneratedSet> = args
        .generated
        .iter()
        .map(|g| GeneratedSet::parse(g))
        .collect();
    {
        use strata_models::memory;
        let est = estimate(&args, &metrics, &generated);
        let avail = super::memory_gate(est.total, &args.device, args.force, |a| {
            format!(
                "this evaluation needs about {} of memory at its peak, but {} is available ({}). Estimate: {est}. Lower it with fewer or smaller images in --real/--generated, or fewer --metrics (the networks' passes are the large share); or pass --force to start anyway.",
                memory::human(est.total),
                memory::human(a.bytes),
                a.source
            )
        })?;
        eprintln!("eval: memory estimate: {est}; {avail}");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating the output folder {}", args.out.display()))?;
    let _lock = strata_io::lock::FolderLock::acquire(&args.out)?;
    let opts = EvalOptions {
        real: args.real.clone(),
        generated,
        captions: args.captions.clone(),
        metrics,
        out: args.out.clone(),
        segmenter: match args.segmenter.as_str() {
            "embedded" => None,
            "train" => Some(args.out.join("segmenter.safetensors")),
            file => Some(PathBuf::from(file)),
        },
        segmenter_net: match args.segmenter.as_str() {
            "embedded" => Some(std::sync::Arc::new(
                strata_captioner::embedded::EmbeddedSegmenter::load_default()
                    .context("loading the embedded captioner's network as the segmenter")?,
            )),
            _ => None,
        },
        train: TrainOptions {
            steps: args.seg_steps,
            train_scenes: args.seg_train_scenes,
            seed: args.seed,
            ..TrainOptions::default()
        },
        kid_subsets: args.kid_subsets,
        kid_subset_size: args.kid_subset_size,
        seed: args.seed,
        weights: WeightPaths {
            inception: args.inception_weights.clone(),
            lpips_backbone: args.lpips_backbone.clone(),
            lpips_heads: args.lpips_heads.clone(),
            clip: args.clip_weights.clone(),
            vgg16_classifier: args.vgg16_weights.clone(),
            gshps_classifier: Some(
                args.gshps_classifier
                    .clone()
                    .unwrap_or_else(|| args.out.join("gshps_standin.safetensors")),
            ),
            gshps_train: strata_eval::gshps::CnnTrainOptions {
                steps: args.gshps_steps,
                seed: args.seed,
                ..Default::default()
            },
            gshps_train_dir: args.gshps_train.clone(),
            pieapp: args.pieapp_weights.clone(),
        },
        grid_scenes: args.grid,
        device: args.device.open()?,
    };
    let report = evaluate(&opts, &mut |m| eprintln!("eval: {m}"))?;
    let table = strata_eval::report::write_outputs(&report, &opts)?;
    println!("{table}");
    println!(
        "wrote {}/metrics.json, table.txt, report.html",
        args.out.display()
    );
    if !report.failed.is_empty() {
        eprintln!("{} item(s) skipped:", report.failed.len());
        for (f, e) in &report.failed {
            eprintln!("  {f}: {e}");
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
