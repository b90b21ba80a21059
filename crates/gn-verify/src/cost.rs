//! What a conversion costs per input, in the terms NeuroBench defines: synaptic
//! operations split into accumulates (the input is a spike count) and multiply-accumulates
//! (analog input), the dense count, membrane updates, spikes and spike events, activation
//! sparsity, the parameter footprint, and energy under a table of costs per operation.
//!
//! Counting rules, per input over T steps:
//! - A weighted op (Conv, Gemm, MatMul) reading spikes does one accumulate per synapse per
//!   member spike: its ANN MACs × (member spikes per input neuron per step) × T. A Group
//!   Neuron's count c is c accumulates (NeuroBench counts a graded spike as one operation:
//!   [`Cost::synaptic_events`]). An averaging pool of window K between the spikes and the
//!   op is folded into the op's weights (as the NIR export does): × K.
//! - One reading analog values computed once per input (the image) does its ANN MACs once;
//!   one reading analog values that change every step (a rate-coded op's output, an
//!   averaging pool's, a product of two time-varying tensors) does them at every step.
//! - `dense`: every synapse at every run of its op, whatever its input.
//! - Membrane updates: one per spiking neuron per step (a Group Neuron's τ members share
//!   one membrane).

use gn_onnx::proto::ModelProto;
use gn_transpile::detect::Site;
use gn_transpile::spikes::{weighted_reads, Reads};
use gn_transpile::NeuronKind;
use ndarray::ArrayD;

use crate::run::{expose, run_batched_on};
use crate::runtime::Runtime;
use crate::{Layer, VerifyError};

/// Energy per operation, in picojoules.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EnergyTable {
    pub name: String,
    /// One multiply-accumulate.
    pub mac_pj: f64,
    /// One accumulate.
    pub ac_pj: f64,
}

/// The tables `--energy` names: 45 nm CMOS (Horowitz, ISSCC 2014), a multiply plus an add
/// per MAC and an add per AC.
pub const ENERGY_PRESETS: &[(&str, f64, f64)] =
    &[("45nm-fp32", 4.6, 0.9), ("45nm-fp16", 1.5, 0.4), ("45nm-int8", 0.23, 0.03)];

impl Default for EnergyTable {
    fn default() -> Self {
        let (name, mac_pj, ac_pj) = ENERGY_PRESETS[0];
        EnergyTable { name: name.into(), mac_pj, ac_pj }
    }
}

impl std::str::FromStr for EnergyTable {
    type Err = String;

    /// A preset's name, or `mac=PJ,ac=PJ`.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(&(name, mac_pj, ac_pj)) = ENERGY_PRESETS.iter().find(|p| p.0 == s) {
            return Ok(EnergyTable { name: name.into(), mac_pj, ac_pj });
        }
        let names: Vec<&str> = ENERGY_PRESETS.iter().map(|p| p.0).collect();
        let bad = || format!("the energy table is one of {} or mac=PJ,ac=PJ, not '{s}'", names.join(", "));
        let (mut mac, mut ac) = (None, None);
        for part in s.split(',') {
            let (key, value) = part.split_once('=').ok_or_else(bad)?;
            let value: f64 = value.trim().parse().map_err(|_| bad())?;
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("the energy of an operation is a finite number of pJ ≥ 0, not {value}"));
            }
            match key.trim() {
                "mac" => mac = Some(value),
                "ac" => ac = Some(value),
                _ => return Err(bad()),
            }
        }
        match (mac, ac) {
            (Some(mac_pj), Some(ac_pj)) => Ok(EnergyTable { name: format!("mac={mac_pj},ac={ac_pj}"), mac_pj, ac_pj }),
            _ => Err(bad()),
        }
    }
}

/// A weighted op of the ANN (Conv, Gemm or MatMul) and what it reads once converted.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WeightedLayer {
    pub node: String,
    pub op: String,
    /// Multiply-accumulates per input in the ANN.
    pub macs: u64,
    /// What it reads: spikes (of these sites, by name), spikes through an averaging pool,
    /// analog values once, or analog values every step.
    pub reads: Reads,
    /// Inputs per window of the averaging pool it reads spikes through (1 without one):
    /// folded into the op, each input spike reaches `window` times the synapses of a
    /// pooled value, so the op does its MACs × window accumulates per spike per input.
    pub window: u64,
}

/// One spiking network's cost per input over its first `timesteps` steps.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cost {
    pub neuron: NeuronKind,
    pub tau: u32,
    pub timesteps: usize,
    /// NeuroBench's Effective_ACs: accumulates, one per synapse per member spike.
    pub effective_acs: f64,
    /// NeuroBench's Effective_MACs: multiply-accumulates of the ops reading analog values.
    pub effective_macs: f64,
    /// Synaptic events of the ops reading spikes: one per synapse per spike event (a count
    /// c > 0 is one event), as NeuroBench counts a graded spike. NeuroBench files these
    /// under Effective_MACs when the spikes are graded (a GN count, or a spike scaled by θ).
    pub synaptic_events: f64,
    /// NeuroBench's Dense: every synapse at every run of its op.
    pub dense: f64,
    /// Member spikes (a Group Neuron's count c is c spikes).
    pub spikes: f64,
    /// Spike events (a Group Neuron's count above 0 is one event).
    pub events: f64,
    /// NeuroBench's MembraneUpdates: spiking neurons × T.
    pub membrane_updates: f64,
    /// NeuroBench's ActivationSparsity: the share of neuron-steps without an event.
    pub activation_sparsity: f64,
    /// Energy of the synaptic operations, pJ.
    pub energy_pj: f64,
    /// The operations of each weighted op, in [`Operations::layers`]' order: accumulates
    /// for an op reading spikes, multiply-accumulates otherwise.
    pub per_op: Vec<f64>,
}

/// The cost report of a measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Operations {
    pub layers: Vec<WeightedLayer>,
    /// MACs of the ANN per input.
    pub ann_macs: u64,
    /// Energy of the ANN's MACs per input, pJ.
    pub ann_energy_pj: f64,
    /// NeuroBench's Footprint: bytes of the ANN's parameters (the spiking networks hold the
    /// same weights and a threshold per layer or channel).
    pub footprint: u64,
    /// Spiking neurons per input.
    pub neurons: u64,
    pub energy: EnergyTable,
    /// IF, then GN, at each T of the per-layer measurement.
    pub costs: Vec<Cost>,
}

impl Operations {
    /// The cost of one network at one T.
    pub fn cost(&self, neuron: NeuronKind, timesteps: usize) -> Option<&Cost> {
        self.costs.iter().find(|c| c.neuron == neuron && c.timesteps == timesteps)
    }
}

/// Counts the ANN's MACs per weighted op (shapes from one input run on `runtime`) and
/// each spiking network's operations from the measured firing rates.
#[allow(clippy::too_many_arguments)]
pub(crate) fn count_operations(
    runtime: &dyn Runtime,
    ann: &ModelProto,
    graph: &gn_onnx::Graph,
    sites: &[Site],
    layers: &[Layer],
    tau: u32,
    energy: &EnergyTable,
    one_image: &ArrayD<f32>,
) -> Result<Option<Operations>, VerifyError> {
    let reads = weighted_reads(graph, sites)?;
    let reads: Vec<_> = reads.into_iter().filter(|r| matches!(r.op.as_str(), "Conv" | "Gemm" | "MatMul")).collect();
    if reads.is_empty() || one_image.shape()[0] == 0 {
        return Ok(None);
    }
    let constants = graph.constants();
    let by_name: std::collections::HashMap<&str, &gn_onnx::proto::NodeProto> =
        graph.nodes().iter().map(|n| (n.name(), n)).collect();
    // Each weighted op's output, and its first operand (the fan-in of a product of two
    // time-varying tensors is that operand's last axis).
    let mut values = Vec::new();
    for r in &reads {
        let node = by_name[r.node.as_str()];
        values.push(node.output[0].clone());
        values.push(node.input[0].clone());
        if let Reads::PooledSpikes { input, .. } = &r.reads {
            values.push(input.clone());
        }
    }
    let graph_inputs: Vec<&str> = graph.proto.input.iter().map(|i| i.name()).collect();
    let exposed: Vec<String> = values.iter().filter(|v| !graph_inputs.contains(&v.as_str())).cloned().collect();
    let outs = run_batched_on(runtime, &expose(ann, &exposed), one_image, 1, true, &|_| {})?;
    let shape_of = |v: &str| -> Vec<usize> {
        if graph_inputs.contains(&v) {
            return one_image.shape().to_vec();
        }
        exposed.iter().position(|e| e == v).map_or_else(Vec::new, |k| outs[k + 1].shape().to_vec())
    };
    // The window of an averaging pool: its kernel, or a global pool's whole input.
    let pool_window = |pool: &str, input: &str| -> u64 {
        let node = by_name.get(pool);
        let kernel = node.and_then(|n| gn_onnx::graph::attr::get_ints(n, "kernel_shape"));
        match kernel {
            Some(k) => k.iter().map(|&d| d.max(1) as u64).product(),
            None => shape_of(input).iter().skip(2).map(|&d| d as u64).product(),
        }
    };
    let mut weighted = Vec::new();
    for r in reads {
        let node = by_name[r.node.as_str()];
        let out_elems: usize = shape_of(&node.output[0]).iter().product();
        let weight_first = node.op_type() == "MatMul" && constants.dims(&node.input[0]).is_some();
        let weight = if weight_first { &node.input[0] } else { &node.input[1] };
        let fan_in: i64 = match (node.op_type(), constants.dims(weight)) {
            ("Conv", Some(w)) => w.iter().skip(1).product(),
            ("Gemm", Some(w)) if gn_onnx::graph::attr::get_int(node, "transB").unwrap_or(0) == 1 => {
                w.get(1).copied().unwrap_or(0)
            }
            ("Gemm", Some(w)) => w.first().copied().unwrap_or(0),
            // x @ W sums over W's rows; W @ x over W's columns.
            (_, Some(w)) if weight_first => w.last().copied().unwrap_or(0),
            (_, Some(w)) => w.get(w.len().saturating_sub(2)).copied().unwrap_or(0),
            // A product of two computed tensors sums over the first one's last axis.
            (_, None) => shape_of(&node.input[0]).last().map_or(0, |&d| d as i64),
        };
        let window = match &r.reads {
            Reads::PooledSpikes { pool, input, .. } => pool_window(pool, input),
            _ => 1,
        };
        let dense = out_elems as u64 * fan_in.max(0) as u64;
        // A convolution's taps on its padding are no synapses.
        let macs = match constants.dims(weight) {
            Some(w) if node.op_type() == "Conv" => {
                conv_synapses(node, &w, &shape_of(&node.input[0]), &shape_of(&node.output[0])).unwrap_or(dense)
            }
            _ => dense,
        };
        weighted.push(WeightedLayer { node: r.node, op: r.op, macs, reads: r.reads, window });
    }
    let ann_macs: u64 = weighted.iter().map(|w| w.macs).sum();
    let mut operations = Operations {
        layers: weighted,
        ann_macs,
        ann_energy_pj: ann_macs as f64 * energy.mac_pj,
        footprint: footprint(ann),
        neurons: layers.iter().map(|l| l.neurons as u64).sum(),
        energy: energy.clone(),
        costs: Vec::new(),
    };
    for (neuron, tau) in [(NeuronKind::If, 1), (NeuronKind::Gn, tau)] {
        let activity: Vec<Activity> = layers.iter().map(|l| Activity::of(l, neuron)).collect();
        let costs = operations.network_costs(neuron, tau, &activity);
        operations.costs.extend(costs);
    }
    Ok(Some(operations))
}

/// What one spiking layer of one network does per step, as the cost report reads it.
pub(crate) struct Activity<'a> {
    /// The value the layer writes.
    pub output: &'a str,
    /// Neurons per input.
    pub neurons: usize,
    /// (T, member spikes per neuron per step over the first T steps).
    pub rates: &'a [(usize, f64)],
    /// (T, spike events per neuron per step over the first T steps).
    pub events: &'a [(usize, f64)],
}

impl<'a> Activity<'a> {
    /// One neuron kind's activity of a measured layer.
    pub fn of(layer: &'a Layer, neuron: NeuronKind) -> Self {
        let (rates, events) = layer.activity(neuron);
        Activity { output: &layer.output, neurons: layer.neurons, rates, events }
    }
}

impl Operations {
    /// The cost of one spiking network at each T its layers' activity was measured at.
    pub(crate) fn network_costs(&self, neuron: NeuronKind, tau: u32, activity: &[Activity]) -> Vec<Cost> {
        let site_layer = |output: &str| activity.iter().find(|l| l.output == output);
        let timesteps: Vec<usize> = activity.first().map(|l| l.rates.iter().map(|r| r.0).collect()).unwrap_or_default();
        let mut costs = Vec::new();
        for (i, &t) in timesteps.iter().enumerate() {
            let steps = t as f64;
            let (mut acs, mut macs, mut dense, mut synaptic_events) = (0.0, 0.0, 0.0, 0.0);
            let mut per_op = Vec::with_capacity(self.layers.len());
            for w in &self.layers {
                let m = w.macs as f64;
                match &w.reads {
                    Reads::Once => {
                        macs += m;
                        dense += m;
                        per_op.push(m);
                    }
                    Reads::Steps => {
                        macs += m * steps;
                        dense += m * steps;
                        per_op.push(m * steps);
                    }
                    Reads::Spikes(sources) | Reads::PooledSpikes { sources, .. } => {
                        // The input's neurons come from these layers, in proportion to
                        // their sizes: the mean rate weighted by size.
                        let (mut spikes, mut events, mut size) = (0.0, 0.0, 0.0);
                        for l in sources.iter().filter_map(|s| site_layer(s)) {
                            let n = l.neurons as f64;
                            spikes += n * l.rates[i].1;
                            events += n * l.events[i].1;
                            size += n;
                        }
                        let share = |x: f64| if size > 0.0 { x / size * w.window as f64 } else { 0.0 };
                        synaptic_events += m * steps * share(events);
                        let ops = m * steps * share(spikes);
                        acs += ops;
                        dense += m * steps * w.window as f64;
                        per_op.push(ops);
                    }
                }
            }
            let (mut spikes, mut events) = (0.0, 0.0);
            for l in activity {
                let n = l.neurons as f64 * steps;
                spikes += n * l.rates[i].1;
                events += n * l.events[i].1;
            }
            let updates = self.neurons as f64 * steps;
            costs.push(Cost {
                neuron,
                tau,
                timesteps: t,
                effective_acs: acs,
                effective_macs: macs,
                synaptic_events,
                dense,
                spikes,
                events,
                membrane_updates: updates,
                activation_sparsity: if updates > 0.0 { 1.0 - events / updates } else { 1.0 },
                energy_pj: macs * self.energy.mac_pj + acs * self.energy.ac_pj,
                per_op,
            });
        }
        costs
    }
}

/// The synapses of a convolution with weight dims `w` from input `x` to output `y`
/// (`[N, C, spatial…]` each): output positions × kernel taps that fall inside the input,
/// per pair of channels it connects. `None` when the shapes do not fit the weight.
fn conv_synapses(node: &gn_onnx::proto::NodeProto, w: &[i64], x: &[usize], y: &[usize]) -> Option<u64> {
    let spatial = w.len().checked_sub(2)?;
    if x.len() != w.len() || y.len() != w.len() || spatial == 0 {
        return None;
    }
    let window = gn_onnx::window::Window::of(node, spatial).ok()?;
    let mut taps: u64 = 1;
    for i in 0..spatial {
        let (h, o, k) = (x[i + 2] as i64, y[i + 2] as i64, w[i + 2]);
        let (s, d) = (window.strides[i].max(1), window.dilations[i].max(1));
        let begin = window.begin(i, h, o, k);
        // For each kernel offset, the output positions whose tap lands inside [0, h).
        let mut inside = 0;
        for j in 0..k {
            let offset = j * d - begin;
            // o·s + offset ∈ [0, h)  ⇔  o ∈ [ceil(−offset / s), ceil((h − offset) / s)).
            let first = ((-offset).max(0) as u64).div_ceil(s as u64) as i64;
            let last = (((h - offset).max(0) as u64).div_ceil(s as u64) as i64).min(o);
            inside += (last - first).max(0);
        }
        taps = taps.checked_mul(inside as u64)?;
    }
    let channels = (y[1] as u64).checked_mul(w[1].max(0) as u64)?;
    (y[0] as u64).checked_mul(channels)?.checked_mul(taps)
}

/// Bytes of a model's initializers (and Constant nodes' tensors).
pub fn footprint(model: &ModelProto) -> u64 {
    let Some(g) = &model.graph else { return 0 };
    let tensor_bytes = |t: &gn_onnx::proto::TensorProto| -> u64 {
        let bits =
            gn_onnx::proto::tensor_proto::DataType::try_from(t.data_type()).map_or(0, gn_onnx::validate::element_bits);
        let elems = gn_onnx::data::element_count(&t.dims).unwrap_or(0) as u64;
        (elems * bits).div_ceil(8)
    };
    let constants =
        g.node.iter().filter(|n| n.op_type() == "Constant").flat_map(|n| &n.attribute).filter_map(|a| a.t.as_ref());
    g.initializer.iter().chain(constants).map(tensor_bytes).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_convolution_s_synapses_leave_out_its_padding_taps() {
        let conv = |attrs: Vec<gn_onnx::proto::AttributeProto>| gn_onnx::proto::NodeProto {
            op_type: Some("Conv".into()),
            attribute: attrs,
            ..Default::default()
        };
        use gn_onnx::graph::attr::ints;
        // 4×4 input, 3×3 kernel, padding 1: 16 outputs × 9 taps, less the 44 on padding
        // (each border row or column of outputs loses 3 taps per side; corners overlap).
        let node = conv(vec![ints("pads", &[1, 1, 1, 1])]);
        assert_eq!(conv_synapses(&node, &[1, 1, 3, 3], &[1, 1, 4, 4], &[1, 1, 4, 4]), Some(100));
        // No padding: every tap lands inside; 2 output and 3 input channels.
        assert_eq!(conv_synapses(&conv(vec![]), &[2, 3, 3, 3], &[1, 3, 5, 5], &[1, 2, 3, 3]), Some(2 * 3 * 9 * 9));
        // Stride 2, padding 1, 5 → 3: per axis, offsets 0, 1, 2 reach 2, 3, 2 outputs.
        let node = conv(vec![ints("pads", &[1, 1, 1, 1]), ints("strides", &[2, 2])]);
        assert_eq!(conv_synapses(&node, &[1, 1, 3, 3], &[1, 1, 5, 5], &[1, 1, 3, 3]), Some(7 * 7));
        assert_eq!(conv_synapses(&conv(vec![]), &[1, 1, 3, 3], &[1, 1, 4], &[1, 1, 2, 2]), None);
    }

    #[test]
    fn energy_tables_are_presets_or_two_costs() {
        let t: EnergyTable = "45nm-int8".parse().unwrap();
        assert_eq!((t.mac_pj, t.ac_pj), (0.23, 0.03));
        assert_eq!(EnergyTable::default().name, "45nm-fp32");
        let t: EnergyTable = "mac=2.5, ac=0.5".parse().unwrap();
        assert_eq!((t.mac_pj, t.ac_pj), (2.5, 0.5));
        for bad in ["45nm", "mac=1", "mac=1,ac=x", "mac=1,ac=-1", "mac=1,ac=1,flop=2"] {
            let err = bad.parse::<EnergyTable>().unwrap_err();
            assert!(err.contains("energy"), "{bad}: {err}");
        }
    }
}
