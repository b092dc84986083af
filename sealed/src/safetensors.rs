//! The safetensors header: an 8-byte little-endian length N, N bytes of JSON naming
//! each tensor's dtype, shape and `data_offsets` (plus an optional `__metadata__` map
//! of strings), then the data section, which the tensors must cover exactly.

use std::fs::File;

use pqcc_core::wire::{DType, MAX_RANK, MAX_TENSOR_NAME_LEN};
use serde_json::Value;

use crate::{Error, Result};

/// Largest JSON header accepted (the limit of the `safetensors` reference code).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// One tensor of a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StTensor {
    /// Its name.
    pub name: String,
    /// Its element type.
    pub dtype: DType,
    /// Its shape.
    pub shape: Vec<u64>,
    /// Start of its bytes in the data section.
    pub begin: u64,
    /// End of its bytes in the data section.
    pub end: u64,
}

/// A parsed safetensors header.
#[derive(Debug, Clone)]
pub struct StHeader {
    /// The header bytes verbatim: the 8-byte length and the JSON.
    pub raw: Vec<u8>,
    /// The tensors in data order.
    pub tensors: Vec<StTensor>,
}

/// The dtype of a safetensors dtype name.
pub fn parse_dtype(s: &str) -> Option<DType> {
    Some(match s {
        "BOOL" => DType::Bool,
        "U8" => DType::U8,
        "I8" => DType::I8,
        "U16" => DType::U16,
        "I16" => DType::I16,
        "U32" => DType::U32,
        "I32" => DType::I32,
        "U64" => DType::U64,
        "I64" => DType::I64,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F32" => DType::F32,
        "F64" => DType::F64,
        "F8_E4M3" => DType::F8E4M3,
        "F8_E5M2" => DType::F8E5M2,
        _ => return None,
    })
}

/// The safetensors name of a dtype (`None` for [`DType::Bytes`], which safetensors
/// does not have).
pub fn dtype_name(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::Bool => "BOOL",
        DType::U8 => "U8",
        DType::I8 => "I8",
        DType::U16 => "U16",
        DType::I16 => "I16",
        DType::U32 => "U32",
        DType::I32 => "I32",
        DType::U64 => "U64",
        DType::I64 => "I64",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::F32 => "F32",
        DType::F64 => "F64",
        DType::F8E4M3 => "F8_E4M3",
        DType::F8E5M2 => "F8_E5M2",
        _ => return None,
    })
}

/// Reads and checks the header of the safetensors file `f` (`file_len` bytes long):
/// the JSON parses, every entry has a known dtype, a shape whose byte length equals
/// its offsets' span and a name of at most 128 bytes, and the tensors cover the data
/// section exactly (no holes, no overlaps, nothing after the last one).
pub fn read_header(f: &File, path: &str, file_len: u64) -> Result<StHeader> {
    let bad = |r: String| Error::bad_input(path, format!("not a valid safetensors file: {r}"));
    if file_len < 8 {
        return Err(bad("shorter than its 8-byte header length".into()));
    }
    let mut n = [0u8; 8];
    crate::io::read_at(f, std::path::Path::new(path), 0, &mut n)?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER_LEN || n > file_len - 8 {
        return Err(bad(format!("header length {n} is out of range")));
    }
    let mut raw = vec![0u8; 8 + usize::try_from(n).map_err(|_| bad("header too long".into()))?];
    crate::io::read_at(f, std::path::Path::new(path), 0, &mut raw)?;
    let tensors = parse_json(&raw[8..], file_len - 8 - n).map_err(bad)?;
    Ok(StHeader { raw, tensors })
}

/// Parses the JSON header of a file whose data section is `data_len` bytes.
pub fn parse_json(json: &[u8], data_len: u64) -> std::result::Result<Vec<StTensor>, String> {
    let v: Value = serde_json::from_slice(json).map_err(|e| format!("header JSON: {e}"))?;
    let obj = v.as_object().ok_or("header JSON is not an object")?;
    let mut out = Vec::with_capacity(obj.len());
    for (name, t) in obj {
        if name == "__metadata__" {
            let ok = t
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
            if !ok {
                return Err("__metadata__ is not a map of strings".into());
            }
            continue;
        }
        if name.is_empty() || name.len() > MAX_TENSOR_NAME_LEN {
            return Err(format!(
                "tensor name {name:?} is empty or longer than {MAX_TENSOR_NAME_LEN} bytes"
            ));
        }
        let dt = t
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("tensor {name:?}: no dtype"))?;
        let dtype =
            parse_dtype(dt).ok_or_else(|| format!("tensor {name:?}: unsupported dtype {dt}"))?;
        let shape: Vec<u64> = t
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("tensor {name:?}: no shape"))?
            .iter()
            .map(Value::as_u64)
            .collect::<Option<_>>()
            .ok_or_else(|| format!("tensor {name:?}: shape is not a list of integers"))?;
        if shape.len() > MAX_RANK {
            return Err(format!("tensor {name:?}: more than {MAX_RANK} dimensions"));
        }
        let offs: Vec<u64> = t
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
            .filter(|a| a.len() == 2)
            .ok_or_else(|| format!("tensor {name:?}: data_offsets is not [begin, end]"))?;
        let (begin, end) = (offs[0], offs[1]);
        let len = shape
            .iter()
            .try_fold(dtype.size(), |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("tensor {name:?}: shape overflows"))?;
        if end < begin || end - begin != len {
            return Err(format!(
                "tensor {name:?}: data_offsets [{begin}, {end}] do not hold {len} bytes of {dt} {shape:?}"
            ));
        }
        out.push(StTensor {
            name: name.clone(),
            dtype,
            shape,
            begin,
            end,
        });
    }
    out.sort_by(|a, b| (a.begin, a.end, &a.name).cmp(&(b.begin, b.end, &b.name)));
    let mut next = 0u64;
    for t in &out {
        if t.begin != next {
            return Err(format!(
                "tensor {:?} starts at {} where {} was expected (holes and overlaps are not allowed)",
                t.name, t.begin, next
            ));
        }
        next = t.end;
    }
    if next != data_len {
        return Err(format!(
            "the tensors cover {next} bytes of a {data_len}-byte data section"
        ));
    }
    Ok(out)
}

/// Encodes a safetensors file: the tensors `(name, dtype, shape, bytes)` laid out in
/// the order given, the optional `__metadata__` first, the JSON padded with spaces to a
/// multiple of 8 bytes (as the reference writer does). Refuses a tensor whose bytes do
/// not match its dtype and shape.
pub fn encode(
    tensors: &[(&str, DType, &[u64], &[u8])],
    metadata: Option<&[(&str, &str)]>,
) -> std::result::Result<Vec<u8>, String> {
    let mut hdr = serde_json::Map::new();
    if let Some(m) = metadata {
        let mm: serde_json::Map<String, Value> = m
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect();
        hdr.insert("__metadata__".into(), Value::Object(mm));
    }
    let mut off = 0u64;
    for (name, dtype, shape, bytes) in tensors {
        let want = shape
            .iter()
            .try_fold(dtype.size(), |a, &d| a.checked_mul(d));
        if want != Some(bytes.len() as u64) {
            return Err(format!(
                "tensor {name:?}: {} bytes do not fit its shape",
                bytes.len()
            ));
        }
        let dt =
            dtype_name(*dtype).ok_or_else(|| format!("tensor {name:?}: no safetensors dtype"))?;
        let end = off + bytes.len() as u64;
        hdr.insert(
            (*name).to_owned(),
            serde_json::json!({"dtype": dt, "shape": shape, "data_offsets": [off, end]}),
        );
        off = end;
    }
    let mut json = serde_json::to_vec(&Value::Object(hdr)).map_err(|e| e.to_string())?;
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + usize::try_from(off).unwrap_or(0));
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for (_, _, _, bytes) in tensors {
        out.extend_from_slice(bytes);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let j = br#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#;
        let t = parse_json(j, 12).unwrap();
        assert_eq!(t[0].name, "a");
        assert_eq!(t[1].name, "b");
        assert!(parse_json(j, 13).unwrap_err().contains("cover 12"));
        let hole = br#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[1,5]}}"#;
        assert!(parse_json(hole, 5).unwrap_err().contains("holes"));
        let bad_len = br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,4]}}"#;
        assert!(parse_json(bad_len, 4).is_err());
        let dt = br#"{"a":{"dtype":"F4","shape":[4],"data_offsets":[0,4]}}"#;
        assert!(
            parse_json(dt, 4)
                .unwrap_err()
                .contains("unsupported dtype F4")
        );
        assert!(parse_json(b"[]", 0).is_err());
        assert!(parse_json(b"{", 0).is_err());
    }
}
