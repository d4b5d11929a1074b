//! Relation extraction on sentences in the style of RSICD / UCM-captions / Sydney-captions
//! (written for these tests from the datasets' public descriptions, not copied).

use strata_caption::{analyze, extract_relations, find_elements, find_vertical, Knowledge};

type Triple = (String, Option<String>, Option<String>);

fn rel(k: &Knowledge, s: &str) -> Vec<Triple> {
    extract_relations(k, s)
        .into_iter()
        .map(|m| {
            (
                m.relation,
                m.subject.map(|e| e.element),
                m.object.map(|e| e.element),
            )
        })
        .collect()
}

fn t(r: &str, s: Option<&str>, o: Option<&str>) -> Triple {
    (r.to_string(), s.map(String::from), o.map(String::from))
}

#[test]
fn rsicd_style_sentences() {
    let k = Knowledge::embedded();
    let cases: &[(&str, Vec<Triple>)] = &[
        (
            "Many green trees are around a playground.",
            vec![t("surrounds", Some("tree"), Some("playground"))],
        ),
        (
            "A bridge is over a river with many cars on it.",
            vec![t("crosses", Some("bridge"), Some("river"))],
        ),
        (
            "Some buildings are near a parking lot with many cars.",
            vec![t("next_to", Some("building"), Some("parking lot"))],
        ),
        (
            "Several white storage tanks are next to a factory.",
            vec![t("next_to", Some("storage tank"), Some("factory"))],
        ),
        (
            "A church with a green lawn is surrounded by houses.",
            vec![t("surrounds", Some("lawn"), Some("house"))],
        ),
        (
            "A road runs through the dense residential area lined with trees.",
            vec![
                t("crosses", Some("road"), None),
                t("along", Some("road"), Some("tree")),
            ],
        ),
        (
            "Two railway tracks run parallel to a platform.",
            vec![t("parallel_to", Some("railway"), Some("platform"))],
        ),
        (
            "A fountain is in the middle of the square.",
            vec![t("in_the_middle_of", Some("fountain"), Some("plaza"))],
        ),
        (
            "Trees are planted on both sides of the road.",
            vec![t("on_both_sides_of", Some("tree"), Some("road"))],
        ),
        (
            "A swimming pool lies between two hotels and a beach.",
            vec![t("between", Some("swimming pool"), Some("hotel"))],
        ),
        (
            "Green meadows surround the lake in the park.",
            vec![t("surrounds", Some("grass"), Some("pond"))],
        ),
        (
            "A running track is adjacent to a basketball court, beside the school building.",
            vec![
                t("next_to", Some("running track"), Some("basketball court")),
                t("next_to", None, Some("school")),
            ],
        ),
    ];
    for (s, want) in cases {
        assert_eq!(&rel(&k, s), want, "sentence: {s}");
    }
}

#[test]
fn between_has_two_objects() {
    let k = Knowledge::embedded();
    let m = extract_relations(&k, "A road lies between the farmland and the river.");
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].relation, "between");
    assert_eq!(m[0].object.as_ref().unwrap().element, "farmland");
    assert_eq!(m[0].object2.as_ref().unwrap().element, "river");
}

#[test]
fn spans_and_passive_roles() {
    let k = Knowledge::embedded();
    let s = "A small pond is Surrounded By tall trees.";
    let m = &extract_relations(&k, s)[0];
    assert_eq!(&s[m.span.clone()], "Surrounded By");
    assert_eq!(m.phrase, "Surrounded By");
    assert!(m.passive);
    assert_eq!(m.agent().unwrap().element, "tree");
    assert_eq!(m.patient().unwrap().element, "pond");
    let e = m.subject.as_ref().unwrap();
    assert_eq!(&s[e.span.clone()], "pond");
}

#[test]
fn all_contract_phrases_are_recognised() {
    let k = Knowledge::embedded();
    let phrases = [
        (
            "surrounds",
            ["surrounded by", "surrounds", "surrounding", "around"].as_slice(),
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
    ];
    for (id, list) in phrases {
        for p in list {
            let s = format!("the road {p} the river");
            let m = extract_relations(&k, &s);
            assert_eq!(m.len(), 1, "{s}");
            assert_eq!(m[0].relation, id, "{s}");
            assert_eq!(m[0].subject.as_ref().unwrap().element, "road", "{s}");
            assert_eq!(m[0].object.as_ref().unwrap().element, "river", "{s}");
        }
    }
    let m = extract_relations(&k, "a house between the road and the pond");
    assert_eq!(m[0].relation, "between");
}

#[test]
fn vertical_relations_and_exceptions() {
    let k = Knowledge::embedded();
    for s in [
        "Some cars are parked under the trees.",
        "A car is behind the building.",
        "A swimming pool is in front of the hotel.",
        "Solar panels are on top of the factory.",
        "A plane flies above the houses.",
        "The road beneath the trees is narrow.",
    ] {
        let a = analyze(&k, s);
        assert_eq!(a.vertical.len(), 1, "{s}");
        assert!(!a.passes_golden_rule(), "{s}");
    }
    // A bridge over a river, a viaduct above a road: real top-down relations.
    for s in [
        "A bridge is over a river.",
        "A long viaduct above the railway.",
    ] {
        let a = analyze(&k, s);
        assert!(a.vertical.is_empty(), "{s}");
        assert_eq!(a.relations.len(), 1, "{s}");
        assert_eq!(a.relations[0].relation, "crosses");
        assert!(a.relations[0].via_exception);
    }
    // ...but a car over a river is still vertical.
    assert_eq!(find_vertical(&k, "a car over the river").len(), 1);
    // a river under a bridge: the bridge crosses it (passive exception).
    let a = analyze(&k, "The river flows under a bridge.");
    assert!(a.vertical.is_empty());
    assert!(a.relations[0].passive);
    assert_eq!(a.relations[0].agent().unwrap().element, "bridge");
}

#[test]
fn no_relation_in_plain_descriptions() {
    let k = Knowledge::embedded();
    for s in [
        "Many buildings and green trees are in a dense residential area.",
        "It is a piece of farmland.",
        "Lots of cars are parked in the parking lot.",
        "",
        "...",
    ] {
        assert!(extract_relations(&k, s).is_empty(), "{s}");
    }
}

#[test]
fn elements_with_aliases_in_order() {
    let k = Knowledge::embedded();
    let e: Vec<String> = find_elements(
        &k,
        "Cars on the highway near a lake, rail tracks and a car park.",
    )
    .into_iter()
    .map(|m| m.element)
    .collect();
    assert_eq!(e, ["car", "road", "pond", "railway", "parking lot"]);
}

#[test]
fn relations_do_not_cross_clause_marks() {
    let k = Knowledge::embedded();
    let m = extract_relations(&k, "There is a pond; around it are many houses.");
    assert_eq!(m.len(), 1);
    assert!(m[0].subject.is_none(), "{m:?}");
    assert_eq!(m[0].object.as_ref().unwrap().element, "house");
}

#[test]
fn user_knowledge_file_changes_the_behaviour() {
    let toml = r#"
name = "tiny"
[[relation]]
id = "hugs"
phrases = ["hugs"]
[vertical]
phrases = ["under"]
[[element]]
name = "tree"
aliases = ["shrubbery"]
[[element]]
name = "road"
"#;
    let k = Knowledge::from_toml_str(toml, "tiny.toml").unwrap();
    let m = extract_relations(&k, "Shrubbery hugs the roads next to the river");
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].relation, "hugs");
    assert_eq!(m[0].subject.as_ref().unwrap().element, "tree");
    assert_eq!(m[0].object.as_ref().unwrap().element, "road");
}

#[test]
fn ucm_and_sydney_style_sentences() {
    let k = Knowledge::embedded();
    let cases: &[(&str, &str, Option<&str>, Option<&str>)] = &[
        (
            "A river runs through the city with many buildings on both sides.",
            "crosses",
            Some("river"),
            None,
        ),
        (
            "Two parallel freeways with some cars on them.",
            "parallel_to",
            None,
            Some("road"),
        ),
        (
            "A tennis court is surrounded by trees and houses.",
            "surrounds",
            Some("tennis court"),
            Some("tree"),
        ),
        (
            "Lots of boats are in the harbour next to the wharf buildings.",
            "next_to",
            Some("water"),
            Some("building"),
        ),
        (
            "A golf course with sand bunkers lies beside a stream.",
            "next_to",
            Some("beach"),
            Some("river"),
        ),
        (
            "An overpass crosses the highway near a residential area.",
            "crosses",
            Some("bridge"),
            Some("road"),
        ),
    ];
    for (s, id, subj, obj) in cases {
        let m = extract_relations(&k, s);
        let r = m
            .iter()
            .find(|m| m.relation == *id)
            .unwrap_or_else(|| panic!("{s}: no {id} in {m:?}"));
        assert_eq!(r.subject.as_ref().map(|e| e.element.as_str()), *subj, "{s}");
        assert_eq!(r.object.as_ref().map(|e| e.element.as_str()), *obj, "{s}");
    }
}
