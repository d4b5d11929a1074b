//! Every library error that carries a cause (`#[source]`/`#[from]`) prints that cause once
//! under `strata`'s `error: {e:#}` (anyhow's alternate form: message, then `: cause` for each
//! link of the chain). A message that also interpolated `{source}` printed it twice.

use std::path::PathBuf;

const CAUSE: &str = "the disk caught fire";

fn io() -> std::io::Error {
    std::io::Error::other(CAUSE)
}

fn candle() -> candle_core::Error {
    candle_core::Error::Msg(CAUSE.into())
}

/// The message as `main` prints it, checked: the cause once, and `want` (the file or what
/// was being done) in the error's own message.
fn check<E: std::error::Error + Send + Sync + 'static>(name: &str, e: E, want: &str) {
    let own = e.to_string();
    let full = format!("{:#}", anyhow::Error::new(e));
    assert_eq!(
        full.matches(CAUSE).count(),
        1,
        "{name}: the cause appears {} times in {full:?}",
        full.matches(CAUSE).count()
    );
    assert!(
        !own.contains(CAUSE),
        "{name}: the message repeats its cause: {own:?}"
    );
    assert!(own.contains(want), "{name}: {own:?} does not name {want:?}");
}

#[test]
fn causes_print_once() {
    let p = || PathBuf::from("dir/file.bin");
    check(
        "CaptionError::Read",
        strata_caption::CaptionError::Read {
            path: p(),
            source: io(),
        },
        "dir/file.bin",
    );
    check(
        "CaptionError::Write",
        strata_caption::CaptionError::Write {
            path: p(),
            source: io(),
        },
        "dir/file.bin",
    );
    check(
        "RasterError::Io",
        strata_raster::error::RasterError::io(&p(), io()),
        "dir/file.bin",
    );
    check(
        "SynthError::Io",
        strata_synth::SynthError::Io {
            path: p(),
            what: "writing the mask",
            source: io(),
        },
        "writing the mask",
    );
    check(
        "ImageError::Io",
        strata_image::ImageError::Io {
            path: p(),
            what: "write the PNG",
            source: io(),
        },
        "write the PNG",
    );
    check(
        "SynthError::Image",
        strata_synth::SynthError::Image(strata_image::ImageError::Io {
            path: p(),
            what: "write the PNG",
            source: io(),
        }),
        "write the PNG",
    );
    check(
        "TrainError::Io",
        strata_train::TrainError::Io {
            path: p(),
            what: "reading",
            source: io(),
        },
        "dir/file.bin",
    );
    check(
        "TrainError::Candle",
        strata_train::TrainError::Candle {
            what: "building the UNet".into(),
            source: candle(),
        },
        "building the UNet",
    );
    check(
        "EvalError::Candle",
        strata_eval::EvalError::Candle(candle()),
        "model",
    );
    check(
        "FusionError::Write",
        strata_models::fusion::FusionError::Write {
            path: p(),
            source: io(),
        },
        "dir/file.bin",
    );
    check(
        "TokenizerError::Io",
        strata_models::tokenizer::TokenizerError::Io {
            path: p(),
            source: io(),
        },
        "dir/file.bin",
    );
    check(
        "ClipError::Io",
        strata_models::clip::ClipError::Io {
            path: p(),
            source: io(),
        },
        "dir/file.bin",
    );
    check(
        "LoadError::Build",
        strata_models::loading::LoadError::Build {
            path: p(),
            what: "UNet".into(),
            source: Box::new(candle()),
        },
        "building the UNet",
    );
    // a weights/config mismatch is the message itself (no separate source): once as well
    let full = format!(
        "{:#}",
        anyhow::Error::new(strata_models::clip::ClipError::Weights {
            path: p(),
            detail: candle(),
        })
    );
    assert_eq!(full.matches(CAUSE).count(), 1, "{full}");
    // wrapped once more, as `strata generate` sees a loader error
    check(
        "ModelLoadError::Tokenizer",
        strata_models::pipeline::ModelLoadError::Tokenizer(
            strata_models::tokenizer::TokenizerError::Io {
                path: p(),
                source: io(),
            },
        ),
        "dir/file.bin",
    );
}
