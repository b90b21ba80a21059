//! The model-local function that defines each custom spiking-layer op of the custom-op
//! form: the standard-op expansion of the neuron ([`expand_layer`]) reading the calling
//! node's attributes. The emission writes it; the model check compares a node's T with it.

use gn_onnx::proto::{FunctionProto, OperatorSetIdProto};
use gn_onnx::Graph;

use crate::neuron::{attribute_names, expand_layer, Current, Expansion, NeuronKind, Params};
use crate::opset::Opset;
use crate::DOMAIN;

/// The model-local function that defines a custom spiking-layer op: its body is
/// [`expand_layer`] on a folded `[T·N, …]` input `X` (or, for the `direct` op, an `[N, …]`
/// current read at every step), reading θ, τ and v(0) from the calling node's
/// attributes, and for a `per_channel` op the factors of θ from its second input `Theta`.
/// T is fixed by the body, so a model holds one function per op type and every node of
/// that type runs T steps.
pub fn function(kind: NeuronKind, opset: Opset, timesteps: usize, direct: bool, per_channel: bool) -> FunctionProto {
    let mut g = Graph::new(Default::default());
    let body = Expansion {
        name: "neuron",
        params: Params::Attributes(kind),
        x: "X",
        current: if direct { Current::Constant } else { Current::Folded },
        timesteps,
        output: "Y",
        channels: per_channel.then_some("Theta"),
        state: None,
    };
    expand_layer(&mut g, opset, &body);
    debug_assert!(g.proto.initializer.is_empty(), "a function body holds no initializers");
    let doc = match kind {
        NeuronKind::If => "Integrate-and-fire neurons over T time steps folded into axis 0 ([T·N, …], step-major): threshold θ, v(0) = θ/2, soft reset.",
        NeuronKind::Gn => "Group Neurons of τ members over T time steps folded into axis 0 ([T·N, …], step-major): member thresholds i·θ/τ, θ_GN = θ/τ, v(0) = θ_GN/2, lateral soft reset (Lyu et al., arXiv 2402.19061, Algorithm 1).",
    };
    let current = if direct { " The current X ([N, …]) is the same at every step; Y is [T·N, …]." } else { "" };
    let channels = if per_channel {
        " Theta ([1, C, 1, …]) scales the threshold of each channel: channel c fires in units of θ_GN · Theta_c."
    } else {
        ""
    };
    let mut input = vec!["X".to_string()];
    if per_channel {
        input.push("Theta".into());
    }
    FunctionProto {
        name: Some(crate::neuron::op_type(kind, direct, per_channel).into()),
        domain: Some(DOMAIN.into()),
        input,
        output: vec!["Y".into()],
        attribute: attribute_names(kind).iter().map(|a| a.to_string()).collect(),
        node: g.proto.node,
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(opset.0) }],
        doc_string: Some(format!("{doc}{current}{channels} Runs {timesteps} steps.")),
        ..Default::default()
    }
}
