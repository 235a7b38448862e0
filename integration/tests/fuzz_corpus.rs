//! Every fuzz target's body over its committed corpus (`fuzz/corpus/TARGET`), with the ordinary
//! test build: the smoke run `make test` does of the fuzz targets. `make fuzz` runs them for
//! real under libFuzzer.

use std::path::Path;

#[test]
fn every_fuzz_target_takes_its_corpus() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (name, target) in integration::fuzz::TARGETS {
        let dir = corpus.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{name}: no corpus");
        for input in &inputs {
            target(&std::fs::read(input).unwrap());
        }
        println!("{name}: {} inputs", inputs.len());
    }
}

#[test]
fn every_fuzz_target_has_a_binary_and_a_corpus() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
    for (name, _) in integration::fuzz::TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} has no [[bin]]"
        );
        let body = std::fs::read_to_string(fuzz.join(format!("fuzz_targets/{name}.rs"))).unwrap();
        assert!(
            body.contains(&format!("integration::fuzz::{name}(data)")),
            "{name}"
        );
        assert!(
            fuzz.join("corpus").join(name).is_dir(),
            "{name} has no corpus"
        );
    }
}
