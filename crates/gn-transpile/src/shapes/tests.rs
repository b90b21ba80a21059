use super::*;
use gn_onnx::data::{float_value_info, tensor_f32, tensor_i64};
use gn_onnx::graph::attr;
use gn_onnx::proto::{AttributeProto, GraphProto, TensorProto};

const N: Dim = Dim::Batch(1);
const fn f(n: i64) -> Dim {
    Dim::Fixed(n)
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        name: Some(format!("{op}_{}", outputs[0])),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute,
        ..Default::default()
    }
}

fn one(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    node(op, inputs, &[output], attribute)
}

fn infer(inputs: &[(&str, &[Option<i64>])], initializer: Vec<TensorProto>, nodes: Vec<NodeProto>) -> StaticShapes {
    let graph = Graph::new(GraphProto {
        input: inputs.iter().map(|(name, dims)| float_value_info(name, dims)).collect(),
        initializer,
        node: nodes,
        ..Default::default()
    });
    StaticShapes::infer(&graph, 17).expect("an acyclic graph")
}

fn shape(s: &StaticShapes, v: &str) -> Vec<Dim> {
    s.shape(v).unwrap_or_else(|e| panic!("{v}: {e}")).to_vec()
}

fn refusal(s: &StaticShapes, v: &str) -> String {
    s.shape(v).expect_err("no shape").to_string()
}

#[test]
fn elementwise_ops_broadcast_from_the_right_and_refuse_what_does_not_broadcast() {
    let s = infer(
        &[("x", &[None, Some(3), Some(1)]), ("y", &[Some(4)]), ("z", &[None, Some(2)])],
        vec![],
        vec![
            one("Add", &["x", "y"], "sum", vec![]),
            one("Relu", &["sum"], "relu", vec![]),
            one("Where", &["y", "x", "y"], "where", vec![]),
            one("Mul", &["x", "z"], "bad", vec![]),
            one("Neg", &["bad"], "after_bad", vec![]),
        ],
    );
    assert_eq!(shape(&s, "sum"), [N, f(3), f(4)]);
    assert_eq!(shape(&s, "relu"), [N, f(3), f(4)]);
    assert_eq!(shape(&s, "where"), [N, f(3), f(4)]);
    // The failure is reported where it happened, for every value downstream.
    let reason = refusal(&s, "after_bad");
    assert!(reason.contains("node 'Mul_bad' (Mul)") && reason.contains("do not broadcast"), "{reason}");
}

#[test]
fn integer_mod_follows_the_divisor_s_sign_and_scatters_keep_the_data_s_shape() {
    let s = infer(
        &[("x", &[None, Some(6), Some(4)])],
        vec![
            tensor_i64("a", &[3], &[7, -7, 9]),
            tensor_i64("b", &[3], &[3, 3, -4]),
            tensor_i64("zero", &[1], &[0]),
            tensor_i64("idx", &[1, 1], &[0]),
            tensor_i64("seven", &[1], &[7]),
            tensor_i64("three", &[1], &[3]),
        ],
        vec![
            one("Mod", &["a", "b"], "m", vec![]),
            // The shape [N, 6, 4] sliced from 0 to 7 mod 3 = 1: [N], one element.
            one("Mod", &["seven", "three"], "end", vec![]),
            one("Shape", &["x"], "sx", vec![]),
            one("Slice", &["sx", "zero", "end"], "head", vec![]),
            one("ScatterND", &["x", "idx", "x"], "scattered", vec![]),
        ],
    );
    assert_eq!(s.facts["m"].as_ref().unwrap().value.as_deref(), Some(&[f(1), f(2), f(-3)][..]));
    assert_eq!(shape(&s, "head"), [f(1)]);
    assert_eq!(shape(&s, "scattered"), [N, f(6), f(4)]);
}

/// `torch.chunk`'s size as the legacy export computes it, `(d + 2) / 3` in int64: integer
/// Div truncates; a float Div of the same values has no integer value.
#[test]
fn integer_div_truncates_and_float_div_is_not_taken_for_one() {
    let s = infer(
        &[("x", &[None, Some(4), Some(194)])],
        vec![
            tensor_i64("last", &[], &[-1]),
            tensor_i64("two", &[], &[2]),
            tensor_i64("three", &[], &[3]),
            tensor_f32("seven", &[1], &[7.0]),
            tensor_f32("two_f", &[1], &[2.0]),
        ],
        vec![
            one("Shape", &["x"], "sx", vec![]),
            one("Gather", &["sx", "last"], "d", vec![]),
            one("Add", &["d", "two"], "padded", vec![]),
            one("Div", &["padded", "three"], "chunk", vec![]),
            one("Div", &["seven", "two_f"], "half", vec![]),
        ],
    );
    assert_eq!(s.facts["chunk"].as_ref().unwrap().value.as_deref(), Some(&[f(65)][..]));
    assert_eq!(s.facts["half"].as_ref().unwrap().value, None);
}

#[test]
fn a_variadic_sum_of_two_thousand_inputs_is_inferred_in_one_pass() {
    let names: Vec<String> = (0..2000).map(|i| format!("x{i}")).collect();
    let inputs: Vec<(&str, &[Option<i64>])> = names.iter().map(|n| (n.as_str(), &[None, Some(8)][..])).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let start = std::time::Instant::now();
    let s = infer(&inputs, vec![], vec![one("Sum", &refs, "y", vec![])]);
    assert_eq!(shape(&s, "y"), [N, f(8)]);
    assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
}

#[test]
fn conv_and_pool_sizes_follow_pads_strides_dilations_and_ceil_mode() {
    let w = |name: &str, dims: &[i64]| tensor_f32(name, dims, &vec![0.0; dims.iter().product::<i64>() as usize]);
    let s = infer(
        &[("x", &[None, Some(8), Some(32), Some(32)]), ("v", &[None, Some(1), Some(5), Some(5)])],
        vec![w("w", &[16, 8, 3, 3]), w("dw", &[8, 1, 3, 3]), w("up", &[1, 4, 3, 3])],
        vec![
            // ⌊(32 + 2 − 3) / 2⌋ + 1 = 16
            one(
                "Conv",
                &["x", "w"],
                "strided",
                vec![attr::ints("pads", &[1, 1, 1, 1]), attr::ints("strides", &[2, 2])],
            ),
            // 32 − ((3 − 1)·2 + 1) + 1 = 28
            one("Conv", &["x", "w"], "dilated", vec![attr::ints("dilations", &[2, 2])]),
            // ⌈32 / 3⌉ = 11
            one(
                "Conv",
                &["x", "w"],
                "same",
                vec![attr::string("auto_pad", "SAME_UPPER"), attr::ints("strides", &[3, 3])],
            ),
            one("Conv", &["x", "dw"], "depthwise", vec![attr::int("group", 8)]),
            // 2·(5 − 1) + 3 − 2 = 9 spatial, 4 channels
            one(
                "ConvTranspose",
                &["v", "up"],
                "transposed",
                vec![attr::ints("strides", &[2, 2]), attr::ints("pads", &[1, 1, 1, 1])],
            ),
            // ⌊29 / 2⌋ + 1 = 15; ⌈29 / 2⌉ + 1 = 16
            node(
                "MaxPool",
                &["x"],
                &["floor", "indices"],
                vec![attr::ints("kernel_shape", &[3, 3]), attr::ints("strides", &[2, 2])],
            ),
            one(
                "MaxPool",
                &["x"],
                "ceil",
                vec![attr::ints("kernel_shape", &[3, 3]), attr::ints("strides", &[2, 2]), attr::int("ceil_mode", 1)],
            ),
            // Size 5, kernel 2, stride 2, pads 1: ⌈5 / 2⌉ + 1 = 4 windows, the last starting
            // in the end padding (at 6 ≥ 5 + 1), so 3.
            one(
                "AveragePool",
                &["v"],
                "dropped",
                vec![
                    attr::ints("kernel_shape", &[2, 2]),
                    attr::ints("strides", &[2, 2]),
                    attr::ints("pads", &[1, 1, 1, 1]),
                    attr::int("ceil_mode", 1),
                ],
            ),
            one("GlobalAveragePool", &["x"], "global", vec![]),
        ],
    );
    assert_eq!(shape(&s, "strided"), [N, f(16), f(16), f(16)]);
    assert_eq!(shape(&s, "dilated"), [N, f(16), f(28), f(28)]);
    assert_eq!(shape(&s, "same"), [N, f(16), f(11), f(11)]);
    assert_eq!(shape(&s, "depthwise"), [N, f(8), f(30), f(30)]);
    assert_eq!(shape(&s, "transposed"), [N, f(4), f(9), f(9)]);
    assert_eq!(shape(&s, "floor"), [N, f(8), f(15), f(15)]);
    assert_eq!(shape(&s, "indices"), [N, f(8), f(15), f(15)]);
    assert_eq!(shape(&s, "ceil"), [N, f(8), f(16), f(16)]);
    assert_eq!(shape(&s, "dropped"), [N, f(1), f(3), f(3)]);
    assert_eq!(shape(&s, "global"), [N, f(8), f(1), f(1)]);
}

#[test]
fn gemm_matmul_and_einsum_contract_their_operands() {
    let s = infer(
        &[
            ("x", &[None, Some(64)]),
            ("w", &[Some(10), Some(64)]),
            ("seq", &[None, Some(8), Some(16)]),
            ("m", &[Some(16), Some(4)]),
            ("v", &[Some(16)]),
            ("heads", &[None, Some(1), Some(4), Some(8)]),
            ("stack", &[Some(3), Some(8), Some(2)]),
            ("q", &[None, Some(2), Some(5), Some(8)]),
            ("k", &[None, Some(2), Some(7), Some(8)]),
        ],
        vec![],
        vec![
            one("Gemm", &["x", "w"], "gemm", vec![attr::int("transB", 1)]),
            one("MatMul", &["seq", "m"], "mm", vec![]),
            one("MatMul", &["m", "v"], "bad_inner", vec![]),
            one("MatMul", &["seq", "v"], "mv", vec![]),
            one("MatMul", &["v", "m"], "vm", vec![]),
            one("MatMul", &["heads", "stack"], "batched", vec![]),
            one("Einsum", &["q", "k"], "scores", vec![attr::string("equation", "bhqd,bhkd->bhqk")]),
            one("Einsum", &["q", "k"], "implicit", vec![attr::string("equation", "...qd,...kd")]),
        ],
    );
    assert_eq!(shape(&s, "gemm"), [N, f(10)]);
    assert_eq!(shape(&s, "mm"), [N, f(8), f(4)]);
    assert_eq!(shape(&s, "mv"), [N, f(8)]);
    assert_eq!(shape(&s, "vm"), [f(4)]);
    assert_eq!(shape(&s, "batched"), [N, f(3), f(4), f(2)]);
    assert_eq!(shape(&s, "scores"), [N, f(2), f(5), f(7)]);
    // Implicit output: the ellipsis, then the letters that occur once, alphabetically.
    assert_eq!(shape(&s, "implicit"), [N, f(2), f(7), f(5)]);
    assert!(refusal(&s, "bad_inner").contains("inner sizes"));
}

/// `x.reshape(n, -1, 2, 4)` with `n = x.shape[0]`, as the legacy exporter writes it.
#[test]
fn a_reshape_target_computed_from_the_batch_resolves_with_n_symbolic() {
    let s = infer(
        &[("x", &[None, Some(6), Some(8)])],
        vec![
            tensor_i64("zero", &[], &[0]),
            tensor_i64("axes", &[1], &[0]),
            tensor_i64("rest", &[3], &[-1, 2, 4]),
            tensor_i64("keep", &[2], &[0, -1]),
            tensor_i64("rows", &[2], &[-1, 8]),
            tensor_i64("all", &[1], &[-1]),
        ],
        vec![
            one("Shape", &["x"], "s", vec![]),
            one("Gather", &["s", "zero"], "n", vec![attr::int("axis", 0)]),
            one("Unsqueeze", &["n", "axes"], "n1", vec![]),
            one("Concat", &["n1", "rest"], "target", vec![attr::int("axis", 0)]),
            one("Reshape", &["x", "target"], "heads", vec![]),
            one("Reshape", &["x", "keep"], "flat", vec![]),
            one("Reshape", &["x", "rows"], "rows_of_8", vec![]),
            one("Reshape", &["x", "all"], "vector", vec![]),
            one("Flatten", &["x"], "flatten", vec![attr::int("axis", 2)]),
            one("Size", &["x"], "size", vec![]),
        ],
    );
    assert_eq!(shape(&s, "n"), Vec::<Dim>::new());
    assert_eq!(shape(&s, "target"), [f(4)]);
    assert_eq!(shape(&s, "heads"), [N, f(6), f(2), f(4)]);
    assert_eq!(shape(&s, "flat"), [N, f(48)]);
    assert_eq!(shape(&s, "rows_of_8"), [Dim::Batch(6), f(8)]);
    assert_eq!(shape(&s, "vector"), [Dim::Batch(48)]);
    assert_eq!(shape(&s, "flatten"), [Dim::Batch(6), f(8)]);
    assert_eq!(s.facts["size"].as_ref().unwrap().value, Some(vec![Dim::Batch(48)]));
}

/// `x.expand(-1, 3, -1)` as torch exports it: ones, times −1, compared with the target,
/// and the −1 replaced by 1 before the Expand.
#[test]
fn an_expand_target_built_with_where_resolves() {
    let s = infer(
        &[("x", &[None, Some(1), Some(5)])],
        vec![tensor_i64("target", &[3], &[-1, 3, -1]), tensor_i64("len", &[1], &[3]), tensor_i64("minus", &[], &[-1])],
        vec![
            one("ConstantOfShape", &["len"], "ones", vec![attr::tensor("value", tensor_i64("", &[1], &[1]))]),
            one("Mul", &["ones", "minus"], "minus_ones", vec![]),
            one("Equal", &["target", "minus_ones"], "is_free", vec![]),
            one("Where", &["is_free", "ones", "target"], "shape", vec![]),
            one("Expand", &["x", "shape"], "y", vec![]),
        ],
    );
    assert_eq!(shape(&s, "y"), [N, f(3), f(5)]);
}

#[test]
fn moves_and_selections_keep_the_batch_where_it_is() {
    let s = infer(
        &[("x", &[None, Some(10), Some(7)]), ("c", &[None, Some(1), Some(1), Some(4)])],
        vec![
            tensor_i64("starts", &[2], &[-3, 6]),
            tensor_i64("ends", &[2], &[i64::MAX, -100]),
            tensor_i64("slice_axes", &[2], &[1, 2]),
            tensor_i64("steps", &[2], &[1, -2]),
            tensor_i64("idx", &[2, 3], &[0, 1, 2, 3, 4, 5]),
            tensor_i64("last", &[], &[-1]),
            tensor_i64("squeeze_axes", &[2], &[1, -2]),
            tensor_i64("unsqueeze_axes", &[2], &[0, -1]),
            tensor_i64("split", &[2], &[3, 7]),
            tensor_i64("pads", &[6], &[0, 1, 2, 0, 3, 4]),
            tensor_i64("repeats", &[3], &[2, 1, 3]),
            tensor_i64("reduce_axes", &[1], &[1]),
        ],
        vec![
            one("Transpose", &["x"], "t", vec![attr::ints("perm", &[0, 2, 1])]),
            one("Concat", &["x", "x"], "cat", vec![attr::int("axis", -1)]),
            one("Concat", &["x", "x"], "cat0", vec![attr::int("axis", 0)]),
            one("Slice", &["x", "starts", "ends", "slice_axes", "steps"], "sliced", vec![]),
            one("Gather", &["x", "idx"], "gathered", vec![attr::int("axis", 1)]),
            one("Gather", &["x", "last"], "picked", vec![attr::int("axis", 2)]),
            one("Squeeze", &["c", "squeeze_axes"], "squeezed", vec![]),
            one("Unsqueeze", &["x", "unsqueeze_axes"], "unsqueezed", vec![]),
            node("Split", &["x", "split"], &["s1", "s2"], vec![attr::int("axis", 1)]),
            node("Split", &["x"], &["p1", "p2", "p3"], vec![attr::int("axis", 1), attr::int("num_outputs", 3)]),
            one("Pad", &["x", "pads"], "padded", vec![]),
            one("Tile", &["x", "repeats"], "tiled", vec![]),
            one("ReduceMean", &["x", "reduce_axes"], "mean", vec![attr::int("keepdims", 0)]),
            one("ReduceSum", &["x"], "total", vec![]),
            one("ArgMax", &["x"], "argmax", vec![attr::int("axis", -1)]),
        ],
    );
    assert_eq!(shape(&s, "t"), [N, f(7), f(10)]);
    assert_eq!(shape(&s, "cat"), [N, f(10), f(14)]);
    assert_eq!(shape(&s, "cat0"), [Dim::Batch(2), f(10), f(7)]);
    // Axis 1: 7..10; axis 2: 6, 4, 2, 0 (the end −100 clamps to before the start).
    assert_eq!(shape(&s, "sliced"), [N, f(3), f(4)]);
    assert_eq!(shape(&s, "gathered"), [N, f(2), f(3), f(7)]);
    assert_eq!(shape(&s, "picked"), [N, f(10)]);
    assert_eq!(shape(&s, "squeezed"), [N, f(4)]);
    assert_eq!(shape(&s, "unsqueezed"), [f(1), N, f(10), f(7), f(1)]);
    assert_eq!((shape(&s, "s1"), shape(&s, "s2")), (vec![N, f(3), f(7)], vec![N, f(7), f(7)]));
    assert_eq!([shape(&s, "p1")[1], shape(&s, "p2")[1], shape(&s, "p3")[1]], [f(4), f(4), f(2)]);
    assert_eq!(shape(&s, "padded"), [N, f(14), f(13)]);
    assert_eq!(shape(&s, "tiled"), [Dim::Batch(2), f(10), f(21)]);
    assert_eq!(shape(&s, "mean"), [N, f(7)]);
    assert_eq!(shape(&s, "total"), [f(1), f(1), f(1)]);
    assert_eq!(shape(&s, "argmax"), [N, f(10), f(1)]);
    assert_eq!(s.state_shape("cat0").unwrap()[0], StateDim::Batch(2));
    assert_eq!(s.state_shape("t").unwrap(), [StateDim::Batch(1), StateDim::Size(7), StateDim::Size(10)]);
}

#[test]
fn resize_scales_or_sizes_and_shape_builders_give_their_sizes() {
    let s = infer(
        &[("x", &[None, Some(3), Some(8), Some(8)])],
        vec![
            tensor_f32("scales", &[4], &[1.0, 1.0, 2.0, 1.5]),
            tensor_i64("sizes", &[4], &[1, 3, 5, 5]),
            tensor_f32("empty", &[0], &[]),
            tensor_i64("start", &[], &[0]),
            tensor_i64("limit", &[], &[10]),
            tensor_i64("delta", &[], &[3]),
            tensor_i64("k", &[1], &[2]),
        ],
        vec![
            one("Resize", &["x", "", "scales"], "scaled", vec![]),
            one("Resize", &["x", "", "empty", "sizes"], "sized", vec![]),
            one("Upsample", &["x", "scales"], "upsampled", vec![]),
            one("Range", &["start", "limit", "delta"], "range", vec![]),
            one("Shape", &["x"], "tail", vec![attr::int("start", -2)]),
            one("ConstantOfShape", &["tail"], "zeros", vec![]),
            node("TopK", &["x", "k"], &["values", "indices"], vec![attr::int("axis", 1)]),
        ],
    );
    assert_eq!(shape(&s, "scaled"), [N, f(3), f(16), f(12)]);
    assert_eq!(shape(&s, "sized"), [f(1), f(3), f(5), f(5)]);
    assert_eq!(shape(&s, "upsampled"), [N, f(3), f(16), f(12)]);
    assert_eq!(shape(&s, "range"), [f(4)]);
    assert_eq!(shape(&s, "zeros"), [f(8), f(8)]);
    assert_eq!(shape(&s, "indices"), [N, f(2), f(8), f(8)]);
}

#[test]
fn a_value_known_only_at_run_time_or_a_hostile_size_is_refused_with_its_node() {
    let s = infer(
        &[("x", &[None, Some(4)]), ("target", &[Some(2)]), ("y", &[None, Some(4), None])],
        vec![tensor_i64("huge", &[2], &[2, i64::MAX]), tensor_i64("wide", &[2], &[-1, 3])],
        vec![
            one("Reshape", &["x", "target"], "r", vec![]),
            one("NonZero", &["x"], "nz", vec![]),
            one("Tile", &["x", "huge"], "tiled", vec![]),
            one("Reshape", &["x", "wide"], "indivisible", vec![]),
            one("Relu", &["y"], "ragged", vec![]),
        ],
    );
    let reason = refusal(&s, "r");
    assert!(reason.contains("'Reshape_r' (Reshape)") && reason.contains("not a small integer value"), "{reason}");
    assert!(refusal(&s, "nz").contains("data-dependent"));
    assert!(refusal(&s, "tiled").contains("is not a size"));
    assert!(refusal(&s, "indivisible").contains("does not divide"));
    assert!(refusal(&s, "ragged").contains("symbolic size on axis 2"));
    assert!(refusal(&s, "nowhere").contains("no node writes it"));
}
