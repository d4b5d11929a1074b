//! `--method vae`: trains the VAE (encoder, decoder, quant convs) on the images of a dataset.
//!
//! Loss per micro-batch: `mean |decode(z) − x| + β · mean KL(q(z|x) ‖ N(0, I))`, with
//! `z = μ + σ·ε` (reparameterised, ε seeded by the micro-batch index), the L1 mean over pixels
//! and the KL mean over latent elements; β is `vae_kl_weight`. Same run-folder conventions as
//! the other methods (`config.toml`, `log.jsonl`, `checkpoints/`, `latest`, `--resume`); the
//! output is the model folder `model/` with the trained VAE and a `scaling_factor` set so the
//! training images' latents have unit standard deviation (as SD's 0.18215 was chosen).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use strata_models::vae::{AutoencoderKL, VaeConfig};

use crate::checkpoint::{copy_dir, io, save_checkpoint_parts};
use crate::config::TrainConfig;
use crate::error::{ce, Result, TrainError};
use crate::optim::{lr_at, AdamW};
use crate::trainer::CheckpointState;

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One step's log line: the [`StepReport`](crate::trainer::StepReport) fields plus the two loss terms.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaeStepLog {
    pub step: u64,
    pub total: u64,
    pub epoch: u64,
    pub loss: f32,
    pub lr: f64,
    /// Mean absolute reconstruction error (images in [−1, 1]).
    pub l1: f32,
    pub kl: f32,
}

/// The VAE loss of images `x` (N, 3, H, W in [−1, 1]) with reparameterisation noise `noise`
/// (the latent shape): returns `(total, l1, kl)` as scalar tensors.
pub fn vae_loss(
    vae: &AutoencoderKL,
    x: &Tensor,
    noise: &Tensor,
    kl_weight: f64,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let (mean, logvar) = vae.encode_moments(x)?;
    let z = (&mean + (&logvar * 0.5)?.exp()?.mul(noise)?)?;
    let recon = vae.decode(&(z * vae.config.scaling_factor)?)?;
    let l1 = (recon - x)?.abs()?.mean_all()?;
    // KL(N(μ, σ²) ‖ N(0, 1)) = ½ (μ² + σ² − 1 − log σ²), per element
    let kl = ((mean.sqr()? + logvar.exp()?)? - 1.0)?
        .sub(&logvar)?
        .affine(0.5, 0.0)?
        .mean_all()?;
    let total = (&l1 + (&kl * kl_weight)?)?;
    Ok((total, l1, kl))
}

/// Builds the VAE of a diffusers folder with every weight a trainable [`Var`] (diffusers names).
pub fn trainable_vae(model: &Path, device: &Device) -> Result<(AutoencoderKL, Vec<(String, Var)>)> {
    let cfg_path = model.join("vae").join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| TrainError::Io {
        path: cfg_path.clone(),
        what: "reading the VAE config (VAE training needs a diffusers folder)",
        source: e,
    })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| TrainError::Format {
        path: cfg_path.clone(),
        what: format!("invalid JSON: {e}"),
    })?;
    let vcfg = VaeConfig::from_diffusers_json(&json).map_err(|what| TrainError::Format {
        path: cfg_path.clone(),
        what,
    })?;
    let file =
        strata_models::loading::weights_file(&model.join("vae"), "diffusion_pytorch_model", false)
            .map_err(|e| TrainError::Config {
                field: "model".into(),
                what: e.to_string(),
            })?;
    let tensors = strata_models::loading::read_safetensors(&file, device).map_err(|e| {
        TrainError::Config {
            field: "model".into(),
            what: e.to_string(),
        }
    })?;
    let vm = VarMap::new();
    let mut names: Vec<String> = tensors.keys().cloned().collect();
    names.sort();
    {
        let mut data = vm.data().lock().expect("varmap lock");
        for n in &names {
            let t = tensors[n].to_dtype(DType::F32).map_err(ce("weights"))?;
            data.insert(n.clone(), Var::from_tensor(&t).map_err(ce("weights"))?);
        }
    }
    let vae = AutoencoderKL::new(vcfg, VarBuilder::from_varmap(&vm, DType::F32, device)).map_err(
        |e| TrainError::Format {
            path: file.clone(),
            what: format!("the VAE weights do not fit its config: {e}"),
        },
    )?;
    let data = vm.data().lock().expect("varmap lock");
    if data.len() != names.len() {
        let missing: Vec<&String> = data.keys().filter(|k| !tensors.contains_key(*k)).collect();
        return Err(TrainError::Format {
            path: file,
            what: format!("missing VAE tensors: {missing:?}"),
        });
    }
    let vars = names.iter().map(|n| (n.clone(), data[n].clone())).collect();
    Ok((vae, vars))
}

/// Images `(N, 3, R, R)`, their file names, and the `(file, why)` of unreadable ones.
pub type LoadedImages = (Tensor, Vec<String>, Vec<(String, String)>);

/// The train split's images of a dataset folder (any format strata-image reads), resized to
/// cover `res × res` (Lanczos, as Pillow) and centre-cropped, as one
/// `(N, 3, res, res)` tensor in [−1, 1]; unreadable images are skipped and listed.
pub fn load_images(dir: &Path, res: usize, device: &Device) -> Result<LoadedImages> {
    // a dataset folder or a kohya dataset TOML; each image once (repeats do not matter here)
    let (train, mut skipped) = crate::data::read_train_records(dir)?;
    let mut pixels = vec![];
    let mut files = vec![];
    for (r, _) in &train {
        let p = crate::data::dir_of(dir).join(&r.file_name);
        match crate::data::decode_item(&p, res, res) {
            Ok(px) => {
                pixels.extend(px);
                files.push(r.file_name.clone());
            }
            Err(e) => skipped.push((r.file_name.clone(), e)),
        }
    }
    if files.is_empty() {
        return Err(TrainError::Dataset {
            path: dir.join("metadata.jsonl"),
            what: format!(
                "no readable training image ({} skipped); check the split column and the files",
                skipped.len()
            ),
        });
    }
    let n = files.len();
    let t = Tensor::from_vec(pixels, (n, 3, res, res), device).map_err(ce("images"))?;
    Ok((t, files, skipped))
}

/// A VAE training run.
pub struct VaeTrainer {
    pub cfg: TrainConfig,
    pub device: Device,
    pub vae: AutoencoderKL,
    pub opt: AdamW,
    /// `(N, 3, R, R)` in [−1, 1].
    pub images: Tensor,
    pub files: Vec<String>,
    pub skipped: Vec<(String, String)>,
    pub step: u64,
    pub total_steps: u64,
    pub last_loss: f32,
}

impl VaeTrainer {
    pub fn new(cfg: TrainConfig, progress: &mut dyn FnMut(&str)) -> Result<Self> {
        cfg.validate()?;
        let device = Device::Cpu;
        progress("loading the VAE");
        let (vae, vars) = trainable_vae(&cfg.model, &device)?;
        let f = vae.config.downscale();
        if !cfg.vae_crop.is_multiple_of(f) {
            return Err(TrainError::Config {
                field: "vae-crop".into(),
                what: format!(
                    "{} is not a multiple of the VAE's downscale {f}",
                    cfg.vae_crop
                ),
            });
        }
        if !cfg.resolution.is_multiple_of(f) {
            return Err(TrainError::Config {
                field: "resolution".into(),
                what: format!(
                    "{} is not a multiple of the VAE's downscale {f}",
                    cfg.resolution
                ),
            });
        }
        progress("reading the training images");
        let (images, files, skipped) = load_images(&cfg.data, cfg.resolution, &device)?;
        let opt = AdamW::new(
            vars.into_iter()
                .map(|(n, v)| (format!("vae.{n}"), v))
                .collect(),
            cfg.adam(),
        )
        .map_err(ce("optimizer"))?;
        let n = files.len() as u64;
        let per_step = (cfg.batch_size * cfg.gradient_accumulation) as u64;
        let total_steps = cfg
            .max_steps
            .unwrap_or_else(|| (cfg.epochs as u64 * n).div_ceil(per_step))
            .max(1);
        Ok(Self {
            cfg,
            device,
            vae,
            opt,
            images,
            files,
            skipped,
            step: 0,
            total_steps,
            last_loss: f32::NAN,
        })
    }

    fn n(&self) -> usize {
        self.files.len()
    }

    /// The permutation of the images used in epoch `e`.
    pub fn epoch_order(&self, e: u64) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.n()).collect();
        v.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
            self.cfg.seed,
            0x0DA7A,
            e,
        )));
        v
    }

    fn batch_indices(&self, k: u64) -> Vec<usize> {
        let bs = self.cfg.batch_size as u64;
        let n = self.n() as u64;
        let mut out = vec![];
        let mut cache: Option<(u64, Vec<usize>)> = None;
        for p in k * bs..(k + 1) * bs {
            let e = p / n;
            if cache.as_ref().map(|c| c.0) != Some(e) {
                cache = Some((e, self.epoch_order(e)));
            }
            out.push(cache.as_ref().expect("set above").1[(p % n) as usize]);
        }
        out
    }

    /// Loss terms of micro-batch `k`.
    pub fn micro_loss(&self, k: u64) -> Result<(Tensor, Tensor, Tensor)> {
        let idx = self.batch_indices(k);
        let idx_t = Tensor::from_vec(
            idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            idx.len(),
            &self.device,
        )
        .map_err(ce("batch"))?;
        let x = self.images.index_select(&idx_t, 0).map_err(ce("batch"))?;
        let f = self.vae.config.downscale();
        let (_, _, h, w) = x.dims4().map_err(ce("batch"))?;
        let crop = self.cfg.vae_crop;
        let (x, h, w) = if crop > 0 && crop < h.min(w) {
            // one random crop per micro-batch, on the latent grid
            let mut rng = ChaCha8Rng::seed_from_u64(mix(self.cfg.seed, k, 0xC409));
            let top = rng.gen_range(0..=(h - crop) / f) * f;
            let left = rng.gen_range(0..=(w - crop) / f) * f;
            let x = x
                .narrow(2, top, crop)
                .and_then(|x| x.narrow(3, left, crop))
                .map_err(ce("crop"))?;
            (x, crop, crop)
        } else {
            (x, h, w)
        };
        let noise = strata_models::pipeline::seeded_normal(
            &[idx.len(), self.vae.config.latent_channels, h / f, w / f],
            mix(self.cfg.seed, k, 0x0015E),
            &self.device,
        )
        .map_err(ce("noise"))?;
        vae_loss(&self.vae, &x, &noise, self.cfg.vae_kl_weight).map_err(ce("VAE loss"))
    }

    /// One optimiser step (gradient accumulation over micro-batches). A non-finite loss or
    /// gradient stops before any update.
    pub fn train_step(&mut self, last_checkpoint: &str) -> Result<VaeStepLog> {
        let acc = self.cfg.gradient_accumulation as u64;
        let mut sum: Option<Vec<Tensor>> = None;
        let (mut loss_sum, mut l1_sum, mut kl_sum) = (0f32, 0f32, 0f32);
        for j in 0..acc {
            let (loss, l1, kl) = self.micro_loss(self.step * acc + j)?;
            loss_sum += loss.to_scalar::<f32>().map_err(ce("loss"))?;
            l1_sum += l1.to_scalar::<f32>().map_err(ce("loss"))?;
            kl_sum += kl.to_scalar::<f32>().map_err(ce("loss"))?;
            let store = (loss / acc as f64)
                .and_then(|l| l.backward())
                .map_err(ce("backward pass"))?;
            let g = self.opt.collect_grads(&store).map_err(ce("gradients"))?;
            sum =
                Some(crate::optim::accumulate_grads(sum, g).map_err(ce("accumulating gradients"))?);
        }
        let grads = sum.expect("at least one micro-batch");
        let loss = loss_sum / acc as f32;
        let finite = crate::optim::grads_finite(&grads);
        if !loss.is_finite() || !finite {
            return Err(TrainError::NonFinite {
                step: self.step + 1,
                value: if loss.is_finite() { f32::NAN } else { loss },
                checkpoint: last_checkpoint.to_string(),
            });
        }
        let lr = lr_at(
            self.cfg.lr_schedule,
            self.cfg.lr,
            self.step,
            self.cfg.warmup_steps,
            self.total_steps,
        );
        self.opt.step_with(&grads, lr).map_err(ce("AdamW update"))?;
        self.step += 1;
        self.last_loss = loss;
        Ok(VaeStepLog {
            step: self.step,
            total: self.total_steps,
            epoch: self.epoch(),
            loss,
            lr,
            l1: l1_sum / acc as f32,
            kl: kl_sum / acc as f32,
        })
    }

    fn epoch(&self) -> u64 {
        self.step * (self.cfg.batch_size * self.cfg.gradient_accumulation) as u64
            / (self.n() as u64).max(1)
    }

    pub fn checkpoint_state(&self) -> CheckpointState {
        CheckpointState {
            step: self.step,
            total_steps: self.total_steps,
            optimizer_t: self.opt.t,
            seed: self.cfg.seed,
            rng: "ChaCha8 streams seeded by (seed, micro-batch index); data order by (seed, epoch)"
                .into(),
            epoch: self.epoch(),
            data_order: self.epoch_order(self.epoch()),
            last_loss: self.last_loss,
            trainable: self.opt.vars().iter().map(|(n, _)| n.clone()).collect(),
        }
    }

    pub fn save_checkpoint(&self, run: &Path) -> Result<PathBuf> {
        let trainable: HashMap<String, Tensor> = self
            .opt
            .vars()
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let state = serde_json::to_string_pretty(&self.checkpoint_state()).expect("serialises");
        save_checkpoint_parts(
            run,
            self.step,
            self.cfg.keep_checkpoints,
            &trainable,
            &self.opt.state_tensors(),
            &state,
        )
    }

    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let sp = dir.join("state.json");
        let state: CheckpointState =
            serde_json::from_str(&std::fs::read_to_string(&sp).map_err(|e| TrainError::Io {
                path: sp.clone(),
                what: "reading",
                source: e,
            })?)
            .map_err(|e| TrainError::Format {
                path: sp.clone(),
                what: e.to_string(),
            })?;
        let tp = dir.join("trainable.safetensors");
        let (w, _) = strata_models::safetensors_io::load(&tp, &self.device)?;
        for (n, v) in self.opt.vars() {
            let t = w.get(n).ok_or_else(|| TrainError::Format {
                path: tp.clone(),
                what: format!("no tensor {n}; the checkpoint is from another configuration"),
            })?;
            v.set(t).map_err(|e| TrainError::Format {
                path: tp.clone(),
                what: format!("{n}: {e}"),
            })?;
        }
        let op = dir.join("optimizer.safetensors");
        let (m, _) = strata_models::safetensors_io::load(&op, &self.device)?;
        self.opt
            .load_state(&m, state.optimizer_t)
            .map_err(|e| TrainError::Format {
                path: op,
                what: e.to_string(),
            })?;
        self.step = state.step;
        self.last_loss = state.last_loss;
        Ok(())
    }

    /// Standard deviation of the unscaled posterior means of every training image.
    pub fn latent_std(&self) -> Result<f64> {
        let n = self.n();
        let (mut s, mut s2, mut count) = (0f64, 0f64, 0usize);
        let bs = self.cfg.batch_size.max(1);
        let mut i = 0;
        while i < n {
            let k = bs.min(n - i);
            let x = self.images.narrow(0, i, k).map_err(ce("images"))?;
            let (mean, _) = self.vae.encode_moments(&x).map_err(ce("VAE encoding"))?;
            let v = mean
                .flatten_all()
                .and_then(|m| m.to_dtype(DType::F64))
                .and_then(|m| m.to_vec1::<f64>())
                .map_err(ce("latents"))?;
            for x in v {
                s += x;
                s2 += x * x;
                count += 1;
            }
            i += k;
        }
        let mu = s / count as f64;
        Ok((s2 / count as f64 - mu * mu).max(1e-12).sqrt())
    }

    /// Writes `run/model/`: the base folder with the trained VAE and its new scaling factor.
    pub fn write_output(&self, run: &Path) -> Result<PathBuf> {
        let std = self.latent_std()?;
        let scaling = 1.0 / std;
        let dst = run.join("model");
        let tmp = run.join(".model.tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp, "removing"))?;
        }
        copy_dir(&self.cfg.model, &tmp)?;
        let vae_dir = tmp.join("vae");
        for e in std::fs::read_dir(&vae_dir)
            .map_err(io(&vae_dir, "listing"))?
            .flatten()
        {
            if e.file_name().to_string_lossy().ends_with(".safetensors") {
                std::fs::remove_file(e.path())
                    .map_err(io(&vae_dir, "replacing the VAE weights"))?;
            }
        }
        let tensors: HashMap<String, Tensor> = self
            .opt
            .vars()
            .iter()
            .map(|(n, v)| {
                (
                    n.strip_prefix("vae.").unwrap_or(n).to_string(),
                    v.as_tensor().clone(),
                )
            })
            .collect();
        strata_models::safetensors_io::save(
            &vae_dir.join("diffusion_pytorch_model.safetensors"),
            &tensors,
            Some(HashMap::from([
                ("format".to_string(), "pt".to_string()),
                ("strata_vae_steps".to_string(), self.step.to_string()),
                ("strata_latent_std".to_string(), format!("{std}")),
            ])),
        )?;
        let cfg_path = vae_dir.join("config.json");
        let mut json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&cfg_path).map_err(io(&cfg_path, "reading"))?,
        )
        .map_err(|e| TrainError::Format {
            path: cfg_path.clone(),
            what: e.to_string(),
        })?;
        json["scaling_factor"] = serde_json::json!(scaling);
        strata_models::safetensors_io::write_atomic(
            &cfg_path,
            serde_json::to_string_pretty(&json)
                .expect("json")
                .as_bytes(),
        )?;
        if dst.exists() {
            std::fs::remove_dir_all(&dst).map_err(io(&dst, "replacing"))?;
        }
        std::fs::rename(&tmp, &dst).map_err(io(&dst, "renaming into place"))?;
        Ok(dst)
    }
}
