//! Ops exact in rate (docs/design.md §5.4): a squeeze-excite gate, a LayerNorm and an
//! attention block between spiking layers. The readout after t steps must be what the
//! ANN's tail computes on the spiking layer's average over those t steps, at every t; the
//! readout after t steps cannot depend on how many steps follow; and every emitted form
//! gives the same rows.

use gn_onnx::graph::attr;
use gn_onnx::proto::ModelProto;
use gn_tests::reference::matrix;
use gn_tests::ModelBuilder;
use gn_transpile::{transpile, Emit, NeuronKind, Options};
use ndarray::{ArrayD, Axis};

/// The blocks tried, each between a QCFS layer and a linear head.
#[derive(Clone, Copy, Debug)]
enum Block {
    /// `h · σ(W h)` (squeeze-excite's gate, on features).
    Gate,
    /// `LayerNormalization(h)` over the features.
    LayerNorm,
    /// One head of self-attention over 4 tokens: `softmax(Q Kᵀ / √8) V`.
    Attention,
    /// The same attention with its two products written as Einsums (`bid,bjd->bij`,
    /// `bij,bjd->bid`), as MaxViT's export has them.
    Einsum,
    /// `softmax(h) · h + softmax(h)`: a region output (the softmax) that the region reads
    /// too, uncompensated, and the outside reads compensated.
    Shared,
    /// Two heads of self-attention written sequence-first, as `nn.MultiheadAttention`'s
    /// legacy export has it: the tokens moved to axis 0 (`Transpose [1, 0, 2]`), the
    /// heads split with the batch as the minor factor of a merged axis (`Reshape [L, −1,
    /// 4]`), the products on `[N·heads, L, 4]`, and everything moved back, the merged
    /// rows L·N computed from a shape.
    SequenceFirst,
}

const TOKENS: i64 = 4;

/// The feature dims of the QCFS layer's output (after the batch).
fn site_dims(block: Block) -> Vec<i64> {
    match block {
        Block::Attention | Block::Einsum | Block::SequenceFirst => vec![TOKENS, 8],
        _ => vec![8],
    }
}

fn weights(b: &mut ModelBuilder, rows: usize, cols: usize, seed: u64) -> String {
    let w = matrix(rows, cols, seed, 0.6);
    b.constant(&[rows as i64, cols as i64], w.as_slice().unwrap())
}

/// input → (Gemm or MatMul) → QCFS: the spiking layer's value.
fn prefix(b: &mut ModelBuilder, block: Block) -> String {
    let x = match block {
        Block::Attention | Block::Einsum | Block::SequenceFirst => {
            let w = weights(b, 6, 8, 1);
            b.node("MatMul", &["input", &w], vec![])
        }
        _ => b.gemm("input", &matrix(8, 6, 1, 0.8), &[0.2; 8]),
    };
    b.qcfs(&x, 1.5, 4)
}

/// The block and the head on the spiking layer's value `h`.
fn tail(b: &mut ModelBuilder, block: Block, h: &str) -> String {
    let y = match block {
        Block::Gate => {
            let a = b.gemm(h, &matrix(8, 8, 2, 0.7), &[-0.3; 8]);
            let g = b.node("Sigmoid", &[&a], vec![]);
            b.node("Mul", &[h, &g], vec![])
        }
        Block::LayerNorm => {
            let scale = b.constant(&[8], &[1.0, 0.5, 1.5, 1.0, 0.8, 1.2, 1.0, 0.9]);
            let bias = b.constant(&[8], &[0.1; 8]);
            b.node("LayerNormalization", &[h, &scale, &bias], vec![attr::int("axis", -1), attr::float("epsilon", 1e-3)])
        }
        Block::Shared => {
            let a = b.node("Softmax", &[h], vec![attr::int("axis", -1)]);
            let m = b.node("Mul", &[&a, h], vec![]);
            b.node("Add", &[&m, &a], vec![])
        }
        Block::Attention => {
            let (wq, wk, wv) = (weights(b, 8, 8, 3), weights(b, 8, 8, 4), weights(b, 8, 8, 5));
            let q = b.node("MatMul", &[h, &wq], vec![]);
            let k = b.node("MatMul", &[h, &wk], vec![]);
            let v = b.node("MatMul", &[h, &wv], vec![]);
            let kt = b.node("Transpose", &[&k], vec![attr::ints("perm", &[0, 2, 1])]);
            let s = b.node("MatMul", &[&q, &kt], vec![]);
            let root = b.constant(&[], &[8f32.sqrt()]);
            let scaled = b.node("Div", &[&s, &root], vec![]);
            let a = b.node("Softmax", &[&scaled], vec![attr::int("axis", -1)]);
            let o = b.node("MatMul", &[&a, &v], vec![]);
            b.node("Flatten", &[&o], vec![attr::int("axis", 1)])
        }
        Block::SequenceFirst => {
            let perm = |p: &[i64]| vec![attr::ints("perm", p)];
            let t = b.node("Transpose", &[h], perm(&[1, 0, 2]));
            let heads = b.constant_i64(&[3], &[TOKENS, -1, 4]);
            let mut split = Vec::new();
            for (k, order) in [(3, [1, 0, 2]), (4, [1, 2, 0]), (5, [1, 0, 2])] {
                let w = weights(b, 8, 8, k);
                let p = b.node("MatMul", &[&t, &w], vec![]);
                let r = b.node("Reshape", &[&p, &heads], vec![]);
                split.push(b.node("Transpose", &[&r], perm(&order)));
            }
            let s = b.node("MatMul", &[&split[0], &split[1]], vec![]);
            let root = b.constant(&[], &[2.0]);
            let scaled = b.node("Div", &[&s, &root], vec![]);
            let a = b.node("Softmax", &[&scaled], vec![attr::int("axis", -1)]);
            let o = b.node("MatMul", &[&a, &split[2]], vec![]);
            let back = b.node("Transpose", &[&o], perm(&[1, 0, 2]));
            // The merged rows L·N computed from the sequence-first tensor's shape, as the
            // legacy export computes them: T·L·N after folding, T times the step's L·N, so
            // this Reshape runs once over all the steps.
            let shape = b.node("Shape", &[&t], vec![]);
            let (zero, one) = (b.constant_i64(&[], &[0]), b.constant_i64(&[], &[1]));
            let tokens = b.node("Gather", &[&shape, &zero], vec![attr::int("axis", 0)]);
            let batch = b.node("Gather", &[&shape, &one], vec![attr::int("axis", 0)]);
            let merged_rows = b.node("Mul", &[&tokens, &batch], vec![]);
            let axes = b.constant_i64(&[1], &[0]);
            let merged_rows = b.node("Unsqueeze", &[&merged_rows, &axes], vec![]);
            let width = b.constant_i64(&[1], &[8]);
            let merged = b.node("Concat", &[&merged_rows, &width], vec![attr::int("axis", 0)]);
            let rows = b.node("Reshape", &[&back, &merged], vec![]);
            let w = weights(b, 8, 8, 6);
            let out = b.node("MatMul", &[&rows, &w], vec![]);
            // The tokens L = L·N / N, as `out.size(0) // bsz` exports: a quotient of the
            // folded rows, a target the steps' copies compute again from one step's shape.
            let out_rows = b.size_of(&out, 0);
            let tokens = b.node("Div", &[&out_rows, &batch], vec![]);
            let tokens = b.vector(&tokens);
            let rest = b.constant_i64(&[2], &[-1, 8]);
            let tokens = b.node("Concat", &[&tokens, &rest], vec![attr::int("axis", 0)]);
            let seq = b.node("Reshape", &[&out, &tokens], vec![]);
            let y = b.node("Transpose", &[&seq], perm(&[1, 0, 2]));
            b.node("Flatten", &[&y], vec![attr::int("axis", 1)])
        }
        Block::Einsum => {
            let (wq, wk, wv) = (weights(b, 8, 8, 3), weights(b, 8, 8, 4), weights(b, 8, 8, 5));
            let q = b.node("MatMul", &[h, &wq], vec![]);
            let k = b.node("MatMul", &[h, &wk], vec![]);
            let v = b.node("MatMul", &[h, &wv], vec![]);
            let s = b.node("Einsum", &[&q, &k], vec![attr::string("equation", "bid,bjd->bij")]);
            let a = b.node("Softmax", &[&s], vec![attr::int("axis", -1)]);
            let o = b.node("Einsum", &[&a, &v], vec![attr::string("equation", "bij,bjd->bid")]);
            b.node("Flatten", &[&o], vec![attr::int("axis", 1)])
        }
    };
    let width = site_dims(block).iter().product::<i64>() as usize;
    b.gemm(&y, &matrix(4, width, 6, 0.5), &[0.0; 4])
}

fn input_dims(block: Block) -> Vec<i64> {
    match block {
        Block::Attention | Block::Einsum | Block::SequenceFirst => vec![TOKENS, 6],
        _ => vec![6],
    }
}

/// The whole network, the network up to its spiking layer, and its tail from the
/// spiking layer's value.
fn models(block: Block) -> (ModelProto, ModelProto, ModelProto) {
    let mut b = ModelBuilder::new(&input_dims(block));
    let h = prefix(&mut b, block);
    let y = tail(&mut b, block, &h);
    let whole = b.finish(&y, &[4]);
    let mut b = ModelBuilder::new(&input_dims(block));
    let h = prefix(&mut b, block);
    let up_to = b.finish(&h, &site_dims(block));
    let mut b = ModelBuilder::new(&site_dims(block));
    let y = tail(&mut b, block, "input");
    let from = b.finish(&y, &[4]);
    (whole, up_to, from)
}

fn inputs(block: Block, n: usize) -> ArrayD<f32> {
    let dims = input_dims(block);
    let width = dims.iter().product::<i64>() as usize;
    let mut shape = vec![n];
    shape.extend(dims.iter().map(|&d| d as usize));
    matrix(n, width, 11, 2.0).into_shape_with_order(shape).unwrap().into_dyn()
}

fn convert(model: &ModelProto, options: &Options) -> ModelProto {
    transpile(model, options).unwrap_or_else(|e| panic!("conversion failed: {e}")).0
}

fn anytime(timesteps: usize, emit: Emit) -> Options {
    Options { neuron: NeuronKind::Gn, tau: 4, timesteps, anytime: true, emit, ..Default::default() }
}

fn run(model: &ModelProto, x: &ArrayD<f32>) -> Vec<ArrayD<f32>> {
    gn_verify::run_batched(model, x, 16, &|_| {}).unwrap()
}

/// `[n]`, axis 0 of `v`'s shape, as exports read the batch: Shape, Gather(0), Unsqueeze.
fn batch_of(b: &mut ModelBuilder, v: &str) -> String {
    let n = b.size_of(v, 0);
    b.vector(&n)
}

/// Asserts that the two variants of a network, `build(true)` and `build(false)`, give the
/// same anytime rows at `timesteps` in each form.
fn same_rows(build: &impl Fn(bool) -> ModelProto, x: &ArrayD<f32>, timesteps: usize, forms: &[Emit]) {
    for &form in forms {
        let got = run(&convert(&build(true), &anytime(timesteps, form)), x);
        let want = run(&convert(&build(false), &anytime(timesteps, form)), x);
        assert_eq!(max_abs_diff(&got[1], &want[1]), 0.0, "{form:?}");
    }
}

fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max)
}

/// Row t of the anytime output is the ANN's tail on the spiking layer's average over the
/// first t steps, at T = 1, 2 and 5, for each block.
#[test]
fn the_readout_after_t_steps_is_the_tail_on_the_averages_of_t_steps() {
    let x = inputs(Block::Gate, 24);
    for block in [Block::Gate, Block::LayerNorm, Block::Attention, Block::Einsum, Block::Shared, Block::SequenceFirst] {
        let x = if site_dims(block).len() > 1 { inputs(block, 24) } else { x.clone() };
        let (whole, up_to, from) = models(block);
        for timesteps in [1, 2, 5] {
            let rows = run(&convert(&whole, &anytime(timesteps, Emit::Standard)), &x);
            let averages = run(&convert(&up_to, &anytime(timesteps, Emit::Standard)), &x);
            for t in 0..timesteps {
                let average = averages[1].index_axis(Axis(0), t).to_owned();
                let expected = run(&from, &average).remove(0);
                let got = rows[1].index_axis(Axis(0), t).to_owned();
                let diff = max_abs_diff(&got, &expected);
                assert!(diff <= 1e-4, "{block:?} T={timesteps} t={}: differs by {diff}", t + 1);
            }
            // The spikes did vary over the steps: the check is not on a constant.
            if timesteps == 5 {
                let first = averages[1].index_axis(Axis(0), 0).to_owned();
                let last = averages[1].index_axis(Axis(0), 4).to_owned();
                assert!(max_abs_diff(&first, &last) > 0.1, "{block:?}: the averages do not change");
            }
        }
    }
}

/// The readout after t steps does not depend on how many steps follow: row t of the
/// T = 8 anytime output is the output of the model converted with T = t.
#[test]
fn the_readout_after_t_steps_does_not_depend_on_later_steps() {
    for block in [Block::Gate, Block::LayerNorm, Block::Attention, Block::Einsum, Block::SequenceFirst] {
        let x = inputs(block, 16);
        let (whole, _, _) = models(block);
        let rows = run(&convert(&whole, &anytime(8, Emit::Standard)), &x);
        for t in 1..=8 {
            let alone = run(&convert(&whole, &Options { timesteps: t, ..anytime(t, Emit::Standard) }), &x);
            let diff = max_abs_diff(&rows[1].index_axis(Axis(0), t - 1).to_owned(), &alone[0]);
            assert!(diff <= 1e-5, "{block:?} t={t}: differs by {diff}");
        }
    }
}

/// The custom-op form runs the same regions, and the stateful form's calls give the
/// anytime rows.
#[test]
fn every_form_computes_the_same_rows() {
    for block in [Block::Gate, Block::LayerNorm, Block::Attention, Block::Einsum, Block::Shared, Block::SequenceFirst] {
        let x = inputs(block, 16);
        let (whole, _, _) = models(block);
        let rows = run(&convert(&whole, &anytime(6, Emit::Standard)), &x);
        let custom = run(&convert(&whole, &anytime(6, Emit::CustomOp)), &x);
        assert!(max_abs_diff(&rows[1], &custom[1]) <= 1e-5, "{block:?}: custom-op");
        let stateful = Options { neuron: NeuronKind::Gn, tau: 4, emit: Emit::Stateful, ..Default::default() };
        let calls = gn_verify::run_stateful(&convert(&whole, &stateful), &vec![x.clone(); 6]).unwrap();
        for (t, outputs) in calls.iter().enumerate() {
            let diff = max_abs_diff(&outputs[0], &rows[1].index_axis(Axis(0), t).to_owned());
            assert!(diff <= 1e-4, "{block:?} stateful call {}: differs by {diff}", t + 1);
        }
    }
}

/// `inspect` names the block's ops exact in rate, and nothing needs `--allow-inexact`.
#[test]
fn inspect_lists_the_ops_exact_in_rate() {
    for (block, ops) in [
        (Block::Gate, vec!["Sigmoid", "Mul"]),
        (Block::LayerNorm, vec!["LayerNormalization"]),
        (Block::Attention, vec!["MatMul", "Softmax"]),
        (Block::Einsum, vec!["Einsum", "Softmax"]),
        (Block::SequenceFirst, vec!["MatMul", "Softmax"]),
    ] {
        let (whole, _, _) = models(block);
        let audit = gn_transpile::inspect::audit(&whole).unwrap();
        assert!(audit.inexact.is_empty() && audit.refused.is_empty(), "{block:?}: {:?}", audit.inexact);
        for op in ops {
            assert!(audit.rate.iter().any(|r| r.op == op), "{block:?}: {op} not exact in rate: {:?}", audit.rate);
        }
    }
}

/// Compensating op by op computes the same rows as compensating once per region, with a
/// running average and a difference between every pair of rate-coded ops.
#[test]
fn op_by_op_compensation_gives_the_same_rows_with_more_work() {
    // Attention: Q·Kᵀ averages Q and Kᵀ, the Softmax the scaled scores, ·V the weights and V
    // (one region averages Q, K and V: 3).
    for (block, per_op_cumsums) in [(Block::Attention, 5), (Block::LayerNorm, 1), (Block::Gate, 3)] {
        let x = inputs(block, 16);
        let (whole, _, _) = models(block);
        let per_op = Options { compensation: gn_transpile::Compensation::PerOp, ..anytime(5, Emit::Standard) };
        let (a, b) = (convert(&whole, &anytime(5, Emit::Standard)), convert(&whole, &per_op));
        let diff = max_abs_diff(&run(&a, &x)[1], &run(&b, &x)[1]);
        assert!(diff <= 1e-4, "{block:?}: differs by {diff}");
        let cumsums = b.graph.as_ref().unwrap().node.iter().filter(|n| n.op_type() == "CumSum").count();
        assert_eq!(cumsums, per_op_cumsums, "{block:?}");
    }
}

/// Each block is one region: its inputs averaged once and each output compensated once.
#[test]
fn each_block_is_compensated_once() {
    for (block, averaged) in [(Block::Gate, 2), (Block::LayerNorm, 1), (Block::Attention, 3)] {
        let (whole, _, _) = models(block);
        let snn = convert(&whole, &anytime(4, Emit::Standard));
        let ops: Vec<&str> = snn.graph.as_ref().unwrap().node.iter().map(|n| n.op_type()).collect();
        let count = |op: &str| ops.iter().filter(|o| **o == op).count();
        // One CumSum per averaged input, one Pad per compensated output.
        assert_eq!((count("CumSum"), count("Pad")), (averaged, 1), "{block:?}: {ops:?}");
    }
}

/// A Reshape whose target reads the batch from the input's shape (`Concat(Unsqueeze(
/// Gather(Shape(x), 0)), [2, 4])`, as exporters with a dynamic batch write it) converts
/// and computes what the same network with a constant `[-1, 2, 4]` target computes.
#[test]
fn a_reshape_that_reads_the_batch_from_the_input_converts() {
    let build = |dynamic: bool| {
        let mut b = ModelBuilder::new(&[6]);
        let h = prefix(&mut b, Block::Gate);
        let target = if dynamic {
            let n1 = batch_of(&mut b, "input");
            let rest = b.constant_i64(&[2], &[2, 4]);
            b.node("Concat", &[&n1, &rest], vec![attr::int("axis", 0)])
        } else {
            b.constant_i64(&[3], &[-1, 2, 4])
        };
        let r = b.node("Reshape", &[&h, &target], vec![]);
        let s = b.node("Softmax", &[&r], vec![attr::int("axis", -1)]);
        let f = b.node("Flatten", &[&s], vec![attr::int("axis", 1)]);
        let y = b.gemm(&f, &matrix(4, 8, 6, 0.5), &[0.0; 4]);
        b.finish(&y, &[4])
    };
    let x = inputs(Block::Gate, 12);
    same_rows(&build, &x, 4, &[Emit::Standard, Emit::CustomOp]);
}

/// `inspect` says which weighted ops read spikes (accumulates) and which read analog
/// values: the gate's Gemm reads the spiking layer, the head reads the gated product.
/// A Reshape target whose first entry is the rows and whose later entries are computed
/// from them too (`[n, n, 8 / n]` on a static batch of 2): after folding the rows are T·n, so it
/// runs once per step, named by `inspect`, and gives the rows of a plain `[0, 2, 4]`.
#[test]
fn a_target_that_reads_the_rows_after_its_first_entry_runs_step_by_step() {
    let build = |computed: bool| {
        let mut b = ModelBuilder::new(&[6]);
        let h = prefix(&mut b, Block::Gate);
        let target = if computed {
            let n = b.size_of(&h, 0);
            let eight = b.constant_i64(&[], &[8]);
            let width = b.node("Div", &[&eight, &n], vec![]);
            let (n1, w1) = (b.vector(&n), b.vector(&width));
            b.node("Concat", &[&n1, &n1, &w1], vec![attr::int("axis", 0)])
        } else {
            b.constant_i64(&[3], &[0, 2, 4])
        };
        let r = b.node("Reshape", &[&h, &target], vec![]);
        let s = b.node("Softmax", &[&r], vec![attr::int("axis", -1)]);
        let f = b.node("Flatten", &[&s], vec![attr::int("axis", 1)]);
        let y = b.gemm(&f, &matrix(4, 8, 6, 0.5), &[0.0; 4]);
        // A static batch of 2, so that runtimes can evaluate 8 / n.
        let mut m = b.finish(&y, &[4]);
        let g = m.graph.as_mut().unwrap();
        g.input[0] = gn_onnx::data::float_value_info("input", &[Some(2), Some(6)]);
        g.output[0] = gn_onnx::data::float_value_info(g.output[0].name(), &[Some(2), Some(4)]);
        m
    };
    let audit = gn_transpile::inspect::audit(&build(true)).unwrap();
    let reshape = audit.per_step.iter().find(|r| r.op == "Reshape").expect("a per-step Reshape");
    assert!(reshape.reason.contains("in an entry after the first"), "{}", reshape.reason);
    let x = inputs(Block::Gate, 2);
    same_rows(&build, &x, 3, &[Emit::Standard, Emit::CustomOp]);
}

/// A Range to a time-varying tensor's rows (each sample's index, added to its features)
/// counts the step's rows, not T times them: it runs once per step and gives the rows of
/// the same index computed from the network input's batch.
#[test]
fn a_range_to_the_rows_runs_step_by_step() {
    let build = |from_spikes: bool| {
        let mut b = ModelBuilder::new(&[6]);
        let h = prefix(&mut b, Block::Gate);
        let n = b.size_of(if from_spikes { &h } else { "input" }, 0);
        let (start, delta) = (b.constant_i64(&[], &[0]), b.constant_i64(&[], &[1]));
        let index = b.node("Range", &[&start, &n, &delta], vec![]);
        let index = b.node("Cast", &[&index], vec![attr::int("to", 1)]);
        let axes = b.constant_i64(&[1], &[1]);
        let index = b.node("Unsqueeze", &[&index, &axes], vec![]);
        let y = b.node("Add", &[&h, &index], vec![]);
        let y = b.gemm(&y, &matrix(4, 8, 6, 0.5), &[0.0; 4]);
        b.finish(&y, &[4])
    };
    let audit = gn_transpile::inspect::audit(&build(true)).unwrap();
    assert!(audit.per_step.iter().any(|r| r.op == "Range"), "{:?}", audit.per_step);
    let x = inputs(Block::Gate, 5);
    same_rows(&build, &x, 3, &[Emit::Standard, Emit::CustomOp]);
}

/// A constant expanded to a time-varying tensor's shape is data with T times the step's
/// rows (folded), and its own shape holds them too: a Reshape to it runs once over all
/// the steps and gives the rows of a plain `[0, 8]`.
#[test]
fn the_shape_of_an_expand_to_a_time_varying_shape_holds_the_rows() {
    let build = |expanded: bool| {
        let mut b = ModelBuilder::new(&[6]);
        let h = prefix(&mut b, Block::Gate);
        let target = if expanded {
            let s = b.node("Shape", &[&h], vec![]);
            let c = b.constant(&[1, 8], &[0.0; 8]);
            let e = b.node("Expand", &[&c, &s], vec![]);
            b.node("Shape", &[&e], vec![])
        } else {
            b.constant_i64(&[2], &[0, 8])
        };
        let r = b.node("Reshape", &[&h, &target], vec![]);
        let y = b.gemm(&r, &matrix(4, 8, 6, 0.5), &[0.0; 4]);
        b.finish(&y, &[4])
    };
    let audit = gn_transpile::inspect::audit(&build(true)).unwrap();
    assert!(audit.per_step.is_empty() && audit.refused.is_empty(), "{:?} {:?}", audit.per_step, audit.refused);
    let x = inputs(Block::Gate, 5);
    same_rows(&build, &x, 3, &[Emit::Standard]);
}

/// A constant token expanded to the batch of a time-varying tensor (`[n, 1]`, n read from
/// its shape), then a spiking layer on it: the token is data with T times the step's rows,
/// not a shape, and converts as the token expanded to the network input's batch does.
#[test]
fn a_token_expanded_to_a_time_varying_batch_is_data() {
    let build = |from_spikes: bool| {
        let mut b = ModelBuilder::new(&[6]);
        let h = prefix(&mut b, Block::Gate);
        let values: Vec<f32> = (0..8).map(|i| i as f32 * 0.3 - 0.5).collect();
        let token = b.constant(&[1, 8], &values);
        let n = batch_of(&mut b, if from_spikes { &h } else { "input" });
        let one = b.constant_i64(&[1], &[1]);
        let sizes = b.node("Concat", &[&n, &one], vec![attr::int("axis", 0)]);
        let token = b.node("Expand", &[&token, &sizes], vec![]);
        let spikes = b.qcfs(&token, 1.5, 4);
        let y = b.node("Add", &[&h, &spikes], vec![]);
        let y = b.gemm(&y, &matrix(4, 8, 6, 0.5), &[0.0; 4]);
        b.finish(&y, &[4])
    };
    let audit = gn_transpile::inspect::audit(&build(true)).unwrap();
    assert!(audit.refused.is_empty() && audit.per_step.is_empty(), "{:?} {:?}", audit.refused, audit.per_step);
    let x = inputs(Block::Gate, 5);
    same_rows(&build, &x, 3, &[Emit::Standard, Emit::CustomOp]);
}

/// A spiking layer on a constant without the batch (a token's activation) is refused in
/// one line, instead of writing a model whose steps cannot line up with the batch.
#[test]
fn a_spiking_layer_on_a_constant_is_refused() {
    let mut b = ModelBuilder::new(&[6]);
    let h = prefix(&mut b, Block::Gate);
    let token = b.constant(&[1, 8], &[0.5; 8]);
    let spikes = b.qcfs(&token, 1.5, 4);
    let y = b.node("Add", &[&h, &spikes], vec![]);
    let y = b.gemm(&y, &matrix(4, 8, 6, 0.5), &[0.0; 4]);
    let model = b.finish(&y, &[4]);
    let err = transpile(&model, &anytime(3, Emit::Standard)).unwrap_err().to_string();
    assert!(err.contains("a spiking layer on a constant"), "{err}");
}

/// The legacy export of `token.expand(h.shape[0], -1)`: the −1s replaced through a
/// `ConstantOfShape` of the target's own shape (its length: a constant), `Equal` and
/// `Where`. It converts as the plain broadcast does, the ConstantOfShape computed once.
#[test]
fn the_legacy_expand_pattern_converts() {
    let build = |expanded: bool| {
        let mut b = ModelBuilder::new(&[6]);
        let h = prefix(&mut b, Block::Gate);
        let values: Vec<f32> = (0..8).map(|i| i as f32 * 0.3 - 0.5).collect();
        let token = b.constant(&[1, 8], &values);
        let token = if expanded {
            let n = batch_of(&mut b, &h);
            let minus_one = b.constant_i64(&[1], &[-1]);
            let sizes = b.node("Concat", &[&n, &minus_one], vec![attr::int("axis", 0)]);
            let length = b.node("Shape", &[&sizes], vec![]);
            let one = attr::tensor("value", gn_onnx::data::tensor_i64("value", &[1], &[1]));
            let ones = b.node("ConstantOfShape", &[&length], vec![one]);
            let neg = b.constant_i64(&[], &[-1]);
            let neg_ones = b.node("Mul", &[&ones, &neg], vec![]);
            let free = b.node("Equal", &[&sizes, &neg_ones], vec![]);
            let sizes = b.node("Where", &[&free, &ones, &sizes], vec![]);
            b.node("Expand", &[&token, &sizes], vec![])
        } else {
            token
        };
        let y = b.node("Add", &[&h, &token], vec![]);
        let y = b.gemm(&y, &matrix(4, 8, 6, 0.5), &[0.0; 4]);
        b.finish(&y, &[4])
    };
    let audit = gn_transpile::inspect::audit(&build(true)).unwrap();
    assert!(audit.refused.is_empty() && audit.per_step.is_empty(), "{:?} {:?}", audit.refused, audit.per_step);
    let x = inputs(Block::Gate, 5);
    same_rows(&build, &x, 3, &[Emit::Standard]);
}

#[test]
fn inspect_says_which_weighted_ops_read_spikes() {
    let (whole, _, _) = models(Block::Gate);
    let audit = gn_transpile::inspect::audit(&whole).unwrap();
    let reads: Vec<&str> = audit.weighted.iter().map(|w| w.reason.as_str()).collect();
    // The first Gemm reads the image, the gate's Gemm the spikes, the head the product.
    assert_eq!(reads, ["analog", "spikes", "analog"], "{:?}", audit.weighted);
    let text = gn_transpile::inspect::inspect(&whole).unwrap();
    assert!(text.contains("weighted ops reading spikes (accumulates): 1 of 3"), "{text}");
    // Per value: the spiking layer's output carries spikes; the gate's sum, its sigmoid,
    // the product, the head and the graph output change every step; the first Gemm runs
    // once.
    let site = &audit.sites[0].output;
    let t = &audit.tensors;
    assert_eq!(t.spikes, std::slice::from_ref(site), "{t:?}");
    assert_eq!(t.analog_once, [audit.sites[0].input.clone()], "{t:?}");
    assert_eq!(t.analog_steps.len(), 5, "{t:?}");
    assert!(text.contains(&format!("values carrying spikes (per step, a count of θ_GN from 0 to τ; 0 or θ for IF): 1; analog values changing every step: 5; analog values computed once: 1\n  spikes: {site}\n")), "{text}");
}

/// A Reshape target built from `Shape(x, start = -2, end = -1)` (axis 0 of a rank-2 input)
/// or from `Size(x) / 16` holds the batch too: both are computed again with T·N.
#[test]
fn a_batch_read_by_a_negative_start_or_by_size_converts() {
    let build = |how: &str| {
        let mut b = ModelBuilder::new(&[16]);
        let h = b.gemm("input", &matrix(16, 16, 1, 0.4), &[0.2; 16]);
        let h = b.qcfs(&h, 1.5, 4);
        let rest = b.constant_i64(&[2], &[4, 4]);
        let target = match how {
            "start" => {
                let s = b.node("Shape", &["input"], vec![attr::int("start", -2), attr::int("end", -1)]);
                b.node("Concat", &[&s, &rest], vec![attr::int("axis", 0)])
            }
            "size" => {
                let s = b.node("Size", &["input"], vec![]);
                let width = b.constant_i64(&[], &[16]);
                let n = b.node("Div", &[&s, &width], vec![]);
                let axes = b.constant_i64(&[1], &[0]);
                let n1 = b.node("Unsqueeze", &[&n, &axes], vec![]);
                b.node("Concat", &[&n1, &rest], vec![attr::int("axis", 0)])
            }
            _ => b.constant_i64(&[3], &[-1, 4, 4]),
        };
        let r = b.node("Reshape", &[&h, &target], vec![]);
        let f = b.node("Flatten", &[&r], vec![attr::int("axis", 1)]);
        let y = b.gemm(&f, &matrix(4, 16, 6, 0.5), &[0.0; 4]);
        b.finish(&y, &[4])
    };
    let x = matrix(12, 16, 3, 2.0).into_dyn();
    let want = run(&convert(&build("constant"), &anytime(4, Emit::Standard)), &x);
    for how in ["start", "size"] {
        let got = run(&convert(&build(how), &anytime(4, Emit::Standard)), &x);
        assert_eq!(max_abs_diff(&got[1], &want[1]), 0.0, "{how}");
    }
}

/// The stateful form of a region whose input is also a graph output: the region sums the
/// step's value, not the readout's average.
#[test]
fn a_region_input_that_is_a_graph_output_keeps_its_state() {
    let (mut whole, _, _) = models(Block::Gate);
    let site = gn_transpile::inspect::audit(&whole).unwrap().sites[0].output.clone();
    whole.graph.as_mut().unwrap().output.push(gn_onnx::data::float_value_info(&site, &[None, Some(8)]));
    let x = inputs(Block::Gate, 16);
    let rows = run(&convert(&whole, &anytime(5, Emit::Standard)), &x);
    let stateful = Options { neuron: NeuronKind::Gn, tau: 4, emit: Emit::Stateful, ..Default::default() };
    let calls = gn_verify::run_stateful(&convert(&whole, &stateful), &vec![x.clone(); 5]).unwrap();
    for (t, outputs) in calls.iter().enumerate() {
        for k in 0..2 {
            let diff = max_abs_diff(&outputs[k], &rows[2 + k].index_axis(Axis(0), t).to_owned());
            assert!(diff <= 1e-4, "output {k}, call {}: differs by {diff}", t + 1);
        }
    }
}

/// The trained fixtures with ops exact in rate (a squeeze-excite CNN and a vision
/// transformer): the readout after t steps is the output of the model converted with
/// T = t, on test images, and GN τ = L at T = 1 reproduces the ANN.
#[test]
fn trained_fixtures_with_regions_are_causal_and_exact_at_one_step() {
    let (x, _) = gn_tests::test_set(16);
    for name in ["secnn_l4", "vit_l4"] {
        let path = gn_tests::fixtures().join(format!("models/{name}.onnx"));
        let ann = gn_onnx::io::load(&path).unwrap().model;
        let audit = gn_transpile::inspect::audit(&ann).unwrap();
        assert!(!audit.rate.is_empty() && audit.inexact.is_empty() && audit.refused.is_empty(), "{name}");
        let want = gn_tests::run_tract(&ann, &x, 16).remove(0);
        let exact = Options { tau: 4, timesteps: 1, ..Default::default() };
        let got = gn_tests::run_tract(&convert(&ann, &exact), &x, 16).remove(0);
        assert!(max_abs_diff(&want, &got) <= 1e-4, "{name}: τ = L, T = 1 differs from the ANN");
        let rows = gn_tests::run_tract(&convert(&ann, &anytime(8, Emit::Standard)), &x, 16);
        for t in [1, 3, 8] {
            let alone = gn_tests::run_tract(&convert(&ann, &anytime(t, Emit::Standard)), &x, 16);
            let diff = max_abs_diff(&rows[1].index_axis(Axis(0), t - 1).to_owned(), &alone[0]);
            assert!(diff <= 1e-4, "{name} t={t}: differs by {diff}");
        }
    }
}

/// An Einsum that sums over the batch letter, or puts it off axis 0, mixes samples once
/// time is folded into the batch: refused, naming the equation.
#[test]
fn an_einsum_across_samples_is_refused() {
    for equation in ["bid,bjd->ij", "bid,bjd->ibj", "...id,...jd->...ij"] {
        let mut b = ModelBuilder::new(&input_dims(Block::Einsum));
        let h = prefix(&mut b, Block::Einsum);
        let s = b.node("Einsum", &[&h, &h], vec![attr::string("equation", equation)]);
        let y = b.node("Flatten", &[&s], vec![attr::int("axis", 1)]);
        let model = b.finish(&y, &[16]);
        let err = transpile(&model, &Options::default()).unwrap_err().to_string();
        assert!(err.contains("Einsum") && err.contains(equation) && err.contains("axis 0"), "{equation}: {err}");
    }
}

/// Sequence-first attention: the Transposes that move axis 0 and the Reshapes across it
/// run once per step, named by `inspect`; the tokens, a quotient of a time-varying
/// tensor's rows, are computed again from the first step's shape; the merged rows (the
/// rows times a step's size) need no copies.
#[test]
fn sequence_first_attention_moves_axis_0_step_by_step() {
    let (whole, _, _) = models(Block::SequenceFirst);
    let audit = gn_transpile::inspect::audit(&whole).unwrap();
    let per_step: Vec<&str> = audit.per_step.iter().map(|r| r.op.as_str()).collect();
    assert_eq!(per_step.iter().filter(|&&op| op == "Transpose").count(), 6, "{per_step:?}");
    assert_eq!(per_step.iter().filter(|&&op| op == "Reshape").count(), 4, "{per_step:?}");
    assert!(audit.refused.is_empty() && audit.inexact.is_empty());
    let snn = convert(&whole, &anytime(4, Emit::Standard));
    let nodes = &snn.graph.as_ref().unwrap().node;
    assert!(
        nodes.iter().any(|n| n.op_type() == "Shape" && n.name().ends_with(".step")),
        "the tokens read one step's shape"
    );
    assert!(nodes.iter().filter(|n| n.name().contains(".step3")).count() >= 11);
}
