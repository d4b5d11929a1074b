//! Relation sentences: every triple is stated with one of the SRKC surface phrases shared
//! with `strata-caption` (see `docs/synth.md`).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::types::{Element, Relation, Triple};

/// The surface phrases the generator writes, per relation id.
pub const PHRASES: &[(&str, &[&str])] = &[
    (
        "surrounds",
        &["surrounded by", "surrounds", "surrounding", "around"],
    ),
    (
        "crosses",
        &["crosses", "runs through", "across", "cuts through"],
    ),
    ("along", &["along", "lined with", "runs alongside"]),
    (
        "on_both_sides_of",
        &["on both sides of", "on either side of"],
    ),
    (
        "in_the_middle_of",
        &["in the middle of", "at the centre of", "in the center of"],
    ),
    ("next_to", &["next to", "adjacent to", "beside", "close to"]),
    ("parallel_to", &["parallel to"]),
    ("between", &["between"]),
];

fn countable_many(e: Element) -> bool {
    matches!(
        e,
        Element::Tree | Element::House | Element::Building | Element::Car | Element::StorageTank
    )
}

fn mass(e: Element) -> bool {
    matches!(
        e,
        Element::Grass | Element::Farmland | Element::Water | Element::BareLand
    )
}

fn a(e: Element) -> String {
    if countable_many(e) {
        e.plural().to_string()
    } else if mass(e) {
        e.name().to_string()
    } else if e.name().starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {}", e.name())
    } else {
        format!("a {}", e.name())
    }
}

fn the(e: Element) -> String {
    if countable_many(e) {
        e.plural().to_string()
    } else {
        format!("the {}", e.name())
    }
}

fn finish(s: String) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => format!("{}{}.", f.to_uppercase(), c.as_str()),
        None => s,
    }
}

/// The sentence for `t` using phrase number `k` of its relation (wraps around).
pub fn sentence_with(t: &Triple, k: usize) -> String {
    let Ok((rel, s, o, o2)) = t.parse() else {
        return String::new();
    };
    let plural_s = countable_many(s);
    let body = match rel {
        Relation::Surrounds => match k % 4 {
            0 => format!("{} surrounded by {}", a(o), a(s)),
            1 => format!(
                "{} {} {}",
                a(s),
                if plural_s { "surround" } else { "surrounds" },
                the(o)
            ),
            2 => format!("{} surrounding {}", a(s), the(o)),
            _ => format!("{} around {}", a(s), the(o)),
        },
        Relation::Crosses => match k % 4 {
            0 => format!("{} crosses {}", a(s), the(o)),
            1 => format!("{} runs through {}", a(s), the(o)),
            2 => format!("{} across {}", a(s), the(o)),
            _ => format!("{} cuts through {}", a(s), the(o)),
        },
        Relation::Along => match k % 3 {
            0 => format!("{} along {}", a(s), the(o)),
            1 => format!("{} lined with {}", a(o), a(s)),
            _ => {
                if plural_s {
                    format!("a row of {} runs alongside {}", a(s), the(o))
                } else {
                    format!("{} runs alongside {}", a(s), the(o))
                }
            }
        },
        Relation::OnBothSidesOf => match k % 2 {
            0 => format!("{} on both sides of {}", a(s), the(o)),
            _ => format!("{} on either side of {}", a(s), the(o)),
        },
        Relation::InTheMiddleOf => match k % 3 {
            0 => format!("{} in the middle of {}", a(s), the(o)),
            1 => format!("{} at the centre of {}", a(s), the(o)),
            _ => format!("{} in the center of {}", a(s), the(o)),
        },
        Relation::NextTo => {
            let p = ["next to", "adjacent to", "beside", "close to"][k % 4];
            format!("{} {} {}", a(s), p, the(o))
        }
        Relation::ParallelTo => format!("{} parallel to {}", a(s), the(o)),
        Relation::Between => {
            let o2 = o2.unwrap_or(o);
            if o2 == o {
                format!("{} between two {}", a(s), o.plural())
            } else {
                format!("{} between {} and {}", a(s), the(o), the(o2))
            }
        }
    };
    finish(body)
}

/// Number of phrasings [`sentence_with`] knows for a relation.
pub fn phrasings(rel: Relation) -> usize {
    match rel {
        Relation::Surrounds | Relation::Crosses | Relation::NextTo => 4,
        Relation::Along | Relation::InTheMiddleOf => 3,
        Relation::OnBothSidesOf => 2,
        Relation::ParallelTo | Relation::Between => 1,
    }
}

/// A sentence for `t` with a phrasing chosen by `rng`.
pub fn sentence(t: &Triple, rng: &mut ChaCha8Rng) -> String {
    let n = Relation::parse(&t.relation).map(phrasings).unwrap_or(1);
    sentence_with(t, rng.gen_range(0..n))
}
