//! `strata dataset`: dataset utilities. `strata dataset stats DIR` prints the statistics
//! of the paper's section 4.1 for a hierarchical dataset.

use std::path::PathBuf;
use std::process::ExitCode;

use strata_caption::dataset::missing_images;
use strata_caption::{read_dataset, DatasetStats, Knowledge, StatsField};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: DatasetCommand,
}

#[derive(clap::Subcommand)]
enum DatasetCommand {
    /// Captions, words, sentences, relations per caption, longest caption (paper 4.1).
    Stats(StatsArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Field {
    /// Words over scene + relation + elements; sentences and relations over the relation.
    Hierarchical,
    /// The relation text only.
    Relation,
    /// The traditional flat caption (`text`).
    Text,
}

#[derive(clap::Args)]
struct StatsArgs {
    /// Dataset folder holding metadata.jsonl.
    dir: PathBuf,
    /// Which text is measured.
    #[arg(long, value_enum, default_value = "hierarchical")]
    field: Field,
    /// Knowledge file used to count relations [default: embedded SRKC].
    #[arg(long, value_name = "FILE")]
    knowledge: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        DatasetCommand::Stats(a) => stats(a),
    }
}

fn stats(a: StatsArgs) -> anyhow::Result<ExitCode> {
    let k = match &a.knowledge {
        Some(p) => Knowledge::from_file(p)?,
        None => Knowledge::embedded(),
    };
    let records = read_dataset(&a.dir)?;
    let field = match a.field {
        Field::Hierarchical => StatsField::Hierarchical,
        Field::Relation => StatsField::Relation,
        Field::Text => StatsField::Text,
    };
    let s = DatasetStats::compute(&k, &records, field);
    let missing = missing_images(&a.dir, &records);
    if a.json {
        let mut v = serde_json::to_value(&s)?;
        v["missing_images"] = serde_json::json!(missing.len());
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("dataset            {}", a.dir.display());
        println!("captions           {}", s.captions);
        println!("words              {}", s.words);
        println!("characters         {}", s.characters);
        println!("sentences          {}", s.sentences);
        println!("mean words         {:.2}", s.mean_words);
        println!("mean characters    {:.2}", s.mean_characters);
        println!("mean sentences     {:.2}", s.mean_sentences);
        println!("max sentences      {}", s.max_sentences);
        println!("relations          {}", s.relations);
        println!("mean relations     {:.2}", s.mean_relations);
        println!("without relation   {}", s.without_relation);
        println!(
            "longest caption    {} words, {} characters ({})",
            s.longest_words,
            s.longest_characters,
            s.longest_file.as_deref().unwrap_or("-")
        );
        println!("split              {} train, {} test", s.train, s.test);
        for (scene, n) in &s.scenes {
            let name = if scene.is_empty() {
                "(no scene)"
            } else {
                scene
            };
            println!("scene              {name}: {n}");
        }
        println!("{}", s.summary());
    }
    if missing.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "{} image(s) listed in metadata.jsonl are missing:",
        missing.len()
    );
    for m in &missing {
        eprintln!("  {m}");
    }
    Ok(ExitCode::from(2))
}
