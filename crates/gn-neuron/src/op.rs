//! The op types of the `gn.transpile` domain and the attributes their nodes carry.

use std::ffi::CStr;

/// One op of the `gn.transpile` domain: `GroupNeuron` or `IFNeuron`, then `PerChannel`
/// when a second input scales θ per channel, then `Direct` when the current is the same
/// at every step (`[N, …]` in, `[T·N, …]` out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpType {
    /// A Group Neuron (attributes `tau` and `theta_gn`); an IF neuron otherwise.
    pub group: bool,
    /// The current is `[N, …]`, the same at every step.
    pub direct: bool,
    /// A second input, `[1, C, 1, …]`, scales θ per channel.
    pub per_channel: bool,
}

impl OpType {
    /// Every op type of the domain.
    pub const ALL: [OpType; 8] = [
        OpType::new(true, false, false),
        OpType::new(false, false, false),
        OpType::new(true, true, false),
        OpType::new(false, true, false),
        OpType::new(true, false, true),
        OpType::new(false, false, true),
        OpType::new(true, true, true),
        OpType::new(false, true, true),
    ];

    /// The op of these three properties.
    pub const fn new(group: bool, direct: bool, per_channel: bool) -> OpType {
        OpType { group, direct, per_channel }
    }

    /// The op type's name, NUL-terminated for C APIs.
    pub const fn c_name(self) -> &'static CStr {
        match (self.group, self.per_channel, self.direct) {
            (true, false, false) => c"GroupNeuron",
            (true, false, true) => c"GroupNeuronDirect",
            (true, true, false) => c"GroupNeuronPerChannel",
            (true, true, true) => c"GroupNeuronPerChannelDirect",
            (false, false, false) => c"IFNeuron",
            (false, false, true) => c"IFNeuronDirect",
            (false, true, false) => c"IFNeuronPerChannel",
            (false, true, true) => c"IFNeuronPerChannelDirect",
        }
    }

    /// The op type's name.
    pub fn name(self) -> &'static str {
        // The names are ASCII literals.
        self.c_name().to_str().unwrap_or_default()
    }

    /// The op type named `name`, if it is one of the domain's.
    pub fn from_name(name: &str) -> Option<OpType> {
        OpType::ALL.into_iter().find(|op| op.name() == name)
    }

    /// How many inputs a node of this op reads: the current, and the thresholds per
    /// channel of a per-channel op.
    pub fn inputs(self) -> usize {
        1 + self.per_channel as usize
    }

    /// The attributes a node of this op carries, in the order the converter writes them.
    pub fn attributes(self) -> &'static [&'static str] {
        if self.group {
            &[attr::THETA, attr::LEVELS, attr::V_INIT, attr::TAU, attr::THETA_GN, attr::TIMESTEPS]
        } else {
            &[attr::THETA, attr::LEVELS, attr::V_INIT, attr::TIMESTEPS]
        }
    }

    /// The attribute holding the firing unit: `theta_gn` for a Group Neuron, `theta` for IF.
    pub fn unit_attribute(self) -> &'static str {
        if self.group {
            attr::THETA_GN
        } else {
            attr::THETA
        }
    }
}

/// The attribute names of a spiking-layer node.
pub mod attr {
    /// θ, the QCFS threshold (float).
    pub const THETA: &str = "theta";
    /// L, the QCFS level count (int, informational).
    pub const LEVELS: &str = "levels";
    /// v(0) = θ_GN/2 (float).
    pub const V_INIT: &str = "v_init";
    /// τ, members per group (int; Group Neurons only).
    pub const TAU: &str = "tau";
    /// θ_GN = θ/τ (float; Group Neurons only).
    pub const THETA_GN: &str = "theta_gn";
    /// T, the steps the node runs (int).
    pub const TIMESTEPS: &str = "timesteps";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_type_has_one_name_and_back() {
        let mut names: Vec<&str> = OpType::ALL.iter().map(|op| op.name()).collect();
        assert!(names.iter().all(|n| !n.is_empty()));
        for op in OpType::ALL {
            assert_eq!(OpType::from_name(op.name()), Some(op));
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 8);
        assert_eq!(OpType::from_name("GroupNeuronX"), None);
    }
}
