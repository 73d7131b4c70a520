//! The `faultline` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use faultline::config::Config;
use faultline::eval::nab_run;
use faultline::event::{ANOMALY_SCHEMA_JSON, ROOT_CAUSE_SCHEMA_JSON};
use faultline::{Error, app, demo};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "faultline",
    version,
    about = "Streaming anomaly detection and root-cause ranking for service telemetry"
)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax); RUST_LOG also works.
    #[arg(long, global = true, default_value = "warn", env = "RUST_LOG")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the built-in simulator through the engine and show, for each injected fault, the incident and its ranked
    /// root causes. Needs no external service.
    Demo {
        /// Config file merged over the embedded defaults (the source is forced to the simulator).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Simulator seed (overrides the config).
        #[arg(long)]
        seed: Option<u64>,
        /// Also write anomaly events and root-cause reports as JSON lines into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the outcome as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the pipeline a config file describes (source, detector, root causes, sinks).
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Write the run summary (counts, throughput, latency) as JSON to this file.
        #[arg(long)]
        metrics_out: Option<PathBuf>,
    },
    /// Validate a config file and report every problem at once.
    CheckConfig { config: PathBuf },
    /// Print the embedded default config.
    DefaultConfig,
    /// Print the JSON Schema of an output event.
    Schema { which: SchemaKind },
    /// Evaluate detection quality against labelled data.
    Eval {
        #[command(subcommand)]
        which: EvalCmd,
    },
}

#[derive(Subcommand)]
enum EvalCmd {
    /// Stream the NAB corpus through the detector (each file a series, point by point, no labels) and print NAB's
    /// score for its three profiles, each at its optimised threshold, with the per-category breakdown.
    Nab {
        /// NAB's data directory (`<category>/<name>.csv`), e.g. `../shared/data/nab/data`.
        #[arg(long)]
        data: PathBuf,
        /// NAB's label windows, e.g. `../shared/data/nab/labels/combined_windows.json`.
        #[arg(long)]
        labels: PathBuf,
        /// Config file merged over the embedded defaults (its `[detector]` section configures the detector).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Score this precomputed results file (`file,timestamp,anomaly_score`, optionally .gz) instead of running
        /// the detector.
        #[arg(long)]
        scores: Option<PathBuf>,
        /// Write the per-row scores to this CSV in NAB's results format (re-scorable with `--scores`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SchemaKind {
    Anomaly,
    RootCause,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    match run(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<Error>() {
                Some(Error::Config(_)) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Demo { config, seed, out, json } => {
            let mut cfg = Config::load(config.as_deref())?;
            if let Some(seed) = seed {
                cfg.simulator.seed = seed;
            }
            let outcome = demo::run_demo(&cfg, out.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&outcome)?);
            } else {
                print!("{}", demo::render_demo(&outcome));
                println!("{}", outcome.summary.render());
                if let Some(dir) = &out {
                    println!(
                        "events written to {}/anomalies.jsonl and {}/root-causes.jsonl",
                        dir.display(),
                        dir.display()
                    );
                }
            }
        }
        Cmd::Run { config, metrics_out } => {
            let cfg = Config::load(Some(&config))?;
            let summary = app::run_config(&cfg, Vec::new())?;
            eprintln!("{}", summary.render());
            if let Some(p) = metrics_out {
                std::fs::write(&p, serde_json::to_vec_pretty(&summary)?)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
        }
        Cmd::CheckConfig { config } => {
            Config::load(Some(&config))?;
            println!("{}: ok", config.display());
        }
        Cmd::DefaultConfig => print!("{}", faultline::config::DEFAULT_TOML),
        Cmd::Eval { which: EvalCmd::Nab { data, labels, config, scores, out, json } } => {
            let cfg = Config::load(config.as_deref())?;
            let report = nab_run::run(&cfg, &nab_run::NabRun { data, labels, scores, out })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", nab_run::render(&report));
            }
        }
        Cmd::Schema { which } => print!(
            "{}",
            match which {
                SchemaKind::Anomaly => ANOMALY_SCHEMA_JSON,
                SchemaKind::RootCause => ROOT_CAUSE_SCHEMA_JSON,
            }
        ),
    }
    Ok(())
}
