//! `strata serve`: the web page for exploring prompts and correcting captions by eye (the
//! work is in the strata-serve crate; this file turns options into its configuration and
//! hands it the embedded base model as the default model).

use super::numbers;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder of models, LoRAs and embeddings: diffusers folders and `.safetensors` files,
    /// recognised by their content (an A1111 `models/` folder works as it is).
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// A dataset folder (images + metadata.jsonl) for the Caption tab; repeat for several.
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// TCP port to listen on (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = 7860)]
    pub port: u16,
    /// Address to listen on. Anything but loopback (e.g. 0.0.0.0) needs --token.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Secret every request must carry (`Authorization: Bearer T`, or the cookie set by
    /// opening the printed address with `?token=T`). Required off loopback.
    #[arg(long)]
    pub token: Option<String>,
    /// SRKC knowledge file for autocomplete and checks (default: the embedded one).
    #[arg(long)]
    pub knowledge: Option<PathBuf>,
    /// Jobs queued or running at once; more get 503.
    #[arg(long, default_value_t = 32, value_parser = numbers::int(1usize, 100_000))]
    pub queue: usize,
    /// Cancel a job no page has watched for this many seconds.
    #[arg(long, default_value_t = 60, value_parser = numbers::int(1u64, 31_536_000))]
    pub abandon_after: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let host: IpAddr = match args.host.as_str() {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        h => h.parse().with_context(|| {
            format!("--host {h:?}: give an IP address such as 127.0.0.1 or 0.0.0.0")
        })?,
    };
    if args.queue == 0 || args.queue > 1024 {
        anyhow::bail!("--queue {}: use 1 to 1024", args.queue);
    }
    let cfg = strata_serve::Config {
        host,
        port: args.port,
        token: args.token,
        models: args.models,
        data: args.data,
        knowledge: args.knowledge,
        base_model: Some(Arc::new(|| {
            crate::base_model::ensure().map_err(|e| format!("the embedded base model: {e:#}"))
        })),
        limits: strata_serve::Limits {
            queue: args.queue,
            abandon_after: std::time::Duration::from_secs(args.abandon_after.max(1)),
            ..Default::default()
        },
    };
    strata_serve::run_blocking(cfg, |url| {
        println!("strata serve: open {url}   (Ctrl-C to stop)");
    })?;
    Ok(ExitCode::SUCCESS)
}
