//! The sliding-window attributes of Conv and the pools (`strides`, `dilations`, `pads`,
//! `auto_pad`), read and checked once for whoever computes with them: the static shapes,
//! the synapse counts.

use crate::graph::attr;
use crate::proto::NodeProto;

/// Where a window op pads its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Padding {
    /// `pads`: the begins of the spatial axes, then their ends.
    Explicit(Vec<i64>),
    /// `auto_pad` SAME_UPPER (`upper`, the extra padding at the end) or SAME_LOWER: the
    /// output has ⌈in / stride⌉ positions.
    Same { upper: bool },
}

/// The window attributes of a node over `spatial` axes (defaults filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub strides: Vec<i64>,
    pub dilations: Vec<i64>,
    pub padding: Padding,
}

impl Window {
    /// Reads `node`'s window attributes for `spatial` axes; an attribute of the wrong
    /// length or an unknown `auto_pad` is an error saying which.
    pub fn of(node: &NodeProto, spatial: usize) -> Result<Window, String> {
        let list = |name: &str, default: i64, len: usize| -> Result<Vec<i64>, String> {
            match attr::get_ints(node, name) {
                Some(v) if v.len() == len => Ok(v.to_vec()),
                Some(v) => Err(format!("'{name}' has {} entries, not {len}", v.len())),
                None => Ok(vec![default; len]),
            }
        };
        let strides = list("strides", 1, spatial)?;
        let dilations = list("dilations", 1, spatial)?;
        let auto_pad = attr::get_string(node, "auto_pad").unwrap_or_default();
        let padding = match auto_pad.as_str() {
            "" | "NOTSET" => Padding::Explicit(list("pads", 0, 2 * spatial)?),
            "VALID" => Padding::Explicit(vec![0; 2 * spatial]),
            "SAME_UPPER" => Padding::Same { upper: true },
            "SAME_LOWER" => Padding::Same { upper: false },
            other => return Err(format!("auto_pad '{other}' is not an ONNX padding mode")),
        };
        Ok(Window { strides, dilations, padding })
    }

    /// The padding before axis `i` of an input of `size` that gives `out` positions of a
    /// window of `kernel` taps (saturating: a hostile size cannot overflow it).
    pub fn begin(&self, i: usize, size: i64, out: i64, kernel: i64) -> i64 {
        match &self.padding {
            Padding::Explicit(pads) => pads[i],
            Padding::Same { upper } => {
                let reach = (out.saturating_sub(1).saturating_mul(self.strides[i]))
                    .saturating_add(kernel.saturating_sub(1).saturating_mul(self.dilations[i]))
                    .saturating_add(1);
                let total = reach.saturating_sub(size).max(0);
                if *upper {
                    total / 2
                } else {
                    total - total / 2
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::attr::{ints, string};

    fn node(attribute: Vec<crate::proto::AttributeProto>) -> NodeProto {
        NodeProto { op_type: Some("Conv".into()), attribute, ..Default::default() }
    }

    #[test]
    fn window_attributes_get_their_defaults_and_same_padding_splits_its_total() {
        let w = Window::of(&node(vec![]), 2).unwrap();
        assert_eq!((w.strides, w.dilations, w.padding), (vec![1, 1], vec![1, 1], Padding::Explicit(vec![0; 4])));
        let valid = Window::of(&node(vec![string("auto_pad", "VALID"), ints("pads", &[9])]), 1).unwrap();
        assert_eq!(valid.padding, Padding::Explicit(vec![0, 0]));
        // Size 5, stride 2, kernel 4 → 3 positions: a total of 2·2 + 3 + 1 − 5 = 3 pads.
        let upper = Window::of(&node(vec![string("auto_pad", "SAME_UPPER"), ints("strides", &[2])]), 1).unwrap();
        assert_eq!(upper.begin(0, 5, 3, 4), 1);
        let lower = Window::of(&node(vec![string("auto_pad", "SAME_LOWER"), ints("strides", &[2])]), 1).unwrap();
        assert_eq!(lower.begin(0, 5, 3, 4), 2);
        let err = Window::of(&node(vec![ints("strides", &[1, 1, 1])]), 2).unwrap_err();
        assert_eq!(err, "'strides' has 3 entries, not 2");
        let err = Window::of(&node(vec![string("auto_pad", "SAME")]), 2).unwrap_err();
        assert_eq!(err, "auto_pad 'SAME' is not an ONNX padding mode");
    }
}
