//! Free-sentence captions: a seeded description of a scene from its ground truth, in varied
//! ordinary sentences. They follow neither the flat template ("a remote sensing image of
//! <scene> with a, b, c") nor the hierarchical segments (scene · relation · elements), so a
//! model pretrained on them has seen neither caption format the paper compares, while its
//! words (scene names, element names, relation words) still mean what they show.
//!
//! What a caption may say comes from the scene alone: an element is mentioned only when
//! its class has pixels in the mask, and a relation only when [`crate::check`] decides,
//! from the mask, that it holds. The wording is drawn by a generator seeded by
//! `(seed, scene seed)`: the opening sentence shape, which elements are listed and in what
//! order, a synonym for each, how many relations are stated and how, and an optional
//! closing sentence.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::check;
use crate::scenes::Scene;
use crate::types::{Element, Relation, SceneClass, Triple};

/// A free caption and what it mentions.
#[derive(Debug, Clone, PartialEq)]
pub struct FreeCaption {
    pub text: String,
    /// The elements named in `text` (listed or inside a relation), in no particular order.
    pub elements: Vec<Element>,
    /// The relation triples stated in `text`.
    pub triples: Vec<Triple>,
    /// Whether the scene class is named.
    pub names_scene: bool,
}

/// A noun phrase: its words and whether it is plural (for verb agreement).
#[derive(Clone)]
struct Np {
    words: String,
    plural: bool,
}

/// The nouns an element may be called by: `(singular, plural)`; mass nouns repeat the word.
/// Several per element are synonyms; no phrase contains another element's phrase as whole
/// words. [`surface_forms`] lists them all.
fn nouns(e: Element) -> &'static [(&'static str, &'static str)] {
    use Element::*;
    match e {
        BareLand => &[("bare land", "bare land"), ("bare ground", "bare ground")],
        Grass => &[("grass", "grass"), ("lawn", "lawns")],
        Tree => &[
            ("tree", "trees"),
            ("tree", "trees"),
            ("wooded patch", "wooded patches"),
        ],
        Building => &[("building", "buildings"), ("block", "blocks")],
        House => &[
            ("house", "houses"),
            ("home", "homes"),
            ("residence", "residences"),
        ],
        Church => &[("church", "churches"), ("chapel", "chapels")],
        Road => &[("road", "roads"), ("street", "streets")],
        Roundabout => &[
            ("roundabout", "roundabouts"),
            ("traffic circle", "traffic circles"),
        ],
        Water => &[("water", "water"), ("sea", "sea")],
        River => &[("river", "rivers"), ("stream", "streams")],
        Pond => &[("pond", "ponds"), ("small lake", "small lakes")],
        SwimmingPool => &[("swimming pool", "swimming pools"), ("pool", "pools")],
        Farmland => &[("farmland", "farmland"), ("cropland", "cropland")],
        ParkingLot => &[
            ("parking lot", "parking lots"),
            ("parking area", "parking areas"),
        ],
        Car => &[("car", "cars"), ("vehicle", "vehicles")],
        Railway => &[("railway", "railways"), ("rail track", "rail tracks")],
        Platform => &[
            ("platform", "platforms"),
            ("station platform", "station platforms"),
        ],
        TrainStation => &[
            ("train station", "train stations"),
            ("station hall", "station halls"),
        ],
        Playground => &[("playground", "playgrounds"), ("play area", "play areas")],
        SportsField => &[("sports field", "sports fields"), ("pitch", "pitches")],
        RunningTrack => &[
            ("running track", "running tracks"),
            ("race track", "race tracks"),
        ],
        TennisCourt => &[("tennis court", "tennis courts")],
        BasketballCourt => &[("basketball court", "basketball courts")],
        Plaza => &[("plaza", "plazas"), ("paved plaza", "paved plazas")],
        Fountain => &[("fountain", "fountains")],
        Factory => &[("factory", "factories"), ("plant", "plants")],
        Warehouse => &[("warehouse", "warehouses"), ("depot", "depots")],
        StorageTank => &[("storage tank", "storage tanks"), ("tank", "tanks")],
        School => &[("school", "schools"), ("schoolhouse", "schoolhouses")],
        Hotel => &[("hotel", "hotels"), ("lodge", "lodges")],
        Beach => &[("beach", "beaches"), ("sandy shore", "sandy shores")],
    }
}

/// Elements a scene usually holds many of (listed in the plural).
fn many(e: Element) -> bool {
    use Element::*;
    matches!(
        e,
        Tree | House | Building | Car | StorageTank | Platform | Warehouse
    )
}

fn is_mass(e: Element) -> bool {
    nouns(e)[0].0 == nouns(e)[0].1
}

/// Every word or phrase the generator may use for `e`, singular and plural.
pub fn surface_forms(e: Element) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = nouns(e).iter().flat_map(|(s, p)| [*s, *p]).collect();
    v.sort();
    v.dedup();
    v
}

/// The phrases the generator may use for a scene class.
pub fn scene_forms(c: SceneClass) -> &'static [&'static str] {
    match c {
        SceneClass::Church => &["church", "churchyard", "parish church"],
        SceneClass::Commercial => &["commercial area", "commercial district", "shopping area"],
        SceneClass::DenseResidential => &[
            "dense residential area",
            "densely built neighbourhood",
            "crowded housing district",
        ],
        SceneClass::Industrial => &["industrial area", "industrial estate", "industrial zone"],
        SceneClass::MediumResidential => &[
            "medium residential area",
            "suburban neighbourhood",
            "residential neighbourhood",
        ],
        SceneClass::Park => &["park", "public park", "city park"],
        SceneClass::RailwayStation => &["railway station", "rail station", "railway hub"],
        SceneClass::Resort => &["resort", "seaside resort", "holiday resort"],
        SceneClass::School => &["school", "school campus", "schoolyard"],
        SceneClass::SparseResidential => &[
            "sparse residential area",
            "sparsely built countryside",
            "rural settlement",
        ],
        SceneClass::Square => &["square", "town square", "public square"],
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

struct Words {
    rng: ChaCha8Rng,
}

impl Words {
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.rng.gen_range(0..v.len())]
    }

    /// An indefinite phrase for `e` ("a pond", "trees", "grass", "some cars").
    fn indef(&mut self, e: Element) -> Np {
        let (s, p) = *self.pick(nouns(e));
        if is_mass(e) {
            return Np {
                words: s.to_string(),
                plural: false,
            };
        }
        let plural = many(e) || self.rng.gen_bool(0.25);
        if plural {
            let q = *self.pick(&["", "", "some ", "several ", "a few "]);
            Np {
                words: format!("{q}{p}"),
                plural: true,
            }
        } else {
            Np {
                words: format!("{} {s}", article(s)),
                plural: false,
            }
        }
    }

    /// A definite phrase for `e` ("the pond", "the trees").
    fn def(&mut self, e: Element) -> Np {
        let (s, p) = *self.pick(nouns(e));
        if many(e) {
            Np {
                words: format!("the {p}"),
                plural: true,
            }
        } else {
            Np {
                words: format!("the {s}"),
                plural: false,
            }
        }
    }

    /// "a", "a and b", "a, b and c" (sometimes with the serial comma, sometimes "as well as").
    fn list(&mut self, items: &[String]) -> String {
        match items.len() {
            0 => String::new(),
            1 => items[0].clone(),
            n => {
                let head = items[..n - 1].join(", ");
                let last = &items[n - 1];
                match self.rng.gen_range(0..4) {
                    0 if n > 2 => format!("{head}, and {last}"),
                    1 => format!("{head} as well as {last}"),
                    _ => format!("{head} and {last}"),
                }
            }
        }
    }

    /// A clause stating `t` (lower case, no full stop).
    fn relation(&mut self, rel: Relation, s: Element, o: Element, o2: Option<Element>) -> String {
        let v = |np: &Np, sg: &str, pl: &str| -> String {
            if np.plural {
                pl.to_string()
            } else {
                sg.to_string()
            }
        };
        let k = self.rng.gen_range(0..3usize);
        let subj = if many(s) || is_mass(s) || k == 2 {
            self.indef(s)
        } else {
            self.def(s)
        };
        let obj = self.def(o);
        let (sw, ow) = (&subj.words, &obj.words);
        match rel {
            Relation::Surrounds => match k {
                0 => format!("{sw} {} {ow}", v(&subj, "rings", "ring")),
                1 => format!("{ow} {} enclosed by {sw}", v(&obj, "is", "are")),
                _ => format!("{sw} all around {ow}"),
            },
            Relation::Crosses => match k {
                0 => format!("{sw} {} across {ow}", v(&subj, "cuts", "cut")),
                1 => format!("{ow} {} crossed by {sw}", v(&obj, "is", "are")),
                _ => format!("{sw} passing through {ow}"),
            },
            Relation::Along => match k {
                0 => format!("{sw} {} {ow}", v(&subj, "follows", "follow")),
                1 => format!("{ow} {} lined by {sw}", v(&obj, "is", "are")),
                _ => format!("{sw} running beside {ow} along its length"),
            },
            Relation::OnBothSidesOf => match k {
                0 => format!("{sw} {} {ow} on both sides", v(&subj, "flanks", "flank")),
                1 => format!("{ow} with {sw} on each side"),
                _ => format!("{sw} lining both sides of {ow}"),
            },
            Relation::InTheMiddleOf => match k {
                0 => format!("{sw} {} in the middle of {ow}", v(&subj, "sits", "sit")),
                1 => format!("{ow} {} {sw} at its centre", v(&obj, "has", "have")),
                _ => format!("{sw} at the heart of {ow}"),
            },
            Relation::NextTo => match k {
                0 => format!("{sw} right next to {ow}"),
                1 => format!("{sw} {} beside {ow}", v(&subj, "lies", "lie")),
                _ => format!("{ow} with {sw} close by"),
            },
            Relation::ParallelTo => match k {
                0 => format!("{sw} {} parallel to {ow}", v(&subj, "runs", "run")),
                _ => format!("{sw} and {ow} running side by side"),
            },
            Relation::Between => {
                let o2 = o2.unwrap_or(o);
                if o2 == o {
                    let (_, p) = *self.pick(nouns(o));
                    format!("{sw} {} between two {p}", v(&subj, "lies", "lie"))
                } else {
                    let b = self.def(o2);
                    match k {
                        0 => format!("{sw} between {ow} and {}", b.words),
                        _ => format!(
                            "{sw} {} {ow} from {}",
                            v(&subj, "separates", "separate"),
                            b.words
                        ),
                    }
                }
            }
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => format!("{}{}", f.to_uppercase(), c.as_str()),
        None => String::new(),
    }
}

/// Elements of `scene` with pixels in its mask, largest area first.
pub fn present_elements(scene: &Scene) -> Vec<Element> {
    let areas = scene.areas();
    let mut v: Vec<(usize, Element)> = Element::ALL
        .iter()
        .filter(|e| areas[e.id() as usize] > 0)
        .map(|&e| (areas[e.id() as usize], e))
        .collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    v.into_iter().map(|(_, e)| e).collect()
}

/// The relation triples of `scene` that the checker confirms on its mask.
pub fn holding_triples(scene: &Scene) -> Vec<Triple> {
    let m = scene.mask_view();
    scene
        .triples
        .iter()
        .filter(|t| check(&m, t).map(|v| v.holds).unwrap_or(false))
        .cloned()
        .collect()
}

/// A free-sentence caption of `scene`, drawn by a generator seeded by `(seed, scene.seed)`.
pub fn free_caption(scene: &Scene, seed: u64) -> FreeCaption {
    let mut w = Words {
        rng: ChaCha8Rng::seed_from_u64(
            seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ scene.seed ^ 0xF4EE,
        ),
    };
    let present = present_elements(scene);
    let mut triples = holding_triples(scene);
    triples.shuffle(&mut w.rng);
    // 0–2 relations (more often 1)
    let n_rel = match w.rng.gen_range(0..10) {
        0..=1 => 0,
        2..=7 => 1,
        _ => 2,
    }
    .min(triples.len());
    triples.truncate(n_rel);
    let mut mentioned: Vec<Element> = vec![];
    for t in &triples {
        if let Ok((_, s, o, o2)) = t.parse() {
            mentioned.extend([Some(s), Some(o), o2].into_iter().flatten());
        }
    }
    // a random subset of the present elements, in random order; the larger ones first more
    // often (a caption names what catches the eye)
    let lo = present.len().min(2);
    let hi = present.len().min(6);
    let n_list = if hi > lo {
        w.rng.gen_range(lo..=hi)
    } else {
        hi
    };
    let pool: Vec<Element> = present.iter().copied().take(n_list + 3).collect();
    let mut listed: Vec<Element> = pool.choose_multiple(&mut w.rng, n_list).copied().collect();
    listed.shuffle(&mut w.rng);
    // a second, short list for an optional closing sentence
    let (first, rest) = if listed.len() >= 4 && w.rng.gen_bool(0.35) {
        let cut = w.rng.gen_range(2..listed.len() - 1);
        (listed[..cut].to_vec(), listed[cut..].to_vec())
    } else {
        (listed.clone(), vec![])
    };
    mentioned.extend(listed.iter().copied());
    let names_scene = w.rng.gen_bool(0.85);
    let scene_np = {
        let s = *w.pick(scene_forms(scene.class));
        if w.rng.gen_bool(0.5) {
            format!("{} {s}", article(s))
        } else {
            format!("the {s}")
        }
    };
    let items: Vec<String> = first.iter().map(|&e| w.indef(e).words).collect();
    let list = w.list(&items);
    let mut sentences: Vec<String> = vec![];
    let opener = if list.is_empty() {
        None
    } else if names_scene {
        Some(match w.rng.gen_range(0..8) {
            0 => format!("an aerial view of {scene_np} showing {list}"),
            1 => format!("{scene_np} seen from above, with {list}"),
            2 => format!("overhead picture of {scene_np}: {list}"),
            3 => format!("{list} in {scene_np}, photographed from the air"),
            4 => format!("this satellite image shows {scene_np} with {list}"),
            5 => format!("looking down on {scene_np}, you can make out {list}"),
            6 => format!("{scene_np} from high above; there {} {list}", {
                if first.first().is_some_and(|&e| many(e)) || first.len() > 1 {
                    "are"
                } else {
                    "is"
                }
            }),
            _ => format!("top-down view of {scene_np} featuring {list}"),
        })
    } else {
        Some(match w.rng.gen_range(0..4) {
            0 => format!("seen from above: {list}"),
            1 => format!("an overhead shot with {list}"),
            2 => format!("this aerial photo contains {list}"),
            _ => format!("from the air one sees {list}"),
        })
    };
    if let Some(o) = opener {
        sentences.push(capitalise(&o) + ".");
    } else if names_scene {
        sentences.push(capitalise(&format!("an aerial view of {scene_np}")) + ".");
    }
    for t in &triples {
        let Ok((rel, s, o, o2)) = t.parse() else {
            continue;
        };
        let clause = w.relation(rel, s, o, o2);
        let s = match w.rng.gen_range(0..4) {
            0 => format!("Here {clause}."),
            1 => format!("In this view {clause}."),
            _ => capitalise(&clause) + ".",
        };
        sentences.push(s);
    }
    if !rest.is_empty() {
        let items: Vec<String> = rest.iter().map(|&e| w.indef(e).words).collect();
        let l = w.list(&items);
        sentences.push(match w.rng.gen_range(0..3) {
            0 => format!("Also visible: {l}."),
            1 => format!("Also in view: {l}."),
            _ => capitalise(&format!("{l} can be seen as well.")),
        });
    }
    if sentences.is_empty() {
        sentences.push("An aerial view.".into());
    }
    mentioned.sort();
    mentioned.dedup();
    FreeCaption {
        text: sentences.join(" "),
        elements: mentioned,
        triples,
        names_scene,
    }
}
