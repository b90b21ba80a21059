//! What the hostile-input tests share: the command run in a folder with limits on time
//! and memory, snapshots of the folder, and small model edits.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gn_onnx::io::{encode, load};
use gn_onnx::proto::{GraphProto, ModelProto};

pub const LIMIT: Duration = Duration::from_secs(10);

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models").join(name)
}

pub fn cnn() -> ModelProto {
    load(&fixture("cnn_l4.onnx")).unwrap().model
}

/// What a run of the command did.
pub struct Run {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub seconds: f64,
    /// Peak resident memory of the process, in MB.
    pub peak_mb: f64,
}

/// Runs the command in `cwd`, killing it after [`LIMIT`]; measures its peak memory
/// with `wait4`.
pub fn run_in(cwd: &Path, args: &[OsString]) -> Run {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gn-transpile"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    // The peak is read from /proc (VmHWM, a high-water mark that starts afresh at exec)
    // until the process exits: wait4's ru_maxrss would include the test process's own
    // size at fork time.
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    let exit = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            let hwm = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            peak_kb = peak_kb.max(hwm.unwrap_or(0));
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("{args:?} still running after {LIMIT:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    Run {
        code: exit.code(),
        signal: exit.signal(),
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
        seconds: start.elapsed().as_secs_f64(),
        peak_mb: peak_kb as f64 / 1024.0,
    }
}

pub fn args(list: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    list.iter().map(|a| a.as_ref().to_os_string()).collect()
}

/// Every file under `dir` with its length and modification time.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            (e.path(), m.len(), m.modified().ok())
        })
        .collect();
    v.sort();
    v
}

/// A refusal: exit code 1, the last line of stderr is the error naming `needle`, no
/// panic, under the time and memory bounds, and the folder unchanged (no OUT, no
/// temporary, no file touched).
pub fn refused_in(dir: &Path, argv: Vec<OsString>, needle: &str, inputs_mb: f64) -> Run {
    let before = snapshot(dir);
    let r = run_in(dir, &argv);
    let last = r.stderr.trim_end().lines().last().unwrap_or_default().trim_start_matches('\r').to_string();
    assert_eq!(r.code, Some(1), "{argv:?}: exit {:?} signal {:?}: {}", r.code, r.signal, r.stderr);
    assert!(!r.stderr.contains("panicked"), "{argv:?}: {}", r.stderr);
    assert!(last.starts_with("error: "), "{argv:?}: the error is not on a line of its own: {:?}", r.stderr);
    assert!(last.contains(needle), "{argv:?}: expected '{needle}' in: {last}");
    let bound = 2.0 * inputs_mb + 100.0;
    assert!(r.peak_mb <= bound, "{argv:?}: peak {:.0} MB above {bound:.0} MB", r.peak_mb);
    assert!(r.seconds < LIMIT.as_secs_f64(), "{argv:?}: {:.1} s", r.seconds);
    assert_eq!(snapshot(dir), before, "{argv:?}: the folder changed");
    r
}

pub fn mb(path: &Path) -> f64 {
    std::fs::metadata(path).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0)
}

/// Writes `model` as `name` in `dir`, then runs the conversion to `out.onnx` and expects
/// a refusal naming `needle`.
pub fn convert_refused(dir: &Path, name: &str, model: &ModelProto, needle: &str) {
    let path = dir.join(name);
    std::fs::write(&path, encode(model)).unwrap();
    refused_in(dir, args(&[&path, &dir.join("out.onnx")]), needle, mb(&path));
    std::fs::remove_file(&path).unwrap();
}

pub fn graph(m: &mut ModelProto) -> &mut GraphProto {
    m.graph.as_mut().unwrap()
}

pub fn first(m: &mut ModelProto, op: &str) -> usize {
    graph(m).node.iter().position(|n| n.op_type() == op).unwrap()
}
