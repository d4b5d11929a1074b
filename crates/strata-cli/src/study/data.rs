//! The study's images: synthetic training and test scenes from disjoint seed streams, the
//! test compositions (scene + elements + relations the training scenes are kept free of),
//! and the one-segment arms' caption folders.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use strata_caption::dataset::Split;
use strata_caption::MetadataRecord;
use strata_synth::dataset::{record, scene_seed};
use strata_synth::{generate, Element, Relation, Scene, SceneClass, Triple};

use super::{CaptionSource, Plan};

/// Salt of the test scenes' seed stream: test and training scenes never share a seed.
const TEST_SALT: u64 = 0x7E57_5CE0_E5A1_7000;
/// Scenes drawn per wanted test scene of a composition before giving up on it.
const MAX_DRAWS_PER_IMAGE: usize = 400;

/// A combination the test scenes are drawn for and no training scene contains:
/// `{"scene": "park", "elements": ["pond", "playground"],
///   "relations": [{"relation": "next_to", "subject": "pond", "object": "road"}]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Composition {
    pub scene: String,
    /// Elements the scene's caption must list.
    #[serde(default)]
    pub elements: Vec<String>,
    /// Relation triples the scene's layout must build (and its caption therefore states).
    #[serde(default)]
    pub relations: Vec<Triple>,
}

type TypedTriple = (Relation, Element, Element, Option<Element>);

/// A composition with its names resolved.
struct Typed {
    class: SceneClass,
    elements: Vec<Element>,
    triples: Vec<TypedTriple>,
}

impl Composition {
    fn typed(&self) -> Result<Typed, String> {
        let class = SceneClass::parse(&self.scene).map_err(|e| format!("`scene`: {e}"))?;
        let elements = self
            .elements
            .iter()
            .map(|n| {
                Element::from_name(n).ok_or_else(|| {
                    format!(
                        "`elements`: unknown element {n:?}; known: {}",
                        Element::ALL
                            .iter()
                            .map(|e| e.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let triples = self
            .relations
            .iter()
            .map(|t| t.parse().map_err(|e| format!("`relations`: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if elements.is_empty() && triples.is_empty() {
            return Err("give at least one of `elements` and `relations` (a scene class alone is not a composition the training set can be kept free of)".into());
        }
        Ok(Typed {
            class,
            elements,
            triples,
        })
    }

    /// A short label, e.g. `park: pond, playground; pond next_to road`.
    pub fn label(&self) -> String {
        let mut parts = vec![];
        if !self.elements.is_empty() {
            parts.push(self.elements.join(", "));
        }
        for t in &self.relations {
            parts.push(match &t.object2 {
                Some(o2) => format!("{} {} {} and {o2}", t.subject, t.relation, t.object),
                None => format!("{} {} {}", t.subject, t.relation, t.object),
            });
        }
        format!("{}: {}", self.scene, parts.join("; "))
    }
}

impl Typed {
    fn matches(&self, s: &Scene) -> bool {
        if s.class != self.class {
            return false;
        }
        let present = |e: &Element| s.caption.elements.iter().any(|n| n == e.name());
        if !self.elements.iter().all(present) {
            return false;
        }
        let built: Vec<TypedTriple> = s.triples.iter().filter_map(|t| t.parse().ok()).collect();
        self.triples.iter().all(|t| built.contains(t))
    }
}

/// Reads and checks a compositions file, naming the entry and field of a bad one.
pub fn read_compositions(path: &Path) -> anyhow::Result<Vec<Composition>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the test compositions {}", path.display()))?;
    let list: Vec<Composition> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected a JSON list of {{\"scene\", \"elements\", \"relations\"}} objects",
            path.display()
        )
    })?;
    if list.is_empty() {
        bail!("{}: the list of test compositions is empty", path.display());
    }
    for (i, c) in list.iter().enumerate() {
        c.typed().map_err(|e| {
            anyhow::anyhow!("{}: entry {} ({}): {e}", path.display(), i + 1, c.scene)
        })?;
    }
    Ok(list)
}

fn write_scene(dir: &Path, s: &Scene, name: &str, split: Split) -> anyhow::Result<MetadataRecord> {
    let file = format!("images/{name}");
    let mask = format!("masks/{name}");
    let n = s.size as usize;
    let ip = dir.join(&file);
    let mp = dir.join(&mask);
    strata_synth::png_io::write_atomic(&ip, &strata_image::encode_png_rgb8(&ip, n, n, &s.rgb)?)?;
    strata_synth::png_io::write_atomic(&mp, &strata_image::encode_png_grey8(&mp, n, n, &s.mask)?)?;
    Ok(record(s, &file, &mask, split))
}

fn write_metadata(dir: &Path, records: &[MetadataRecord]) -> anyhow::Result<()> {
    let mut lines = String::new();
    for r in records {
        lines.push_str(&serde_json::to_string(r)?);
        lines.push('\n');
    }
    crate::stages::write_atomic(&dir.join("metadata.jsonl"), lines.as_bytes())
}

/// Draws scenes `i = 0, 1, …` of a seed stream in parallel rounds and hands them, in index
/// order, to `take` until it says it has enough (deterministic for any number of threads).
fn draw(
    seed: u64,
    class_of: impl Fn(usize) -> SceneClass + Sync,
    size: u32,
    max: usize,
    mut take: impl FnMut(usize, Scene) -> anyhow::Result<bool>,
) -> anyhow::Result<bool> {
    let round = 64;
    let mut i = 0;
    while i < max {
        let end = (i + round).min(max);
        let scenes: Vec<Scene> = (i..end)
            .into_par_iter()
            .map(|k| generate(class_of(k), size, scene_seed(seed, k)))
            .collect();
        for (k, s) in (i..end).zip(scenes) {
            if take(k, s)? {
                return Ok(true);
            }
        }
        i = end;
    }
    Ok(false)
}

/// Writes `DIR/data/train` and `DIR/data/test` (and the one-segment arms' folders); with
/// `data.captions = "pixels"` the caption stage replaces the synthesiser's captions (its
/// accuracy against them goes into the summary). `at`/`of`: the stage's place, for the bar.
pub fn write(run: &Path, plan: &Plan, at: usize, of: usize) -> anyhow::Result<Value> {
    let cfg = &plan.config;
    let classes = cfg.classes();
    let typed: Vec<Typed> = plan
        .compositions
        .iter()
        .map(|c| c.typed().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    let size = cfg.data.size;
    // training scenes: per class, skipping any that holds a test composition
    let train_dir = plan.train_dir(run);
    let want = cfg.data.train_per_class;
    let mut per_class: BTreeMap<SceneClass, usize> = BTreeMap::new();
    let mut records = vec![];
    let mut excluded = 0usize;
    let k = classes.len();
    let done = draw(
        cfg.data.seed,
        |i| classes[i % k],
        size,
        want * k * 50,
        |i, s| {
            let n = per_class.entry(s.class).or_default();
            if *n >= want {
                return Ok(false);
            }
            if typed.iter().any(|t| t.matches(&s)) {
                excluded += 1;
                return Ok(false);
            }
            *n += 1;
            let slug = s.class.slug();
            records.push(write_scene(
                &train_dir,
                &s,
                &format!("{slug}/{slug}_{i:05}.png"),
                Split::Train,
            )?);
            Ok(per_class.len() == k && per_class.values().all(|&c| c >= want))
        },
    )?;
    if !done {
        bail!(
            "could not draw {want} training scenes per class free of the test compositions ({excluded} scenes held one); the compositions are too common in their classes: make them more specific"
        );
    }
    // test scenes: round-robin over the compositions (or the classes), from another stream
    let test_dir = plan.test_dir(run);
    let n_test = cfg.data.test_images;
    let mut tests = vec![];
    let mut per_comp = vec![0usize; typed.len()];
    if typed.is_empty() {
        draw(
            cfg.data.seed ^ TEST_SALT,
            |i| classes[i % k],
            size,
            n_test,
            |i, s| {
                let slug = s.class.slug();
                tests.push(write_scene(
                    &test_dir,
                    &s,
                    &format!("{slug}/{slug}_t{i:05}.png"),
                    Split::Test,
                )?);
                Ok(tests.len() >= n_test)
            },
        )?;
    } else {
        for (ci, t) in typed.iter().enumerate() {
            let want_c = n_test / typed.len() + usize::from(ci < n_test % typed.len());
            if want_c == 0 {
                continue;
            }
            let class = t.class;
            let salt = TEST_SALT ^ (ci as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F);
            let found = draw(
                cfg.data.seed ^ salt,
                |_| class,
                size,
                want_c * MAX_DRAWS_PER_IMAGE,
                |i, s| {
                    if !t.matches(&s) {
                        return Ok(false);
                    }
                    let slug = s.class.slug();
                    let mut r = write_scene(
                        &test_dir,
                        &s,
                        &format!("{slug}/{slug}_c{ci:02}_{i:05}.png"),
                        Split::Test,
                    )?;
                    r.extra
                        .insert("composition".into(), json!(plan.compositions[ci].label()));
                    tests.push(r);
                    per_comp[ci] += 1;
                    Ok(per_comp[ci] >= want_c)
                },
            )?;
            if !found {
                bail!(
                    "test composition {} ({}) appeared in only {} of {} synthetic {} scenes; the generator rarely or never builds it: check its elements and relations against `strata synth` captions",
                    ci + 1,
                    plan.compositions[ci].label(),
                    per_comp[ci],
                    want_c * MAX_DRAWS_PER_IMAGE,
                    plan.compositions[ci].scene
                );
            }
        }
    }
    let mut caption_stage = Value::Null;
    if cfg.data.captions == CaptionSource::Pixels {
        let bar = crate::stages::stage_bar(
            at,
            of,
            "caption stage (pixels)",
            (records.len() + tests.len()) as u64,
            "images",
        );
        let (a, mut sa) =
            crate::stages::caption::caption_pixels(&train_dir, &records, cfg.data.seed, &bar)?;
        let (b, mut sb) =
            crate::stages::caption::caption_pixels(&test_dir, &tests, cfg.data.seed, &bar)?;
        bar.finish_and_clear();
        // The captioner was trained on scenes of base seeds 1000 (training) and 2000
        // (validation); scenes of any other seed stream are new to it.
        let held_out = cfg.data.seed != 1000 && cfg.data.seed != 2000;
        for x in [&mut sa, &mut sb] {
            x["accuracy"]["held_out"] = json!(held_out);
        }
        caption_stage = json!({"train": sa, "test": sb});
        records = a;
        tests = b;
    }
    write_metadata(&train_dir, &records)?;
    write_metadata(&test_dir, &tests)?;
    // one-segment arms: the same images (hard links; copies where links fail) and records,
    // the caption column set to the segment
    for arm in cfg.arms.iter().filter(|a| a.segment().is_some()) {
        let dir = plan.arm_data(run, *arm);
        let mut recs = records.clone();
        for r in &mut recs {
            let src = train_dir.join(&r.file_name);
            let dst = dir.join(&r.file_name);
            if !dst.is_file() {
                if let Some(p) = dst.parent() {
                    std::fs::create_dir_all(p)
                        .with_context(|| format!("creating {}", p.display()))?;
                }
                if std::fs::hard_link(&src, &dst).is_err() {
                    std::fs::copy(&src, &dst).with_context(|| {
                        format!("copying {} to {}", src.display(), dst.display())
                    })?;
                }
            }
            r.text = arm.flat_text(r);
        }
        write_metadata(&dir, &recs)?;
    }
    let count = |v: &[MetadataRecord]| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for r in v {
            *m.entry(r.scene.clone()).or_default() += 1;
        }
        m
    };
    Ok(json!({
        "train_images": records.len(),
        "test_images": tests.len(),
        "train_per_scene": count(&records),
        "test_per_scene": count(&tests),
        "training_scenes_excluded_for_holding_a_test_composition": excluded,
        "compositions": plan.compositions.iter().map(|c| c.label()).collect::<Vec<_>>(),
        "captions": cfg.data.captions,
        "caption_stage": caption_stage,
    }))
}

/// The test records in a fixed order (by file name).
pub fn test_records(plan: &Plan, run: &Path) -> anyhow::Result<Vec<MetadataRecord>> {
    let dir = plan.test_dir(run);
    let mut v = strata_caption::read_dataset(&dir)
        .with_context(|| format!("reading {}/metadata.jsonl", dir.display()))?;
    v.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compositions_are_checked_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        let e = |text: &str| {
            std::fs::write(&p, text).unwrap();
            format!("{:#}", read_compositions(&p).unwrap_err())
        };
        assert!(e("[]").contains("empty"));
        assert!(e("{").contains("JSON list"));
        assert!(e(r#"[{"scene": "moon", "elements": ["road"]}]"#).contains("entry 1"));
        assert!(e(r#"[{"scene": "park", "elements": ["lava"]}]"#).contains("lava"));
        assert!(e(r#"[{"scene": "park"}]"#).contains("at least one"));
        let r = e(
            r#"[{"scene": "park", "relations": [{"relation": "hugs", "subject": "pond", "object": "road"}]}]"#,
        );
        assert!(r.contains("hugs"), "{r}");
        std::fs::write(
            &p,
            r#"[{"scene": "park", "elements": ["pond"], "relations": [{"relation": "next_to", "subject": "pond", "object": "road"}]}]"#,
        )
        .unwrap();
        let c = read_compositions(&p).unwrap();
        assert_eq!(c[0].label(), "park: pond; pond next_to road");
    }

    /// A composition matches exactly the scenes whose caption lists its elements and whose
    /// layout built its triples (checked against the scenes' own ground truth).
    #[test]
    fn a_composition_matches_the_scenes_that_hold_it() {
        let scenes: Vec<Scene> = (0..40)
            .map(|i| generate(SceneClass::Park, 64, scene_seed(1, i)))
            .collect();
        // take a triple one scene built and see which scenes built it too
        let t = scenes
            .iter()
            .find_map(|s| s.triples.first().cloned())
            .unwrap();
        let c = Composition {
            scene: "park".into(),
            elements: vec![],
            relations: vec![t.clone()],
        };
        let typed = c.typed().unwrap();
        let hits = scenes.iter().filter(|s| typed.matches(s)).count();
        let truth = scenes.iter().filter(|s| s.triples.contains(&t)).count();
        assert_eq!(hits, truth);
        assert!(hits >= 1);
        let other = generate(SceneClass::Square, 64, 3);
        assert!(!typed.matches(&other));
    }
}
