//! The `gn.transpile` ops for tract: `GroupNeuron` and `IFNeuron` nodes of a custom-op
//! model (`--emit custom-op`), their direct-current variants `GroupNeuronDirect` and
//! `IFNeuronDirect` (an `[N, …]` current, the same at every step), and the `…PerChannel`
//! variants of all four (a second input scales θ per channel), run as one kernel each.
//!
//! The kernel is [`gn_neuron::Kernel`], the loop gn-ort-ops runs too, which performs
//! element for element and in f32 the operations of the function body that
//! `crate::neuron::expand_layer` writes.

use gn_onnx::proto::ModelProto;
use gn_onnx::tract_bridge::{Registration, TractError, TractModel};
use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use gn_neuron::Kernel;

use crate::neuron::{attr_name, op_types, NeuronKind, NeuronNode};
use crate::DOMAIN;

/// Registers the `gn.transpile` ops with tract-onnx.
pub fn register(ops: &mut OnnxOpRegister) {
    for op in op_types() {
        ops.insert(op, build);
    }
}

/// The registrations a converted model needs, for [`TractModel::with_ops`].
pub const OPS: &[Registration] = &[register];

/// Loads a model of either emitted form (or an ANN) into tract.
pub fn load(model: &ModelProto, optimize: bool) -> Result<TractModel, TractError> {
    TractModel::with_ops(model, optimize, OPS)
}

fn build(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    if node.domain != DOMAIN {
        bail!(
            "op {} of domain '{}' is not known (gn-transpile defines {} in domain '{DOMAIN}')",
            node.op_type,
            node.domain,
            node.op_type
        );
    }
    let Some((kind, direct, per_channel)) = NeuronKind::from_op_type(&node.op_type) else {
        bail!("{} is not a gn.transpile op", node.op_type)
    };
    let inputs = 1 + per_channel as usize;
    if node.input.len() != inputs || node.output.len() != 1 {
        bail!("{}: {} has {inputs} input(s) and one output", node.name, node.op_type);
    }
    // The node format's one reader checks the attributes; the kernel then runs on the
    // float32 values written on the node, as the op's function body does.
    let float = |name: &str| node.get_attr_opt::<f32>(name).ok().flatten();
    let int = |name: &str| node.get_attr_opt::<i64>(name).ok().flatten();
    let layer =
        NeuronNode::from_attributes(kind, float, int).map_err(|reason| format_err!("{}: {reason}", node.name))?;
    let Some(timesteps) = layer.timesteps else { bail!("{}: has no 'timesteps' attribute", node.name) };
    let op = NeuronNode { direct, per_channel, ..layer }.op_type();
    let unit = if kind == NeuronKind::Gn { attr_name::THETA_GN } else { attr_name::THETA };
    let tau = layer.neuron.tau as i64;
    let kernel = Kernel::new(
        float(unit).unwrap_or_default(),
        tau,
        float(attr_name::V_INIT).unwrap_or_default(),
        timesteps as i64,
        direct,
    )
    .map_err(|reason| format_err!("{}: {reason}", node.name))?;
    let kernel = NeuronKernel { op, kernel, per_channel };
    Ok((expand(NeuronLayer(kernel)), vec![]))
}

/// The inference-model face of the op: output of the input's type and shape (axis 0
/// T times longer for the direct-current op).
#[derive(Debug, Clone)]
struct NeuronLayer(NeuronKernel);

impl Expansion for NeuronLayer {
    fn name(&self) -> StaticName {
        self.0.op.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1 + self.0.per_channel as usize)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        if !self.0.kernel.direct {
            return s.equals(&inputs[0].shape, &outputs[0].shape);
        }
        s.equals(&inputs[0].rank, &outputs[0].rank)?;
        let t = self.0.kernel.timesteps as i64;
        s.given(&inputs[0].shape, move |s, shape| {
            let mut out = shape.clone();
            if let Some(rows) = out.first_mut() {
                *rows = rows.clone() * t;
            }
            s.equals(&outputs[0].shape, out)
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.0.clone(), inputs)
    }
}

/// T steps of a layer of neurons on a folded `[T·N, …]` input, or on an `[N, …]` current
/// read at every step (direct): the neuron's one kernel loop, [`gn_neuron::Kernel`].
#[derive(Debug, Clone, PartialEq)]
pub struct NeuronKernel {
    op: &'static str,
    kernel: Kernel,
    per_channel: bool,
}

impl Eq for NeuronKernel {}

impl NeuronKernel {
    /// The unit of each channel of a per-channel layer, from its `[1, C, 1, …]` input.
    fn units(&self, shape: &[usize], theta: &TValue) -> TractResult<Vec<f32>> {
        let factors = theta.to_plain_array_view::<f32>()?;
        let factors = factors.as_standard_layout();
        let factors = factors.as_slice().unwrap_or_default();
        self.kernel.channel_units(shape, theta.shape(), factors).map_err(|reason| format_err!("{}: {reason}", self.op))
    }
}

impl Op for NeuronKernel {
    fn name(&self) -> StaticName {
        self.op.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let k = &self.kernel;
        Ok(vec![format!("θ_GN = {}, τ = {}, u(0) = {}, T = {}", k.theta_gn, k.tau, k.u_init, k.timesteps)])
    }

    op_as_typed_op!();
}

impl EvalOp for NeuronKernel {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (input, theta) = if self.per_channel {
            let (x, theta) = args_2!(inputs);
            (x, Some(theta))
        } else {
            (args_1!(inputs), None)
        };
        let units = match &theta {
            Some(theta) => self.units(input.shape(), theta)?,
            None => vec![self.kernel.theta_gn],
        };
        let spatial: usize = input.shape().iter().skip(2).product();
        let mut shape = input.shape().to_vec();
        let rows = shape.first().copied().unwrap_or(1);
        if self.kernel.direct {
            if let Some(rows) = shape.first_mut() {
                *rows = rows.checked_mul(self.kernel.timesteps).context("the output's size overflows")?;
            }
        }
        ensure!(
            self.kernel.direct || rows % self.kernel.timesteps == 0,
            "{}: axis 0 has {rows} rows, not a multiple of T = {} (the input must be [T·N, …])",
            self.op,
            self.kernel.timesteps
        );
        let x = input.to_plain_array_view::<f32>()?;
        let x = x.as_standard_layout();
        let repeats = if self.kernel.direct { self.kernel.timesteps } else { 1 };
        let len = x.len().checked_mul(repeats).context("the output's size overflows")?;
        let mut out = vec![0f32; len];
        self.kernel.run_with(x.as_slice().unwrap_or_default(), &units, spatial, &mut out);
        Ok(tvec!(tract_ndarray::ArrayD::from_shape_vec(shape, out)?.into_tvalue()))
    }
}

impl TypedOp for NeuronKernel {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape = inputs[0].shape.to_tvec();
        if let (true, Some(rows)) = (self.kernel.direct, shape.first_mut()) {
            *rows = rows.clone() * self.kernel.timesteps as i64;
        }
        Ok(tvec!(f32::fact(shape)))
    }

    as_op!();
}
