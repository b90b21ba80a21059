//! What a measurement runs its models on: a [`Runtime`] loads a model into a [`Plan`],
//! which runs it on f32 inputs. tract is the command line's ([`Tract`], feature `tract`);
//! the Python package hands in ONNX Runtime.

use gn_onnx::proto::ModelProto;
use ndarray::ArrayD;

use crate::VerifyError;

/// Loads models to run.
pub trait Runtime: Sync {
    /// Loads `model` (an ANN or any emitted form, possibly with extra outputs). `optimize`
    /// false asks for every op evaluated as written, where the runtime can tell.
    fn load(&self, model: &ModelProto, optimize: bool) -> Result<Box<dyn Plan>, VerifyError>;

    /// Whether plans may run batches on several threads at once (the runtime otherwise
    /// parallelises inside each run).
    fn parallel(&self) -> bool {
        true
    }
}

/// A loaded model.
pub trait Plan: Send + Sync {
    /// Runs the model on its inputs, in the graph's order; returns every output.
    fn run(&self, inputs: Vec<ArrayD<f32>>) -> Result<Vec<ArrayD<f32>>, VerifyError>;
}

/// tract, with the kernels of the `gn.transpile` ops registered.
#[cfg(feature = "tract")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Tract;

#[cfg(feature = "tract")]
impl Runtime for Tract {
    fn load(&self, model: &ModelProto, optimize: bool) -> Result<Box<dyn Plan>, VerifyError> {
        Ok(Box::new(gn_transpile::tract_ops::load(model, optimize)?))
    }
}

#[cfg(feature = "tract")]
impl Plan for gn_onnx::tract_bridge::TractModel {
    fn run(&self, inputs: Vec<ArrayD<f32>>) -> Result<Vec<ArrayD<f32>>, VerifyError> {
        Ok(gn_onnx::tract_bridge::TractModel::run(self, inputs)?)
    }
}
