//! Shared helpers: run a config through the engine into memory, and compare against golden files.

use std::path::{Path, PathBuf};

use faultline::config::Config;
use faultline::sink::{JsonlSink, SharedBuf, Sink};
use faultline::source::DeadLetters;
use faultline::{app, pipeline};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repo root").to_path_buf()
}

pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

/// The engine's output for a config, as JSON lines: (anomaly events, root-cause reports).
pub struct Output {
    pub anomalies: String,
    pub reports: String,
}

pub fn load(fixture_name: &str, env: &[(&str, &str)]) -> Config {
    let path = fixture(fixture_name);
    let text = std::fs::read_to_string(&path).unwrap();
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Config::from_layers(Some((&path.display().to_string(), &text)), env).unwrap()
}

pub fn run(cfg: &Config) -> Output {
    let (mut source, graph) = app::build_source(cfg).unwrap();
    let (a, r) = (SharedBuf::default(), SharedBuf::default());
    let sinks: Vec<Box<dyn Sink>> = vec![
        Box::new(JsonlSink::new("anomalies", Box::new(a.clone()), true, false)),
        Box::new(JsonlSink::new("reports", Box::new(r.clone()), false, true)),
    ];
    let mut dead = DeadLetters::to_writer(Box::new(std::io::sink()));
    pipeline::run(cfg, source.as_mut(), graph, sinks, &mut dead).unwrap();
    Output { anomalies: String::from_utf8(a.contents()).unwrap(), reports: String::from_utf8(r.contents()).unwrap() }
}

/// Compares `actual` with `tests/golden/<name>`; with `UPDATE_GOLDEN=1` rewrites the file instead.
pub fn check(name: &str, actual: &str) {
    let path = repo_root().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1 to create it", path.display()));
    if expected != actual {
        let (el, al): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
        let first = el.iter().zip(&al).position(|(e, a)| e != a).unwrap_or(el.len().min(al.len()));
        panic!(
            "{} differs from the engine's output ({} vs {} lines); first difference at line {}:\n  expected: {}\n  actual:   {}\n\
             If the change is intended, rerun with UPDATE_GOLDEN=1 and review the diff.",
            path.display(),
            el.len(),
            al.len(),
            first + 1,
            el.get(first).unwrap_or(&"<end>"),
            al.get(first).unwrap_or(&"<end>")
        );
    }
}
