//! Inputs that crashed the weights reader, found by the `pth` fuzz target (fuzz/,
//! docs/fuzz.md) or made by hand after reviewing it: each must now give an error naming the
//! file and the fault, not a panic or gigabytes of memory.

use std::path::PathBuf;

use candle_core::Device;
use strata_eval::weights::read_tensors;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(name)
}

/// `(file, words the error must hold)`.
const CASES: &[(&str, &[&str])] = &[
    // legacy .pth whose second storage declares ~3.5e18 elements (the size overflowed)
    (
        "legacy_storage_count_overflow.pth",
        &["legacy .pth: storage", "declares", "more than the"],
    ),
    // legacy .pth whose pickle nests memoised lists in themselves: 382 bytes, 2^39 values
    // (made by scripts/fixtures/fuzz_hostile.py)
    (
        "legacy_memo_bomb.pth",
        &[
            "cannot parse the state dict pickle",
            "memo copies more than",
        ],
    ),
    // zip .pth (found by the fuzzer, its CRC damaged) whose data.pkl declares a 1.8 GB
    // string: candle allocated it before reading; the whole pickle is now read and checked
    // first
    (
        "zip_string_length_4g.pth",
        &["reading the zip .pth checkpoint failed", "checksum"],
    ),
    // the same with valid CRCs (made by scripts/fixtures/fuzz_hostile.py)
    (
        "zip_string_length_1g8.pth",
        &[
            "zip .pth: cannot parse archive/data.pkl",
            "truncated pickle",
        ],
    ),
];

#[test]
fn fuzz_found_weight_files_give_errors() {
    for (name, words) in CASES {
        let p = fixture(name);
        let e = read_tensors(&p, &Device::Cpu)
            .err()
            .unwrap_or_else(|| panic!("{name}: read as weights"))
            .to_string();
        assert!(
            e.contains(name),
            "{name}: error does not name the file: {e}"
        );
        for w in *words {
            assert!(e.contains(w), "{name}: error lacks {w:?}: {e}");
        }
    }
}
