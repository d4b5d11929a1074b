//! UNet building blocks, with module paths equal to diffusers' weight names.

use crate::conditioning::Conditioning;
use crate::lora::{LoraLinear, ProjKind, VisitLinears};
use crate::ops::{Conv2d, GroupNorm, LayerNorm, Linear};
use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

pub(crate) fn conv2d(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
) -> Result<Conv2d> {
    Ok(Conv2d {
        weight: vb.get((cout, cin, k, k), "weight")?,
        bias: Some(vb.get(cout, "bias")?),
        padding,
        stride,
    })
}

/// `ResnetBlock2D` (time embedding optional: the VAE has none).
#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    pub fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        temb: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        let time_emb_proj = match temb {
            Some(t) => Some(Linear {
                weight: vb.pp("time_emb_proj").get((cout, t), "weight")?,
                bias: Some(vb.pp("time_emb_proj").get(cout, "bias")?),
            }),
            None => None,
        };
        Ok(Self {
            norm1: GroupNorm::new(groups, cin, eps, vb.pp("norm1"))?,
            conv1: conv2d(vb.pp("conv1"), cin, cout, 3, 1, 1)?,
            time_emb_proj,
            norm2: GroupNorm::new(groups, cout, eps, vb.pp("norm2"))?,
            conv2: conv2d(vb.pp("conv2"), cout, cout, 3, 1, 1)?,
            conv_shortcut: if cin != cout {
                Some(conv2d(vb.pp("conv_shortcut"), cin, cout, 1, 1, 0)?)
            } else {
                None
            },
        })
    }

    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        if let (Some(p), Some(t)) = (&self.time_emb_proj, temb) {
            let t = p.forward(&t.silu()?)?.unsqueeze(2)?.unsqueeze(3)?;
            h = h.broadcast_add(&t)?;
        }
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        skip + h
    }
}

/// Scaled dot-product attention over (B, heads, N, d) tensors, differentiable.
/// The scale multiplies q (N×d) rather than the scores (N×M). Large score matrices run
/// block by block without being kept for the backward pass ([`crate::attention`]).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    crate::ops::profile::shape("attention", &[q.dims(), k.dims()]);
    crate::attention::attention(q, k, v, scale)
}

/// diffusers `Attention` (self or cross), to_q/to_k/to_v/to_out.0 all LoRA-capable.
#[derive(Debug, Clone)]
pub struct Attention {
    pub to_q: LoraLinear,
    pub to_k: LoraLinear,
    pub to_v: LoraLinear,
    pub to_out: LoraLinear,
    heads: usize,
}

impl Attention {
    pub fn new(
        vb: VarBuilder,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        dim_head: usize,
    ) -> Result<Self> {
        let inner = heads * dim_head;
        let a = ProjKind::Attention;
        Ok(Self {
            to_q: LoraLinear::load(vb.pp("to_q"), query_dim, inner, false, a, false)?,
            to_k: LoraLinear::load(vb.pp("to_k"), context_dim, inner, false, a, false)?,
            to_v: LoraLinear::load(vb.pp("to_v"), context_dim, inner, false, a, false)?,
            to_out: LoraLinear::load(vb.pp("to_out").pp("0"), inner, query_dim, true, a, false)?,
            heads,
        })
    }

    /// Attention of the (B, N, C) queries over one (B, M, Dc) context, before `to_out`.
    fn attend(&self, q: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let k = self.to_k.forward(ctx)?;
        let v = self.to_v.forward(ctx)?;
        let d = k.dim(D::Minus1)? / self.heads;
        if crate::ops::profile::enabled() {
            let (b, n, _) = q.dims3()?;
            let m = k.dim(1)?;
            crate::ops::profile::shape(
                "attention",
                &[&[b, self.heads, n, d], &[b, self.heads, m, d]],
            );
        }
        crate::attention::attention_heads_last(q, &k, &v, self.heads, 1.0 / (d as f64).sqrt())
    }

    /// Self-attention when `cond` is `None`; cross-attention otherwise. With
    /// `Conditioning::Decoupled` each segment is attended with the same K/V projections and the
    /// per-segment outputs are mixed by the (B, 3) weights before `to_out`.
    pub fn forward(&self, x: &Tensor, cond: Option<&Conditioning>) -> Result<Tensor> {
        let q = self.to_q.forward(x)?;
        let h = match cond {
            None => self.attend(&q, x)?,
            Some(Conditioning::Context(ctx)) => self.attend(&q, ctx)?,
            Some(Conditioning::Decoupled { segments, weights }) => {
                let (b, s, _, _) = segments.dims4()?;
                let (wb, ws) = weights.dims2()?;
                if wb != b || ws != s {
                    candle_core::bail!(
                        "decoupled conditioning: weights {:?} do not match segments {:?}",
                        weights.dims(),
                        segments.dims()
                    )
                }
                let mut acc: Option<Tensor> = None;
                for i in 0..s {
                    let seg = segments.narrow(1, i, 1)?.squeeze(1)?;
                    let w = weights.narrow(1, i, 1)?.unsqueeze(2)?.to_dtype(x.dtype())?;
                    let o = self.attend(&q, &seg)?.broadcast_mul(&w)?;
                    acc = Some(match acc {
                        None => o,
                        Some(a) => (a + o)?,
                    });
                }
                acc.expect("at least one segment")
            }
        };
        self.to_out.forward(&h)
    }

    pub(crate) fn visit(&self, f: &mut dyn FnMut(&LoraLinear)) {
        for l in [&self.to_q, &self.to_k, &self.to_v, &self.to_out] {
            f(l)
        }
    }

    pub(crate) fn visit_mut(&mut self, f: &mut dyn FnMut(&mut LoraLinear)) {
        for l in [
            &mut self.to_q,
            &mut self.to_k,
            &mut self.to_v,
            &mut self.to_out,
        ] {
            f(l)
        }
    }
}

/// GEGLU feed-forward: `ff.net.0.proj` (dim → 2·inner), gelu gate, `ff.net.2` (inner → dim).
#[derive(Debug, Clone)]
pub struct FeedForward {
    proj: LoraLinear,
    out: LoraLinear,
    gelu_tanh: bool,
}

impl FeedForward {
    pub fn new(vb: VarBuilder, dim: usize, gelu_tanh: bool) -> Result<Self> {
        let inner = dim * 4;
        let f = ProjKind::FeedForward;
        Ok(Self {
            proj: LoraLinear::load(vb.pp("net.0.proj"), dim, inner * 2, true, f, false)?,
            out: LoraLinear::load(vb.pp("net.2"), inner, dim, true, f, false)?,
            gelu_tanh,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = crate::ops::geglu(&self.proj.forward(x)?, self.gelu_tanh)?;
        self.out.forward(&h)
    }
}

/// `BasicTransformerBlock`: self-attention, cross-attention, GEGLU feed-forward.
#[derive(Debug, Clone)]
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    pub fn new(
        vb: VarBuilder,
        dim: usize,
        heads: usize,
        context_dim: usize,
        gelu_tanh: bool,
    ) -> Result<Self> {
        let dh = dim / heads;
        Ok(Self {
            norm1: LayerNorm::new(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(vb.pp("attn1"), dim, dim, heads, dh)?,
            norm2: LayerNorm::new(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(vb.pp("attn2"), dim, context_dim, heads, dh)?,
            norm3: LayerNorm::new(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::new(vb.pp("ff"), dim, gelu_tanh)?,
        })
    }

    pub fn forward(&self, x: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        let x = (self.attn1.forward(&self.norm1.forward(x)?, None)? + x)?;
        let x = (self.attn2.forward(&self.norm2.forward(&x)?, Some(cond))? + &x)?;
        self.ff.forward(&self.norm3.forward(&x)?)? + x
    }

    fn visit(&self, f: &mut dyn FnMut(&LoraLinear)) {
        self.attn1.visit(f);
        self.attn2.visit(f);
        f(&self.ff.proj);
        f(&self.ff.out);
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut LoraLinear)) {
        self.attn1.visit_mut(f);
        self.attn2.visit_mut(f);
        f(&mut self.ff.proj);
        f(&mut self.ff.out);
    }
}

/// `Transformer2DModel` (SpatialTransformer): GroupNorm, proj_in, transformer blocks, proj_out,
/// residual. `proj_in`/`proj_out` are 1×1 convolutions in SD-1.5 and linear layers with
/// `use_linear_projection`; both are applied as a linear map over channels.
#[derive(Debug, Clone)]
pub struct Transformer2D {
    norm: GroupNorm,
    proj_in: LoraLinear,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: LoraLinear,
}

pub struct Transformer2DConfig {
    pub heads: usize,
    pub depth: usize,
    pub context_dim: usize,
    pub groups: usize,
    pub linear_projection: bool,
    pub gelu_tanh: bool,
}

impl Transformer2D {
    pub fn new(vb: VarBuilder, channels: usize, c: &Transformer2DConfig) -> Result<Self> {
        let conv = !c.linear_projection;
        let p = ProjKind::Proj;
        let blocks = (0..c.depth)
            .map(|i| {
                BasicTransformerBlock::new(
                    vb.pp("transformer_blocks").pp(i),
                    channels,
                    c.heads,
                    c.context_dim,
                    c.gelu_tanh,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: GroupNorm::new(c.groups, channels, 1e-6, vb.pp("norm"))?,
            proj_in: LoraLinear::load(vb.pp("proj_in"), channels, channels, true, p, conv)?,
            blocks,
            proj_out: LoraLinear::load(vb.pp("proj_out"), channels, channels, true, p, conv)?,
        })
    }

    pub fn forward(&self, x: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let hs = self.norm.forward(x)?;
        let hs = hs.reshape((b, c, h * w))?.transpose(1, 2)?;
        let mut hs = self.proj_in.forward(&hs)?;
        for blk in &self.blocks {
            hs = blk.forward(&hs, cond)?;
        }
        let hs = self.proj_out.forward(&hs)?;
        let hs = hs.transpose(1, 2)?.reshape((b, c, h, w))?;
        hs + x
    }
}

impl VisitLinears for Transformer2D {
    fn visit_linears(&self, f: &mut dyn FnMut(&LoraLinear)) {
        f(&self.proj_in);
        for b in &self.blocks {
            b.visit(f);
        }
        f(&self.proj_out);
    }

    fn visit_linears_mut(&mut self, f: &mut dyn FnMut(&mut LoraLinear)) {
        f(&mut self.proj_in);
        for b in &mut self.blocks {
            b.visit_mut(f);
        }
        f(&mut self.proj_out);
    }
}

/// `Downsample2D` (stride-2 3×3 conv, padding 1) at `downsamplers.0.conv`.
#[derive(Debug, Clone)]
pub struct Downsample2D {
    conv: Conv2d,
    /// VAE style: pad right/bottom by one, then conv with padding 0.
    asymmetric: bool,
}

impl Downsample2D {
    pub fn new(vb: VarBuilder, channels: usize, asymmetric: bool) -> Result<Self> {
        let pad = if asymmetric { 0 } else { 1 };
        Ok(Self {
            conv: conv2d(vb.pp("conv"), channels, channels, 3, 2, pad)?,
            asymmetric,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.asymmetric {
            let x = x
                .pad_with_zeros(D::Minus1, 0, 1)?
                .pad_with_zeros(D::Minus2, 0, 1)?;
            self.conv.forward(&x)
        } else {
            self.conv.forward(x)
        }
    }
}

/// `Upsample2D`: nearest-neighbour ×2 (or to a given size), then a 3×3 conv.
#[derive(Debug, Clone)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: conv2d(vb.pp("conv"), channels, channels, 3, 1, 1)?,
        })
    }

    pub fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (th, tw) = size.unwrap_or((2 * h, 2 * w));
        self.conv
            .forward(&crate::ops::upsample_nearest2d(x, th, tw)?)
    }
}
