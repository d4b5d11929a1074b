//! The paper's "golden rule": from a stream of candidate sentences take the first that holds
//! an SRKC relation and no vertical relation.

use serde::{Deserialize, Serialize};

use crate::correct::remove_vertical_clauses;
use crate::extract::analyze;
use crate::knowledge::Knowledge;
pub use crate::record::{Rejection, SelectionRule};

/// What to do when no candidate passes the golden rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Fallback {
    /// Take the first candidate that still holds a relation once its vertical clauses are
    /// removed (the correction stage then removes them, logged); else the first candidate
    /// without a vertical relation; else the first candidate.
    #[default]
    StripVertical,
    /// Take the first candidate as it is.
    First,
    /// Take the candidate with the most SRKC relations (the earliest on ties).
    MostRelations,
    /// Leave the relation empty.
    Empty,
    /// Select nothing: the item is reported as a problem and left out.
    Skip,
}

impl std::str::FromStr for Fallback {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "strip-vertical" => Fallback::StripVertical,
            "first" => Fallback::First,
            "most-relations" => Fallback::MostRelations,
            "empty" => Fallback::Empty,
            "skip" => Fallback::Skip,
            _ => {
                return Err(format!(
                "unknown fallback {s:?}: use strip-vertical, first, most-relations, empty or skip"
            ))
            }
        })
    }
}

/// The outcome of the golden rule over one candidate stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// The chosen sentence, as the captioner wrote it (corrections come later).
    pub text: String,
    /// Its position in the stream; `None` for an empty relation.
    pub index: Option<usize>,
    pub rule: SelectionRule,
    /// How many candidates were drawn from the stream.
    pub examined: usize,
    pub rejected: Vec<Rejection>,
}

/// Draws candidates until one passes the golden rule (at most `max_candidates` when given)
/// and applies `fallback` when none does. Returns `None` only for [`Fallback::Skip`].
///
/// The stream is consumed lazily: a sampling captioner stops being asked once a sentence
/// passes.
pub fn select_golden<I, S>(
    k: &Knowledge,
    candidates: I,
    max_candidates: Option<usize>,
    fallback: Fallback,
) -> Option<Selection>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut seen: Vec<String> = Vec::new();
    let mut rejected = Vec::new();
    // `take` stops before pulling the candidate past the cap: a sampling captioner is
    // never asked for a sentence that could not be used.
    let cap = max_candidates.unwrap_or(usize::MAX);
    for (index, c) in candidates.into_iter().take(cap).enumerate() {
        let text: String = c.into();
        let a = analyze(k, &text);
        if a.passes_golden_rule() {
            return Some(Selection {
                text,
                index: Some(index),
                rule: SelectionRule::Golden,
                examined: index + 1,
                rejected,
            });
        }
        rejected.push(if a.vertical.is_empty() {
            Rejection::NoRelation { index }
        } else {
            Rejection::Vertical {
                index,
                phrases: a.vertical.iter().map(|v| v.phrase.to_lowercase()).collect(),
            }
        });
        seen.push(text);
    }
    let examined = seen.len();
    let pick =
        |i: usize, rule: SelectionRule, seen: &[String], rejected: Vec<Rejection>| Selection {
            text: seen[i].clone(),
            index: Some(i),
            rule,
            examined,
            rejected,
        };
    if seen.is_empty() {
        return Some(Selection {
            text: String::new(),
            index: None,
            rule: SelectionRule::NoCandidates,
            examined,
            rejected,
        });
    }
    match fallback {
        Fallback::Skip => None,
        Fallback::Empty => Some(Selection {
            text: String::new(),
            index: None,
            rule: SelectionRule::FallbackEmpty,
            examined,
            rejected,
        }),
        Fallback::First => Some(pick(0, SelectionRule::FallbackFirst, &seen, rejected)),
        Fallback::MostRelations => {
            let mut best = 0;
            let mut best_n = 0;
            for (i, s) in seen.iter().enumerate() {
                let n = analyze(k, s).relations.len();
                if n > best_n {
                    best = i;
                    best_n = n;
                }
            }
            Some(pick(
                best,
                SelectionRule::FallbackMostRelations,
                &seen,
                rejected,
            ))
        }
        Fallback::StripVertical => {
            let found = seen.iter().position(|s| {
                let (stripped, _) = remove_vertical_clauses(k, s);
                analyze(k, &stripped).passes_golden_rule()
            });
            let plain = || seen.iter().position(|s| analyze(k, s).vertical.is_empty());
            Some(match (found, plain()) {
                (Some(i), _) => pick(i, SelectionRule::FallbackStripVertical, &seen, rejected),
                (None, Some(i)) => pick(i, SelectionRule::FallbackFirst, &seen, rejected),
                (None, None) => pick(0, SelectionRule::FallbackFirst, &seen, rejected),
            })
        }
    }
}
