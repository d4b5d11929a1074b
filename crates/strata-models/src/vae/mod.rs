//! `AutoencoderKL` (the SD-1.5 VAE): encode images to latents (×0.18215) and decode them back.
//! Module paths equal diffusers' `vae/diffusion_pytorch_model.safetensors` names.

use crate::ops::{Conv2d, GroupNorm, Linear};
use crate::unet::blocks::{conv2d, Downsample2D, ResnetBlock2D, Upsample2D};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub latent_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    pub scaling_factor: f64,
}

impl VaeConfig {
    /// SD-1.5's VAE: 128/256/512/512, two layers per block, 4 latent channels, ×8 downsampling.
    pub fn sd15() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            latent_channels: 4,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
        }
    }

    /// Tiny VAE for tests: 8/16 channels, one layer per block, ×2 downsampling.
    pub fn tiny() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            latent_channels: 4,
            block_out_channels: vec![8, 16],
            layers_per_block: 1,
            norm_num_groups: 4,
            scaling_factor: 0.18215,
        }
    }

    /// Tiny VAE with SD's ×8 downsampling (4 levels of 8/16/16/16 channels).
    pub fn tiny_x8() -> Self {
        Self {
            block_out_channels: vec![8, 16, 16, 16],
            ..Self::tiny()
        }
    }

    /// Spatial down-sampling factor between image and latents.
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    pub fn from_diffusers_json(v: &serde_json::Value) -> std::result::Result<Self, String> {
        let uint = |k: &str, d: usize| {
            v.get(k)
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .unwrap_or(d)
        };
        let boc: Vec<usize> = v
            .get("block_out_channels")
            .and_then(|x| x.as_array())
            .ok_or("missing block_out_channels")?
            .iter()
            .map(|x| {
                x.as_u64()
                    .map(|u| u as usize)
                    .ok_or("bad block_out_channels")
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok(Self {
            in_channels: uint("in_channels", 3),
            out_channels: uint("out_channels", 3),
            latent_channels: uint("latent_channels", 4),
            block_out_channels: boc,
            layers_per_block: uint("layers_per_block", 2),
            norm_num_groups: uint("norm_num_groups", 32),
            scaling_factor: v
                .get("scaling_factor")
                .and_then(|x| x.as_f64())
                .unwrap_or(0.18215),
        })
    }

    pub fn to_diffusers_json(&self) -> serde_json::Value {
        let n = self.block_out_channels.len();
        serde_json::json!({
            "_class_name": "AutoencoderKL",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "latent_channels": self.latent_channels,
            "block_out_channels": self.block_out_channels,
            "down_block_types": vec!["DownEncoderBlock2D"; n],
            "up_block_types": vec!["UpDecoderBlock2D"; n],
            "layers_per_block": self.layers_per_block,
            "norm_num_groups": self.norm_num_groups,
            "act_fn": "silu",
            "scaling_factor": self.scaling_factor,
            "sample_size": 512,
        })
    }
}

/// Single-head self-attention of the VAE mid block (group_norm, to_q/k/v, to_out.0, residual).
#[derive(Debug, Clone)]
struct VaeAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
}

fn linear(vb: VarBuilder, i: usize, o: usize) -> Result<Linear> {
    Ok(Linear {
        weight: vb.get((o, i), "weight")?,
        bias: Some(vb.get(o, "bias")?),
    })
}

impl VaeAttention {
    fn new(vb: VarBuilder, c: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            group_norm: GroupNorm::new(groups, c, 1e-6, vb.pp("group_norm"))?,
            to_q: linear(vb.pp("to_q"), c, c)?,
            to_k: linear(vb.pp("to_k"), c, c)?,
            to_v: linear(vb.pp("to_v"), c, c)?,
            to_out: linear(vb.pp("to_out.0"), c, c)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let hs = self
            .group_norm
            .forward(x)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?;
        let q = self.to_q.forward(&hs)?;
        let k = self.to_k.forward(&hs)?;
        let v = self.to_v.forward(&hs)?;
        let o = crate::attention::attention_heads_last(&q, &k, &v, 1, 1.0 / (c as f64).sqrt())?;
        let o = self
            .to_out
            .forward(&o)?
            .transpose(1, 2)?
            .reshape((b, c, h, w))?;
        o + x
    }
}

#[derive(Debug, Clone)]
struct VaeMid {
    r0: ResnetBlock2D,
    attn: VaeAttention,
    r1: ResnetBlock2D,
}

impl VaeMid {
    fn new(vb: VarBuilder, c: usize, g: usize) -> Result<Self> {
        Ok(Self {
            r0: ResnetBlock2D::new(vb.pp("resnets.0"), c, c, None, g, 1e-6)?,
            attn: VaeAttention::new(vb.pp("attentions.0"), c, g)?,
            r1: ResnetBlock2D::new(vb.pp("resnets.1"), c, c, None, g, 1e-6)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.r0.forward(x, None)?;
        let h = self.attn.forward(&h)?;
        self.r1.forward(&h, None)
    }
}

#[derive(Debug, Clone)]
struct Encoder {
    conv_in: Conv2d,
    down: Vec<(Vec<ResnetBlock2D>, Option<Downsample2D>)>,
    mid: VaeMid,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

#[derive(Debug, Clone)]
struct Decoder {
    conv_in: Conv2d,
    mid: VaeMid,
    up: Vec<(Vec<ResnetBlock2D>, Option<Upsample2D>)>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

/// The SD VAE.
#[derive(Debug, Clone)]
pub struct AutoencoderKL {
    pub config: VaeConfig,
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Conv2d,
    post_quant_conv: Conv2d,
}

impl AutoencoderKL {
    pub fn new(config: VaeConfig, vb: VarBuilder) -> Result<Self> {
        let c = &config;
        let boc = &c.block_out_channels;
        let n = boc.len();
        let g = c.norm_num_groups;
        if n == 0 || boc.iter().any(|&x| x % g != 0) {
            candle_core::bail!("VAE config: channels {boc:?} must divide into {g} groups")
        }
        let lc = c.latent_channels;
        // encoder
        let e = vb.pp("encoder");
        let mut down = vec![];
        let mut out_ch = boc[0];
        for (i, &block_ch) in boc.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = block_ch;
            let vbd = e.pp("down_blocks").pp(i);
            let resnets = (0..c.layers_per_block)
                .map(|j| {
                    ResnetBlock2D::new(
                        vbd.pp("resnets").pp(j),
                        if j == 0 { in_ch } else { out_ch },
                        out_ch,
                        None,
                        g,
                        1e-6,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let ds = if i + 1 < n {
                Some(Downsample2D::new(vbd.pp("downsamplers.0"), out_ch, true)?)
            } else {
                None
            };
            down.push((resnets, ds));
        }
        let last = boc[n - 1];
        let encoder = Encoder {
            conv_in: conv2d(e.pp("conv_in"), c.in_channels, boc[0], 3, 1, 1)?,
            down,
            mid: VaeMid::new(e.pp("mid_block"), last, g)?,
            norm_out: GroupNorm::new(g, last, 1e-6, e.pp("conv_norm_out"))?,
            conv_out: conv2d(e.pp("conv_out"), last, 2 * lc, 3, 1, 1)?,
        };
        // decoder
        let d = vb.pp("decoder");
        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let mut up = vec![];
        let mut prev = rev[0];
        for (i, &out_ch) in rev.iter().enumerate() {
            let vbu = d.pp("up_blocks").pp(i);
            let resnets = (0..c.layers_per_block + 1)
                .map(|j| {
                    ResnetBlock2D::new(
                        vbu.pp("resnets").pp(j),
                        if j == 0 { prev } else { out_ch },
                        out_ch,
                        None,
                        g,
                        1e-6,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let us = if i + 1 < n {
                Some(Upsample2D::new(vbu.pp("upsamplers.0"), out_ch)?)
            } else {
                None
            };
            up.push((resnets, us));
            prev = out_ch;
        }
        let decoder = Decoder {
            conv_in: conv2d(d.pp("conv_in"), lc, last, 3, 1, 1)?,
            mid: VaeMid::new(d.pp("mid_block"), last, g)?,
            up,
            norm_out: GroupNorm::new(g, boc[0], 1e-6, d.pp("conv_norm_out"))?,
            conv_out: conv2d(d.pp("conv_out"), boc[0], c.out_channels, 3, 1, 1)?,
        };
        Ok(Self {
            quant_conv: conv2d(vb.pp("quant_conv"), 2 * lc, 2 * lc, 1, 1, 0)?,
            post_quant_conv: conv2d(vb.pp("post_quant_conv"), lc, lc, 1, 1, 0)?,
            encoder,
            decoder,
            config,
        })
    }

    /// Mean and log-variance (clamped to [−30, 20]) of the latent posterior, unscaled.
    pub fn encode_moments(&self, images: &Tensor) -> Result<(Tensor, Tensor)> {
        let e = &self.encoder;
        let mut h = e.conv_in.forward(images)?;
        for (resnets, ds) in &e.down {
            for r in resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(d) = ds {
                h = d.forward(&h)?;
            }
        }
        h = e.mid.forward(&h)?;
        h = e.conv_out.forward(&e.norm_out.forward_silu(&h)?)?;
        let m = self.quant_conv.forward(&h)?;
        let lc = self.config.latent_channels;
        let mean = m.narrow(1, 0, lc)?;
        let logvar = m.narrow(1, lc, lc)?.clamp(-30f32, 20f32)?;
        Ok((mean, logvar))
    }

    /// Scaled latents of images in [−1, 1]: (mean + σ·noise)·scaling_factor, or the mean
    /// when `noise` is `None` (deterministic).
    pub fn encode(&self, images: &Tensor, noise: Option<&Tensor>) -> Result<Tensor> {
        let (mean, logvar) = self.encode_moments(images)?;
        let z = match noise {
            Some(n) => (mean + (logvar * 0.5)?.exp()?.mul(n)?)?,
            None => mean,
        };
        z * self.config.scaling_factor
    }

    /// Images in about [−1, 1] from scaled latents.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let z = (latents / self.config.scaling_factor)?;
        let d = &self.decoder;
        let mut h = d.conv_in.forward(&self.post_quant_conv.forward(&z)?)?;
        h = d.mid.forward(&h)?;
        for (resnets, us) in &d.up {
            for r in resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(u) = us {
                h = u.forward(&h, None)?;
            }
        }
        d.conv_out.forward(&d.norm_out.forward_silu(&h)?)
    }
}
