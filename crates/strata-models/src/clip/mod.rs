//! CLIP's text encoder (the SD-1.x `text_encoder`), written from primitive candle ops so it
//! trains: textual inversion learns new token-embedding rows, full fine-tuning and LoRA reach
//! every projection.
//!
//! Module paths mirror the diffusers / transformers weight names:
//! `text_model.embeddings.{token,position}_embedding`,
//! `text_model.encoder.layers.N.{self_attn.{q,k,v,out}_proj, mlp.fc1, mlp.fc2, layer_norm1,
//! layer_norm2}`, `text_model.final_layer_norm`.

mod config;
mod load;
mod text;

/// Re-exported so callers (the CLI) need no direct candle dependency.
pub use candle_core::{DType, Device};
pub use config::{Activation, ClipTextConfig};
pub use load::{
    infer_config, load_text_encoder, text_encoder_from_safetensors, ClipError, SINGLE_FILE_PREFIXES,
};
pub use text::{
    causal_mask, ClipAttention, ClipEncoderLayer, ClipMlp, ClipTextTransformer, TokenEmbedding,
};
