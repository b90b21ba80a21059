//! The record of a conversion in the emitted model's `metadata_props`, one schema for the
//! writer (the emission) and every reader (`inspect`, the harness, the Python package).
//!
//! ```text
//!   gn_transpile.version      "0.1.0"
//!   gn_transpile.neuron       "gn" | "if"
//!   gn_transpile.tau          "4"          (1 for IF)
//!   gn_transpile.timesteps    "4"          (1 for the stateful form)
//!   gn_transpile.anytime      "false"
//!   gn_transpile.anytime_outputs  JSON: ["logits_anytime"] (only with --anytime)
//!   gn_transpile.emit         "standard" | "custom-op" | "stateful"
//!   gn_transpile.layers       JSON: [{"site": …, "theta": …, "levels": …}, …]
//!   gn_transpile.calibration  JSON (only with --calibrate): see [`Calibration`]
//!   gn_transpile.state        JSON (only the stateful form): see [`State`]
//! ```
//!
//! The JSON values are written by serde_json, so any node name (control characters
//! included) round-trips and every JSON reader accepts them.

use gn_onnx::proto::{ModelProto, StringStringEntryProto};
use serde::{Deserialize, Serialize};

use crate::calibrate::Calibration;
use crate::neuron::NeuronKind;
use crate::options::{Emit, MAX_TAU, MAX_TIMESTEPS};

/// The prefix of every key.
const PREFIX: &str = "gn_transpile.";

/// One spiking layer, as `gn_transpile.layers` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The QCFS site (the activation's `Floor` node, or the calibrated ReLU).
    pub site: String,
    pub theta: f64,
    /// L (0 for a calibrated ReLU).
    pub levels: u32,
}

/// One state tensor of a stateful model: fed back from `output` to `input` after each
/// call, and filled with `init` before the first (`gn_transpile.state`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub input: String,
    pub output: String,
    pub init: f32,
    /// Recorded as sizes, `"N"` for the batch and `"kN"` for k times it.
    #[serde(serialize_with = "batch_dims", deserialize_with = "read_batch_dims")]
    pub shape: Vec<StateDim>,
}

/// One dimension of a state tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StateDim {
    /// A fixed size.
    Size(i64),
    /// k times the batch N (`Batch(1)` is N; attention's heads × batch is `Batch(heads)`).
    Batch(u64),
}

impl std::fmt::Display for StateDim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateDim::Size(n) => write!(f, "{n}"),
            StateDim::Batch(1) => write!(f, "N"),
            StateDim::Batch(k) => write!(f, "{k}N"),
        }
    }
}

impl State {
    /// The state's shape for a batch of `n`.
    pub fn dims(&self, n: usize) -> Vec<usize> {
        self.shape
            .iter()
            .map(|d| match *d {
                StateDim::Size(s) => s as usize,
                StateDim::Batch(k) => k as usize * n,
            })
            .collect()
    }
}

/// The whole record.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// The converter's version.
    pub version: String,
    pub neuron: NeuronKind,
    /// Members per group (1 for IF).
    pub tau: u32,
    pub timesteps: usize,
    pub anytime: bool,
    /// The outputs holding the readout after every step, `[T, N, …]` (with `anytime`):
    /// `{y}_anytime`, or a fresh name where the model already used that one.
    pub anytime_outputs: Vec<String>,
    pub emit: Emit,
    pub layers: Vec<LayerRecord>,
    pub calibration: Option<Calibration>,
    /// The state tensors of the stateful form.
    pub state: Option<Vec<State>>,
}

impl Metadata {
    /// Writes the record into `props`, replacing every earlier `gn_transpile.*` entry (a
    /// model converted again, or one whose entries were written by hand, keeps no stale
    /// part of an earlier record).
    pub fn write(&self, props: &mut Vec<StringStringEntryProto>) {
        props.retain(|p| !p.key().starts_with(PREFIX));
        set(props, "version", self.version.clone());
        set(props, "neuron", self.neuron.key().into());
        set(props, "tau", self.tau.to_string());
        set(props, "timesteps", self.timesteps.to_string());
        set(props, "anytime", self.anytime.to_string());
        set(props, "emit", self.emit.key().into());
        if self.anytime {
            set(props, "anytime_outputs", json(&self.anytime_outputs));
        }
        set(props, "layers", json(&self.layers));
        if let Some(c) = &self.calibration {
            set(props, "calibration", json(c));
        }
        if let Some(s) = &self.state {
            set(props, "state", json(s));
        }
    }

    /// Reads the record of a converted model: `None` when the model has no
    /// `gn_transpile.neuron` entry (it was not written by gn-transpile), an error naming
    /// the entry that is missing or malformed otherwise.
    pub fn read(model: &ModelProto) -> Option<Result<Metadata, String>> {
        let get = |key: &str| {
            let full = format!("{PREFIX}{key}");
            model.metadata_props.iter().rev().find(|p| p.key() == full).map(|p| p.value())
        };
        let neuron = get("neuron")?;
        Some(Metadata::parse(neuron, get))
    }

    fn parse<'a>(neuron: &str, get: impl Fn(&str) -> Option<&'a str>) -> Result<Metadata, String> {
        let required = |key: &str| get(key).ok_or_else(|| format!("gn_transpile.{key} is missing"));
        let bad = |key: &str, why: &str| format!("gn_transpile.{key} = {:?} {why}", get(key).unwrap_or_default());
        let neuron = NeuronKind::from_key(neuron).ok_or_else(|| bad("neuron", "is not gn or if"))?;
        let tau: u32 = required("tau")?.parse().map_err(|_| bad("tau", "is not a count"))?;
        if !(1..=MAX_TAU).contains(&tau) || (neuron == NeuronKind::If && tau != 1) {
            return Err(bad("tau", &format!("is out of range (1 to {MAX_TAU}, 1 for IF)")));
        }
        let timesteps: usize = required("timesteps")?.parse().map_err(|_| bad("timesteps", "is not a count"))?;
        if !(1..=MAX_TIMESTEPS).contains(&timesteps) {
            return Err(bad("timesteps", &format!("is out of range (1 to {MAX_TIMESTEPS})")));
        }
        let anytime = match get("anytime") {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(bad("anytime", "is not true or false")),
        };
        let anytime_outputs: Vec<String> = match get("anytime_outputs") {
            Some(names) if anytime => {
                serde_json::from_str(names).map_err(|e| format!("gn_transpile.anytime_outputs is not valid: {e}"))?
            }
            Some(_) => {
                return Err("gn_transpile.anytime_outputs is present but gn_transpile.anytime is not true".into())
            }
            None => Vec::new(),
        };
        let emit = match get("emit") {
            None => Emit::Standard,
            Some(key) => Emit::from_key(key).ok_or_else(|| bad("emit", "is not a form gn-transpile writes"))?,
        };
        let layers: Vec<LayerRecord> =
            serde_json::from_str(required("layers")?).map_err(|e| format!("gn_transpile.layers is not valid: {e}"))?;
        if let Some(l) = layers.iter().find(|l| !(l.theta.is_finite() && l.theta > 0.0)) {
            return Err(format!("gn_transpile.layers gives layer {:?} θ = {}", l.site, l.theta));
        }
        let calibration = get("calibration")
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| format!("gn_transpile.calibration is not valid: {e}"))?;
        let state = get("state")
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| format!("gn_transpile.state is not valid: {e}"))?;
        if (emit == Emit::Stateful) != state.is_some() {
            return Err("gn_transpile.state must be present exactly when gn_transpile.emit is stateful".into());
        }
        let version = get("version").unwrap_or_default().to_string();
        Ok(Metadata { version, neuron, tau, timesteps, anytime, anytime_outputs, emit, layers, calibration, state })
    }
}

/// The state tensors of a model written by the stateful emission, or `None` for any
/// other model (or one whose record is malformed).
pub fn states(model: &ModelProto) -> Option<Vec<State>> {
    Metadata::read(model)?.ok()?.state
}

/// Appends `gn_transpile.{key} = value`, replacing an earlier entry of that key.
fn set(props: &mut Vec<StringStringEntryProto>, key: &str, value: String) {
    let key = format!("{PREFIX}{key}");
    props.retain(|p| p.key() != key);
    props.push(StringStringEntryProto { key: Some(key), value: Some(value) });
}

/// A JSON-valued entry (plain data: serialising it cannot fail).
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn read_batch_dims<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<StateDim>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Dim {
        Size(i64),
        Batch(String),
    }
    let dims: Vec<Dim> = serde::Deserialize::deserialize(d)?;
    dims.into_iter()
        .map(|d| match d {
            Dim::Size(n) if n >= 0 => Ok(StateDim::Size(n)),
            Dim::Batch(b) if b == "N" => Ok(StateDim::Batch(1)),
            Dim::Batch(b) => match b.strip_suffix('N').and_then(|k| k.parse::<u64>().ok()) {
                Some(k) if k >= 1 => Ok(StateDim::Batch(k)),
                _ => Err(serde::de::Error::custom("a state dimension is a size, \"N\" or \"kN\"")),
            },
            _ => Err(serde::de::Error::custom("a state dimension is a size, \"N\" or \"kN\"")),
        })
        .collect()
}

fn batch_dims<S: serde::Serializer>(dims: &[StateDim], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(dims.len()))?;
    for d in dims {
        match d {
            StateDim::Size(n) => seq.serialize_element(n)?,
            batch => seq.serialize_element(&batch.to_string())?,
        }
    }
    seq.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Metadata {
        Metadata {
            version: "0.1.0".into(),
            neuron: NeuronKind::Gn,
            tau: 4,
            timesteps: 2,
            anytime: false,
            anytime_outputs: Vec::new(),
            emit: Emit::Stateful,
            layers: vec![LayerRecord { site: "relu\u{1}\"quoted\"\n".into(), theta: 2.5, levels: 4 }],
            calibration: None,
            state: Some(vec![
                State {
                    input: "u".into(),
                    output: "u.next".into(),
                    init: 0.5,
                    shape: vec![StateDim::Batch(1), StateDim::Size(3)],
                },
                State {
                    input: "s".into(),
                    output: "s.next".into(),
                    init: 0.0,
                    shape: vec![StateDim::Batch(12), StateDim::Size(4)],
                },
            ]),
        }
    }

    fn model_with(meta: &Metadata) -> ModelProto {
        let mut model = ModelProto::default();
        meta.write(&mut model.metadata_props);
        model
    }

    #[test]
    fn the_record_round_trips_with_any_node_name() {
        let meta = record();
        let model = model_with(&meta);
        assert_eq!(Metadata::read(&model), Some(Ok(meta.clone())));
        let layers = model.metadata_props.iter().find(|p| p.key() == "gn_transpile.layers").unwrap();
        // JSON escapes, not Rust's Debug escapes: `\u0001`, never `\u{1}`.
        assert!(layers.value().contains("\\u0001") && !layers.value().contains("\\u{1}"), "{}", layers.value());
        // The batch is "N", and k times it "kN".
        let state = model.metadata_props.iter().find(|p| p.key() == "gn_transpile.state").unwrap();
        assert!(state.value().contains(r#""shape":["N",3]"#) && state.value().contains(r#""shape":["12N",4]"#));
        assert_eq!(meta.state.as_ref().unwrap()[1].dims(5), [60, 4]);
    }

    #[test]
    fn a_model_without_the_record_is_not_converted() {
        assert_eq!(Metadata::read(&ModelProto::default()), None);
    }

    #[test]
    fn a_malformed_entry_is_named() {
        for (key, value, expected) in [
            ("tau", "0", "gn_transpile.tau = \"0\" is out of range"),
            ("tau", "NaN", "gn_transpile.tau = \"NaN\" is not a count"),
            ("timesteps", "-4", "gn_transpile.timesteps = \"-4\" is not a count"),
            ("neuron", "lif", "gn_transpile.neuron = \"lif\" is not gn or if"),
            ("layers", "[{", "gn_transpile.layers is not valid"),
            ("layers", "[{\"site\":\"a\",\"theta\":-1,\"levels\":4}]", "θ = -1"),
            ("state", "[{\"input\":1}]", "gn_transpile.state is not valid"),
            (
                "state",
                "[{\"input\":\"u\",\"output\":\"v\",\"init\":0,\"shape\":[\"0N\"]}]",
                "gn_transpile.state is not valid",
            ),
            ("emit", "custom-op", "present exactly when"),
        ] {
            let mut model = model_with(&record());
            set(&mut model.metadata_props, key, value.into());
            let err = Metadata::read(&model).unwrap().unwrap_err();
            assert!(err.contains(expected), "{key} = {value}: {err}");
        }
    }
}
