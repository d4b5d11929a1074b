//! Expert corrections. Each one is driven by the knowledge file and logs what it changed,
//! so the provenance of a caption explains every edit.

use crate::caption::HierarchicalCaption;
use crate::extract::{analyze, clause_ranges, find_elements};
use crate::knowledge::{ElementAction, Knowledge};
pub use crate::record::{Correction, CorrectionRule};
use crate::text::{phrase_words, split_sentences};

/// Runs every correction the knowledge file enables, in the documented order (vertical
/// clauses, element names, relation elements, implausible elements), and returns the log.
pub fn correct(k: &Knowledge, caption: &mut HierarchicalCaption) -> Vec<Correction> {
    let rules = &k.corrections;
    let mut log = Vec::new();
    if rules.remove_vertical_clauses {
        let (text, l) = remove_vertical_clauses(k, &caption.relation);
        caption.relation = text;
        log.extend(l);
    }
    if rules.normalise_elements {
        let (e, l) = normalise_elements(k, &caption.elements);
        caption.elements = e;
        log.extend(l);
    }
    if rules.add_relation_elements {
        log.extend(add_relation_elements(
            k,
            &caption.relation,
            &mut caption.elements,
        ));
    }
    log.extend(check_elements(k, &caption.scene, &mut caption.elements));
    log
}

/// Removes every clause that states a vertical relation (clauses as defined by
/// `[clauses]`), drops sentences left without content, and tidies the rest (leading
/// joining words, dangling punctuation, capital letter, final mark).
pub fn remove_vertical_clauses(k: &Knowledge, text: &str) -> (String, Vec<Correction>) {
    let mut log = Vec::new();
    let mut sentences_out: Vec<String> = Vec::new();
    let mut changed = false;
    for sentence in split_sentences(text) {
        let a = analyze(k, sentence);
        if a.vertical.is_empty() {
            sentences_out.push(sentence.to_string());
            continue;
        }
        changed = true;
        let mut kept = String::new();
        for r in clause_ranges(k, sentence) {
            let clause = &sentence[r.clone()];
            let hit: Vec<&str> = a
                .vertical
                .iter()
                .filter(|v| r.contains(&v.span.start))
                .map(|v| v.phrase.as_str())
                .collect();
            if hit.is_empty() {
                kept.push_str(clause);
            } else {
                log.push(Correction {
                    rule: CorrectionRule::RemoveVerticalClause,
                    detail: format!(
                        "vertical relation {} cannot be seen from a nadir view",
                        hit.iter()
                            .map(|h| format!("{:?}", h.to_lowercase()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    before: Some(clause.trim().to_string()),
                    after: None,
                });
            }
        }
        let end_mark = sentence
            .chars()
            .last()
            .filter(|c| matches!(c, '.' | '!' | '?'));
        if let Some(t) = tidy(k, &kept, end_mark) {
            sentences_out.push(t);
        }
    }
    if !changed {
        return (text.to_string(), log);
    }
    (sentences_out.join(" "), log)
}

/// Trims joining words and punctuation left at the edges of a shortened sentence.
fn tidy(k: &Knowledge, s: &str, end_mark: Option<char>) -> Option<String> {
    let mut s = s.trim();
    loop {
        let before = s;
        s = s
            .trim_start_matches(|c: char| !c.is_alphanumeric())
            .trim_start();
        for w in k
            .clause_words
            .iter()
            .map(|w| w.as_str())
            .chain(["and", "or", "with"])
        {
            let w = phrase_words(w).join(" ");
            if s.get(..w.len()).is_some_and(|p| p.eq_ignore_ascii_case(&w))
                && s[w.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| !c.is_alphanumeric())
            {
                s = s[w.len()..].trim_start();
                break;
            }
        }
        if s == before {
            break;
        }
    }
    let s = s.trim_end_matches(|c: char| !c.is_alphanumeric());
    let s = s.trim_end();
    let s = s
        .strip_suffix(" and")
        .or_else(|| s.strip_suffix(" while"))
        .unwrap_or(s)
        .trim_end_matches(|c: char| !c.is_alphanumeric());
    if !s.chars().any(|c| c.is_alphanumeric()) {
        return None;
    }
    let mut out = String::new();
    let mut chars = s.chars();
    if let Some(first) = chars.next() {
        out.extend(first.to_uppercase());
        out.push_str(chars.as_str());
    }
    if let Some(m) = end_mark {
        out.push(m);
    }
    Some(out)
}

/// Rewrites tags to lexicon names ("Cars" → `car`, "green trees" → `tree`, "trees and
/// grass" → `tree`, `grass`) and drops repeats. Tags naming no lexicon element are kept as
/// written (lower case); [`check_elements`] deals with them.
pub fn normalise_elements(k: &Knowledge, tags: &[String]) -> (Vec<String>, Vec<Correction>) {
    let mut out: Vec<String> = Vec::new();
    let mut log = Vec::new();
    for tag in tags {
        let names: Vec<String> = match k.element(tag) {
            Some(e) => vec![e.to_string()],
            None => {
                let found = analyze(k, tag).element_names();
                if found.is_empty() {
                    let t = phrase_words(tag).join(" ");
                    if t.is_empty() {
                        log.push(Correction {
                            rule: CorrectionRule::DropDuplicateElement,
                            detail: "an empty tag was dropped".into(),
                            before: Some(tag.clone()),
                            after: None,
                        });
                        continue;
                    }
                    vec![t]
                } else {
                    found
                }
            }
        };
        let joined = names.join(", ");
        if joined != *tag {
            log.push(Correction {
                rule: CorrectionRule::NormaliseElement,
                detail: "tag rewritten to the lexicon name".into(),
                before: Some(tag.clone()),
                after: Some(joined),
            });
        }
        for n in names {
            if out.contains(&n) {
                log.push(Correction {
                    rule: CorrectionRule::DropDuplicateElement,
                    detail: format!("{n:?} is already tagged"),
                    before: Some(n),
                    after: None,
                });
            } else {
                out.push(n);
            }
        }
    }
    (out, log)
}

/// Adds the elements the relation text names that the tags lack, in order of mention.
pub fn add_relation_elements(
    k: &Knowledge,
    relation: &str,
    elements: &mut Vec<String>,
) -> Vec<Correction> {
    let mut log = Vec::new();
    for m in find_elements(k, relation) {
        if !elements.contains(&m.element) {
            log.push(Correction {
                rule: CorrectionRule::AddRelationElement,
                detail: format!("the relation sentence names {:?}", m.surface),
                before: None,
                after: Some(m.element.clone()),
            });
            elements.push(m.element);
        }
    }
    log
}

/// Applies `[corrections] implausible_elements` (elements the scene concept lists as
/// implausible) and `unknown_elements` (tags outside the lexicon).
pub fn check_elements(k: &Knowledge, scene: &str, elements: &mut Vec<String>) -> Vec<Correction> {
    let mut log = Vec::new();
    let scene_def = k.scene(scene);
    let implausible = k.corrections.implausible_elements;
    let unknown = k.corrections.unknown_elements;
    elements.retain(|e| {
        if !k.is_element(e) {
            return match unknown {
                ElementAction::Keep | ElementAction::Ignore => true,
                ElementAction::Flag => {
                    log.push(Correction {
                        rule: CorrectionRule::FlagUnknownElement,
                        detail: format!("{e:?} is not in the element lexicon"),
                        before: Some(e.clone()),
                        after: Some(e.clone()),
                    });
                    true
                }
                ElementAction::Remove => {
                    log.push(Correction {
                        rule: CorrectionRule::RemoveUnknownElement,
                        detail: format!("{e:?} is not in the element lexicon"),
                        before: Some(e.clone()),
                        after: None,
                    });
                    false
                }
            };
        }
        let Some(s) = scene_def else { return true };
        if !s.implausible.contains(e) {
            return true;
        }
        let detail = format!("{e:?} is implausible in a {:?} scene", s.name);
        match implausible {
            ElementAction::Keep | ElementAction::Ignore => true,
            ElementAction::Flag => {
                log.push(Correction {
                    rule: CorrectionRule::FlagImplausibleElement,
                    detail,
                    before: Some(e.clone()),
                    after: Some(e.clone()),
                });
                true
            }
            ElementAction::Remove => {
                log.push(Correction {
                    rule: CorrectionRule::RemoveImplausibleElement,
                    detail,
                    before: Some(e.clone()),
                    after: None,
                });
                false
            }
        }
    });
    log
}
