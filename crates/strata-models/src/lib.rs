//! strata-models: candle modules for the latent diffusion model (CLIP text encoder, UNet with
//! LoRA and hierarchical cross-attention, VAE, schedulers, weight loading), and the model
//! files strata writes: safetensors output ([`safetensors_io`]), LoRA files in the kohya and
//! PEFT layouts ([`lora_file`]), random models of a named size ([`init`], [`testing`]).
//! Inference (generation, evaluation) needs nothing from the training crate.

pub mod attention;
pub mod clip;
pub mod conditioning;
pub mod cpu_kernels;
pub mod device;
pub mod diffusers_folder;
pub mod embeddings;
pub mod error;
pub mod fusion;
pub mod init;
pub mod ops;
pub mod segments;
pub mod tokenizer;

pub use conditioning::Conditioning;
pub use error::ModelError;
pub mod loading;
pub mod lora;
pub mod lora_file;
pub mod memory;
pub mod pipeline;
pub mod safetensors_io;
pub mod schedulers;
pub mod testing;
pub mod text_side;
pub mod unet;
pub mod vae;
