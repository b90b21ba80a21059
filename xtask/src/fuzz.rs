//! `cargo xtask fuzz`: a mutation-fuzzing campaign over the model reader and the whole
//! pipeline (the target and mutators are in `tests/support/fuzz.rs`). Bounded by time or
//! executions; failures are saved under `fixtures/fuzz/crashes/` and make the task fail.

use std::io::Write;

use gn_tests::fuzz::{campaign, Campaign};

/// Options of `cargo xtask fuzz`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Stop after this many executions (whichever comes first).
    #[arg(long, default_value_t = u64::MAX)]
    executions: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// The random seed (a campaign is reproducible for one thread).
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
    /// Save inputs with a new outcome to fixtures/fuzz/corpus (up to 256 of at most 16 KiB).
    #[arg(long)]
    keep_corpus: bool,
}

pub fn run(args: Args) -> anyhow::Result<bool> {
    let dir = crate::workspace().join("fixtures/fuzz");
    eprintln!(
        "fuzzing the reader and pipeline for {} s (or {} executions) on {} threads, seed {}",
        args.seconds, args.executions, args.threads, args.seed
    );
    let stats = campaign(&Campaign {
        seconds: args.seconds,
        max_executions: args.executions,
        threads: args.threads,
        seed: args.seed,
        dir,
        keep_corpus: args.keep_corpus,
        progress: |n, classes, secs| {
            eprint!("\r{n} executions, {classes} outcomes, {:.0} s, {:.0}/s   ", secs, n as f64 / secs.max(1e-9));
            let _ = std::io::stderr().flush();
        },
    });
    eprintln!();
    println!(
        "fuzz: {} executions in {:.0} s ({:.0}/s), {} converted, {} distinct outcomes, corpus {}, failures {}",
        stats.executions,
        stats.seconds,
        stats.executions as f64 / stats.seconds.max(1e-9),
        stats.converted,
        stats.classes,
        stats.corpus,
        stats.failures.len()
    );
    for f in &stats.failures {
        println!("  failure saved to {}", f.display());
    }
    Ok(stats.failures.is_empty())
}
