//! Shared helpers of the end-to-end tests: the committed fixtures, the Fashion-MNIST
//! test set, running models through tract, small models built in code, and error metrics.

use std::path::{Path, PathBuf};

use gn_onnx::data::{read_idx_u8, tensor_f32};
use gn_onnx::proto::{GraphProto, ModelProto, NodeProto};
use ndarray::{s, Array2, Array4, ArrayD, Axis};

pub mod built;
pub mod fuzz;
mod mutate;
pub mod reference;
mod rng;

/// The repository's `fixtures/` folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// Test images used by the slower tests (the first ones of the test set): 2,000, or
/// `GN_TEST_IMAGES`. `cargo xtask verify --full` covers all 10,000.
pub fn image_count() -> usize {
    std::env::var("GN_TEST_IMAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000)
}

/// The QCFS fixtures: every `.onnx` file under `fixtures/models` but the ReLU networks
/// (`relu_*`, which convert only with a calibration), sorted.
pub fn fixture_models() -> Vec<PathBuf> {
    all_fixture_models()
        .into_iter()
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("relu_")))
        .collect()
}

/// The ReLU fixtures (`relu_*.onnx`), sorted.
pub fn relu_models() -> Vec<PathBuf> {
    all_fixture_models()
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("relu_")))
        .collect()
}

/// Training images kept for `--calibrate` (never test images), [1000, 1, 28, 28].
pub fn calibration_images() -> PathBuf {
    fixtures().join("data/calibration-images.npy")
}

/// Every `.onnx` file under `fixtures/models`, sorted.
pub fn all_fixture_models() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("fixtures/models is readable").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "onnx") {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(&fixtures().join("models"), &mut v);
    v.sort();
    v
}

/// The base models (one per trained network), as (name, path).
pub fn base_models() -> Vec<(String, PathBuf)> {
    ["cnn_l4", "cnn_l8", "resnet20_l8", "vgg_l4"]
        .iter()
        .map(|n| (n.to_string(), fixtures().join(format!("models/{n}.onnx"))))
        .filter(|(_, p)| p.exists())
        .collect()
}

/// The stored ONNX Runtime logits beside a model (`x.onnx` → `x.logits.npy`).
pub fn stored_logits(model: &Path) -> Array2<f32> {
    let path = PathBuf::from(model.to_string_lossy().replace(".onnx", ".logits.npy"));
    ndarray_npy::read_npy(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The first `n` Fashion-MNIST test images as [n, 1, 28, 28] in [0, 1], and their labels.
pub fn test_set(n: usize) -> (Array4<f32>, Vec<u8>) {
    let (dims, pixels) = read_idx_u8(&fixtures().join("data/t10k-images-idx3-ubyte.gz")).expect("test images");
    let (_, labels) = read_idx_u8(&fixtures().join("data/t10k-labels-idx1-ubyte.gz")).expect("test labels");
    let n = n.min(dims[0]);
    let x = Array4::from_shape_vec((dims[0], 1, 28, 28), pixels.iter().map(|&p| p as f32 / 255.0).collect())
        .expect("28x28 images");
    (x.slice(s![..n, .., .., ..]).to_owned(), labels[..n].to_vec())
}

/// Runs a model through tract in batches of `batch` (of its static batch, if it has one);
/// returns each output concatenated along `batch_axis[i]` of output i (0 for plain
/// outputs, 1 for `_anytime` ones).
pub fn run_tract(model: &ModelProto, x: &Array4<f32>, batch: usize) -> Vec<ArrayD<f32>> {
    run_tract_with(model, x, batch, true)
}

/// [`run_tract`], with tract's optimiser on or off.
pub fn run_tract_with(model: &ModelProto, x: &Array4<f32>, batch: usize, optimize: bool) -> Vec<ArrayD<f32>> {
    let tract =
        gn_transpile::tract_ops::load(model, optimize).unwrap_or_else(|e| panic!("tract cannot load the model: {e}"));
    let batch = gn_verify::batch_for(model, batch);
    let mut parts: Vec<Vec<ArrayD<f32>>> = Vec::new();
    for start in (0..x.shape()[0]).step_by(batch) {
        let end = (start + batch).min(x.shape()[0]);
        let input = x.slice(s![start..end, .., .., ..]).to_owned().into_dyn();
        let outs = tract.run(vec![input]).unwrap_or_else(|e| panic!("tract run failed: {e}"));
        if parts.is_empty() {
            parts = vec![Vec::new(); outs.len()];
        }
        for (i, o) in outs.into_iter().enumerate() {
            parts[i].push(o);
        }
    }
    let names: Vec<String> =
        model.graph.as_ref().map(|g| g.output.iter().map(|o| o.name().to_string()).collect()).unwrap_or_default();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let axis = if names.get(i).is_some_and(|n| n.ends_with("_anytime")) { 1 } else { 0 };
            let views: Vec<_> = p.iter().map(|a| a.view()).collect();
            ndarray::concatenate(Axis(axis), &views).expect("same shapes")
        })
        .collect()
}

/// Mean squared difference (the harness's metric), for arrays of one shape.
pub fn mse(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    gn_verify::mse(a, b)
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Index of the largest value of each row of a [N, C] array (the harness's top-1).
pub fn argmax_rows(a: &ArrayD<f32>) -> Vec<usize> {
    gn_verify::top1(a)
}

/// Slice `t` of an anytime output [T, N, …].
pub fn step(a: &ArrayD<f32>, t: usize) -> ArrayD<f32> {
    a.index_axis(Axis(0), t).to_owned()
}

/// Builds small float models node by node, for tests.
pub struct ModelBuilder {
    graph: GraphProto,
    counter: usize,
    opset: i64,
}

impl ModelBuilder {
    /// A model with one float input `input` of shape [batch, features…].
    pub fn new(input_dims: &[i64]) -> Self {
        let mut dims = vec![None];
        dims.extend(input_dims.iter().map(|&d| Some(d)));
        let graph = GraphProto {
            name: Some("test".into()),
            input: vec![gn_onnx::data::float_value_info("input", &dims)],
            ..Default::default()
        };
        ModelBuilder { graph, counter: 0, opset: 17 }
    }

    pub fn fresh(&mut self, base: &str) -> String {
        self.counter += 1;
        format!("{base}{}", self.counter)
    }

    pub fn constant(&mut self, dims: &[i64], values: &[f32]) -> String {
        let name = self.fresh("c");
        self.graph.initializer.push(tensor_f32(&name, dims, values));
        name
    }

    pub fn constant_i64(&mut self, dims: &[i64], values: &[i64]) -> String {
        let name = self.fresh("c");
        self.graph.initializer.push(gn_onnx::data::tensor_i64(&name, dims, values));
        name
    }

    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<gn_onnx::proto::AttributeProto>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: Some(format!("{out}_node")),
            op_type: Some(op.into()),
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    /// The size of `v` on `axis` as exports read it: `Gather(Shape(v), axis)`, a scalar.
    pub fn size_of(&mut self, v: &str, axis: i64) -> String {
        let shape = self.node("Shape", &[v], vec![]);
        let index = self.constant_i64(&[], &[axis]);
        self.node("Gather", &[&shape, &index], vec![gn_onnx::graph::attr::int("axis", 0)])
    }

    /// A scalar as a one-element vector (`Unsqueeze` at axis 0), to concatenate into a shape.
    pub fn vector(&mut self, scalar: &str) -> String {
        let axes = self.constant_i64(&[1], &[0]);
        self.node("Unsqueeze", &[scalar, &axes], vec![])
    }

    /// `x @ wᵀ + b` with w of shape [out, in].
    pub fn gemm(&mut self, x: &str, w: &Array2<f32>, b: &[f32]) -> String {
        let (o, i) = w.dim();
        let wn = self.constant(&[o as i64, i as i64], w.as_slice().expect("standard layout"));
        let bn = self.constant(&[o as i64], b);
        self.node("Gemm", &[x, &wn, &bn], vec![gn_onnx::graph::attr::int("transB", 1)])
    }

    /// The QCFS activation in the dynamo exporter's form.
    pub fn qcfs(&mut self, x: &str, theta: f32, levels: u32) -> String {
        let th = self.constant(&[1], &[theta]);
        let l = self.constant(&[], &[levels as f32]);
        let zero = self.constant(&[], &[0.0]);
        let one = self.constant(&[], &[1.0]);
        let half = self.constant(&[], &[0.5]);
        let a = self.node("Div", &[x, &th], vec![]);
        let b = self.node("Clip", &[&a, &zero, &one], vec![]);
        let c = self.node("Mul", &[&b, &l], vec![]);
        let d = self.node("Add", &[&c, &half], vec![]);
        let e = self.node("Floor", &[&d], vec![]);
        let f = self.node("Div", &[&e, &l], vec![]);
        self.node("Mul", &[&f, &th], vec![])
    }

    pub fn finish(mut self, output: &str, output_dims: &[i64]) -> ModelProto {
        let mut dims = vec![None];
        dims.extend(output_dims.iter().map(|&d| Some(d)));
        self.graph.node.push(NodeProto {
            input: vec![output.into()],
            output: vec!["output".into()],
            name: Some("output_identity".into()),
            op_type: Some("Identity".into()),
            ..Default::default()
        });
        self.graph.output.push(gn_onnx::data::float_value_info("output", &dims));
        ModelProto { producer_name: Some("gn-tests".into()), ..gn_onnx::data::model(self.graph, self.opset) }
    }
}

/// Runs a model on a 2-D input with tract (batch on axis 0).
pub fn run_tract_2d(model: &ModelProto, x: &Array2<f32>) -> Vec<ArrayD<f32>> {
    let tract =
        gn_transpile::tract_ops::load(model, true).unwrap_or_else(|e| panic!("tract cannot load the model: {e}"));
    tract.run(vec![x.clone().into_dyn()]).unwrap_or_else(|e| panic!("tract run failed: {e}"))
}
