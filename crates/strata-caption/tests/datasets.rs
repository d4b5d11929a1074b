//! Importers round-tripping through their exporters, metadata.jsonl I/O, splits, stats and
//! the end-to-end pipeline on small real files.

use std::path::{Path, PathBuf};

use strata_caption::dataset::{self, missing_images, parse_metadata, write_atomic};
use strata_caption::import::{
    export_coco, export_karpathy, export_kohya, import_class_folders, import_coco, import_karpathy,
    import_kohya, label_from_file_name, parse_karpathy, SourceItem,
};
use strata_caption::pipeline::{
    caption_item, to_record, CaptionConfig, ExistingSentences, LabelScene, LexiconTagger,
};
use strata_caption::{
    assign_splits, read_dataset, read_metadata, write_dataset, write_metadata, CaptionError,
    DatasetStats, HierarchicalCaption, Knowledge, MetadataRecord, Split, StatsField,
};

/// A tiny but real PNG (1×1 grey).
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x3a, 0x7e, 0x9b,
    0x55, 0x00, 0x00, 0x00, 0x0a, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x68, 0x00, 0x00, 0x00,
    0x82, 0x00, 0x81, 0x77, 0xcd, 0x72, 0xb6, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae,
    0x42, 0x60, 0x82,
];

fn touch(p: &Path) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, PNG).unwrap();
}

fn items(root: &Path) -> Vec<SourceItem> {
    let mk = |f: &str, label: Option<&str>, s: &[&str], split: Option<&str>| SourceItem {
        file_name: f.to_string(),
        image: root.join(f),
        label: label.map(String::from),
        sentences: s.iter().map(|x| x.to_string()).collect(),
        source_split: split.map(String::from),
        origin: String::new(),
    };
    vec![
        mk(
            "denseresidential_1.jpg",
            Some("denseresidential"),
            &[
                "Many buildings are in a dense residential area.",
                "Some cars are parked under the trees.",
                "A road runs through the area with houses on both sides of it.",
                "Lots of houses are arranged densely.",
                "Green trees are beside the buildings.",
            ],
            Some("train"),
        ),
        mk(
            "park_7.jpg",
            Some("park"),
            &[
                "A lake is surrounded by green trees.",
                "Some paths cross the lawn.",
            ],
            Some("test"),
        ),
        mk("sub/42.tif", None, &["It is a piece of farmland."], None),
    ]
}

fn without_origin(mut v: Vec<SourceItem>) -> Vec<SourceItem> {
    for it in &mut v {
        it.origin.clear();
    }
    v
}

#[test]
fn karpathy_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let its = items(d.path());
    for it in &its {
        touch(&it.image);
    }
    let json = d.path().join("dataset_rsicd.json");
    std::fs::write(&json, export_karpathy(&its, "rsicd")).unwrap();
    let r = import_karpathy(&json, d.path()).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(without_origin(r.items), its);
}

#[test]
fn karpathy_plain_files_and_labels() {
    // A file as RSICD / UCM ship it: no scene field, tokens only for one sentence.
    let text = r#"{"images": [
      {"filename": "railwaystation_3.jpg", "imgid": 0, "split": "val",
       "sentences": [{"tokens": ["a", "train", "is", "next", "to", "a", "platform"], "raw": "A train is next to a platform ."},
                     {"tokens": ["many", "rails"]}]},
      {"filename": "17.tif", "imgid": 1, "split": "train", "sentences": []},
      {"filename": "17.tif", "imgid": 2, "split": "train", "sentences": []}
    ], "dataset": "ucm"}"#;
    let r = parse_karpathy(text, Path::new("ucm.json"), Path::new("imgs")).unwrap();
    assert_eq!(r.items.len(), 2);
    assert_eq!(r.items[0].label.as_deref(), Some("railwaystation"));
    assert_eq!(
        r.items[0].sentences,
        ["A train is next to a platform .", "many rails"]
    );
    assert_eq!(r.items[1].label, None);
    assert_eq!(r.problems.len(), 1);
    assert!(r.problems[0].error.to_string().contains("listed twice"));
    assert_eq!(
        label_from_file_name("storagetanks_12.png").as_deref(),
        Some("storagetanks")
    );
    assert_eq!(label_from_file_name("12.png"), None);
}

#[test]
fn coco_round_trip_and_bad_ids() {
    let d = tempfile::tempdir().unwrap();
    let its = items(d.path());
    for it in &its {
        touch(&it.image);
    }
    let json = d.path().join("captions.json");
    let mut its_nosplit = its.clone();
    for it in &mut its_nosplit {
        it.source_split = None;
    }
    std::fs::write(&json, export_coco(&its_nosplit)).unwrap();
    let r = import_coco(&json, d.path()).unwrap();
    assert!(r.problems.is_empty());
    assert_eq!(without_origin(r.items), its_nosplit);

    let bad =
        r#"{"images":[{"id":1,"file_name":"a.png"}],"annotations":[{"image_id":2,"caption":"x"}]}"#;
    let p = d.path().join("bad.json");
    std::fs::write(&p, bad).unwrap();
    let r = import_coco(&p, d.path()).unwrap();
    // a.png does not exist and annotation 0 names an unknown image.
    assert_eq!(r.items.len(), 0);
    let msgs: Vec<String> = r.problems.iter().map(|p| p.error.to_string()).collect();
    assert!(msgs.iter().any(|m| m.contains("image_id 2")), "{msgs:?}");
    assert!(
        msgs.iter().any(|m| m.contains("does not exist")),
        "{msgs:?}"
    );
}

#[test]
fn kohya_round_trip_and_bad_text() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("kohya");
    let its: Vec<SourceItem> = vec![
        SourceItem {
            file_name: "10_church/a.png".into(),
            image: root.join("10_church/a.png"),
            label: Some("10_church".into()),
            sentences: vec![
                "A church is surrounded by trees.".into(),
                "church, tree, road".into(),
            ],
            source_split: None,
            origin: String::new(),
        },
        SourceItem {
            file_name: "10_church/b.png".into(),
            image: root.join("10_church/b.png"),
            label: Some("10_church".into()),
            sentences: vec!["A road is next to the church.".into()],
            source_split: None,
            origin: String::new(),
        },
    ];
    for it in &its {
        touch(&it.image);
    }
    export_kohya(&root, &its).unwrap();
    let r = import_kohya(&root).unwrap();
    assert!(r.problems.is_empty());
    assert_eq!(without_origin(r.items), its);
    assert_eq!(Knowledge::embedded().scene_name("10_church"), "church");

    // A caption that is not UTF-8, and an image without a caption.
    std::fs::write(root.join("10_church/b.txt"), b"a road \xff next to").unwrap();
    touch(&root.join("10_church/c.png"));
    let r = import_kohya(&root).unwrap();
    assert_eq!(r.items.len(), 1);
    let msgs: Vec<String> = r.problems.iter().map(|p| p.error.to_string()).collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("b.txt") && m.contains("UTF-8") && m.contains("offset 7")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("c.png") && m.contains("no caption file")),
        "{msgs:?}"
    );
}

#[test]
fn class_folders_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("classes");
    let mut want = Vec::new();
    for (scene, n) in [("denseresidential", 3), ("park", 2), ("railway_station", 1)] {
        for i in 0..n {
            let f = format!("{scene}/{scene}_{i:02}.png");
            touch(&root.join(&f));
            want.push((f, scene.to_string()));
        }
    }
    std::fs::write(
        root.join("park/park_00.txt"),
        "A pond is surrounded by trees.\n",
    )
    .unwrap();
    std::fs::write(root.join("notes.md"), "not an image").unwrap();
    let r = import_class_folders(&root).unwrap();
    assert!(r.problems.is_empty());
    let got: Vec<(String, String)> = r
        .items
        .iter()
        .map(|i| (i.file_name.clone(), i.label.clone().unwrap()))
        .collect();
    want.sort();
    assert_eq!(got, want);
    let pond = r
        .items
        .iter()
        .find(|i| i.file_name == "park/park_00.png")
        .unwrap();
    assert_eq!(pond.sentences, ["A pond is surrounded by trees."]);
    assert!(import_class_folders(&d.path().join("nope")).is_err());
}

fn record(f: &str, scene: &str) -> MetadataRecord {
    let c = HierarchicalCaption {
        scene: scene.into(),
        relation: "A road runs next to the houses.".into(),
        elements: vec!["road".into(), "house".into()],
    };
    MetadataRecord::new(f, &c, c.flat())
}

#[test]
fn metadata_round_trip_keeps_extra_columns() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("metadata.jsonl");
    let mut a = record("a.png", "park");
    a.extra
        .insert("mask".into(), serde_json::json!("masks/a.png"));
    a.split = Some(Split::Test);
    let recs = vec![a, record("b/c.png", "school")];
    write_metadata(&p, &recs).unwrap();
    assert_eq!(read_metadata(&p).unwrap(), recs);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.starts_with("{\"file_name\":\"a.png\""), "{text}");
    // Only metadata.jsonl in the folder: no temporary left behind.
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
}

#[test]
fn metadata_errors_name_the_line() {
    let p = Path::new("m.jsonl");
    let good = serde_json::to_string(&record("a.png", "park")).unwrap();
    let e = parse_metadata(&format!("{good}\n\n{{\"file_name\": 3}}\n"), p).unwrap_err();
    assert!(matches!(e, CaptionError::JsonLine { line: 3, .. }), "{e}");
    let e = parse_metadata(&format!("{good}\n{good}\n"), p).unwrap_err();
    assert!(e.to_string().contains("lines 1 and 2"), "{e}");
    let bad_name = good.replace("a.png", "../a.png");
    let e = parse_metadata(&bad_name, p).unwrap_err();
    assert!(
        e.to_string().contains("line 1") && e.to_string().contains(".."),
        "{e}"
    );

    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("metadata.jsonl");
    std::fs::write(&f, b"{\"file_name\": \"a\xff\"}\n").unwrap();
    let e = read_metadata(&f).unwrap_err().to_string();
    assert!(e.contains("UTF-8") && e.contains("line 1"), "{e}");

    // Writing duplicates is refused and the old file stays as it was.
    write_metadata(&f, &[record("x.png", "park")]).unwrap();
    let before = std::fs::read(&f).unwrap();
    let e = write_metadata(&f, &[record("y.png", "park"), record("y.png", "park")]).unwrap_err();
    assert!(matches!(e, CaptionError::DuplicateFileName { .. }));
    assert_eq!(std::fs::read(&f).unwrap(), before);
    write_atomic(&f, b"").unwrap();
    assert!(read_metadata(&f).unwrap().is_empty());
}

#[test]
fn split_is_seeded_stratified_and_order_free() {
    let mut recs: Vec<MetadataRecord> = (0..50)
        .map(|i| {
            record(
                &format!("{i:03}.png"),
                if i % 5 == 0 { "park" } else { "school" },
            )
        })
        .collect();
    let (tr, te) = assign_splits(&mut recs, 7, 0.8);
    assert_eq!((tr, te), (40, 10));
    let park_test = recs
        .iter()
        .filter(|r| r.scene == "park" && r.split == Some(Split::Test))
        .count();
    assert_eq!(park_test, 2);
    let a: Vec<_> = recs
        .iter()
        .map(|r| (r.file_name.clone(), r.split))
        .collect();
    let mut rev = recs.clone();
    rev.reverse();
    assign_splits(&mut rev, 7, 0.8);
    let mut b: Vec<_> = rev.iter().map(|r| (r.file_name.clone(), r.split)).collect();
    b.reverse();
    assert_eq!(a, b);
    let mut other = recs.clone();
    assign_splits(&mut other, 8, 0.8);
    assert_ne!(
        a,
        other
            .iter()
            .map(|r| (r.file_name.clone(), r.split))
            .collect::<Vec<_>>()
    );
}

#[test]
fn pipeline_builds_a_valid_dataset_with_provenance() {
    let k = Knowledge::embedded();
    let d = tempfile::tempdir().unwrap();
    let its = items(d.path());
    for it in &its {
        touch(&it.image);
    }
    let cfg = CaptionConfig::default();
    let mut out: Vec<(PathBuf, MetadataRecord)> = Vec::new();
    for it in &its {
        let c = caption_item(
            &k,
            it,
            &mut LabelScene { knowledge: &k },
            &mut ExistingSentences,
            &mut LexiconTagger { knowledge: &k },
            &cfg,
        )
        .unwrap();
        out.push((it.image.clone(), to_record(it, &c)));
    }
    let first = &out[0].1;
    assert_eq!(first.scene, "dense residential");
    assert_eq!(
        first.relation,
        "A road runs through the area with houses on both sides of it."
    );
    let prov = first.provenance().unwrap();
    assert_eq!(prov.selection.candidate, Some(2));
    assert_eq!(prov.selection.rejected.len(), 2);
    assert_eq!(first.text, its[0].sentences[0]);
    let rels = first.relations().unwrap();
    assert_eq!(
        rels.iter().map(|r| r.relation.as_str()).collect::<Vec<_>>(),
        ["crosses", "on_both_sides_of"]
    );
    // elements from all five sentences, canonical, in order of first mention.
    assert_eq!(first.elements, ["building", "car", "tree", "road", "house"]);
    // The farmland image has no relation: strip-vertical then first candidate.
    assert_eq!(out[2].1.relation, "It is a piece of farmland.");

    let mut recs: Vec<MetadataRecord> = out.iter().map(|(_, r)| r.clone()).collect();
    assign_splits(&mut recs, 0, 0.8);
    let items: Vec<(PathBuf, MetadataRecord)> =
        out.iter().map(|(p, _)| p.clone()).zip(recs).collect();
    let ds = d.path().join("out/ds");
    write_dataset(&ds, &items, false).unwrap();
    let back = read_dataset(&ds).unwrap();
    assert_eq!(back.len(), 3);
    assert!(missing_images(&ds, &back).is_empty());
    assert!(write_dataset(&ds, &items, false).is_err());
    write_dataset(&ds, &items, true).unwrap();
    // Only the dataset is left in the parent folder.
    assert_eq!(std::fs::read_dir(d.path().join("out")).unwrap().count(), 1);

    // A missing source image aborts before anything is renamed into place.
    let mut broken = items.clone();
    broken[1].0 = d.path().join("gone.png");
    let e = write_dataset(&d.path().join("out/ds2"), &broken, false).unwrap_err();
    assert!(e.to_string().contains("gone.png"), "{e}");
    assert!(!d.path().join("out/ds2").exists());
    assert_eq!(std::fs::read_dir(d.path().join("out")).unwrap().count(), 1);

    let s = DatasetStats::compute(&k, &back, StatsField::Relation);
    assert_eq!(s.captions, 3);
    assert_eq!(s.sentences, 3);
    assert_eq!(s.relations, 2 + 1);
    assert_eq!(s.without_relation, 1);
    assert_eq!(s.train + s.test, 3);
}

#[test]
fn stats_count_words_sentences_relations() {
    let k = Knowledge::embedded();
    let mut a = record("a.png", "park");
    a.relation =
        "A pond is surrounded by trees. A road runs next to the pond, beside a lawn.".into();
    a.elements = vec!["pond".into(), "tree".into()];
    let mut b = record("b.png", "park");
    b.relation = "An open area.".into();
    b.elements = vec![];
    let s = DatasetStats::compute(&k, &[a, b], StatsField::Hierarchical);
    // a: "park" 1 + relation 16 + "pond, tree" 2 = 19 words; b: 1 + 3 = 4.
    assert_eq!(s.words, 23);
    assert_eq!(s.longest_words, 19);
    assert_eq!(s.longest_file.as_deref(), Some("a.png"));
    assert_eq!(s.sentences, 3);
    assert_eq!(s.max_sentences, 2);
    assert_eq!(s.relations, 3);
    assert!((s.mean_relations - 1.5).abs() < 1e-12);
    assert!(s.summary().contains("2 captions, 23 words, 3 sentences"));
}

#[test]
fn label_files_for_numbered_datasets() {
    use strata_caption::import::{parse_karpathy, parse_labels};
    let p = Path::new("labels.csv");
    let m = parse_labels("# UCM\n1.tif, agricultural\n\n2.tif,denseresidential\n", p).unwrap();
    assert_eq!(m.len(), 2);
    let text = r#"{"images":[{"filename":"1.tif","sentences":[]},{"filename":"2.tif","sentences":[]},{"filename":"3.tif","sentences":[]}]}"#;
    let mut r = parse_karpathy(text, Path::new("ucm.json"), Path::new(".")).unwrap();
    assert_eq!(r.apply_labels(&m), 2);
    assert_eq!(r.items[1].label.as_deref(), Some("denseresidential"));
    assert_eq!(r.items[2].label, None);
    let e = parse_labels("1.tif,a\nno comma here\n", p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("labels.csv") && e.contains("line 2"), "{e}");
    let e = parse_labels("1.tif,a\n1.tif,b\n", p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("twice"), "{e}");
}

#[cfg(unix)]
#[test]
fn non_utf8_file_names_are_reported_not_mangled() {
    use std::os::unix::ffi::OsStrExt;
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("classes");
    touch(&root.join("park/good.png"));
    let bad = root
        .join("park")
        .join(std::ffi::OsStr::from_bytes(b"bad\xff.png"));
    if std::fs::write(&bad, PNG).is_err() {
        return; // the file system refuses such names: nothing to test
    }
    let r = import_class_folders(&root).unwrap();
    assert_eq!(r.items.len(), 1);
    assert_eq!(r.problems.len(), 1);
    assert!(r.problems[0].error.to_string().contains("not valid UTF-8"));
}

#[test]
fn control_characters_and_runaway_captions_are_refused_with_the_line() {
    let p = Path::new("m.jsonl");
    let good = serde_json::to_string(&record("a.png", "park")).unwrap();
    let mut r = record("b.png", "park");
    r.relation = "a lake\u{1b}[31m lies in the park".into();
    let bad = serde_json::to_string(&r).unwrap();
    let e = parse_metadata(&format!("{good}\n{bad}\n"), p).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, CaptionError::BadRecord { line: 2, .. }),
        "{msg}"
    );
    assert!(msg.contains("relation") && msg.contains("U+001B"), "{msg}");

    let mut r = record("b.png", "park");
    r.elements = vec!["lake".into(), "x".repeat(dataset::MAX_FIELD_CHARS + 1)];
    let long = serde_json::to_string(&r).unwrap();
    let msg = parse_metadata(&format!("{long}\n"), p)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("line 1") && msg.contains("over the limit"),
        "{msg}"
    );

    // tabs and line breaks inside a caption are whitespace, not refused
    let mut r = record("b.png", "park");
    r.text = "a park\twith a lake\nand trees".into();
    let ok = serde_json::to_string(&r).unwrap();
    assert_eq!(parse_metadata(&format!("{ok}\n"), p).unwrap().len(), 1);
}
