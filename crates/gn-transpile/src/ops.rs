//! What the passes know about each standard ONNX op, in one table: whether it commutes
//! with the time average (linear in its time-varying operand, per sample), whether it is
//! a max-reduction (exact in rate by the running-sum form), whether it computes a shape,
//! whether its output keeps its first input's rank or broadcasts its inputs, and whether
//! it is an activation function (for the detect pass's report), whether it draws random
//! values, and whether it writes booleans or indices. The time analysis
//! ([`crate::time`]), the rank inference ([`crate::rank`]) and the detect pass read it.

/// Linear in its (single) time-varying operand and acting on each sample of the batch
/// independently, so it commutes with the time average.
const LINEAR: u16 = 1;
/// A max-reduction per sample: exact in rate by the running-sum form ([`crate::rate`]).
const MAX_POOL: u16 = 1 << 1;
/// Its output is a shape, or a piece of one, when its input is a tensor.
const SHAPE: u16 = 1 << 2;
/// Its output has the rank of its first input.
const SAME_RANK: u16 = 1 << 3;
/// Broadcasts its inputs against each other (numpy style).
const BROADCAST: u16 = 1 << 4;
/// An activation function: reported by the detect pass when it is not part of a QCFS.
const ACTIVATION: u16 = 1 << 5;
/// Draws random values: not a function of its inputs, so neither exact in time nor in rate.
const RANDOM: u16 = 1 << 6;
/// Writes booleans or indices: exact in rate only inside a region whose outputs are
/// numbers (a comparison feeding a Where), never as a value that is averaged over time.
const DISCRETE: u16 = 1 << 7;
/// Reads a data tensor first and a shape (or sizes, repeats, bounds) after it.
const TAKES_SHAPE: u16 = 1 << 8;
/// Only moves, selects or pools the values of its data operand: spikes stay spikes.
const MOVES_VALUES: u16 = 1 << 9;

/// The facts of each op, by op type, sorted by name.
const TABLE: &[(&str, u16)] = &[
    ("Abs", SAME_RANK),
    ("Add", LINEAR | BROADCAST),
    ("And", DISCRETE),
    ("ArgMax", DISCRETE),
    ("ArgMin", DISCRETE),
    ("AveragePool", LINEAR | SAME_RANK),
    ("BatchNormalization", LINEAR | SAME_RANK),
    ("Bernoulli", RANDOM),
    ("Cast", LINEAR | SAME_RANK),
    ("Ceil", SAME_RANK),
    ("Clip", SAME_RANK | ACTIVATION),
    ("Concat", LINEAR | SAME_RANK | MOVES_VALUES),
    ("Conv", LINEAR | SAME_RANK),
    ("ConvTranspose", LINEAR | SAME_RANK),
    ("DepthToSpace", LINEAR | SAME_RANK | MOVES_VALUES),
    ("Div", LINEAR | BROADCAST),
    ("Dropout", LINEAR | SAME_RANK | MOVES_VALUES),
    ("Elu", SAME_RANK | ACTIVATION),
    ("Equal", BROADCAST | DISCRETE),
    ("Exp", SAME_RANK),
    ("Expand", LINEAR | TAKES_SHAPE | MOVES_VALUES),
    ("Flatten", LINEAR | MOVES_VALUES),
    ("Floor", SAME_RANK),
    ("Gather", LINEAR | MOVES_VALUES),
    ("Gelu", ACTIVATION),
    ("Gemm", LINEAR),
    ("GlobalAveragePool", LINEAR | SAME_RANK),
    ("GlobalMaxPool", MAX_POOL | SAME_RANK | MOVES_VALUES),
    ("Greater", BROADCAST | DISCRETE),
    ("GreaterOrEqual", DISCRETE),
    ("HardSigmoid", SAME_RANK | ACTIVATION),
    ("HardSwish", SAME_RANK | ACTIVATION),
    ("Identity", LINEAR | SAME_RANK | MOVES_VALUES),
    ("InstanceNormalization", SAME_RANK),
    ("IsInf", DISCRETE),
    ("IsNaN", DISCRETE),
    ("LRN", SAME_RANK),
    ("LeakyRelu", SAME_RANK | ACTIVATION),
    ("Less", BROADCAST | DISCRETE),
    ("LessOrEqual", DISCRETE),
    ("Log", SAME_RANK),
    ("LogSoftmax", SAME_RANK),
    ("MatMul", LINEAR),
    ("Max", BROADCAST),
    ("MaxPool", MAX_POOL | SAME_RANK | MOVES_VALUES),
    ("Mean", LINEAR | BROADCAST),
    ("Min", BROADCAST),
    ("Mish", ACTIVATION),
    ("Mul", LINEAR | BROADCAST),
    ("Multinomial", RANDOM),
    ("Neg", LINEAR | SAME_RANK),
    ("Not", DISCRETE),
    ("Or", DISCRETE),
    ("PRelu", BROADCAST | ACTIVATION),
    ("Pad", LINEAR | SAME_RANK | TAKES_SHAPE | MOVES_VALUES),
    ("Pow", BROADCAST),
    ("RandomNormal", RANDOM),
    ("RandomNormalLike", RANDOM),
    ("RandomUniform", RANDOM),
    ("RandomUniformLike", RANDOM),
    ("ReduceMax", MAX_POOL | MOVES_VALUES),
    ("ReduceMean", LINEAR),
    ("ReduceSum", LINEAR),
    ("Relu", SAME_RANK | ACTIVATION),
    ("Reshape", LINEAR | TAKES_SHAPE | MOVES_VALUES),
    ("Resize", LINEAR | SAME_RANK | TAKES_SHAPE),
    ("Round", SAME_RANK),
    ("Selu", ACTIVATION),
    ("Shape", SHAPE),
    ("Sigmoid", SAME_RANK | ACTIVATION),
    ("Size", SHAPE),
    ("Slice", LINEAR | SAME_RANK | TAKES_SHAPE | MOVES_VALUES),
    ("Softmax", SAME_RANK),
    ("Softplus", ACTIVATION),
    ("SpaceToDepth", LINEAR | SAME_RANK | MOVES_VALUES),
    ("Split", LINEAR | SAME_RANK | MOVES_VALUES),
    ("Sqrt", SAME_RANK),
    ("Squeeze", LINEAR | MOVES_VALUES),
    ("Sub", LINEAR | BROADCAST),
    ("Sum", LINEAR | BROADCAST),
    ("Tanh", SAME_RANK | ACTIVATION),
    ("Tile", LINEAR | SAME_RANK | TAKES_SHAPE | MOVES_VALUES),
    ("Transpose", LINEAR | SAME_RANK | MOVES_VALUES),
    ("Unsqueeze", LINEAR | MOVES_VALUES),
    ("Upsample", LINEAR | SAME_RANK | TAKES_SHAPE),
    ("Where", BROADCAST),
    ("Xor", DISCRETE),
];

fn facts(op: &str) -> u16 {
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

/// Reads a data tensor first and a shape (or sizes, repeats, bounds) after it.
pub(crate) fn takes_a_shape(op: &str) -> bool {
    facts(op) & TAKES_SHAPE != 0
}

/// Only moves, selects or pools the values of its data operand.
pub(crate) fn moves_values(op: &str) -> bool {
    facts(op) & MOVES_VALUES != 0
}

/// Draws random values.
pub(crate) fn is_random(op: &str) -> bool {
    facts(op) & RANDOM != 0
}

/// Writes booleans or indices.
pub(crate) fn is_discrete(op: &str) -> bool {
    facts(op) & DISCRETE != 0
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
