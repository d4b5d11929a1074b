//! Textual-inversion embeddings and text-encoder LoRA against transformers / peft (fixture
//! from scripts/fixtures/text_embeddings_lora.py): A1111 safetensors and .pt embeddings,
//! kohya `lora_te_*` and diffusers/PEFT `text_encoder.*` LoRA files.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use strata_models::clip::{load_text_encoder, ClipTextTransformer};
use strata_models::embeddings::{self, install_embeddings, load_embedding};
use strata_models::lora_file::{self, LoraLayout};
use strata_models::segments::SegmentTexts;
use strata_models::text_side::{caption_encodings, CaptionInput, EmbeddingSpec};
use strata_models::tokenizer::ClipTokenizer;
use strata_models::unet::{UNet2DConditionModel, UNetConfig};

const TOL: f32 = 1e-5;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/text/te_additions")
}

fn expected() -> (HashMap<String, Tensor>, Vec<String>) {
    let (t, meta) =
        strata_models::safetensors_io::load(&dir().join("expected.safetensors"), &Device::Cpu)
            .unwrap();
    let prompts: Vec<String> = serde_json::from_str(&meta["prompts"]).unwrap();
    (t, prompts)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn model() -> (ClipTextTransformer, ClipTokenizer) {
    let text = load_text_encoder(&dir().join("text_encoder"), DType::F32, &Device::Cpu).unwrap();
    let tok = ClipTokenizer::load(&dir().join("tokenizer")).unwrap();
    (text, tok)
}

fn tiny_unet() -> UNet2DConditionModel {
    UNet2DConditionModel::new(
        UNetConfig::tiny(),
        VarBuilder::zeros(DType::F32, &Device::Cpu),
    )
    .unwrap()
}

#[test]
fn a1111_embeddings_match_transformers_inputs_embeds() {
    let (exp, prompts) = expected();
    let (mut text, tok) = model();
    let dev = Device::Cpu;
    let roof = load_embedding(&dir().join("rs-roof.safetensors"), None, &dev).unwrap();
    let pool = load_embedding(&dir().join("rs-pool.pt"), None, &dev).unwrap();
    // A1111 files: the placeholder is the file stem
    assert_eq!((roof.token.as_str(), roof.num_vectors()), ("rs-roof", 2));
    assert_eq!((pool.token.as_str(), pool.num_vectors()), ("rs-pool", 1));
    let ph = install_embeddings(&mut text, &[roof, pool]).unwrap();
    let want_ids: Vec<Vec<i64>> = exp["ti_input_ids"].to_vec2().unwrap();
    let mut rows = vec![];
    for (p, want) in prompts.iter().zip(&want_ids) {
        let ids = ph.encode(&tok, p).ids;
        let want: Vec<u32> = want.iter().map(|&i| i as u32).collect();
        assert_eq!(ids, want, "ids of {p:?}");
        rows.push(embeddings::encode_flat(&text, &tok, &ph, &[p.as_str()]).unwrap());
    }
    let h = Tensor::cat(&rows, 0).unwrap();
    let d = max_abs_diff(&h, &exp["ti_last_hidden_state"]);
    eprintln!("TI vs transformers inputs_embeds: max |diff| = {d:.2e}");
    assert!(d < TOL, "max |diff| = {d}");

    // the same prompts as caption segments (scene, relation, elements) and as --prompt
    let caption = SegmentTexts::new(
        &prompts[0],
        &prompts[1],
        &prompts[2]
            .split(',')
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    );
    let (c, u) = caption_encodings(&text, &tok, &ph, &CaptionInput::Segments(caption)).unwrap();
    assert_eq!(c.dims(), &[1, 3, 77, 32]);
    assert_eq!(u.dims(), &[1, 3, 77, 32]);
    let want = exp["ti_last_hidden_state"].narrow(0, 0, 3).unwrap();
    let d = max_abs_diff(&c.squeeze(0).unwrap(), &want);
    assert!(d < TOL, "segments: max |diff| = {d}");
    let (c, _) =
        caption_encodings(&text, &tok, &ph, &CaptionInput::Flat(prompts[3].clone())).unwrap();
    let d = max_abs_diff(
        &c.squeeze(0).unwrap(),
        &exp["ti_last_hidden_state"].get(3).unwrap(),
    );
    assert!(d < TOL, "prompt: max |diff| = {d}");
}

#[test]
fn placeholder_override_recorded_token_and_errors() {
    let (mut text, tok) = model();
    let dev = Device::Cpu;
    let tmp = tempfile::tempdir().unwrap();
    // FILE=TOKEN overrides the stem
    let spec =
        EmbeddingSpec::parse(&format!("{}=<pool>", dir().join("rs-pool.pt").display())).unwrap();
    assert_eq!(spec.token.as_deref(), Some("<pool>"));
    let pool = load_embedding(&spec.file, spec.token.as_deref(), &dev).unwrap();
    assert_eq!(pool.token, "<pool>");
    // strata's own TI files: the placeholder recorded in the header wins over the stem
    let own = tmp.path().join("whatever.safetensors");
    let v = Tensor::ones((3, 32), DType::F32, &dev).unwrap();
    strata_models::safetensors_io::save(
        &own,
        &HashMap::from([("emb_params".to_string(), v)]),
        Some(HashMap::from([(
            embeddings::PLACEHOLDER_METADATA.to_string(),
            "<rs-own>".to_string(),
        )])),
    )
    .unwrap();
    let e = load_embedding(&own, None, &dev).unwrap();
    assert_eq!((e.token.as_str(), e.num_vectors()), ("<rs-own>", 3));
    let ph = install_embeddings(&mut text, &[pool, e]).unwrap();
    let n = text.config.vocab_size as u32;
    assert_eq!(
        ph.entries,
        vec![
            ("<pool>".to_string(), n, 1),
            ("<rs-own>".to_string(), n + 1, 3)
        ]
    );
    let ids = ph.encode(&tok, "a <rs-own> by the<pool>").ids;
    assert_eq!(ids.iter().filter(|&&i| i >= n).count(), 4);

    // wrong width: the file, the width found and the width expected
    let wide = tmp.path().join("sd2-style.safetensors");
    strata_models::safetensors_io::save(
        &wide,
        &HashMap::from([(
            "emb_params".to_string(),
            Tensor::zeros((2, 48), DType::F32, &dev).unwrap(),
        )]),
        None,
    )
    .unwrap();
    let e = load_embedding(&wide, None, &dev).unwrap();
    let (mut text2, _) = model();
    let msg = install_embeddings(&mut text2, &[e])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("sd2-style.safetensors") && msg.contains("48") && msg.contains("32"),
        "{msg}"
    );
    // not an embedding
    let junk = tmp.path().join("junk.safetensors");
    strata_models::safetensors_io::save(
        &junk,
        &HashMap::from([
            ("a".to_string(), Tensor::zeros(2, DType::F32, &dev).unwrap()),
            ("b".to_string(), Tensor::zeros(2, DType::F32, &dev).unwrap()),
        ]),
        None,
    )
    .unwrap();
    let msg = load_embedding(&junk, None, &dev).unwrap_err().to_string();
    assert!(
        msg.contains("junk.safetensors") && msg.contains("emb_params"),
        "{msg}"
    );
    let msg = load_embedding(&tmp.path().join("missing.pt"), None, &dev)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing.pt"), "{msg}");
}

#[test]
fn kohya_text_encoder_lora_matches_torch() {
    let (exp, _) = expected();
    let (mut text, _) = model();
    let ids = exp["lora_input_ids"].to_dtype(DType::U32).unwrap();
    let base = text.forward(&ids).unwrap();
    let d = max_abs_diff(&base, &exp["base_last_hidden_state"]);
    assert!(d < TOL, "base: max |diff| = {d}");
    let unet = tiny_unet();
    let file = dir().join("lora_te_kohya.safetensors");
    let imp = lora_file::import_with_text(&unet, Some(&text), &file, &Device::Cpu).unwrap();
    assert_eq!(imp.layout, LoraLayout::Kohya);
    assert_eq!((imp.adapters.len(), imp.text_adapters.len()), (0, 12));
    lora_file::install_text(&mut text, &imp, 0.8).unwrap();
    let h = text.forward(&ids).unwrap();
    let d = max_abs_diff(&h, &exp["kohya_last_hidden_state"]);
    eprintln!("kohya text-encoder LoRA vs torch: max |diff| = {d:.2e}");
    assert!(d < TOL, "max |diff| = {d}");
    // the UNet-only import refuses the same file, naming the keys
    let msg = lora_file::import(&unet, &file, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("lora_te_text_model_encoder_layers_0"), "{msg}");
}

#[test]
fn peft_text_encoder_lora_matches_peft() {
    let (exp, _) = expected();
    let (mut text, _) = model();
    let ids = exp["lora_input_ids"].to_dtype(DType::U32).unwrap();
    let unet = tiny_unet();
    let file = dir().join("lora_te_peft.safetensors");
    let imp = lora_file::import_with_text(&unet, Some(&text), &file, &Device::Cpu).unwrap();
    assert_eq!(imp.layout, LoraLayout::Peft);
    assert_eq!(imp.text_adapters.len(), 12);
    lora_file::install_text(&mut text, &imp, 1.0).unwrap();
    let h = text.forward(&ids).unwrap();
    let d = max_abs_diff(&h, &exp["peft_last_hidden_state"]);
    eprintln!("PEFT text-encoder LoRA vs peft: max |diff| = {d:.2e}");
    assert!(d < TOL, "max |diff| = {d}");
}

#[test]
fn text_encoder_lora_round_trips_through_a_kohya_file() {
    // export (lora_te_* keys) → import → same encodings
    let (exp, _) = expected();
    let (mut text, _) = model();
    let unet = tiny_unet();
    let imp = lora_file::import_with_text(
        &unet,
        Some(&text),
        &dir().join("lora_te_peft.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    lora_file::install_text(&mut text, &imp, 1.0).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("te.safetensors");
    let n = lora_file::export_kohya_with_text(&unet, Some(&text), &out, HashMap::new()).unwrap();
    assert_eq!(n, 12);
    let (t, _) = strata_models::safetensors_io::load(&out, &Device::Cpu).unwrap();
    assert!(t.contains_key("lora_te_text_model_encoder_layers_1_mlp_fc2.lora_up.weight"));
    let (mut fresh, _) = model();
    let imp = lora_file::import_with_text(&unet, Some(&fresh), &out, &Device::Cpu).unwrap();
    lora_file::install_text(&mut fresh, &imp, 1.0).unwrap();
    let ids = exp["lora_input_ids"].to_dtype(DType::U32).unwrap();
    let d = max_abs_diff(
        &fresh.forward(&ids).unwrap(),
        &exp["peft_last_hidden_state"],
    );
    assert!(d < TOL, "max |diff| = {d}");
}
