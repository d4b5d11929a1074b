//! The golden rule and each expert correction.

use strata_caption::correct::{
    add_relation_elements, check_elements, normalise_elements, remove_vertical_clauses,
};
use strata_caption::golden::Rejection;
use strata_caption::{
    correct, select_golden, CorrectionRule, Fallback, HierarchicalCaption, Knowledge, SelectionRule,
};

const FIVE: [&str; 5] = [
    "There are many buildings in the dense residential area.",
    "Some cars are parked under the trees next to the houses.",
    "Many houses are arranged in the area.",
    "A road goes through the residential area with houses on both sides of it.",
    "Several green trees are beside the houses.",
];

#[test]
fn golden_rule_takes_first_relation_without_vertical() {
    let k = Knowledge::embedded();
    let s = select_golden(&k, FIVE, None, Fallback::Skip).unwrap();
    assert_eq!(s.rule, SelectionRule::Golden);
    assert_eq!(s.index, Some(3));
    assert_eq!(s.text, FIVE[3]);
    assert_eq!(s.examined, 4);
    assert_eq!(
        s.rejected,
        vec![
            Rejection::NoRelation { index: 0 },
            Rejection::Vertical {
                index: 1,
                phrases: vec!["under".into()]
            },
            Rejection::NoRelation { index: 2 },
        ]
    );
}

#[test]
fn golden_rule_stream_is_lazy() {
    let k = Knowledge::embedded();
    let mut drawn = 0;
    let stream = (0..).map(|i| {
        drawn += 1;
        if i == 2 {
            "a pond next to a road".to_string()
        } else {
            "an image".to_string()
        }
    });
    let s = select_golden(&k, stream, Some(100), Fallback::Skip).unwrap();
    assert_eq!(s.index, Some(2));
    assert_eq!(drawn, 3);
}

#[test]
fn fallbacks() {
    let k = Knowledge::embedded();
    let none = [
        "A car is under the trees beside the road.",
        "An area.",
        "Trees are behind houses.",
    ];
    assert!(select_golden(&k, none, None, Fallback::Skip).is_none());
    let f = select_golden(&k, none, None, Fallback::First).unwrap();
    assert_eq!((f.index, f.rule), (Some(0), SelectionRule::FallbackFirst));
    let e = select_golden(&k, none, None, Fallback::Empty).unwrap();
    assert_eq!((e.index, e.text.as_str()), (None, ""));
    let m = select_golden(
        &k,
        [
            "An area.",
            "Trees are behind houses, next to a road, around a pond.",
        ],
        None,
        Fallback::MostRelations,
    )
    .unwrap();
    assert_eq!(m.index, Some(1));
    // strip-vertical: the first one whose relation survives removal of its vertical clause.
    let sv = select_golden(
        &k,
        [
            "Trees are behind houses.",
            "Cars are under trees, next to a road.",
        ],
        None,
        Fallback::StripVertical,
    )
    .unwrap();
    assert_eq!(
        (sv.index, sv.rule),
        (Some(1), SelectionRule::FallbackStripVertical)
    );
    // No relation survives anywhere: the first candidate without a vertical relation.
    let pl = select_golden(&k, none, None, Fallback::StripVertical).unwrap();
    assert_eq!((pl.index, pl.rule), (Some(1), SelectionRule::FallbackFirst));
    // max_candidates limits the draw.
    let lim = select_golden(&k, FIVE, Some(2), Fallback::First).unwrap();
    assert_eq!((lim.examined, lim.index), (2, Some(0)));
    // No candidates at all.
    let no = select_golden(&k, Vec::<String>::new(), None, Fallback::Skip).unwrap();
    assert_eq!(no.rule, SelectionRule::NoCandidates);
}

#[test]
fn vertical_clause_removed_and_logged() {
    let k = Knowledge::embedded();
    let (t, log) = remove_vertical_clauses(
        &k,
        "Some cars are parked under the trees, and a road runs next to the houses. A pond is beside a lawn.",
    );
    assert_eq!(
        t,
        "A road runs next to the houses. A pond is beside a lawn."
    );
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].rule, CorrectionRule::RemoveVerticalClause);
    assert_eq!(
        log[0].before.as_deref(),
        Some("Some cars are parked under the trees,")
    );
    assert!(log[0].detail.contains("\"under\""));

    let (t, _) = remove_vertical_clauses(
        &k,
        "A road runs next to the pond, with cars behind the trees.",
    );
    assert_eq!(t, "A road runs next to the pond.");
    let (t, log) =
        remove_vertical_clauses(&k, "Cars are under the trees. Houses are around a pond.");
    assert_eq!(t, "Houses are around a pond.");
    assert_eq!(log.len(), 1);
    // Exceptions stay, and text without vertical relations is untouched byte for byte.
    let keep = "A bridge over a river , houses  around.";
    assert_eq!(
        remove_vertical_clauses(&k, keep),
        (keep.to_string(), vec![])
    );
    // Clause words split too.
    let (t, _) = remove_vertical_clauses(&k, "Trees line the road while cars are under them.");
    assert_eq!(t, "Trees line the road.");
}

#[test]
fn element_names_normalised_and_deduplicated() {
    let k = Knowledge::embedded();
    let tags: Vec<String> = [
        "Cars",
        "green trees",
        "tree",
        "railway tracks",
        "Trees and grass",
        "ufo",
        " ",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (e, log) = normalise_elements(&k, &tags);
    assert_eq!(e, ["car", "tree", "railway", "grass", "ufo"]);
    let n = |r| log.iter().filter(|c| c.rule == r).count();
    assert_eq!(n(CorrectionRule::NormaliseElement), 4); // Cars, green trees, railway tracks, Trees and grass
    assert_eq!(n(CorrectionRule::DropDuplicateElement), 3); // tree, tree (from "Trees and grass"), empty
}

#[test]
fn relation_elements_added() {
    let k = Knowledge::embedded();
    let mut e = vec!["building".to_string()];
    let log = add_relation_elements(
        &k,
        "Buildings are next to a lake surrounded by trees.",
        &mut e,
    );
    assert_eq!(e, ["building", "pond", "tree"]);
    assert_eq!(log.len(), 2);
    assert!(log
        .iter()
        .all(|c| c.rule == CorrectionRule::AddRelationElement));
    assert_eq!(log[0].after.as_deref(), Some("pond"));
}

#[test]
fn implausible_elements_flagged_or_removed_per_knowledge_file() {
    let k = Knowledge::embedded();
    let mut e = vec!["house".to_string(), "storage tank".to_string()];
    let log = check_elements(&k, "dense residential", &mut e);
    assert_eq!(e, ["house", "storage tank"]);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].rule, CorrectionRule::FlagImplausibleElement);

    let toml = strata_caption::knowledge::EMBEDDED_TOML
        .replace(
            "implausible_elements = \"flag\"",
            "implausible_elements = \"remove\"",
        )
        .replace(
            "unknown_elements = \"keep\"",
            "unknown_elements = \"remove\"",
        );
    let k2 = Knowledge::from_toml_str(&toml, "strict.toml").unwrap();
    let mut e = vec![
        "house".to_string(),
        "storage tank".to_string(),
        "ufo".to_string(),
    ];
    let log = check_elements(&k2, "dense residential", &mut e);
    assert_eq!(e, ["house"]);
    let rules: Vec<_> = log.iter().map(|c| c.rule).collect();
    assert_eq!(
        rules,
        [
            CorrectionRule::RemoveImplausibleElement,
            CorrectionRule::RemoveUnknownElement
        ]
    );
}

#[test]
fn full_correction_pipeline_and_switches() {
    let k = Knowledge::embedded();
    let mut c = HierarchicalCaption {
        scene: "park".into(),
        relation: "A lake is surrounded by trees, with benches under the trees.".into(),
        elements: vec!["Trees".into(), "storage tanks".into()],
    };
    let log = correct(&k, &mut c);
    assert_eq!(c.relation, "A lake is surrounded by trees.");
    assert_eq!(c.elements, ["tree", "storage tank", "pond"]);
    let rules: Vec<_> = log.iter().map(|c| c.rule).collect();
    assert_eq!(
        rules,
        [
            CorrectionRule::RemoveVerticalClause,
            CorrectionRule::NormaliseElement,
            CorrectionRule::NormaliseElement,
            CorrectionRule::AddRelationElement,
            CorrectionRule::FlagImplausibleElement,
        ]
    );
    // Everything off: nothing changes, nothing logged.
    let toml = strata_caption::knowledge::EMBEDDED_TOML
        .replace(
            "remove_vertical_clauses = true",
            "remove_vertical_clauses = false",
        )
        .replace("normalise_elements = true", "normalise_elements = false")
        .replace(
            "add_relation_elements = true",
            "add_relation_elements = false",
        )
        .replace(
            "implausible_elements = \"flag\"",
            "implausible_elements = \"ignore\"",
        );
    let off = Knowledge::from_toml_str(&toml, "off.toml").unwrap();
    let mut c2 = HierarchicalCaption {
        scene: "park".into(),
        relation: "A lake is surrounded by trees, with benches under the trees.".into(),
        elements: vec!["Trees".into(), "storage tanks".into()],
    };
    let before = c2.clone();
    assert!(correct(&off, &mut c2).is_empty());
    assert_eq!(c2, before);
}
