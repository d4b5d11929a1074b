//! strata-models: candle modules for the latent diffusion model (CLIP text encoder, UNet with
//! LoRA and hierarchical cross-attention, VAE, schedulers, weight loading).

pub mod conditioning;

pub use conditioning::Conditioning;
