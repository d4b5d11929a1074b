//! strata-models: candle modules for the latent diffusion model (CLIP text encoder, UNet with
//! LoRA and hierarchical cross-attention, VAE, schedulers, weight loading).

pub mod conditioning;
pub mod ops;

pub use conditioning::Conditioning;
