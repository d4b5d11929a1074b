//! Importers and parsers: Karpathy JSON, COCO JSON, metadata.jsonl and knowledge TOML on
//! arbitrary bytes must return an error or a value, never panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use strata_caption::dataset::parse_metadata;
use strata_caption::error::utf8_text;
use strata_caption::import::{parse_coco, parse_karpathy};
use strata_caption::Knowledge;

fuzz_target!(|data: &[u8]| {
    let p = Path::new("fuzz.json");
    let Ok(text) = utf8_text(p, data.to_vec()) else {
        return;
    };
    let _ = parse_karpathy(&text, p, Path::new("."));
    let _ = parse_coco(&text, p, Path::new("."));
    let _ = parse_metadata(&text, p);
    if let Ok(k) = Knowledge::from_toml_str(&text, "fuzz.toml") {
        let _ = strata_caption::analyze(&k, &text);
    }
});
