//! VAE parity with diffusers' AutoencoderKL (fixtures: scripts/fixtures/diffusion_models.py).

use candle_core::{DType, Device, Tensor};
use std::path::Path;
use strata_models::loading;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn vae_encode_decode_match_diffusers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diffusion");
    let t =
        candle_core::safetensors::load(dir.join("models_io.safetensors"), &Device::Cpu).unwrap();
    let m =
        loading::load_diffusers(&dir.join("tiny_model"), DType::F32, &Device::Cpu, false).unwrap();
    assert_eq!(m.vae.config.scaling_factor, 0.18215);
    let z = m.vae.encode(&t["vae_image"], None).unwrap();
    let d = max_abs_diff(&z, &t["vae_latents"]);
    assert!(d <= 1e-4, "encode max |Δ| = {d}");
    let x = m.vae.decode(&t["vae_decode_in"]).unwrap();
    let d = max_abs_diff(&x, &t["vae_decoded"]);
    assert!(d <= 1e-4, "decode max |Δ| = {d}");
    // sampling adds σ·noise: with zero noise it is the mean
    let zero = Tensor::zeros(z.dims(), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(
        max_abs_diff(&m.vae.encode(&t["vae_image"], Some(&zero)).unwrap(), &z),
        0.0
    );
}
