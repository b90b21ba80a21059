//! The errors of the conversion. Each names the node and the reason, in one line.

use gn_onnx::{GraphError, IoError};

#[derive(Debug, thiserror::Error)]
pub enum TranspileError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Invalid(#[from] gn_onnx::validate::Invalid),
    #[error("the graph has no outputs: nothing to convert")]
    NoOutputs,
    #[error("the model has no graph")]
    NoGraph,
    #[error("invalid option: {0}")]
    Option(String),
    #[error("{0}")]
    Calibration(String),
    #[error("the model uses ONNX opset {0}; gn-transpile needs opset 11 or newer (re-export with a newer opset)")]
    OldOpset(i64),
    #[error("no QCFS activation found{found}; gn-transpile converts networks trained with QCFS (clip-floor-shift) activations{hint}")]
    NoSites { found: String, hint: String },
    #[error("node '{node}' ({op}): {reason}")]
    Node { node: String, op: String, reason: String },
    #[error("{pass}: node '{node}': {reason}")]
    Pass { pass: &'static str, node: String, reason: String },
    #[cfg(feature = "tract")]
    #[error(transparent)]
    Tract(#[from] gn_onnx::tract_bridge::TractError),
}
