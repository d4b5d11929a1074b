//! Our `UNet2DConditionModel` (SD-1.5 architecture), with module paths equal to diffusers'
//! weight names, LoRA on its projections and cross-attention over a flat context or the
//! decoupled hierarchical segments ([`Conditioning`]).

pub mod blocks;

use crate::conditioning::Conditioning;
use crate::lora::{LoraLinear, VisitLinears};
use crate::ops::{Conv2d, GroupNorm, Linear};
use blocks::*;
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// UNet hyper-parameters (the subset of diffusers' `unet/config.json` SD-1.5 uses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    /// Per down block: `CrossAttnDownBlock2D` (true) or `DownBlock2D` (false). Up blocks mirror it.
    pub cross_attention: Vec<bool>,
    pub layers_per_block: usize,
    /// Attention heads per block (diffusers' legacy `attention_head_dim`).
    pub attention_heads: Vec<usize>,
    pub transformer_layers_per_block: usize,
    pub cross_attention_dim: usize,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub use_linear_projection: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    /// Use the tanh approximation of GELU in the feed-forwards (candle-transformers does;
    /// diffusers and the original model use the exact erf form, the default here).
    #[serde(default)]
    pub gelu_tanh: bool,
}

impl UNetConfig {
    /// Stable Diffusion 1.5.
    pub fn sd15() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: vec![320, 640, 1280, 1280],
            cross_attention: vec![true, true, true, false],
            layers_per_block: 2,
            attention_heads: vec![8; 4],
            transformer_layers_per_block: 1,
            cross_attention_dim: 768,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            use_linear_projection: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            gelu_tanh: false,
        }
    }

    /// A tiny two-level UNet for tests and CPU demos (32/64 channels, one layer per block,
    /// 2 heads, context dim 32).
    pub fn tiny() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: vec![32, 64],
            cross_attention: vec![true, false],
            layers_per_block: 1,
            attention_heads: vec![2, 2],
            transformer_layers_per_block: 1,
            cross_attention_dim: 32,
            norm_num_groups: 8,
            norm_eps: 1e-5,
            use_linear_projection: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            gelu_tanh: false,
        }
    }

    /// A small three-level UNet with cross-attention at every level (the SD-1.5 block pattern
    /// shrunk: 32/64/64 channels, two layers per block).
    pub fn small() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: vec![32, 64, 64],
            cross_attention: vec![true, true, false],
            layers_per_block: 2,
            attention_heads: vec![2, 4, 4],
            transformer_layers_per_block: 1,
            cross_attention_dim: 32,
            norm_num_groups: 8,
            norm_eps: 1e-5,
            use_linear_projection: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            gelu_tanh: false,
        }
    }

    /// Reads diffusers' `unet/config.json`.
    pub fn from_diffusers_json(v: &serde_json::Value) -> std::result::Result<Self, String> {
        let num = |k: &str| v.get(k).and_then(|x| x.as_f64());
        let uint = |k: &str| v.get(k).and_then(|x| x.as_u64()).map(|x| x as usize);
        let list = |k: &str| -> Option<Vec<usize>> {
            v.get(k)?
                .as_array()?
                .iter()
                .map(|x| x.as_u64().map(|u| u as usize))
                .collect()
        };
        let boc = list("block_out_channels").ok_or("missing block_out_channels")?;
        let n = boc.len();
        let types: Vec<String> = v
            .get("down_block_types")
            .and_then(|x| x.as_array())
            .ok_or("missing down_block_types")?
            .iter()
            .map(|x| x.as_str().unwrap_or("").to_string())
            .collect();
        let mut cross = vec![];
        for t in &types {
            match t.as_str() {
                "CrossAttnDownBlock2D" => cross.push(true),
                "DownBlock2D" => cross.push(false),
                other => return Err(format!("down block type {other:?} is not supported (SD-1.5 uses CrossAttnDownBlock2D/DownBlock2D)")),
            }
        }
        if cross.len() != n {
            return Err("down_block_types and block_out_channels differ in length".into());
        }
        let heads_key = if v
            .get("num_attention_heads")
            .map(|x| !x.is_null())
            .unwrap_or(false)
        {
            "num_attention_heads"
        } else {
            "attention_head_dim"
        };
        let heads = match v.get(heads_key) {
            Some(x) if x.is_u64() => vec![x.as_u64().unwrap() as usize; n],
            Some(x) if x.is_array() => list(heads_key).ok_or("bad attention_head_dim")?,
            _ => vec![8; n],
        };
        let tl = match v.get("transformer_layers_per_block") {
            Some(x) if x.is_u64() => x.as_u64().unwrap() as usize,
            None => 1,
            Some(x) if x.is_null() => 1,
            _ => return Err("per-block transformer_layers_per_block is not supported".into()),
        };
        let cad = match v.get("cross_attention_dim") {
            Some(x) if x.is_u64() => x.as_u64().unwrap() as usize,
            _ => return Err("cross_attention_dim must be one integer".into()),
        };
        Ok(Self {
            in_channels: uint("in_channels").unwrap_or(4),
            out_channels: uint("out_channels").unwrap_or(4),
            block_out_channels: boc,
            cross_attention: cross,
            layers_per_block: uint("layers_per_block").unwrap_or(2),
            attention_heads: heads,
            transformer_layers_per_block: tl,
            cross_attention_dim: cad,
            norm_num_groups: uint("norm_num_groups").unwrap_or(32),
            norm_eps: num("norm_eps").unwrap_or(1e-5),
            use_linear_projection: v
                .get("use_linear_projection")
                .and_then(|x| x.as_bool())
                .unwrap_or(false),
            flip_sin_to_cos: v
                .get("flip_sin_to_cos")
                .and_then(|x| x.as_bool())
                .unwrap_or(true),
            freq_shift: num("freq_shift").unwrap_or(0.0),
            gelu_tanh: false,
        })
    }

    /// diffusers' `unet/config.json` for this configuration.
    pub fn to_diffusers_json(&self) -> serde_json::Value {
        let down: Vec<&str> = self
            .cross_attention
            .iter()
            .map(|&c| {
                if c {
                    "CrossAttnDownBlock2D"
                } else {
                    "DownBlock2D"
                }
            })
            .collect();
        let up: Vec<&str> = self
            .cross_attention
            .iter()
            .rev()
            .map(|&c| if c { "CrossAttnUpBlock2D" } else { "UpBlock2D" })
            .collect();
        serde_json::json!({
            "_class_name": "UNet2DConditionModel",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "block_out_channels": self.block_out_channels,
            "down_block_types": down,
            "up_block_types": up,
            "mid_block_type": "UNetMidBlock2DCrossAttn",
            "layers_per_block": self.layers_per_block,
            "attention_head_dim": self.attention_heads,
            "transformer_layers_per_block": self.transformer_layers_per_block,
            "cross_attention_dim": self.cross_attention_dim,
            "norm_num_groups": self.norm_num_groups,
            "norm_eps": self.norm_eps,
            "use_linear_projection": self.use_linear_projection,
            "flip_sin_to_cos": self.flip_sin_to_cos,
            "freq_shift": self.freq_shift,
            "sample_size": 64,
        })
    }

    fn check(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 || self.cross_attention.len() != n || self.attention_heads.len() != n {
            candle_core::bail!("UNet config: block_out_channels, cross_attention and attention_heads must have the same non-zero length")
        }
        for (&c, &h) in self.block_out_channels.iter().zip(&self.attention_heads) {
            if c % self.norm_num_groups != 0 || h == 0 || c % h != 0 {
                candle_core::bail!(
                    "UNet config: {c} channels do not divide into {} groups / {h} heads",
                    self.norm_num_groups
                )
            }
        }
        Ok(())
    }

    fn transformer(&self, block: usize) -> Transformer2DConfig {
        Transformer2DConfig {
            heads: self.attention_heads[block],
            depth: self.transformer_layers_per_block,
            context_dim: self.cross_attention_dim,
            groups: self.norm_num_groups,
            linear_projection: self.use_linear_projection,
            gelu_tanh: self.gelu_tanh,
        }
    }
}

#[derive(Debug, Clone)]
struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    downsampler: Option<Downsample2D>,
}

#[derive(Debug, Clone)]
struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    upsampler: Option<Upsample2D>,
}

#[derive(Debug, Clone)]
struct MidBlock {
    resnet0: ResnetBlock2D,
    attention: Transformer2D,
    resnet1: ResnetBlock2D,
}

/// The conditional denoiser ε_θ(z_t, t, c).
#[derive(Debug, Clone)]
pub struct UNet2DConditionModel {
    pub config: UNetConfig,
    conv_in: Conv2d,
    linear_1: Linear,
    linear_2: Linear,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

fn linear(vb: VarBuilder, i: usize, o: usize) -> Result<Linear> {
    Ok(Linear {
        weight: vb.get((o, i), "weight")?,
        bias: Some(vb.get(o, "bias")?),
    })
}

impl UNet2DConditionModel {
    /// Builds the model from weights named like diffusers' `unet/diffusion_pytorch_model.safetensors`.
    pub fn new(config: UNetConfig, vb: VarBuilder) -> Result<Self> {
        config.check()?;
        let c = &config;
        let boc = &c.block_out_channels;
        let n = boc.len();
        let temb = boc[0] * 4;
        let (g, eps) = (c.norm_num_groups, c.norm_eps);
        let conv_in = conv2d(vb.pp("conv_in"), c.in_channels, boc[0], 3, 1, 1)?;
        let te = vb.pp("time_embedding");
        let linear_1 = linear(te.pp("linear_1"), boc[0], temb)?;
        let linear_2 = linear(te.pp("linear_2"), temb, temb)?;

        let mut down_blocks = vec![];
        let mut out_ch = boc[0];
        for (i, &block_ch) in boc.iter().enumerate() {
            let vbd = vb.pp("down_blocks").pp(i);
            let in_ch = out_ch;
            out_ch = block_ch;
            let mut resnets = vec![];
            let mut attentions = vec![];
            for j in 0..c.layers_per_block {
                let cin = if j == 0 { in_ch } else { out_ch };
                resnets.push(ResnetBlock2D::new(
                    vbd.pp("resnets").pp(j),
                    cin,
                    out_ch,
                    Some(temb),
                    g,
                    eps,
                )?);
                if c.cross_attention[i] {
                    attentions.push(Transformer2D::new(
                        vbd.pp("attentions").pp(j),
                        out_ch,
                        &c.transformer(i),
                    )?);
                }
            }
            let downsampler = if i + 1 < n {
                Some(Downsample2D::new(
                    vbd.pp("downsamplers").pp(0),
                    out_ch,
                    false,
                )?)
            } else {
                None
            };
            down_blocks.push(DownBlock {
                resnets,
                attentions,
                downsampler,
            });
        }

        let last = boc[n - 1];
        let vbm = vb.pp("mid_block");
        let mid_block = MidBlock {
            resnet0: ResnetBlock2D::new(vbm.pp("resnets.0"), last, last, Some(temb), g, eps)?,
            attention: Transformer2D::new(vbm.pp("attentions.0"), last, &c.transformer(n - 1))?,
            resnet1: ResnetBlock2D::new(vbm.pp("resnets.1"), last, last, Some(temb), g, eps)?,
        };

        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let mut up_blocks = vec![];
        let mut prev_out = rev[0];
        for i in 0..n {
            let vbu = vb.pp("up_blocks").pp(i);
            let out_ch = rev[i];
            let in_ch = rev[(i + 1).min(n - 1)];
            let rb = n - 1 - i; // the down block this mirrors
            let mut resnets = vec![];
            let mut attentions = vec![];
            let layers = c.layers_per_block + 1;
            for j in 0..layers {
                let skip = if j == layers - 1 { in_ch } else { out_ch };
                let rin = if j == 0 { prev_out } else { out_ch };
                resnets.push(ResnetBlock2D::new(
                    vbu.pp("resnets").pp(j),
                    rin + skip,
                    out_ch,
                    Some(temb),
                    g,
                    eps,
                )?);
                if c.cross_attention[rb] {
                    attentions.push(Transformer2D::new(
                        vbu.pp("attentions").pp(j),
                        out_ch,
                        &c.transformer(rb),
                    )?);
                }
            }
            let upsampler = if i + 1 < n {
                Some(Upsample2D::new(vbu.pp("upsamplers").pp(0), out_ch)?)
            } else {
                None
            };
            up_blocks.push(UpBlock {
                resnets,
                attentions,
                upsampler,
            });
            prev_out = out_ch;
        }
        Ok(Self {
            conv_in,
            linear_1,
            linear_2,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::new(g, boc[0], eps, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(vb.pp("conv_out"), boc[0], c.out_channels, 3, 1, 1)?,
            config,
        })
    }

    /// Sinusoidal timestep features (B, C) like diffusers' `get_timestep_embedding`.
    fn time_features(&self, t: &Tensor) -> Result<Tensor> {
        let dim = self.config.block_out_channels[0];
        let half = dim / 2;
        let dev = t.device();
        let exponent: Vec<f32> = (0..half)
            .map(|i| {
                (-(10000f64.ln()) * i as f64 / (half as f64 - self.config.freq_shift)).exp() as f32
            })
            .collect();
        let freqs = Tensor::new(exponent, dev)?.unsqueeze(0)?;
        let args = t
            .to_dtype(DType::F32)?
            .unsqueeze(1)?
            .broadcast_mul(&freqs)?;
        let (s, c) = (args.sin()?, args.cos()?);
        if self.config.flip_sin_to_cos {
            Tensor::cat(&[c, s], D::Minus1)
        } else {
            Tensor::cat(&[s, c], D::Minus1)
        }
    }

    /// Noise prediction for `sample` (B, C, H, W) at per-item `timesteps` (B,) under `cond`.
    pub fn forward(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        cond: &Conditioning,
    ) -> Result<Tensor> {
        let dtype = sample.dtype();
        let b = sample.dim(0)?;
        let timesteps = if timesteps.rank() == 0 || timesteps.elem_count() == 1 {
            timesteps.flatten_all()?.repeat(b)?
        } else {
            timesteps.clone()
        };
        let cond = cast_cond(cond, dtype, b)?;
        let temb = self.time_features(&timesteps)?.to_dtype(dtype)?;
        let temb = self
            .linear_2
            .forward(&self.linear_1.forward(&temb)?.silu()?)?;

        let mut h = self.conv_in.forward(sample)?;
        let mut skips = vec![h.clone()];
        for blk in &self.down_blocks {
            for (j, r) in blk.resnets.iter().enumerate() {
                h = r.forward(&h, Some(&temb))?;
                if let Some(a) = blk.attentions.get(j) {
                    h = a.forward(&h, &cond)?;
                }
                skips.push(h.clone());
            }
            if let Some(d) = &blk.downsampler {
                h = d.forward(&h)?;
                skips.push(h.clone());
            }
        }
        h = self.mid_block.resnet0.forward(&h, Some(&temb))?;
        h = self.mid_block.attention.forward(&h, &cond)?;
        h = self.mid_block.resnet1.forward(&h, Some(&temb))?;

        for blk in &self.up_blocks {
            for (j, r) in blk.resnets.iter().enumerate() {
                let skip = skips.pop().expect("skip connections match the down path");
                h = r.forward(&Tensor::cat(&[&h, &skip], 1)?, Some(&temb))?;
                if let Some(a) = blk.attentions.get(j) {
                    h = a.forward(&h, &cond)?;
                }
            }
            if let Some(u) = &blk.upsampler {
                let size = skips
                    .last()
                    .map(|s| (s.dim(2).unwrap_or(0), s.dim(3).unwrap_or(0)));
                h = u.forward(&h, size)?;
            }
        }
        let h = self.conv_norm_out.forward_silu(&h)?;
        self.conv_out.forward(&h)
    }

    /// `forward` with one scalar timestep for the whole batch.
    pub fn forward_t(&self, sample: &Tensor, t: f64, cond: &Conditioning) -> Result<Tensor> {
        let ts = Tensor::new(&[t as f32], sample.device())?;
        self.forward(sample, &ts, cond)
    }

    pub fn dtype(&self) -> DType {
        self.conv_in.weight().dtype()
    }

    pub fn device(&self) -> candle_core::Device {
        self.conv_in.weight().device().clone()
    }

    /// All projections (LoRA-capable layers) with their diffusers module paths.
    pub fn projection_paths(&self) -> Vec<String> {
        let mut v = vec![];
        self.visit_linears(&mut |l| v.push(l.path.clone()));
        v
    }
}

/// Casts conditioning tensors to the model dtype and checks the batch size.
fn cast_cond(cond: &Conditioning, dtype: DType, b: usize) -> Result<Conditioning> {
    match cond {
        Conditioning::Context(c) => {
            if c.dim(0)? != b {
                candle_core::bail!("context batch {} differs from sample batch {b}", c.dim(0)?)
            }
            Ok(Conditioning::Context(c.to_dtype(dtype)?))
        }
        Conditioning::Decoupled { segments, weights } => {
            if segments.dim(0)? != b {
                candle_core::bail!(
                    "segments batch {} differs from sample batch {b}",
                    segments.dim(0)?
                )
            }
            Ok(Conditioning::Decoupled {
                segments: segments.to_dtype(dtype)?,
                weights: weights.to_dtype(dtype)?,
            })
        }
    }
}

impl VisitLinears for UNet2DConditionModel {
    fn visit_linears(&self, f: &mut dyn FnMut(&LoraLinear)) {
        for b in &self.down_blocks {
            for a in &b.attentions {
                a.visit_linears(f);
            }
        }
        self.mid_block.attention.visit_linears(f);
        for b in &self.up_blocks {
            for a in &b.attentions {
                a.visit_linears(f);
            }
        }
    }

    fn visit_linears_mut(&mut self, f: &mut dyn FnMut(&mut LoraLinear)) {
        for b in &mut self.down_blocks {
            for a in &mut b.attentions {
                a.visit_linears_mut(f);
            }
        }
        self.mid_block.attention.visit_linears_mut(f);
        for b in &mut self.up_blocks {
            for a in &mut b.attentions {
                a.visit_linears_mut(f);
            }
        }
    }
}
