//! What the passes know about each standard ONNX op, in one table: whether it commutes
//! with the time average (linear in its time-varying operand, per sample), whether it is
//! a max-reduction (exact in rate by the running-sum form), whether it computes a shape,
//! whether its output keeps its first input's rank or broadcasts its inputs, and whether
//! it is an activation function (for the detect pass's report). The time analysis
//! ([`crate::time`]), the rank inference ([`crate::rank`]) and the detect pass read it.

/// Linear in its (single) time-varying operand and acting on each sample of the batch
/// independently, so it commutes with the time average.
const LINEAR: u8 = 1;
/// A max-reduction per sample: exact in rate by the running-sum form ([`crate::rate`]).
const MAX_POOL: u8 = 1 << 1;
/// Its output is a shape, or a piece of one, when its input is a tensor.
const SHAPE: u8 = 1 << 2;
/// Its output has the rank of its first input.
const SAME_RANK: u8 = 1 << 3;
/// Broadcasts its inputs against each other (numpy style).
const BROADCAST: u8 = 1 << 4;
/// An activation function: reported by the detect pass when it is not part of a QCFS.
const ACTIVATION: u8 = 1 << 5;

/// The facts of each op, by op type, sorted by name.
const TABLE: &[(&str, u8)] = &[
    ("Abs", SAME_RANK),
    ("Add", LINEAR | BROADCAST),
    ("AveragePool", LINEAR | SAME_RANK),
    ("BatchNormalization", LINEAR | SAME_RANK),
    ("Cast", LINEAR | SAME_RANK),
    ("Ceil", SAME_RANK),
    ("Clip", SAME_RANK | ACTIVATION),
    ("Concat", LINEAR | SAME_RANK),
    ("Conv", LINEAR | SAME_RANK),
    ("ConvTranspose", LINEAR | SAME_RANK),
    ("DepthToSpace", LINEAR | SAME_RANK),
    ("Div", LINEAR | BROADCAST),
    ("Dropout", LINEAR | SAME_RANK),
    ("Elu", SAME_RANK | ACTIVATION),
    ("Equal", BROADCAST),
    ("Exp", SAME_RANK),
    ("Expand", LINEAR),
    ("Flatten", LINEAR),
    ("Floor", SAME_RANK),
    ("Gather", LINEAR),
    ("Gelu", ACTIVATION),
    ("Gemm", LINEAR),
    ("GlobalAveragePool", LINEAR | SAME_RANK),
    ("GlobalMaxPool", MAX_POOL | SAME_RANK),
    ("Greater", BROADCAST),
    ("HardSigmoid", SAME_RANK | ACTIVATION),
    ("HardSwish", SAME_RANK | ACTIVATION),
    ("Identity", LINEAR | SAME_RANK),
    ("InstanceNormalization", SAME_RANK),
    ("LRN", SAME_RANK),
    ("LeakyRelu", SAME_RANK | ACTIVATION),
    ("Less", BROADCAST),
    ("Log", SAME_RANK),
    ("LogSoftmax", SAME_RANK),
    ("MatMul", LINEAR),
    ("Max", BROADCAST),
    ("MaxPool", MAX_POOL | SAME_RANK),
    ("Mean", LINEAR | BROADCAST),
    ("Min", BROADCAST),
    ("Mish", ACTIVATION),
    ("Mul", LINEAR | BROADCAST),
    ("Neg", LINEAR | SAME_RANK),
    ("PRelu", BROADCAST | ACTIVATION),
    ("Pad", LINEAR | SAME_RANK),
    ("Pow", BROADCAST),
    ("ReduceMax", MAX_POOL),
    ("ReduceMean", LINEAR),
    ("ReduceSum", LINEAR),
    ("Relu", SAME_RANK | ACTIVATION),
    ("Reshape", LINEAR),
    ("Resize", LINEAR | SAME_RANK),
    ("Round", SAME_RANK),
    ("Selu", ACTIVATION),
    ("Shape", SHAPE),
    ("Sigmoid", SAME_RANK | ACTIVATION),
    ("Size", SHAPE),
    ("Slice", LINEAR | SAME_RANK),
    ("Softmax", SAME_RANK),
    ("Softplus", ACTIVATION),
    ("SpaceToDepth", LINEAR | SAME_RANK),
    ("Split", LINEAR | SAME_RANK),
    ("Sqrt", SAME_RANK),
    ("Squeeze", LINEAR),
    ("Sub", LINEAR | BROADCAST),
    ("Sum", LINEAR | BROADCAST),
    ("Tanh", SAME_RANK | ACTIVATION),
    ("Tile", LINEAR | SAME_RANK),
    ("Transpose", LINEAR | SAME_RANK),
    ("Unsqueeze", LINEAR),
    ("Upsample", LINEAR | SAME_RANK),
    ("Where", BROADCAST),
];

fn facts(op: &str) -> u8 {
    TABLE.binary_search_by(|(name, _)| (*name).cmp(op)).map_or(0, |i| TABLE[i].1)
}

/// Commutes with the time average: linear in its time-varying operand, per sample.
pub(crate) fn is_linear(op: &str) -> bool {
    facts(op) & LINEAR != 0
}

/// A max-reduction per sample (MaxPool, GlobalMaxPool, ReduceMax).
pub(crate) fn is_max_pool(op: &str) -> bool {
    facts(op) & MAX_POOL != 0
}

/// Computes a shape, or a piece of one (Shape, Size).
pub(crate) fn is_shape(op: &str) -> bool {
    facts(op) & SHAPE != 0
}

/// Writes an output of its first input's rank.
pub(crate) fn keeps_rank(op: &str) -> bool {
    facts(op) & SAME_RANK != 0
}

/// Broadcasts its inputs against each other.
pub(crate) fn broadcasts(op: &str) -> bool {
    facts(op) & BROADCAST != 0
}

/// An activation function.
pub(crate) fn is_activation(op: &str) -> bool {
    facts(op) & ACTIVATION != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_so_that_every_op_is_found() {
        assert!(TABLE.windows(2).all(|w| w[0].0 < w[1].0));
        for (op, _) in TABLE {
            assert_ne!(facts(op), 0, "{op}");
        }
        assert_eq!(facts("NoSuchOp"), 0);
    }

    #[test]
    fn max_pools_are_not_linear_and_linear_ops_are_not_activations() {
        for (op, f) in TABLE {
            assert!(f & (LINEAR | MAX_POOL) != (LINEAR | MAX_POOL), "{op}");
            assert!(f & (LINEAR | ACTIVATION) != (LINEAR | ACTIVATION), "{op}");
        }
        assert!(is_max_pool("ReduceMax") && is_linear("Conv") && is_shape("Size") && broadcasts("Where"));
        assert!(keeps_rank("MaxPool") && !keeps_rank("Flatten") && is_activation("HardSwish"));
    }
}
