//! The shape every pass has: it reads the graph and the [`Context`] and returns what it
//! would change as a [`Patch`], with a report of what it found ([`Planned`]); the
//! pipeline applies the patch. A pass never edits the graph it is matching against.
//!
//! ```text
//!   fn run(graph: &Graph, cx: &Context, …) -> Result<Planned<Report>, TranspileError>
//!   pass::run(&mut graph, "name", |g| module::run(g, &cx, …))?   // plan, then apply
//! ```

use gn_onnx::{Graph, Patch};

use crate::error::TranspileError;
use crate::opset::Opset;
use crate::options::Options;

/// What every pass may read besides the graph.
#[derive(Debug, Clone)]
pub struct Context {
    pub options: Options,
    /// The model's default-domain opset (the spelling of Split, Squeeze, …).
    pub opset: Opset,
}

/// A pass's result: the patch to apply and what the pass reports.
#[derive(Debug, Clone)]
pub struct Planned<R = ()> {
    pub patch: Patch,
    pub report: R,
}

impl Planned<()> {
    /// A patch with nothing to report.
    pub fn patch(patch: Patch) -> Self {
        Planned { patch, report: () }
    }
}

/// Plans a pass on `graph` and applies its patch; returns the pass's report. `pass`
/// names the pass in the error if the patch does not fit (a bug, not a property of the
/// model).
pub fn run<R>(
    graph: &mut Graph,
    pass: &'static str,
    plan: impl FnOnce(&Graph) -> Result<Planned<R>, TranspileError>,
) -> Result<R, TranspileError> {
    let planned = plan(graph)?;
    graph.apply(planned.patch).map_err(|e| TranspileError::Pass {
        pass,
        node: String::new(),
        reason: e.to_string(),
    })?;
    Ok(planned.report)
}
