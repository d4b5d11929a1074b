//! Sentence parsing: analysis, clause removal, corrections and the golden rule on arbitrary
//! text must not panic, and every span must lie on char boundaries of the input.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use strata_caption::correct::remove_vertical_clauses;
use strata_caption::{analyze, correct, select_golden, Fallback, HierarchicalCaption, Knowledge};

fn knowledge() -> &'static Knowledge {
    static K: OnceLock<Knowledge> = OnceLock::new();
    K.get_or_init(Knowledge::embedded)
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let k = knowledge();
    let a = analyze(k, s);
    for m in &a.relations {
        assert!(s.get(m.span.clone()).is_some());
    }
    for e in &a.elements {
        assert!(s.get(e.span.clone()).is_some());
    }
    let (t, _) = remove_vertical_clauses(k, s);
    let mut parts = s.splitn(3, '|');
    let mut c = HierarchicalCaption {
        scene: parts.next().unwrap_or("").to_string(),
        relation: parts.next().unwrap_or("").to_string(),
        elements: parts
            .next()
            .unwrap_or("")
            .split(',')
            .map(String::from)
            .collect(),
    };
    correct(k, &mut c);
    let _ = select_golden(
        k,
        s.lines().chain([t.as_str()]),
        Some(8),
        Fallback::StripVertical,
    );
});
