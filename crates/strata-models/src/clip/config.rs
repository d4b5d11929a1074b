//! Text-encoder hyper-parameters, as in transformers' `CLIPTextConfig`.

use serde::{Deserialize, Serialize};

/// The MLP non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// `x · σ(1.702 x)`: OpenAI CLIP and SD-1.x.
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// Exact (erf) GELU: OpenCLIP ViT-H (SD-2.x).
    #[serde(rename = "gelu")]
    Gelu,
}

/// Shape of a CLIP text transformer. Field names follow transformers' `config.json`, so a
/// diffusers `text_encoder/config.json` deserialises directly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> Activation {
    Activation::QuickGelu
}

impl ClipTextConfig {
    /// SD-1.5's text encoder (OpenAI CLIP ViT-L/14): 12 layers, width 768, 12 heads.
    pub fn sd15() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            layer_norm_eps: 1e-5,
            hidden_act: Activation::QuickGelu,
        }
    }

    /// A tiny configuration for tests and the CPU demo (full CLIP vocabulary, width 32).
    pub fn tiny() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            max_position_embeddings: 77,
            layer_norm_eps: 1e-5,
            hidden_act: Activation::QuickGelu,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
