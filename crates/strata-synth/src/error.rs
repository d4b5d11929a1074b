use std::path::PathBuf;

/// Errors of the generator, the checker and the dataset writer.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("unknown scene class {name:?} (field `classes`): use one of {known}")]
    UnknownSceneClass { name: String, known: String },
    #[error("unknown element {name:?} in relation triple field `{field}`: use a canonical element name such as \"tree\" or \"parking lot\" (see classes.json)")]
    UnknownElement { name: String, field: &'static str },
    #[error("unknown relation id {name:?} (field `relation`): use one of {known}")]
    UnknownRelation { name: String, known: String },
    #[error("relation `between` needs a second object (field `object2`)")]
    MissingObject2,
    #[error(
        "mask is {got} bytes but {width}x{height} needs {want}: pass the mask of the same image"
    )]
    MaskSize {
        width: usize,
        height: usize,
        want: usize,
        got: usize,
    },
    #[error("image size {size} is outside {min}..={max} pixels (option `--size`)")]
    BadSize { size: u32, min: u32, max: u32 },
    #[error("scene count must be at least 1 (option `--count`)")]
    BadCount,
    #[error("{path}: {what}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] strata_image::ImageError),
    #[error("{path}: not a readable mask PNG ({what}): pass a mask written by `strata synth`")]
    BadMask { path: PathBuf, what: String },
}
