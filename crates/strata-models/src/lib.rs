//! strata-models: candle modules for the latent diffusion model (CLIP text encoder, UNet with
//! LoRA and hierarchical cross-attention, VAE, schedulers, weight loading).

pub mod clip;
pub mod conditioning;
pub mod fusion;
pub mod ops;
pub mod segments;
pub mod tokenizer;

pub use conditioning::Conditioning;
pub mod loading;
pub mod lora;
pub mod pipeline;
pub mod schedulers;
pub mod unet;
pub mod vae;
