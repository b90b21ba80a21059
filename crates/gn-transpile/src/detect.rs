//! Pass 1, detect: find every QCFS activation (docs/design.md §1). Seeds on `Floor`.
//!
//! ```text
//!        x ──► [Mul|Div|Add|Sub|Clip|Max|Min|Relu]* ──► Floor ──► [Sub/Add residue]? ──► [Mul|Div|Add|Sub|Clip|Max|Min]* ──► a
//!              (each with one dynamic operand and a constant scalar)
//! ```
//!
//! The chain is reduced to a canonical form instead of matched op by op: the ops
//! before the floor fold into `u = clip(α·x + β, lo, hi)`, the floor gives the integer
//! level `k = clip(floor(α·x + β), ⌊lo⌋, ⌊hi⌋)`, and the ops after it fold into
//! `a = clip(γ·k + δ, lo′, hi′)`. That is QCFS, `a = θ·clip(floor(x·L/θ + 1/2), 0, L)/L`,
//! exactly when β = 1/2, δ = 0, α·γ = 1, the level range is [0, L] with L a positive
//! integer, and then θ = γ·L. The straight-through residue `(floor(y) − y) + y` of the
//! "GN code" form is recognised as `floor(y)`. A chain with a `Floor` that is not QCFS is
//! reported as a near miss with the reason.

use std::collections::{BTreeMap, HashMap, HashSet};

use gn_onnx::graph::{standard_op, Constants};
use gn_onnx::proto::NodeProto;
use gn_onnx::Graph;

/// One QCFS activation found in the graph.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Site {
    /// The site's name: the name of its `Floor` node.
    pub name: String,
    /// The activation's input value (x).
    pub input: String,
    /// The activation's output value (a).
    pub output: String,
    /// The trained threshold θ.
    pub theta: f64,
    /// The quantization level L.
    pub levels: u32,
    /// Names of the nodes of the chain, input to output (for reports: names need not be
    /// unique or present).
    pub nodes: Vec<String>,
    /// The values the chain's nodes write, input to output: these identify the nodes,
    /// since every value has one writer.
    pub values: Vec<String>,
    /// The op types of the chain, e.g. `Div → Clip → Mul → Add → Floor → Div → Mul`.
    pub ops: String,
    /// A θ per channel (axis 1 of a tensor of this rank), set by calibration with
    /// `--per-channel`; `theta` is then 1 and the layer (a `…PerChannel` op) reads these
    /// as its second input, the factor of each channel's threshold.
    pub per_channel: Option<PerChannel>,
}

/// Per-channel thresholds of a calibrated ReLU site.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PerChannel {
    /// θ of each channel (axis 1).
    pub theta: Vec<f64>,
    /// The activation's rank (2 for `[N, C]`, 4 for `[N, C, H, W]`).
    pub rank: usize,
}

/// A ReLU-family activation: `Relu`, or `Clip` with a lower bound of 0 (ReLU6 and the
/// like). Not QCFS, so it has no θ of its own: `--calibrate` sets one from data
/// ([`crate::calibrate`]) and it converts as a QCFS site of that θ.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReluSite {
    /// The node's name (or `relu{index}` for an unnamed node).
    pub name: String,
    pub input: String,
    pub output: String,
    /// `Relu` or `Clip`.
    pub op: String,
    /// The upper bound of a `Clip(0, c)`: c.
    pub bound: Option<f64>,
}

/// A chain around a `Floor` that is not a QCFS activation, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NearMiss {
    pub node: String,
    pub ops: String,
    pub reason: String,
    /// The chain is a QCFS activation with an invalid threshold or scale (θ = 0, NaN,
    /// ±inf, a negative θ): refused outright, never left unconverted or shortened.
    pub fatal: bool,
}

/// What the detect pass found.
#[derive(Debug, Clone, Default)]
pub struct Detection {
    pub sites: Vec<Site>,
    pub near_misses: Vec<NearMiss>,
    /// Other activation functions seen (op type → count), for the "no QCFS" message.
    pub other_activations: BTreeMap<String, usize>,
    /// The ReLU-family activations not part of a QCFS chain, in graph order.
    pub relu_sites: Vec<ReluSite>,
}

/// One elementwise op of a chain, as a function of its dynamic operand.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// v ↦ mul·v + add
    Affine { mul: f64, add: f64 },
    /// v ↦ clip(v, lo, hi)
    Clamp { lo: f64, hi: f64 },
    /// An op of the chain whose constant makes it meaningless (a division by 0, a scale
    /// of 0, a NaN or infinite operand): what a threshold of 0, NaN or ±inf exports to.
    Degenerate { op: &'static str, value: f64 },
}

impl Step {
    /// A step, or [`Step::Degenerate`] when its constant is not finite.
    fn checked(op: &'static str, value: f64, step: Step) -> Step {
        if value.is_finite() {
            step
        } else {
            Step::Degenerate { op, value }
        }
    }
}

/// `clip(a·x + b, lo, hi)`: the canonical form of a chain of [`Step`]s.
#[derive(Debug, Clone, Copy)]
struct Canonical {
    a: f64,
    b: f64,
    lo: f64,
    hi: f64,
}

impl Canonical {
    const IDENTITY: Canonical = Canonical { a: 1.0, b: 0.0, lo: f64::NEG_INFINITY, hi: f64::INFINITY };

    fn apply(self, step: Step) -> Result<Canonical, String> {
        match step {
            Step::Affine { mul, add } => {
                if mul == 0.0 || !mul.is_finite() || !add.is_finite() {
                    return Err(format!("a scale of {mul} or offset of {add} makes the chain degenerate"));
                }
                let (lo, hi) = if mul > 0.0 { (self.lo, self.hi) } else { (self.hi, self.lo) };
                Ok(Canonical { a: self.a * mul, b: self.b * mul + add, lo: lo * mul + add, hi: hi * mul + add })
            }
            Step::Degenerate { op, value } => {
                Err(format!("θ is not a positive finite threshold: the chain's {op} has the constant {value}"))
            }
            Step::Clamp { lo, hi } => {
                let c = Canonical { lo: self.lo.max(lo), hi: self.hi.min(hi), ..self };
                if c.lo > c.hi {
                    return Err("a clamp with an empty range makes the chain constant".into());
                }
                Ok(c)
            }
        }
    }

    fn fold(steps: &[Step]) -> Result<Canonical, String> {
        steps.iter().try_fold(Canonical::IDENTITY, |c, &s| c.apply(s))
    }
}

const REL_TOL: f64 = 1e-5;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= REL_TOL * a.abs().max(b.abs()).max(1.0)
}

/// Checks that `post ∘ floor ∘ pre` is QCFS; returns (θ, L) or the reason it is not.
fn check_qcfs(pre: &[Step], post: &[Step]) -> Result<(f64, u32), String> {
    let pre = Canonical::fold(pre)?;
    let post = Canonical::fold(post)?;
    if pre.a < 0.0 && post.a < 0.0 {
        return Err(format!("θ is not positive (the scale before the floor, L/θ, is {})", pre.a));
    }
    if pre.a <= 0.0 {
        return Err(format!("the input scale before the floor is {}, QCFS needs L/θ > 0", pre.a));
    }
    if post.a <= 0.0 {
        return Err(format!("the output scale after the floor is {}, QCFS needs θ/L > 0", post.a));
    }
    if !close(pre.b, 0.5) {
        return Err(format!("the floor's rounding offset is {}, QCFS adds 1/2 before the floor", pre.b));
    }
    if post.b.abs() > REL_TOL * post.a {
        return Err(format!("the output is shifted by {}, QCFS has no output offset", post.b));
    }
    if !close(pre.a * post.a, 1.0) {
        return Err(format!(
            "the input scale {} times the output scale {} is {}, QCFS needs L/θ · θ/L = 1",
            pre.a,
            post.a,
            pre.a * post.a
        ));
    }
    // Integer levels reachable: k ∈ [⌊lo⌋, ⌊hi⌋] before the output clamp, which (δ = 0)
    // clamps k to [lo′/γ, hi′/γ].
    let mut k_lo = pre.lo.floor();
    let mut k_hi = pre.hi.floor();
    for (bound, is_lo) in [(post.lo / post.a, true), (post.hi / post.a, false)] {
        if !bound.is_finite() {
            continue;
        }
        let binding = if is_lo { bound > k_lo } else { bound < k_hi };
        if binding {
            let level = bound.round();
            if !close(bound, level) {
                return Err(format!("the output clamp at {} falls between quantization levels", bound * post.a));
            }
            if is_lo {
                k_lo = level;
            } else {
                k_hi = level;
            }
        }
    }
    if k_lo == f64::NEG_INFINITY {
        return Err("there is no lower clamp; QCFS clips at 0".into());
    }
    if k_lo != 0.0 {
        return Err(format!("the lowest level is {k_lo}, QCFS clips at 0"));
    }
    if k_hi == f64::INFINITY {
        return Err("there is no upper clamp; QCFS saturates at θ".into());
    }
    if k_hi < 1.0 || k_hi > u32::MAX as f64 {
        return Err(format!("the highest level is {k_hi}, QCFS needs an integer L ≥ 1"));
    }
    let levels = k_hi as u32;
    let theta = post.a * levels as f64;
    if !(theta.is_finite() && theta > 0.0) {
        return Err(format!("θ = {theta} is not a positive finite threshold"));
    }
    Ok((theta, levels))
}

/// The step that `node` applies to its dynamic operand `flow`, or why it is not one.
fn step_of(consts: &Constants, node: &NodeProto, flow: &str) -> Option<Step> {
    let scalar = |name: &str| consts.scalar(name);
    let other = |node: &NodeProto| -> Option<(usize, f64)> {
        if node.input.len() != 2 {
            return None;
        }
        let pos = node.input.iter().position(|i| i == flow)?;
        if node.input[1 - pos] == flow {
            return None;
        }
        Some((pos, scalar(&node.input[1 - pos])?))
    };
    match standard_op(node) {
        "Identity" => Some(Step::Affine { mul: 1.0, add: 0.0 }),
        "Relu" => Some(Step::Clamp { lo: 0.0, hi: f64::INFINITY }),
        "Mul" => other(node).map(|(_, c)| match c {
            0.0 => Step::Degenerate { op: "Mul", value: c },
            _ => Step::checked("Mul", c, Step::Affine { mul: c, add: 0.0 }),
        }),
        "Add" => other(node).map(|(_, c)| Step::checked("Add", c, Step::Affine { mul: 1.0, add: c })),
        "Div" => match other(node)? {
            (0, c) if c == 0.0 || c.is_infinite() => Some(Step::Degenerate { op: "Div", value: c }),
            (0, c) => Some(Step::checked("Div", c, Step::Affine { mul: 1.0 / c, add: 0.0 })),
            _ => None,
        },
        "Sub" => match other(node)? {
            (0, c) => Some(Step::checked("Sub", c, Step::Affine { mul: 1.0, add: -c })),
            (_, c) => Some(Step::checked("Sub", c, Step::Affine { mul: -1.0, add: c })),
        },
        "Max" => other(node).map(|(_, c)| match c.is_nan() {
            true => Step::Degenerate { op: "Max", value: c },
            false => Step::Clamp { lo: c, hi: f64::INFINITY },
        }),
        "Min" => other(node).map(|(_, c)| match c.is_nan() {
            true => Step::Degenerate { op: "Min", value: c },
            false => Step::Clamp { lo: f64::NEG_INFINITY, hi: c },
        }),
        "Clip" => {
            if node.input.first().map(String::as_str) != Some(flow) {
                return None;
            }
            let bound = |idx: usize, attr: &str, default: f64| -> Option<f64> {
                match node.input.get(idx).map(String::as_str) {
                    Some("") | None => {
                        Some(gn_onnx::graph::attr::get_float(node, attr).map(|v| v as f64).unwrap_or(default))
                    }
                    Some(name) => scalar(name),
                }
            };
            let (lo, hi) = (bound(1, "min", f64::NEG_INFINITY)?, bound(2, "max", f64::INFINITY)?);
            if lo.is_nan() || hi.is_nan() {
                return Some(Step::Degenerate { op: "Clip", value: f64::NAN });
            }
            Some(Step::Clamp { lo, hi })
        }
        _ => None,
    }
}

/// The dynamic operand of a candidate chain node: the one input that is not a constant.
fn flow_input<'a>(consts: &Constants, node: &'a NodeProto) -> Option<&'a str> {
    let mut dynamic = node.input.iter().filter(|i| !i.is_empty() && !consts.is_constant(i));
    let first = dynamic.next()?;
    dynamic.next().is_none().then_some(first.as_str())
}

/// The most ops walked on each side of a `Floor`. Every export form has at most seven
/// (docs/design.md §1); the bound keeps detection linear in the graph on any input.
const MAX_CHAIN: usize = 32;

/// The graph as the chain walks read it.
struct Walk<'a> {
    consts: Constants<'a>,
    producers: HashMap<String, usize>,
    consumers: HashMap<String, Vec<usize>>,
    outputs: HashSet<String>,
    nodes: &'a [NodeProto],
}

impl Walk<'_> {
    fn readers(&self, v: &str) -> Vec<usize> {
        self.consumers.get(v).cloned().unwrap_or_default()
    }

    /// The straight-through residue after a floor, `Sub(floor(y), y) → Add(·, y)`: its
    /// two nodes and the value after it, or none and the floor's output. (Every value
    /// inside a chain is read by the chain alone: never a graph output.)
    fn residue(&self, floor: &NodeProto) -> (Vec<usize>, String) {
        let (y, after_floor) = (floor.input[0].as_str(), floor.output[0].clone());
        let none = (Vec::new(), after_floor.clone());
        let (false, [sub_idx]) = (self.outputs.contains(&after_floor), &self.readers(&after_floor)[..]) else {
            return none;
        };
        let sub = &self.nodes[*sub_idx];
        if !(standard_op(sub) == "Sub" && sub.input.len() == 2 && sub.input[0] == after_floor && sub.input[1] == y) {
            return none;
        }
        let [add_idx] = self.readers(&sub.output[0])[..] else { return none };
        let add = &self.nodes[add_idx];
        let r = &sub.output[0];
        let reads_both = |i: &[String]| (i[0] == *r && i[1] == y) || (i[1] == *r && i[0] == y);
        if standard_op(add) == "Add" && add.input.len() == 2 && reads_both(&add.input) && !self.outputs.contains(r) {
            (vec![*sub_idx, add_idx], add.output[0].clone())
        } else {
            none
        }
    }

    /// The steps before a floor whose input is `y`, walking backwards, in chain order.
    fn before(&self, y: &str, allowed_y_readers: &HashSet<usize>, claimed: &HashSet<usize>) -> Vec<(usize, Step)> {
        let mut pre: Vec<(usize, Step)> = Vec::new();
        let mut cur = y.to_string();
        while let Some(&p) = self.producers.get(&cur) {
            let readers_ok = if cur == y {
                self.readers(&cur).iter().all(|r| allowed_y_readers.contains(r))
            } else {
                self.readers(&cur).len() == 1
            };
            if !readers_ok || self.outputs.contains(&cur) || claimed.contains(&p) || pre.len() == MAX_CHAIN {
                break;
            }
            let node = &self.nodes[p];
            let Some(flow) = flow_input(&self.consts, node) else { break };
            let Some(step) = step_of(&self.consts, node, flow) else { break };
            pre.push((p, step));
            cur = flow.to_string();
            if matches!(step, Step::Degenerate { .. }) {
                break;
            }
        }
        pre.reverse();
        pre
    }

    /// The steps after a floor, from `after_floor` (the value after its residue).
    fn after(&self, after_floor: &str) -> Vec<(usize, Step)> {
        let mut post: Vec<(usize, Step)> = Vec::new();
        let mut cur = after_floor.to_string();
        loop {
            if self.outputs.contains(&cur) || post.len() == MAX_CHAIN {
                break;
            }
            let [c] = self.readers(&cur)[..] else { break };
            let node = &self.nodes[c];
            if node.output.len() != 1 || flow_input(&self.consts, node) != Some(cur.as_str()) {
                break;
            }
            let Some(step) = step_of(&self.consts, node, &cur) else { break };
            post.push((c, step));
            cur = node.output[0].clone();
            if matches!(step, Step::Degenerate { .. }) {
                break;
            }
        }
        post
    }
}

/// A QCFS chain found: (first pre step, post steps kept, θ, L).
type Chain = (usize, usize, f64, u32);
/// No QCFS chain: the first reason found, and whether it is fatal.
type Miss = (Option<String>, bool);

/// The longest QCFS chain within `pre` → floor → `post`: (first pre step, post steps
/// kept, θ, L), or the first reason a chain was not QCFS and whether that reason is fatal.
/// Ops are dropped from the ends until the chain is QCFS. A chain holding a degenerate op
/// (θ = 0, NaN, ±inf) is refused whole: shortening it would find a different activation
/// (θ = 1) where the model holds a broken one.
fn longest_qcfs(pre: &[Step], post: &[Step]) -> Result<Chain, Miss> {
    if let Some(Step::Degenerate { op, value }) =
        pre.iter().chain(post).copied().find(|s| matches!(s, Step::Degenerate { .. }))
    {
        return Err((
            Some(format!("θ is not a positive finite threshold: the chain's {op} has the constant {value}")),
            true,
        ));
    }
    let mut first_reason = None;
    for start in 0..=pre.len() {
        for end in (0..=post.len()).rev() {
            match check_qcfs(&pre[start..], &post[..end]) {
                Ok((theta, levels)) => return Ok((start, end, theta, levels)),
                Err(reason) => {
                    // A full chain with a bad θ is reported, not shortened into a
                    // different activation.
                    let fatal = start == 0 && end == post.len() && reason.starts_with("θ is not positive");
                    first_reason.get_or_insert(reason);
                    if fatal {
                        return Err((first_reason, true));
                    }
                }
            }
        }
    }
    Err((first_reason, false))
}

/// Runs the detect pass.
pub fn detect(graph: &Graph) -> Detection {
    let walk = Walk {
        consts: graph.constants(),
        producers: graph.producers(),
        consumers: graph.consumers(),
        outputs: graph.output_names().into_iter().collect(),
        nodes: graph.nodes(),
    };
    let nodes = walk.nodes;
    let mut detection = Detection::default();
    let mut claimed: HashSet<usize> = HashSet::new();
    for (floor_idx, floor) in nodes.iter().enumerate() {
        if standard_op(floor) != "Floor" || floor.input.len() != 1 || floor.output.len() != 1 {
            continue;
        }
        let y = floor.input[0].as_str();
        let (residue, after_floor) = walk.residue(floor);
        let allowed_y_readers: HashSet<usize> = residue.iter().copied().chain([floor_idx]).collect();
        let pre = walk.before(y, &allowed_y_readers, &claimed);
        let post = walk.after(&after_floor);
        let describe = |start: usize, end: usize| -> (Vec<String>, Vec<String>, String) {
            let mut idx: Vec<usize> = pre[start..].iter().map(|&(i, _)| i).collect();
            idx.push(floor_idx);
            idx.extend(&residue);
            idx.extend(post[..end].iter().map(|&(i, _)| i));
            let names = idx.iter().map(|&i| nodes[i].name().to_string()).collect();
            let values = idx.iter().filter_map(|&i| nodes[i].output.first().cloned()).collect();
            let ops = idx.iter().map(|&i| nodes[i].op_type()).collect::<Vec<_>>().join(" → ");
            (names, values, ops)
        };
        let pre_steps: Vec<Step> = pre.iter().map(|&(_, s)| s).collect();
        let post_steps: Vec<Step> = post.iter().map(|&(_, s)| s).collect();
        let floor_name = if floor.name().is_empty() { format!("floor{floor_idx}") } else { floor.name().to_string() };
        match longest_qcfs(&pre_steps, &post_steps) {
            Ok((start, end, theta, levels)) => {
                let (names, values, ops) = describe(start, end);
                let output = if end == 0 { after_floor.clone() } else { nodes[post[end - 1].0].output[0].clone() };
                claimed.extend(pre[start..].iter().map(|&(i, _)| i));
                claimed.extend(post[..end].iter().map(|&(i, _)| i));
                claimed.insert(floor_idx);
                claimed.extend(&residue);
                let input = match pre.get(start) {
                    Some(&(p, _)) => flow_input(&walk.consts, &nodes[p]).unwrap_or_default().to_string(),
                    None => y.to_string(),
                };
                detection.sites.push(Site {
                    name: floor_name,
                    input,
                    output,
                    theta,
                    levels,
                    nodes: names,
                    values,
                    ops,
                    per_channel: None,
                });
            }
            Err((reason, fatal)) => {
                let (_, _, ops) = describe(0, post.len());
                detection.near_misses.push(NearMiss {
                    node: floor_name,
                    ops,
                    reason: reason.unwrap_or_else(|| "no chain around the floor".into()),
                    fatal,
                });
            }
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        if crate::ops::is_activation(n.op_type()) && !claimed.contains(&i) {
            *detection.other_activations.entry(n.op_type().to_string()).or_default() += 1;
            if let Some(site) = relu_site(&walk.consts, i, n) {
                detection.relu_sites.push(site);
            }
        }
    }
    detection
}

/// `n` as a ReLU-family activation: `Relu(x)`, or `Clip(x, 0, c)` with c > 0 (c may be
/// absent: no upper bound).
fn relu_site(consts: &Constants, index: usize, n: &NodeProto) -> Option<ReluSite> {
    if n.output.len() != 1 || n.output[0].is_empty() {
        return None;
    }
    let input = n.input.first().filter(|i| !i.is_empty() && !consts.is_constant(i))?;
    let bound = match (standard_op(n), step_of(consts, n, input)?) {
        ("Relu", _) if n.input.len() == 1 => None,
        ("Clip", Step::Clamp { lo, hi }) if lo == 0.0 && hi > 0.0 => hi.is_finite().then_some(hi),
        _ => return None,
    };
    Some(ReluSite {
        name: if n.name().is_empty() { format!("relu{index}") } else { n.name().to_string() },
        input: input.clone(),
        output: n.output[0].clone(),
        op: standard_op(n).to_string(),
        bound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn affine(mul: f64, add: f64) -> Step {
        Step::Affine { mul, add }
    }
    fn clamp(lo: f64, hi: f64) -> Step {
        Step::Clamp { lo, hi }
    }

    #[test]
    fn standard_form_is_qcfs() {
        let theta = 2.5;
        let pre = [affine(1.0 / theta, 0.0), clamp(0.0, 1.0), affine(4.0, 0.0), affine(1.0, 0.5)];
        let post = [affine(0.25, 0.0), affine(theta, 0.0)];
        let (t, l) = check_qcfs(&pre, &post).expect("QCFS");
        assert!((t - theta).abs() < 1e-12);
        assert_eq!(l, 4);
    }

    #[test]
    fn old_qcfs_form_with_max_min_is_qcfs() {
        let pre = [affine(1.0 / 3.0, 0.0), affine(8.0, 0.0), affine(1.0, 0.5)];
        let post = [affine(1.0 / 8.0, 0.0), clamp(0.0, f64::INFINITY), clamp(f64::NEG_INFINITY, 1.0), affine(3.0, 0.0)];
        assert_eq!(check_qcfs(&pre, &post).map(|(_, l)| l), Ok(8));
    }

    #[test]
    fn rounding_offset_other_than_half_is_refused() {
        let pre = [affine(4.0, 0.0), affine(1.0, 0.3)];
        let post = [clamp(0.0, 4.0), affine(0.25, 0.0)];
        let err = check_qcfs(&pre, &post).unwrap_err();
        assert!(err.contains("rounding offset"), "{err}");
    }

    #[test]
    fn missing_upper_clamp_is_refused() {
        let pre = [affine(4.0, 0.5)];
        let post = [clamp(0.0, f64::INFINITY), affine(0.25, 0.0)];
        assert!(check_qcfs(&pre, &post).unwrap_err().contains("upper clamp"));
    }

    #[test]
    fn mismatched_scales_are_refused() {
        let pre = [affine(4.0, 0.5), clamp(0.5, 4.5)];
        let post = [affine(0.5, 0.0)];
        assert!(check_qcfs(&pre, &post).unwrap_err().contains("= 1"));
    }
}
