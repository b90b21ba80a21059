//! Max-pools in spiking networks: moved in front of a layer with a time-invariant current
//! (the ResNet stem), and on spikes lowered to the max-pool over running counts, whose
//! time average is the max-pool of the inputs' time averages at every step.

use gn_tests::built::{stem, two_layers};
use gn_tests::run_tract;
use gn_transpile::{transpile, Emit, NeuronKind, Options};
use ndarray::{Array4, ArrayD, Axis, IxDyn};

/// Pseudo-random images [n, 1, 4, 4] in [0, 2].
fn images(n: usize, seed: u64) -> Array4<f32> {
    let mut state = seed | 1;
    Array4::from_shape_fn((n, 1, 4, 4), |_| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0
    })
}

/// 2×2/2 max-pool of rows [T, N, 16] (4×4 maps) into [T, N, 4].
fn pool_rows(a: &ArrayD<f32>) -> ArrayD<f32> {
    let (t, n) = (a.shape()[0], a.shape()[1]);
    ArrayD::from_shape_fn(IxDyn(&[t, n, 4]), |i| {
        let (r, c) = (i[2] / 2 * 2, i[2] % 2 * 2);
        let at = |y: usize, x: usize| a[[i[0], i[1], y * 4 + x]];
        at(r, c).max(at(r, c + 1)).max(at(r + 1, c)).max(at(r + 1, c + 1))
    })
}

#[test]
fn a_max_pool_on_spikes_is_exact_in_rate_at_every_step() {
    let x = images(16, 7);
    for emit in [Emit::Standard, Emit::CustomOp] {
        for (neuron, tau) in [(NeuronKind::Gn, 2), (NeuronKind::If, 1)] {
            let o = Options { neuron, tau, timesteps: 6, anytime: true, emit, ..Default::default() };
            let (pooled, report) = transpile(&two_layers(true), &o).unwrap();
            assert!(report.moves.is_empty(), "the pool reads spikes: nothing moves");
            assert!(report.warnings.is_empty(), "{:?}", report.warnings);
            let (plain, _) = transpile(&two_layers(false), &o).unwrap();
            let got = &run_tract(&pooled, &x, 16)[1];
            let layer = &run_tract(&plain, &x, 16)[1];
            let want = pool_rows(layer);
            let diff = gn_tests::max_abs_diff(got, &want);
            assert!(diff < 1e-5, "{emit:?} {neuron:?}: rows differ by {diff}");
            // Something fires, so the check is not vacuous.
            assert!(want.iter().any(|&v| v > 0.0));
            // Every step's output is a non-negative multiple of the firing unit.
            let steps = got.index_axis(Axis(0), 0);
            assert!(steps.iter().all(|&v| v >= -1e-6));
        }
    }
}

#[test]
fn at_tau_l_and_one_step_a_max_pool_on_spikes_reproduces_the_ann() {
    let x = images(32, 3);
    let ann = two_layers(true);
    let want = &run_tract(&ann, &x, 32)[0];
    let o = Options { tau: 4, timesteps: 1, ..Default::default() };
    let got = &run_tract(&transpile(&ann, &o).unwrap().0, &x, 32)[0];
    let diff = gn_tests::max_abs_diff(got, want);
    assert!(diff < 1e-5, "{diff}");
}

#[test]
fn a_max_pool_stem_moves_in_front_of_its_layer_and_stays_exact() {
    let x = images(32, 11);
    let ann = stem();
    let want = &run_tract(&ann, &x, 32)[0];
    for emit in [Emit::Standard, Emit::CustomOp] {
        let o = Options { tau: 4, timesteps: 1, emit, ..Default::default() };
        let (snn, report) = transpile(&ann, &o).unwrap();
        assert_eq!(report.moves.len(), 1, "{:?}", report.moves);
        assert!(report.moves[0].to_string().contains("MaxPool"), "{}", report.moves[0]);
        let got = &run_tract(&snn, &x, 32)[0];
        let diff = gn_tests::max_abs_diff(got, want);
        assert!(diff < 1e-5, "{emit:?}: τ = L, T = 1 differs from the ANN by {diff}");
        // At T > 1 the moved pool runs once, on the time-invariant current.
        let o = Options { timesteps: 4, emit, ..Default::default() };
        let (snn, _) = transpile(&ann, &o).unwrap();
        let pools = snn.graph.as_ref().unwrap().node.iter().filter(|n| n.op_type() == "MaxPool").count();
        assert_eq!(pools, 1);
        assert_eq!(run_tract(&snn, &x, 32)[0].shape(), want.shape());
    }
}

#[test]
fn a_static_batch_export_with_a_max_pool_on_spikes_converts_with_its_shapes() {
    let x = images(3, 5);
    let ann = gn_tests::built::static_batch(3);
    let want = &run_tract(&ann, &x, 3)[0];
    let o = Options { tau: 4, timesteps: 1, ..Default::default() };
    let got = &run_tract(&transpile(&ann, &o).unwrap().0, &x, 3)[0];
    let diff = gn_tests::max_abs_diff(got, want);
    assert!(diff < 1e-5, "{diff}");
    let o = Options { timesteps: 4, anytime: true, ..Default::default() };
    let snn = transpile(&ann, &o).unwrap().0;
    assert_eq!(snn.graph.as_ref().unwrap().input, ann.graph.as_ref().unwrap().input);
    let outs = run_tract(&snn, &x, 3);
    assert_eq!(outs[0].shape(), &[3, 4]);
    assert_eq!(outs[1].shape(), &[4, 3, 4]);
}

#[test]
fn verify_measures_a_network_whose_stem_pool_moved() {
    use gn_verify::{measure, Spec};
    let x = images(40, 13).into_dyn();
    let spec = Spec {
        tau: 4,
        timesteps: vec![1, 2, 4],
        batch: 20,
        short_max: 4,
        long_images: 40,
        layer_images: 20,
        layer_timesteps: vec![1, 2],
        calibration: None,
        energy: gn_verify::EnergyTable::default(),
        pareto_taus: Vec::new(),
    };
    let m = measure(&stem(), &x, None, &spec, &|_, _, _| {}).expect("verify runs on a moved pool");
    assert_eq!(m.layers.len(), 2);
    // The first layer is compared at the pooled value: exact at T = 1 with τ = L.
    let e = m.exactness.expect("one L");
    assert!(e.relative_mse <= 1e-6, "{}", e.relative_mse);
}
