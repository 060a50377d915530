//! A hostile-input safetensors reader over a memory map: the header is length-capped and
//! parsed as JSON, every tensor's byte range must match its dtype and shape, and the ranges
//! must tile the data section exactly (no gaps, no overlaps). Tensor bytes are never copied
//! until a caller converts them.
//! Format: <https://github.com/huggingface/safetensors#format>

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde_json::Value;

use super::dtype::DType;
use crate::error::{Error, Result};

/// Headers are JSON text; real ones are well under a few MiB. The cap bounds the allocation a
/// hostile length field can cause.
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;
/// No tensor in a language model has more dimensions than this.
pub const MAX_DIMS: usize = 8;

const KIND: &str = "safetensors file";

#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Byte range within the file (not the data section).
    pub start: usize,
    pub end: usize,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// One memory-mapped safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
    tensors: BTreeMap<String, TensorInfo>,
    metadata: BTreeMap<String, String>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        // SAFETY: the map is read-only. Another process truncating the file while it is mapped
        // would fault; that is the documented risk of every mmap-based model loader, and the
        // input is never modified by us.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("memory-map", path, e))?;
        let (tensors, metadata) = parse(&mmap, path)?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            mmap,
            tensors,
            metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// The raw little-endian bytes of a tensor, borrowed from the map.
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.tensors.get(name).map(|t| &self.mmap[t.start..t.end])
    }
}

fn fmt_err(path: &Path, field: impl Into<String>, msg: impl Into<String>) -> Error {
    Error::format(KIND, path, field, msg)
}

/// Parses and validates the header of a safetensors byte buffer.
pub fn parse(
    buf: &[u8],
    path: &Path,
) -> Result<(BTreeMap<String, TensorInfo>, BTreeMap<String, String>)> {
    if buf.len() < 8 {
        return Err(fmt_err(
            path,
            "header length",
            format!(
                "file is {} bytes, shorter than the 8-byte length prefix",
                buf.len()
            ),
        ));
    }
    let n = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER_BYTES {
        return Err(fmt_err(
            path,
            "header length",
            format!("{n} bytes exceeds the {MAX_HEADER_BYTES}-byte cap"),
        ));
    }
    let header_end = 8u64 + n;
    if header_end > buf.len() as u64 {
        return Err(fmt_err(
            path,
            "header length",
            format!(
                "header of {n} bytes runs past the end of the {}-byte file",
                buf.len()
            ),
        ));
    }
    let header_end = header_end as usize;
    let header: Value = serde_json::from_slice(&buf[8..header_end])
        .map_err(|e| fmt_err(path, "header", format!("not valid JSON: {e}")))?;
    let Value::Object(entries) = header else {
        return Err(fmt_err(path, "header", "expected a JSON object"));
    };
    let data_len = buf.len() - header_end;
    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for (name, entry) in entries {
        if name == "__metadata__" {
            let Value::Object(m) = entry else {
                return Err(fmt_err(
                    path,
                    "__metadata__",
                    "expected an object of strings",
                ));
            };
            for (k, v) in m {
                let Value::String(s) = v else {
                    return Err(fmt_err(
                        path,
                        format!("__metadata__.{k}"),
                        "expected a string",
                    ));
                };
                metadata.insert(k, s);
            }
            continue;
        }
        let info = parse_entry(&name, &entry, path, header_end, data_len)?;
        tensors.insert(name, info);
    }
    check_tiling(&tensors, path, header_end, data_len)?;
    Ok((tensors, metadata))
}

fn parse_entry(
    name: &str,
    entry: &Value,
    path: &Path,
    header_end: usize,
    data_len: usize,
) -> Result<TensorInfo> {
    let field = |f: &str| format!("tensor `{name}` {f}");
    let Value::Object(obj) = entry else {
        return Err(fmt_err(path, field("entry"), "expected an object"));
    };
    let dtype_name = obj
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| fmt_err(path, field("dtype"), "missing or not a string"))?;
    let dtype = DType::parse(dtype_name).map_err(|known| {
        if known {
            fmt_err(
                path,
                field("dtype"),
                format!("unsupported dtype `{dtype_name}` (supported: F32, F16, BF16)"),
            )
        } else {
            fmt_err(
                path,
                field("dtype"),
                format!("unknown dtype `{dtype_name}`"),
            )
        }
    })?;
    let Some(Value::Array(dims)) = obj.get("shape") else {
        return Err(fmt_err(path, field("shape"), "missing or not an array"));
    };
    if dims.len() > MAX_DIMS {
        return Err(fmt_err(
            path,
            field("shape"),
            format!("{} dimensions (at most {MAX_DIMS})", dims.len()),
        ));
    }
    let mut shape = Vec::with_capacity(dims.len());
    for d in dims {
        let v = d
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| {
                fmt_err(
                    path,
                    field("shape"),
                    format!("dimension {d} is not a non-negative integer"),
                )
            })?;
        shape.push(v);
    }
    let Some(Value::Array(offs)) = obj.get("data_offsets") else {
        return Err(fmt_err(
            path,
            field("data_offsets"),
            "missing or not an array",
        ));
    };
    let (begin, end) = match offs.as_slice() {
        [b, e] => (
            b.as_u64()
                .ok_or_else(|| fmt_err(path, field("data_offsets"), "begin is not an integer"))?,
            e.as_u64()
                .ok_or_else(|| fmt_err(path, field("data_offsets"), "end is not an integer"))?,
        ),
        _ => {
            return Err(fmt_err(
                path,
                field("data_offsets"),
                "expected [begin, end]",
            ))
        }
    };
    if begin > end || end > data_len as u64 {
        return Err(fmt_err(
            path,
            field("data_offsets"),
            format!("[{begin}, {end}] is out of range for a data section of {data_len} bytes"),
        ));
    }
    let expected = shape
        .iter()
        .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| fmt_err(path, field("shape"), format!("{shape:?} overflows")))?;
    if expected != end - begin {
        return Err(fmt_err(
            path,
            field("data_offsets"),
            format!(
                "{} bytes, but dtype {dtype} with shape {shape:?} needs {expected}",
                end - begin
            ),
        ));
    }
    Ok(TensorInfo {
        dtype,
        shape,
        start: header_end + begin as usize,
        end: header_end + end as usize,
    })
}

/// The tensors' byte ranges must cover the data section exactly once.
fn check_tiling(
    tensors: &BTreeMap<String, TensorInfo>,
    path: &Path,
    header_end: usize,
    data_len: usize,
) -> Result<()> {
    let mut ranges: Vec<(usize, usize, &str)> = tensors
        .iter()
        .map(|(n, t)| (t.start - header_end, t.end - header_end, n.as_str()))
        .collect();
    ranges.sort();
    let mut cursor = 0usize;
    let mut prev = "";
    for (b, e, n) in ranges {
        if b < cursor {
            return Err(fmt_err(
                path,
                format!("tensor `{n}` data_offsets"),
                format!("overlaps tensor `{prev}` (starts at {b}, previous ends at {cursor})"),
            ));
        }
        if b > cursor {
            return Err(fmt_err(
                path,
                format!("tensor `{n}` data_offsets"),
                format!("leaves a gap of {} bytes before it", b - cursor),
            ));
        }
        cursor = e;
        prev = n;
    }
    if cursor != data_len {
        return Err(fmt_err(
            path,
            "data section",
            format!("tensors cover {cursor} bytes but the data section has {data_len}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    fn err(buf: &[u8]) -> String {
        parse(buf, Path::new("x.safetensors"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn reads_a_valid_file() {
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1,1],"data_offsets":[8,10]},"__metadata__":{"format":"pt"}}"#;
        let (t, m) = parse(&file(h, &[0; 10]), Path::new("x")).unwrap();
        assert_eq!(t["a"].shape, vec![2]);
        assert_eq!(t["b"].dtype, DType::BF16);
        assert_eq!(m["format"], "pt");
    }

    #[test]
    fn rejects_hostile_headers_naming_the_field() {
        assert!(err(&[1, 2, 3]).contains("header length"));
        let mut big = file("{}", &[]);
        big[..8].copy_from_slice(&1_000u64.to_le_bytes());
        assert!(err(&big).contains("runs past the end"));
        let overlap = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        assert!(err(&file(overlap, &[0; 8])).contains("overlaps"));
        let gap = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        assert!(err(&file(gap, &[0; 8])).contains("gap"));
        let oob = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
        assert!(err(&file(oob, &[0; 8])).contains("out of range"));
        let mismatch = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        assert!(err(&file(mismatch, &[0; 8])).contains("needs 12"));
        let unknown = r#"{"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}}"#;
        assert!(err(&file(unknown, &[0; 8])).contains("unknown dtype `Q7`"));
        let unsupported = r#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#;
        assert!(err(&file(unsupported, &[0; 8])).contains("unsupported dtype `I64`"));
        let overflow =
            r#"{"a":{"dtype":"F32","shape":[18446744073709551615,4],"data_offsets":[0,8]}}"#;
        assert!(err(&file(overflow, &[0; 8])).contains("overflows"));
        let trailing = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        assert!(err(&file(trailing, &[0; 8])).contains("data section"));
    }
}
