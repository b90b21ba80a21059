//! Small networks built in code for tests and the harness: max-pools after spiking
//! layers (on a time-invariant current and on spikes) and a static-batch export.

use gn_onnx::graph::attr;
use gn_onnx::proto::ModelProto;

use crate::ModelBuilder;

/// x ─► Conv 1×1 ─► QCFS ─► Conv 1×1 ─► QCFS ─► [MaxPool 2×2/2] ─► Flatten.
pub fn two_layers(pool: bool) -> ModelProto {
    let mut b = ModelBuilder::new(&[1, 4, 4]);
    let w1 = b.constant(&[1, 1, 1, 1], &[0.9]);
    let c1 = b.node("Conv", &["input", &w1], vec![]);
    let a1 = b.qcfs(&c1, 1.5, 4);
    let w2 = b.constant(&[1, 1, 1, 1], &[1.3]);
    let c2 = b.node("Conv", &[&a1, &w2], vec![]);
    let a2 = b.qcfs(&c2, 1.2, 4);
    let (last, dims) = if pool {
        let p = b.node("MaxPool", &[&a2], vec![attr::ints("kernel_shape", &[2, 2]), attr::ints("strides", &[2, 2])]);
        (p, 4)
    } else {
        (a2, 16)
    };
    let y = b.node("Flatten", &[&last], vec![attr::int("axis", 1)]);
    b.finish(&y, &[dims])
}

/// The ResNet stem: Conv ─► QCFS ─► MaxPool 3×3/2 (pad 1) ─► Conv ─► QCFS ─► Flatten.
pub fn stem() -> ModelProto {
    let mut b = ModelBuilder::new(&[1, 4, 4]);
    let w1 = b.constant(&[2, 1, 1, 1], &[0.9, -0.4]);
    let c1 = b.node("Conv", &["input", &w1], vec![]);
    let a1 = b.qcfs(&c1, 1.5, 4);
    let p = b.node(
        "MaxPool",
        &[&a1],
        vec![attr::ints("kernel_shape", &[3, 3]), attr::ints("strides", &[2, 2]), attr::ints("pads", &[1, 1, 1, 1])],
    );
    let w2 = b.constant(&[1, 2, 1, 1], &[0.7, 0.5]);
    let c2 = b.node("Conv", &[&p, &w2], vec![]);
    let a2 = b.qcfs(&c2, 1.2, 4);
    let y = b.node("Flatten", &[&a2], vec![attr::int("axis", 1)]);
    b.finish(&y, &[4])
}

/// [`two_layers`] (with the max-pool) as the legacy exporter writes it without
/// `dynamic_axes`: input `[n, 1, 4, 4]`, output `[n, 4]`, and the flatten folded into a
/// Reshape to the constant `[n, -1]`.
pub fn static_batch(n: i64) -> ModelProto {
    let mut m = two_layers(true);
    let g = m.graph.as_mut().expect("a graph");
    let target = format!("static_target{n}");
    g.initializer.push(gn_onnx::data::tensor_i64(&target, &[2], &[n, -1]));
    for node in &mut g.node {
        if node.op_type() == "Flatten" {
            node.op_type = Some("Reshape".into());
            node.attribute.clear();
            node.input.push(target.clone());
        }
    }
    g.input[0] = gn_onnx::data::float_value_info("input", &[Some(n), Some(1), Some(4), Some(4)]);
    g.output[0] = gn_onnx::data::float_value_info("output", &[Some(n), Some(4)]);
    m
}
