//! strata-models: candle modules for the latent diffusion model (CLIP text encoder, UNet with
//! LoRA and hierarchical cross-attention, VAE, schedulers, weight loading).

pub mod conditioning;
pub mod ops;
pub mod clip;
pub mod fusion;
pub mod segments;
pub mod tokenizer;

pub use conditioning::Conditioning;
pub mod schedulers;
pub mod lora;
pub mod unet;
pub mod vae;
pub mod loading;
pub mod pipeline;
