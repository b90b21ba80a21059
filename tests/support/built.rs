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

/// torchvision's ResNet-18 with QCFS activations (L = 4, θ = 2) and random He-normal
/// weights (batch norm folded into the convolutions' biases): the 7×7/2 stem, the
/// 3×3/2 MaxPool, 4 stages × 2 basic blocks of `width`, 2·width, 4·width, 8·width
/// channels, global average pool, a 1000-way Gemm. `width` 64 is the real network
/// (11.7 M weights); input [N, 3, size, size].
pub fn resnet18(size: i64, width: i64, seed: u64) -> ModelProto {
    let mut rng = crate::fuzz::Rng::new(seed);
    let mut normal = move |std: f32| -> f32 {
        let u1 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * (u1 + 1e-300).ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32 * std
    };
    let mut b = ModelBuilder::new(&[3, size, size]);
    let mut conv = |b: &mut ModelBuilder, x: &str, cin: i64, cout: i64, k: i64, stride: i64| -> String {
        let std = (2.0 / (cin * k * k) as f32).sqrt();
        let w: Vec<f32> = (0..cout * cin * k * k).map(|_| normal(std)).collect();
        let bias: Vec<f32> = (0..cout).map(|_| normal(0.1)).collect();
        let wn = b.constant(&[cout, cin, k, k], &w);
        let bn = b.constant(&[cout], &bias);
        let pad = k / 2;
        b.node(
            "Conv",
            &[x, &wn, &bn],
            vec![
                attr::ints("kernel_shape", &[k, k]),
                attr::ints("strides", &[stride, stride]),
                attr::ints("pads", &[pad, pad, pad, pad]),
            ],
        )
    };
    let stem = conv(&mut b, "input", 3, width, 7, 2);
    let a = b.qcfs(&stem, 2.0, 4);
    let mut x = b.node(
        "MaxPool",
        &[&a],
        vec![attr::ints("kernel_shape", &[3, 3]), attr::ints("strides", &[2, 2]), attr::ints("pads", &[1, 1, 1, 1])],
    );
    let mut cin = width;
    for (stage, cout) in [width, 2 * width, 4 * width, 8 * width].into_iter().enumerate() {
        for block in 0..2 {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let c1 = conv(&mut b, &x, cin, cout, 3, stride);
            let a1 = b.qcfs(&c1, 2.0, 4);
            let c2 = conv(&mut b, &a1, cout, cout, 3, 1);
            let shortcut = if stride != 1 || cin != cout { conv(&mut b, &x, cin, cout, 1, stride) } else { x.clone() };
            let sum = b.node("Add", &[&c2, &shortcut], vec![]);
            x = b.qcfs(&sum, 2.0, 4);
            cin = cout;
        }
    }
    let pooled = b.node("GlobalAveragePool", &[&x], vec![]);
    let flat = b.node("Flatten", &[&pooled], vec![attr::int("axis", 1)]);
    let std = (1.0 / cin as f32).sqrt();
    let w = ndarray::Array2::from_shape_fn((1000, cin as usize), |_| normal(std));
    let logits = b.gemm(&flat, &w, &[0.0; 1000]);
    b.finish(&logits, &[1000])
}
