//! BLIP's networks for captioning, module paths as transformers names the weights:
//!
//! * `vision_model.*`: a ViT (`embeddings.{class_embedding, patch_embedding, position_embedding}`,
//!   `encoder.layers.N.{layer_norm1, self_attn.{qkv, projection}, layer_norm2, mlp.{fc1, fc2}}`,
//!   `post_layernorm`), pre-norm blocks; the captioner reads the whole last hidden state;
//! * `text_decoder.bert.*`: a post-norm BERT (`embeddings.{word_embeddings, position_embeddings,
//!   LayerNorm}`, `encoder.layer.N.{attention, crossattention}.{self.{query, key, value},
//!   output.{dense, LayerNorm}}`, `intermediate.dense`, `output.{dense, LayerNorm}`), causal
//!   self-attention and cross-attention to the image;
//! * `text_decoder.cls.predictions.*`: the LM head (`transform.{dense, LayerNorm}`, then the
//!   word embeddings, tied, with `bias`).
//!
//! Decoding keeps a key/value cache per layer for the self-attention; the cross-attention keys
//! and values of an image are computed once ([`ImageContext`]) and shared by every beam.

use candle_core::{Device, IndexOp, Module, Tensor};
use candle_nn::VarBuilder;
use strata_models::ops::{LayerNorm, Linear};

use super::config::{Act, TextConfig, VisionConfig};

fn linear(vb: VarBuilder, in_dim: usize, out_dim: usize) -> candle_core::Result<Linear> {
    Ok(Linear {
        weight: vb.get((out_dim, in_dim), "weight")?,
        bias: Some(vb.get(out_dim, "bias")?),
    })
}

fn softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::softmax_last_dim(&x.contiguous()?)
}

/// One pre-norm ViT block (`encoder.layers.N`).
#[derive(Debug, Clone)]
struct VisionLayer {
    layer_norm1: LayerNorm,
    qkv: Linear,
    projection: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
    act: Act,
}

impl VisionLayer {
    fn new(c: &VisionConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let d = c.hidden_size;
        Ok(VisionLayer {
            layer_norm1: LayerNorm::new(d, c.layer_norm_eps, vb.pp("layer_norm1"))?,
            qkv: linear(vb.pp("self_attn.qkv"), d, 3 * d)?,
            projection: linear(vb.pp("self_attn.projection"), d, d)?,
            layer_norm2: LayerNorm::new(d, c.layer_norm_eps, vb.pp("layer_norm2"))?,
            fc1: linear(vb.pp("mlp.fc1"), d, c.intermediate_size)?,
            fc2: linear(vb.pp("mlp.fc2"), c.intermediate_size, d)?,
            heads: c.num_attention_heads,
            act: c.hidden_act,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, s, d) = x.dims3()?;
        let hd = d / self.heads;
        let h = self.layer_norm1.forward(x)?;
        // (B, S, 3, H, hd) → three (B, H, S, hd)
        let qkv = self
            .qkv
            .forward(&h)?
            .reshape((b, s, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.i(0)?.contiguous()?;
        let k = qkv.i(1)?.contiguous()?;
        let v = qkv.i(2)?.contiguous()?;
        let scores = (q.matmul(&k.t()?)? * (hd as f64).powf(-0.5))?;
        let o = softmax(&scores)?
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, s, d))?;
        let x = (self.projection.forward(&o)? + x)?;
        let h = self.layer_norm2.forward(&x)?;
        let h = self.fc2.forward(&self.act.apply(&self.fc1.forward(&h)?)?)?;
        h + x
    }
}

/// `vision_model`: the ViT image encoder.
#[derive(Debug, Clone)]
pub struct VisionModel {
    pub config: VisionConfig,
    class_embedding: Tensor,
    /// The patch convolution as a matrix (D, 3·p·p), rows in (channel, y, x) order.
    patch_weight: Tensor,
    patch_bias: Tensor,
    position_embedding: Tensor,
    layers: Vec<VisionLayer>,
    post_layernorm: LayerNorm,
}

impl VisionModel {
    pub fn new(c: &VisionConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let d = c.hidden_size;
        let p = c.patch_size;
        let grid = c.image_size / p;
        let emb = vb.pp("embeddings");
        let conv = emb.get((d, 3, p, p), "patch_embedding.weight")?;
        Ok(VisionModel {
            config: c.clone(),
            class_embedding: emb.get((1, 1, d), "class_embedding")?,
            patch_weight: conv.reshape((d, 3 * p * p))?,
            patch_bias: emb.get(d, "patch_embedding.bias")?,
            position_embedding: emb.get((1, grid * grid + 1, d), "position_embedding")?,
            layers: (0..c.num_hidden_layers)
                .map(|i| VisionLayer::new(c, vb.pp(format!("encoder.layers.{i}"))))
                .collect::<candle_core::Result<_>>()?,
            post_layernorm: LayerNorm::new(d, c.layer_norm_eps, vb.pp("post_layernorm"))?,
        })
    }

    /// `last_hidden_state` after `post_layernorm`: (N, 1 + G², D). `pixels`: (N, 3, S, S),
    /// already normalised.
    pub fn forward(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = pixels.dims4()?;
        let p = self.config.patch_size;
        let s = self.config.image_size;
        if c != 3 || h != s || w != s {
            candle_core::bail!(
                "the ViT takes (N, 3, {s}, {s}) pixels, got {:?}",
                pixels.dims()
            );
        }
        let g = s / p;
        let d = self.config.hidden_size;
        // A stride-p, p×p convolution is a matrix product over the patches.
        let patches = pixels
            .reshape((n, 3, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((n * g * g, 3 * p * p))?;
        let emb = Linear {
            weight: self.patch_weight.clone(),
            bias: Some(self.patch_bias.clone()),
        }
        .forward(&patches)?
        .reshape((n, g * g, d))?;
        let cls = self.class_embedding.broadcast_as((n, 1, d))?.contiguous()?;
        let mut x = Tensor::cat(&[&cls, &emb], 1)?.broadcast_add(&self.position_embedding)?;
        for l in &self.layers {
            x = l.forward(&x)?;
        }
        self.post_layernorm.forward(&x)
    }
}

/// `attention.self` / `crossattention.self` + `.output` of one BERT layer.
#[derive(Debug, Clone)]
struct TextAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    dense: Linear,
    layer_norm: LayerNorm,
}

impl TextAttention {
    fn new(c: &TextConfig, kv_dim: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let d = c.hidden_size;
        Ok(TextAttention {
            query: linear(vb.pp("self.query"), d, d)?,
            key: linear(vb.pp("self.key"), kv_dim, d)?,
            value: linear(vb.pp("self.value"), kv_dim, d)?,
            dense: linear(vb.pp("output.dense"), d, d)?,
            layer_norm: LayerNorm::new(d, c.layer_norm_eps, vb.pp("output.LayerNorm"))?,
        })
    }

    /// `LayerNorm(dense(context) + x)`.
    fn output(&self, context: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
        self.layer_norm
            .forward(&(self.dense.forward(context)? + x)?)
    }
}

#[derive(Debug, Clone)]
struct TextLayer {
    attention: TextAttention,
    crossattention: TextAttention,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    act: Act,
}

/// The cross-attention keys and values of one image, per decoder layer, shared by every
/// sequence decoded for it.
#[derive(Debug, Clone)]
pub struct ImageContext {
    /// The ViT's last hidden state (1, 1 + G², E).
    pub embeds: Tensor,
    /// Per layer: keys transposed (H, hd, N) and values (H, N, hd).
    cross: Vec<(Tensor, Tensor)>,
}

/// Self-attention keys and values of the tokens decoded so far, per layer: (B, H, T, hd).
#[derive(Debug, Clone, Default)]
pub struct DecoderCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl DecoderCache {
    /// Tokens already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keep rows `rows` (beam reordering, or one row repeated to start the beams).
    pub fn select(&mut self, rows: &[usize]) -> candle_core::Result<()> {
        let Some(first) = self.layers.iter().flatten().next() else {
            return Ok(());
        };
        let idx = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            rows.len(),
            first.0.device(),
        )?;
        for l in self.layers.iter_mut().flatten() {
            *l = (l.0.index_select(&idx, 0)?, l.1.index_select(&idx, 0)?);
        }
        Ok(())
    }
}

/// `text_decoder`: BERT with cross-attention and the LM head.
#[derive(Debug, Clone)]
pub struct TextDecoder {
    pub config: TextConfig,
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    embed_norm: LayerNorm,
    layers: Vec<TextLayer>,
    head_dense: Linear,
    head_norm: LayerNorm,
    /// (V, D): the word embeddings unless the file has its own `decoder.weight`.
    head_weight: Tensor,
    head_bias: Tensor,
}

impl TextDecoder {
    /// `vb` at `text_decoder`. `own_decoder_weight`: the file has
    /// `cls.predictions.decoder.weight` (older exports); otherwise it is tied to the word
    /// embeddings as transformers ties it. Likewise `own_decoder_bias` for
    /// `cls.predictions.decoder.bias` (tied to `cls.predictions.bias`).
    pub fn new(
        c: &TextConfig,
        vb: VarBuilder,
        own_decoder_weight: bool,
        own_decoder_bias: bool,
    ) -> candle_core::Result<Self> {
        let d = c.hidden_size;
        let bert = vb.pp("bert");
        let emb = bert.pp("embeddings");
        let word_embeddings = emb.get((c.vocab_size, d), "word_embeddings.weight")?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = bert.pp(format!("encoder.layer.{i}"));
                Ok(TextLayer {
                    attention: TextAttention::new(c, d, l.pp("attention"))?,
                    crossattention: TextAttention::new(
                        c,
                        c.encoder_hidden_size,
                        l.pp("crossattention"),
                    )?,
                    intermediate: linear(l.pp("intermediate.dense"), d, c.intermediate_size)?,
                    output: linear(l.pp("output.dense"), c.intermediate_size, d)?,
                    output_norm: LayerNorm::new(d, c.layer_norm_eps, l.pp("output.LayerNorm"))?,
                    act: c.hidden_act,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        let pred = vb.pp("cls.predictions");
        let head_weight = if own_decoder_weight {
            pred.get((c.vocab_size, d), "decoder.weight")?
        } else {
            word_embeddings.clone()
        };
        let bias = pred.get(c.vocab_size, "bias")?;
        let head_bias = if own_decoder_bias {
            pred.get(c.vocab_size, "decoder.bias")?
        } else {
            bias
        };
        Ok(TextDecoder {
            config: c.clone(),
            position_embeddings: emb
                .get((c.max_position_embeddings, d), "position_embeddings.weight")?,
            embed_norm: LayerNorm::new(d, c.layer_norm_eps, emb.pp("LayerNorm"))?,
            word_embeddings,
            layers,
            head_dense: linear(pred.pp("transform.dense"), d, d)?,
            head_norm: LayerNorm::new(d, c.layer_norm_eps, pred.pp("transform.LayerNorm"))?,
            head_weight,
            head_bias,
        })
    }

    fn heads(&self) -> (usize, usize) {
        let h = self.config.num_attention_heads;
        (h, self.config.hidden_size / h)
    }

    /// Computes the cross-attention keys and values of an image's embeddings (1, N, E).
    pub fn image_context(&self, embeds: &Tensor) -> candle_core::Result<ImageContext> {
        let (one, n, _) = embeds.dims3()?;
        if one != 1 {
            candle_core::bail!("image_context takes one image, got {one}");
        }
        let (h, hd) = self.heads();
        let cross = self
            .layers
            .iter()
            .map(|l| {
                let k = l.crossattention.key.forward(embeds)?.reshape((n, h, hd))?;
                let v = l
                    .crossattention
                    .value
                    .forward(embeds)?
                    .reshape((n, h, hd))?;
                let kt = k.permute((1, 2, 0))?.contiguous()?; // (H, hd, N)
                let v = v.transpose(0, 1)?.contiguous()?; // (H, N, hd)
                Ok((kt, v))
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(ImageContext {
            embeds: embeds.clone(),
            cross,
        })
    }

    /// Runs `ids` (B, L) after the `cache.len()` tokens already decoded, appending their keys
    /// and values to `cache`. Returns the logits (B, L, V) of every position when
    /// `all_positions`, else those of the last position (B, V).
    pub fn forward(
        &self,
        ids: &Tensor,
        ctx: &ImageContext,
        cache: &mut DecoderCache,
        all_positions: bool,
    ) -> candle_core::Result<Tensor> {
        let (b, l) = ids.dims2()?;
        let past = cache.len;
        let c = &self.config;
        if past + l > c.max_position_embeddings {
            candle_core::bail!(
                "{} tokens exceed the decoder's {} positions",
                past + l,
                c.max_position_embeddings
            );
        }
        let d = c.hidden_size;
        let (h, hd) = self.heads();
        let scale = (hd as f64).powf(-0.5);
        let words = self
            .word_embeddings
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, l, d))?;
        let pos = self.position_embeddings.narrow(0, past, l)?;
        let mut x = self.embed_norm.forward(&words.broadcast_add(&pos)?)?;
        if cache.layers.len() != self.layers.len() {
            cache.layers = vec![None; self.layers.len()];
        }
        let mask = if l > 1 {
            // query i (absolute past + i) sees keys 0..=past + i
            let t = past + l;
            let m: Vec<f32> = (0..l)
                .flat_map(|i| (0..t).map(move |j| if j <= past + i { 0.0 } else { f32::MIN }))
                .collect();
            Some(Tensor::from_vec(m, (l, t), ids.device())?)
        } else {
            None
        };
        for (li, layer) in self.layers.iter().enumerate() {
            // causal self-attention with the cache
            let a = &layer.attention;
            let split = |t: Tensor| -> candle_core::Result<Tensor> {
                t.reshape((b, l, h, hd))?.transpose(1, 2)?.contiguous()
            };
            let q = split(a.query.forward(&x)?)?;
            let k = split(a.key.forward(&x)?)?;
            let v = split(a.value.forward(&x)?)?;
            let (k, v) = match cache.layers[li].take() {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                None => (k, v),
            };
            let mut scores = (q.matmul(&k.t()?)? * scale)?;
            if let Some(m) = &mask {
                scores = scores.broadcast_add(m)?;
            }
            let o = softmax(&scores)?
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, l, d))?;
            cache.layers[li] = Some((k, v));
            let x1 = a.output(&o, &x)?;
            // cross-attention: all B·L queries against the image's keys at once
            let ca = &layer.crossattention;
            let (kt, cv) = &ctx.cross[li];
            let q = ca
                .query
                .forward(&x1)?
                .reshape((b * l, h, hd))?
                .transpose(0, 1)?
                .contiguous()?; // (H, B·L, hd)
            let p = softmax(&(q.matmul(kt)? * scale)?)?;
            let o = p.matmul(cv)?.transpose(0, 1)?.reshape((b, l, d))?;
            let x2 = ca.output(&o, &x1)?;
            // feed-forward
            let f = layer
                .output
                .forward(&layer.act.apply(&layer.intermediate.forward(&x2)?)?)?;
            x = layer.output_norm.forward(&(f + x2)?)?;
        }
        cache.len = past + l;
        let x = if all_positions {
            x
        } else {
            x.i((.., l - 1..l, ..))?.contiguous()?
        };
        let y = self
            .head_norm
            .forward(&c.hidden_act.apply(&self.head_dense.forward(&x)?)?)?;
        let logits = Linear {
            weight: self.head_weight.clone(),
            bias: Some(self.head_bias.clone()),
        }
        .forward(&y)?;
        if all_positions {
            Ok(logits)
        } else {
            logits.squeeze(1)
        }
    }
}

/// `(N, 3, H, W)` from prepared 8-bit images: `(v · rescale − mean) / std` per channel, as
/// transformers' NumPy image processor computes it (rescale in f64, then f32).
pub fn pixel_tensor(
    imgs: &[strata_image::RgbImage],
    p: &super::config::ImageProcessing,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let (w, h) = (imgs[0].width, imgs[0].height);
    let mut v = Vec::with_capacity(imgs.len() * 3 * w * h);
    for img in imgs {
        for c in 0..3 {
            for px in 0..w * h {
                let raw = img.data[px * 3 + c];
                let mut x = if p.do_rescale {
                    (raw as f64 * p.rescale_factor) as f32
                } else {
                    raw as f32
                };
                if p.do_normalize {
                    x = (x - p.mean[c]) / p.std[c];
                }
                v.push(x);
            }
        }
    }
    Tensor::from_vec(v, (imgs.len(), 3, h, w), device)
}
