//! A mutation fuzzer over the model reader and the whole pipeline, on the stable toolchain.
//!
//! The target ([`target`]) decodes bytes as a model, audits it, converts it in both
//! emitted forms and both neuron models, re-reads and audits each result. Any panic is a
//! failure; so is an input that takes longer than [`SLOW`]. Inputs come from seeds (the
//! committed fixtures, small QCFS models built here, and the kept corpus under
//! `fixtures/fuzz/`), mutated byte by byte or structurally (decoded, a field of a tensor,
//! node, attribute, output or opset changed to a hostile value, re-encoded). Without
//! coverage instrumentation, the feedback is the outcome: an input whose outcome (the
//! error's wording with names and numbers masked, or a conversion's shape) was not seen
//! before joins the corpus.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gn_onnx::graph::attr;
use gn_onnx::proto::ModelProto;
use gn_transpile::{Emit, NeuronKind, Options};
use ndarray::Array2;
use prost::Message;

use crate::mutate::mutate;
pub use crate::rng::Rng;

/// An input slower than this is a failure (a hang in the making).
pub const SLOW: Duration = Duration::from_secs(2);

/// What the target did with an input, reduced to a class for the corpus feedback.
pub fn target(bytes: &[u8]) -> String {
    let model = match gn_onnx::io::load_bytes(bytes) {
        Ok(m) => m,
        Err(e) => return class("read", &e.to_string()),
    };
    let mut outcome = match gn_transpile::inspect::inspect(&model) {
        Ok(text) => format!("inspect:{}", text.lines().count().min(8)),
        Err(e) => class("inspect", &e.to_string()),
    };
    let runs = [
        Options { timesteps: 2, ..Default::default() },
        Options { neuron: NeuronKind::If, timesteps: 1, anytime: true, emit: Emit::CustomOp, ..Default::default() },
        Options { tau: 3, timesteps: 3, allow_inexact: true, emit: Emit::CustomOp, ..Default::default() },
        Options { allow_inexact: true, emit: Emit::Stateful, ..Default::default() },
    ];
    for options in &runs {
        match gn_transpile::transpile(&model, options) {
            Ok((snn, report)) => {
                let bytes = gn_onnx::io::encode(&snn);
                let again = gn_onnx::io::load_bytes(&bytes).expect("an emitted model reads back");
                gn_transpile::inspect::inspect(&again).expect("an emitted model can be audited");
                let record = gn_transpile::metadata::Metadata::read(&again);
                assert!(matches!(record, Some(Ok(_))), "an emitted model's metadata reads back: {record:?}");
                outcome.push_str(&format!("|ok:{}", report.spiking_layers.len().min(4)));
            }
            Err(e) => outcome.push_str(&format!("|{}", class("convert", &e.to_string()))),
        }
    }
    outcome
}

/// An error message with quoted names and numbers masked: its kind.
fn class(stage: &str, message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    let mut depth = 0usize;
    for c in message.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push('\'');
            }
            _ if quoted => {}
            '(' => {
                depth += 1;
                if depth == 1 {
                    out.push_str("()");
                }
            }
            ')' => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            '0'..='9' | '.' | '-' => {
                if !out.ends_with('#') {
                    out.push('#');
                }
            }
            c => out.push(c),
        }
    }
    format!("{stage}:{}", out.chars().take(80).collect::<String>())
}

/// Small QCFS models built here: an MLP, a chain in each export spelling, a residual pair.
pub fn built_seeds() -> Vec<Vec<u8>> {
    use crate::ModelBuilder;
    let mut seeds = Vec::new();
    let w = Array2::from_shape_fn((4, 4), |(i, j)| ((i * 4 + j) as f32 - 7.0) / 8.0);
    // Gemm → QCFS → Gemm.
    let mut b = ModelBuilder::new(&[4]);
    let h = b.gemm("input", &w, &[0.1; 4]);
    let a = b.qcfs(&h, 1.5, 4);
    let y = b.gemm(&a, &w, &[0.0; 4]);
    seeds.push(b.finish(&y, &[4]));
    // Two sites, a residual Add, a Reshape with 0/-1.
    let mut b = ModelBuilder::new(&[4]);
    let h = b.gemm("input", &w, &[0.1; 4]);
    let a1 = b.qcfs(&h, 2.0, 8);
    let h2 = b.gemm(&a1, &w, &[0.0; 4]);
    let a2 = b.qcfs(&h2, 1.0, 8);
    let r = b.node("Add", &[&a1, &a2], vec![]);
    let shape = b.constant_i64(&[2], &[0, -1]);
    let y = b.node("Reshape", &[&r, &shape], vec![]);
    seeds.push(b.finish(&y, &[4]));
    // The "old QCFS" spelling with Max/Min, and the straight-through residue.
    let mut b = ModelBuilder::new(&[4]);
    let h = b.gemm("input", &w, &[0.1; 4]);
    let (l, th, half, zero, one) = (
        b.constant(&[], &[4.0]),
        b.constant(&[], &[3.0]),
        b.constant(&[], &[0.5]),
        b.constant(&[], &[0.0]),
        b.constant(&[], &[1.0]),
    );
    let d = b.node("Div", &[&h, &th], vec![]);
    let m = b.node("Mul", &[&d, &l], vec![]);
    let p = b.node("Add", &[&m, &half], vec![]);
    let f = b.node("Floor", &[&p], vec![]);
    let s = b.node("Sub", &[&f, &p], vec![]);
    let r = b.node("Add", &[&s, &p], vec![]);
    let q = b.node("Div", &[&r, &l], vec![]);
    let lo = b.node("Max", &[&q, &zero], vec![]);
    let hi = b.node("Min", &[&lo, &one], vec![]);
    let y = b.node("Mul", &[&hi, &th], vec![]);
    seeds.push(b.finish(&y, &[4]));
    // A Reshape target computed from a spiking layer's shape (the rows times 2) and a
    // Transpose that moves axis 0 (run once per step), then back.
    let mut b = ModelBuilder::new(&[4]);
    let h = b.gemm("input", &w, &[0.1; 4]);
    let a = b.qcfs(&h, 1.5, 4);
    let n = b.size_of(&a, 0);
    let two = b.constant_i64(&[], &[2]);
    let rows = b.node("Mul", &[&n, &two], vec![]);
    let rows = b.vector(&rows);
    let pair = b.constant_i64(&[1], &[2]);
    let target = b.node("Concat", &[&rows, &pair], vec![attr::int("axis", 0)]);
    let r = b.node("Reshape", &[&a, &target], vec![]);
    let t = b.node("Transpose", &[&r], vec![attr::ints("perm", &[1, 0])]);
    let back = b.node("Transpose", &[&t], vec![attr::ints("perm", &[1, 0])]);
    let width = b.constant_i64(&[2], &[-1, 4]);
    let flat = b.node("Reshape", &[&back, &width], vec![]);
    let y = b.gemm(&flat, &w, &[0.0; 4]);
    seeds.push(b.finish(&y, &[4]));
    // Spiking-layer nodes and model-local functions come from a conversion.
    let converted: Vec<ModelProto> = seeds
        .iter()
        .filter_map(|m| {
            let o = Options { emit: Emit::CustomOp, timesteps: 2, ..Default::default() };
            gn_transpile::transpile(m, &o).ok().map(|(snn, _)| snn)
        })
        .collect();
    seeds.extend(converted);
    seeds.iter().map(|m| m.encode_to_vec()).collect()
}

/// The committed fixture models and the kept corpus and crash inputs.
pub fn file_seeds(fuzz_dir: &Path) -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> =
        ["cnn_l4.onnx", "cnn_l4_gncode.onnx", "cnn_l4_oldqcfs.onnx", "cnn_l4_legacy_op11.onnx"]
            .iter()
            .filter_map(|n| std::fs::read(crate::fixtures().join("models").join(n)).ok())
            .collect();
    seeds.extend(kept_inputs(fuzz_dir).into_iter().filter_map(|p| std::fs::read(p).ok()));
    seeds
}

/// The files under `fuzz_dir/corpus` and `fuzz_dir/crashes`, sorted.
pub fn kept_inputs(fuzz_dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for sub in ["corpus", "crashes"] {
        if let Ok(entries) = std::fs::read_dir(fuzz_dir.join(sub)) {
            files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    files.sort();
    files
}

/// The outcome of a campaign.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub executions: u64,
    /// Executions where at least one conversion succeeded (the input went all the way).
    pub converted: u64,
    pub failures: Vec<PathBuf>,
    pub corpus: usize,
    pub classes: usize,
    pub seconds: f64,
}

/// Where a campaign stops and what it keeps.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub seconds: f64,
    pub max_executions: u64,
    pub threads: usize,
    pub seed: u64,
    /// `fixtures/fuzz`: seeds are read from it; failures are written to `crashes/` and,
    /// with `keep_corpus`, new-outcome inputs (up to a cap) to `corpus/`.
    pub dir: PathBuf,
    pub keep_corpus: bool,
    /// Called about once a second with the executions so far.
    pub progress: fn(u64, usize, f64),
}

thread_local! {
    static LAST_PANIC: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    static IN_TARGET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `bytes` through [`target`], turning a panic into `Err(message)`.
pub fn run_one(bytes: &[u8]) -> Result<String, String> {
    IN_TARGET.with(|t| t.set(true));
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| target(bytes)));
    IN_TARGET.with(|t| t.set(false));
    result.map_err(|_| LAST_PANIC.with(|p| p.borrow().clone()))
}

/// Runs a campaign; failures (panics, slow inputs) are saved and counted.
pub fn campaign(c: &Campaign) -> Stats {
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let message = format!("{info}{at}");
        if !IN_TARGET.with(|t| t.get()) {
            // Not the target's: the fuzzer's own bug, reported as usual.
            eprintln!("\nthe fuzzer itself panicked: {message}");
        }
        LAST_PANIC.with(|p| *p.borrow_mut() = message);
    }));
    let mut seeds = built_seeds();
    seeds.extend(file_seeds(&c.dir));
    let corpus = Mutex::new(seeds);
    let classes = Mutex::new(HashSet::new());
    let failures = Mutex::new(Vec::new());
    let executions = AtomicU64::new(0);
    let converted = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let kept = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..c.threads.max(1) {
            let (corpus, classes, failures, executions, converted, stop, kept) =
                (&corpus, &classes, &failures, &executions, &converted, &stop, &kept);
            s.spawn(move || {
                let mut rng = Rng::new(c.seed.wrapping_add(t as u64 * 7919));
                let mut last_report = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let (input, other) = {
                        let corpus = corpus.lock().unwrap();
                        // Small inputs run 100× faster: favour them, keep the fixtures in play.
                        let mut pick = rng.below(corpus.len());
                        if corpus[pick].len() > 64 * 1024 && !rng.chance(16) {
                            pick = rng.below(corpus.len());
                        }
                        (corpus[pick].clone(), rng.pick(&corpus).clone())
                    };
                    let mutated = mutate(&mut rng, &input, &other);
                    let began = Instant::now();
                    let result = run_one(&mutated);
                    let took = began.elapsed();
                    let n = executions.fetch_add(1, Ordering::Relaxed) + 1;
                    let failed = match &result {
                        Err(message) => Some(("crash", message.clone())),
                        Ok(_) if took > SLOW => Some(("slow", format!("{:.1} s", took.as_secs_f64()))),
                        Ok(_) => None,
                    };
                    if let Some((kind, message)) = failed {
                        let path = save(&c.dir.join("crashes"), kind, &mutated);
                        eprintln!("\n{kind}: {message}\n  input saved to {}", path.display());
                        failures.lock().unwrap().push(path);
                    } else if let Ok(outcome) = result {
                        if outcome.contains("|ok:") {
                            converted.fetch_add(1, Ordering::Relaxed);
                        }
                        if classes.lock().unwrap().insert(outcome) {
                            corpus.lock().unwrap().push(mutated.clone());
                            if c.keep_corpus && mutated.len() <= 16 * 1024 && kept.fetch_add(1, Ordering::Relaxed) < 256
                            {
                                save(&c.dir.join("corpus"), "input", &mutated);
                            }
                        }
                    }
                    let elapsed = start.elapsed().as_secs_f64();
                    if elapsed >= c.seconds || n >= c.max_executions {
                        stop.store(true, Ordering::Relaxed);
                    }
                    if t == 0 && last_report.elapsed() > Duration::from_secs(1) {
                        last_report = Instant::now();
                        (c.progress)(n, classes.lock().unwrap().len(), elapsed);
                    }
                }
            });
        }
    });
    std::panic::set_hook(previous_hook);
    Stats {
        executions: executions.load(Ordering::Relaxed),
        converted: converted.load(Ordering::Relaxed),
        failures: failures.into_inner().unwrap(),
        corpus: corpus.into_inner().unwrap().len(),
        classes: classes.into_inner().unwrap().len(),
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// Saves an input under a name derived from its content (FNV-1a), returning the path.
fn save(dir: &Path, kind: &str, bytes: &[u8]) -> PathBuf {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join(format!("{kind}-{hash:016x}.onnx"));
    let _ = std::fs::write(&path, bytes);
    path
}
