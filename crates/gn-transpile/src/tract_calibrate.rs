//! `--calibrate` in the command line: runs a [`Recording`]'s model on the sample inputs
//! through tract, a group of batches at a time on the rayon threads, and feeds each
//! batch's activations to the recording. Memory does not grow with the number of inputs.

use std::path::Path;

use gn_onnx::proto::ModelProto;
use ndarray::{ArrayD, Axis, IxDyn};
use rayon::prelude::*;

use crate::calibrate::{ActivationStats, Calibration, Recording, DEFAULT_PERCENTILE};
use crate::error::TranspileError;

/// How to calibrate.
#[derive(Debug, Clone)]
pub struct CalibrationSpec {
    /// The percentile of each activation's values taken as θ (0 < p ≤ 100; 100 = max).
    pub percentile: f64,
    /// θ per output channel instead of per layer.
    pub per_channel: bool,
    /// Inputs per tract call (a static-batch model runs its own batch).
    pub batch: usize,
}

impl Default for CalibrationSpec {
    fn default() -> Self {
        CalibrationSpec { percentile: DEFAULT_PERCENTILE, per_channel: false, batch: 64 }
    }
}

fn data(reason: String) -> TranspileError {
    TranspileError::Calibration(reason)
}

/// Calibrates on the inputs of a float32 `.npy` file (batch on axis 0), read in groups
/// of batches. `progress(done, total)` is called after each group.
pub fn calibrate_file(
    ann: &ModelProto,
    path: &Path,
    spec: &CalibrationSpec,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Calibration, TranspileError> {
    let mut reader = gn_onnx::data::NpyReader::open(path).map_err(|e| data(e.to_string()))?;
    if reader.descr() != "<f4" {
        return Err(data(format!("{}: inputs must be a float32 (<f4) .npy", path.display())));
    }
    if reader.shape.is_empty() || reader.rows() == 0 {
        return Err(data(format!("{}: holds no inputs (it needs the batch on axis 0)", path.display())));
    }
    let row_shape: Vec<usize> = reader.shape[1..].to_vec();
    let total = reader.rows();
    check_input_shape(ann, &reader.shape, path)?;
    calibrate_groups(ann, total, spec, progress, &mut |rows| {
        let values = reader.read_f32_rows(rows).map_err(|e| data(e.to_string()))?;
        let mut shape = vec![values.len() / reader.row_len().max(1)];
        shape.extend(&row_shape);
        ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| data(e.to_string()))
    })
}

/// Calibrates on inputs held in memory (batch on axis 0).
pub fn calibrate(
    ann: &ModelProto,
    x: &ArrayD<f32>,
    spec: &CalibrationSpec,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Calibration, TranspileError> {
    let total = x.shape().first().copied().unwrap_or(0);
    check_input_shape(ann, x.shape(), Path::new("the calibration inputs"))?;
    let mut at = 0;
    calibrate_groups(ann, total, spec, progress, &mut |rows| {
        let end = (at + rows).min(total);
        let group = x.slice_axis(Axis(0), (at..end).into()).to_owned();
        at = end;
        Ok(group)
    })
}

/// Refuses data whose shape per input differs from what the model's first input declares
/// (numeric dimensions only), naming both, before anything runs.
fn check_input_shape(ann: &ModelProto, shape: &[usize], what: &Path) -> Result<(), TranspileError> {
    use gn_onnx::proto::{tensor_shape_proto::dimension::Value, type_proto};
    let Some(g) = ann.graph.as_ref() else { return Ok(()) };
    let Some(input) = g.input.iter().find(|i| !g.initializer.iter().any(|t| t.name() == i.name())) else {
        return Ok(());
    };
    let Some(type_proto::Value::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Ok(());
    };
    let Some(dims) = t.shape.as_ref().map(|s| &s.dim) else { return Ok(()) };
    let declared: Vec<Option<i64>> =
        dims.iter().map(|d| if let Some(Value::DimValue(v)) = d.value { Some(v) } else { None }).collect();
    let fits = declared.len() == shape.len()
        && declared.iter().zip(shape).skip(1).all(|(d, &s)| d.is_none_or(|d| d == s as i64));
    if fits {
        return Ok(());
    }
    let show = |d: &Option<i64>| d.map_or("N".to_string(), |v| v.to_string());
    Err(data(format!(
        "{}: inputs of shape {:?}, but the model's input '{}' takes [{}]",
        what.display(),
        shape,
        input.name(),
        declared.iter().map(show).collect::<Vec<_>>().join(", ")
    )))
}

/// Feeds the inputs, a group of batches at a time, through the recording model on tract;
/// the batches of a group run on the rayon threads and their statistics are merged.
fn calibrate_groups(
    ann: &ModelProto,
    total: usize,
    spec: &CalibrationSpec,
    progress: &(dyn Fn(usize, usize) + Sync),
    next: &mut dyn FnMut(usize) -> Result<ArrayD<f32>, TranspileError>,
) -> Result<Calibration, TranspileError> {
    let mut recording = Recording::new(ann, spec.percentile, spec.per_channel)?;
    if total == 0 {
        return Err(data("no calibration inputs".into()));
    }
    let (outputs, activations) = (recording.outputs(), recording.activations().len());
    let plan = crate::tract_ops::load(recording.model(), true)?;
    let static_batch = crate::time::static_batch_of(ann);
    let batch = static_batch.map_or(spec.batch.max(1), |b| b as usize);
    let workers = rayon::current_num_threads().max(1);
    let mut done = 0;
    progress(0, total);
    while done < total {
        let group = next(batch * workers)?;
        let rows = group.shape()[0];
        if rows == 0 {
            break;
        }
        if static_batch.is_some() && rows % batch != 0 {
            return Err(data(format!(
                "the model's inputs have a static batch of {batch}, and the {total} calibration inputs are not a multiple of it"
            )));
        }
        let chunks: Vec<ArrayD<f32>> = group.axis_chunks_iter(Axis(0), batch).map(|c| c.to_owned()).collect();
        let per_chunk: Result<Vec<(usize, Vec<ActivationStats>)>, TranspileError> = chunks
            .into_par_iter()
            .map(|c| {
                let n = c.shape()[0];
                let out = plan.run(vec![c])?;
                if out.len() != outputs + activations {
                    return Err(data("tract returned a different number of outputs".into()));
                }
                let arrays: Vec<_> = out[outputs..].iter().map(|a| a.as_standard_layout()).collect();
                let views: Vec<(&[usize], &[f32])> =
                    arrays.iter().map(|a| (a.shape(), a.as_slice().unwrap_or_default())).collect();
                Ok((n, recording.batch(&views)?))
            })
            .collect();
        for (n, stats) in per_chunk? {
            recording.merge(n, &stats);
        }
        done += rows;
        progress(done, total);
    }
    recording.finish()
}
