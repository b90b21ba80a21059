//! Tensor payloads: reading `TensorProto` data as numbers, building small tensors,
//! and reading the IDX files that Fashion-MNIST is distributed in.

use std::io::Read;
use std::path::Path;

use crate::proto::{tensor_proto::DataType, TensorProto};

/// A tensor whose data cannot be read as numbers.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TensorError {
    #[error("tensor '{name}' has data type {dtype}, which is not numeric")]
    Unsupported { name: String, dtype: i32 },
    #[error("tensor '{name}' holds {got} bytes of data, not the {expected} its shape needs")]
    BadLength { name: String, got: usize, expected: usize },
    #[error("tensor '{name}' is stored externally and was not inlined")]
    External { name: String },
}

/// Whether an ONNX element type (`TensorProto.DataType`) holds integers.
pub fn is_integer_type(data_type: i64) -> bool {
    use DataType::*;
    let t = i32::try_from(data_type).ok().and_then(|t| DataType::try_from(t).ok());
    matches!(t, Some(Uint8 | Int8 | Uint16 | Int16 | Int32 | Int64 | Uint32 | Uint64))
}

/// Number of elements implied by `dims` (1 for a scalar), or `None` on negative dims or overflow.
pub fn element_count(dims: &[i64]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| usize::try_from(d).ok().and_then(|d| acc.checked_mul(d)))
}

/// Reads any float or integer tensor as f64 values (row-major).
pub fn tensor_to_f64(t: &TensorProto) -> Result<Vec<f64>, TensorError> {
    let name = t.name().to_string();
    if !t.external_data.is_empty() {
        return Err(TensorError::External { name });
    }
    let expected = element_count(&t.dims).unwrap_or(0);
    let dtype = t.data_type();
    let raw = t.raw_data.as_deref();
    macro_rules! from_raw {
        ($ty:ty, $conv:expr) => {{
            let raw = raw.unwrap_or_default();
            let size = std::mem::size_of::<$ty>();
            if raw.len() != expected * size {
                return Err(TensorError::BadLength { name, got: raw.len(), expected: expected * size });
            }
            raw.chunks_exact(size)
                .map(|c| {
                    let v = <$ty>::from_le_bytes(c.try_into().expect("chunk size"));
                    #[allow(clippy::redundant_closure_call)]
                    ($conv)(v)
                })
                .collect::<Vec<f64>>()
        }};
    }
    let values = match DataType::try_from(dtype) {
        Ok(DataType::Float) if raw.is_some() => from_raw!(f32, |v: f32| v as f64),
        Ok(DataType::Float) => t.float_data.iter().map(|&v| v as f64).collect(),
        Ok(DataType::Double) if raw.is_some() => from_raw!(f64, |v: f64| v),
        Ok(DataType::Double) => t.double_data.clone(),
        Ok(DataType::Float16) if raw.is_some() => from_raw!(u16, |v: u16| half::f16::from_bits(v).to_f64()),
        Ok(DataType::Float16) => t.int32_data.iter().map(|&v| half::f16::from_bits(v as u16).to_f64()).collect(),
        Ok(DataType::Bfloat16) if raw.is_some() => from_raw!(u16, |v: u16| half::bf16::from_bits(v).to_f64()),
        Ok(DataType::Bfloat16) => t.int32_data.iter().map(|&v| half::bf16::from_bits(v as u16).to_f64()).collect(),
        Ok(DataType::Int64) if raw.is_some() => from_raw!(i64, |v: i64| v as f64),
        Ok(DataType::Int64) => t.int64_data.iter().map(|&v| v as f64).collect(),
        Ok(DataType::Int32) if raw.is_some() => from_raw!(i32, |v: i32| v as f64),
        Ok(
            DataType::Int32 | DataType::Int16 | DataType::Int8 | DataType::Uint16 | DataType::Uint8 | DataType::Bool,
        ) if raw.is_none() => t.int32_data.iter().map(|&v| v as f64).collect(),
        Ok(DataType::Int8) => from_raw!(i8, |v: i8| v as f64),
        Ok(DataType::Uint8 | DataType::Bool) => from_raw!(u8, |v: u8| v as f64),
        _ => return Err(TensorError::Unsupported { name, dtype }),
    };
    if values.len() != expected {
        return Err(TensorError::BadLength { name, got: values.len(), expected });
    }
    Ok(values)
}

/// A float32 tensor with its data in `raw_data`.
pub fn tensor_f32(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()),
        ..Default::default()
    }
}

/// An int64 tensor with its data in `raw_data`.
pub fn tensor_i64(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Int64 as i32),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()),
        ..Default::default()
    }
}

/// A failure to read an IDX file.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not an unsigned-byte IDX file: {reason}")]
    Format { path: String, reason: String },
}

/// Reads an IDX file of unsigned bytes (gzip-compressed if its name ends in `.gz`).
/// Returns the dimensions and the data.
pub fn read_idx_u8(path: &Path) -> Result<(Vec<usize>, Vec<u8>), IdxError> {
    let p = path.display().to_string();
    let io = |source| IdxError::Io { path: p.clone(), source };
    let file = std::fs::read(path).map_err(io)?;
    let mut bytes = Vec::new();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(file.as_slice()).read_to_end(&mut bytes).map_err(io)?;
    } else {
        bytes = file;
    }
    let fmt = |reason: &str| IdxError::Format { path: p.clone(), reason: reason.into() };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(fmt("bad magic number"));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(fmt("truncated header"));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize)
        .collect();
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| fmt("dimensions overflow"))?;
    if bytes.len() - header != count {
        return Err(fmt("data length does not match the dimensions"));
    }
    bytes.drain(..header);
    Ok((dims, bytes))
}

/// A node of the default domain writing `output`, named after it (models built in code).
pub fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<crate::proto::AttributeProto>,
) -> crate::proto::NodeProto {
    crate::proto::NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: Some(output.into()),
        op_type: Some(op.into()),
        attribute,
        ..Default::default()
    }
}

/// A model of `graph` importing the default domain at `opset`, IR version 8 (models built
/// in code; the IR version every supported runtime reads).
pub fn model(graph: crate::proto::GraphProto, opset: i64) -> crate::proto::ModelProto {
    crate::proto::ModelProto {
        ir_version: Some(8),
        opset_import: vec![crate::proto::OperatorSetIdProto { domain: Some(String::new()), version: Some(opset) }],
        graph: Some(graph),
        ..Default::default()
    }
}

/// A float32 `ValueInfoProto` of the given dims; `None` is the symbolic batch `batch`.
pub fn float_value_info(name: &str, dims: &[Option<i64>]) -> crate::proto::ValueInfoProto {
    use crate::proto::tensor_shape_proto::{dimension::Value, Dimension};
    use crate::proto::{type_proto, TensorShapeProto, TypeProto, ValueInfoProto};
    let dim = |d: &Option<i64>| Dimension {
        value: Some(match d {
            Some(v) => Value::DimValue(*v),
            None => Value::DimParam("batch".into()),
        }),
        denotation: None,
    };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(TensorShapeProto { dim: dims.iter().map(dim).collect() }),
            })),
            denotation: None,
        }),
        ..Default::default()
    }
}

/// The numbers of a `.npy` file, by element type.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    /// numpy's `bool` (`|b1`), one byte per element.
    Bool(Vec<u8>),
}

/// A `.npy` array: its shape (row-major) and data.
#[derive(Debug, Clone, PartialEq)]
pub struct Npy {
    pub shape: Vec<usize>,
    pub data: NpyData,
}

/// A `.npy` file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("cannot read {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("{path} is not a .npy array this tool reads: {reason}")]
    Format { path: String, reason: String },
}

/// An open `.npy` file whose header has been read and checked: the shape it declares
/// matches the file's size. The data is read on demand, whole or a few rows at a time.
pub struct NpyReader {
    file: std::fs::File,
    path: String,
    /// The array's shape (row-major).
    pub shape: Vec<usize>,
    descr: String,
    item: usize,
    rows_read: usize,
}

impl NpyReader {
    /// Opens a `.npy` file (format 1, 2 or 3; little-endian f4, f8, i8, i4 or u1; C
    /// order). Only regular files are read.
    pub fn open(path: &Path) -> Result<NpyReader, NpyError> {
        use std::os::unix::fs::OpenOptionsExt;
        let p = path.display().to_string();
        let io = |cause| NpyError::Io { path: p.clone(), cause };
        let fmt = |reason: String| NpyError::Format { path: p.clone(), reason };
        let mut file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(fmt("not a regular file".into()));
        }
        let mut magic = [0u8; 8];
        file.read_exact(&mut magic).map_err(|_| fmt("too short for a .npy header".into()))?;
        if &magic[..6] != b"\x93NUMPY" {
            return Err(fmt("bad magic number".into()));
        }
        let header_len = match magic[6] {
            1 => {
                let mut b = [0u8; 2];
                file.read_exact(&mut b).map_err(|_| fmt("truncated header".into()))?;
                u16::from_le_bytes(b) as u64
            }
            2 | 3 => {
                let mut b = [0u8; 4];
                file.read_exact(&mut b).map_err(|_| fmt("truncated header".into()))?;
                u32::from_le_bytes(b) as u64
            }
            v => return Err(fmt(format!("format version {v} is unknown"))),
        };
        if header_len > 1 << 16 {
            return Err(fmt(format!("a header of {header_len} bytes")));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).map_err(|_| fmt("truncated header".into()))?;
        let header = String::from_utf8_lossy(&header).to_string();
        let dict = parse_npy_header(&header).map_err(|why| fmt(format!("the header {why}")))?;
        let field = |key: &str| dict.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let Some(HeaderValue::Str(descr)) = field("descr") else {
            return Err(fmt("no 'descr' string in the header".into()));
        };
        if field("fortran_order") != Some(HeaderValue::Bool(false)) {
            return Err(fmt("only C-order (fortran_order False) arrays are read".into()));
        }
        let Some(HeaderValue::Shape(shape)) = field("shape") else {
            return Err(fmt("no 'shape' tuple of sizes in the header".into()));
        };
        let shape_text = format!("{shape:?}");
        let item = match descr.as_str() {
            "<f4" => 4,
            "<f8" | "<i8" => 8,
            "<i4" => 4,
            "|u1" | "<u1" | "|b1" => 1,
            d => return Err(fmt(format!("element type '{d}' (read: <f4, <f8, <i8, <i4, |u1)"))),
        };
        let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let data_len = meta.len().saturating_sub(10 + header_len + if magic[6] == 1 { 0 } else { 2 });
        let need = count.and_then(|c| c.checked_mul(item)).map(|b| b as u64);
        if need != Some(data_len) {
            return Err(fmt(format!(
                "the header declares shape {shape_text}, but the file holds {data_len} bytes of data"
            )));
        }
        Ok(NpyReader { file, path: p, shape, descr, item, rows_read: 0 })
    }

    /// The element type as the header writes it (`<f4`, `<i8`, …).
    pub fn descr(&self) -> &str {
        &self.descr
    }

    /// Elements per row (per index of axis 0); 1 for a scalar.
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// Rows along axis 0 (1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Reads the next `rows` rows (fewer at the end) of a float32 array; empty at the end.
    pub fn read_f32_rows(&mut self, rows: usize) -> Result<Vec<f32>, NpyError> {
        if self.descr != "<f4" {
            return Err(NpyError::Format { path: self.path.clone(), reason: "the data must be float32 (<f4)".into() });
        }
        let rows = rows.min(self.rows() - self.rows_read);
        let raw = self.read_raw(rows * self.row_len() * self.item)?;
        self.rows_read += rows;
        Ok(raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("chunk size"))).collect())
    }

    fn read_raw(&mut self, len: usize) -> Result<Vec<u8>, NpyError> {
        let mut raw = Vec::with_capacity(len);
        (&mut self.file)
            .take(len as u64)
            .read_to_end(&mut raw)
            .map_err(|cause| NpyError::Io { path: self.path.clone(), cause })?;
        if raw.len() != len {
            return Err(NpyError::Format {
                path: self.path.clone(),
                reason: "the file is shorter than its header says".into(),
            });
        }
        Ok(raw)
    }

    /// Reads the whole array.
    pub fn read_all(mut self) -> Result<Npy, NpyError> {
        let count: usize = self.shape.iter().product();
        let raw = self.read_raw(count * self.item)?;
        macro_rules! le {
            ($ty:ty, $n:expr) => {
                raw.chunks_exact($n).map(|c| <$ty>::from_le_bytes(c.try_into().expect("chunk size"))).collect()
            };
        }
        let data = match self.descr.as_str() {
            "<f4" => NpyData::F32(le!(f32, 4)),
            "<f8" => NpyData::F64(le!(f64, 8)),
            "<i8" => NpyData::I64(le!(i64, 8)),
            "<i4" => NpyData::I32(le!(i32, 4)),
            "|b1" => NpyData::Bool(raw),
            _ => NpyData::U8(raw),
        };
        Ok(Npy { shape: self.shape, data })
    }
}

/// A value of a `.npy` header's dictionary.
#[derive(Debug, Clone, PartialEq)]
enum HeaderValue {
    Str(String),
    Bool(bool),
    Shape(Vec<usize>),
}

/// Parses a `.npy` header, a Python dict literal of string keys whose values are strings,
/// `True` / `False`, or tuples of sizes, as numpy does: a key repeated takes its last
/// value, and a quote inside a string value is part of that string. Returns the entries
/// in order, or what is wrong.
fn parse_npy_header(header: &str) -> Result<Vec<(String, HeaderValue)>, String> {
    let mut rest = header.trim().strip_prefix('{').ok_or("is not a dictionary")?;
    fn string(text: &str) -> Result<(String, &str), String> {
        let quote =
            text.chars().next().filter(|&c| c == '\'' || c == '"').ok_or("has a key or value that is not a string")?;
        let body = &text[1..];
        let end = body.find(quote).ok_or("has an unterminated string")?;
        Ok((body[..end].to_string(), &body[end + 1..]))
    }
    let mut entries = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return if after.trim().is_empty() { Ok(entries) } else { Err("has text after the dictionary".into()) };
        }
        let (key, after) = string(rest)?;
        rest = after.trim_start().strip_prefix(':').ok_or("has a key without a value")?.trim_start();
        let value = if rest.starts_with(['\'', '"']) {
            let (v, after) = string(rest)?;
            rest = after;
            HeaderValue::Str(v)
        } else if let Some(after) = rest.strip_prefix("True") {
            rest = after;
            HeaderValue::Bool(true)
        } else if let Some(after) = rest.strip_prefix("False") {
            rest = after;
            HeaderValue::Bool(false)
        } else if let Some(after) = rest.strip_prefix('(') {
            let end = after.find(')').ok_or("has an unterminated tuple")?;
            let sizes = after[..end]
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<usize>().map_err(|_| format!("has a shape entry '{s}' that is not a size")))
                .collect::<Result<_, _>>()?;
            rest = &after[end + 1..];
            HeaderValue::Shape(sizes)
        } else {
            return Err(format!("has a value for '{key}' that is not a string, a boolean or a tuple"));
        };
        entries.push((key, value));
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("has entries not separated by commas".into());
        }
    }
}

/// Reads a `.npy` file (format 1, 2 or 3; little-endian f4, f8, i8, i4 or u1; C order).
/// The shape the header declares is checked against the file's size before anything is
/// allocated, and only regular files are read.
pub fn read_npy(path: &Path) -> Result<Npy, NpyError> {
    NpyReader::open(path)?.read_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape_and_descr(header: &str) -> (Option<HeaderValue>, Option<HeaderValue>) {
        let dict = parse_npy_header(header).unwrap();
        let get = |k: &str| dict.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        (get("shape"), get("descr"))
    }

    #[test]
    fn npy_headers_are_read_as_numpy_reads_them() {
        let (shape, descr) = shape_and_descr("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }      ");
        assert_eq!((shape, descr), (Some(HeaderValue::Shape(vec![3, 4])), Some(HeaderValue::Str("<f4".into()))));
        // A repeated key takes its last value, as a Python dict does.
        let (_, descr) = shape_and_descr("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), 'descr': '<f4'}");
        assert_eq!(descr, Some(HeaderValue::Str("<f4".into())));
        // A key written inside a string value is not a key.
        let (shape, descr) = shape_and_descr("{'descr': \"<f4 'shape': (9,)\", 'fortran_order': False, 'shape': ()}");
        assert_eq!(shape, Some(HeaderValue::Shape(vec![])));
        assert_eq!(descr, Some(HeaderValue::Str("<f4 'shape': (9,)".into())));
        for bad in ["'descr': '<f4'", "{'descr' '<f4'}", "{'shape': (3, x)}", "{'descr': '<f4}", "{'a': 1}", "{} x"] {
            assert!(parse_npy_header(bad).is_err(), "{bad}");
        }
    }
}
