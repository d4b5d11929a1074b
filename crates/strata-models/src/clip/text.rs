//! The transformer itself.

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::{Activation, ClipTextConfig};
use crate::lora::{LoraLinear, ProjKind, VisitLinears};
use crate::ops::{softmax_last_dim, LayerNorm};

/// Token embedding table with optional extra rows appended after the vocabulary: ids
/// `vocab_size..vocab_size + k` read the extra rows. Textual inversion trains only those
/// rows (pass a `Var`'s tensor); the base table can stay frozen.
#[derive(Debug, Clone)]
pub struct TokenEmbedding {
    pub weight: Tensor,
    pub extra: Option<Tensor>,
}

impl TokenEmbedding {
    pub fn rows(&self) -> Result<usize> {
        let base = self.weight.dim(0)?;
        Ok(base + self.extra.as_ref().map_or(Ok(0), |e| e.dim(0))?)
    }

    /// Embeddings `(B, S, D)` of ids `(B, S)` (u32).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let table = match &self.extra {
            Some(e) => Tensor::cat(&[&self.weight, &e.to_dtype(self.weight.dtype())?], 0)?,
            None => self.weight.clone(),
        };
        let rows = table.dim(0)?;
        let max = ids.max_all()?.to_dtype(DType::U32)?.to_scalar::<u32>()? as usize;
        if max >= rows {
            candle_core::bail!(
                "token id {max} is outside the embedding table ({rows} rows); add the rows for new tokens with ClipTextTransformer::set_extra_tokens"
            );
        }
        let d = table.dim(1)?;
        table
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, s, d))
    }
}

/// Additive causal mask `(S, S)`: 0 on and below the diagonal, −∞ above.
pub fn causal_mask(seq: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..seq)
        .flat_map(|i| (0..seq).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(v, (seq, seq), device)?.to_dtype(dtype)
}

/// A projection of the text encoder: a frozen linear layer that can carry a LoRA adapter
/// (the UNet's [`LoraLinear`]; its `path` is the transformers module path, e.g.
/// `text_model.encoder.layers.0.self_attn.q_proj`, whatever prefix the weights had).
fn projection(
    vb: VarBuilder,
    in_dim: usize,
    out_dim: usize,
    kind: ProjKind,
    path: String,
) -> Result<LoraLinear> {
    let mut l = LoraLinear::load(vb, in_dim, out_dim, true, kind, false)?;
    l.path = path;
    Ok(l)
}

/// Multi-head self-attention with `q_proj`, `k_proj`, `v_proj`, `out_proj`.
#[derive(Debug, Clone)]
pub struct ClipAttention {
    pub q_proj: LoraLinear,
    pub k_proj: LoraLinear,
    pub v_proj: LoraLinear,
    pub out_proj: LoraLinear,
    pub heads: usize,
}

impl ClipAttention {
    /// `path`: the module path of this attention (`text_model.encoder.layers.N.self_attn`).
    pub fn new(cfg: &ClipTextConfig, vb: VarBuilder, path: &str) -> Result<Self> {
        let d = cfg.hidden_size;
        let p = |n: &str| -> Result<LoraLinear> {
            projection(vb.pp(n), d, d, ProjKind::Attention, format!("{path}.{n}"))
        };
        Ok(Self {
            q_proj: p("q_proj")?,
            k_proj: p("k_proj")?,
            v_proj: p("v_proj")?,
            out_proj: p("out_proj")?,
            heads: cfg.num_attention_heads,
        })
    }

    /// `x (B, S, D)`, `mask (S, S)` additive.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, s, d) = x.dims3()?;
        let hd = d / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, s, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let scale = (hd as f64).powf(-0.5);
        let q = split((self.q_proj.forward(x)? * scale)?)?;
        let k = split(self.k_proj.forward(x)?)?;
        let v = split(self.v_proj.forward(x)?)?;
        let mut scores = q.matmul(&k.t()?.contiguous()?)?;
        if let Some(m) = mask {
            scores = scores.broadcast_add(m)?;
        }
        let p = softmax_last_dim(&scores)?;
        let o = p.matmul(&v)?.transpose(1, 2)?.reshape((b, s, d))?;
        self.out_proj.forward(&o)
    }
}

/// `fc1 → activation → fc2`.
#[derive(Debug, Clone)]
pub struct ClipMlp {
    pub fc1: LoraLinear,
    pub fc2: LoraLinear,
    pub act: Activation,
}

impl ClipMlp {
    /// `path`: the module path of this MLP (`text_model.encoder.layers.N.mlp`).
    pub fn new(cfg: &ClipTextConfig, vb: VarBuilder, path: &str) -> Result<Self> {
        let (d, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            fc1: projection(
                vb.pp("fc1"),
                d,
                i,
                ProjKind::FeedForward,
                format!("{path}.fc1"),
            )?,
            fc2: projection(
                vb.pp("fc2"),
                i,
                d,
                ProjKind::FeedForward,
                format!("{path}.fc2"),
            )?,
            act: cfg.hidden_act,
        })
    }
}

impl Module for ClipMlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.fc1.forward(x)?;
        let h = match self.act {
            Activation::QuickGelu => (&h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?)?,
            Activation::Gelu => h.gelu_erf()?,
        };
        self.fc2.forward(&h)
    }
}

/// Pre-norm transformer block.
#[derive(Debug, Clone)]
pub struct ClipEncoderLayer {
    pub self_attn: ClipAttention,
    pub layer_norm1: LayerNorm,
    pub mlp: ClipMlp,
    pub layer_norm2: LayerNorm,
}

impl ClipEncoderLayer {
    /// `path`: the module path of this block (`text_model.encoder.layers.N`).
    pub fn new(cfg: &ClipTextConfig, vb: VarBuilder, path: &str) -> Result<Self> {
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            self_attn: ClipAttention::new(cfg, vb.pp("self_attn"), &format!("{path}.self_attn"))?,
            layer_norm1: LayerNorm::new(cfg.hidden_size, eps, vb.pp("layer_norm1"))?,
            mlp: ClipMlp::new(cfg, vb.pp("mlp"), &format!("{path}.mlp"))?,
            layer_norm2: LayerNorm::new(cfg.hidden_size, eps, vb.pp("layer_norm2"))?,
        })
    }

    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let h = self
            .self_attn
            .forward(&self.layer_norm1.forward(x)?, mask)?;
        let x = (x + h)?;
        let h = self.mlp.forward(&self.layer_norm2.forward(&x)?)?;
        x + h
    }
}

/// CLIP's text transformer (`text_model`): token + position embeddings, causal pre-norm
/// blocks, final layer norm. `forward` returns the last hidden state `(B, S, D)`, which is
/// what Stable Diffusion's cross-attention reads.
#[derive(Debug, Clone)]
pub struct ClipTextTransformer {
    pub config: ClipTextConfig,
    pub token_embedding: TokenEmbedding,
    pub position_embedding: Tensor,
    pub layers: Vec<ClipEncoderLayer>,
    pub final_layer_norm: LayerNorm,
}

impl ClipTextTransformer {
    /// Build from a `VarBuilder` positioned at `text_model` (e.g. `vb.pp("text_model")`).
    pub fn new(cfg: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        let emb = vb.pp("embeddings");
        let token = emb.get((cfg.vocab_size, cfg.hidden_size), "token_embedding.weight")?;
        let position = emb.get(
            (cfg.max_position_embeddings, cfg.hidden_size),
            "position_embedding.weight",
        )?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                ClipEncoderLayer::new(
                    cfg,
                    vb.pp(format!("encoder.layers.{i}")),
                    &format!("text_model.encoder.layers.{i}"),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = LayerNorm::new(
            cfg.hidden_size,
            cfg.layer_norm_eps,
            vb.pp("final_layer_norm"),
        )?;
        Ok(Self {
            config: cfg.clone(),
            token_embedding: TokenEmbedding {
                weight: token,
                extra: None,
            },
            position_embedding: position,
            layers,
            final_layer_norm,
        })
    }

    /// Append learnable rows `(K, D)` to the token table: ids `vocab_size + i` read row `i`.
    pub fn set_extra_tokens(&mut self, rows: Option<Tensor>) -> Result<()> {
        if let Some(r) = &rows {
            let (_, d) = r.dims2()?;
            if d != self.config.hidden_size {
                candle_core::bail!(
                    "extra token rows have width {d}, the text encoder's is {}",
                    self.config.hidden_size
                );
            }
        }
        self.token_embedding.extra = rows;
        Ok(())
    }

    /// Last hidden state `(B, S, D)` of token ids `(B, S)`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let embeds = self.token_embedding.forward(ids)?;
        self.forward_embeds(&embeds)
    }

    /// Last hidden state from token embeddings `(B, S, D)` supplied by the caller (the
    /// embedding override: any differentiable tensor may stand in for the table lookup).
    pub fn forward_embeds(&self, embeds: &Tensor) -> Result<Tensor> {
        let h = self.hidden_states(embeds, self.layers.len())?;
        self.final_layer_norm.forward(&h)
    }

    /// Hidden state after the first `n_layers` blocks, before the final layer norm
    /// ("clip skip" = `num_hidden_layers − n_layers`).
    pub fn hidden_states(&self, embeds: &Tensor, n_layers: usize) -> Result<Tensor> {
        let (_, s, _) = embeds.dims3()?;
        if s > self.config.max_position_embeddings {
            candle_core::bail!(
                "sequence of {s} tokens is longer than the {} positions of the text encoder",
                self.config.max_position_embeddings
            );
        }
        let pos = self.position_embedding.i(0..s)?.to_dtype(embeds.dtype())?;
        let mut x = embeds.broadcast_add(&pos)?;
        let mask = causal_mask(s, x.dtype(), x.device())?;
        for layer in self.layers.iter().take(n_layers) {
            x = layer.forward(&x, Some(&mask))?;
        }
        Ok(x)
    }

    /// CLIP's pooled output `(B, D)`: the final hidden state at each row's first end token
    /// (`eos_id`, 49407 for CLIP), or at its largest id when the row has none.
    pub fn pooled(&self, last_hidden: &Tensor, ids: &Tensor, eos_id: u32) -> Result<Tensor> {
        let ids_v = ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let rows = ids_v
            .iter()
            .enumerate()
            .map(|(b, row)| {
                let p = row.iter().position(|&i| i == eos_id).unwrap_or_else(|| {
                    row.iter()
                        .enumerate()
                        .max_by_key(|(_, &v)| v)
                        .map_or(0, |(i, _)| i)
                });
                last_hidden.i((b, p))
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::stack(&rows, 0)
    }
}

/// The text encoder's LoRA-capable projections (`q/k/v/out_proj` as
/// [`ProjKind::Attention`], `mlp.fc1/fc2` as [`ProjKind::FeedForward`]), in model order.
impl VisitLinears for ClipTextTransformer {
    fn visit_linears(&self, f: &mut dyn FnMut(&LoraLinear)) {
        for l in &self.layers {
            let a = &l.self_attn;
            for p in [&a.q_proj, &a.k_proj, &a.v_proj, &a.out_proj] {
                f(p);
            }
            f(&l.mlp.fc1);
            f(&l.mlp.fc2);
        }
    }
    fn visit_linears_mut(&mut self, f: &mut dyn FnMut(&mut LoraLinear)) {
        for l in &mut self.layers {
            let a = &mut l.self_attn;
            for p in [&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.out_proj] {
                f(p);
            }
            f(&mut l.mlp.fc1);
            f(&mut l.mlp.fc2);
        }
    }
}

impl ClipTextTransformer {
    /// Module paths of the LoRA-capable projections, in model order.
    pub fn projection_paths(&self) -> Vec<String> {
        let mut v = vec![];
        self.visit_linears(&mut |l| v.push(l.path.clone()));
        v
    }
}
