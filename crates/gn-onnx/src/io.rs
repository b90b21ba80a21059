//! Reading and writing ONNX models without losing a byte.
//!
//! * [`decode`] / [`encode`] are exact inverses on any model written by a conforming
//!   protobuf encoder (the schema is complete and proto2, so nothing is dropped).
//! * [`load`] reads a model from a path and inlines tensors stored in side files
//!   (`TensorProto.data_location = EXTERNAL`), refusing locations that escape the model's
//!   folder.
//! * [`save`] writes atomically (temporary file in the target folder, then rename) and
//!   refuses to overwrite the model it was read from.

use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use prost::Message;

use crate::proto::{tensor_proto, ModelProto, TensorProto};

/// Models larger than this are refused before decoding (protobuf's own limit is 2 GiB).
pub const MAX_MODEL_BYTES: u64 = 2 << 30;

/// A failure to read or write a model. Each variant names what a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{what} is empty: not an ONNX model")]
    Empty { what: String },
    #[error("{what} is not a valid ONNX protobuf ({reason}); the file may be truncated or not a model")]
    Decode { what: String, reason: String },
    #[error("{what} decodes as protobuf but holds no graph: not an ONNX model")]
    NoGraph { what: String },
    #[error("{what} is {size} bytes, above the 2 GiB protobuf limit")]
    TooLarge { what: String, size: u64 },
    #[error("tensor '{tensor}': external data {reason}")]
    ExternalData { tensor: String, reason: String },
    #[error("refusing to write {path}: it is the input model")]
    OverwritesInput { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// A model read from disk, with external data already inlined.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub model: ModelProto,
    /// Where it was read from, if it came from a file.
    pub path: Option<PathBuf>,
}

/// Decodes model bytes exactly as stored, without touching external data.
pub fn decode(bytes: &[u8], what: &str) -> Result<ModelProto, IoError> {
    if bytes.is_empty() {
        return Err(IoError::Empty { what: what.to_string() });
    }
    if bytes.len() as u64 > MAX_MODEL_BYTES {
        return Err(IoError::TooLarge { what: what.to_string(), size: bytes.len() as u64 });
    }
    let model =
        ModelProto::decode(bytes).map_err(|e| IoError::Decode { what: what.to_string(), reason: e.to_string() })?;
    if model.graph.is_none() {
        return Err(IoError::NoGraph { what: what.to_string() });
    }
    Ok(model)
}

/// Encodes a model to bytes.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Reads a model from a path and inlines its external data.
pub fn load(path: &Path) -> Result<LoadedModel, IoError> {
    let what = path.display().to_string();
    let meta = fs::metadata(path).map_err(|source| IoError::Read { path: path.into(), source })?;
    if meta.len() > MAX_MODEL_BYTES {
        return Err(IoError::TooLarge { what, size: meta.len() });
    }
    let bytes = fs::read(path).map_err(|source| IoError::Read { path: path.into(), source })?;
    let mut model = decode(&bytes, &what)?;
    let folder = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    inline_external_data(&mut model, &folder)?;
    Ok(LoadedModel { model, path: Some(path.to_path_buf()) })
}

/// Loads model bytes that carry no external data (tensors in side files are refused).
pub fn load_bytes(bytes: &[u8]) -> Result<ModelProto, IoError> {
    let model = decode(bytes, "model bytes")?;
    let mut external = None;
    for_each_tensor(&model, &mut |t| {
        if is_external(t) && external.is_none() {
            external = Some(t.name().to_string());
        }
    });
    match external {
        Some(tensor) => Err(IoError::ExternalData {
            tensor,
            reason: "cannot be resolved for a model given as bytes; load it from its path".into(),
        }),
        None => Ok(model),
    }
}

fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(tensor_proto::DataLocation::External as i32)
}

/// Calls `f` on every tensor of the model: initializers, Constant and other tensor
/// attributes, and those in subgraphs and functions.
pub fn for_each_tensor(model: &ModelProto, f: &mut dyn FnMut(&TensorProto)) {
    fn graph(g: &crate::proto::GraphProto, f: &mut dyn FnMut(&TensorProto)) {
        g.initializer.iter().for_each(&mut *f);
        for n in &g.node {
            nodes(std::slice::from_ref(n), f);
        }
    }
    fn nodes(ns: &[crate::proto::NodeProto], f: &mut dyn FnMut(&TensorProto)) {
        for n in ns {
            for a in &n.attribute {
                if let Some(t) = &a.t {
                    f(t);
                }
                a.tensors.iter().for_each(&mut *f);
                if let Some(g) = &a.g {
                    graph(g, f);
                }
                for g in &a.graphs {
                    graph(g, f);
                }
            }
        }
    }
    if let Some(g) = &model.graph {
        graph(g, f);
    }
    for func in &model.functions {
        nodes(&func.node, f);
    }
}

fn for_each_tensor_mut(
    model: &mut ModelProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<(), IoError>,
) -> Result<(), IoError> {
    fn graph(
        g: &mut crate::proto::GraphProto,
        f: &mut dyn FnMut(&mut TensorProto) -> Result<(), IoError>,
    ) -> Result<(), IoError> {
        for t in &mut g.initializer {
            f(t)?;
        }
        nodes(&mut g.node, f)
    }
    fn nodes(
        ns: &mut [crate::proto::NodeProto],
        f: &mut dyn FnMut(&mut TensorProto) -> Result<(), IoError>,
    ) -> Result<(), IoError> {
        for n in ns {
            for a in &mut n.attribute {
                if let Some(t) = &mut a.t {
                    f(t)?;
                }
                for t in &mut a.tensors {
                    f(t)?;
                }
                if let Some(g) = &mut a.g {
                    graph(g, f)?;
                }
                for g in &mut a.graphs {
                    graph(g, f)?;
                }
            }
        }
        Ok(())
    }
    if let Some(g) = &mut model.graph {
        graph(g, f)?;
    }
    for func in &mut model.functions {
        nodes(&mut func.node, f)?;
    }
    Ok(())
}

/// Replaces every external tensor's reference by its bytes, read from `folder`.
pub fn inline_external_data(model: &mut ModelProto, folder: &Path) -> Result<(), IoError> {
    let root = folder.canonicalize().map_err(|source| IoError::Read { path: folder.into(), source })?;
    for_each_tensor_mut(model, &mut |t| {
        if !is_external(t) {
            return Ok(());
        }
        let name = t.name().to_string();
        let err = |reason: String| IoError::ExternalData { tensor: name.clone(), reason };
        let mut location = None;
        let mut offset = 0u64;
        let mut length = None;
        for kv in &t.external_data {
            match kv.key() {
                "location" => location = Some(kv.value().to_string()),
                "offset" => {
                    offset = kv.value().parse().map_err(|_| err(format!("offset '{}' is not a number", kv.value())))?
                }
                "length" => {
                    length = Some(
                        kv.value()
                            .parse::<u64>()
                            .map_err(|_| err(format!("length '{}' is not a number", kv.value())))?,
                    )
                }
                _ => {}
            }
        }
        let location = location.ok_or_else(|| err("has no 'location'".into()))?;
        let file = resolve_location(&root, &location).map_err(&err)?;
        let bytes = fs::read(&file).map_err(|e| err(format!("file '{location}' cannot be read: {e}")))?;
        let end = match length {
            Some(len) => offset.checked_add(len),
            None => Some(bytes.len() as u64),
        };
        let end = end.filter(|&e| e <= bytes.len() as u64 && offset <= e).ok_or_else(|| {
            err(format!("range {offset}+{length:?} lies outside '{location}' ({} bytes)", bytes.len()))
        })?;
        t.raw_data = Some(bytes[offset as usize..end as usize].to_vec().into());
        t.external_data.clear();
        t.data_location = None;
        Ok(())
    })
}

/// Checks that an external-data `location` stays inside the model's folder.
fn resolve_location(root: &Path, location: &str) -> Result<PathBuf, String> {
    let rel = Path::new(location);
    if rel.is_absolute() || location.starts_with('/') || location.starts_with('\\') {
        return Err(format!(
            "location '{location}' is an absolute path; only paths inside the model's folder are allowed"
        ));
    }
    if rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(format!("location '{location}' leaves the model's folder"));
    }
    let joined = root.join(rel);
    let real = joined.canonicalize().map_err(|e| format!("file '{location}' cannot be opened: {e}"))?;
    if !real.starts_with(root) {
        return Err(format!("location '{location}' resolves (through a link) outside the model's folder"));
    }
    Ok(real)
}

/// Writes a model atomically to `path`: the bytes go to a temporary file in the same
/// folder, which is renamed over `path` only once complete. `input`, if given, is the
/// model's source file, which is never overwritten.
pub fn save(model: &ModelProto, path: &Path, input: Option<&Path>) -> Result<(), IoError> {
    save_bytes(&encode(model), path, input)
}

/// Writes bytes atomically; see [`save`].
pub fn save_bytes(bytes: &[u8], path: &Path, input: Option<&Path>) -> Result<(), IoError> {
    if let Some(input) = input {
        if same_file(path, input) {
            return Err(IoError::OverwritesInput { path: path.into() });
        }
    }
    let werr = |source| IoError::Write { path: path.into(), source };
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| werr(std::io::Error::other("no file name")))?;
    let tmp = folder.join(format!(".{}.tmp-{}", file_name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(werr(e));
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
