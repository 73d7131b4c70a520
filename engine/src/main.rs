//! The `faultline` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use faultline::config::{Config, SourceKind};
use faultline::event::{ANOMALY_SCHEMA_JSON, ROOT_CAUSE_SCHEMA_JSON};
use faultline::{Error, app, demo};
use signal_hook::consts::{SIGINT, SIGTERM};
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
            let stop = Arc::new(AtomicBool::new(false));
            if cfg.source.kind == SourceKind::Kafka {
                // First SIGTERM/SIGINT: stop fetching, drain, flush, commit, exit 0. A second one exits at once
                // (nothing is lost either way: uncommitted input is read again on restart).
                for sig in [SIGTERM, SIGINT] {
                    signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
                        .context("installing a signal handler")?;
                    signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing a signal handler")?;
                }
            }
            let summary = app::run_config_until(&cfg, Vec::new(), stop)?;
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
