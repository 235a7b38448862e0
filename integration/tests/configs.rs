//! Every file in `configs/` must load with the parser of the daemon it is for, so the examples
//! operators copy never rot. A file with no parser here fails the test.

#![allow(clippy::unwrap_used)] // test code

use std::path::Path;

#[test]
fn every_example_config_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match name.as_str() {
            n if n.starts_with("meshd") && n.ends_with(".toml") => {
                meshd::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            }
            other => panic!("configs/{other}: no test loads this file; add its parser here"),
        }
        checked += 1;
    }
    assert!(checked >= 1, "configs/ holds no example");
}
