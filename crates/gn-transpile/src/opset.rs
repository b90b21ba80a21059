//! The model's default-domain opset and the opset-dependent spelling of the few ops the
//! passes write (Clip, Split, Squeeze / Unsqueeze).

use gn_onnx::graph::attr;
use gn_onnx::proto::ModelProto;
use gn_onnx::Graph;

/// The ONNX opset the model imports for the default domain.
pub fn default_opset(model: &ModelProto) -> Option<i64> {
    model.opset_import.iter().find(|o| matches!(o.domain(), "" | "ai.onnx")).map(|o| o.version())
}

/// The opset-dependent spelling of the few ops the expansion needs.
#[derive(Debug, Clone, Copy)]
pub struct Opset(pub i64);

impl Opset {
    /// `Clip(x, lo, hi)`: bounds as inputs from opset 11.
    pub fn clip(&self, g: &mut Graph, source: &str, suffix: &str, x: &str, lo: &str, hi: &str) -> String {
        g.add_node(source, suffix, "Clip", &[x, lo, hi], vec![])
    }

    /// `Split(x)` into `parts` equal slices along axis 0.
    pub fn split(&self, g: &mut Graph, source: &str, suffix: &str, x: &str, parts: usize) -> Vec<String> {
        let attrs = if self.0 >= 18 {
            vec![attr::int("axis", 0), attr::int("num_outputs", parts as i64)]
        } else {
            vec![attr::int("axis", 0)]
        };
        g.add_node_multi(source, suffix, "Split", &[x], parts, attrs)
    }

    /// `Unsqueeze(x)` or `Squeeze(x)` at axis 0: axes as an input from opset 13.
    pub fn squeeze0(&self, g: &mut Graph, source: &str, suffix: &str, op: &str, x: &str) -> String {
        if self.0 >= 13 {
            let axes = g.add_initializer_i64(&format!("{source}.{suffix}.axes"), &[1], &[0]);
            g.add_node(source, suffix, op, &[x, &axes], vec![])
        } else {
            g.add_node(source, suffix, op, &[x], vec![attr::ints("axes", &[0])])
        }
    }
}
