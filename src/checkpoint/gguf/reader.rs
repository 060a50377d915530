//! A hostile-input GGUF (v2, v3) reader over a memory map: header, metadata, tensor infos and
//! the aligned data section. Every length is capped or bounded by the bytes left in the file
//! before anything is allocated, sizes use checked arithmetic, and tensor ranges must lie in the
//! data section, aligned and disjoint. Errors name the field at fault.
//! Format: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

mod cursor;
mod metadata;
mod tensors;

use cursor::{bound_count, truncated, Cursor};
use metadata::{alignment, read_metadata};
use tensors::{align_up, place_tensors, read_tensor_info};

use super::dequant::{self, DequantError};
use super::{GgmlType, GgufValue};
use crate::error::{Error, Result};

const KIND: &str = "GGUF file";
const MAGIC: &[u8; 4] = b"GGUF";

/// Cap on one metadata string value. Chat templates, the longest real values, are tens of KiB.
pub const MAX_STRING_BYTES: u64 = 1 << 20;
/// Cap on metadata keys and tensor names (the spec allows keys up to 65535 bytes; ggml limits
/// tensor names to 64, but we only need a bound, not ggml's limit).
pub const MAX_NAME_BYTES: u64 = 65_535;
/// Cap on metadata values across the file, array elements included. A 262k-entry vocabulary
/// (tokens, scores, types, merges) holds about 1M; each value costs 32 bytes in memory, so the
/// cap bounds the parsed metadata to 128 MiB however the file is built.
pub const MAX_METADATA_VALUES: u64 = 1 << 22;
/// Cap on tensor infos. The largest mixture-of-experts GGUFs hold a few thousand tensors per
/// file; the cap keeps a hostile count from sizing a large allocation.
pub const MAX_TENSORS: u64 = 1 << 20;
/// Arrays of arrays are legal; nesting is capped so recursion depth is bounded.
pub const MAX_ARRAY_DEPTH: usize = 8;
/// ggml tensors have at most four dimensions (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Data-section alignment when `general.alignment` is absent (`GGUF_DEFAULT_ALIGNMENT`).
pub const DEFAULT_ALIGNMENT: u64 = 32;
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// One tensor's header entry, validated against the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the fastest-varying (the Hugging Face "in" dimension).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute byte offset of the data in the file (the data-section start is already added).
    pub offset: u64,
    pub n_bytes: u64,
}

impl GgufTensorInfo {
    /// The shape in Hugging Face (row-major) order: ggml dims reversed.
    pub fn hf_shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn numel(&self) -> u64 {
        // Checked at open; saturating keeps hand-built infos panic-free too.
        self.dims.iter().fold(1u64, |n, &d| n.saturating_mul(d))
    }
}

/// An opened GGUF file. Metadata and tensors keep file order.
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    mmap: Mmap,
    alignment: u64,
    data_start: u64,
    metadata: Vec<(String, GgufValue)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        if len < 4 {
            // An empty file cannot be mapped on every platform; report it as what it is.
            return Err(fmt_err(path, "magic", truncated(4, 0, len as usize)));
        }
        // SAFETY: the map is read-only. Another process truncating the file while it is mapped
        // would fault; that is the documented risk of every mmap-based model loader, and we
        // never modify the input.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("memory-map", path, e))?;
        let p = parse(&mmap, path)?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            version: p.version,
            mmap,
            alignment: p.alignment,
            data_start: p.data_start,
            key_index: index_of(p.metadata.iter().map(|(k, _)| k)),
            metadata: p.metadata,
            tensor_index: index_of(p.tensors.iter().map(|t| &t.name)),
            tensors: p.tensors,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The data-section alignment (`general.alignment`, or 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset of the data section.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// Key-value pairs in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw stored bytes of a tensor, borrowed from the map. An info from another file whose
    /// range lies outside this one yields an empty slice rather than a panic.
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> &[u8] {
        let range = usize::try_from(info.offset).ok().and_then(|start| {
            let end = start.checked_add(usize::try_from(info.n_bytes).ok()?)?;
            self.mmap.get(start..end)
        });
        range.unwrap_or(&[])
    }

    /// A tensor's values as f32, row-major in [`GgufTensorInfo::hf_shape`] order.
    pub fn dequantize(&self, info: &GgufTensorInfo) -> Result<Vec<f32>> {
        let n = usize::try_from(info.numel()).map_err(|_| {
            fmt_err(
                &self.path,
                format!("tensor `{}` dims", info.name),
                "too many elements for this platform",
            )
        })?;
        dequant::dequantize(info.ggml_type, self.tensor_bytes(info), n).map_err(|e| match e {
            DequantError::Unsupported(ty) => Error::unsupported(
                "ggml type",
                &self.path,
                format!(
                    "tensor `{}` is {ty} (ggml type {}), which cannot be dequantised yet",
                    info.name,
                    ty.id()
                ),
            ),
            e => fmt_err(
                &self.path,
                format!("tensor `{}` data", info.name),
                e.to_string(),
            ),
        })
    }
}

fn index_of<'a>(names: impl Iterator<Item = &'a String>) -> HashMap<String, usize> {
    names.enumerate().map(|(i, n)| (n.clone(), i)).collect()
}

fn fmt_err(path: &Path, field: impl Into<String>, msg: impl Into<String>) -> Error {
    Error::format(KIND, path, field, msg)
}

/// Everything `parse` finds in a GGUF byte buffer.
pub struct Parsed {
    pub version: u32,
    pub alignment: u64,
    pub data_start: u64,
    pub metadata: Vec<(String, GgufValue)>,
    pub tensors: Vec<GgufTensorInfo>,
}

/// Parses and validates a whole GGUF buffer (`path` is only for messages).
pub fn parse(buf: &[u8], path: &Path) -> Result<Parsed> {
    let mut c = Cursor::new(buf, path);
    let magic: [u8; 4] = c.array(&|| "magic".into())?;
    if &magic != MAGIC {
        return Err(fmt_err(
            path,
            "magic",
            format!(
                "expected `GGUF`, found {:?}; not a GGUF file",
                String::from_utf8_lossy(&magic)
            ),
        ));
    }
    let version = c.u32(&|| "version".into())?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(fmt_err(
                path,
                "version",
                "GGUF v1 (32-bit counts, 2023) is not supported; re-convert the model with a \
                 current llama.cpp",
            ))
        }
        v if (1..=3).contains(&v.swap_bytes()) => {
            return Err(fmt_err(
                path,
                "version",
                "big-endian GGUF files are not supported",
            ))
        }
        v => {
            return Err(fmt_err(
                path,
                "version",
                format!("unknown version {v} (this reader knows 2 and 3)"),
            ))
        }
    }
    let tensor_count = c.u64(&|| "tensor_count".into())?;
    let kv_count = c.u64(&|| "kv_count".into())?;

    // Each key-value pair takes at least a key length (8), a type (4) and one byte of value.
    bound_count(
        &c,
        kv_count,
        8 + 4 + 1,
        MAX_METADATA_VALUES,
        "kv_count",
        "key-value pairs",
    )?;
    let metadata = read_metadata(&mut c, kv_count)?;

    // Each tensor info takes at least a name length (8), n_dims (4), a type (4), an offset (8).
    bound_count(
        &c,
        tensor_count,
        8 + 4 + 4 + 8,
        MAX_TENSORS,
        "tensor_count",
        "tensor infos",
    )?;
    let mut raw = Vec::with_capacity(tensor_count as usize);
    let mut seen = HashMap::new();
    for i in 0..tensor_count {
        let t = read_tensor_info(&mut c, i)?;
        if seen.insert(t.name.clone(), i).is_some() {
            return Err(fmt_err(
                path,
                format!("tensor #{i} name"),
                format!("duplicate tensor name `{}`", t.name),
            ));
        }
        raw.push(t);
    }

    let alignment = alignment(&metadata, path)?;
    let data_start = align_up(c.pos() as u64, alignment).ok_or_else(|| {
        fmt_err(
            path,
            ALIGNMENT_KEY,
            format!("{alignment} overflows the data-section offset"),
        )
    })?;
    let tensors = place_tensors(raw, data_start, alignment, buf.len() as u64, path)?;
    Ok(Parsed {
        version,
        alignment,
        data_start,
        metadata,
        tensors,
    })
}

#[cfg(test)]
mod tests;
