//! `strata`: one subcommand per pipeline stage. This crate stays thin: it parses arguments,
//! shows progress and turns library errors into messages; the work lives in the stage crates.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// mimalloc instead of the system allocator: the diffusion steps allocate and free tensors of
/// tens of MB many times a step, and glibc hands blocks that large back to the kernel at
/// every free, so each new one costs a page fault per 4 KB page (a fifth of an SD-1.5 LoRA
/// step at 64² latents went to zeroing fresh pages). mimalloc keeps them for reuse, for
/// [`KEEP_FREED_MS`].
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long mimalloc keeps freed pages before it returns them to the kernel. Its default,
/// 10 ms, is shorter than the gap between two uses of the same large tensor size in an
/// SD-1.5 step: the SD-1.5 forward at 32² latents measured 1.48 s with it and 1.22 s with
/// one second. The memory estimate's runtime share covers what is kept meanwhile.
const KEEP_FREED_MS: std::ffi::c_long = 1000;

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (its C header's enum; the Rust binding
/// names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

mod base_model;
mod commands;
mod stages;
mod study;

/// Hierarchical captions and fine-grained scene generation for remote-sensing imagery.
///
/// Pipeline: prepare → caption → train → generate → eval (see the README).
#[derive(Parser)]
#[command(name = "strata", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: boxing the big argument structs would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Stage 1: raw rasters → RGB 8-bit tiles (band selection, stretch, Eq. 1 slicing /
    /// cropping / padding), georeferencing kept, manifest.jsonl written.
    Prepare(commands::prepare::Args),
    /// Stage 2: images → hierarchical captions {scene, relation, elements} with the SRKC
    /// golden rule and expert corrections; imports RSICD/UCM/Sydney, COCO, class folders, kohya.
    Caption(commands::caption::Args),
    /// Dataset utilities (statistics as in the paper's section 4.1).
    Dataset(commands::dataset::Args),
    /// Procedural aerial scenes with exact masks and hierarchical captions.
    Synth(commands::synth::Args),
    /// Stage 3: encode a hierarchical caption per segment (debug aid): token counts and the
    /// fusion weights w(t).
    Encode(commands::encode::Args),
    /// Stage 4: fine-tune (LoRA, DreamBooth, textual inversion, full) on a hierarchical-caption
    /// dataset or a kohya dataset TOML; checkpoints and --resume.
    Train(commands::train::Args),
    /// Stage 5: generate scenes from hierarchical prompts (DDIM or another sampler, CFG, img2img, LoRA).
    Generate(commands::generate::Args),
    /// Stage 6: metrics (FID/KID, relation fidelity, LPIPS, CLIPScore, GSHPS) and the report.
    Eval(commands::eval::Args),
    /// The whole experiment in miniature on the embedded default.
    Demo(commands::demo::Args),
    /// Does the caption format matter? Arms x training seeds x one test set, paired
    /// bootstrap intervals and verdicts, resumable.
    Study(commands::study::Args),
    /// Models: create a random one of a preset size (`model init`), locate the embedded base.
    Model(commands::model::Args),
    /// Print a shell completion script, e.g. `strata completions bash > ~/.local/share/bash-completion/completions/strata`.
    Completions(CompletionsArgs),
    /// Write man pages (strata.1 and one per subcommand) to a folder, or strata.1 to stdout.
    Man(ManArgs),
    /// The web page: generate from hierarchical prompts with live progress, and check and
    /// correct dataset captions by eye (expert correction), on 127.0.0.1:7860.
    Serve(commands::serve::Args),
}

#[derive(clap::Args)]
struct CompletionsArgs {
    /// The shell the script is for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(clap::Args)]
struct ManArgs {
    /// Folder to write strata.1 and strata-SUBCOMMAND.1 into (created if missing)
    /// [default: print strata.1 to stdout].
    #[arg(long, value_name = "DIR")]
    out: Option<std::path::PathBuf>,
}

fn completions(a: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "strata", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Renders the man page of `cmd` and, recursively, of its subcommands as
/// `(file name, roff)`: `strata.1`, `strata-train.1`, `strata-model-init.1`, ...
fn man_pages(
    cmd: &clap::Command,
    prefix: &str,
    out: &mut Vec<(String, Vec<u8>)>,
) -> anyhow::Result<()> {
    let name = if prefix.is_empty() {
        cmd.get_name().to_string()
    } else {
        format!("{prefix}-{}", cmd.get_name())
    };
    // the page's title is the full command name (`strata-train`), as man(1) looks it up
    let titled = cmd.clone().name(name.clone());
    let mut roff = Vec::new();
    clap_mangen::Man::new(titled).render(&mut roff)?;
    out.push((format!("{name}.1"), roff));
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        man_pages(sub, &name, out)?;
    }
    Ok(())
}

fn man(a: ManArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut pages = Vec::new();
    man_pages(&cmd, "", &mut pages)?;
    match a.out {
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&pages[0].1)?;
        }
        Some(dir) => {
            for (file, roff) in &pages {
                let path = dir.join(file);
                strata_io::atomic::write(&path, roff)
                    .map_err(|e| anyhow::anyhow!(e))
                    .map_err(|e| {
                        e.context(format!("cannot write the man page {}", path.display()))
                    })?;
            }
            println!("wrote {} man pages to {}", pages.len(), dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    // SAFETY: sets a process-wide allocator option; the allocator reads it at its next purge
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, KEEP_FREED_MS) };
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Prepare(a) => commands::prepare::run(a),
        Command::Caption(a) => commands::caption::run(a),
        Command::Dataset(a) => commands::dataset::run(a),
        Command::Synth(a) => commands::synth::run(a),
        Command::Encode(a) => commands::encode::run(a),
        Command::Train(a) => commands::train::run(a),
        Command::Generate(a) => commands::generate::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Demo(a) => commands::demo::run(a),
        Command::Study(a) => commands::study::run(a),
        Command::Model(a) => commands::model::run(a),
        Command::Completions(a) => completions(a),
        Command::Man(a) => man(a),
        Command::Serve(a) => commands::serve::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // `{:#}`: the message and each cause once, `outer: cause: cause`
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for a in cmd.get_arguments() {
            if !matches!(a.get_id().as_str(), "help" | "version") {
                out.push((path.to_string(), a.clone()));
            }
        }
        for s in cmd.get_subcommands() {
            walk(s, &format!("{path} {}", s.get_name()), out);
        }
    }

    fn all_args() -> Vec<(String, clap::Arg)> {
        let mut cmd = Cli::command();
        cmd.build();
        let mut v = vec![];
        walk(&cmd, "strata", &mut v);
        v
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_option_of_every_subcommand_has_help() {
        let args = all_args();
        assert!(args.len() > 150, "only {} options found", args.len());
        let missing: Vec<String> = args
            .iter()
            .filter(|(_, a)| a.get_help().is_none() && a.get_long_help().is_none())
            .map(|(p, a)| format!("{p} {}", a.get_id()))
            .collect();
        assert!(missing.is_empty(), "options without help: {missing:?}");
        let leaks: Vec<String> = args
            .iter()
            .filter_map(|(p, a)| {
                let h = a.get_help()?.to_string();
                let bad = h.contains("issue ")
                    || h.contains(concat!("DESIGN", ".md"))
                    || h.contains("../");
                bad.then(|| format!("{p} {}: {h}", a.get_id()))
            })
            .collect();
        assert!(leaks.is_empty(), "help outside the repository: {leaks:?}");
    }

    /// `train`'s options are unset unless given (so `--config` can set them); their help
    /// states the default in words. Each stated default must be the configuration's.
    #[test]
    fn train_help_states_the_configuration_defaults() {
        let defaults: toml::Table =
            toml::from_str(&strata_train::TrainConfig::default().to_toml()).unwrap();
        let mut checked = 0;
        for (path, a) in all_args() {
            if path != "strata train" {
                continue;
            }
            let id = a.get_id().as_str().to_string();
            if !a.get_action().takes_values()
                || matches!(id.as_str(), "config" | "resume" | "class_data")
            {
                continue;
            }
            let help = a.get_help().unwrap().to_string();
            if help.contains("(required") {
                continue;
            }
            let stated = help
                .split_once("[default: ")
                .and_then(|(_, r)| r.split_once(']'))
                .map(|(d, _)| d.to_string())
                .unwrap_or_else(|| panic!("train --{id}: no [default: …] in {help:?}"));
            if stated.contains(' ') {
                continue; // described, not a value (e.g. "the model's tokenizer/")
            }
            let ok = match defaults.get(&id) {
                // unset, or "the value of another option" (e.g. [default: --lr])
                None => {
                    matches!(stated.as_str(), "unset" | "off" | "none") || stated.starts_with("--")
                }
                Some(toml::Value::String(s)) => *s == stated,
                Some(toml::Value::Integer(n)) => stated.parse::<i64>().ok() == Some(*n),
                Some(toml::Value::Float(f)) => stated.parse::<f64>().ok() == Some(*f),
                Some(toml::Value::Array(v)) if v.is_empty() => stated == "none",
                Some(toml::Value::Array(v)) => {
                    let items: Vec<String> = v
                        .iter()
                        .map(|x| match x {
                            toml::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect();
                    let numbers_equal = stated.split(',').count() == v.len()
                        && stated.split(',').zip(v).all(|(s, x)| {
                            s.parse::<f64>().ok()
                                == x.as_float().or(x.as_integer().map(|i| i as f64))
                        });
                    items.join(",") == stated || numbers_equal
                }
                Some(other) => panic!("train --{id}: unexpected default {other}"),
            };
            assert!(
                ok,
                "train --{id}: help says [default: {stated}], the configuration has {:?}",
                defaults.get(&id)
            );
            checked += 1;
        }
        assert!(checked >= 25, "only {checked} defaults checked");
    }
}
