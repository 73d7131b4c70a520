//! Every file in `configs/` loads and validates; example configs stay true.

use faultline::config::Config;

use crate::support::repo_root;

#[test]
fn every_file_in_configs_loads() {
    let dir = repo_root().join("configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(Some(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 2, "expected the default and at least one example config, found {n}");
}

#[test]
fn fixture_configs_load() {
    let dir = crate::support::repo_root().join("tests/fixtures");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(Some(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}
