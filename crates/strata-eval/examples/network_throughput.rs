//! CPU (or CUDA) throughput of the pytorch-fid Inception-v3 and PieAPP forwards on random
//! weights in the published layouts (speed does not depend on the values).
//!
//! ```text
//! cargo run --release -p strata-eval --example network_throughput -- [IMAGES] [SIDE]
//! ```
//! prints images/s for Inception-v3 pool features at batch sizes 1 and 4 (input SIDE×SIDE,
//! default 8 images of 64×64, resized to 299×299 inside) and image pairs/s for PieAPP on
//! SIDE×SIDE pairs (stride 27).

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use strata_eval::inception::InceptionV3;
use strata_eval::pieapp::PieApp;

/// Random tensors with the keys and shapes listed in a committed fixture.
fn random_weights(fixture: &str) -> HashMap<String, Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json");
    let mut out = HashMap::new();
    for e in fx["state_dict"].as_array().expect("state_dict") {
        let name = e[0].as_str().expect("name").to_string();
        let shape: Vec<usize> = e[1]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("dim") as usize)
            .collect();
        let fan_in = shape.iter().skip(1).product::<usize>().max(1) as f64;
        let t = if e.get(2).and_then(|d| d.as_str()) == Some("int64") {
            Tensor::zeros(shape.as_slice(), DType::I64, &Device::Cpu)
        } else if name.ends_with("running_var") || name.ends_with("bn.weight") {
            Tensor::ones(shape.as_slice(), DType::F32, &Device::Cpu)
        } else {
            Tensor::randn(
                0f32,
                (2.0 / fan_in).sqrt() as f32,
                shape.as_slice(),
                &Device::Cpu,
            )
        };
        out.insert(name, t.expect("tensor"));
    }
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map_or(Ok(8), |a| a.parse())?;
    let side: usize = args.get(2).map_or(Ok(64), |a| a.parse())?;
    let device = if candle_core::utils::cuda_is_available() {
        Device::new_cuda(0)?
    } else {
        Device::Cpu
    };
    let dir = std::env::temp_dir().join(format!("strata-throughput-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let images = Tensor::rand(0f32, 1.0, (n, 3, side, side), &Device::Cpu)?;

    let inc_path = dir.join("inception.safetensors");
    candle_core::safetensors::save(&random_weights("inception_fid.json"), &inc_path)?;
    let model = InceptionV3::load(&inc_path, &device)?;
    for batch in [1usize, 4] {
        let model = InceptionV3::load(&inc_path, &device)?.with_batch_size(batch);
        model.pool_features(&images.narrow(0, 0, 1)?)?; // warm-up
        let t = Instant::now();
        let f = model.pool_features(&images)?;
        let _ = f.sum_all()?.to_scalar::<f32>()?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "inception-v3 pool3, {n} images {side}x{side}, batch {batch}: {s:.2} s, {:.2} images/s",
            n as f64 / s
        );
    }
    drop(model);

    if side >= 64 {
        let pie_path = dir.join("pieapp.safetensors");
        candle_core::safetensors::save(&random_weights("pieapp.json"), &pie_path)?;
        let pie = PieApp::load(&pie_path, &device)?;
        let distorted = (&images * 0.9)?;
        let t = Instant::now();
        let scores = pie.score(&images, &distorted)?;
        let s = t.elapsed().as_secs_f64();
        let per_side = (side - 64) / 27 + 1;
        println!(
            "pieapp, {} pairs {side}x{side} ({} patches each): {s:.2} s, {:.2} pairs/s",
            scores.len(),
            per_side * per_side,
            n as f64 / s
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
