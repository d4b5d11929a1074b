//! The strata segmenter: a tiny U-Net (candle) trained on procedural `strata-synth` scenes
//! at 64×64 to predict the element mask, with a scene-class head on the bottleneck. The mask
//! feeds the relation checker (relation fidelity); the pooled bottleneck is the feature
//! space of the "strata-synthetic FID" (not comparable to standard FID).
//!
//! Everything that trains is built from primitive candle ops (convolution, nearest
//! upsampling, average pooling, a log-softmax written out), so gradients are real.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{conv2d, linear, Conv2d, Conv2dConfig, Linear, Optimizer, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Deserializer, Serialize};
use strata_synth::{check, generate, Element, MaskView, SceneClass};

use crate::error::EvalError;
use crate::images::Rgb;

/// Side of the segmenter's input and output.
pub const SEG_SIZE: usize = 64;
/// Mask classes (the synth element table).
pub const NUM_CLASSES: usize = Element::ALL.len();
/// Scene classes of the classifier head.
pub const NUM_SCENES: usize = SceneClass::ALL.len();
/// Width of the feature vector used for the strata-synthetic FID.
pub const FEATURE_DIM: usize = 32;

/// The network: 8 channels at full resolution, 16 at ½, 32 (= FEATURE_DIM) at ¼ — small
/// enough to train on two CPU cores in minutes.
pub struct SegNet {
    pub varmap: VarMap,
    dtype: DType,
    e1a: Conv2d,
    e1b: Conv2d,
    e2a: Conv2d,
    e2b: Conv2d,
    mid: Conv2d,
    d2: Conv2d,
    d1: Conv2d,
    head: Conv2d,
    scene: Linear,
    /// Base seed of the held-out scenes for this network (see [`Segmenter::held_out_seed`]):
    /// `2·seed + 2` of its training options; training used `2·seed + 1`.
    pub held_out_seed: u64,
}

/// What one forward pass gives.
pub struct SegOutput {
    /// (B, NUM_CLASSES, H, W)
    pub logits: Tensor,
    /// (B, NUM_SCENES)
    pub scene_logits: Tensor,
    /// (B, FEATURE_DIM): global average of the bottleneck.
    pub features: Tensor,
}

fn conv(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    name: &str,
) -> candle_core::Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: k / 2,
        ..Default::default()
    };
    conv2d(cin, cout, k, cfg, vb.pp(name))
}

/// Log-softmax over dimension 1 from primitive ops (max is detached; it only shifts).
pub fn log_softmax_dim1(x: &Tensor) -> candle_core::Result<Tensor> {
    let m = x.max_keepdim(1)?.detach();
    let s = x.broadcast_sub(&m)?;
    let lse = s.exp()?.sum_keepdim(1)?.log()?;
    s.broadcast_sub(&lse)
}

/// Nearest-neighbour ×2 upsampling from broadcast + reshape. candle 0.11's
/// `upsample_nearest2d` backward *overwrites* the gradient already accumulated for its input
/// instead of adding to it, which silently drops every other use of that tensor (here the
/// bottleneck also feeds the scene head); broadcasting has a correct, summing backward.
pub fn upsample2x(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, 2, w, 2))?
        .reshape((b, c, 2 * h, 2 * w))
}

impl SegNet {
    /// A fresh network with candle's default (seeded through `Device` RNG is not portable, so
    /// weights are drawn here from `seed`) initialisation.
    pub fn new(seed: u64, dtype: DType) -> Result<SegNet, EvalError> {
        let varmap = VarMap::new();
        let net = SegNet::build(varmap, dtype)?;
        // deterministic re-initialisation: uniform(±1.7/sqrt(fan_in)) from a seeded RNG
        seeded_init(&net.varmap, seed, dtype, |rng, fan_in| {
            let bound = 1.0 / (fan_in as f64).sqrt();
            rng.gen_range(-bound..bound) * 1.7
        })?;
        Ok(net)
    }

    fn build(varmap: VarMap, dtype: DType) -> Result<SegNet, EvalError> {
        let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
        let b = FEATURE_DIM / 4;
        Ok(SegNet {
            e1a: conv(vb.clone(), 3, b, 3, "e1a")?,
            e1b: conv(vb.clone(), b, b, 3, "e1b")?,
            e2a: conv(vb.clone(), b, 2 * b, 3, "e2a")?,
            e2b: conv(vb.clone(), 2 * b, 2 * b, 3, "e2b")?,
            mid: conv(vb.clone(), 2 * b, 4 * b, 3, "mid")?,
            d2: conv(vb.clone(), 4 * b + 2 * b, 2 * b, 3, "d2")?,
            d1: conv(vb.clone(), 2 * b + b, b, 3, "d1")?,
            head: conv(vb.clone(), b, NUM_CLASSES, 1, "head")?,
            scene: linear(4 * b, NUM_SCENES, vb.pp("scene"))?,
            held_out_seed: 2,
            varmap,
            dtype,
        })
    }

    /// Load weights written by [`SegNet::save`].
    pub fn load(path: &Path) -> Result<SegNet, EvalError> {
        let mut varmap = VarMap::new();
        let net = SegNet::build(varmap.clone(), DType::F32)?;
        varmap.load(path).map_err(|e| EvalError::Weights {
            path: path.to_path_buf(),
            name: "*".into(),
            what: format!("{e}; delete the file to retrain the segmenter"),
        })?;
        Ok(net)
    }

    /// Write the weights (safetensors) through a temporary name.
    pub fn save(&self, path: &Path) -> Result<(), EvalError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        self.varmap.save(&tmp)?;
        std::fs::rename(&tmp, path).map_err(|source| EvalError::Io {
            path: path.to_path_buf(),
            what: "renaming the segmenter weights into place".into(),
            source,
        })
    }

    /// `x`: (B, 3, H, W) with values in [-1, 1], H and W divisible by 4.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<SegOutput> {
        let e1 = self.e1b.forward(&self.e1a.forward(x)?.relu()?)?.relu()?;
        let p1 = e1.avg_pool2d(2)?;
        let e2 = self.e2b.forward(&self.e2a.forward(&p1)?.relu()?)?.relu()?;
        let p2 = e2.avg_pool2d(2)?;
        let mid = self.mid.forward(&p2)?.relu()?;
        let features = mid.mean(D::Minus1)?.mean(D::Minus1)?;
        let scene_logits = self.scene.forward(&features)?;
        let u2 = upsample2x(&mid)?;
        let d2 = self.d2.forward(&Tensor::cat(&[&u2, &e2], 1)?)?.relu()?;
        let u1 = upsample2x(&d2)?;
        let d1 = self.d1.forward(&Tensor::cat(&[&u1, &e1], 1)?)?.relu()?;
        let logits = self.head.forward(&d1)?;
        Ok(SegOutput {
            logits,
            scene_logits,
            features,
        })
    }

    /// Images (any size) → network input at SEG_SIZE.
    pub fn input(&self, imgs: &[&Rgb]) -> Result<Tensor, EvalError> {
        let s = SEG_SIZE;
        let mut v = Vec::with_capacity(imgs.len() * 3 * s * s);
        for img in imgs {
            let r = strata_image::resize(img, s, s, strata_image::Filter::Bilinear);
            for c in 0..3 {
                for i in 0..s * s {
                    v.push(r.data[i * 3 + c] as f32 / 127.5 - 1.0);
                }
            }
        }
        Ok(Tensor::from_vec(v, (imgs.len(), 3, s, s), &Device::Cpu)?.to_dtype(self.dtype)?)
    }

    /// Predicted masks (SEG_SIZE², class ids), scene classes and features, in batches.
    pub fn predict(&self, imgs: &[&Rgb]) -> Result<Vec<Prediction>, EvalError> {
        let mut out = Vec::with_capacity(imgs.len());
        for chunk in imgs.chunks(32) {
            let x = self.input(chunk)?;
            let o = self.forward(&x)?;
            let mask = o.logits.argmax(1)?.flatten_from(1)?.to_vec2::<u32>()?;
            let scene = o.scene_logits.argmax(1)?.to_vec1::<u32>()?;
            let feats = o.features.to_dtype(DType::F64)?.to_vec2::<f64>()?;
            for ((m, s), f) in mask.into_iter().zip(scene).zip(feats) {
                out.push(Prediction {
                    mask: m.into_iter().map(|v| v as u8).collect(),
                    scene: SceneClass::ALL[s as usize],
                    features: f,
                });
            }
        }
        Ok(out)
    }
}

/// A network that segments images for relation fidelity and gives the sFID*/sKID* feature
/// space: strata's small [`SegNet`] (trained per run or loaded), or any other network with
/// the synth element table as its mask classes (the embedded captioner's network implements
/// it in strata-captioner). Its quality is measured by [`crate::run::evaluate`] on
/// synthetic scenes from [`held_out_seed`](Segmenter::held_out_seed), never on scenes it was
/// trained or tuned on.
pub trait Segmenter: Send + Sync {
    /// One line: which network, where its weights come from, its pooled feature vector.
    fn description(&self) -> String;

    /// Base seed `b` of held-out synthetic scenes (scene `i`: class `i mod 11`, seed
    /// `strata_synth::dataset::scene_seed(b, i)`) disjoint from the scenes the network
    /// was trained or tuned on.
    fn held_out_seed(&self) -> u64;

    /// Per image: a [`SEG_SIZE`]² element mask, a scene class and the pooled feature vector.
    fn predict(&self, imgs: &[&Rgb]) -> Result<Vec<Prediction>, EvalError>;
}

impl std::fmt::Debug for dyn Segmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description())
    }
}

impl Segmenter for SegNet {
    fn description(&self) -> String {
        format!("strata's small SegNet (U-Net, 8/16/32 channels) trained on procedural scenes; features: the {FEATURE_DIM}-d global average of its bottleneck")
    }

    fn held_out_seed(&self) -> u64 {
        self.held_out_seed
    }

    fn predict(&self, imgs: &[&Rgb]) -> Result<Vec<Prediction>, EvalError> {
        SegNet::predict(self, imgs)
    }
}

/// The segmenter's view of one image.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// SEG_SIZE × SEG_SIZE class ids.
    pub mask: Vec<u8>,
    pub scene: SceneClass,
    pub features: Vec<f64>,
}

/// A training / held-out sample.
#[derive(Debug, Clone)]
pub struct Sample {
    pub rgb: Rgb,
    pub mask: Vec<u8>,
    pub scene: SceneClass,
    /// The relation triples the generator built into the scene.
    pub triples: Vec<strata_synth::Triple>,
}

/// `count` synthetic scenes at SEG_SIZE, classes round-robin, seeds derived from `seed`.
pub fn synth_samples(count: usize, seed: u64) -> Vec<Sample> {
    (0..count)
        .into_par_iter()
        .map(|i| {
            let class = SceneClass::ALL[i % NUM_SCENES];
            let s = generate(
                class,
                SEG_SIZE as u32,
                strata_synth::dataset::scene_seed(seed, i),
            );
            Sample {
                rgb: Rgb {
                    width: SEG_SIZE,
                    height: SEG_SIZE,
                    data: s.rgb,
                },
                mask: s.mask,
                scene: class,
                triples: s.triples,
            }
        })
        .collect()
}

/// Training settings.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOptions {
    pub train_scenes: usize,
    pub held_out_scenes: usize,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            train_scenes: 440,
            held_out_scenes: 110,
            steps: 400,
            batch: 8,
            lr: 5e-3,
            seed: 0,
        }
    }
}

/// Held-out quality of the segmenter, reported next to relation fidelity.
/// Written to metrics.json and read back by the demo report; a NaN (the training loss of a
/// loaded segmenter) is written as `null` and read back as NaN.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegQuality {
    /// Which segmenter ([`Segmenter::description`]).
    #[serde(default)]
    pub segmenter: String,
    /// Base seed of the held-out scenes ([`Segmenter::held_out_seed`]).
    #[serde(default)]
    pub held_out_seed: Option<u64>,
    pub held_out_scenes: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub pixel_accuracy: f64,
    /// Mean IoU over the classes present in the held-out masks or predictions.
    #[serde(deserialize_with = "nan_if_null")]
    pub mean_iou: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub scene_accuracy: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub final_train_loss: f64,
    /// Relation triples of the held-out scenes that the checker accepts on the ground-truth
    /// mask and on the predicted mask.
    #[serde(deserialize_with = "nan_if_null")]
    pub relations_on_truth: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub relations_on_prediction: f64,
}

fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn batch_tensors(
    net: &SegNet,
    samples: &[&Sample],
    flips: &[(bool, bool)],
) -> Result<(Tensor, Tensor, Tensor), EvalError> {
    let s = SEG_SIZE;
    let n = samples.len();
    let mut x = Vec::with_capacity(n * 3 * s * s);
    let mut onehot = vec![0f32; n * NUM_CLASSES * s * s];
    let mut scene = vec![0f32; n * NUM_SCENES];
    for (b, (smp, &(fx, fy))) in samples.iter().zip(flips).enumerate() {
        let src = |x: usize, y: usize| {
            let xx = if fx { s - 1 - x } else { x };
            let yy = if fy { s - 1 - y } else { y };
            yy * s + xx
        };
        for c in 0..3 {
            for y in 0..s {
                for xx in 0..s {
                    x.push(smp.rgb.data[src(xx, y) * 3 + c] as f32 / 127.5 - 1.0);
                }
            }
        }
        for y in 0..s {
            for xx in 0..s {
                let k = smp.mask[src(xx, y)] as usize;
                let k = k.min(NUM_CLASSES - 1);
                onehot[((b * NUM_CLASSES + k) * s + y) * s + xx] = 1.0;
            }
        }
        let si = SceneClass::ALL
            .iter()
            .position(|&c| c == smp.scene)
            .unwrap();
        scene[b * NUM_SCENES + si] = 1.0;
    }
    let dev = Device::Cpu;
    Ok((
        Tensor::from_vec(x, (n, 3, s, s), &dev)?.to_dtype(net.dtype)?,
        Tensor::from_vec(onehot, (n, NUM_CLASSES, s, s), &dev)?.to_dtype(net.dtype)?,
        Tensor::from_vec(scene, (n, NUM_SCENES), &dev)?.to_dtype(net.dtype)?,
    ))
}

/// Pixel cross-entropy (class-weighted) plus 0.2 × scene cross-entropy.
pub fn loss(
    out: &SegOutput,
    onehot: &Tensor,
    scene: &Tensor,
    class_weights: &Tensor,
) -> candle_core::Result<Tensor> {
    let (b, _, h, w) = onehot.dims4()?;
    let lsm = log_softmax_dim1(&out.logits)?;
    let wmap = onehot.broadcast_mul(class_weights)?;
    let pix = (lsm * wmap)?.sum_all()?.neg()? / (b * h * w) as f64;
    let slsm = log_softmax_dim1(&out.scene_logits)?;
    let sc = (slsm * scene)?.sum_all()?.neg()? / b as f64;
    pix? + (sc? * 0.2)?
}

/// Train on synthetic scenes; `progress(step, loss)` is called after each step.
pub fn train(
    opts: &TrainOptions,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<(SegNet, SegQuality), EvalError> {
    let train_set = synth_samples(opts.train_scenes, opts.seed.wrapping_mul(2).wrapping_add(1));
    let held = synth_samples(
        opts.held_out_scenes,
        opts.seed.wrapping_mul(2).wrapping_add(2),
    );
    let mut net = SegNet::new(opts.seed, DType::F32)?;
    net.held_out_seed = opts.seed.wrapping_mul(2).wrapping_add(2);
    // class weights: (mean frequency / frequency)^½, clamped, from the training masks
    let mut freq = vec![0f64; NUM_CLASSES];
    for s in &train_set {
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
                ((total / present / f).sqrt()).clamp(0.3, 4.0) as f32
            }
        })
        .collect();
    let cw = Tensor::from_vec(weights, (1, NUM_CLASSES, 1, 1), &Device::Cpu)?;
    let mut opt = candle_nn::AdamW::new(
        net.varmap.all_vars(),
        candle_nn::ParamsAdamW {
            lr: opts.lr,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5E6);
    let mut order: Vec<usize> = (0..train_set.len()).collect();
    let mut pos = order.len();
    let mut ema = f64::NAN;
    for step in 0..opts.steps {
        let mut picks = Vec::with_capacity(opts.batch);
        let mut flips = Vec::with_capacity(opts.batch);
        for _ in 0..opts.batch {
            if pos == order.len() {
                order.shuffle(&mut rng);
                pos = 0;
            }
            picks.push(&train_set[order[pos]]);
            flips.push((rng.gen_bool(0.5), rng.gen_bool(0.5)));
            pos += 1;
        }
        let (x, onehot, scene) = batch_tensors(&net, &picks, &flips)?;
        // cosine decay of the learning rate
        let t = step as f64 / opts.steps.max(1) as f64;
        opt.set_learning_rate(opts.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()));
        let out = net.forward(&x)?;
        let l = loss(&out, &onehot, &scene, &cw)?;
        opt.backward_step(&l)?;
        let last = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        ema = if ema.is_nan() {
            last
        } else {
            0.9 * ema + 0.1 * last
        };
        progress(step + 1, last);
    }
    let quality = evaluate(&net, &held, ema)?;
    Ok((net, quality))
}

/// Pixel accuracy, mIoU, scene accuracy and relation agreement on held-out scenes.
pub fn evaluate(
    net: &dyn Segmenter,
    held: &[Sample],
    train_loss: f64,
) -> Result<SegQuality, EvalError> {
    let imgs: Vec<&Rgb> = held.iter().map(|s| &s.rgb).collect();
    let preds = net.predict(&imgs)?;
    let mut correct = 0usize;
    let mut total = 0usize;
    let mut inter = vec![0usize; NUM_CLASSES];
    let mut uni = vec![0usize; NUM_CLASSES];
    let mut scene_ok = 0usize;
    let mut rel_truth = (0usize, 0usize);
    let mut rel_pred = (0usize, 0usize);
    for (s, p) in held.iter().zip(&preds) {
        for (&t, &q) in s.mask.iter().zip(&p.mask) {
            total += 1;
            let (t, q) = (t as usize, q as usize);
            if t == q {
                correct += 1;
                inter[t] += 1;
                uni[t] += 1;
            } else {
                uni[t.min(NUM_CLASSES - 1)] += 1;
                uni[q] += 1;
            }
        }
        if p.scene == s.scene {
            scene_ok += 1;
        }
        // relation agreement on the triples the generator built into the scene
        let truth_view = MaskView::new(SEG_SIZE, SEG_SIZE, &s.mask)?;
        let pred_view = MaskView::new(SEG_SIZE, SEG_SIZE, &p.mask)?;
        for t in &s.triples {
            rel_truth.1 += 1;
            rel_pred.1 += 1;
            rel_truth.0 += check(&truth_view, t)?.holds as usize;
            rel_pred.0 += check(&pred_view, t)?.holds as usize;
        }
    }
    let ious: Vec<f64> = inter
        .iter()
        .zip(&uni)
        .filter(|(_, &u)| u > 0)
        .map(|(&i, &u)| i as f64 / u as f64)
        .collect();
    let frac = |(a, b): (usize, usize)| {
        if b == 0 {
            f64::NAN
        } else {
            a as f64 / b as f64
        }
    };
    Ok(SegQuality {
        segmenter: net.description(),
        held_out_seed: Some(net.held_out_seed()),
        held_out_scenes: held.len(),
        pixel_accuracy: correct as f64 / total.max(1) as f64,
        mean_iou: ious.iter().sum::<f64>() / ious.len().max(1) as f64,
        scene_accuracy: scene_ok as f64 / held.len().max(1) as f64,
        final_train_loss: train_loss,
        relations_on_truth: frac(rel_truth),
        relations_on_prediction: frac(rel_pred),
    })
}

/// Re-initialises every variable of `varmap` from `seed`, in sorted name order: biases 0,
/// other weights `draw(rng, fan_in)`. candle's own initialisers draw from the device RNG,
/// which is not portable, so the small networks strata trains (segmenter, GSHPS stand-in) use
/// this to make the same seed give the same network everywhere.
pub(crate) fn seeded_init(
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    draw: impl Fn(&mut ChaCha8Rng, usize) -> f64,
) -> Result<(), EvalError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut names: Vec<_> = varmap.data().lock().unwrap().keys().cloned().collect();
    names.sort();
    for name in names {
        let var = varmap.data().lock().unwrap()[&name].clone();
        let shape = var.shape().clone();
        let dims = shape.dims();
        let fan_in: usize = if dims.len() > 1 {
            dims[1..].iter().product()
        } else {
            dims[0]
        };
        let vals: Vec<f64> = (0..shape.elem_count())
            .map(|_| {
                if name.ends_with("bias") {
                    0.0
                } else {
                    draw(&mut rng, fan_in)
                }
            })
            .collect();
        var.set(&Tensor::from_vec(vals, shape, &Device::Cpu)?.to_dtype(dtype)?)?;
    }
    Ok(())
}
