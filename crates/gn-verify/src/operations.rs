//! Operation counts per image: the ANN's multiply-accumulates per weighted layer against
//! the spiking networks' synaptic operations, from the measured firing rates.

use gn_onnx::proto::ModelProto;
use gn_transpile::detect::Site;
use ndarray::ArrayD;

use crate::run::{expose, run_batched};
use crate::{Layer, VerifyError};

/// A weighted layer of the ANN (Conv, Gemm or MatMul) and what drives it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WeightedLayer {
    pub node: String,
    pub op: String,
    /// Multiply-accumulates per image in the ANN.
    pub macs: u64,
    /// The spiking layer whose spikes reach this layer's input (through pooling, flattening
    /// or reshaping only), if any; `None` means the layer reads analog values (the image).
    pub site: Option<String>,
}

/// Operation counts per image: the ANN's MACs against the SNN's synaptic operations.
///
/// Counting rule: a weighted layer fed by a spiking layer performs, per input spike, one
/// accumulate per synapse of that input, so over T steps its SOPs are its ANN MACs ×
/// (spikes per input neuron per step) × T; a Group Neuron's count is its member spikes
/// (c of τ members firing = c operations). A weighted layer reading analog values runs
/// once on the time-invariant input and keeps its MACs. Pooling between a spiking layer
/// and the weighted layer is taken to preserve the firing rate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Operations {
    pub layers: Vec<WeightedLayer>,
    /// MACs of the ANN per image.
    pub ann_macs: u64,
    /// MACs of the layers that read analog values, which the SNN keeps.
    pub analog_macs: u64,
    /// (T, SOPs per image) of the IF network.
    pub if_sops: Vec<(usize, f64)>,
    /// (T, SOPs per image) of the GN network.
    pub gn_sops: Vec<(usize, f64)>,
}

/// Ops through which spikes reach a weighted layer unchanged in rate.
const RATE_PRESERVING: &[&str] = &[
    "Identity",
    "Flatten",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Dropout",
    "AveragePool",
    "GlobalAveragePool",
    "MaxPool",
    "GlobalMaxPool",
    "Pad",
];

/// Counts the ANN's MACs per weighted layer (shapes from one image run through tract)
/// and the SNNs' synaptic operations from the measured firing rates.
pub(crate) fn count_operations(
    ann: &ModelProto,
    graph: &gn_onnx::Graph,
    sites: &[Site],
    layers: &[Layer],
    one_image: &ArrayD<f32>,
) -> Result<Option<Operations>, VerifyError> {
    let weighted: Vec<&gn_onnx::proto::NodeProto> =
        graph.nodes().iter().filter(|n| matches!(gn_onnx::graph::standard_op(n), "Conv" | "Gemm" | "MatMul")).collect();
    if weighted.is_empty() || one_image.shape()[0] == 0 {
        return Ok(None);
    }
    let constants = graph.constants();
    let const_dims = |name: &str| constants.dims(name);
    let outputs: Vec<String> = weighted.iter().map(|n| n.output[0].clone()).collect();
    let shapes = run_batched(&expose(ann, &outputs), one_image, 1, &|_| {})?;
    let producers = graph.producers();
    let site_of = |value: &str| -> Option<usize> {
        let mut value = value.to_string();
        loop {
            if let Some(k) = sites.iter().position(|s| s.output == value) {
                return Some(k);
            }
            let node = &graph.nodes()[*producers.get(&value)?];
            if !RATE_PRESERVING.contains(&node.op_type()) {
                return None;
            }
            value = node.input.first()?.clone();
        }
    };
    let mut result = Vec::new();
    for (k, node) in weighted.iter().enumerate() {
        let out_elems = shapes[k + 1].len() as u64;
        // A MatMul may hold its weight on either side; Conv and Gemm hold it second.
        let weight_first = node.op_type() == "MatMul" && const_dims(&node.input[0]).is_some();
        let (data, weight) =
            if weight_first { (&node.input[1], &node.input[0]) } else { (&node.input[0], &node.input[1]) };
        let Some(w) = const_dims(weight) else { continue };
        let fan_in: i64 = match node.op_type() {
            "Conv" => w.iter().skip(1).product(),
            "Gemm" if gn_onnx::graph::attr::get_int(node, "transB").unwrap_or(0) == 1 => w.get(1).copied().unwrap_or(0),
            "Gemm" => w.first().copied().unwrap_or(0),
            // x @ W sums over W's rows; W @ x over W's columns.
            _ if weight_first => w.last().copied().unwrap_or(0),
            _ => w.get(w.len().saturating_sub(2)).copied().unwrap_or(0),
        };
        result.push(WeightedLayer {
            node: node.name().to_string(),
            op: node.op_type().to_string(),
            macs: out_elems * fan_in.max(0) as u64,
            site: site_of(data).map(|s| sites[s].name.clone()),
        });
    }
    let ann_macs = result.iter().map(|l| l.macs).sum();
    let analog_macs = result.iter().filter(|l| l.site.is_none()).map(|l| l.macs).sum();
    let sops = |gn: bool| -> Vec<(usize, f64)> {
        let ts: Vec<usize> = layers.first().map(|l| l.if_rates.iter().map(|r| r.0).collect()).unwrap_or_default();
        ts.iter()
            .enumerate()
            .map(|(i, &t)| {
                let total = result
                    .iter()
                    .filter_map(|w| {
                        let layer = layers.iter().find(|l| Some(&l.site) == w.site.as_ref())?;
                        let rate = if gn { layer.gn_rates[i].1 } else { layer.if_rates[i].1 };
                        Some(w.macs as f64 * rate * t as f64)
                    })
                    .sum::<f64>();
                (t, total)
            })
            .collect()
    };
    Ok(Some(Operations { if_sops: sops(false), gn_sops: sops(true), layers: result, ann_macs, analog_macs }))
}
