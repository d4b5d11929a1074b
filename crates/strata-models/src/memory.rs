//! Peak-memory estimates of a training step, a generation and their model loads, computed
//! before anything is loaded or allocated, and what the machine has available.
//!
//! The estimate walks the UNet, VAE and text encoder as their `forward` functions run and
//! adds up the tensors each operation creates, with candle's rules: on a path that needs a
//! gradient every op keeps its inputs (so every intermediate tensor lives until the backward
//! pass ends); without one a tensor dies when the next op has used it, so only the skip
//! connections and the current op's inputs, outputs and scratch (im2col buffers of the CPU
//! convolution, attention score blocks of [`crate::attention`]) are alive at once. The
//! backward pass adds the gradients alive at its worst point (those of every skip tensor
//! before the down path consumes them) and the scratch of one convolution's input gradient.
//! Weights, LoRA adapters, AdamW moments and gradients come from the parameter counts in the
//! safetensors headers; the data loader's look-ahead from the batch shape.
//!
//! The element counts follow the code of `unet/`, `vae/`, `ops.rs` and `attention.rs`;
//! `strata train`'s memory test runs real configurations in a child process and checks the
//! measured peak resident size against this estimate (the band and the table are in
//! docs/train.md). Nothing here is specific to the CPU except the im2col scratch, which the
//! CUDA backend also needs in a similar size.

use std::path::Path;

use candle_core::DType;

use crate::attention::BLOCK_ELEMENTS;
use crate::lora::LoraTargets;
use crate::unet::UNetConfig;
use crate::vae::VaeConfig;

const MIB: f64 = (1u64 << 20) as f64;

/// Resident size of the process before any model is loaded (binary, libraries, thread
/// stacks, allocator arenas of the worker threads), measured on Linux x86-64, plus what the
/// `strata` binary's allocator (mimalloc) holds beyond the live tensors: it keeps freed
/// pages for reuse for a second, and the smallest measured training runs (64 px) peaked
/// above an estimate that allowed 48 MiB here.
pub const RUNTIME_BYTES: u64 = 112 << 20;

/// f32 copies of the UNet beyond its weights that a full fine-tune holds at its peak
/// (measured; see [`training`]).
pub const FULL_COPIES: u64 = 8;

/// The allocator's share on top of the activations: freed scratch stays in the allocator's
/// per-thread pools for a while (glibc's arenas below its mmap threshold; mimalloc, which the
/// `strata` binary uses, for a second, see [`RUNTIME_BYTES`]), so the resident peak exceeds
/// the peak of live tensors. The op-by-op count alone came within −4 % … +1 % of the measured
/// peak of LoRA steps under glibc (docs/train.md); 1/16 covers the −4 %.
pub fn slack(activation_bytes: u64) -> u64 {
    activation_bytes + activation_bytes / 16
}

/// Tokens of one caption encoding.
pub const CONTEXT_TOKENS: usize = 77;

/// The shapes of a text encoder that matter for memory.
#[derive(Debug, Clone, PartialEq)]
pub struct TextShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
}

impl TextShape {
    /// SD-1.5's CLIP ViT-L/14 text encoder.
    pub fn sd15() -> Self {
        Self {
            hidden: 768,
            intermediate: 3072,
            layers: 12,
            heads: 12,
        }
    }
}

/// What a model weighs and how it is shaped, read from its config files and the headers of
/// its safetensors files (no tensor is read).
#[derive(Debug, Clone)]
pub struct ModelShape {
    pub unet: UNetConfig,
    pub vae: VaeConfig,
    pub text: TextShape,
    pub unet_params: u64,
    pub vae_params: u64,
    pub text_params: u64,
    /// Bytes of the largest weights file read at load (mapped while its tensors are copied).
    pub largest_file: u64,
    /// Bytes per element of the stored weights (2 for fp16 files).
    pub stored_bytes: u64,
}

/// Element count and element size of every tensor in a safetensors file's header, grouped by
/// `group(name)`; also the file's size.
fn header_counts(
    path: &Path,
    group: &dyn Fn(&str) -> Option<usize>,
) -> Result<([u64; 3], u64, u64), String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let size = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|e| format!("{}: not a safetensors file ({e})", path.display()))?;
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 || n + 8 > size {
        return Err(format!(
            "{}: not a safetensors file (header length {n})",
            path.display()
        ));
    }
    let mut h = vec![0u8; n as usize];
    f.read_exact(&mut h)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&h)
        .map_err(|e| format!("{}: invalid safetensors header ({e})", path.display()))?;
    let mut counts = [0u64; 3];
    let mut elem_bytes = 4;
    for (name, t) in v.as_object().into_iter().flatten() {
        if name == "__metadata__" {
            continue;
        }
        let elems: u64 = t["shape"]
            .as_array()
            .map(|s| s.iter().filter_map(|d| d.as_u64()).product())
            .unwrap_or(0);
        elem_bytes = match t["dtype"].as_str() {
            Some("F16") | Some("BF16") => 2,
            Some("F64") => 8,
            _ => 4,
        };
        if let Some(g) = group(name) {
            counts[g] += elems;
        }
    }
    Ok((counts, size, elem_bytes))
}

fn read_json(path: &Path) -> Result<serde_json::Value, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&s).map_err(|e| format!("{}: invalid JSON ({e})", path.display()))
}

fn text_shape(v: &serde_json::Value) -> TextShape {
    let d = TextShape::sd15();
    let get = |k: &str, default: usize| {
        v.get(k)
            .and_then(|x| x.as_u64())
            .map(|x| x as usize)
            .unwrap_or(default)
    };
    TextShape {
        hidden: get("hidden_size", d.hidden),
        intermediate: get("intermediate_size", d.intermediate),
        layers: get("num_hidden_layers", d.layers),
        heads: get("num_attention_heads", d.heads),
    }
}

impl ModelShape {
    /// Reads a diffusers folder (`unet/`, `vae/`, `text_encoder/` configs and weight
    /// headers) or a single-file SD-1.5 checkpoint (`configs`: a diffusers folder with the
    /// configs of a single file that is not SD-1.5).
    pub fn read(model: &Path, configs: Option<&Path>) -> Result<Self, String> {
        if model.is_dir() {
            let unet =
                UNetConfig::from_diffusers_json(&read_json(&model.join("unet/config.json"))?)
                    .map_err(|e| format!("{}: {e}", model.join("unet/config.json").display()))?;
            let vae = VaeConfig::from_diffusers_json(&read_json(&model.join("vae/config.json"))?)
                .map_err(|e| format!("{}: {e}", model.join("vae/config.json").display()))?;
            let text = read_json(&model.join("text_encoder/config.json"))
                .map(|v| text_shape(&v))
                .unwrap_or_else(|_| TextShape::sd15());
            let file = |dir: &str, stem: &str| {
                crate::loading::weights_file(&model.join(dir), stem, false)
                    .map_err(|e| e.to_string())
            };
            let all = |_: &str| Some(0);
            let (u, us, ub) = header_counts(&file("unet", "diffusion_pytorch_model")?, &all)?;
            let (v, vs, _) = header_counts(&file("vae", "diffusion_pytorch_model")?, &all)?;
            let (t, ts) = match file("text_encoder", "model") {
                Ok(p) => {
                    let (t, ts, _) = header_counts(&p, &all)?;
                    (t[0], ts)
                }
                Err(_) => (0, 0),
            };
            Ok(Self {
                unet,
                vae,
                text,
                unet_params: u[0],
                vae_params: v[0],
                text_params: t,
                largest_file: us.max(vs).max(ts),
                stored_bytes: ub,
            })
        } else {
            let (unet, vae) = match configs {
                Some(d) => (
                    UNetConfig::from_diffusers_json(&read_json(&d.join("unet/config.json"))?)?,
                    VaeConfig::from_diffusers_json(&read_json(&d.join("vae/config.json"))?)?,
                ),
                None => (UNetConfig::sd15(), VaeConfig::sd15()),
            };
            let text = configs
                .and_then(|d| read_json(&d.join("text_encoder/config.json")).ok())
                .map(|v| text_shape(&v))
                .unwrap_or_else(TextShape::sd15);
            let group = |n: &str| {
                if n.starts_with("model.diffusion_model.") {
                    Some(0)
                } else if n.starts_with("first_stage_model.") {
                    Some(1)
                } else if n.starts_with("cond_stage_model.") {
                    Some(2)
                } else {
                    None
                }
            };
            let (c, size, b) = header_counts(model, &group)?;
            Ok(Self {
                unet,
                vae,
                text,
                unet_params: c[0],
                vae_params: c[1],
                text_params: c[2],
                largest_file: size,
                stored_bytes: b,
            })
        }
    }

    /// Parameters of the LoRA adapters `targets` of rank `rank` attach to the UNet.
    pub fn unet_lora_params(&self, rank: usize, targets: &LoraTargets) -> u64 {
        let c = &self.unet;
        let ctx = c.cross_attention_dim as u64;
        let r = rank as u64;
        let per_transformer = |ch: u64| -> u64 {
            let mut p = 0;
            if targets.proj {
                p += 2 * r * 2 * ch;
            }
            let mut block = 0;
            if targets.attention {
                // attn1: q, k, v, out (C→C); attn2: q, out (C→C), k, v (ctx→C)
                block += 6 * r * 2 * ch + 2 * r * (ctx + ch);
            }
            if targets.ff {
                block += r * (ch + 8 * ch) + r * (4 * ch + ch);
            }
            p + block * c.transformer_layers_per_block as u64
        };
        let n = c.block_out_channels.len();
        let mut total = per_transformer(c.block_out_channels[n - 1] as u64);
        for (i, &ch) in c.block_out_channels.iter().enumerate() {
            if c.cross_attention[i] {
                let per_level = (2 * c.layers_per_block + 1) as u64;
                total += per_level * per_transformer(ch as u64);
            }
        }
        total
    }

    /// Parameters of the text encoder's LoRA adapters (attention and MLP projections).
    pub fn text_lora_params(&self, rank: usize) -> u64 {
        let t = &self.text;
        let (d, i, r) = (t.hidden as u64, t.intermediate as u64, rank as u64);
        t.layers as u64 * (4 * r * 2 * d + 2 * r * (d + i))
    }
}

/// The image side a diffusers model was trained at: its `vae/config.json` `sample_size`,
/// else its `unet/config.json` `sample_size` × the VAE's down-sampling. `None` for a single
/// file or configs without either.
pub fn native_resolution(model: &Path) -> Option<usize> {
    let vae = read_json(&model.join("vae/config.json")).ok();
    if let Some(s) = vae
        .as_ref()
        .and_then(|v| v.get("sample_size")?.as_u64())
        .filter(|&s| s >= 8)
    {
        return Some(s as usize);
    }
    let unet = read_json(&model.join("unet/config.json")).ok()?;
    let s = unet.get("sample_size")?.as_u64()? as usize;
    let f = vae
        .as_ref()
        .and_then(|v| VaeConfig::from_diffusers_json(v).ok())
        .map(|v| v.downscale())
        .unwrap_or(8);
    Some(s * f).filter(|&s| s >= 8)
}

/// What a run trains.
#[derive(Debug, Clone, PartialEq)]
pub enum Trained {
    /// UNet adapters (and the text encoder's, when `text_encoder`).
    Lora {
        rank: usize,
        targets: LoraTargets,
        text_encoder: bool,
    },
    /// Every UNet weight (full fine-tune and DreamBooth), and every text-encoder weight
    /// when `text_encoder`.
    Full { text_encoder: bool },
    /// New token embedding rows; the text encoder runs with a gradient.
    TextualInversion { vectors: usize },
    /// The VAE (encoder and decoder) on square crops of `crop` pixels (0: whole images).
    Vae { crop: usize },
}

/// How the captions reach the UNet's cross-attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// One context of this many tokens (77 flat, 231 for three concatenated segments).
    Tokens(usize),
    /// Three 77-token segments attended one by one (decoupled fusion).
    Segments,
}

/// The shape of a training step.
#[derive(Debug, Clone)]
pub struct TrainShape {
    pub trained: Trained,
    pub resolution: usize,
    pub batch: usize,
    pub gradient_accumulation: usize,
    /// dtype of the UNet's frozen weights and activations (mixed precision).
    pub compute: DType,
    pub context: Context,
    /// Caption segments encoded per item (3 hierarchical, 1 flat).
    pub segments: usize,
    /// DreamBooth: a class-image micro-batch runs beside each instance one.
    pub prior_preservation: bool,
    /// Micro-batches of decoded pixels the data loader holds ahead of the step.
    pub prefetch_batches: usize,
    /// Data-loader threads (each decodes one image at a time).
    pub workers: usize,
    /// Latents come from the on-disk cache (no pixels held, no VAE encoding per step).
    pub cached_latents: bool,
    /// Images held decoded for the whole run (VAE training keeps every training image).
    pub held_images: usize,
}

/// The shape of a generation.
#[derive(Debug, Clone)]
pub struct GenerateShape {
    pub width: usize,
    pub height: usize,
    pub batch: usize,
    pub dtype: DType,
    /// Classifier-free guidance runs the UNet on 2 × batch.
    pub guidance: bool,
    pub context: Context,
    /// A LoRA is applied, its adapters weighing this many bytes: they are variables, so one
    /// UNet evaluation keeps its whole graph until the sampler step ends.
    pub lora_bytes: Option<u64>,
    /// img2img: the VAE encodes the init images.
    pub init_image: bool,
}

/// One named share of an estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub name: &'static str,
    pub bytes: u64,
}

/// A peak-memory estimate: the peak and the shares it is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub total: u64,
    pub parts: Vec<Part>,
}

/// Bytes as MiB or GiB with one decimal.
pub fn human(bytes: u64) -> String {
    let m = bytes as f64 / MIB;
    if m >= 1024.0 {
        format!("{:.1} GiB", m / 1024.0)
    } else {
        format!("{m:.0} MiB")
    }
}

impl std::fmt::Display for Estimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", human(self.total))?;
        let parts: Vec<String> = self
            .parts
            .iter()
            .filter(|p| p.bytes > 0)
            .map(|p| format!("{} {}", p.name, human(p.bytes)))
            .collect();
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

fn dtype_bytes(d: DType) -> u64 {
    d.size_in_bytes() as u64
}

/// Walks a network's forward pass adding up tensor bytes.
///
/// With `grad` every created tensor is kept (`saved`) and `scratch` is the largest extra
/// memory one op needs on top; the backward pass's worst point is `bwd_scratch` on top of
/// `saved` plus the skip gradients (`skips`). Without `grad` only `skips` stay alive and
/// `scratch` is the largest op's inputs, outputs and scratch together.
struct Walk {
    grad: bool,
    /// Bytes per activation element.
    act: u64,
    /// Trainable weights (full fine-tune): linear and conv outputs are kept before the bias.
    trainable: bool,
    /// LoRA adapters: which projections, and their rank.
    lora: Option<(LoraTargets, usize)>,
    saved: u64,
    skips: u64,
    scratch: u64,
    bwd_scratch: u64,
}

impl Walk {
    fn new(grad: bool, act: u64) -> Self {
        Self {
            grad,
            act,
            trainable: false,
            lora: None,
            saved: 0,
            skips: 0,
            scratch: 0,
            bwd_scratch: 0,
        }
    }

    /// An op creating `elems` activation elements kept for the backward, with `extra` bytes
    /// of scratch (freed when it returns) and `inputs` elements read.
    fn op(&mut self, elems: u64, extra: u64, inputs: u64) {
        if self.grad {
            self.saved += elems * self.act;
            self.scratch = self.scratch.max(extra);
        } else {
            self.scratch = self
                .scratch
                .max(extra + (elems + inputs) * self.act + self.skips);
        }
    }

    fn bwd(&mut self, bytes: u64) {
        self.bwd_scratch = self.bwd_scratch.max(bytes);
    }

    fn skip(&mut self, elems: u64) {
        self.skips += elems * self.act;
    }

    /// GroupNorm / LayerNorm over `e` elements: centred input, its square, the normalised
    /// values (in f32) and the affine output; half inputs are widened to f32 and back.
    fn norm(&mut self, e: u64) {
        let half = self.act < 4;
        if self.grad {
            self.saved += e * 3 * 4 + e * self.act;
            if self.trainable {
                // a trainable scale and shift: the scaled values are kept too
                self.saved += e * self.act;
            }
            if half {
                self.saved += e * 4 + e * self.act;
            }
            self.scratch = self.scratch.max(e * self.act);
        } else {
            let live = e * (3 * 4 + 2 * self.act) + if half { e * 4 } else { 0 };
            self.scratch = self.scratch.max(live + self.skips);
        }
    }

    fn unary(&mut self, e: u64) {
        self.op(e, 0, e);
    }

    /// 2-D convolution of `n_in` input pixels (batch included) of `cin` channels to `n_out`
    /// pixels of `cout`, kernel `k`: im2col buffer, GEMM output and its contiguous copy.
    fn conv(&mut self, cin: u64, cout: u64, n_in: u64, n_out: u64, k: u64) {
        let a = self.act;
        let col = cin * k * k * n_out * a;
        let out = cout * n_out;
        let kept = if self.trainable { 2 * out } else { out };
        self.op(kept, col + 2 * out * a, cin * n_in);
        // input gradient: a stride-1 convolution of the (dilated, padded) output gradient
        self.bwd(cout * k * k * n_in * a + 2 * cin * n_in * a + 2 * out * a);
    }

    /// Linear map of `tokens` rows `cin → cout`; `copy_in` when the input is a transposed
    /// view (made contiguous first); `adapted` when a LoRA adapter sits on it.
    fn linear(&mut self, cin: u64, cout: u64, tokens: u64, copy_in: bool, adapted: bool) {
        let mut kept = cout * tokens;
        if copy_in {
            kept += cin * tokens;
        }
        if self.trainable {
            kept += cout * tokens;
        }
        if let (true, Some((_, r))) = (adapted, self.lora) {
            // x·A, (x·A)·B, the scaling and the sum; a second copy of a transposed input
            kept += 3 * cout * tokens + r as u64 * tokens;
            if copy_in {
                kept += cin * tokens;
            }
        }
        self.op(kept, cout * tokens * self.act, cin * tokens);
    }

    /// Scaled dot-product attention of (b·h) heads, n queries over m keys of width d.
    fn attention(&mut self, bh: u64, n: u64, m: u64, d: u64) {
        let a = self.act;
        let q = bh * n * d;
        let kv = bh * m * d;
        let scores = bh * n * m;
        let rows = (BLOCK_ELEMENTS as u64 / (bh * m).max(1)).max(1);
        if rows >= n {
            // plain: q·scale, scores, probabilities, output
            self.op(2 * q + 2 * scores, scores * a, q + 2 * kv);
            self.bwd(3 * scores * a + 2 * q * a);
        } else {
            // blocked: only the output and the log-sum-exp are kept; each block's scores,
            // exponentials and probabilities are scratch, with the block outputs and their
            // concatenation
            let block = rows * bh * m;
            self.op(q + bh * n, (5 * block + 3 * q + kv) * a, q + 2 * kv);
            self.bwd((5 * block + 3 * q + 4 * kv) * a);
        }
    }

    fn adapted(&self, f: impl Fn(&LoraTargets) -> bool) -> bool {
        self.lora.as_ref().is_some_and(|(t, _)| f(t))
    }

    fn resnet(&mut self, cin: u64, cout: u64, n: u64) {
        self.norm(cin * n);
        self.unary(cin * n);
        self.conv(cin, cout, n, n, 3);
        self.op(cout * n, 0, cout * n); // + time embedding
        self.norm(cout * n);
        self.unary(cout * n);
        self.conv(cout, cout, n, n, 3);
        if cin != cout {
            self.conv(cin, cout, n, n, 1);
        }
        self.op(cout * n, 0, 2 * cout * n); // residual
    }

    /// One attention layer (self when `ctx` is `None`) over `t` = b·hw tokens of `c`
    /// channels, `heads` heads.
    fn attn(&mut self, b: u64, hw: u64, c: u64, heads: u64, ctx: Option<(u64, Context)>) {
        let t = b * hw;
        let at = self.adapted(|x| x.attention);
        self.linear(c, c, t, false, at); // to_q
        self.op(c * t, 0, c * t); // heads split
        let d = c / heads.max(1);
        let attend = |w: &mut Self, m: u64, cin: u64| {
            let kv_tokens = b * m;
            w.linear(cin, c, kv_tokens, false, at); // to_k
            w.linear(cin, c, kv_tokens, false, at); // to_v
            w.op(2 * c * kv_tokens, 0, 2 * c * kv_tokens); // heads split
            w.attention(b * heads, hw, m, d);
            w.op(c * t, 0, c * t); // heads merged
        };
        match ctx {
            None => attend(self, hw, c),
            Some((dim, Context::Tokens(m))) => attend(self, m as u64, dim),
            Some((dim, Context::Segments)) => {
                for _ in 0..3 {
                    attend(self, CONTEXT_TOKENS as u64, dim);
                    self.op(2 * c * t, 0, c * t); // weighted, summed
                }
            }
        }
        self.linear(c, c, t, false, at); // to_out
        self.op(c * t, 0, 2 * c * t); // residual
    }

    fn transformer(
        &mut self,
        b: u64,
        hw: u64,
        c: u64,
        cfg: &UNetConfig,
        level: usize,
        ctx: Context,
    ) {
        let t = b * hw;
        let heads = cfg.attention_heads[level] as u64;
        let pj = self.adapted(|x| x.proj);
        let ff = self.adapted(|x| x.ff);
        self.norm(c * t);
        self.linear(c, c, t, true, pj);
        for _ in 0..cfg.transformer_layers_per_block {
            self.norm(c * t);
            self.attn(b, hw, c, heads, None);
            self.norm(c * t);
            self.attn(b, hw, c, heads, Some((cfg.cross_attention_dim as u64, ctx)));
            self.norm(c * t);
            self.linear(c, 8 * c, t, false, ff);
            self.op(4 * c * t, 0, 8 * c * t); // GEGLU (one fused op; its input is kept above)
            self.linear(4 * c, c, t, false, ff);
            self.op(c * t, 0, 2 * c * t); // residual
        }
        self.linear(c, c, t, false, pj);
        self.op(2 * c * t, 0, 2 * c * t); // back to (b, c, h, w), residual
    }

    /// The UNet on a (b, in, h, w) latent.
    fn unet(&mut self, cfg: &UNetConfig, b: u64, h: u64, w: u64, ctx: Context) {
        let boc: Vec<u64> = cfg.block_out_channels.iter().map(|&c| c as u64).collect();
        let n_levels = boc.len();
        let mut hw = h * w;
        let mut sizes = vec![hw];
        self.conv(cfg.in_channels as u64, boc[0], b * hw, b * hw, 3);
        let mut skips = vec![boc[0] * hw];
        self.skip(b * boc[0] * hw);
        let mut ch = boc[0];
        for (i, &out) in boc.iter().enumerate() {
            for _ in 0..cfg.layers_per_block {
                self.resnet(ch, out, b * hw);
                ch = out;
                if cfg.cross_attention[i] {
                    self.transformer(b, hw, ch, cfg, i, ctx);
                }
                skips.push(ch * hw);
                self.skip(b * ch * hw);
            }
            if i + 1 < n_levels {
                let next = hw.div_ceil(4);
                self.conv(ch, ch, b * hw, b * next, 3);
                hw = next;
                sizes.push(hw);
                skips.push(ch * hw);
                self.skip(b * ch * hw);
            }
        }
        self.resnet(ch, ch, b * hw);
        self.transformer(b, hw, ch, cfg, n_levels - 1, ctx);
        self.resnet(ch, ch, b * hw);
        for i in 0..n_levels {
            let level = n_levels - 1 - i;
            let out = boc[level];
            for _ in 0..=cfg.layers_per_block {
                let s = skips.pop().unwrap_or(0);
                let s_ch = s / hw.max(1);
                self.op((ch + s_ch) * b * hw, 0, (ch + s_ch) * b * hw); // concatenation
                self.resnet(ch + s_ch, out, b * hw);
                ch = out;
                if cfg.cross_attention[level] {
                    self.transformer(b, hw, ch, cfg, level, ctx);
                }
                // the skip tensor is consumed (inference); with a gradient its gradient is
                // alive from here until the down path reaches it
                if !self.grad {
                    self.skips = self.skips.saturating_sub(b * s * self.act);
                }
            }
            if level > 0 {
                let up = sizes[level - 1];
                self.op(ch * b * up, 0, ch * b * hw); // nearest upsampling
                self.conv(ch, ch, b * up, b * up, 3);
                hw = up;
            }
        }
        self.norm(ch * b * hw);
        self.unary(ch * b * hw);
        self.conv(ch, cfg.out_channels as u64, b * hw, b * hw, 3);
    }

    /// The VAE's single-head mid attention over `n` positions of `c` channels.
    fn vae_attention(&mut self, b: u64, n: u64, c: u64) {
        self.norm(b * c * n);
        for _ in 0..3 {
            self.linear(c, c, b * n, true, false);
        }
        let s = b * n * n;
        // scores, scaled scores, probabilities
        self.op(3 * s, 0, 2 * b * n * c);
        self.op(b * n * c, 0, s);
        self.linear(c, c, b * n, false, false);
        self.op(2 * b * n * c, 0, 2 * b * n * c);
    }

    /// The VAE encoder on (b, 3, h, w) images.
    fn vae_encoder(&mut self, cfg: &VaeConfig, b: u64, h: u64, w: u64) {
        let boc: Vec<u64> = cfg.block_out_channels.iter().map(|&c| c as u64).collect();
        let mut hw = h * w;
        self.conv(cfg.in_channels as u64, boc[0], b * hw, b * hw, 3);
        let mut ch = boc[0];
        for (i, &out) in boc.iter().enumerate() {
            for _ in 0..cfg.layers_per_block {
                self.resnet(ch, out, b * hw);
                ch = out;
            }
            if i + 1 < boc.len() {
                self.op(ch * b * hw, 0, ch * b * hw); // asymmetric padding
                let next = hw / 4;
                self.conv(ch, ch, b * hw, b * next, 3);
                hw = next;
            }
        }
        self.resnet(ch, ch, b * hw);
        self.vae_attention(b, hw, ch);
        self.resnet(ch, ch, b * hw);
        self.norm(ch * b * hw);
        self.unary(ch * b * hw);
        let lc = cfg.latent_channels as u64;
        self.conv(ch, 2 * lc, b * hw, b * hw, 3);
    }

    /// The VAE decoder from (b, latent, h, w) latents.
    fn vae_decoder(&mut self, cfg: &VaeConfig, b: u64, h: u64, w: u64) {
        let boc: Vec<u64> = cfg
            .block_out_channels
            .iter()
            .rev()
            .map(|&c| c as u64)
            .collect();
        let mut hw = h * w;
        let lc = cfg.latent_channels as u64;
        self.conv(lc, boc[0], b * hw, b * hw, 3);
        let mut ch = boc[0];
        self.resnet(ch, ch, b * hw);
        self.vae_attention(b, hw, ch);
        self.resnet(ch, ch, b * hw);
        for (i, &out) in boc.iter().enumerate() {
            for _ in 0..=cfg.layers_per_block {
                self.resnet(ch, out, b * hw);
                ch = out;
            }
            if i + 1 < boc.len() {
                self.op(ch * b * hw * 4, 0, ch * b * hw);
                hw *= 4;
                self.conv(ch, ch, b * hw, b * hw, 3);
            }
        }
        self.norm(ch * b * hw);
        self.unary(ch * b * hw);
        self.conv(ch, cfg.out_channels as u64, b * hw, b * hw, 3);
    }

    /// The CLIP text encoder on `seqs` sequences of 77 tokens.
    fn text(&mut self, t: &TextShape, seqs: u64, adapted: bool) {
        let n = CONTEXT_TOKENS as u64;
        let tok = seqs * n;
        let (d, i, h) = (t.hidden as u64, t.intermediate as u64, t.heads as u64);
        self.op(2 * d * tok, 0, 0); // token + position embeddings
        for _ in 0..t.layers {
            self.norm(d * tok);
            for _ in 0..3 {
                self.linear(d, d, tok, false, adapted);
            }
            self.op(3 * d * tok, 0, 3 * d * tok);
            self.attention(seqs * h, n, n, d / h.max(1));
            self.op(2 * seqs * h * n * n + d * tok, 0, d * tok); // causal mask, merge
            self.linear(d, d, tok, false, adapted);
            self.op(d * tok, 0, 2 * d * tok);
            self.norm(d * tok);
            self.linear(d, i, tok, false, adapted);
            self.op(3 * i * tok, 0, i * tok); // quick GELU
            self.linear(i, d, tok, false, adapted);
            self.op(d * tok, 0, 2 * d * tok);
        }
        self.norm(d * tok);
    }

    /// Peak bytes of the walk: kept tensors and the worst of the forward scratch and the
    /// backward's skip gradients + scratch (with `grad`), else the largest live set.
    fn peak(&self) -> u64 {
        if self.grad {
            self.saved + self.scratch.max(self.skips + self.bwd_scratch)
        } else {
            self.scratch
        }
    }
}

/// Peak memory of a training step of `s` on model `m`.
pub fn training(m: &ModelShape, s: &TrainShape) -> Estimate {
    if let Trained::Vae { crop } = s.trained {
        return vae_training(m, s, crop);
    }
    let f = m.vae.downscale() as u64;
    let side = s.resolution as u64;
    let (lh, lw) = (side.div_ceil(f), side.div_ceil(f));
    let b = s.batch as u64;
    let act = dtype_bytes(s.compute);
    let half_unet = act < 4 && !matches!(s.trained, Trained::Full { .. });
    let unet_bytes = m.unet_params * if half_unet { act } else { 4 };
    let weights = unet_bytes + (m.vae_params + m.text_params) * 4;
    // loading: the mapped file and its tensors in the stored dtype beside the f32 copies; a
    // mixed-precision run loads the UNet twice, a full fine-tune reads it again into
    // variables while the loaded copy lives
    let mut load =
        m.largest_file + m.unet_params.max(m.vae_params).max(m.text_params) * m.stored_bytes;
    if half_unet || matches!(s.trained, Trained::Full { .. }) {
        load += m.unet_params * 4;
    }
    if let Trained::Full { text_encoder: true } = s.trained {
        // the text encoder read again into variables while the loaded copy lives
        load += m.text_params * 4;
    }

    // trainable parameters, their AdamW moments and gradients (one more copy when
    // gradients are accumulated over micro-batches)
    let (trainable, adapters_in_weights) = match &s.trained {
        Trained::Lora {
            rank,
            targets,
            text_encoder,
        } => {
            let mut p = m.unet_lora_params(*rank, targets);
            if *text_encoder {
                p += m.text_lora_params(*rank);
            }
            (p, false)
        }
        Trained::Full { text_encoder } => (
            m.unet_params + if *text_encoder { m.text_params } else { 0 },
            true,
        ),
        Trained::TextualInversion { vectors } => ((*vectors * m.text.hidden) as u64, false),
        Trained::Vae { .. } => unreachable!("handled by vae_training"),
    };
    let copies = if adapters_in_weights {
        // measured: a full fine-tune of one step at 16 px, where activations are
        // negligible, peaks at 7.6 f32 copies of the UNet beyond the weights: its gradient,
        // the gradients of the weight views the backward passes through (transposes,
        // reshapes), the two AdamW moments, the checkpoint's serialisation buffers and what
        // the allocator keeps of them
        FULL_COPIES
    } else {
        // the adapters, their gradient and two AdamW moments
        4
    } + u64::from(s.gradient_accumulation > 1);
    let optimizer = trainable * 4 * copies;

    // the UNet step
    let mut w = Walk::new(true, act);
    match &s.trained {
        Trained::Lora { rank, targets, .. } => w.lora = Some((*targets, *rank)),
        Trained::Full { .. } => w.trainable = true,
        Trained::TextualInversion { .. } | Trained::Vae { .. } => {}
    }
    let ctx = s.context;
    w.unet(&m.unet, b, lh, lw, ctx);
    let per_batch = w.peak();
    let mut unet_step = per_batch;
    if s.prior_preservation {
        // the class micro-batch's graph is alive beside the instance one
        unet_step += w.saved;
    }
    // the loss: noise, noised latents, target, prediction difference (f32)
    let lc = m.unet.in_channels as u64;
    unet_step += 6 * b * lc * lh * lw * 4;

    // the text encoder: kept for the backward when it trains, else one pass's scratch
    let text_grad = matches!(
        s.trained,
        Trained::TextualInversion { .. }
            | Trained::Lora {
                text_encoder: true,
                ..
            }
            | Trained::Full { text_encoder: true }
    );
    let seqs = b * s.segments as u64 * if s.prior_preservation { 2 } else { 1 };
    let mut tw = Walk::new(text_grad, 4);
    if let Trained::Lora {
        rank,
        text_encoder: true,
        ..
    } = &s.trained
    {
        tw.lora = Some((
            LoraTargets {
                attention: true,
                proj: false,
                ff: true,
            },
            *rank,
        ));
    }
    // a fully trained text encoder keeps its weights' views for the backward, as the UNet's do
    tw.trainable = matches!(s.trained, Trained::Full { text_encoder: true });
    tw.text(&m.text, seqs, text_grad);
    let text = tw.peak() + seqs * CONTEXT_TOKENS as u64 * m.unet.cross_attention_dim as u64 * 4 * 2;

    // the VAE encodes one image at a time, before the step's UNet graph exists
    let vae = if s.cached_latents {
        0
    } else {
        let mut v = Walk::new(false, 4);
        v.vae_encoder(&m.vae, 1, side, side);
        v.peak()
    };

    // the data loader: decoded pixels of the micro-batches ahead, and each worker's image
    // being decoded and resized
    let px = 3 * side * side * 4;
    let prefetch = if s.cached_latents {
        s.prefetch_batches as u64 * b * lc * lh * lw * 4
    } else {
        s.prefetch_batches as u64 * b * px + s.workers as u64 * 3 * px
    };

    let activations = slack((unet_step + text).max(vae));
    let step = weights + optimizer + activations + prefetch;
    // a checkpoint: the moments (and the variables) serialised into one buffer, then copied
    let state = trainable * 4 * 3;
    let save = weights + state + 2 * state;
    let total = RUNTIME_BYTES + step.max(weights + load).max(save);
    Estimate {
        total,
        parts: vec![
            Part {
                name: "weights",
                bytes: weights,
            },
            Part {
                name: "trainable + AdamW",
                bytes: optimizer,
            },
            Part {
                name: "UNet activations",
                bytes: unet_step,
            },
            Part {
                name: "text encoder",
                bytes: text,
            },
            Part {
                name: "VAE encode",
                bytes: vae,
            },
            Part {
                name: "data prefetch",
                bytes: prefetch,
            },
            Part {
                name: "runtime",
                bytes: RUNTIME_BYTES,
            },
        ],
    }
}

/// Peak memory of a VAE training step: encoder and decoder with trainable weights on the
/// crops, every training image held decoded.
fn vae_training(m: &ModelShape, s: &TrainShape, crop: usize) -> Estimate {
    let side = if crop > 0 { crop } else { s.resolution } as u64;
    let b = s.batch as u64;
    let f = m.vae.downscale() as u64;
    let weights = (m.unet_params + m.vae_params + m.text_params) * 4;
    let load = m.largest_file + m.unet_params.max(m.vae_params).max(m.text_params) * m.stored_bytes;
    let copies = 3 + u64::from(s.gradient_accumulation > 1);
    let optimizer = m.vae_params * 4 * copies;
    let mut w = Walk::new(true, 4);
    w.trainable = true;
    w.vae_encoder(&m.vae, b, side, side);
    w.vae_decoder(&m.vae, b, side / f, side / f);
    let activations = slack(w.peak() + 4 * b * 3 * side * side * 4);
    let res = s.resolution as u64;
    let images = s.held_images as u64 * 3 * res * res * 4;
    let step = weights + optimizer + activations + images;
    let total = RUNTIME_BYTES + step.max(weights + load + images);
    Estimate {
        total,
        parts: vec![
            Part {
                name: "weights",
                bytes: weights,
            },
            Part {
                name: "trainable + AdamW",
                bytes: optimizer,
            },
            Part {
                name: "VAE activations",
                bytes: activations,
            },
            Part {
                name: "training images",
                bytes: images,
            },
            Part {
                name: "runtime",
                bytes: RUNTIME_BYTES,
            },
        ],
    }
}

/// Peak memory of generating `s` with model `m`.
pub fn generation(m: &ModelShape, s: &GenerateShape) -> Estimate {
    let f = m.vae.downscale() as u64;
    let (lh, lw) = ((s.height as u64).div_ceil(f), (s.width as u64).div_ceil(f));
    let b = s.batch as u64;
    let ub = if s.guidance { 2 * b } else { b };
    let act = dtype_bytes(s.dtype);
    let weights = (m.unet_params + m.vae_params + m.text_params) * act + s.lora_bytes.unwrap_or(0);
    let load = m.largest_file + m.unet_params.max(m.vae_params).max(m.text_params) * m.stored_bytes;
    let mut w = Walk::new(s.lora_bytes.is_some(), act);
    if s.lora_bytes.is_some() {
        // which projections carry adapters is in the file; all of them bounds it
        w.lora = Some((
            LoraTargets {
                attention: true,
                proj: true,
                ff: true,
            },
            16,
        ));
    }
    w.unet(&m.unet, ub, lh, lw, s.context);
    let unet = if w.grad {
        w.saved + w.scratch
    } else {
        w.peak()
    };
    let mut v = Walk::new(false, act);
    v.vae_decoder(&m.vae, b, lh, lw);
    let mut vae = v.peak() + b * 3 * s.height as u64 * s.width as u64 * 4 * 2;
    if s.init_image {
        let mut e = Walk::new(false, act);
        e.vae_encoder(&m.vae, b, s.height as u64, s.width as u64);
        vae = vae.max(e.peak());
    }
    let mut tw = Walk::new(false, act);
    tw.text(&m.text, 2 * 3 * b, false);
    let text = tw.peak();
    let latents = 8 * ub * m.unet.in_channels as u64 * lh * lw * act;
    let total = RUNTIME_BYTES + weights + load.max(slack(unet.max(vae).max(text)) + latents);
    Estimate {
        total,
        parts: vec![
            Part {
                name: "weights",
                bytes: weights,
            },
            Part {
                name: "UNet",
                bytes: unet,
            },
            Part {
                name: "VAE",
                bytes: vae,
            },
            Part {
                name: "text encoder",
                bytes: text,
            },
            Part {
                name: "runtime",
                bytes: RUNTIME_BYTES,
            },
        ],
    }
}

/// One layer of a plain convolutional feature network (evaluation backbones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// Convolution `cin → cout`, kernel `k`, stride `s` (same padding), then ReLU.
    Conv(usize, usize, usize, usize),
    /// 2×2 (or 3×3 stride-2) max pooling: halves the side.
    Pool,
}

/// VGG16's feature layers (torchvision `features`).
pub const VGG16: &[Layer] = &{
    use Layer::*;
    [
        Conv(3, 64, 3, 1),
        Conv(64, 64, 3, 1),
        Pool,
        Conv(64, 128, 3, 1),
        Conv(128, 128, 3, 1),
        Pool,
        Conv(128, 256, 3, 1),
        Conv(256, 256, 3, 1),
        Conv(256, 256, 3, 1),
        Pool,
        Conv(256, 512, 3, 1),
        Conv(512, 512, 3, 1),
        Conv(512, 512, 3, 1),
        Pool,
        Conv(512, 512, 3, 1),
        Conv(512, 512, 3, 1),
        Conv(512, 512, 3, 1),
        Pool,
    ]
};

/// AlexNet's feature layers (torchvision `features`).
pub const ALEXNET: &[Layer] = &{
    use Layer::*;
    [
        Conv(3, 64, 11, 4),
        Pool,
        Conv(64, 192, 5, 1),
        Pool,
        Conv(192, 384, 3, 1),
        Conv(384, 256, 3, 1),
        Conv(256, 256, 3, 1),
        Pool,
    ]
};

/// Inception-v3's stem up to its first mixed block (where its activations are largest).
pub const INCEPTION_STEM: &[Layer] = &{
    use Layer::*;
    [
        Conv(3, 32, 3, 2),
        Conv(32, 32, 3, 1),
        Conv(32, 64, 3, 1),
        Pool,
        Conv(64, 80, 1, 1),
        Conv(80, 192, 3, 1),
        Pool,
    ]
};

/// Peak bytes of a feature network run without gradient on `batch` images of `h`×`w`
/// (f32): the largest convolution's input, im2col buffer and outputs, plus the outputs
/// kept as features (`keep_all`: every ReLU output is tapped, as LPIPS does).
pub fn feature_net_peak(layers: &[Layer], batch: usize, h: usize, w: usize, keep_all: bool) -> u64 {
    let mut w_ = Walk::new(false, 4);
    let (mut h, mut w) = (h as u64, w as u64);
    let b = batch as u64;
    let mut kept = 0u64;
    for l in layers {
        match *l {
            Layer::Conv(cin, cout, k, s) => {
                let (cin, cout, k, s) = (cin as u64, cout as u64, k as u64, s as u64);
                let (ho, wo) = (h.div_ceil(s), w.div_ceil(s));
                w_.skips = kept;
                w_.conv(cin, cout, b * h * w, b * ho * wo, k);
                w_.unary(cout * b * ho * wo);
                if keep_all {
                    kept += cout * b * ho * wo * 4;
                }
                h = ho;
                w = wo;
            }
            Layer::Pool => {
                h = (h / 2).max(1);
                w = (w / 2).max(1);
            }
        }
    }
    w_.scratch.max(kept)
}

/// Memory the process may still use.
#[derive(Debug, Clone, PartialEq)]
pub struct Available {
    pub bytes: u64,
    /// Where the figure comes from (`MemAvailable`, or the cgroup limit when lower).
    pub source: String,
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// Room left under a cgroup v2 limit: `memory.max` − `memory.current` (`None` for "max").
pub fn cgroup_room(max: &str, current: Option<&str>) -> Option<u64> {
    let max: u64 = max.trim().parse().ok()?;
    let cur: u64 = current.and_then(|c| c.trim().parse().ok()).unwrap_or(0);
    Some(max.saturating_sub(cur))
}

/// What a run on `device` may use: the host's available memory ([`available`]) on the CPU;
/// `None` on a GPU, whose device memory an estimate is not compared with.
pub fn available_on(device: &crate::device::DeviceSpec) -> Option<Available> {
    match device {
        crate::device::DeviceSpec::Cpu => available(),
        _ => None,
    }
}

/// `MemAvailable` from `/proc/meminfo`, or the room under this process's cgroup v2 memory
/// limit when that is lower. `None` where neither can be read (not Linux).
pub fn available() -> Option<Available> {
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo(&t));
    let cg = cgroup_dir().and_then(|d| {
        let max = std::fs::read_to_string(d.join("memory.max")).ok()?;
        let cur = std::fs::read_to_string(d.join("memory.current")).ok();
        cgroup_room(&max, cur.as_deref())
    });
    match (mem, cg) {
        (Some(m), Some(c)) if c < m => Some(Available {
            bytes: c,
            source: "the cgroup memory limit (memory.max − memory.current)".into(),
        }),
        (Some(m), _) => Some(Available {
            bytes: m,
            source: "MemAvailable".into(),
        }),
        (None, Some(c)) => Some(Available {
            bytes: c,
            source: "the cgroup memory limit (memory.max − memory.current)".into(),
        }),
        (None, None) => None,
    }
}

/// This process's cgroup v2 folder (`/sys/fs/cgroup` + the path in `/proc/self/cgroup`).
fn cgroup_dir() -> Option<std::path::PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_string()))
        });
    if let Some(p) = own {
        let d = root.join(p.trim_start_matches('/'));
        if d.join("memory.max").is_file() {
            return Some(d);
        }
    }
    root.join("memory.max")
        .is_file()
        .then(|| root.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_cgroup_parse() {
        let t = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(parse_meminfo(t), Some(20_000_000 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 5 kB\n"), None);
        assert_eq!(cgroup_room("max\n", Some("5")), None);
        assert_eq!(cgroup_room("1000\n", Some("300\n")), Some(700));
        assert_eq!(cgroup_room("1000", None), Some(1000));
    }

    #[test]
    fn lora_parameter_count_matches_the_attached_adapters() {
        use candle_core::Device;
        use candle_nn::{VarBuilder, VarMap};
        let cfg = UNetConfig::small();
        let vm = VarMap::new();
        let mut unet = crate::unet::UNet2DConditionModel::new(
            cfg.clone(),
            VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
        )
        .unwrap();
        for targets in [
            LoraTargets {
                attention: true,
                proj: false,
                ff: false,
            },
            LoraTargets {
                attention: true,
                proj: true,
                ff: true,
            },
        ] {
            let mut u = unet.clone();
            crate::lora::attach(
                &mut u,
                &crate::lora::LoraConfig {
                    rank: 3,
                    alpha: 3.0,
                    targets,
                    seed: 0,
                },
            )
            .unwrap();
            let counted: usize = crate::lora::adapters(&u)
                .iter()
                .map(|(_, a)| a.a.elem_count() + a.b.elem_count())
                .sum();
            let shape = ModelShape {
                unet: cfg.clone(),
                vae: VaeConfig::tiny(),
                text: TextShape::sd15(),
                unet_params: 0,
                vae_params: 0,
                text_params: 0,
                largest_file: 0,
                stored_bytes: 4,
            };
            assert_eq!(shape.unet_lora_params(3, &targets), counted as u64);
        }
        let _ = &mut unet;
    }

    #[test]
    fn estimates_grow_with_batch_and_resolution() {
        let m = ModelShape {
            unet: UNetConfig::sd15(),
            vae: VaeConfig::sd15(),
            text: TextShape::sd15(),
            unet_params: 859_520_964,
            vae_params: 83_653_863,
            text_params: 123_060_480,
            largest_file: 1_719_000_000,
            stored_bytes: 2,
        };
        let shape = |res, batch, trained| TrainShape {
            trained,
            resolution: res,
            batch,
            gradient_accumulation: 1,
            compute: DType::F32,
            context: Context::Tokens(231),
            segments: 3,
            prior_preservation: false,
            prefetch_batches: 4,
            workers: 2,
            cached_latents: false,
            held_images: 0,
        };
        let lora = Trained::Lora {
            rank: 4,
            targets: LoraTargets {
                attention: true,
                proj: false,
                ff: false,
            },
            text_encoder: false,
        };
        let a = training(&m, &shape(256, 1, lora.clone())).total;
        let b = training(&m, &shape(512, 1, lora.clone())).total;
        let c = training(&m, &shape(512, 4, lora.clone())).total;
        let full = training(
            &m,
            &shape(
                512,
                4,
                Trained::Full {
                    text_encoder: false,
                },
            ),
        )
        .total;
        assert!(a < b && b < c && c < full, "{a} {b} {c} {full}");
        // a full fine-tune holds the f32 UNet, its gradient and two AdamW moments
        assert!(full - c > 3 * 4 * m.unet_params, "{full} {c}");
        // and with the text encoder, its weights' gradient and moments too
        let with_text = training(&m, &shape(512, 4, Trained::Full { text_encoder: true })).total;
        assert!(
            with_text - full > 3 * 4 * m.text_params,
            "{with_text} {full} ({} text parameters)",
            m.text_params
        );
    }
}
