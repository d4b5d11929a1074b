//! Pipeline: determinism, CFG, img2img, PNG text chunks (tiny fixture model).

use candle_core::{DType, Device, Tensor};
use std::path::Path;
use strata_models::conditioning::Conditioning;
use strata_models::loading;
use strata_models::pipeline::*;

fn setup() -> loading::DiffusionModels {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diffusion/tiny_model");
    loading::load_diffusers(&dir, DType::F32, &Device::Cpu, false).unwrap()
}

fn cond(seed: u64) -> FixedConditioning {
    let c = seeded_normal(&[1, 5, 16], seed, &Device::Cpu).unwrap();
    let u = Tensor::zeros((1, 5, 16), DType::F32, &Device::Cpu).unwrap();
    FixedConditioning {
        cond: Conditioning::Context(c),
        uncond: Conditioning::Context(u),
    }
}

fn opts(seed: u64) -> GenerateOptions {
    GenerateOptions {
        steps: 4,
        guidance_scale: 7.0,
        seed,
        batch: 2,
        width: 16,
        height: 16,
        ..Default::default()
    }
}

#[test]
fn same_seed_same_bytes_and_guidance_matters() {
    let m = setup();
    let p = Pipeline {
        unet: &m.unet,
        vae: &m.vae,
    };
    let mut steps = vec![];
    let a = p
        .generate(&cond(1), &opts(5), None, &mut |i, n| steps.push((i, n)))
        .unwrap();
    assert_eq!(steps, vec![(1, 4), (2, 4), (3, 4), (4, 4)]);
    assert_eq!(a.dims(), &[2, 3, 16, 16]);
    let b = p
        .generate(&cond(1), &opts(5), None, &mut |_, _| {})
        .unwrap();
    assert_eq!(to_rgb8(&a).unwrap(), to_rgb8(&b).unwrap());
    let c = p
        .generate(&cond(1), &opts(6), None, &mut |_, _| {})
        .unwrap();
    assert_ne!(to_rgb8(&a).unwrap(), to_rgb8(&c).unwrap());
    let mut o = opts(5);
    o.guidance_scale = 1.0;
    let d = p.generate(&cond(1), &o, None, &mut |_, _| {}).unwrap();
    assert_ne!(to_rgb8(&a).unwrap(), to_rgb8(&d).unwrap());
    // the two batch items start from different noise
    let rgb = to_rgb8(&a).unwrap();
    assert_ne!(rgb[0], rgb[1]);
}

#[test]
fn img2img_runs_the_strength_fraction_of_steps() {
    let m = setup();
    let p = Pipeline {
        unet: &m.unet,
        vae: &m.vae,
    };
    let init = (seeded_normal(&[1, 3, 16, 16], 3, &Device::Cpu).unwrap() * 0.3).unwrap();
    let mut o = opts(1);
    o.steps = 10;
    o.strength = 0.5;
    let mut n_steps = 0;
    let out = p
        .generate(&cond(2), &o, Some(&init), &mut |_, n| n_steps = n)
        .unwrap();
    assert_eq!(n_steps, 5);
    assert_eq!(out.dims(), &[2, 3, 16, 16]);
    o.strength = 1.5;
    assert!(p
        .generate(&cond(2), &o, Some(&init), &mut |_, _| {})
        .is_err());
    // wrong size is an error, not a silent resize
    o.strength = 0.5;
    o.width = 32;
    assert!(p
        .generate(&cond(2), &o, Some(&init), &mut |_, _| {})
        .is_err());
}

#[test]
fn read_png_image_maps_to_unit_range() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("x.png");
    let rgb: Vec<u8> = (0..4 * 4 * 3).map(|i| (i * 5) as u8).collect();
    strata_image::write_png_with_text(&path, &rgb, 4, 4, &[]).unwrap();
    // read_png_image maps it to [-1, 1], planar
    let img = read_png_image(&path, &Device::Cpu).unwrap();
    assert_eq!(img.dims(), &[1, 3, 4, 4]);
    let v = img.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!((v[0] - (-1.0)).abs() < 1e-6);
    assert!((v[1] - (15.0 / 127.5 - 1.0)).abs() < 1e-6);
    assert!((v[16] - (5.0 / 127.5 - 1.0)).abs() < 1e-6);
}
