//! `strata caption` and `strata dataset stats` end to end on small real files.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// A 1×1 grey PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x3a, 0x7e, 0x9b,
    0x55, 0x00, 0x00, 0x00, 0x0a, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x68, 0x00, 0x00, 0x00,
    0x82, 0x00, 0x81, 0x77, 0xcd, 0x72, 0xb6, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae,
    0x42, 0x60, 0x82,
];

fn strata(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run strata")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// An RSICD-style Karpathy JSON with five sentences per image (written for this test).
fn rsicd(dir: &Path, with_missing: bool) {
    let imgs = [
        (
            "denseresidential_1.jpg",
            [
                "Many buildings are in a dense residential area.",
                "Some cars are parked under the trees, next to the houses.",
                "Lots of houses are arranged densely.",
                "A road runs through the area with houses on both sides of it.",
                "Green trees are beside the buildings.",
            ],
        ),
        (
            "park_2.jpg",
            [
                "A lake is in the park.",
                "The lake is surrounded by green trees and some lawns.",
                "Several paths cross the lawn.",
                "There is a pond.",
                "Many trees.",
            ],
        ),
        (
            "sparseresidential_4.jpg",
            [
                "A few houses are scattered in the area.",
                "Some cars are parked under the trees, next to the houses.",
                "Houses.",
                "A house.",
                "Trees.",
            ],
        ),
        (
            "church_3.jpg",
            [
                "A church is behind some trees.",
                "Cars are parked in front of the church.",
                "A church.",
                "There is a church.",
                "Some buildings.",
            ],
        ),
    ];
    let mut images = Vec::new();
    for (f, sents) in imgs {
        std::fs::write(dir.join(f), PNG).unwrap();
        images.push(serde_json::json!({
            "filename": f,
            "split": "train",
            "sentences": sents.iter().map(|s| serde_json::json!({"raw": s})).collect::<Vec<_>>(),
        }));
    }
    if with_missing {
        images.push(
            serde_json::json!({"filename": "school_9.jpg", "sentences": [{"raw": "A school."}]}),
        );
    }
    let j = serde_json::json!({"images": images, "dataset": "rsicd"});
    std::fs::write(
        dir.join("dataset_rsicd.json"),
        serde_json::to_string_pretty(&j).unwrap(),
    )
    .unwrap();
}

#[test]
fn rsicd_json_to_hierarchical_dataset_with_stats() {
    let d = tempfile::tempdir().unwrap();
    rsicd(d.path(), false);
    let o = strata(
        &[
            "caption",
            "--from",
            "karpathy",
            "dataset_rsicd.json",
            "--out",
            "ds",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let recs = lines(&d.path().join("ds/metadata.jsonl"));
    assert_eq!(recs.len(), 4);
    let by = |f: &str| recs.iter().find(|r| r["file_name"] == f).unwrap().clone();
    let dense = by("denseresidential_1.jpg");
    assert_eq!(dense["scene"], "dense residential");
    assert_eq!(
        dense["relation"],
        "A road runs through the area with houses on both sides of it."
    );
    assert_eq!(dense["provenance"]["selection"]["candidate"], 3);
    let park = by("park_2.jpg");
    assert_eq!(
        park["relation"],
        "The lake is surrounded by green trees and some lawns."
    );
    assert_eq!(park["relations"][0]["relation"], "surrounds");
    // sparse: no candidate passes; strip-vertical takes the one whose relation survives
    // once its vertical clause is removed, and the removal is explained.
    let sparse = by("sparseresidential_4.jpg");
    assert_eq!(sparse["relation"], "Next to the houses.");
    assert_eq!(
        sparse["provenance"]["selection"]["rule"],
        "fallback-strip-vertical"
    );
    let corr = sparse["provenance"]["corrections"].as_array().unwrap();
    assert!(
        corr.iter().any(|c| c["rule"] == "remove_vertical_clause"
            && c["detail"].as_str().unwrap().contains("under")
            && c["before"] == "Some cars are parked under the trees,"),
        "{sparse}"
    );
    // church: every sentence vertical or relation-free → the first one without a vertical
    // relation; the rejections say why.
    let church = by("church_3.jpg");
    assert_eq!(church["relation"], "A church.");
    assert_eq!(church["provenance"]["selection"]["rule"], "fallback-first");
    assert_eq!(
        church["provenance"]["selection"]["rejected"][0]["reason"],
        "vertical"
    );
    assert!(d.path().join("ds/park_2.jpg").is_file());
    assert!(recs
        .iter()
        .all(|r| r["split"] == "train" || r["split"] == "test"));

    let o = strata(&["dataset", "stats", "ds", "--json"], d.path());
    assert!(o.status.success(), "{}", text(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["captions"], 4);
    assert_eq!(s["missing_images"], 0);
    // dense: crosses + on_both_sides_of; park: surrounds.
    assert!(s["relations"].as_u64().unwrap() >= 3, "{s}");
    let o = strata(&["dataset", "stats", "ds"], d.path());
    assert!(text(&o).contains("4 captions"), "{}", text(&o));
}

#[test]
fn same_seed_same_bytes_and_bad_items_reported() {
    let d = tempfile::tempdir().unwrap();
    rsicd(d.path(), true);
    let a = strata(
        &[
            "caption",
            "--from",
            "karpathy",
            "dataset_rsicd.json",
            "--out",
            "a",
            "--seed",
            "5",
        ],
        d.path(),
    );
    let b = strata(
        &[
            "caption",
            "--from",
            "karpathy",
            "dataset_rsicd.json",
            "--out",
            "b",
            "--seed",
            "5",
        ],
        d.path(),
    );
    // The missing image is reported at the end with a non-zero exit; the rest is written.
    assert_eq!(a.status.code(), Some(2), "{}", text(&a));
    assert!(
        text(&a).contains("school_9.jpg") && text(&a).contains("does not exist"),
        "{}",
        text(&a)
    );
    assert_eq!(
        std::fs::read(d.path().join("a/metadata.jsonl")).unwrap(),
        std::fs::read(d.path().join("b/metadata.jsonl")).unwrap()
    );
    assert_eq!(b.status.code(), Some(2));
    // An existing output is not touched without --force.
    let c = strata(
        &[
            "caption",
            "--from",
            "karpathy",
            "dataset_rsicd.json",
            "--out",
            "a",
        ],
        d.path(),
    );
    assert_eq!(c.status.code(), Some(1));
    assert!(text(&c).contains("--force"));
}

#[test]
fn class_folders_to_dataset() {
    let d = tempfile::tempdir().unwrap();
    for scene in ["church", "sparseresidential", "railway_station"] {
        for i in 0..5 {
            let p = d.path().join(format!("src/{scene}/{i}.png"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, PNG).unwrap();
        }
    }
    let o = strata(
        &[
            "caption", "--from", "folders", "src", "--out", "out", "--seed", "1",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let recs = lines(&d.path().join("out/metadata.jsonl"));
    assert_eq!(recs.len(), 15);
    let scenes: std::collections::BTreeSet<String> = recs
        .iter()
        .map(|r| r["scene"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        scenes.into_iter().collect::<Vec<_>>(),
        ["church", "railway station", "sparse residential"]
    );
    let test = recs.iter().filter(|r| r["split"] == "test").count();
    assert_eq!(test, 3); // one of five per scene
    let o = strata(&["dataset", "stats", "out"], d.path());
    assert!(o.status.success());
    assert!(text(&o).contains("captions           15"), "{}", text(&o));
}

#[test]
fn bad_input_gives_clear_errors_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("bad.json"),
        "{\"images\": [\n  {\"filename\": \"a.png\",}\n]}",
    )
    .unwrap();
    let o = strata(
        &["caption", "--from", "karpathy", "bad.json", "--out", "x"],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("bad.json") && text(&o).contains("line 2"),
        "{}",
        text(&o)
    );
    assert!(!d.path().join("x").exists());

    std::fs::write(d.path().join("empty.toml"), "").unwrap();
    let o = strata(
        &[
            "caption",
            "--explain",
            "a road",
            "--knowledge",
            "empty.toml",
        ],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("empty.toml") && text(&o).contains("empty"),
        "{}",
        text(&o)
    );

    std::fs::create_dir(d.path().join("ds")).unwrap();
    std::fs::write(d.path().join("ds/metadata.jsonl"), "{\"file_name\":\"a.png\",\"scene\":\"\",\"relation\":\"\",\"elements\":[],\"text\":\"\"}\nnot json\n").unwrap();
    let o = strata(&["dataset", "stats", "ds"], d.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("line 2"), "{}", text(&o));
    std::fs::write(d.path().join("ds/metadata.jsonl"), "{\"file_name\":\"a.png\",\"scene\":\"\",\"relation\":\"\",\"elements\":[],\"text\":\"\"}\n").unwrap();
    let o = strata(&["dataset", "stats", "ds"], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("a.png"), "{}", text(&o));
}

#[test]
fn print_knowledge_round_trips_through_knowledge_flag() {
    let d = tempfile::tempdir().unwrap();
    let o = strata(&["caption", "--print-knowledge"], d.path());
    assert!(o.status.success());
    let edited = String::from_utf8(o.stdout)
        .unwrap()
        .replace("\"next to\", ", "\"hard by\", \"next to\", ");
    std::fs::write(d.path().join("k.toml"), edited).unwrap();
    let o = strata(
        &[
            "caption",
            "--knowledge",
            "k.toml",
            "--explain",
            "a house hard by the road",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("\"next_to\"") && text(&o).contains("passes golden rule: true"),
        "{}",
        text(&o)
    );
    let o = strata(
        &["caption", "--explain", "a house hard by the road"],
        d.path(),
    );
    assert!(
        text(&o).contains("passes golden rule: false"),
        "{}",
        text(&o)
    );
}

#[test]
fn coco_kohya_and_label_files() {
    let d = tempfile::tempdir().unwrap();
    // COCO with numbered images (as UCM / Sydney name them) and a label file.
    std::fs::create_dir(d.path().join("imgs")).unwrap();
    for f in ["1.png", "2.png"] {
        std::fs::write(d.path().join("imgs").join(f), PNG).unwrap();
    }
    let coco = serde_json::json!({
        "images": [{"id": 1, "file_name": "1.png"}, {"id": 2, "file_name": "2.png"}],
        "annotations": [
            {"image_id": 1, "caption": "Many houses."},
            {"image_id": 1, "caption": "A road runs between the houses and the farmland."},
            {"image_id": 2, "caption": "A pond is in the middle of the park."}
        ]
    });
    std::fs::write(d.path().join("captions.json"), coco.to_string()).unwrap();
    std::fs::write(
        d.path().join("labels.csv"),
        "# UCM-style\n1.png,sparseresidential\n2.png,park\n",
    )
    .unwrap();
    let o = strata(
        &[
            "caption",
            "--from",
            "coco",
            "captions.json",
            "--images",
            "imgs",
            "--labels",
            "labels.csv",
            "--out",
            "c",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let recs = lines(&d.path().join("c/metadata.jsonl"));
    assert_eq!(recs[0]["scene"], "sparse residential");
    assert_eq!(
        recs[0]["relation"],
        "A road runs between the houses and the farmland."
    );
    assert_eq!(recs[0]["relations"][0]["object2"], "farmland");
    assert_eq!(recs[1]["scene"], "park");
    assert_eq!(recs[1]["relations"][0]["relation"], "in_the_middle_of");

    // kohya: 10_church/x.png + x.txt; an image without its .txt is reported (exit 2).
    let k = d.path().join("kohya/10_church");
    std::fs::create_dir_all(&k).unwrap();
    std::fs::write(k.join("x.png"), PNG).unwrap();
    std::fs::write(k.join("x.txt"), "A church is next to a plaza.\n").unwrap();
    std::fs::write(k.join("y.png"), PNG).unwrap();
    let o = strata(
        &["caption", "--from", "kohya", "kohya", "--out", "k"],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("y.png"), "{}", text(&o));
    let recs = lines(&d.path().join("k/metadata.jsonl"));
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["scene"], "church");
    assert_eq!(recs[0]["file_name"], "10_church/x.png");
    assert_eq!(recs[0]["elements"], serde_json::json!(["church", "plaza"]));
}
