//! PyTorch `.pth` / `.pt` files through strata's readers: the weights reader of the metrics
//! (`strata_eval::weights::read_tensors`: zip checkpoints through candle's pickle reader, its
//! own parser of the legacy pre-1.6 stream, safetensors otherwise) and pickled
//! textual-inversion embeddings (`strata_models::embeddings::load_embedding` on a `.pt`).
//! Arbitrary bytes must give a value or an error, never a panic, an abort or an allocation
//! the file does not justify.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::Device;
use libfuzzer_sys::fuzz_target;

/// The file the readers open (they take paths); one per process, rewritten for each input.
fn file(data: &[u8]) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("temporary folder"));
    let p = dir.path().join("fuzz.pt");
    std::fs::write(&p, data).expect("write the input");
    p
}

fuzz_target!(|data: &[u8]| {
    let p = file(data);
    let dev = Device::Cpu;
    let _ = strata_eval::weights::read_tensors(&p, &dev);
    if data.starts_with(b"PK") {
        let _ = strata_models::embeddings::load_embedding(&p, None, &dev);
    }
});
