//! Training the embedded captioner's network on procedural `strata-synth` scenes.
//!
//! Recipe: a fixed pool of generated scenes (classes round-robin; every fourth scene drawn at
//! 128 px and shrunk to 64 like a larger input would be), the eight flips/quarter-turns and a
//! colour jitter (brightness, contrast, per-channel gain, pixel noise) per sample, loss =
//! class-weighted pixel cross-entropy + soft Dice over the classes present in the batch +
//! 0.3 × scene cross-entropy, AdamW with linear warm-up and cosine decay. Every seed is
//! fixed, so the same options give the same weights on the same machine.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use strata_image::RgbImage;
use strata_synth::{generate, SceneClass};

use super::net::{log_softmax_dim1, CapNet, Widths, NET_SIZE, NUM_CLASSES, NUM_SCENES};
use crate::error::{CaptionerError, Result};

/// Base seed of the training scenes (`strata_synth::dataset::scene_seed(TRAIN_SEED, i)`).
pub const TRAIN_SEED: u64 = 1_000;
/// Base seed of the validation scenes whose figures go into the weights' metadata.
pub const VALIDATION_SEED: u64 = 2_000;

/// One scene at NET_SIZE with its ground truth.
#[derive(Debug, Clone)]
pub struct Sample {
    pub rgb: RgbImage,
    pub mask: Vec<u8>,
    pub scene: SceneClass,
    pub seed: u64,
    /// The generator's element list (synth names).
    pub elements: Vec<String>,
}

/// Scene `i` of the set with base seed `base`: class `i mod 11`, generated at `size` (64 or
/// more) and shrunk to NET_SIZE when larger (image bilinear, mask by the nearest pixel).
pub fn sample(base: u64, i: usize, size: usize) -> Sample {
    let class = SceneClass::ALL[i % NUM_SCENES];
    let seed = strata_synth::dataset::scene_seed(base, i);
    let s = generate(class, size as u32, seed);
    let size = s.size as usize;
    let elements = s.caption.elements.clone();
    let img = RgbImage {
        width: size,
        height: size,
        data: s.rgb,
    };
    if size == NET_SIZE {
        return Sample {
            rgb: img,
            mask: s.mask,
            scene: class,
            seed,
            elements,
        };
    }
    let rgb = strata_image::resize(&img, NET_SIZE, NET_SIZE, strata_image::Filter::Bilinear);
    let mut mask = vec![0u8; NET_SIZE * NET_SIZE];
    for y in 0..NET_SIZE {
        for x in 0..NET_SIZE {
            let sy = ((y as f64 + 0.5) * size as f64 / NET_SIZE as f64) as usize;
            let sx = ((x as f64 + 0.5) * size as f64 / NET_SIZE as f64) as usize;
            mask[y * NET_SIZE + x] = s.mask[sy.min(size - 1) * size + sx.min(size - 1)];
        }
    }
    Sample {
        rgb,
        mask,
        scene: class,
        seed,
        elements,
    }
}

/// `count` scenes at 64 px with base seed `base` (the held-out sets).
pub fn samples(count: usize, base: u64) -> Vec<Sample> {
    (0..count)
        .into_par_iter()
        .map(|i| sample(base, i, NET_SIZE))
        .collect()
}

/// The training pool: every fourth scene at 128 px, shrunk.
pub fn training_pool(count: usize, base: u64) -> Vec<Sample> {
    (0..count)
        .into_par_iter()
        .map(|i| sample(base, i, if i % 4 == 3 { 2 * NET_SIZE } else { NET_SIZE }))
        .collect()
}

/// Training settings (all recorded in the weights' metadata).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub widths: Widths,
    pub train_scenes: usize,
    pub validation_scenes: usize,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    pub dice_weight: f64,
    pub scene_weight: f64,
    /// Initialisation and batch-order seed.
    pub seed: u64,
    /// Write a checkpoint (same format) every this many steps (0: only at the end).
    pub checkpoint_every: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            widths: Widths::default(),
            train_scenes: 4400,
            validation_scenes: 440,
            steps: 2000,
            batch: 12,
            lr: 4e-3,
            warmup: 60,
            weight_decay: 1e-4,
            dice_weight: 0.5,
            scene_weight: 0.3,
            seed: 7,
            checkpoint_every: 250,
        }
    }
}

/// Held-out figures of the segmenter and the scene head.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegFigures {
    pub scenes: usize,
    pub pixel_accuracy: f64,
    /// Mean IoU over the classes present in the truth or the prediction.
    pub mean_iou: f64,
    pub scene_accuracy: f64,
}

/// Pixel accuracy, mIoU and scene accuracy of `net` on `held`.
pub fn evaluate(net: &CapNet, held: &[Sample]) -> Result<SegFigures> {
    let imgs: Vec<&RgbImage> = held.iter().map(|s| &s.rgb).collect();
    let preds = net.predict(&imgs)?;
    let mut correct = 0usize;
    let mut total = 0usize;
    let mut inter = [0usize; NUM_CLASSES];
    let mut uni = [0usize; NUM_CLASSES];
    let mut scene_ok = 0usize;
    for (s, p) in held.iter().zip(&preds) {
        for (&t, &q) in s.mask.iter().zip(&p.mask) {
            let (t, q) = ((t as usize).min(NUM_CLASSES - 1), q as usize);
            total += 1;
            if t == q {
                correct += 1;
                inter[t] += 1;
                uni[t] += 1;
            } else {
                uni[t] += 1;
                uni[q] += 1;
            }
        }
        if SceneClass::ALL[argmax(&p.scene_probs)] == s.scene {
            scene_ok += 1;
        }
    }
    let ious: Vec<f64> = inter
        .iter()
        .zip(&uni)
        .filter(|(_, &u)| u > 0)
        .map(|(&i, &u)| i as f64 / u as f64)
        .collect();
    Ok(SegFigures {
        scenes: held.len(),
        pixel_accuracy: correct as f64 / total.max(1) as f64,
        mean_iou: ious.iter().sum::<f64>() / ious.len().max(1) as f64,
        scene_accuracy: scene_ok as f64 / held.len().max(1) as f64,
    })
}

pub(crate) fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &x)| if x > b.1 { (i, x) } else { b },
        )
        .0
}

/// Source pixel of output pixel (x, y) under dihedral transform `d` (0..8).
fn dihedral(d: u8, x: usize, y: usize, s: usize) -> usize {
    let (mut x, mut y) = (x, y);
    if d & 4 != 0 {
        std::mem::swap(&mut x, &mut y);
    }
    if d & 1 != 0 {
        x = s - 1 - x;
    }
    if d & 2 != 0 {
        y = s - 1 - y;
    }
    y * s + x
}

struct Batch {
    x: Tensor,
    onehot: Tensor,
    scene: Tensor,
    /// 1 for the classes present in the batch's masks.
    present: Tensor,
}

fn make_batch(picks: &[&Sample], rng: &mut ChaCha8Rng) -> Result<Batch> {
    let s = NET_SIZE;
    let n = picks.len();
    let mut x = Vec::with_capacity(n * 3 * s * s);
    let mut onehot = vec![0f32; n * NUM_CLASSES * s * s];
    let mut scene = vec![0f32; n * NUM_SCENES];
    let mut present = vec![0f32; NUM_CLASSES];
    for (b, smp) in picks.iter().enumerate() {
        let d: u8 = rng.gen_range(0..8);
        let bright: f32 = rng.gen_range(-0.12..0.12);
        let contrast: f32 = rng.gen_range(0.8..1.2);
        let gains: [f32; 3] = [
            rng.gen_range(0.92..1.08),
            rng.gen_range(0.92..1.08),
            rng.gen_range(0.92..1.08),
        ];
        let noise: f32 = rng.gen_range(0.0..0.04);
        let mean: f32 =
            smp.rgb.data.iter().map(|&v| v as f32).sum::<f32>() / smp.rgb.data.len() as f32 / 127.5
                - 1.0;
        for (c, gain) in gains.iter().enumerate() {
            for y in 0..s {
                for xx in 0..s {
                    let v = smp.rgb.data[dihedral(d, xx, y, s) * 3 + c] as f32 / 127.5 - 1.0;
                    let v = ((v - mean) * contrast + mean) * gain
                        + bright
                        + noise * (rng.gen::<f32>() * 2.0 - 1.0);
                    x.push(v.clamp(-1.0, 1.0));
                }
            }
        }
        for y in 0..s {
            for xx in 0..s {
                let k = (smp.mask[dihedral(d, xx, y, s)] as usize).min(NUM_CLASSES - 1);
                onehot[((b * NUM_CLASSES + k) * s + y) * s + xx] = 1.0;
                present[k] = 1.0;
            }
        }
        let si = SceneClass::ALL
            .iter()
            .position(|&c| c == smp.scene)
            .unwrap_or(0);
        scene[b * NUM_SCENES + si] = 1.0;
    }
    let dev = Device::Cpu;
    Ok(Batch {
        x: Tensor::from_vec(x, (n, 3, s, s), &dev)?,
        onehot: Tensor::from_vec(onehot, (n, NUM_CLASSES, s, s), &dev)?,
        scene: Tensor::from_vec(scene, (n, NUM_SCENES), &dev)?,
        present: Tensor::from_vec(present, NUM_CLASSES, &dev)?,
    })
}

/// Class-weighted cross-entropy + `dice_weight` × soft Dice (classes present in the batch)
/// + `scene_weight` × scene cross-entropy.
fn loss(
    net: &CapNet,
    b: &Batch,
    class_weights: &Tensor,
    opts: &TrainOptions,
) -> candle_core::Result<Tensor> {
    let out = net.forward(&b.x)?;
    let (n, _, h, w) = b.onehot.dims4()?;
    let lsm = log_softmax_dim1(&out.logits)?;
    let wmap = b.onehot.broadcast_mul(class_weights)?;
    let ce = ((&lsm * &wmap)?.sum_all()?.neg()? / (n * h * w) as f64)?;
    let p = lsm.exp()?;
    let inter = (&p * &b.onehot)?.sum((0, 2, 3))?;
    let psum = p.sum((0, 2, 3))?;
    let ysum = b.onehot.sum((0, 2, 3))?;
    let dice = ((inter * 2.0)? + 1.0)?.div(&((psum + ysum)? + 1.0)?)?;
    let npresent = b.present.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64;
    let dice_loss = ((dice.neg()? + 1.0)? * &b.present)?.sum_all()? / npresent;
    let slsm = log_softmax_dim1(&out.scene_logits)?;
    let sce = ((slsm * &b.scene)?.sum_all()?.neg()? / n as f64)?;
    ce + (dice_loss? * opts.dice_weight)? + (sce * opts.scene_weight)?
}

/// Seeded initialisation in sorted name order: convolution and linear weights uniform
/// ±√(6/fan_in) (He), biases 0, group-norm scales 1.
fn seeded_init(varmap: &VarMap, seed: u64) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var: &Var = &data[name];
        let shape = var.shape().clone();
        let dims = shape.dims();
        let fan_in: usize = if dims.len() > 1 {
            dims[1..].iter().product()
        } else {
            dims[0]
        };
        let is_norm = name.contains(".norm.");
        let vals: Vec<f32> = (0..shape.elem_count())
            .map(|_| {
                if name.ends_with("bias") {
                    0.0
                } else if is_norm {
                    1.0
                } else {
                    let bound = (6.0 / fan_in as f64).sqrt();
                    rng.gen_range(-bound..bound) as f32
                }
            })
            .collect();
        var.set(&Tensor::from_vec(vals, shape, &Device::Cpu)?)?;
    }
    Ok(())
}

/// The weights' metadata: the recipe, the seeds and the held-out figures.
pub fn metadata(
    opts: &TrainOptions,
    step: usize,
    secs: f64,
    fig: &SegFigures,
) -> HashMap<String, String> {
    let mut m = HashMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    put("format", "strata-embedded-captioner/1".into());
    put("widths", opts.widths.to_metadata());
    put("net_size", NET_SIZE.to_string());
    put(
        "recipe",
        format!(
            "U-Net 4 levels, group norm; {} synth scenes (every 4th at 128 px shrunk), dihedral + colour jitter; \
             loss = weighted CE + {} dice + {} scene CE; AdamW lr {} wd {} warm-up {} cosine; batch {}",
            opts.train_scenes, opts.dice_weight, opts.scene_weight, opts.lr, opts.weight_decay, opts.warmup, opts.batch
        ),
    );
    put("steps", step.to_string());
    put("train_scenes", opts.train_scenes.to_string());
    put("validation_scenes", opts.validation_scenes.to_string());
    put("planned_steps", opts.steps.to_string());
    put(
        "train_seed",
        format!("scene_seed({TRAIN_SEED}, 0..{})", opts.train_scenes),
    );
    put("init_seed", opts.seed.to_string());
    put(
        "validation",
        format!(
            "scene_seed({VALIDATION_SEED}, 0..{}) at 64 px",
            opts.validation_scenes
        ),
    );
    put(
        "validation_pixel_accuracy",
        format!("{:.4}", fig.pixel_accuracy),
    );
    put("validation_mean_iou", format!("{:.4}", fig.mean_iou));
    put(
        "validation_scene_accuracy",
        format!("{:.4}", fig.scene_accuracy),
    );
    put("train_seconds", format!("{secs:.0}"));
    m
}

/// Write the variables with metadata as safetensors (atomically).
pub fn save(varmap: &VarMap, meta: HashMap<String, String>, path: &Path) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut tensors: Vec<(String, Tensor)> = data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let bytes = safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(meta))
        .map_err(|e| CaptionerError::Weights {
            path: path.to_path_buf(),
            what: format!("serialising the weights: {e}"),
            hint: "report this as a bug".into(),
        })?;
    strata_io::atomic::write(path, &bytes).map_err(|source| CaptionerError::Io {
        path: path.to_path_buf(),
        what: "writing the captioner weights".into(),
        source,
    })
}

/// Train and write `out`; `log` receives progress lines. Returns the validation figures.
pub fn train(opts: &TrainOptions, out: &Path, log: &mut dyn FnMut(&str)) -> Result<SegFigures> {
    let t0 = Instant::now();
    let pool = training_pool(opts.train_scenes, TRAIN_SEED);
    let val = samples(opts.validation_scenes, VALIDATION_SEED);
    log(&format!(
        "generated {} training + {} validation scenes in {:.1} s",
        pool.len(),
        val.len(),
        t0.elapsed().as_secs_f64()
    ));
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let net = CapNet::build(vb, opts.widths)?;
    seeded_init(&varmap, opts.seed)?;
    let nparams: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    log(&format!(
        "network widths {} with {nparams} parameters",
        opts.widths.to_metadata()
    ));

    // class weights (mean frequency / frequency)^½ clamped to [0.3, 5]
    let mut freq = [0f64; NUM_CLASSES];
    for s in &pool {
        for &k in &s.mask {
            freq[(k as usize).min(NUM_CLASSES - 1)] += 1.0;
        }
    }
    let total: f64 = freq.iter().sum();
    let present = freq.iter().filter(|&&f| f > 0.0).count().max(1) as f64;
    let weights: Vec<f32> = freq
        .iter()
        .map(|&f| {
            if f == 0.0 {
                1.0
            } else {
                (total / present / f).sqrt().clamp(0.3, 5.0) as f32
            }
        })
        .collect();
    let cw = Tensor::from_vec(weights, (1, NUM_CLASSES, 1, 1), &Device::Cpu)?;

    let mut opt = candle_nn::AdamW::new(
        varmap.all_vars(),
        candle_nn::ParamsAdamW {
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            ..Default::default()
        },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0xBA7C);
    let mut order: Vec<usize> = (0..pool.len()).collect();
    let mut pos = order.len();
    let mut ema = f64::NAN;
    let t_train = Instant::now();
    for step in 0..opts.steps {
        let mut picks = Vec::with_capacity(opts.batch);
        for _ in 0..opts.batch {
            if pos == order.len() {
                order.shuffle(&mut rng);
                pos = 0;
            }
            picks.push(&pool[order[pos]]);
            pos += 1;
        }
        let batch = make_batch(&picks, &mut rng)?;
        let lr = if step < opts.warmup {
            opts.lr * (step + 1) as f64 / opts.warmup as f64
        } else {
            let t = (step - opts.warmup) as f64 / (opts.steps - opts.warmup).max(1) as f64;
            opts.lr * (0.02 + 0.98 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
        };
        opt.set_learning_rate(lr);
        let l = loss(&net, &batch, &cw, opts)?;
        opt.backward_step(&l)?;
        let lv = l.to_scalar::<f32>()? as f64;
        ema = if ema.is_nan() {
            lv
        } else {
            0.95 * ema + 0.05 * lv
        };
        let done = step + 1;
        if done % 25 == 0 || done == opts.steps {
            log(&format!(
                "step {done}/{} loss {ema:.4} lr {lr:.5} {:.2} s/step",
                opts.steps,
                t_train.elapsed().as_secs_f64() / done as f64
            ));
        }
        if (opts.checkpoint_every > 0 && done % opts.checkpoint_every == 0) || done == opts.steps {
            let fig = evaluate(&net, &val)?;
            log(&format!(
                "step {done}: validation pixel accuracy {:.3} mIoU {:.3} scene accuracy {:.3}",
                fig.pixel_accuracy, fig.mean_iou, fig.scene_accuracy
            ));
            save(
                &varmap,
                metadata(opts, done, t0.elapsed().as_secs_f64(), &fig),
                out,
            )?;
            if done == opts.steps {
                return Ok(fig);
            }
        }
    }
    let fig = evaluate(&net, &val)?;
    save(
        &varmap,
        metadata(opts, 0, t0.elapsed().as_secs_f64(), &fig),
        out,
    )?;
    Ok(fig)
}
