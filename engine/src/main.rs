//! The `faultline` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use faultline::config::{Config, SourceKind};
use faultline::eval::nab_run;
use faultline::event::{ANOMALY_SCHEMA_JSON, ROOT_CAUSE_SCHEMA_JSON};
use faultline::feedback::FEEDBACK_SCHEMA_JSON;
use faultline::{Error, app, demo, report};
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
    /// Log lines as text, or as JSON (one object per line, for a log shipper). Logs go to standard error; text is
    /// coloured only on a terminal.
    #[arg(long, global = true, value_enum, default_value = "text", env = "FAULTLINE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
        /// Also write an HTML report of the run to this file (see `faultline report`).
        #[arg(long)]
        report: Option<PathBuf>,
        #[command(flatten)]
        report_args: ReportArgs,
    },
    /// Run the pipeline a config file describes (source, detector, root causes, sinks).
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Write the run summary (counts, throughput, latency) as JSON to this file.
        #[arg(long)]
        metrics_out: Option<PathBuf>,
        /// Also write an HTML report of the run to this file (see `faultline report`); the source must be a file or
        /// the simulator, which the report reads a second time.
        #[arg(long)]
        report: Option<PathBuf>,
        #[command(flatten)]
        report_args: ReportArgs,
    },
    /// Write an HTML report of a finished run: its summary, a map of which services were anomalous when, every
    /// incident with its ranked causes, charts of the most anomalous series, and every series with anomalies. Reads
    /// the events the run wrote and the run's input again (a file or the simulator, from the same config).
    Report {
        /// The run's config (its source is read again for the series' values).
        #[arg(long)]
        config: Option<PathBuf>,
        /// JSON-lines files of the run's events (anomalies, root-cause reports or both, as `jsonl` sinks write them).
        #[arg(long, required = true, num_args = 1..)]
        events: Vec<PathBuf>,
        /// The HTML file to write.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        report_args: ReportArgs,
    },
    /// Validate a config file and report every problem at once.
    CheckConfig { config: PathBuf },
    /// Describe the models saved in a state directory (`engine.state-dir`): when they were saved, how many series
    /// stand at each rung of the cold-start ladder, and what the models of the series asked about hold as normal.
    Models {
        /// The state directory (its `models.bin` is read; the file's checksum is verified).
        dir: PathBuf,
        /// List these series: a service, or `service/metric` (`*` matches anything; repeatable).
        #[arg(long = "series")]
        series: Vec<String>,
        /// The config the models ran under (for `detector.warmup-points`); the embedded default if not given.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the description as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the embedded default config.
    DefaultConfig,
    /// Print the JSON Schema of an output event, or of an operator's feedback (an input).
    Schema { which: SchemaKind },
    /// Evaluate against labelled data.
    Eval {
        #[command(subcommand)]
        which: EvalCmd,
    },
}

/// What a report charts.
#[derive(clap::Args)]
struct ReportArgs {
    /// Series charted in a report, the most anomalous first (by summed anomaly score).
    #[arg(long, default_value_t = 12)]
    charts: usize,
    /// Chart only series of this service, or `service/metric` (repeatable).
    #[arg(long = "series")]
    series: Vec<String>,
}

impl ReportArgs {
    fn options(self) -> report::ReportOptions {
        report::ReportOptions { charts: self.charts, series: self.series }
    }
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
        /// Also list every window (found at which row, or missed, with its best score and its credit) and each
        /// file's false positives, at the standard profile's optimised threshold.
        #[arg(long)]
        windows: bool,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Root-cause ranking accuracy: top-1, top-3 and Avg@5 per fault kind or target metric.
    Rca {
        #[command(subcommand)]
        on: RcaEvalCmd,
        /// Config file merged over the embedded defaults (detector and rca settings).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Print the results as JSON.
        #[arg(long, global = true)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RcaEvalCmd {
    /// Generated faults over several simulated topologies (12 faults per two-day run).
    Sim {
        /// Topology sizes, in services.
        #[arg(long, value_delimiter = ',', default_value = "12,16,24,32,50")]
        sizes: Vec<usize>,
        /// Runs per size.
        #[arg(long, default_value_t = 4)]
        runs: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Every fault gets a simultaneous twin far away in the call graph (`simulator.concurrent`).
        #[arg(long)]
        concurrent: bool,
    },
    /// The PetShop dataset layout: DIR holds graph.csv, noissue/, train/ and test/.
    Petshop {
        #[arg(long)]
        data: PathBuf,
        /// Also write every issue as a case in the generic format under this directory.
        #[arg(long)]
        export: Option<PathBuf>,
    },
    /// A directory of cases in the generic format (see the README).
    Cases {
        #[arg(long)]
        data: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SchemaKind {
    Anomaly,
    RootCause,
    Feedback,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match EnvFilter::try_new(&cli.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: invalid log filter {:?} (--log or RUST_LOG): {e}", cli.log);
            return ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
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
        Cmd::Demo { config, seed, out, json, report, report_args } => {
            let mut cfg = Config::load(config.as_deref())?;
            if let Some(seed) = seed {
                cfg.simulator.seed = seed;
            }
            let opts = report_args.options();
            let outcome = demo::run_demo(&cfg, out.as_deref(), report.as_deref().map(|p| (p, &opts)))?;
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
                if let Some(p) = &report {
                    println!("report written to {}", p.display());
                }
            }
        }
        Cmd::Report { config, events, out, report_args } => {
            let cfg = Config::load(config.as_deref())?;
            report::check_source(&cfg)?;
            let mut collected = report::Collector::default();
            for path in &events {
                collected.read_events(path)?;
            }
            let html = report::build(&cfg, &collected, None, &report_args.options())?;
            report::write(&out, &html)?;
            eprintln!(
                "report of {} anomaly events and {} incidents written to {}",
                collected.anomalies(),
                collected.incidents(),
                out.display()
            );
        }
        Cmd::Run { config, metrics_out, report, report_args } => {
            let cfg = Config::load(Some(&config))?;
            if report.is_some() {
                // Before the run, not after it: a live stream cannot be read a second time.
                report::check_source(&cfg)?;
            }
            let stop = Arc::new(AtomicBool::new(false));
            let live_stdin = cfg.source.kind == SourceKind::Jsonl && cfg.source.path == "-";
            if matches!(cfg.source.kind, SourceKind::Kafka | SourceKind::OtlpHttp) || live_stdin {
                // First SIGTERM/SIGINT: stop reading, drain, flush, commit (Kafka), exit 0. A second one exits at
                // once (Kafka's uncommitted input is read again on restart; what standard input gave is lost).
                for sig in [SIGTERM, SIGINT] {
                    signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
                        .context("installing a signal handler")?;
                    signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing a signal handler")?;
                }
            }
            let collect = report::ReportSink::default();
            let extra: Vec<Box<dyn faultline::sink::Sink>> =
                if report.is_some() { vec![Box::new(collect.clone())] } else { Vec::new() };
            let summary = app::run_config_until(&cfg, extra, stop)?;
            eprintln!("{}", summary.render());
            if let Some(p) = &report {
                let html = report::build(&cfg, &collect.take(), Some(&summary), &report_args.options())?;
                report::write(p, &html)?;
                eprintln!("report written to {}", p.display());
            }
            if let Some(p) = metrics_out {
                // Its folder is made if missing, as the sinks' and the report's are.
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                }
                std::fs::write(&p, serde_json::to_vec_pretty(&summary)?)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
        }
        Cmd::CheckConfig { config } => {
            Config::load(Some(&config))?;
            println!("{}: ok", config.display());
        }
        Cmd::Eval { which: EvalCmd::Rca { on, config, json } } => eval_rca(on, config.as_deref(), json)?,
        Cmd::DefaultConfig => print!("{}", faultline::config::DEFAULT_TOML),
        Cmd::Models { dir, series, config, json } => {
            let cfg = Config::load(config.as_deref())?;
            let report = faultline::detect::persist::ModelsReport::read(&dir, &cfg.detector, &series)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
        }
        Cmd::Eval { which: EvalCmd::Nab { data, labels, config, scores, out, windows, json } } => {
            let cfg = Config::load(config.as_deref())?;
            let report = nab_run::run(&cfg, &nab_run::NabRun { data, labels, scores, out, windows })?;
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
                SchemaKind::Feedback => FEEDBACK_SCHEMA_JSON,
            }
        ),
    }
    Ok(())
}

fn eval_rca(on: RcaEvalCmd, config: Option<&std::path::Path>, json: bool) -> anyhow::Result<()> {
    use faultline::eval::rca;
    let cfg = Config::load(config)?;
    match on {
        RcaEvalCmd::Sim { sizes, runs, seed, concurrent } => {
            let mut cfg = cfg;
            cfg.simulator.concurrent |= concurrent;
            let r = rca::eval_sim(&cfg, &rca::SimEvalOptions { sizes, runs_per_size: runs, first_seed: seed })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}\n{}", r.stats.table("fault kind"), r.calibration.table());
                println!(
                    "{} faults in {} runs ({:.0} simulated days, {} points) in {:.1} s; faults with no incident: {}; \
                     incidents matching no fault: {} ({:.2} per simulated day)",
                    r.faults,
                    r.runs,
                    r.simulated_days,
                    r.points,
                    r.elapsed_s,
                    r.missed_faults,
                    r.unmatched_incidents,
                    r.unmatched_incidents as f64 / r.simulated_days.max(1e-9)
                );
            }
        }
        RcaEvalCmd::Petshop { data, export } => {
            let ps = rca::load_petshop(&data)?;
            if let Some(dir) = &export {
                for c in &ps.cases {
                    rca::write_case(&dir.join(c.name.replace('/', "-")), c)?;
                }
            }
            let (stats, outcomes) = rca::eval_cases(&cfg, &ps.cases)?;
            let target = ps.cases[0].target.clone().unwrap_or_default();
            let spec = rca::petshop_specificity(&cfg, &ps, &target, &[0.5, 0.6, 0.7, 0.8, 0.9, 0.95], 5)?;
            if json {
                println!("{}", serde_json::json!({"stats": stats, "specificity": spec, "cases": outcomes}));
            } else {
                for o in &outcomes {
                    println!(
                        "{:<14} {:<13} root {:<45} rank {:<5} top: {}",
                        o.name,
                        o.kind,
                        o.root_cause,
                        o.rank.map_or("-".into(), |r| r.to_string()),
                        if o.incident_reported { o.top_candidates.join(", ") } else { "(no incident)".into() }
                    );
                }
                print!("\n{}", stats.table("target metric"));
                let spec: Vec<String> = spec.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
                println!("specificity on normal data (no root cause reported): {}", spec.join(", "));
            }
        }
        RcaEvalCmd::Cases { data } => {
            let cases = rca::load_cases(&data)?;
            let (stats, outcomes) = rca::eval_cases(&cfg, &cases)?;
            if json {
                println!("{}", serde_json::json!({"stats": stats, "cases": outcomes}));
            } else {
                for o in &outcomes {
                    println!(
                        "{:<24} root {:<20} rank {}",
                        o.name,
                        o.root_cause,
                        o.rank.map_or("-".into(), |r| r.to_string())
                    );
                }
                print!("\n{}", stats.table("kind"));
            }
        }
    }
    Ok(())
}
