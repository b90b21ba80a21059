//! Hands a model to `tract-onnx`: typed shapes (the symbolic batch kept) and execution
//! on ndarray inputs.

use tract_onnx::prelude::*;

use crate::proto::ModelProto;

/// A failure inside tract, with its message chain flattened to one line.
#[derive(Debug, thiserror::Error)]
#[error("tract: {0}")]
pub struct TractError(pub String);

fn terr(e: impl std::fmt::Display) -> TractError {
    TractError(e.to_string())
}

/// A model loaded into tract and optimised, ready to run on any batch size.
pub struct TractModel {
    plan: std::sync::Arc<TypedSimplePlan>,
}

/// Adds ops of a custom domain to tract-onnx's registry (keyed by op type; the builder
/// checks the domain).
pub type Registration = fn(&mut tract_onnx::model::OnnxOpRegister);

/// Decodes `model` with tract-onnx into its typed form (shapes inferred, symbolic dims kept).
pub fn typed_model(model: &ModelProto) -> Result<TypedModel, TractError> {
    typed_model_with(model, &[])
}

/// [`typed_model`] with extra ops registered.
pub fn typed_model_with(model: &ModelProto, ops: &[Registration]) -> Result<TypedModel, TractError> {
    let mut onnx = tract_onnx::onnx();
    for register in ops {
        register(&mut onnx.op_register);
    }
    let bytes = crate::io::encode(model);
    let inference = onnx.model_for_read(&mut bytes.as_slice()).map_err(|e| terr(format!("{e:#}")))?;
    inference.into_typed().map_err(|e| terr(format!("{e:#}")))
}

/// The shapes of the model's outputs, as tract infers them (e.g. `batch,10`).
pub fn output_shapes(model: &ModelProto) -> Result<Vec<String>, TractError> {
    let typed = typed_model(model)?;
    typed
        .output_outlets()
        .map_err(terr)?
        .iter()
        .map(|o| typed.outlet_fact(*o).map(|f| format!("{:?}", f.shape)).map_err(terr))
        .collect()
}

impl TractModel {
    /// Loads and optimises a model.
    pub fn new(model: &ModelProto) -> Result<Self, TractError> {
        Self::with_optimization(model, true)
    }

    /// Loads a model, optimised or as written. Unoptimised, tract evaluates every op as
    /// the graph states it (a `Div` stays a division instead of becoming a multiplication
    /// by the reciprocal), which matters at the exact ties of a `Floor`.
    pub fn with_optimization(model: &ModelProto, optimize: bool) -> Result<Self, TractError> {
        Self::with_ops(model, optimize, &[])
    }

    /// Loads a model whose nodes may use the ops that `ops` register.
    pub fn with_ops(model: &ModelProto, optimize: bool, ops: &[Registration]) -> Result<Self, TractError> {
        let mut typed = typed_model_with(model, ops)?;
        if optimize {
            typed = typed.into_optimized().map_err(|e| terr(format!("{e:#}")))?;
        }
        let plan = typed.into_runnable().map_err(|e| terr(format!("{e:#}")))?;
        Ok(TractModel { plan })
    }

    /// Runs the model on f32 inputs; returns every output as f32.
    pub fn run(&self, inputs: Vec<tract_ndarray::ArrayD<f32>>) -> Result<Vec<tract_ndarray::ArrayD<f32>>, TractError> {
        let inputs: TVec<TValue> = inputs.into_iter().map(|a| Tensor::from(a).into()).collect();
        let outputs = self.plan.run(inputs).map_err(|e| terr(format!("{e:#}")))?;
        outputs.into_iter().map(|t| t.into_tensor().into_plain_array::<f32>().map_err(terr)).collect()
    }
}
