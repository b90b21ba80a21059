//! Pieces of the models the unit tests build.

use gn_onnx::data::{node, tensor_f32};
use gn_onnx::proto::{NodeProto, TensorProto};

/// θ·clip(⌊x·L/θ + 1/2⌋/L, 0, 1) writing `y`, in the Div-Clip-Mul-Add-Floor-Div-Mul chain;
/// it reads the initializers of [`qcfs_constants`].
pub fn qcfs(x: &str, y: &str) -> Vec<NodeProto> {
    let v = |s: &str| format!("{y}.{s}");
    vec![
        node("Div", &[x, "theta"], &v("a"), vec![]),
        node("Clip", &[&v("a"), "zero", "one"], &v("b"), vec![]),
        node("Mul", &[&v("b"), "levels"], &v("c"), vec![]),
        node("Add", &[&v("c"), "half"], &v("d"), vec![]),
        node("Floor", &[&v("d")], &v("e"), vec![]),
        node("Div", &[&v("e"), "levels"], &v("f"), vec![]),
        node("Mul", &[&v("f"), "theta"], y, vec![]),
    ]
}

/// The constants [`qcfs`] reads: θ, the clip bounds, L = 4 and the half-step shift.
pub fn qcfs_constants(theta: f32) -> Vec<TensorProto> {
    vec![
        tensor_f32("theta", &[1], &[theta]),
        tensor_f32("zero", &[], &[0.0]),
        tensor_f32("one", &[], &[1.0]),
        tensor_f32("levels", &[], &[4.0]),
        tensor_f32("half", &[], &[0.5]),
    ]
}
