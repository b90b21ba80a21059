//! The shapes real exports come in, on one network built here: BatchNormalization after a
//! spiking layer, depthwise and grouped convolutions, a channel Concat of two spiking
//! layers, Pad, Dropout and Identity left by exporters, ShuffleNet's channel shuffle
//! (Reshape → Transpose → Reshape) and the legacy Shape → Gather → Unsqueeze → Concat →
//! Reshape flatten. GN with τ = L at T = 1 reproduces the ANN; longer T converts cleanly.

use gn_onnx::graph::attr;
use gn_onnx::proto::ModelProto;
use gn_tests::{run_tract, ModelBuilder};
use gn_transpile::{transpile, Emit, Options};
use ndarray::Array4;

fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn network() -> ModelProto {
    let mut b = ModelBuilder::new(&[2, 4, 4]);
    let w1 = b.constant(&[4, 2, 1, 1], &values(8, 1, 1.0));
    let c1 = b.node("Conv", &["input", &w1], vec![]);
    let a1 = b.qcfs(&c1, 1.5, 4);
    // BatchNormalization on spikes: affine per channel, exact in time.
    let (scale, bias) = (b.constant(&[4], &[1.2, 0.8, 1.1, 0.9]), b.constant(&[4], &[0.1, -0.2, 0.3, 0.0]));
    let (mean, var) = (b.constant(&[4], &[0.2, 0.1, 0.3, 0.2]), b.constant(&[4], &[1.0, 0.5, 2.0, 1.5]));
    let bn = b.node("BatchNormalization", &[&a1, &scale, &bias, &mean, &var], vec![]);
    // Depthwise 3×3 and grouped 1×1 convolutions, each followed by a spiking layer.
    let wd = b.constant(&[4, 1, 3, 3], &values(36, 2, 0.6));
    let dw = b.node("Conv", &[&bn, &wd], vec![attr::int("group", 4), attr::ints("pads", &[1, 1, 1, 1])]);
    let a2 = b.qcfs(&dw, 1.2, 4);
    let wg = b.constant(&[4, 2, 1, 1], &values(8, 3, 1.0));
    let gc = b.node("Conv", &[&bn, &wg], vec![attr::int("group", 2)]);
    let a3 = b.qcfs(&gc, 1.0, 4);
    // Channel Concat of two spiking layers (DenseNet / Inception style).
    let cat = b.node("Concat", &[&a2, &a3], vec![attr::int("axis", 1)]);
    // Pad, Dropout and Identity left by exporters.
    let pads = b.constant_i64(&[8], &[0, 0, 1, 1, 0, 0, 1, 1]);
    let padded = b.node("Pad", &[&cat, &pads], vec![]);
    let dropped = b.node("Dropout", &[&padded], vec![]);
    let same = b.node("Identity", &[&dropped], vec![]);
    // ShuffleNet's channel shuffle: [N, 8, 6, 6] → [N, 2, 4, 6, 6] → swap → [N, 8, 6, 6].
    let groups = b.constant_i64(&[5], &[0, 2, 4, 6, 6]);
    let split = b.node("Reshape", &[&same, &groups], vec![]);
    let swapped = b.node("Transpose", &[&split], vec![attr::ints("perm", &[0, 2, 1, 3, 4])]);
    let back = b.constant_i64(&[4], &[0, 8, 6, 6]);
    let shuffled = b.node("Reshape", &[&swapped, &back], vec![]);
    let a4 = b.qcfs(&shuffled, 1.4, 4);
    // The legacy flatten: Shape → Gather(0) → Unsqueeze → Concat([-1]) → Reshape.
    let batch = b.size_of(&a4, 0);
    let batch1 = b.vector(&batch);
    let rest = b.constant_i64(&[1], &[-1]);
    let target = b.node("Concat", &[&batch1, &rest], vec![attr::int("axis", 0)]);
    let flat = b.node("Reshape", &[&a4, &target], vec![]);
    let wf = b.constant(&[3, 288], &values(864, 4, 0.3));
    let y = b.node("Gemm", &[&flat, &wf], vec![attr::int("transB", 1)]);
    b.finish(&y, &[3])
}

#[test]
fn a_network_of_real_export_patterns_reproduces_the_ann_at_tau_l() {
    let x = Array4::from_shape_vec((24, 2, 4, 4), values(24 * 32, 5, 2.0)).unwrap();
    let ann = network();
    let want = &run_tract(&ann, &x, 24)[0];
    assert!(want.iter().any(|&v| v.abs() > 1e-3), "the ANN's output is not trivially zero");
    for emit in [Emit::Standard, Emit::CustomOp] {
        let (snn, report) = transpile(&ann, &Options { tau: 4, timesteps: 1, emit, ..Default::default() }).unwrap();
        assert_eq!(report.spiking_layers.len(), 4);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let got = &run_tract(&snn, &x, 24)[0];
        let diff = gn_tests::max_abs_diff(got, want);
        assert!(diff < 1e-4, "{emit:?}: τ = L, T = 1 differs from the ANN by {diff}");
        let (snn, report) =
            transpile(&ann, &Options { timesteps: 4, anytime: true, emit, ..Default::default() }).unwrap();
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let outs = run_tract(&snn, &x, 24);
        assert_eq!(outs[0].shape(), want.shape());
        assert_eq!(outs[1].shape(), &[4, 24, 3]);
    }
}
