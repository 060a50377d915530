//! GGUF tensor infos: name, dims, ggml type and offset as stored, then sized and placed in the
//! data section (aligned, inside the file, disjoint from every other tensor).

use std::path::Path;

use super::cursor::Cursor;
use super::{fmt_err, GgufTensorInfo, MAX_DIMS, MAX_NAME_BYTES};
use crate::checkpoint::gguf::GgmlType;
use crate::error::Result;

/// A tensor info as stored: dims and type checked, offset still relative to the data section.
pub(super) struct RawTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    pub offset: u64,
}

pub(super) fn read_tensor_info(c: &mut Cursor, i: u64) -> Result<RawTensor> {
    let name = c.string(MAX_NAME_BYTES, &|| format!("tensor #{i} name"))?;
    let field = |what: &str| format!("tensor `{name}` {what}");
    let n_dims = c.u32(&|| field("n_dims"))?;
    if n_dims > MAX_DIMS {
        return Err(c.err(
            &|| field("n_dims"),
            format!("{n_dims} dimensions; ggml tensors have at most {MAX_DIMS}"),
        ));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        let dim = c.u64(&|| field(&format!("dims[{d}]")))?;
        // ggml stores dims as int64_t.
        if dim > i64::MAX as u64 {
            return Err(c.err(
                &|| field(&format!("dims[{d}]")),
                format!("{dim} exceeds the int64 range ggml uses"),
            ));
        }
        dims.push(dim);
    }
    let type_id = c.u32(&|| field("type"))?;
    let ggml_type = GgmlType::from_u32(type_id)
        .ok_or_else(|| c.err(&|| field("type"), format!("unknown ggml type {type_id}")))?;
    let offset = c.u64(&|| field("offset"))?;
    Ok(RawTensor {
        name,
        dims,
        ggml_type,
        offset,
    })
}

/// `x` rounded up to a multiple of `a`; `None` on overflow or a zero `a`.
pub(super) fn align_up(x: u64, a: u64) -> Option<u64> {
    x.checked_next_multiple_of(a)
}

/// Sizes each tensor and places it in the file: ranges must be aligned, inside the file, and
/// disjoint.
pub(super) fn place_tensors(
    raw: Vec<RawTensor>,
    data_start: u64,
    alignment: u64,
    file_len: u64,
    path: &Path,
) -> Result<Vec<GgufTensorInfo>> {
    let mut tensors = Vec::with_capacity(raw.len());
    for t in raw {
        let field = |what: &str| format!("tensor `{}` {what}", t.name);
        let ty = t.ggml_type;
        let numel = t
            .dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .filter(|&n| usize::try_from(n).is_ok())
            .ok_or_else(|| {
                fmt_err(
                    path,
                    field("dims"),
                    format!("{:?} overflows the element count", t.dims),
                )
            })?;
        let ne0 = t.dims.first().copied().unwrap_or(1);
        let block = ty.block_size() as u64;
        if !ne0.is_multiple_of(block) {
            return Err(fmt_err(
                path,
                field("dims[0]"),
                format!("{ne0} is not a multiple of the {ty} block size {block}"),
            ));
        }
        let n_bytes = (numel / block)
            .checked_mul(ty.type_size() as u64)
            .ok_or_else(|| fmt_err(path, field("dims"), "byte size overflows"))?;
        if !t.offset.is_multiple_of(alignment) {
            return Err(fmt_err(
                path,
                field("offset"),
                format!(
                    "{} is not a multiple of the alignment {alignment}",
                    t.offset
                ),
            ));
        }
        let range = data_start
            .checked_add(t.offset)
            .and_then(|start| Some((start, start.checked_add(n_bytes)?)));
        let Some((start, _)) = range.filter(|&(_, end)| end <= file_len) else {
            return Err(fmt_err(
                path,
                field("offset"),
                format!(
                    "{} bytes at data offset {} run past the end of the {file_len}-byte file \
                     (data section starts at {data_start})",
                    n_bytes, t.offset
                ),
            ));
        };
        tensors.push(GgufTensorInfo {
            name: t.name,
            dims: t.dims,
            ggml_type: ty,
            offset: start,
            n_bytes,
        });
    }
    check_disjoint(&tensors, path)?;
    Ok(tensors)
}

fn check_disjoint(tensors: &[GgufTensorInfo], path: &Path) -> Result<()> {
    let mut order: Vec<&GgufTensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    order.sort_by_key(|t| t.offset);
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        // In bounds (checked above), so the sum cannot overflow.
        let a_end = a.offset + a.n_bytes;
        if a_end > b.offset {
            return Err(fmt_err(
                path,
                format!("tensor `{}` offset", b.name),
                format!(
                    "bytes [{}, {}) overlap tensor `{}` at [{}, {a_end})",
                    b.offset,
                    b.offset + b.n_bytes,
                    a.name,
                    a.offset
                ),
            ));
        }
    }
    Ok(())
}
