//! The fuzz target on every kept input (the corpus and each failure ever found, under
//! `fixtures/fuzz/`), and a short deterministic campaign. `cargo xtask fuzz` runs long ones.

use gn_tests::fuzz::{campaign, kept_inputs, run_one, Campaign, SLOW};

fn fuzz_dir() -> std::path::PathBuf {
    gn_tests::fixtures().join("fuzz")
}

#[test]
fn every_kept_input_ends_without_a_panic_and_in_time() {
    let inputs = kept_inputs(&fuzz_dir());
    assert!(!inputs.is_empty(), "fixtures/fuzz holds the corpus");
    for path in inputs {
        let bytes = std::fs::read(&path).unwrap();
        let start = std::time::Instant::now();
        let result = run_one(&bytes);
        assert!(result.is_ok(), "{}: {}", path.display(), result.unwrap_err());
        assert!(start.elapsed() < SLOW, "{}: {:?}", path.display(), start.elapsed());
    }
}

#[test]
fn a_short_campaign_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Seeds from the committed corpus; failures would be written to the temporary folder.
    let fixtures = fuzz_dir();
    for sub in ["corpus", "crashes"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for e in std::fs::read_dir(fixtures.join(sub)).into_iter().flatten().flatten() {
            std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).unwrap();
        }
    }
    let stats = campaign(&Campaign {
        seconds: 20.0,
        max_executions: 3_000,
        threads: 1,
        seed: 1,
        dir: dir.path().to_path_buf(),
        keep_corpus: false,
        progress: |_, _, _| {},
    });
    assert!(stats.failures.is_empty(), "{:?}", stats.failures);
    assert!(stats.executions > 100, "{stats:?}");
}

#[test]
#[ignore = "diagnostic: prints the outcome of each kept input"]
fn print_outcomes() {
    for path in kept_inputs(&fuzz_dir()) {
        let bytes = std::fs::read(&path).unwrap();
        println!("{} {:?}", bytes.len(), run_one(&bytes));
    }
}
