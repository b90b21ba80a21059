//! The test data and the progress display.

use std::path::Path;
use std::time::Instant;

use gn_onnx::data::read_idx_u8;
use ndarray::{ArrayD, IxDyn};

/// Progress on stderr: one line per stage, updated in place; told (stage, inputs done,
/// the stage's inputs).
pub fn progress() -> impl Fn(&str, usize, usize) + Sync {
    let last = std::sync::Mutex::new(Instant::now());
    move |name: &str, d: usize, total: usize| {
        eprint!("\r  {name:<16} {d:>6}/{total} images");
        if d >= total {
            let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!("  ({:.1} s)", l.elapsed().as_secs_f64());
            *l = Instant::now();
        }
    }
}

pub fn load_images(path: &Path, n: usize) -> anyhow::Result<ArrayD<f32>> {
    let (dims, pixels) = read_idx_u8(path)?;
    let n = n.min(dims[0]);
    let per = dims[1..].iter().product::<usize>();
    let mut shape = vec![n, 1];
    shape.extend(&dims[1..]);
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), pixels[..n * per].iter().map(|&p| p as f32 / 255.0).collect())?)
}

pub fn load_labels(path: &Path, n: usize) -> anyhow::Result<Vec<usize>> {
    let (_, labels) = read_idx_u8(path)?;
    Ok(labels.iter().take(n).map(|&l| l as usize).collect())
}
