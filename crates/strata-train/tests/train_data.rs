//! Streamed training data on the tiny model: runs with and without the on-disk latent cache
//! give the same losses bit for bit, the cache is reused and invalidated by its keys, an
//! image that breaks after the start-up check stops the run naming it, and aspect-ratio
//! buckets hold whole batches.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use strata_train::{StepReport, TrainConfig, Trainer};

#[allow(dead_code)]
mod common;

/// A tiny model and a 6-image synthetic dataset (64² PNG tiles).
fn setup(root: &Path) -> (PathBuf, PathBuf) {
    common::tiny_model_and_scenes(root, 6)
}

fn cfg(model: &Path, data: &Path, out: &Path) -> TrainConfig {
    TrainConfig {
        model: model.into(),
        data: data.into(),
        out: out.into(),
        resolution: 16,
        batch_size: 2,
        max_steps: Some(5),
        lr: 1e-2,
        lora_rank: 2,
        lora_alpha: 2.0,
        checkpoint_every: 2,
        ..TrainConfig::default()
    }
}

/// Trains `cfg` to the end; the per-step losses (as bits) and the status lines.
fn run(cfg: TrainConfig) -> (Vec<u32>, Vec<String>) {
    let mut losses = vec![];
    let mut status = vec![];
    strata_train::train(
        cfg,
        strata_train::RunOptions {
            resume: false,
            on_status: &mut |s: &str| status.push(s.to_string()),
            on_step: &mut |r: &StepReport| losses.push(r.loss.to_bits()),
        },
    )
    .unwrap();
    (losses, status)
}

/// The cache's entry files (name → bytes).
fn entries(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".latent"))
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn cached_and_streamed_latents_give_the_same_losses_and_the_cache_is_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    let cache = data.join(".strata-latent-cache");
    let (plain, _) = run(cfg(&model, &data, &tmp.path().join("plain")));
    assert_eq!(plain.len(), 5);
    assert!(!cache.exists(), "no cache without --cache-latents");

    let mut c = cfg(&model, &data, &tmp.path().join("cached1"));
    c.cache_latents = true;
    let (first, status) = run(c.clone());
    assert_eq!(first, plain, "losses with --cache-latents differ");
    assert!(
        status.iter().any(|s| s.contains("caching the latents")),
        "{status:?}"
    );
    let made = entries(&cache);
    // the synthetic dataset's train split: every image once
    let n_train = Trainer::new(cfg(&model, &data, &tmp.path().join("x")), &mut |_| {})
        .unwrap()
        .data
        .images
        .len();
    assert_eq!(made.len(), n_train);

    // a second run reads the cache: same losses, no entry rewritten
    c.out = tmp.path().join("cached2");
    let (second, status) = run(c);
    assert_eq!(second, plain, "losses from the cache differ");
    assert!(
        status.iter().any(|s| s.contains("all cached")),
        "{status:?}"
    );
    assert_eq!(entries(&cache), made);

    // each cached latent is the VAE's posterior mean × scaling factor of the decoded image,
    // encoded alone: compare with an encoding made here, and with the image in a batch of 4
    let t = Trainer::new(cfg(&model, &data, &tmp.path().join("y")), &mut |_| {}).unwrap();
    let (idx, lat) = t.batch_latents(3).unwrap();
    let mut alone = vec![];
    for (j, &i) in idx.iter().enumerate() {
        let im = &t.data.images[t.data.items[i].image];
        let px = strata_train::data::decode_item(&im.path, 16, 16).unwrap();
        let x = Tensor::from_vec(px, (1, 3, 16, 16), &Device::Cpu).unwrap();
        let z = t.vae.encode(&x, None).unwrap();
        assert_eq!(
            bits(&z),
            bits(&lat.get(j).unwrap().unsqueeze(0).unwrap()),
            "item {i}"
        );
        alone.push(x);
    }
    // a batch of several images: report whether it matches the one-at-a-time bytes (the
    // stream always encodes one at a time, so this does not affect training)
    let xb = Tensor::cat(&[&alone[0], &alone[1], &alone[0], &alone[1]], 0).unwrap();
    let zb = t.vae.encode(&xb, None).unwrap();
    let same = bits(&zb.narrow(0, 0, 2).unwrap()) == bits(&lat);
    eprintln!("VAE encoding in a batch of 4 equals one-at-a-time bytes on CPU: {same}");
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn the_cache_key_changes_with_the_resolution_and_the_vae_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    let cache = tmp.path().join("cache");
    let mut c = cfg(&model, &data, &tmp.path().join("r16"));
    c.cache_latents = true;
    c.latent_cache_dir = Some(cache.clone());
    c.max_steps = Some(2);
    run(c.clone());
    let at16 = entries(&cache);
    assert!(!at16.is_empty());
    assert!(!data.join(".strata-latent-cache").exists());

    // another resolution: a new entry per image, the old ones untouched
    c.resolution = 24;
    c.out = tmp.path().join("r24");
    run(c.clone());
    let both = entries(&cache);
    assert_eq!(both.len(), 2 * at16.len());
    assert!(at16.iter().all(|e| both.contains(e)));

    // other VAE weights (same model folder): new entries again, and the run's losses are
    // those of an uncached run with the new VAE (no stale latent was read)
    let other = tmp.path().join("other");
    strata_models::testing::write_tiny_model(&other, 11).unwrap();
    let vae = Path::new("vae/diffusion_pytorch_model.safetensors");
    std::fs::copy(other.join(vae), model.join(vae)).unwrap();
    c.out = tmp.path().join("newvae");
    let (cached, _) = run(c.clone());
    assert_eq!(entries(&cache).len(), 3 * at16.len());
    let mut plain = c.clone();
    plain.cache_latents = false;
    plain.out = tmp.path().join("newvae-plain");
    assert_eq!(run(plain).0, cached);

    // a touched image file gets a new entry too (its length/mtime are in the key)
    let rec = strata_caption::dataset::read_dataset(&data)
        .unwrap()
        .into_iter()
        .find(|r| r.split != Some(strata_caption::dataset::Split::Test))
        .unwrap();
    let img = data.join(&rec.file_name);
    let bytes = std::fs::read(&img).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&img, &bytes).unwrap();
    c.out = tmp.path().join("touched");
    run(c);
    assert_eq!(entries(&cache).len(), 3 * at16.len() + 1);
}

/// Rewrites a PNG as its left `w × h` part (RGB8).
fn crop_png(path: &Path, w: usize, h: usize) {
    let t = strata_models::pipeline::read_png_image(path, &Device::Cpu).unwrap();
    let (_, _, sh, sw) = t.dims4().unwrap();
    assert!(w <= sw && h <= sh);
    let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut rgb = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                rgb[(y * w + x) * 3 + c] =
                    ((v[c * sh * sw + y * sw + x] + 1.0) * 127.5).round() as u8;
            }
        }
    }
    strata_image::write_png_with_text(path, &rgb, w, h, &[]).unwrap();
}

#[test]
fn bucketing_puts_a_two_to_one_tile_in_a_two_to_one_bucket_and_batches_hold_one_bucket() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    strata_models::testing::write_tiny_model(&model, 3).unwrap();
    let data = tmp.path().join("data");
    let opts = strata_synth::dataset::DatasetOptions {
        count: 8,
        size: 128,
        seed: 2,
        classes: vec![],
    };
    strata_synth::dataset::write_dataset(&data, &opts, &|| {}).unwrap();
    let recs = strata_caption::dataset::read_dataset(&data).unwrap();
    // three 2:1 tiles (128×64), two 1:2 (64×128); the rest stay square
    let wide: Vec<String> = recs[..3].iter().map(|r| r.file_name.clone()).collect();
    for r in &recs[..3] {
        crop_png(&data.join(&r.file_name), 128, 64);
    }
    for r in &recs[3..5] {
        crop_png(&data.join(&r.file_name), 64, 128);
    }
    let mut c = cfg(&model, &data, &tmp.path().join("run"));
    c.resolution = 96;
    c.bucket = true;
    c.bucket_reso_steps = Some(16);
    c.max_steps = Some(3);
    let t = Trainer::new(c.clone(), &mut |_| {}).unwrap();
    // kohya's buckets at 96 px, steps 16, sides 48..192: 128×64 is exactly 2:1
    assert!(t.data.buckets.contains(&(128, 64)));
    for im in &t.data.images {
        let want = match (im.width, im.height) {
            (128, 64) => (128, 64),
            (64, 128) => (64, 128),
            _ => (96, 96),
        };
        assert_eq!(im.target, want, "{}", im.file_name);
        if wide.contains(&im.file_name) {
            assert_eq!(im.target, (128, 64));
        }
    }
    let per_epoch = t
        .data
        .bucket_groups()
        .unwrap()
        .iter()
        .map(|g| g.len().div_ceil(2))
        .sum::<usize>();
    let mut seen_wide = false;
    for k in 0..(2 * per_epoch as u64) {
        let (idx, lat) = t.batch_latents(k).unwrap();
        let targets: Vec<_> = idx
            .iter()
            .map(|&i| t.data.images[t.data.items[i].image].target)
            .collect();
        assert!(
            targets.iter().all(|x| *x == targets[0]),
            "batch {k}: {targets:?}"
        );
        // latents at the bucket's size (the tiny VAE halves each side)
        let (w, h) = targets[0];
        assert_eq!(lat.dims(), &[idx.len(), 4, h / 2, w / 2]);
        seen_wide |= targets[0] == (128, 64);
    }
    assert!(seen_wide);
    // the same seed gives the same batches in a new trainer; training runs on them
    let t2 = Trainer::new(c.clone(), &mut |_| {}).unwrap();
    for k in 0..10 {
        assert_eq!(t.batch_indices(k), t2.batch_indices(k));
    }
    drop((t, t2));
    let (losses, _) = run(c.clone());
    assert_eq!(losses.len(), 3);
    assert!(losses.iter().all(|&b| f32::from_bits(b).is_finite()));
    // with the latent cache: same losses
    let mut cc = c;
    cc.cache_latents = true;
    cc.out = tmp.path().join("run-cached");
    assert_eq!(run(cc).0, losses);
}

#[test]
fn unreadable_images_are_skipped_at_the_start_and_a_later_decode_failure_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    let recs = strata_caption::dataset::read_dataset(&data).unwrap();
    // not an image at all: skipped and listed before training
    std::fs::write(data.join(&recs[0].file_name), b"not a png").unwrap();
    let t = Trainer::new(cfg(&model, &data, &tmp.path().join("a")), &mut |_| {}).unwrap();
    assert_eq!(t.data.skipped.len(), 1);
    assert_eq!(t.data.skipped[0].0, recs[0].file_name);
    assert_eq!(t.data.images.len(), recs.len() - 1);
    drop(t);
    // a valid header with the pixel data cut off: the start-up check decodes every image,
    // so it is skipped and listed too, before any step
    let p = data.join(&recs[1].file_name);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 3]).unwrap();
    let mut c = cfg(&model, &data, &tmp.path().join("b"));
    c.max_steps = Some(20);
    let t = Trainer::new(c.clone(), &mut |_| {}).unwrap();
    assert_eq!(t.data.skipped.len(), 2, "{:?}", t.data.skipped);
    assert!(t.data.skipped.iter().any(|s| s.0 == recs[1].file_name));
    drop(t);
    // an image damaged after the check (while the run goes on) stops the run, naming it
    let mut t = Trainer::new(c, &mut |_| {}).unwrap();
    let p = data.join(&recs[2].file_name);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 3]).unwrap();
    let mut e = None;
    for _ in 0..20 {
        if let Err(err) = t.train_step("") {
            e = Some(err.to_string());
            break;
        }
    }
    let e = e.expect("the broken image stops the run");
    assert!(
        e.contains(&recs[2].file_name) && e.contains("decoded"),
        "{e}"
    );
}

#[test]
fn resume_with_cached_latents_is_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    let mut c = cfg(&model, &data, &tmp.path().join("a"));
    c.cache_latents = true;
    c.max_steps = Some(6);
    c.gradient_accumulation = 2;
    run(c.clone());
    // 3 steps and a checkpoint, then resumed from the folder (the cache is full by now)
    let run_b = tmp.path().join("b");
    let mut cb = c.clone();
    cb.out = run_b.clone();
    std::fs::create_dir_all(&run_b).unwrap();
    std::fs::write(run_b.join("config.toml"), cb.to_toml()).unwrap();
    let mut t = Trainer::new(cb, &mut |_| {}).unwrap();
    for _ in 0..3 {
        t.train_step("none").unwrap();
    }
    strata_train::run::save_checkpoint(&t, &run_b).unwrap();
    drop(t);
    let cfg_b = strata_train::run::read_run_config(&run_b).unwrap();
    strata_train::train(
        cfg_b,
        strata_train::RunOptions {
            resume: true,
            on_status: &mut |_| {},
            on_step: &mut |_| {},
        },
    )
    .unwrap();
    let (wa, wb) = (
        common::trainable(&tmp.path().join("a")),
        common::trainable(&run_b),
    );
    for (k, ta) in &wa {
        assert_eq!(bits(ta), bits(&wb[k]), "{k} differs after resume");
    }
}
