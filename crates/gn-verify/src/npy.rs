//! Inputs and labels from `.npy` files.

use ndarray::{ArrayD, IxDyn};

use crate::VerifyError;

/// Reads inputs from a float32 `.npy` file: the batch on axis 0, at least one input.
pub fn read_npy_inputs(path: &std::path::Path) -> Result<ArrayD<f32>, VerifyError> {
    use gn_onnx::data::{read_npy, NpyData};
    let what = path.display();
    let npy = read_npy(path).map_err(|e| VerifyError::Data(e.to_string()))?;
    let NpyData::F32(data) = npy.data else {
        return Err(VerifyError::Data(format!("{what}: inputs must be a float32 (<f4) .npy")));
    };
    match npy.shape.first() {
        None => {
            return Err(VerifyError::Data(format!("{what}: inputs must have the batch on axis 0, not be a scalar")))
        }
        Some(0) => return Err(VerifyError::Data(format!("{what}: holds no inputs (the batch axis is 0)"))),
        _ => {}
    }
    ArrayD::from_shape_vec(IxDyn(&npy.shape), data).map_err(|e| VerifyError::Data(format!("{what}: {e}")))
}

/// Reads non-negative integer labels from a `.npy` file of int64, int32 or uint8 values.
pub fn read_npy_labels(path: &std::path::Path) -> Result<Vec<usize>, VerifyError> {
    use gn_onnx::data::{read_npy, NpyData};
    let what = path.display();
    let npy = read_npy(path).map_err(|e| VerifyError::Data(e.to_string()))?;
    if npy.shape.len() != 1 {
        return Err(VerifyError::Data(format!(
            "{what}: labels must be one class index per input, a 1-D array; this one has shape {:?}",
            npy.shape
        )));
    }
    let values: Vec<i64> = match npy.data {
        NpyData::I64(v) => v,
        NpyData::I32(v) => v.into_iter().map(i64::from).collect(),
        NpyData::U8(v) => v.into_iter().map(i64::from).collect(),
        _ => {
            return Err(VerifyError::Data(format!(
                "{what}: labels must be an int64, int32 or uint8 .npy (class indices)"
            )))
        }
    };
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            usize::try_from(v).map_err(|_| VerifyError::Data(format!("{what}: label {i} is {v}, not a class index")))
        })
        .collect()
}
