//! kohya compatibility: training-config key names (`learning_rate`, `network_dim`, ...) and
//! kohya dataset TOMLs (`[[datasets.subsets]]` image folders with sidecar captions) as
//! `--data`, on real TOML files and real PNG images in a temporary folder.

use std::path::Path;

use strata_train::config::MixedPrecision;
use strata_train::data::kohya;
use strata_train::optim::LrSchedule;
use strata_train::{Method, TrainConfig};

fn write_png(path: &Path, w: u32, h: u32, seed: u8) {
    let f = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(f), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut wr = enc.write_header().unwrap();
    let data: Vec<u8> = (0..w * h * 3)
        .map(|i| (i as u8).wrapping_mul(seed))
        .collect();
    wr.write_image_data(&data).unwrap();
}

fn config(text: &str) -> Result<TrainConfig, String> {
    TrainConfig::from_toml_str(text, Path::new("train.toml")).map_err(|e| e.to_string())
}

#[test]
fn kohya_training_keys_map_to_strata_options() {
    let c = config(
        r#"
pretrained_model_name_or_path = "models/sd15"
output_dir = "runs/k"
dataset_config = "dataset.toml"
learning_rate = 5e-5
train_batch_size = 3
network_module = "networks.lora"
network_dim = 8
network_alpha = 4
max_train_steps = 120
resolution = "256,256"
mixed_precision = "fp16"
seed = 42
lr_scheduler = "constant_with_warmup"
lr_warmup_steps = 10
gradient_accumulation_steps = 2
save_every_n_steps = 50
cache_latents = true
"#,
    )
    .unwrap();
    assert_eq!(c.model, Path::new("models/sd15"));
    assert_eq!(c.out, Path::new("runs/k"));
    assert_eq!(c.data, Path::new("dataset.toml"));
    assert_eq!(c.lr, 5e-5);
    assert_eq!(c.batch_size, 3);
    assert_eq!(c.method, Method::Lora);
    assert_eq!(c.lora_rank, 8);
    assert_eq!(c.lora_alpha, 4.0);
    assert_eq!(c.max_steps, Some(120));
    assert_eq!(c.resolution, 256);
    assert_eq!(c.mixed_precision, MixedPrecision::F16);
    assert_eq!(c.seed, 42);
    assert_eq!(c.lr_schedule, LrSchedule::Constant);
    assert_eq!(c.warmup_steps, 10);
    assert_eq!(c.gradient_accumulation, 2);
    assert_eq!(c.checkpoint_every, 50);
    assert!(c.cache_latents && !c.bucket);

    // the written config uses strata's names and reads back the same
    let again = config(&c.to_toml()).unwrap();
    assert_eq!(again, c);

    for (text, field) in [
        ("resolution = 384", 384),
        ("resolution = \"320\"", 320),
        ("resolution = [192, 192]", 192),
    ] {
        assert_eq!(config(text).unwrap().resolution, field, "{text}");
    }
    assert_eq!(
        config("mixed_precision = \"bf16\"")
            .unwrap()
            .mixed_precision,
        MixedPrecision::Bf16
    );
    assert_eq!(
        config("mixed_precision = \"no\"").unwrap().mixed_precision,
        MixedPrecision::No
    );
    assert_eq!(
        config("lr_scheduler = \"cosine\"").unwrap().lr_schedule,
        LrSchedule::Cosine
    );
}

#[test]
fn bad_kohya_training_keys_are_named() {
    let e = config("resolution = \"512,768\"").unwrap_err();
    assert!(e.contains("train.toml") && e.contains("not square"), "{e}");
    let e = config("optimizer_type = \"AdamW8bit\"").unwrap_err();
    assert!(
        e.contains("`optimizer_type` is a kohya key strata does not support"),
        "{e}"
    );
    let e = config("learning_rte = 1e-4").unwrap_err();
    assert!(
        e.contains("learning_rte") && e.contains("train.toml"),
        "{e}"
    );
    let e = config("lr = 1e-4\nlearning_rate = 2e-4").unwrap_err();
    assert!(
        e.contains("both `lr` and its kohya name `learning_rate`"),
        "{e}"
    );
    let e = config("lr_scheduler = \"polynomial\"").unwrap_err();
    assert!(e.contains("polynomial"), "{e}");
    let e = config("network_module = \"networks.dylora\"").unwrap_err();
    assert!(e.contains("networks.dylora"), "{e}");
    let e = config("lr_warmup_steps = 0.1").unwrap_err();
    assert!(e.contains("whole number of steps"), "{e}");
    // a typo in a strata-only file still reports its line
    let e = config("batch_size = 2\nbach_size = 3").unwrap_err();
    assert!(e.contains("bach_size") && e.contains("line 2"), "{e}");
}

/// Two subsets: river (2 PNGs with `.txt` captions, one hierarchical, repeated 3 times, plus
/// a JPEG strata cannot read) and farm (1 PNG without a caption file, class tokens, default
/// `.caption` extension, inherited from nothing).
fn kohya_dataset(root: &Path) -> std::path::PathBuf {
    let river = root.join("img/river");
    let farm = root.join("img/farm");
    std::fs::create_dir_all(&river).unwrap();
    std::fs::create_dir_all(&farm).unwrap();
    write_png(&river.join("a.png"), 20, 16, 3);
    std::fs::write(
        river.join("a.txt"),
        "a river crosses the town\nsecond line ignored\n",
    )
    .unwrap();
    write_png(&river.join("b.png"), 16, 16, 5);
    std::fs::write(
        river.join("b.txt"),
        "river | a bridge spans the river | bridge, river, road\n",
    )
    .unwrap();
    std::fs::write(river.join("c.jpg"), b"\xff\xd8\xff not decoded").unwrap();
    std::fs::write(river.join("c.txt"), "a damaged tile").unwrap();
    std::fs::write(river.join("notes.md"), "not an image").unwrap();
    write_png(&farm.join("f.png"), 16, 24, 7);
    // a caption with the general extension must not be picked up by the farm subset
    std::fs::write(farm.join("f.txt"), "wrong extension").unwrap();
    let toml = root.join("dataset.toml");
    std::fs::write(
        &toml,
        r#"
[general]
shuffle_caption = false
flip_aug = false

[[datasets]]
resolution = "64,64"
batch_size = 2

  [[datasets.subsets]]
  image_dir = "img/river"
  caption_extension = "txt"
  num_repeats = 3

  [[datasets.subsets]]
  image_dir = "img/farm"
  class_tokens = "farmland"
"#,
    )
    .unwrap();
    toml
}

#[test]
fn kohya_dataset_toml_lists_images_captions_and_repeats() {
    let tmp = tempfile::tempdir().unwrap();
    let toml = kohya_dataset(tmp.path());
    assert!(kohya::is_dataset_toml(&toml));
    assert!(!kohya::is_dataset_toml(tmp.path()));
    let cfg = kohya::read_dataset_config(&toml).unwrap();
    assert_eq!(cfg.resolution, Some(64));
    assert_eq!(cfg.batch_size, Some(2));
    assert_eq!(cfg.subsets.len(), 2);
    assert_eq!(cfg.subsets[0].caption_extension, ".txt");
    assert_eq!(cfg.subsets[0].num_repeats, 3);
    assert_eq!(cfg.subsets[1].caption_extension, ".caption");
    assert_eq!(cfg.subsets[1].num_repeats, 1);

    let (records, skipped) = kohya::records(&cfg).unwrap();
    let names: Vec<String> = records
        .iter()
        .map(|(r, _)| {
            Path::new(&r.file_name)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string()
        })
        .collect();
    // every image format is listed; the damaged JPEG is caught when the images are checked
    assert_eq!(names, ["a.png", "b.png", "c.jpg", "f.png"]);
    assert!(records
        .iter()
        .all(|(r, _)| Path::new(&r.file_name).is_file()));
    assert_eq!(
        records.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        [3, 3, 3, 1]
    );
    let (a, b, f) = (&records[0].0, &records[1].0, &records[3].0);
    assert_eq!(a.text, "a river crosses the town");
    assert_eq!(a.relation, "a river crosses the town");
    assert_eq!(a.scene, "");
    assert_eq!(b.scene, "river");
    assert_eq!(b.relation, "a bridge spans the river");
    assert_eq!(b.elements, ["bridge", "river", "road"]);
    assert_eq!(f.text, "farmland");
    assert_eq!(f.scene, "farmland");
    assert!(skipped.is_empty(), "{skipped:?}");
    let scanned = strata_train::data::scan(
        &toml,
        &strata_train::data::DataOptions {
            resolution: 16,
            bucket: None,
        },
    )
    .unwrap();
    assert_eq!(scanned.skipped.len(), 1, "{:?}", scanned.skipped);
    assert!(
        scanned.skipped[0].0.ends_with("c.jpg"),
        "{:?}",
        scanned.skipped
    );

    // the loader reads the same records (folder or TOML through one door)
    let (again, _) = strata_train::data::read_train_records(&toml).unwrap();
    assert_eq!(again.len(), 4);
}

#[test]
fn kohya_dataset_problems_name_the_key_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let toml = kohya_dataset(tmp.path());
    let text = std::fs::read_to_string(&toml).unwrap();
    let check = |body: &str, want: &[&str]| {
        let p = tmp.path().join("bad.toml");
        std::fs::write(&p, body).unwrap();
        let e = match kohya::read_dataset_config(&p) {
            Ok(c) => match kohya::records(&c) {
                Ok(_) => panic!("accepted:\n{body}"),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        for w in want {
            assert!(e.contains(w), "{e:?} lacks {w:?}");
        }
    };
    check(
        &text.replace("flip_aug = false", "flip_aug = true"),
        &[
            "bad.toml",
            "flip_aug",
            "kohya dataset option strata does not support",
        ],
    );
    check(
        &text.replace("num_repeats = 3", "num_repeats = 3\n  colour = 1"),
        &["unknown key `colour`", "subsets]] #1"],
    );
    check(&text.replace("\"64,64\"", "\"64,96\""), &["not square"]);
    check(
        &text.replace("img/farm", "img/nowhere"),
        &["image_dir img/nowhere is not a folder"],
    );
    check(
        &text.replace("  class_tokens = \"farmland\"\n", ""),
        &["f.png", "no caption file", "f.caption", "class_tokens"],
    );
    check(
        &text.replace("num_repeats = 3", "num_repeats = 0"),
        &["num_repeats = 0", "at least 1"],
    );
    check("[general]\n", &["no [[datasets]]"]);
    check(
        &format!("{text}\n[[datasets]]\nresolution = 128\n[[datasets.subsets]]\nimage_dir = \"img/farm\"\nclass_tokens = \"x\"\n"),
        &["resolution 128 differs", "64"],
    );
}

#[test]
fn kohya_bucket_and_latent_cache_keys_set_strata_options() {
    let c = config(
        "enable_bucket = true\nmin_bucket_reso = 320\nmax_bucket_reso = 960\nbucket_reso_steps = 64\ncache_latents_to_disk = true\n",
    )
    .unwrap();
    assert!(c.bucket && c.cache_latents);
    assert_eq!(
        (c.min_bucket_reso, c.max_bucket_reso, c.bucket_reso_steps),
        (Some(320), Some(960), Some(64))
    );
    let b = c.bucket_options(64).unwrap().unwrap();
    assert_eq!((b.min_reso, b.max_reso, b.reso_steps), (320, 960, 64));
    // a step the model cannot use is refused, naming the option
    let mut bad = c.clone();
    bad.bucket_reso_steps = Some(24);
    let e = bad.bucket_options(64).unwrap_err().to_string();
    assert!(e.contains("bucket-reso-steps"), "{e}");
    // bucket_no_upscale changes what is trained and is not implemented: refused
    assert!(config("enable_bucket = true\nbucket_no_upscale = true\n").is_err());
}
