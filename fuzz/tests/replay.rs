//! Replays the committed corpus: every file of `fuzz/corpus/<target>/` through its target, on
//! stable Rust, with no fuzzer. A target without a corpus, an empty corpus, or a directory that
//! names no target fails the test rather than passing with nothing checked.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use rollcall_fuzz::TARGETS;

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}: every target keeps its corpus in the repository",
                dir.display()
            )
        })
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_file_keeps_every_property() {
    let mut failures = Vec::new();
    let mut total = 0;
    for (name, target) in TARGETS {
        let corpus = files(&corpus_root().join(name));
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{name}/ is empty: seed it (scripts/fuzz.sh seed)"
        );
        for path in corpus {
            let data = std::fs::read(&path).expect("corpus file");
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| target(&data))) {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{name}: {}: {why}", path.display()));
            }
            total += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} corpus files fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!(
        "{total} corpus files replayed through {} targets",
        TARGETS.len()
    );
}

#[test]
fn every_corpus_directory_names_a_target() {
    for entry in std::fs::read_dir(corpus_root()).expect("fuzz/corpus") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8 name");
        assert!(
            rollcall_fuzz::target(&name).is_some(),
            "fuzz/corpus/{name}/ belongs to no target in rollcall_fuzz::TARGETS"
        );
    }
}
