//! The spatial relation knowledge collection (SRKC): relations with their phrases, vertical
//! relations and their exceptions, clause rules, correction rules, the element lexicon and
//! the scene concepts. Loaded from TOML; the default is compiled into the binary.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{read_text, CaptionError, Result};
use crate::text::{phrase_words, plural};

/// The default knowledge file, as shipped (`knowledge/srkc.toml`).
pub const EMBEDDED_TOML: &str = include_str!("../knowledge/srkc.toml");

/// One SRKC relation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelationDef {
    /// Canonical id, e.g. `next_to`.
    pub id: String,
    /// Phrases where the subject comes first: "trees surround the pond".
    #[serde(default)]
    pub phrases: Vec<String>,
    /// Phrases with swapped roles: "a pond surrounded by trees".
    #[serde(default)]
    pub passive_phrases: Vec<String>,
    /// "between A and B": a second object joined by `and`.
    #[serde(default)]
    pub two_objects: bool,
}

/// A vertical word that is a real top-down relation for some element pairs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerticalException {
    pub phrases: Vec<String>,
    /// Canonical elements allowed before the word.
    pub subjects: Vec<String>,
    /// Canonical elements allowed after the word.
    pub objects: Vec<String>,
    /// The relation id it counts as.
    pub relation: String,
    /// Whether the roles are swapped ("a river under a bridge": the bridge crosses).
    #[serde(default)]
    pub passive: bool,
}

/// What the correction pipeline does with an element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElementAction {
    /// Leave it in, say nothing.
    Keep,
    /// Leave it in, log it.
    Flag,
    /// Take it out, log it.
    Remove,
    /// Do not check.
    Ignore,
}

/// The expert-correction switches (`[corrections]` of the knowledge file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrectionRules {
    #[serde(default = "yes")]
    pub remove_vertical_clauses: bool,
    #[serde(default = "yes")]
    pub normalise_elements: bool,
    #[serde(default = "yes")]
    pub add_relation_elements: bool,
    #[serde(default = "flag")]
    pub implausible_elements: ElementAction,
    #[serde(default = "keep")]
    pub unknown_elements: ElementAction,
}

fn yes() -> bool {
    true
}
fn flag() -> ElementAction {
    ElementAction::Flag
}
fn keep() -> ElementAction {
    ElementAction::Keep
}

impl Default for CorrectionRules {
    fn default() -> Self {
        CorrectionRules {
            remove_vertical_clauses: true,
            normalise_elements: true,
            add_relation_elements: true,
            implausible_elements: ElementAction::Flag,
            unknown_elements: ElementAction::Keep,
        }
    }
}

/// One lexicon element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElementDef {
    /// Canonical singular name, e.g. `parking lot`.
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// One scene concept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneDef {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub plausible: Vec<String>,
    #[serde(default)]
    pub implausible: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerticalSection {
    #[serde(default)]
    phrases: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClauseSection {
    #[serde(default)]
    punctuation: Vec<String>,
    #[serde(default)]
    words: Vec<String>,
    #[serde(default)]
    object_stops: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKnowledge {
    #[serde(default)]
    version: Option<u32>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    relation: Vec<RelationDef>,
    #[serde(default)]
    vertical: VerticalSection,
    #[serde(default)]
    vertical_exception: Vec<VerticalException>,
    #[serde(default)]
    clauses: Option<ClauseSection>,
    #[serde(default)]
    corrections: CorrectionRules,
    #[serde(default)]
    element: Vec<ElementDef>,
    #[serde(default)]
    scene: Vec<SceneDef>,
}

/// What a relation-table phrase stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PhraseKind {
    /// Index into `relations`, passive flag.
    Relation(usize, bool),
    /// A vertical relation phrase.
    Vertical,
}

/// Phrases keyed by their first word, longest first.
#[derive(Debug, Clone)]
pub(crate) struct PhraseTable<V> {
    by_first: HashMap<String, Vec<(Vec<String>, V)>>,
}

impl<V> Default for PhraseTable<V> {
    fn default() -> Self {
        PhraseTable {
            by_first: HashMap::new(),
        }
    }
}

impl<V: Copy> PhraseTable<V> {
    fn insert(&mut self, words: Vec<String>, v: V) {
        let list = self.by_first.entry(words[0].clone()).or_default();
        list.push((words, v));
        list.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
    }

    fn get_exact(&self, words: &[String]) -> Option<V> {
        self.by_first
            .get(words.first()?)?
            .iter()
            .find(|(w, _)| w.as_slice() == words)
            .map(|(_, v)| *v)
    }

    /// The longest phrase that starts at `words[0]`: (length in words, value).
    pub(crate) fn longest_at(&self, words: &[&str]) -> Option<(usize, V)> {
        let list = self.by_first.get(*words.first()?)?;
        list.iter()
            .find(|(w, _)| w.len() <= words.len() && w.iter().zip(words).all(|(a, b)| a == b))
            .map(|(w, v)| (w.len(), *v))
    }
}

/// The loaded and compiled SRKC. Build it with [`Knowledge::embedded`],
/// [`Knowledge::from_file`] or [`Knowledge::from_toml_str`].
#[derive(Debug, Clone)]
pub struct Knowledge {
    /// The `name` of the file.
    pub name: String,
    /// Where it came from: `embedded` or the path.
    pub source: String,
    /// FNV-1a 64 of the file text (hex), recorded in provenance so that a dataset names the
    /// exact knowledge it was made with.
    pub fingerprint: String,
    pub relations: Vec<RelationDef>,
    pub vertical: Vec<String>,
    pub exceptions: Vec<VerticalException>,
    pub clause_punctuation: Vec<char>,
    pub clause_words: Vec<String>,
    /// Words after which the object of a relation is no longer looked for ("a river runs
    /// through the city with buildings": the buildings are not what the river crosses).
    pub object_stops: Vec<String>,
    pub corrections: CorrectionRules,
    pub elements: Vec<ElementDef>,
    pub scenes: Vec<SceneDef>,
    pub(crate) relation_table: PhraseTable<PhraseKind>,
    pub(crate) element_table: PhraseTable<usize>,
    pub(crate) clause_word_table: PhraseTable<()>,
    element_index: HashMap<String, usize>,
    scene_index: HashMap<String, usize>,
}

impl Knowledge {
    /// The default SRKC compiled into strata.
    pub fn embedded() -> Knowledge {
        Knowledge::from_toml_str(EMBEDDED_TOML, "embedded")
            .expect("the embedded knowledge file is valid (checked by tests)")
    }

    /// Loads a user knowledge file.
    pub fn from_file(path: &Path) -> Result<Knowledge> {
        let text = read_text(path)?;
        Knowledge::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and checks a knowledge file. `source_name` is used in error messages.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Knowledge> {
        let err = |message: String| CaptionError::Knowledge {
            source_name: source_name.to_string(),
            message,
        };
        if text.trim().is_empty() {
            return Err(err(
                "the file is empty; start from `strata caption --print-knowledge`".into(),
            ));
        }
        let raw: RawKnowledge = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        if let Some(v) = raw.version {
            if v != 1 {
                return Err(err(format!(
                    "version {v} is not supported (this strata reads version 1)"
                )));
            }
        }
        if raw.relation.is_empty() {
            return Err(err(
                "no [[relation]] entries: the golden rule needs at least one spatial relation"
                    .into(),
            ));
        }
        if raw.element.is_empty() {
            return Err(err(
                "no [[element]] entries: the element lexicon is empty".into()
            ));
        }

        let mut relation_table = PhraseTable::default();
        let mut seen: HashMap<Vec<String>, String> = HashMap::new();
        let mut claim = |words: Vec<String>, owner: String, phrase: &str| -> Result<Vec<String>> {
            if words.is_empty() {
                return Err(err(format!("{owner}: phrase {phrase:?} has no words")));
            }
            if let Some(prev) = seen.get(&words) {
                if *prev != owner {
                    return Err(err(format!(
                        "phrase {phrase:?} is listed under both {prev} and {owner}; keep it in one place"
                    )));
                }
                return Ok(Vec::new());
            }
            seen.insert(words.clone(), owner);
            Ok(words)
        };
        let mut relation_ids = HashMap::new();
        for (i, r) in raw.relation.iter().enumerate() {
            if r.id.trim().is_empty() {
                return Err(err(format!(
                    "[[relation]] number {} has an empty id",
                    i + 1
                )));
            }
            if relation_ids.insert(r.id.clone(), i).is_some() {
                return Err(err(format!("relation id {:?} is defined twice", r.id)));
            }
            if r.phrases.is_empty() && r.passive_phrases.is_empty() {
                return Err(err(format!("relation {:?} has no phrases", r.id)));
            }
            for (list, passive) in [(&r.phrases, false), (&r.passive_phrases, true)] {
                for p in list {
                    let w = claim(phrase_words(p), format!("relation {:?}", r.id), p)?;
                    if !w.is_empty() {
                        relation_table.insert(w, PhraseKind::Relation(i, passive));
                    }
                }
            }
        }
        for p in &raw.vertical.phrases {
            let w = claim(phrase_words(p), "[vertical]".into(), p)?;
            if !w.is_empty() {
                relation_table.insert(w, PhraseKind::Vertical);
            }
        }

        let mut element_table = PhraseTable::default();
        let mut element_index = HashMap::new();
        let mut owner_of: HashMap<Vec<String>, usize> = HashMap::new();
        for (i, e) in raw.element.iter().enumerate() {
            let key = phrase_words(&e.name).join(" ");
            if key.is_empty() {
                return Err(err(format!(
                    "[[element]] number {} has an empty name",
                    i + 1
                )));
            }
            if element_index.insert(key.clone(), i).is_some() {
                return Err(err(format!("element {:?} is defined twice", e.name)));
            }
        }
        // Explicit names and aliases first; they must be unambiguous.
        for (i, e) in raw.element.iter().enumerate() {
            for p in std::iter::once(&e.name).chain(&e.aliases) {
                let w = phrase_words(p);
                if w.is_empty() {
                    return Err(err(format!(
                        "element {:?}: alias {p:?} has no words",
                        e.name
                    )));
                }
                match owner_of.get(&w) {
                    Some(&j) if j != i => {
                        return Err(err(format!(
                        "{p:?} is a name or alias of both {:?} and {:?}; keep it under one element",
                        raw.element[j].name, e.name
                    )))
                    }
                    Some(_) => {}
                    None => {
                        owner_of.insert(w.clone(), i);
                        element_table.insert(w, i);
                    }
                }
            }
        }
        // Generated plurals never override an explicit entry.
        for (i, e) in raw.element.iter().enumerate() {
            for p in std::iter::once(&e.name).chain(&e.aliases) {
                let w = phrase_words(&plural(&phrase_words(p).join(" ")));
                if let std::collections::hash_map::Entry::Vacant(v) = owner_of.entry(w.clone()) {
                    v.insert(i);
                    element_table.insert(w, i);
                }
            }
        }

        let canon = |name: &str, what: &str| -> Result<String> {
            let key = phrase_words(name).join(" ");
            if element_index.contains_key(&key) {
                Ok(key)
            } else {
                Err(err(format!(
                    "{what} names element {name:?}, which is not in the [[element]] lexicon"
                )))
            }
        };
        let mut exceptions = Vec::new();
        for x in &raw.vertical_exception {
            let rel = relation_ids.get(&x.relation).ok_or_else(|| {
                err(format!(
                    "[[vertical_exception]] maps to relation {:?}, which is not defined",
                    x.relation
                ))
            })?;
            let _ = rel;
            for p in &x.phrases {
                let w = phrase_words(p);
                if relation_table.get_exact(&w) != Some(PhraseKind::Vertical) {
                    return Err(err(format!(
                        "[[vertical_exception]] phrase {p:?} is not one of the [vertical] phrases"
                    )));
                }
            }
            let mut x = x.clone();
            x.phrases = x
                .phrases
                .iter()
                .map(|p| phrase_words(p).join(" "))
                .collect();
            x.subjects = x
                .subjects
                .iter()
                .map(|s| canon(s, "[[vertical_exception]]"))
                .collect::<Result<_>>()?;
            x.objects = x
                .objects
                .iter()
                .map(|s| canon(s, "[[vertical_exception]]"))
                .collect::<Result<_>>()?;
            exceptions.push(x);
        }

        let mut scene_index = HashMap::new();
        let mut scenes = Vec::new();
        for (i, s) in raw.scene.iter().enumerate() {
            let mut s = s.clone();
            s.name = phrase_words(&s.name).join(" ");
            if s.name.is_empty() {
                return Err(err(format!("[[scene]] number {} has an empty name", i + 1)));
            }
            for n in std::iter::once(&s.name).chain(&s.aliases) {
                let key = scene_key(n);
                if let Some(&j) = scene_index.get(&key) {
                    if j != i {
                        return Err(err(format!("scene label {n:?} belongs to two scenes")));
                    }
                }
                scene_index.insert(key, i);
            }
            let what = format!("scene {:?}", s.name);
            s.plausible = s
                .plausible
                .iter()
                .map(|e| canon(e, &what))
                .collect::<Result<_>>()?;
            s.implausible = s
                .implausible
                .iter()
                .map(|e| canon(e, &what))
                .collect::<Result<_>>()?;
            if let Some(both) = s.plausible.iter().find(|e| s.implausible.contains(e)) {
                return Err(err(format!(
                    "{what}: {both:?} is both plausible and implausible"
                )));
            }
            scenes.push(s);
        }

        let clauses = raw.clauses.unwrap_or(ClauseSection {
            punctuation: vec![",".into(), ";".into(), ":".into()],
            words: vec!["while".into(), "whereas".into(), "but".into()],
            object_stops: vec!["with".into()],
        });
        let mut clause_punctuation = Vec::new();
        for p in &clauses.punctuation {
            let mut cs = p.chars();
            match (cs.next(), cs.next()) {
                (Some(c), None) if !c.is_alphanumeric() && !c.is_whitespace() => {
                    clause_punctuation.push(c)
                }
                _ => {
                    return Err(err(format!(
                        "[clauses] punctuation {p:?} must be one punctuation character"
                    )))
                }
            }
        }
        let mut clause_word_table = PhraseTable::default();
        for w in &clauses.words {
            let ws = phrase_words(w);
            if ws.is_empty() {
                return Err(err(format!("[clauses] word {w:?} has no words")));
            }
            clause_word_table.insert(ws, ());
        }

        let elements = raw
            .element
            .iter()
            .map(|e| ElementDef {
                name: phrase_words(&e.name).join(" "),
                aliases: e.aliases.clone(),
            })
            .collect();
        Ok(Knowledge {
            name: raw.name.unwrap_or_else(|| source_name.to_string()),
            source: source_name.to_string(),
            fingerprint: format!("{:016x}", strata_io::hash::fnv1a64(text.as_bytes())),
            relations: raw.relation,
            vertical: raw.vertical.phrases,
            exceptions,
            clause_punctuation,
            clause_words: clauses.words,
            object_stops: clauses
                .object_stops
                .iter()
                .map(|w| phrase_words(w).join(" "))
                .filter(|w| !w.is_empty())
                .collect(),
            corrections: raw.corrections,
            elements,
            scenes,
            relation_table,
            element_table,
            clause_word_table,
            element_index,
            scene_index,
        })
    }

    /// Ids of all relations, in file order.
    pub fn relation_ids(&self) -> impl Iterator<Item = &str> {
        self.relations.iter().map(|r| r.id.as_str())
    }

    /// The canonical element for a whole phrase ("Cars", "railway tracks", "lake"), if the
    /// phrase is exactly a name, alias or plural in the lexicon.
    pub fn element(&self, phrase: &str) -> Option<&str> {
        let w = phrase_words(phrase);
        self.element_table
            .get_exact(&w)
            .map(|i| self.elements[i].name.as_str())
    }

    /// Whether `name` is a canonical lexicon name.
    pub fn is_element(&self, name: &str) -> bool {
        self.element_index.contains_key(name)
    }

    /// The scene concept a dataset label or folder name stands for ("denseresidential",
    /// "Dense_Residential" → `dense residential`), if known.
    pub fn scene(&self, label: &str) -> Option<&SceneDef> {
        self.scene_index
            .get(&scene_key(label))
            .map(|&i| &self.scenes[i])
    }

    /// The scene name to record for a label: the known concept, or the label itself cleaned
    /// (lower case, `_`/`-` as spaces, a kohya `10_` repeat prefix dropped) so that the
    /// collection can be extended by simply using new labels.
    pub fn scene_name(&self, label: &str) -> String {
        if let Some(s) = self.scene(label) {
            return s.name.clone();
        }
        let l = strip_repeat_prefix(label.trim());
        if let Some(s) = self.scene(l) {
            return s.name.clone();
        }
        phrase_words(l).join(" ")
    }
}

/// A kohya folder `10_church` means 10 repeats of concept `church`.
fn strip_repeat_prefix(label: &str) -> &str {
    match label.split_once('_') {
        Some((n, rest))
            if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty() =>
        {
            rest
        }
        _ => label,
    }
}

/// Scene labels compare lower-cased with everything but letters and digits dropped.
fn scene_key(label: &str) -> String {
    label
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(|c| c.to_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_loads_with_contract_ids() {
        let k = Knowledge::embedded();
        for id in [
            "surrounds",
            "crosses",
            "along",
            "on_both_sides_of",
            "in_the_middle_of",
            "next_to",
            "parallel_to",
            "between",
        ] {
            assert!(k.relation_ids().any(|r| r == id), "{id}");
        }
        for e in [
            "building",
            "house",
            "church",
            "road",
            "roundabout",
            "tree",
            "grass",
            "lawn",
            "water",
            "river",
            "pond",
            "swimming pool",
            "farmland",
            "parking lot",
            "car",
            "railway",
            "platform",
            "train station",
            "playground",
            "sports field",
            "running track",
            "tennis court",
            "basketball court",
            "plaza",
            "fountain",
            "bridge",
            "factory",
            "warehouse",
            "storage tank",
            "school",
            "hotel",
            "beach",
            "bare land",
        ] {
            assert!(k.is_element(e), "{e}");
            assert_eq!(k.element(e), Some(e));
        }
        assert_eq!(k.scenes.len(), 11);
    }

    #[test]
    fn aliases_and_plurals() {
        let k = Knowledge::embedded();
        for (a, e) in [
            ("cars", "car"),
            ("Trees", "tree"),
            ("buildings", "building"),
            ("lake", "pond"),
            ("pool", "swimming pool"),
            ("railway tracks", "railway"),
            ("railway track", "railway"),
            ("rail", "railway"),
            ("lawns", "lawn"),
            ("meadow", "grass"),
            ("square", "plaza"),
            ("factories", "factory"),
            ("parking lots", "parking lot"),
            ("storage tanks", "storage tank"),
            ("viaduct", "bridge"),
            ("overpass", "bridge"),
        ] {
            assert_eq!(k.element(a), Some(e), "{a}");
        }
        assert_eq!(k.element("spaceship"), None);
    }

    #[test]
    fn scene_labels() {
        let k = Knowledge::embedded();
        assert_eq!(k.scene_name("denseresidential"), "dense residential");
        assert_eq!(k.scene_name("Railway_Station"), "railway station");
        assert_eq!(k.scene_name("10_church"), "church");
        assert_eq!(k.scene_name("Golf_Course"), "golf course");
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let e = Knowledge::from_toml_str("  \n", "k.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("k.toml") && e.contains("empty"), "{e}");
        let e = Knowledge::from_toml_str("[[relation]]\nid = \"a\"\nphrases = [\"x\"]\n", "k.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("element"), "{e}");
        let two = "[[relation]]\nid = \"a\"\nphrases = [\"near\"]\n[[relation]]\nid = \"b\"\nphrases = [\"Near\"]\n[[element]]\nname = \"tree\"\n";
        let e = Knowledge::from_toml_str(two, "k.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Near") && e.contains("both"), "{e}");
        let typo = "[[relation]]\nid = \"a\"\nphrase = [\"near\"]\n[[element]]\nname = \"tree\"\n";
        let e = Knowledge::from_toml_str(typo, "k.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("phrase"), "{e}");
    }
}
