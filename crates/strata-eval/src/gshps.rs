//! GSHPS (as defined in the authors' Word2Scene work): the cosine similarity between the
//! mean feature vector of the real images and that of the generated images, over images
//! whose file names match pairwise.
//!
//! Features are VGG16's whole `features` stack (512×7×7 flattened) of a scene classifier,
//! with torchvision's preprocessing (Pillow bilinear resize of the shorter side to 256,
//! centre crop 224, ImageNet mean/std), when the user gives VGG16 weights (torchvision
//! layout; the classifier head is not used). Without them a stand-in is used and labelled as
//! such ("GSHPS (stand-in)"): a small CNN strata trains on scene-labelled images disjoint
//! from every scored image (fresh synthetic scenes, or a folder the user names; see
//! `metrics::gshps`) ([`SceneCnn`], 64×64 input, features 32×8×8 flattened). Its number is
//! NOT the paper's GSHPS.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{
    conv2d, linear, Conv2d, Conv2dConfig, Linear, Module, Optimizer, VarBuilder, VarMap,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::backbone::{Arch, Backbone};
use crate::error::EvalError;
use crate::images::{to_tensor, Rgb};
use strata_image::{center_crop, resize as resize_pil, shortest_edge_size, Crop, Filter};

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// GSHPS from two feature matrices (rows = paired images): cosine of the column means.
pub fn gshps(real: &Tensor, generated: &Tensor) -> Result<f64, EvalError> {
    if real.dim(1)? != generated.dim(1)? || real.dim(0)? == 0 || generated.dim(0)? == 0 {
        return Err(EvalError::FeatureShape {
            what: format!(
                "GSHPS feature matrices {:?} and {:?}",
                real.dims(),
                generated.dims()
            ),
        });
    }
    let a = real.to_dtype(DType::F64)?.mean(0)?;
    let b = generated.to_dtype(DType::F64)?.mean(0)?;
    let dot = (&a * &b)?.sum_all()?.to_scalar::<f64>()?;
    let na = a.sqr()?.sum_all()?.sqrt()?.to_scalar::<f64>()?;
    let nb = b.sqr()?.sum_all()?.sqrt()?.to_scalar::<f64>()?;
    if na == 0.0 || nb == 0.0 {
        return Err(EvalError::FeatureShape {
            what: "GSHPS: a mean feature vector is all zeros (no activation)".into(),
        });
    }
    Ok(dot / (na * nb))
}

/// torchvision's `Resize(256)`, `CenterCrop(224)`, `ToTensor`, `Normalize(ImageNet)` on
/// PIL images.
pub fn vgg_preprocess(imgs: &[&Rgb], device: &Device) -> Result<Tensor, EvalError> {
    let prepared: Vec<Rgb> = imgs
        .iter()
        .map(|img| {
            let (w, h) = shortest_edge_size(img.width, img.height, 256);
            let r = resize_pil(img, w, h, Filter::Bilinear);
            center_crop(&r, 224, 224, Crop::Torchvision)
        })
        .collect();
    Ok(to_tensor(&prepared, IMAGENET_MEAN, IMAGENET_STD, device)?)
}

/// Side of the stand-in classifier's input.
pub const CNN_SIZE: usize = 64;

/// The stand-in scene classifier: three 3×3 conv + ReLU + 2×2 average-pool stages
/// (8, 16, 32 channels), a linear head on the global mean.
pub struct SceneCnn {
    pub varmap: VarMap,
    c1: Conv2d,
    c2: Conv2d,
    c3: Conv2d,
    head: Linear,
    /// Scene names, index = class.
    pub classes: Vec<String>,
    pub dtype: DType,
}

impl SceneCnn {
    /// A fresh network, initialised uniform(±1.7/√fan_in) from `seed`.
    pub fn new(classes: Vec<String>, seed: u64, dtype: DType) -> Result<Self, EvalError> {
        let varmap = VarMap::new();
        let net = Self::build(varmap, classes, dtype)?;
        crate::seg::seeded_init(&net.varmap, seed, dtype, |rng, fan_in| {
            let bound = 1.7 / (fan_in as f64).sqrt();
            rng.gen_range(-bound..bound)
        })?;
        Ok(net)
    }

    fn build(varmap: VarMap, classes: Vec<String>, dtype: DType) -> Result<Self, EvalError> {
        let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
        let cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(SceneCnn {
            c1: conv2d(3, 8, 3, cfg, vb.pp("c1"))?,
            c2: conv2d(8, 16, 3, cfg, vb.pp("c2"))?,
            c3: conv2d(16, 32, 3, cfg, vb.pp("c3"))?,
            head: linear(32, classes.len(), vb.pp("head"))?,
            varmap,
            classes,
            dtype,
        })
    }

    /// `(features N×2048, logits N×classes)` for `x`: N×3×64×64 in [−1, 1].
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let h = self.c1.forward(x)?.relu()?.avg_pool2d(2)?;
        let h = self.c2.forward(&h)?.relu()?.avg_pool2d(2)?;
        let h = self.c3.forward(&h)?.relu()?.avg_pool2d(2)?;
        let logits = self.head.forward(&h.mean(D::Minus1)?.mean(D::Minus1)?)?;
        Ok((h.flatten_from(1)?, logits))
    }

    /// Images as the network's input (Pillow bilinear resize to 64×64, [−1, 1]), optionally
    /// mirrored left–right.
    pub fn input(&self, imgs: &[&Rgb], flips: &[bool]) -> Result<Tensor, EvalError> {
        let s = CNN_SIZE;
        let mut v = Vec::with_capacity(imgs.len() * 3 * s * s);
        for (k, img) in imgs.iter().enumerate() {
            let r = resize_pil(img, s, s, Filter::Bilinear);
            let flip = flips.get(k).copied().unwrap_or(false);
            for c in 0..3 {
                for y in 0..s {
                    for x in 0..s {
                        let xx = if flip { s - 1 - x } else { x };
                        v.push(r.data[(y * s + xx) * 3 + c] as f32 / 127.5 - 1.0);
                    }
                }
            }
        }
        Ok(Tensor::from_vec(v, (imgs.len(), 3, s, s), &Device::Cpu)?.to_dtype(self.dtype)?)
    }

    /// Mean cross-entropy of `logits` against class indices.
    pub fn loss(logits: &Tensor, labels: &[usize]) -> candle_core::Result<Tensor> {
        let (n, k) = logits.dims2()?;
        let mut oh = vec![0f64; n * k];
        for (i, &l) in labels.iter().enumerate() {
            oh[i * k + l] = 1.0;
        }
        let oh = Tensor::from_vec(oh, (n, k), logits.device())?.to_dtype(logits.dtype())?;
        let lsm = crate::seg::log_softmax_dim1(logits)?;
        (lsm * oh)?.sum_all()?.neg()? / n as f64
    }

    /// Weights written by [`SceneCnn::save`] (with `*.classes.json` beside them).
    pub fn load(path: &Path) -> Result<Self, EvalError> {
        let cpath = path.with_extension("classes.json");
        let classes: Vec<String> = std::fs::read_to_string(&cpath)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .ok_or_else(|| EvalError::WeightsFile {
                path: cpath.clone(),
                what: "missing or unreadable class list; delete the classifier file to retrain"
                    .into(),
            })?;
        let mut varmap = VarMap::new();
        let net = Self::build(varmap.clone(), classes, DType::F32)?;
        varmap.load(path).map_err(|e| EvalError::WeightsFile {
            path: path.to_path_buf(),
            what: format!("{e}; delete the file to retrain the stand-in classifier"),
        })?;
        Ok(net)
    }

    pub fn save(&self, path: &Path) -> Result<(), EvalError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        self.varmap.save(&tmp)?;
        std::fs::write(
            path.with_extension("classes.json"),
            serde_json::to_string(&self.classes).unwrap_or_default(),
        )
        .map_err(|source| EvalError::Io {
            path: path.with_extension("classes.json"),
            what: "writing the classifier's class list".into(),
            source,
        })?;
        std::fs::rename(&tmp, path).map_err(|source| EvalError::Io {
            path: path.to_path_buf(),
            what: "renaming the classifier weights into place".into(),
            source,
        })
    }
}

/// How the stand-in was trained and how good it is (written beside its weights as
/// `*.quality.json` and read back with them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StandInQuality {
    pub classes: Vec<String>,
    pub train_images: usize,
    pub held_out_images: usize,
    /// Accuracy on the held-out fifth of the real images (None when there were too few).
    pub held_out_accuracy: Option<f64>,
    pub steps: usize,
    pub final_loss: f64,
}

/// Training settings for the stand-in.
#[derive(Debug, Clone, Serialize)]
pub struct CnnTrainOptions {
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
}

impl Default for CnnTrainOptions {
    fn default() -> Self {
        CnnTrainOptions {
            steps: 200,
            batch: 16,
            lr: 3e-3,
            seed: 0,
        }
    }
}

/// Train the stand-in on `(image, scene)` pairs; every fifth image (when there are at
/// least 10) is held out to measure accuracy.
pub fn train_scene_cnn(
    data: &[(&Rgb, &str)],
    opts: &CnnTrainOptions,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<(SceneCnn, StandInQuality), EvalError> {
    let mut classes: Vec<String> = data.iter().map(|(_, s)| s.to_string()).collect();
    classes.sort();
    classes.dedup();
    if classes.len() < 2 {
        return Err(EvalError::TooFewSamples {
            what: "the stand-in GSHPS classifier (distinct scene labels)".into(),
            need: 2,
            got: classes.len(),
        });
    }
    let label = |s: &str| classes.iter().position(|c| c == s).unwrap_or(0);
    let hold = data.len() >= 10;
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for (i, d) in data.iter().enumerate() {
        if hold && i % 5 == 4 {
            held.push(*d);
        } else {
            train.push(*d);
        }
    }
    let net = SceneCnn::new(classes.clone(), opts.seed, DType::F32)?;
    let mut opt = candle_nn::AdamW::new(
        net.varmap.all_vars(),
        candle_nn::ParamsAdamW {
            lr: opts.lr,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x6595);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut pos = order.len();
    let mut last = f64::NAN;
    for step in 0..opts.steps {
        let mut imgs = Vec::with_capacity(opts.batch);
        let mut labels = Vec::with_capacity(opts.batch);
        let mut flips = Vec::with_capacity(opts.batch);
        for _ in 0..opts.batch.min(train.len()) {
            if pos == order.len() {
                order.shuffle(&mut rng);
                pos = 0;
            }
            let (img, s) = train[order[pos]];
            imgs.push(img);
            labels.push(label(s));
            flips.push(rng.gen_bool(0.5));
            pos += 1;
        }
        let t = step as f64 / opts.steps.max(1) as f64;
        opt.set_learning_rate(opts.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()));
        let (_, logits) = net.forward(&net.input(&imgs, &flips)?)?;
        let l = SceneCnn::loss(&logits, &labels)?;
        opt.backward_step(&l)?;
        last = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        progress(step + 1, last);
    }
    let held_out_accuracy = if held.is_empty() {
        None
    } else {
        let mut right = 0;
        for chunk in held.chunks(32) {
            let imgs: Vec<&Rgb> = chunk.iter().map(|(i, _)| *i).collect();
            let (_, logits) = net.forward(&net.input(&imgs, &[])?)?;
            let pred = logits.argmax(1)?.to_vec1::<u32>()?;
            right += pred
                .iter()
                .zip(chunk)
                .filter(|(p, (_, s))| **p as usize == label(s))
                .count();
        }
        Some(right as f64 / held.len() as f64)
    };
    let q = StandInQuality {
        classes,
        train_images: train.len(),
        held_out_images: held.len(),
        held_out_accuracy,
        steps: opts.steps,
        final_loss: last,
    };
    Ok((net, q))
}

/// The network GSHPS reads features from.
pub enum GshpsNet {
    /// The user's VGG16 (torchvision layout).
    Vgg16(Backbone),
    /// strata's stand-in classifier, trained on scene-labelled images disjoint from the
    /// scored ones.
    StandIn(SceneCnn, StandInQuality),
}

impl GshpsNet {
    pub fn load_vgg16(path: &Path, device: &Device) -> Result<Self, EvalError> {
        Ok(GshpsNet::Vgg16(Backbone::load(
            path,
            Some(Arch::Vgg16),
            device,
        )?))
    }

    /// Feature rows (N×F) for the images, in batches.
    pub fn features(&self, imgs: &[&Rgb], device: &Device) -> Result<Tensor, EvalError> {
        let mut rows = Vec::new();
        for chunk in imgs.chunks(8) {
            let f = match self {
                GshpsNet::Vgg16(b) => b
                    .features(&vgg_preprocess(chunk, device)?)?
                    .flatten_from(1)?,
                GshpsNet::StandIn(net, _) => net.forward(&net.input(chunk, &[])?)?.0,
            };
            rows.push(f.to_dtype(DType::F32)?.to_device(&Device::Cpu)?);
        }
        Ok(Tensor::cat(&rows, 0)?)
    }

    /// Whether this is the paper's definition (a VGG16) or the stand-in.
    pub fn is_stand_in(&self) -> bool {
        matches!(self, GshpsNet::StandIn(..))
    }

    pub fn protocol(&self) -> String {
        match self {
            GshpsNet::Vgg16(b) => format!(
                "GSHPS: cosine of mean VGG16 `features` vectors (512x7x7) from {}; Pillow bilinear resize of the shorter side to 256, centre crop 224, ImageNet mean/std; pairs matched by file name",
                b.source
            ),
            GshpsNet::StandIn(_, q) => format!(
                "GSHPS (stand-in), not the paper's GSHPS: no --vgg16-weights given, so features (32x8x8) come from a small CNN strata trained on {} scene labels ({} images, {} steps, held-out accuracy {}); cosine of mean feature vectors over pairs matched by file name",
                q.classes.len(),
                q.train_images,
                q.steps,
                q.held_out_accuracy
                    .map(|a| format!("{:.1}% on {} images", 100.0 * a, q.held_out_images))
                    .unwrap_or_else(|| "not measured, too few images".into())
            ),
        }
    }
}
