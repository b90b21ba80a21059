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
/// Acts on each sample of the batch separately (elementwise, or along axes the analysis
/// checks are not axis 0): exact in rate when not linear.
const PER_SAMPLE: u16 = 1 << 10;

/// The facts of each op, by op type, sorted by name.
const TABLE: &[(&str, u16)] = &[
    ("Abs", SAME_RANK | PER_SAMPLE),
    ("Acos", PER_SAMPLE),
    ("Acosh", PER_SAMPLE),
    ("Add", LINEAR | BROADCAST | PER_SAMPLE),
    ("And", DISCRETE | PER_SAMPLE),
    ("ArgMax", DISCRETE | PER_SAMPLE),
    ("ArgMin", DISCRETE | PER_SAMPLE),
    ("Asin", PER_SAMPLE),
    ("Asinh", PER_SAMPLE),
    ("Atan", PER_SAMPLE),
    ("Atanh", PER_SAMPLE),
    ("AveragePool", LINEAR | SAME_RANK),
    ("BatchNormalization", LINEAR | SAME_RANK),
    ("Bernoulli", RANDOM),
    ("BitShift", PER_SAMPLE),
    ("Cast", LINEAR | SAME_RANK),
    ("Ceil", SAME_RANK | PER_SAMPLE),
    ("Celu", PER_SAMPLE),
    ("Clip", SAME_RANK | ACTIVATION | PER_SAMPLE),
    ("Concat", LINEAR | SAME_RANK | MOVES_VALUES),
    ("Conv", LINEAR | SAME_RANK),
    ("ConvTranspose", LINEAR | SAME_RANK),
    ("Cos", PER_SAMPLE),
    ("Cosh", PER_SAMPLE),
    ("CumSum", PER_SAMPLE),
    ("DepthToSpace", LINEAR | SAME_RANK | MOVES_VALUES),
    ("Div", LINEAR | BROADCAST | PER_SAMPLE),
    ("Dropout", LINEAR | SAME_RANK | MOVES_VALUES),
    // Per sample only by its equation: see `time::einsum_mixes_samples`.
    ("Einsum", LINEAR | PER_SAMPLE),
    ("Elu", SAME_RANK | ACTIVATION | PER_SAMPLE),
    ("Equal", BROADCAST | DISCRETE | PER_SAMPLE),
    ("Erf", PER_SAMPLE),
    ("Exp", SAME_RANK | PER_SAMPLE),
    ("Expand", LINEAR | TAKES_SHAPE | MOVES_VALUES),
    ("Flatten", LINEAR | MOVES_VALUES),
    ("Floor", SAME_RANK | PER_SAMPLE),
    ("Gather", LINEAR | MOVES_VALUES),
    ("Gelu", ACTIVATION | PER_SAMPLE),
    ("Gemm", LINEAR),
    ("GlobalAveragePool", LINEAR | SAME_RANK),
    ("GlobalLpPool", PER_SAMPLE),
    ("GlobalMaxPool", MAX_POOL | SAME_RANK | MOVES_VALUES),
    ("Greater", BROADCAST | DISCRETE | PER_SAMPLE),
    ("GreaterOrEqual", DISCRETE | PER_SAMPLE),
    ("GroupNormalization", PER_SAMPLE),
    ("HardSigmoid", SAME_RANK | ACTIVATION | PER_SAMPLE),
    ("HardSwish", SAME_RANK | ACTIVATION | PER_SAMPLE),
    ("Hardmax", PER_SAMPLE),
    ("Identity", LINEAR | SAME_RANK | MOVES_VALUES),
    ("InstanceNormalization", SAME_RANK | PER_SAMPLE),
    ("IsInf", DISCRETE | PER_SAMPLE),
    ("IsNaN", DISCRETE | PER_SAMPLE),
    ("LRN", SAME_RANK | PER_SAMPLE),
    ("LayerNormalization", PER_SAMPLE),
    ("LeakyRelu", SAME_RANK | ACTIVATION | PER_SAMPLE),
    ("Less", BROADCAST | DISCRETE | PER_SAMPLE),
    ("LessOrEqual", DISCRETE | PER_SAMPLE),
    ("Log", SAME_RANK | PER_SAMPLE),
    ("LogSoftmax", SAME_RANK | PER_SAMPLE),
    ("LpNormalization", PER_SAMPLE),
    ("LpPool", PER_SAMPLE),
    ("MatMul", LINEAR | PER_SAMPLE),
    ("Max", BROADCAST | PER_SAMPLE),
    ("MaxPool", MAX_POOL | SAME_RANK | MOVES_VALUES),
    ("Mean", LINEAR | BROADCAST | PER_SAMPLE),
    ("MeanVarianceNormalization", PER_SAMPLE),
    ("Min", BROADCAST | PER_SAMPLE),
    ("Mish", ACTIVATION | PER_SAMPLE),
    ("Mod", PER_SAMPLE),
    ("Mul", LINEAR | BROADCAST | PER_SAMPLE),
    ("Multinomial", RANDOM),
    ("Neg", LINEAR | SAME_RANK | PER_SAMPLE),
    ("Not", DISCRETE | PER_SAMPLE),
    ("Or", DISCRETE | PER_SAMPLE),
    ("PRelu", BROADCAST | ACTIVATION | PER_SAMPLE),
    ("Pad", LINEAR | SAME_RANK | TAKES_SHAPE | MOVES_VALUES),
    ("Pow", BROADCAST | PER_SAMPLE),
    ("RandomNormal", RANDOM),
    ("RandomNormalLike", RANDOM),
    ("RandomUniform", RANDOM),
    ("RandomUniformLike", RANDOM),
    ("Reciprocal", PER_SAMPLE),
    ("ReduceL1", PER_SAMPLE),
    ("ReduceL2", PER_SAMPLE),
    ("ReduceLogSum", PER_SAMPLE),
    ("ReduceLogSumExp", PER_SAMPLE),
    ("ReduceMax", MAX_POOL | MOVES_VALUES | PER_SAMPLE),
    ("ReduceMean", LINEAR | PER_SAMPLE),
    ("ReduceMin", PER_SAMPLE),
    ("ReduceProd", PER_SAMPLE),
    ("ReduceSum", LINEAR | PER_SAMPLE),
    ("ReduceSumSquare", PER_SAMPLE),
    ("Relu", SAME_RANK | ACTIVATION | PER_SAMPLE),
    ("Reshape", LINEAR | TAKES_SHAPE | MOVES_VALUES),
    ("Resize", LINEAR | SAME_RANK | TAKES_SHAPE),
    ("Round", SAME_RANK | PER_SAMPLE),
    ("Selu", ACTIVATION | PER_SAMPLE),
    ("Shape", SHAPE),
    ("Shrink", PER_SAMPLE),
    ("Sigmoid", SAME_RANK | ACTIVATION | PER_SAMPLE),
    ("Sign", PER_SAMPLE),
    ("Sin", PER_SAMPLE),
    ("Sinh", PER_SAMPLE),
    ("Size", SHAPE),
    ("Slice", LINEAR | SAME_RANK | TAKES_SHAPE | MOVES_VALUES),
    ("Softmax", SAME_RANK | PER_SAMPLE),
    ("Softplus", ACTIVATION | PER_SAMPLE),
    ("Softsign", PER_SAMPLE),
    ("SpaceToDepth", LINEAR | SAME_RANK | MOVES_VALUES),
    ("Split", LINEAR | SAME_RANK | MOVES_VALUES),
    ("Sqrt", SAME_RANK | PER_SAMPLE),
    ("Squeeze", LINEAR | MOVES_VALUES),
    ("Sub", LINEAR | BROADCAST | PER_SAMPLE),
    ("Sum", LINEAR | BROADCAST | PER_SAMPLE),
    ("Tan", PER_SAMPLE),
    ("Tanh", SAME_RANK | ACTIVATION | PER_SAMPLE),
    ("ThresholdedRelu", PER_SAMPLE),
    ("Tile", LINEAR | SAME_RANK | TAKES_SHAPE | MOVES_VALUES),
    ("TopK", PER_SAMPLE),
    ("Transpose", LINEAR | SAME_RANK | MOVES_VALUES),
    ("Unsqueeze", LINEAR | MOVES_VALUES),
    ("Upsample", LINEAR | SAME_RANK | TAKES_SHAPE),
    ("Where", BROADCAST | PER_SAMPLE),
    ("Xor", DISCRETE | PER_SAMPLE),
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

/// Acts on each sample separately (given the axis checks of the time analysis).
pub(crate) fn per_sample(op: &str) -> bool {
    facts(op) & PER_SAMPLE != 0
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
