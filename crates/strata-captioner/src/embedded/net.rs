//! The embedded captioner's network: a small U-Net (candle) with four levels (64, 32, 16 and
//! 8 pixels), one convolution at full resolution and two with group normalisation on the
//! other levels, a per-pixel element head and a
//! scene head on the pooled bottleneck. It is built from primitive candle ops whose backward
//! passes are correct (nearest upsampling by broadcast, see [`upsample2x`]), so the same code
//! trains and predicts.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{group_norm, linear, GroupNorm, Linear, VarBuilder};
use strata_image::RgbImage;
use strata_synth::{Element, SceneClass};

use crate::error::Result;

/// Side of the network's input and output.
pub const NET_SIZE: usize = 64;
/// Mask classes (the synth element table, in id order).
pub const NUM_CLASSES: usize = Element::ALL.len();
/// Scene classes of the scene head (the synth scene concepts, in order).
pub const NUM_SCENES: usize = SceneClass::ALL.len();

/// Channel widths of the four levels (full, ½, ¼ and ⅛ resolution).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Widths(pub [usize; 4]);

impl Default for Widths {
    fn default() -> Self {
        Widths([16, 32, 48, 64])
    }
}

impl Widths {
    /// `16,32,48,64` as written in the weights' metadata.
    pub fn to_metadata(self) -> String {
        self.0.map(|w| w.to_string()).join(",")
    }

    pub fn parse(s: &str) -> Option<Widths> {
        let v: Vec<usize> = s
            .split(',')
            .map(|p| p.trim().parse().ok())
            .collect::<Option<_>>()?;
        let a: [usize; 4] = v.try_into().ok()?;
        // group norm uses 4 groups
        a.iter().all(|&w| w >= 4 && w % 4 == 0).then_some(Widths(a))
    }
}

/// A k×k convolution (stride 1, zero padding k/2) written as shifted views + one matrix
/// product. candle 0.11's own `conv2d` backward on the CPU computes the kernel gradient as a
/// convolution whose kernel is the whole image and the input gradient with a direct loop,
/// which made a training step about 30× slower than this; the weights have the same layout
/// (`weight` (out, in, k, k), `bias` (out)) as `candle_nn::Conv2d`.
pub struct Conv {
    weight: Tensor,
    bias: Tensor,
    k: usize,
}

impl Conv {
    pub fn new(vb: VarBuilder, cin: usize, cout: usize, k: usize) -> candle_core::Result<Conv> {
        Ok(Conv {
            weight: vb.get((cout, cin, k, k), "weight")?,
            bias: vb.get(cout, "bias")?,
            k,
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, cin, h, w) = x.dims4()?;
        let cout = self.weight.dim(0)?;
        let cols = if self.k == 1 {
            x.reshape((b, cin, h * w))?
        } else {
            let p = self.k / 2;
            let xp = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
            let mut shifted = Vec::with_capacity(self.k * self.k);
            for dy in 0..self.k {
                for dx in 0..self.k {
                    shifted.push(xp.narrow(2, dy, h)?.narrow(3, dx, w)?);
                }
            }
            Tensor::stack(&shifted, 2)?.reshape((b, cin * self.k * self.k, h * w))?
        };
        let wm = self.weight.reshape((cout, cin * self.k * self.k))?;
        wm.broadcast_matmul(&cols)?
            .broadcast_add(&self.bias.reshape((1, cout, 1))?)?
            .reshape((b, cout, h, w))
    }
}

/// Convolution 3×3 + group norm (4 groups; none at full resolution, where it would cost
/// most) + ReLU.
struct Block {
    conv: Conv,
    norm: Option<GroupNorm>,
}

impl Block {
    fn new(vb: VarBuilder, cin: usize, cout: usize) -> candle_core::Result<Block> {
        Ok(Block {
            conv: Conv::new(vb.pp("conv"), cin, cout, 3)?,
            norm: Some(group_norm(4, cout, 1e-5, vb.pp("norm"))?),
        })
    }

    fn plain(vb: VarBuilder, cin: usize, cout: usize) -> candle_core::Result<Block> {
        Ok(Block {
            conv: Conv::new(vb.pp("conv"), cin, cout, 3)?,
            norm: None,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.conv.forward(x)?;
        match &self.norm {
            Some(n) => n.forward(&y)?.relu(),
            None => y.relu(),
        }
    }
}

/// The segmenter with its scene head.
pub struct CapNet {
    pub widths: Widths,
    e1: Block,
    e2: [Block; 2],
    e3: [Block; 2],
    mid: [Block; 2],
    d3: Block,
    d2: Block,
    d1: Block,
    head: Conv,
    scene: Linear,
}

/// One forward pass.
pub struct NetOutput {
    /// (B, NUM_CLASSES, H, W)
    pub logits: Tensor,
    /// (B, NUM_SCENES)
    pub scene_logits: Tensor,
    /// (B, widths[3]): the bottleneck's global average (half of the scene head's input).
    pub pooled: Tensor,
}

/// Nearest-neighbour ×2 upsampling by broadcast + reshape (candle 0.11's
/// `upsample_nearest2d` backward overwrites instead of accumulating its input's gradient).
pub fn upsample2x(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, 2, w, 2))?
        .reshape((b, c, 2 * h, 2 * w))
}

/// Log-softmax over dimension 1 from primitive ops (the max only shifts, so it is detached).
pub fn log_softmax_dim1(x: &Tensor) -> candle_core::Result<Tensor> {
    let m = x.max_keepdim(1)?.detach();
    let s = x.broadcast_sub(&m)?;
    let lse = s.exp()?.sum_keepdim(1)?.log()?;
    s.broadcast_sub(&lse)
}

impl CapNet {
    /// Build on a var builder (fresh `VarMap` for training, loaded tensors for inference).
    pub fn build(vb: VarBuilder, widths: Widths) -> candle_core::Result<CapNet> {
        let [c1, c2, c3, c4] = widths.0;
        let b2 = |n: &str, cin, cout| -> candle_core::Result<[Block; 2]> {
            Ok([
                Block::new(vb.pp(n).pp("0"), cin, cout)?,
                Block::new(vb.pp(n).pp("1"), cout, cout)?,
            ])
        };
        Ok(CapNet {
            e1: Block::plain(vb.pp("e1"), 3, c1)?,
            e2: b2("e2", c1, c2)?,
            e3: b2("e3", c2, c3)?,
            mid: b2("mid", c3, c4)?,
            d3: Block::new(vb.pp("d3"), c4 + c3, c3)?,
            d2: Block::new(vb.pp("d2"), c3 + c2, c2)?,
            d1: Block::plain(vb.pp("d1"), c2 + c1, c1)?,
            head: Conv::new(vb.pp("head"), c1, NUM_CLASSES, 1)?,
            scene: linear(2 * c4, NUM_SCENES, vb.pp("scene"))?,
            widths,
        })
    }

    /// `x`: (B, 3, H, W) in [-1, 1], H and W divisible by 8.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<NetOutput> {
        let two = |b: &[Block; 2], x: &Tensor| b[1].forward(&b[0].forward(x)?);
        let e1 = self.e1.forward(x)?;
        let e2 = two(&self.e2, &e1.avg_pool2d(2)?)?;
        let e3 = two(&self.e3, &e2.avg_pool2d(2)?)?;
        let mid = two(&self.mid, &e3.avg_pool2d(2)?)?;
        // scene head: mean and max of the bottleneck
        let mean = mid.mean(D::Minus1)?.mean(D::Minus1)?;
        let max = mid.max(D::Minus1)?.max(D::Minus1)?;
        let scene_logits = self.scene.forward(&Tensor::cat(&[&mean, &max], 1)?)?;
        let pooled = mean;
        let d3 = self
            .d3
            .forward(&Tensor::cat(&[&upsample2x(&mid)?, &e3], 1)?)?;
        let d2 = self
            .d2
            .forward(&Tensor::cat(&[&upsample2x(&d3)?, &e2], 1)?)?;
        let d1 = self
            .d1
            .forward(&Tensor::cat(&[&upsample2x(&d2)?, &e1], 1)?)?;
        Ok(NetOutput {
            logits: self.head.forward(&d1)?,
            scene_logits,
            pooled,
        })
    }
}

/// An image resized to NET_SIZE² (bilinear, antialiased when shrinking), as CHW floats in
/// [-1, 1].
pub fn image_input(img: &RgbImage) -> Vec<f32> {
    let s = NET_SIZE;
    let r;
    let src = if img.width == s && img.height == s {
        img
    } else {
        r = strata_image::resize(img, s, s, strata_image::Filter::Bilinear);
        &r
    };
    let mut v = Vec::with_capacity(3 * s * s);
    for c in 0..3 {
        for i in 0..s * s {
            v.push(src.data[i * 3 + c] as f32 / 127.5 - 1.0);
        }
    }
    v
}

/// What the network sees in one image.
#[derive(Debug, Clone)]
pub struct NetPrediction {
    /// NET_SIZE² class ids (argmax).
    pub mask: Vec<u8>,
    /// NET_SIZE² probability of the arg-max class.
    pub confidence: Vec<f32>,
    /// Softmax over the scene classes.
    pub scene_probs: Vec<f32>,
}

impl CapNet {
    /// Predictions for a batch of images (any size; resized to NET_SIZE).
    pub fn predict(&self, imgs: &[&RgbImage]) -> Result<Vec<NetPrediction>> {
        let s = NET_SIZE;
        let mut out = Vec::with_capacity(imgs.len());
        for chunk in imgs.chunks(16) {
            let mut v = Vec::with_capacity(chunk.len() * 3 * s * s);
            for img in chunk {
                v.extend(image_input(img));
            }
            let x = Tensor::from_vec(v, (chunk.len(), 3, s, s), &Device::Cpu)?;
            let o = self.forward(&x)?;
            let probs = candle_nn::ops::softmax(&o.logits, 1)?;
            let mask = probs.argmax(1)?.flatten_from(1)?.to_vec2::<u32>()?;
            let conf = probs.max(1)?.flatten_from(1)?.to_vec2::<f32>()?;
            let scene = candle_nn::ops::softmax(&o.scene_logits, 1)?.to_vec2::<f32>()?;
            for ((m, c), sc) in mask.into_iter().zip(conf).zip(scene) {
                out.push(NetPrediction {
                    mask: m.into_iter().map(|v| v as u8).collect(),
                    confidence: c,
                    scene_probs: sc,
                });
            }
        }
        Ok(out)
    }
}

/// Load a network from safetensors bytes; the widths come from the `widths` metadata.
pub fn from_safetensors(
    bytes: &[u8],
) -> std::result::Result<(CapNet, HashMap<String, String>), String> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let meta: HashMap<String, String> = meta.metadata().clone().unwrap_or_default();
    let widths = match meta.get("widths") {
        Some(w) => Widths::parse(w)
            .ok_or_else(|| format!("metadata `widths` = {w:?} is not four multiples of 4"))?,
        None => return Err("metadata has no `widths` entry".into()),
    };
    let tensors =
        candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| e.to_string())?;
    let tensors: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, t)| t.to_dtype(DType::F32).map(|t| (k, t)))
        .collect::<candle_core::Result<_>>()
        .map_err(|e| e.to_string())?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let net = CapNet::build(vb, widths).map_err(|e| e.to_string())?;
    Ok((net, meta))
}
