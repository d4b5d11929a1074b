//! One module per subcommand.

pub mod caption;
pub mod caption_parts;
pub mod dataset;
pub mod demo;
pub mod encode;
pub mod eval;
pub mod fusion_args;
pub mod generate;
pub mod model;
pub mod numbers;
pub mod prepare;
pub mod serve;
pub mod study;
pub mod synth;
pub mod train;

/// The image side a model was trained at, the default size of `train`, `generate` and
/// `demo`: its `vae/config.json` `sample_size`, else its `unet/config.json` `sample_size` ×
/// the VAE's down-sampling, else 512 (SD-1.5's, e.g. for a single-file checkpoint). 64 for
/// the embedded base model.
pub(crate) fn model_side(model: &std::path::Path) -> usize {
    strata_models::memory::native_resolution(model).unwrap_or(512)
}

/// The memory check of a command before its long work: compares the peak estimate `total`
/// with what a run on `device` may use. Refuses with `refusal(available)` when it does not
/// fit and `force` is not given; otherwise returns the text to print after the estimate:
/// what is available (or that it was not checked) and whether `--force` overrode a refusal.
pub(crate) fn memory_gate(
    total: u64,
    device: &strata_models::device::DeviceSpec,
    force: bool,
    refusal: impl FnOnce(&strata_models::memory::Available) -> String,
) -> anyhow::Result<String> {
    use strata_models::memory;
    let avail = memory::available_on(device);
    let fits = avail.as_ref().is_none_or(|a| total <= a.bytes);
    if let (false, false, Some(a)) = (fits, force, &avail) {
        anyhow::bail!("{}", refusal(a));
    }
    let text = avail
        .as_ref()
        .map(|a| format!("available {} ({})", memory::human(a.bytes), a.source))
        .unwrap_or_else(|| "available memory not checked".into());
    Ok(if fits {
        text
    } else {
        format!("{text} (--force: starting anyway)")
    })
}

/// A string option whose values a stage checks with its own parser (keeping that parser's
/// message, e.g. "unknown metric `x`; known: …") while clap lists the valid values in
/// `--help` and shell completions offer them. clap's `PossibleValuesParser` would replace
/// the stage's message with its own and refuse the aliases the stage accepts
/// (`dense residential` for `dense_residential`).
#[derive(Clone)]
pub(crate) struct Checked {
    /// The values listed in `--help` (the canonical spellings).
    pub values: Vec<String>,
    pub check: fn(&str) -> Result<(), String>,
}

impl clap::builder::TypedValueParser for Checked {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let err = |msg: String| {
            let name = arg.map(|a| a.to_string()).unwrap_or_default();
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for '{name}': {msg}\n"),
            )
            .with_cmd(cmd)
        };
        let s = value
            .to_str()
            .ok_or_else(|| err(format!("{value:?} is not UTF-8")))?;
        (self.check)(s).map(|()| s.to_string()).map_err(err)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            self.values
                .iter()
                .map(|v| clap::builder::PossibleValue::new(v.clone())),
        ))
    }
}

/// A library enum read through its own `FromStr` (so its message, e.g. "unknown captions
/// mode \"x\": use hierarchical or flat", and its aliases stay), with the values and their
/// help listed from its `clap::ValueEnum` derive.
#[derive(Clone)]
pub(crate) struct FromStrEnum<T>(std::marker::PhantomData<T>);

pub(crate) fn from_str_enum<T>() -> FromStrEnum<T> {
    FromStrEnum(std::marker::PhantomData)
}

impl<T> clap::builder::TypedValueParser for FromStrEnum<T>
where
    T: clap::ValueEnum + std::str::FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let err = |msg: String| {
            let name = arg.map(|a| a.to_string()).unwrap_or_default();
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("invalid value for '{name}': {msg}\n"),
            )
            .with_cmd(cmd)
        };
        value
            .to_str()
            .ok_or_else(|| err(format!("{value:?} is not UTF-8")))?
            .parse::<T>()
            .map_err(err)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            T::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value()),
        ))
    }
}

/// Parser of caption text given on the command line (`--scene`, `--relation`, `--caption`,
/// ...): the same rules as a dataset's caption fields (no control characters, a length
/// bound), so a prompt pasted with a terminal escape or a NUL stops at parse time.
pub(crate) fn caption_text(s: &str) -> Result<String, String> {
    strata_caption::dataset::check_caption_text("the text", s)?;
    Ok(s.to_string())
}

/// `--max-pixels`, shared by every command that decodes images: the limit is set once for
/// the process, so every reader the command reaches applies it.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ImageLimit {
    /// Largest image accepted, in pixels (width × height, read from the header before
    /// anything is decoded) [default: 100 000 000].
    #[arg(long, value_name = "N", value_parser = numbers::int(1u64, u64::MAX))]
    pub max_pixels: Option<u64>,
}

impl ImageLimit {
    /// Makes `--max-pixels`, when given, the process-wide image limit.
    pub fn apply(&self) {
        if let Some(n) = self.max_pixels {
            strata_image::Limits::set_process_default(n);
        }
    }
}
