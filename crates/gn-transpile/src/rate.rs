//! The rate-coded forms: an op on time-varying inputs that does not commute with the
//! time average, computed so that its output averaged over the first t steps is the op
//! applied to its inputs averaged over them, at every t (exact in rate). Today the
//! max-reductions (MaxPool, GlobalMaxPool, ReduceMax), by the running-sum form below;
//! the unrolled and the stateful emissions both write them through [`expand_max_pool`].

use gn_onnx::graph::attr;
use gn_onnx::proto::NodeProto;
use gn_onnx::Graph;

use crate::opset::Opset;

/// The running sums and the last pooled value of a max-pool on spikes, kept as state
/// (input, output) by a graph that runs one step per call.
#[derive(Debug, Clone, Copy)]
pub struct PoolState<'a> {
    /// C(t−1) in, C(t) out.
    pub sum: (&'a str, &'a str),
    /// P(t−1) in, P(t) out.
    pub max: (&'a str, &'a str),
}

/// Lowers a max-pool (MaxPool, GlobalMaxPool, ReduceMax) on a folded input `[T·N, …]` to
/// the max-pool of the running sums, differenced over time:
///
/// ```text
///   C(t) = Σ_{s ≤ t} x(s)          (running sum per input neuron)
///   P(t) = MaxPool(C(t))           (one MaxPool over all T·N samples)
///   y(t) = P(t) − P(t−1)           (P(0) = 0)
/// ```
///
/// The steps telescope: Σ_{s ≤ t} y(s) = MaxPool(C(t)), so the output averaged over the
/// first t steps is the max-pool of the inputs averaged over them, at every t; on spike
/// trains each y(t) is a non-negative count of firing units; at T = 1 it is the MaxPool.
///
/// With `state` (one step per call, `timesteps` = 1) C(t−1) and P(t−1) are read from the
/// state instead of being 0, and C(t) and P(t) are written to it. This is the one
/// definition of the cumulative max-pool: the unrolled and the stateful emissions use it.
pub fn expand_max_pool(graph: &mut Graph, opset: Opset, node: NodeProto, timesteps: usize, state: Option<PoolState>) {
    debug_assert!(state.is_none() || timesteps == 1, "a max-pool keeps state only in a one-step graph");
    let name = if node.name().is_empty() { format!("{}.maxpool", node.output[0]) } else { node.name().to_string() };
    let x = node.input[0].clone();
    let folded = timesteps > 1;
    if folded && state.is_none() && opset.0 >= 11 {
        return running_max_pool(graph, &name, node, timesteps);
    }
    let rows = folded.then(|| graph.add_initializer_i64(&format!("{name}.rows"), &[2], &[timesteps as i64, -1]));
    let parts = match &rows {
        Some(rows) => {
            let xs = graph.add_node(&name, "cum.steps", "Reshape", &[&x, rows], vec![]);
            opset.split(graph, &name, "cum.split", &xs, timesteps)
        }
        None => vec![x.clone()],
    };
    let mut sums: Vec<String> = Vec::with_capacity(timesteps);
    for (t, part) in parts.iter().enumerate() {
        let previous = match (t, state) {
            (0, None) => {
                sums.push(part.clone());
                continue;
            }
            (0, Some(s)) => s.sum.0.to_string(),
            _ => sums[t - 1].clone(),
        };
        let sum = graph.add_node(&name, &format!("cum.t{}", t + 1), "Add", &[&previous, part], vec![]);
        sums.push(match state {
            Some(s) => rename_last_output(graph, s.sum.1),
            None => sum,
        });
    }
    let counts = if folded {
        let refs: Vec<&str> = sums.iter().map(String::as_str).collect();
        let cum = graph.add_node(&name, "cum.join", "Concat", &refs, vec![attr::int("axis", 0)]);
        let x_shape = graph.add_node(&name, "cum.shape", "Shape", &[&x], vec![]);
        graph.add_node(&name, "cum", "Reshape", &[&cum, &x_shape], vec![])
    } else {
        sums[0].clone()
    };
    let pool_name = graph.unique_name(&format!("{name}.pooled"));
    let pooled = state.map_or(pool_name.clone(), |s| s.max.1.to_string());
    let mut pool = node.clone();
    pool.name = Some(pool_name);
    pool.input[0] = counts;
    pool.output = vec![pooled.clone()];
    graph.proto.node.push(pool);
    let parts = match &rows {
        Some(rows) => {
            let ps = graph.add_node(&name, "diff.steps", "Reshape", &[&pooled, rows], vec![]);
            opset.split(graph, &name, "diff.split", &ps, timesteps)
        }
        None => vec![pooled.clone()],
    };
    let mut steps = Vec::with_capacity(timesteps);
    for t in 0..timesteps {
        let previous = match (t, state) {
            (0, None) => {
                steps.push(parts[0].clone());
                continue;
            }
            (0, Some(s)) => s.max.0,
            _ => parts[t - 1].as_str(),
        };
        steps.push(graph.add_node(&name, &format!("diff.t{}", t + 1), "Sub", &[&parts[t], previous], vec![]));
    }
    if folded {
        let refs: Vec<&str> = steps.iter().map(String::as_str).collect();
        let joined = graph.add_node(&name, "diff.join", "Concat", &refs, vec![attr::int("axis", 0)]);
        let p_shape = graph.add_node(&name, "diff.shape", "Shape", &[&pooled], vec![]);
        graph.add_node(&name, "out", "Reshape", &[&joined, &p_shape], vec![]);
    }
    // The last node written (the output reshape, the difference, or the pool) writes y.
    rename_last_output(graph, &node.output[0]);
}

/// [`expand_max_pool`] on a folded input without state, in four passes over the data: the
/// running sums by one `CumSum` along the steps, the pool, and the difference as `P`
/// minus `P` shifted by one step (`Slice`, then `Pad` with a zero step in front). The
/// sums are taken in step order, as the chain of `Add`s of the general form does.
fn running_max_pool(graph: &mut Graph, name: &str, node: NodeProto, timesteps: usize) {
    let t = timesteps as i64;
    let x = node.input[0].clone();
    let rows = graph.add_initializer_i64(&format!("{name}.rows"), &[2], &[t, -1]);
    let axis = graph.add_initializer_i64(&format!("{name}.step_axis"), &[], &[0]);
    let xs = graph.add_node(name, "cum.steps", "Reshape", &[&x, &rows], vec![]);
    let cum = graph.add_node(name, "cum.sum", "CumSum", &[&xs, &axis], vec![]);
    let x_shape = graph.add_node(name, "cum.shape", "Shape", &[&x], vec![]);
    let counts = graph.add_node(name, "cum", "Reshape", &[&cum, &x_shape], vec![]);
    let pooled = graph.unique_name(&format!("{name}.pooled"));
    let mut pool = node.clone();
    pool.name = Some(pooled.clone());
    pool.input[0] = counts;
    pool.output = vec![pooled.clone()];
    graph.proto.node.push(pool);
    let ps = graph.add_node(name, "diff.steps", "Reshape", &[&pooled, &rows], vec![]);
    let starts = graph.add_initializer_i64(&format!("{name}.diff.starts"), &[1], &[0]);
    let ends = graph.add_initializer_i64(&format!("{name}.diff.ends"), &[1], &[t - 1]);
    let axes = graph.add_initializer_i64(&format!("{name}.diff.axes"), &[1], &[0]);
    let earlier = graph.add_node(name, "diff.earlier", "Slice", &[&ps, &starts, &ends, &axes], vec![]);
    let pads = graph.add_initializer_i64(&format!("{name}.diff.pads"), &[4], &[1, 0, 0, 0]);
    let previous = graph.add_node(name, "diff.previous", "Pad", &[&earlier, &pads], vec![]);
    let steps = graph.add_node(name, "diff", "Sub", &[&ps, &previous], vec![]);
    let p_shape = graph.add_node(name, "diff.shape", "Shape", &[&pooled], vec![]);
    graph.add_node(name, "out", "Reshape", &[&steps, &p_shape], vec![]);
    rename_last_output(graph, &node.output[0]);
}

/// Renames the output of the node last added to `graph`; returns the new name.
fn rename_last_output(graph: &mut Graph, name: &str) -> String {
    if let Some(last) = graph.proto.node.last_mut() {
        last.output[0] = name.to_string();
    }
    name.to_string()
}
