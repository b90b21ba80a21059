//! The rate-coded forms: an op on time-varying inputs that does not commute with the
//! time average, computed so that its output averaged over the first t steps is the op
//! applied to its inputs averaged over them, at every t (exact in rate; docs/design.md
//! §5.4). For any function F of its current inputs, with running averages
//! x̄(t) = (1/t)·Σ_{s≤t} x(s):
//!
//! ```text
//!   y(t) = t·F(x̄(t)) − (t−1)·F(x̄(t−1))        so that   (1/t)·Σ_{s≤t} y(s) = F(x̄(t))
//! ```
//!
//! * A max-reduction (MaxPool, GlobalMaxPool, ReduceMax) is positively homogeneous, so
//!   t·F(x̄(t)) = F(Σ_{s≤t} x(s)): the max-pool of the running sums, differenced
//!   ([`expand_max_pool`]).
//! * Every other such op belongs to a [`Region`]: a maximal connected set of them (with
//!   the linear ops between them), compensated once: its time-varying inputs are replaced
//!   by their running averages ([`running_mean`]), its nodes run unchanged on all T·N
//!   rows at once, and each output is multiplied by t and differenced ([`compensate`]).
//!   An op that feeds another inside the region is not differenced and re-summed.
//!
//! The unrolled and the stateful emissions both write these forms through this module.

use std::collections::{HashMap, HashSet};

use gn_onnx::graph::{attr, standard_op};
use gn_onnx::proto::NodeProto;
use gn_onnx::Graph;

use crate::error::TranspileError;
use crate::ops;
use crate::opset::Opset;
use crate::time::{Analysis, Role, TimeClass};

/// A connected set of rate-coded nodes (not max-pools), compensated as one function of
/// its time-varying inputs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Region {
    /// Its nodes, by their first output (a value has one writer).
    pub nodes: Vec<String>,
    /// The time-varying values it reads from outside: replaced by their running averages.
    pub inputs: Vec<String>,
    /// The values it writes that are read outside it or are graph outputs: differenced.
    pub outputs: Vec<String>,
}

/// The regions of an analysed graph: its rate-coded nodes other than max-pools, grown by
/// the linear nodes that only pass values between them, joined where one reads another
/// (`joined`; otherwise one region per rate-coded node). Refuses a region whose output is
/// written by an op of booleans or indices (a value that cannot be averaged over time).
pub fn regions(graph: &Graph, analysis: &Analysis, joined: bool) -> Result<Vec<Region>, TranspileError> {
    let nodes = graph.nodes();
    let role_of: HashMap<usize, &Role> =
        analysis.order.iter().copied().zip(analysis.verdicts.iter().map(|v| &v.role)).collect();
    let mut member: HashSet<usize> = role_of
        .iter()
        .filter(|(&i, r)| ***r == Role::Rate && !ops::is_max_pool(standard_op(&nodes[i])))
        .map(|(&i, _)| i)
        .collect();
    if member.is_empty() {
        return Ok(Vec::new());
    }
    let producers = graph.producers();
    let consumers = graph.consumers();
    let outputs: HashSet<String> = graph.output_names().into_iter().collect();
    let folded = |v: &str| analysis.classes.get(v) == Some(&TimeClass::Folded);
    // Linear nodes between members join them: every time-varying input from a member,
    // every reader a member.
    if joined {
        loop {
            let joining: Vec<usize> = role_of
                .iter()
                .filter(|(i, r)| ***r == Role::Exact && !member.contains(*i))
                .map(|(&i, _)| i)
                .filter(|&i| {
                    let n = &nodes[i];
                    let fed = n
                        .input
                        .iter()
                        .filter(|v| folded(v))
                        .all(|v| producers.get(v).is_some_and(|p| member.contains(p)));
                    let read = n.output.iter().filter(|o| !o.is_empty()).all(|o| {
                        !outputs.contains(o)
                            && consumers.get(o).is_some_and(|c| !c.is_empty() && c.iter().all(|r| member.contains(r)))
                    });
                    fed && read && n.input.iter().any(|v| folded(v))
                })
                .collect();
            if joining.is_empty() {
                break;
            }
            member.extend(joining);
        }
    }
    // Connected components over the values members pass each other.
    let mut sorted: Vec<usize> = member.iter().copied().collect();
    sorted.sort();
    let mut component: HashMap<usize, usize> = HashMap::new();
    let mut regions: Vec<Vec<usize>> = Vec::new();
    for &start in &sorted {
        if component.contains_key(&start) {
            continue;
        }
        if !joined {
            component.insert(start, regions.len());
            regions.push(vec![start]);
            continue;
        }
        let id = regions.len();
        let mut stack = vec![start];
        let mut nodes_of = Vec::new();
        component.insert(start, id);
        while let Some(i) = stack.pop() {
            nodes_of.push(i);
            let n = &nodes[i];
            let up = n.input.iter().filter_map(|v| producers.get(v).copied());
            let down = n.output.iter().filter_map(|o| consumers.get(o)).flatten().copied();
            for j in up.chain(down).collect::<Vec<_>>() {
                if member.contains(&j) && !component.contains_key(&j) {
                    component.insert(j, id);
                    stack.push(j);
                }
            }
        }
        nodes_of.sort();
        regions.push(nodes_of);
    }
    regions.into_iter().map(|r| region(graph, &r, &member, &producers, &consumers, &outputs, &folded)).collect()
}

/// The inputs and outputs of the region of nodes `r`.
fn region(
    graph: &Graph,
    r: &[usize],
    member: &HashSet<usize>,
    producers: &HashMap<String, usize>,
    consumers: &HashMap<String, Vec<usize>>,
    outputs: &HashSet<String>,
    folded: &dyn Fn(&str) -> bool,
) -> Result<Region, TranspileError> {
    let nodes = graph.nodes();
    let inside: HashSet<usize> = r.iter().copied().collect();
    let mut region = Region::default();
    for &i in r {
        let n = &nodes[i];
        region.nodes.push(n.output[0].clone());
        for v in n.input.iter().filter(|v| folded(v)) {
            if !producers.get(v).is_some_and(|p| inside.contains(p)) && !region.inputs.contains(v) {
                region.inputs.push(v.clone());
            }
        }
        for (k, o) in n.output.iter().enumerate().filter(|(_, o)| !o.is_empty()) {
            let read_outside = consumers.get(o).is_some_and(|c| c.iter().any(|j| !inside.contains(j)));
            if !(read_outside || outputs.contains(o)) {
                continue;
            }
            if ops::is_discrete(standard_op(n)) || (standard_op(n) == "TopK" && k == 1) {
                return Err(TranspileError::Pass {
                    pass: "lower",
                    node: if n.name().is_empty() { o.clone() } else { n.name().to_string() },
                    reason: format!(
                        "{} writes booleans or indices ('{o}') that leave its exact-in-rate region: only numbers are averaged over the time steps",
                        n.op_type()
                    ),
                });
            }
            region.outputs.push(o.clone());
        }
    }
    debug_assert!(r.iter().all(|i| member.contains(i)));
    Ok(region)
}

/// The running average x̄(t) of a folded `[T·N, …]` value `x`, as a value of x's shape:
/// `Reshape [T, -1] → CumSum along the steps → Div by [[1], …, [T]] → Reshape`. The sums
/// are taken in step order.
pub fn running_mean(g: &mut Graph, x: &str, timesteps: usize) -> String {
    let (rows, steps) = step_constants(g, x, timesteps);
    let axis = g.add_initializer_i64(&format!("{x}.rate.step_axis"), &[], &[0]);
    let xs = g.add_node(x, "rate.steps", "Reshape", &[x, &rows], vec![]);
    let sums = g.add_node(x, "rate.sum", "CumSum", &[&xs, &axis], vec![]);
    let means = g.add_node(x, "rate.mean", "Div", &[&sums, &steps], vec![]);
    let shape = g.add_node(x, "rate.shape", "Shape", &[x], vec![]);
    g.add_node(x, "rate.average", "Reshape", &[&means, &shape], vec![])
}

/// Writes `y`, the region output `f` = F(x̄(t)) (folded `[T·N, …]`) compensated:
/// `y(t) = t·F(t) − (t−1)·F(t−1)`, the second term 0 at t = 1.
pub fn compensate(g: &mut Graph, f: &str, y: &str, timesteps: usize) {
    let t = timesteps as i64;
    let (rows, steps) = step_constants(g, f, timesteps);
    let fs = g.add_node(f, "rate.steps", "Reshape", &[f, &rows], vec![]);
    let totals = g.add_node(f, "rate.total", "Mul", &[&fs, &steps], vec![]);
    let starts = g.add_initializer_i64(&format!("{f}.rate.starts"), &[1], &[0]);
    let ends = g.add_initializer_i64(&format!("{f}.rate.ends"), &[1], &[t - 1]);
    let axes = g.add_initializer_i64(&format!("{f}.rate.axes"), &[1], &[0]);
    let earlier = g.add_node(f, "rate.earlier", "Slice", &[&totals, &starts, &ends, &axes], vec![]);
    let pads = g.add_initializer_i64(&format!("{f}.rate.pads"), &[4], &[1, 0, 0, 0]);
    let previous = g.add_node(f, "rate.previous", "Pad", &[&earlier, &pads], vec![]);
    let steps_out = g.add_node(f, "rate.diff", "Sub", &[&totals, &previous], vec![]);
    let shape = g.add_node(f, "rate.shape", "Shape", &[f], vec![]);
    g.add_node(f, "rate.out", "Reshape", &[&steps_out, &shape], vec![]);
    rename_last_output(g, y);
}

/// `[T, -1]` and the step counts `[[1], …, [T]]` for value `v`.
fn step_constants(g: &mut Graph, v: &str, timesteps: usize) -> (String, String) {
    let t = timesteps as i64;
    let counts: Vec<f32> = (1..=timesteps).map(|s| s as f32).collect();
    let rows = g.add_initializer_i64(&format!("{v}.rate.rows"), &[2], &[t, -1]);
    let steps = g.add_initializer_f32(&format!("{v}.rate.counts"), &[t, 1], &counts);
    (rows, steps)
}

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
