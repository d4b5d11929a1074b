//! The ONNX element tagger against onnxruntime and Pillow/numpy, on the tiny taggers made by
//! scripts/fixtures/onnx_tagger.py (tests/fixtures/onnx/).
//!
//! Tolerances: the input tensors must be identical (strata-image's resize reproduces
//! Pillow's fixed-point filters bit for bit, and the BGR swap and `/ 255` are the same f32
//! operations as numpy's); the model outputs within 1e-5 of onnxruntime (float32
//! convolutions summed in another order).
#![cfg(feature = "onnx")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use strata_caption::Knowledge;
use strata_captioner::onnx_tagger::{preprocess, tag_element};
use strata_captioner::{
    CaptionerError, Convention, ImageTagger, Layout, OnnxTagger, OnnxTaggerOptions, Tag,
};
use strata_image::RgbImage;

const IMAGES: [&str; 2] = ["wide.png", "tall.png"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixtures().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn image(name: &str) -> RgbImage {
    strata_image::read_rgb8(&fixtures().join("images").join(name)).unwrap()
}

fn load(folder: &str, options: &OnnxTaggerOptions) -> OnnxTagger {
    OnnxTagger::load(&fixtures().join(folder), &Knowledge::embedded(), options)
        .unwrap_or_else(|e| panic!("{folder}: {e}"))
}

/// Checks the tagger's input tensor and raw outputs against the Python reference.
fn check_against_reference(folder: &str, options: &OnnxTaggerOptions, sigmoid_here: bool) {
    let r = reference();
    let m = &r["models"][folder];
    let mut tagger = load(folder, options);
    let size = m["size"].as_u64().unwrap() as usize;
    assert_eq!(tagger.input_size(), (size, size));
    let layout = match m["layout"].as_str().unwrap() {
        "nhwc" => Layout::Nhwc,
        _ => Layout::Nchw,
    };
    assert_eq!(
        tagger.layout(),
        layout,
        "{folder}: layout from the input shape"
    );
    let tags: Vec<String> = m["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert_eq!(tagger.tags(), &tags[..]);
    for name in IMAGES {
        let img = image(name);
        let want_in = floats(&m["images"][name]["input"]);
        let got_in = tagger.input_tensor(&img);
        assert_eq!(got_in.len(), want_in.len());
        let diff = got_in
            .iter()
            .zip(&want_in)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert_eq!(diff, 0.0, "{folder} {name}: input tensor differs by {diff}");

        let mut want_out = floats(&m["images"][name]["output"]);
        if sigmoid_here {
            want_out
                .iter_mut()
                .for_each(|x| *x = 1.0 / (1.0 + (-*x).exp()));
        }
        let got_out = tagger.scores(&img).unwrap();
        assert_eq!(got_out.len(), want_out.len());
        for (i, (a, b)) in got_out.iter().zip(&want_out).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5,
                "{folder} {name}: output {i} ({}) is {a}, onnxruntime {b}",
                tags[i]
            );
        }
    }
}

#[test]
fn wd14_outputs_match_onnxruntime() {
    let t = load("wd14", &OnnxTaggerOptions::default());
    assert_eq!(t.convention(), Convention::Wd14, "from selected_tags.csv");
    check_against_reference("wd14", &OnnxTaggerOptions::default(), false);
}

#[test]
fn deepdanbooru_outputs_match_onnxruntime() {
    let t = load("deepdanbooru", &OnnxTaggerOptions::default());
    assert_eq!(t.convention(), Convention::DeepDanbooru, "from tags.txt");
    check_against_reference("deepdanbooru", &OnnxTaggerOptions::default(), false);
}

#[test]
fn nchw_input_layout_is_read_from_the_model() {
    check_against_reference("nchw", &OnnxTaggerOptions::default(), false);
}

#[test]
fn logits_model_needs_apply_sigmoid() {
    let mut t = load("logits", &OnnxTaggerOptions::default());
    let err = t.scores(&image("wide.png")).unwrap_err().to_string();
    assert!(err.contains("not a probability"), "{err}");
    assert!(err.contains("apply-sigmoid"), "{err}");
    let opts = OnnxTaggerOptions {
        apply_sigmoid: true,
        ..Default::default()
    };
    check_against_reference("logits", &opts, true);
}

/// WD14's padding on a hand-made image: 3 wide, 1 high → 3×3 with white rows above and
/// below (one each), then no resize (input 3×3), BGR, 0..255.
#[test]
fn wd14_padding_and_channel_order_by_hand() {
    let img = RgbImage::new(3, 1, vec![10, 20, 30, 40, 50, 60, 70, 80, 90]).unwrap();
    let t = preprocess(&img, Convention::Wd14, Layout::Nhwc, 3, 3, None);
    let white = [255.0f32; 9];
    assert_eq!(&t[0..9], &white);
    assert_eq!(&t[9..18], &[30., 20., 10., 60., 50., 40., 90., 80., 70.]);
    assert_eq!(&t[18..27], &white);
    // 1 wide, 2 high → 2×2: the one extra column goes right (left gets 1 / 2 = 0).
    let img = RgbImage::new(1, 2, vec![1, 2, 3, 4, 5, 6]).unwrap();
    let t = preprocess(&img, Convention::Wd14, Layout::Nchw, 2, 2, None);
    // NCHW: channel 0 (blue) plane, then green, then red.
    assert_eq!(&t[0..4], &[3., 255., 6., 255.]);
    assert_eq!(&t[8..12], &[1., 255., 4., 255.]);
    let t = preprocess(&img, Convention::DeepDanbooru, Layout::Nhwc, 1, 2, None);
    assert_eq!(
        t,
        vec![
            1. / 255.,
            2. / 255.,
            3. / 255.,
            4. / 255.,
            5. / 255.,
            6. / 255.
        ]
    );
}

/// The mapping a person reads off the tag list and the lexicon (not computed by the code
/// under test): WD14 fixture tags → SRKC elements.
fn wd14_expected_elements() -> Vec<(&'static str, Option<&'static str>)> {
    vec![
        ("general", None),
        ("sensitive", None),
        ("questionable", None),
        ("explicit", None),
        ("outdoors", None),
        ("building", Some("building")),
        ("trees", Some("tree")),
        ("forest", Some("tree")),
        ("road", Some("road")),
        ("river", Some("river")),
        ("swimming_pool", Some("swimming pool")),
        ("scenery", None),
        ("cars", Some("car")),
        ("greenhouse", None),
        ("sky", None),
        ("tennis_court", Some("tennis court")),
        ("1girl", None),
        ("hatsune_miku", None),
        ("parking_lot", Some("parking lot")),
        ("grass", Some("grass")),
    ]
}

/// Expected tags from the reference scores: per element the best tag reaching its threshold.
fn expected_tags(
    scores: &[f32],
    mapping: &[(&str, Option<&str>)],
    threshold: impl Fn(&str, Option<&str>) -> f32,
) -> Vec<Tag> {
    let mut best: BTreeMap<&str, f32> = BTreeMap::new();
    for (s, (tag, el)) in scores.iter().zip(mapping) {
        if let Some(el) = *el {
            if *s >= threshold(tag, Some(el)) {
                let e = best.entry(el).or_insert(*s);
                *e = e.max(*s);
            }
        }
    }
    let mut v: Vec<Tag> = best
        .into_iter()
        .map(|(e, s)| Tag {
            element: e.to_string(),
            score: s,
        })
        .collect();
    v.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.element.cmp(&b.element)));
    v
}

fn assert_same_tags(got: &[Tag], want: &[Tag], what: &str) {
    let names = |v: &[Tag]| v.iter().map(|t| t.element.clone()).collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!((g.score - w.score).abs() <= 1e-5, "{what}: {g:?} vs {w:?}");
    }
}

#[test]
fn wd14_tags_map_to_elements_above_threshold() {
    let r = reference();
    let mapping = wd14_expected_elements();
    let mut t = load("wd14", &OnnxTaggerOptions::default());
    for (i, (tag, el)) in mapping.iter().enumerate() {
        assert_eq!(t.tags()[i], *tag);
        assert_eq!(t.element_of(i), *el, "tag {tag}");
    }
    assert_eq!(t.mapped_tags(), 10);
    assert!(t.name().contains("10 of 20 tags"), "{}", t.name());
    assert!(t.name().starts_with("onnx:"), "{}", t.name());
    for name in IMAGES {
        let scores = floats(&r["models"]["wd14"]["images"][name]["output"]);
        let want = expected_tags(&scores, &mapping, |_, _| 0.35);
        // Both trees and forest map to tree: the expected list holds the larger score.
        assert!(
            want.len() >= 3,
            "fixture should tag a few elements: {want:?}"
        );
        let got = t.tag(&image(name)).unwrap();
        assert_same_tags(&got, &want, name);
    }
}

#[test]
fn mapping_file_and_per_tag_thresholds() {
    let r = reference();
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("map.csv");
    // greenhouse → building (not in the lexicon), trees dropped, sky → water (quoted field).
    std::fs::write(
        &map,
        "tag,element\ngreenhouse,building\ntrees,\n\"sky\",water\n",
    )
    .unwrap();
    let mut thresholds = BTreeMap::new();
    thresholds.insert("road".to_string(), 0.95f32); // a tag
    thresholds.insert("grass".to_string(), 0.1f32); // a tag and an element
    thresholds.insert("parking lot".to_string(), 0.05f32); // an element name
    let opts = OnnxTaggerOptions {
        mapping_file: Some(map),
        threshold: 0.3,
        thresholds,
        ..Default::default()
    };
    let mut t = load("wd14", &opts);
    let mut mapping = wd14_expected_elements();
    for (tag, el) in mapping.iter_mut() {
        match *tag {
            "greenhouse" => *el = Some("building"),
            "trees" => *el = None,
            "sky" => *el = Some("water"),
            _ => {}
        }
    }
    assert_eq!(t.mapped_tags(), 11);
    let thr = |tag: &str, el: Option<&str>| match (tag, el) {
        ("road", _) => 0.95,
        ("grass", _) => 0.1,
        (_, Some("parking lot")) => 0.05,
        _ => 0.3,
    };
    for (i, (tag, el)) in mapping.iter().enumerate() {
        assert_eq!(t.element_of(i), *el, "tag {tag}");
        assert_eq!(t.threshold_of(i), Some(thr(tag, *el)), "tag {tag}");
    }
    for name in IMAGES {
        let scores = floats(&r["models"]["wd14"]["images"][name]["output"]);
        let want = expected_tags(&scores, &mapping, thr);
        let got = t.tag(&image(name)).unwrap();
        assert_same_tags(&got, &want, name);
    }
}

#[test]
fn deepdanbooru_tags_map_with_plurals() {
    let r = reference();
    let mapping: Vec<(&str, Option<&str>)> = vec![
        ("building", Some("building")),
        ("buildings", Some("building")),
        ("trees", Some("tree")),
        ("road", Some("road")),
        ("river", Some("river")),
        ("swimming_pool", Some("swimming pool")),
        ("cloud", None),
        ("greenhouse", None),
        ("farmland", Some("farmland")),
        ("bare_land", Some("bare land")),
        ("no_humans", None),
        ("water", Some("water")),
    ];
    let k = Knowledge::embedded();
    for (tag, el) in &mapping {
        assert_eq!(tag_element(&k, tag), *el, "{tag}");
    }
    let mut t = load("deepdanbooru", &OnnxTaggerOptions::default());
    for name in IMAGES {
        let scores = floats(&r["models"]["deepdanbooru"]["images"][name]["output"]);
        let want = expected_tags(&scores, &mapping, |_, _| 0.35);
        assert_same_tags(&t.tag(&image(name)).unwrap(), &want, name);
    }
}

fn copy_model(from: &str, to: &Path) {
    std::fs::copy(
        fixtures().join(from).join("model.onnx"),
        to.join("model.onnx"),
    )
    .unwrap();
}

fn load_err(path: &Path, options: &OnnxTaggerOptions) -> CaptionerError {
    OnnxTagger::load(path, &Knowledge::embedded(), options).unwrap_err()
}

#[test]
fn convention_override_picks_the_tag_file() {
    let dir = tempfile::tempdir().unwrap();
    copy_model("deepdanbooru", dir.path());
    std::fs::copy(
        fixtures().join("deepdanbooru/tags.txt"),
        dir.path().join("tags.txt"),
    )
    .unwrap();
    // A selected_tags.csv with as many tags, so that both files fit the model.
    let mut csv = String::from("tag_id,name,category,count\n");
    for i in 0..12 {
        csv.push_str(&format!("{i},tag_{i},0,1\n"));
    }
    std::fs::write(dir.path().join("selected_tags.csv"), csv).unwrap();
    let t = OnnxTagger::load(dir.path(), &Knowledge::embedded(), &Default::default()).unwrap();
    assert_eq!(
        t.convention(),
        Convention::Wd14,
        "selected_tags.csv wins by default"
    );
    assert_eq!(t.mapped_tags(), 0);
    let opts = OnnxTaggerOptions {
        convention: Some(Convention::DeepDanbooru),
        ..Default::default()
    };
    let t = OnnxTagger::load(dir.path(), &Knowledge::embedded(), &opts).unwrap();
    assert_eq!(t.convention(), Convention::DeepDanbooru);
    assert_eq!(t.tags_path(), dir.path().join("tags.txt"));
    assert_eq!(t.tags()[1], "buildings");
}

#[test]
fn missing_model_names_the_path_and_where_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("wd14-tagger");
    let e = load_err(&missing, &Default::default());
    let CaptionerError::Weights { path, hint, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(path, &missing);
    assert!(
        hint.contains("SmilingWolf/wd-v1-4-convnext-tagger-v2"),
        "{e}"
    );
    // An empty folder: no model.onnx.
    let e = load_err(dir.path(), &Default::default());
    assert!(e.to_string().contains("no model.onnx"), "{e}");
}

#[test]
fn missing_tag_file_is_an_error_naming_the_model() {
    let dir = tempfile::tempdir().unwrap();
    copy_model("wd14", dir.path());
    let e = load_err(dir.path(), &Default::default());
    let msg = e.to_string();
    assert!(
        msg.contains("selected_tags.csv") && msg.contains("tags.txt"),
        "{msg}"
    );
    assert!(msg.contains("model.onnx"), "{msg}");
    let opts = OnnxTaggerOptions {
        convention: Some(Convention::DeepDanbooru),
        ..Default::default()
    };
    let msg = load_err(dir.path(), &opts).to_string();
    assert!(msg.contains("no tags.txt next to the model"), "{msg}");
    let opts = OnnxTaggerOptions {
        tags_file: Some(dir.path().join("nope.csv")),
        ..Default::default()
    };
    let msg = load_err(dir.path(), &opts).to_string();
    assert!(
        msg.contains("nope.csv") && msg.contains("tag file not found"),
        "{msg}"
    );
}

#[test]
fn tag_count_must_match_the_output_width() {
    let dir = tempfile::tempdir().unwrap();
    copy_model("deepdanbooru", dir.path());
    std::fs::write(dir.path().join("tags.txt"), "building\nroad\ntree\n").unwrap();
    let e = load_err(dir.path(), &Default::default());
    let CaptionerError::Weights { path, what, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(path, &dir.path().join("tags.txt"));
    assert!(
        what.contains("3 tags") && what.contains("12 outputs"),
        "{e}"
    );
}

#[test]
fn input_of_rank_three_is_rejected() {
    let e = load_err(&fixtures().join("rank3"), &Default::default());
    let CaptionerError::Weights { path, what, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(path, &fixtures().join("rank3/model.onnx"));
    assert!(what.contains("rank 3") && what.contains("rank-4"), "{e}");
}

#[test]
fn bad_mapping_and_thresholds_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("map.csv");
    std::fs::write(&map, "tag,element\ngreenhouse,spaceport\n").unwrap();
    let opts = OnnxTaggerOptions {
        mapping_file: Some(map.clone()),
        ..Default::default()
    };
    let e = load_err(&fixtures().join("wd14"), &opts);
    let CaptionerError::BadField { path, field, what } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(path, &map);
    assert_eq!(field, "row 2 element");
    assert!(what.contains("spaceport"), "{e}");

    let mut thresholds = BTreeMap::new();
    thresholds.insert("roads_and_stuff".to_string(), 0.5);
    let opts = OnnxTaggerOptions {
        thresholds,
        ..Default::default()
    };
    let msg = load_err(&fixtures().join("wd14"), &opts).to_string();
    assert!(msg.contains("roads_and_stuff"), "{msg}");
    let opts = OnnxTaggerOptions {
        threshold: 1.5,
        ..Default::default()
    };
    let msg = load_err(&fixtures().join("wd14"), &opts).to_string();
    assert!(msg.contains("outside [0, 1]"), "{msg}");
}
