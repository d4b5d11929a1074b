//! One module per subcommand.

pub mod caption;
pub mod dataset;
pub mod demo;
pub mod encode;
pub mod eval;
pub mod generate;
pub mod model;
pub mod prepare;
pub mod serve;
pub mod synth;
pub mod train;

/// `sample_size` of a diffusers folder's `vae/config.json`: the image side the model was
/// trained at (512 for SD-1.5, 64 for the embedded base model). `None` for a single-file
/// checkpoint or a config without it.
pub(crate) fn vae_sample_size(model: &std::path::Path) -> Option<usize> {
    std::fs::read_to_string(model.join("vae").join("config.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.get("sample_size")?.as_u64())
        .map(|n| n as usize)
}
