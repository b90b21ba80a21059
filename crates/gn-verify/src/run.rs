//! Running models on a [`Runtime`]: in batches (an ANN, or any emitted form) and call by
//! call (the stateful form), and exposing inner values as outputs. The functions without
//! a runtime argument run on tract.

use gn_onnx::proto::{ModelProto, ValueInfoProto};
use ndarray::{ArrayD, Axis, IxDyn};
use rayon::prelude::*;

use crate::runtime::Runtime;
use crate::VerifyError;

/// The static batch N of a model whose inputs all declare the same numeric leading
/// dimension (the lower pass's definition).
pub fn static_batch(model: &ModelProto) -> Option<usize> {
    let graph = gn_onnx::Graph::new(model.graph.clone()?);
    gn_transpile::static_batch(&graph).map(|n| n as usize)
}

/// The images per run: the model's static batch if it has one, else `requested`.
pub fn batch_for(model: &ModelProto, requested: usize) -> usize {
    static_batch(model).unwrap_or(requested.max(1))
}

/// Runs `model` on `x` through tract in parallel batches ([`run_batched_on`]).
#[cfg(feature = "tract")]
pub fn run_batched(
    model: &ModelProto,
    x: &ArrayD<f32>,
    batch: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<ArrayD<f32>>, VerifyError> {
    run_batched_on(&crate::Tract, model, x, batch, true, progress)
}

/// [`run_batched`], on a plan tract optimised or not (unoptimised, tract evaluates every
/// op as written, without folding constants into its neighbours).
#[cfg(feature = "tract")]
pub fn run_batched_as(
    model: &ModelProto,
    x: &ArrayD<f32>,
    batch: usize,
    optimize: bool,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<ArrayD<f32>>, VerifyError> {
    run_batched_on(&crate::Tract, model, x, batch, optimize, progress)
}

/// Runs `model` on `x` on `runtime`, in batches (of the model's static batch, if it has
/// one; in parallel where the runtime allows); returns every output, concatenated along
/// the batch axis (axis 1 for the outputs the conversion wrote with the steps in front:
/// `gn_transpile.anytime_outputs`). `progress` is told, after each batch, how many inputs
/// are done.
pub fn run_batched_on(
    runtime: &dyn Runtime,
    model: &ModelProto,
    x: &ArrayD<f32>,
    batch: usize,
    optimize: bool,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<ArrayD<f32>>, VerifyError> {
    let batch = batch_for(model, batch);
    let rows = x.shape().first().copied().unwrap_or(0);
    if static_batch(model).is_some() && rows % batch != 0 {
        return Err(VerifyError::Data(format!(
            "the model's inputs have a static batch of {batch}, and {rows} inputs are not a multiple of it"
        )));
    }
    let plan = runtime.load(model, optimize)?;
    let names: Vec<String> =
        model.graph.as_ref().map(|g| g.output.iter().map(|o| o.name().to_string()).collect()).unwrap_or_default();
    let stacked = gn_transpile::metadata::Metadata::read(model).and_then(Result::ok).map(|m| m.anytime_outputs);
    let stacked = stacked.unwrap_or_default();
    let chunks: Vec<ArrayD<f32>> = x.axis_chunks_iter(Axis(0), batch.max(1)).map(|c| c.to_owned()).collect();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let run = |c: ArrayD<f32>| {
        let n = c.shape()[0];
        let out = plan.run(vec![c]);
        progress(done.fetch_add(n, std::sync::atomic::Ordering::SeqCst) + n);
        out
    };
    let results: Result<Vec<Vec<ArrayD<f32>>>, VerifyError> = if runtime.parallel() {
        chunks.into_par_iter().map(run).collect()
    } else {
        chunks.into_iter().map(run).collect()
    };
    let results = results?;
    let outputs = names.len();
    if results.iter().any(|r| r.len() != outputs) {
        return Err(VerifyError::Data(format!(
            "the runtime returned a different number of outputs than the model's {outputs}"
        )));
    }
    (0..outputs)
        .map(|i| {
            let axis = if names.get(i).is_some_and(|n| stacked.contains(n)) { 1 } else { 0 };
            let views: Vec<_> = results.iter().map(|r| r[i].view()).collect();
            ndarray::concatenate(Axis(axis), &views).map_err(|e| VerifyError::Data(e.to_string()))
        })
        .collect()
}

/// The state tensors of a stateful model before its first call, for a batch of `n`:
/// each of its shape, filled with its `init`.
pub fn initial_states(states: &[gn_transpile::metadata::State], n: usize) -> Vec<ArrayD<f32>> {
    states.iter().map(|s| ArrayD::from_elem(IxDyn(&s.dims(n)), s.init)).collect()
}

/// [`run_stateful_on`] on tract.
#[cfg(feature = "tract")]
pub fn run_stateful(model: &ModelProto, steps: &[ArrayD<f32>]) -> Result<Vec<Vec<ArrayD<f32>>>, VerifyError> {
    run_stateful_on(&crate::Tract, model, steps)
}

/// Runs a stateful model (`--emit stateful`) for `steps.len()` calls, input `steps[t]`
/// at call t, each state filled with its `init` before the first call and fed back
/// after each; returns the model's non-state outputs after every call.
pub fn run_stateful_on(
    runtime: &dyn Runtime,
    model: &ModelProto,
    steps: &[ArrayD<f32>],
) -> Result<Vec<Vec<ArrayD<f32>>>, VerifyError> {
    let states = gn_transpile::metadata::states(model).ok_or_else(|| {
        VerifyError::Data("the model has no gn_transpile.state metadata: it is not a stateful model".into())
    })?;
    let Some(first) = steps.first() else { return Ok(Vec::new()) };
    let n = first.shape().first().copied().unwrap_or(1);
    let plan = runtime.load(model, true)?;
    let mut state = initial_states(&states, n);
    let mut readouts = Vec::with_capacity(steps.len());
    for x in steps {
        let mut inputs = vec![x.clone()];
        inputs.extend(state.iter().cloned());
        let mut outputs = plan.run(inputs)?;
        state = outputs.split_off(outputs.len() - states.len());
        readouts.push(outputs);
    }
    Ok(readouts)
}

/// Adds each site's output as a graph output named like the value, so that tract
/// returns it.
pub(crate) fn expose(model: &ModelProto, values: &[String]) -> ModelProto {
    let mut m = model.clone();
    if let Some(g) = m.graph.as_mut() {
        for v in values {
            g.output.push(ValueInfoProto { name: Some(v.clone()), ..Default::default() });
        }
    }
    m
}

/// Regroups a folded site output computed batch by batch (`[T·b, …]` per chunk of b
/// images, chunks concatenated) into `[T, M, …]`.
pub(crate) fn unfold(folded: &ArrayD<f32>, timesteps: usize, images: usize, batch: usize) -> ArrayD<f32> {
    let tail: Vec<usize> = folded.shape()[1..].to_vec();
    let mut shape = vec![timesteps, images];
    shape.extend(&tail);
    let mut out = ArrayD::<f32>::zeros(IxDyn(&shape));
    let per_image: usize = tail.iter().product();
    let src = folded.as_standard_layout();
    let src = src.as_slice().unwrap_or_default();
    let dst = out.as_slice_mut().unwrap_or_default();
    let (mut offset, mut start) = (0, 0);
    while start < images {
        let b = batch.min(images - start);
        for t in 0..timesteps {
            for i in 0..b {
                let from = (offset + t * b + i) * per_image;
                let to = (t * images + start + i) * per_image;
                dst[to..to + per_image].copy_from_slice(&src[from..from + per_image]);
            }
        }
        offset += timesteps * b;
        start += b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks of b images each hold `[T·b, …]`, step-major: regrouped, row (t, i) is image
    /// i at step t.
    #[test]
    fn unfold_regroups_chunked_folded_rows_by_step_and_image() {
        let (t, images, batch) = (3, 5, 2);
        // Chunks of 2, 2 and 1 images; the value of (t, image) is 10·t + image.
        let mut rows = Vec::new();
        for (start, b) in [(0, 2), (2, 2), (4, 1)] {
            for step in 0..t {
                for i in 0..b {
                    rows.push((10 * step + start + i) as f32);
                }
            }
        }
        let folded = ArrayD::from_shape_vec(IxDyn(&[rows.len(), 1]), rows).unwrap();
        let steps = unfold(&folded, t, images, batch);
        assert_eq!(steps.shape(), &[3, 5, 1]);
        for step in 0..t {
            for i in 0..images {
                assert_eq!(steps[[step, i, 0]], (10 * step + i) as f32);
            }
        }
    }
}
