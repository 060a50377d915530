//! GGUF metadata: key-value pairs of every value type, nested arrays, and `general.alignment`.
//! Counts are bounded by the bytes left in the file and by [`MAX_METADATA_VALUES`] before they
//! size an allocation; nesting is bounded by [`MAX_ARRAY_DEPTH`].

use std::collections::HashMap;
use std::path::Path;

use super::cursor::{Cursor, Field};
use super::{
    fmt_err, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_METADATA_VALUES,
    MAX_NAME_BYTES, MAX_STRING_BYTES,
};
use crate::checkpoint::gguf::GgufValue;
use crate::error::Result;

/// Reads `kv_count` key-value pairs in file order, rejecting duplicate keys.
pub(super) fn read_metadata(c: &mut Cursor, kv_count: u64) -> Result<Vec<(String, GgufValue)>> {
    let mut budget = MAX_METADATA_VALUES;
    let mut metadata: Vec<(String, GgufValue)> = Vec::with_capacity(kv_count as usize);
    let mut seen = HashMap::new();
    for i in 0..kv_count {
        let key = c.string(MAX_NAME_BYTES, &|| format!("metadata key #{i}"))?;
        let field = || format!("metadata key #{i} (`{key}`)");
        if seen.insert(key.clone(), i).is_some() {
            return Err(c.err(&field, "duplicate key"));
        }
        let ty = c.u32(&|| format!("{} type", field()))?;
        if budget == 0 {
            return Err(c.err(
                &field,
                format!("the file's metadata holds more than {MAX_METADATA_VALUES} values"),
            ));
        }
        budget -= 1;
        let value = read_value(c, ty, 0, &field, &mut budget)?;
        metadata.push((key, value));
    }
    Ok(metadata)
}

/// Smallest encoding of one value of GGUF value type `ty`, or `None` for an unknown type.
fn min_value_bytes(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1, // u8, i8, bool
        2 | 3 => 2,     // u16, i16
        4..=6 => 4,     // u32, i32, f32
        10..=12 => 8,   // u64, i64, f64
        8 => 8,         // string: its length
        9 => 4 + 8,     // array: element type and count
        _ => return None,
    })
}

/// Reads one value of GGUF value type `ty`. `budget` counts values left under
/// [`MAX_METADATA_VALUES`].
fn read_value(
    c: &mut Cursor,
    ty: u32,
    depth: usize,
    field: Field,
    budget: &mut u64,
) -> Result<GgufValue> {
    Ok(match ty {
        0 => GgufValue::U8(u8::from_le_bytes(c.array(field)?)),
        1 => GgufValue::I8(i8::from_le_bytes(c.array(field)?)),
        2 => GgufValue::U16(u16::from_le_bytes(c.array(field)?)),
        3 => GgufValue::I16(i16::from_le_bytes(c.array(field)?)),
        4 => GgufValue::U32(u32::from_le_bytes(c.array(field)?)),
        5 => GgufValue::I32(i32::from_le_bytes(c.array(field)?)),
        6 => GgufValue::F32(f32::from_le_bytes(c.array(field)?)),
        7 => match c.array::<1>(field)? {
            [0] => GgufValue::Bool(false),
            [1] => GgufValue::Bool(true),
            [b] => return Err(c.err(field, format!("bool byte {b} is neither 0 nor 1"))),
        },
        8 => GgufValue::String(c.string(MAX_STRING_BYTES, field)?),
        9 => read_array(c, depth, field, budget)?,
        10 => GgufValue::U64(u64::from_le_bytes(c.array(field)?)),
        11 => GgufValue::I64(i64::from_le_bytes(c.array(field)?)),
        12 => GgufValue::F64(f64::from_le_bytes(c.array(field)?)),
        _ => {
            return Err(c.err(
                &|| format!("{} type", field()),
                format!("unknown value type {ty}"),
            ))
        }
    })
}

fn read_array(c: &mut Cursor, depth: usize, field: Field, budget: &mut u64) -> Result<GgufValue> {
    if depth >= MAX_ARRAY_DEPTH {
        return Err(c.err(
            field,
            format!("arrays nested more than {MAX_ARRAY_DEPTH} deep"),
        ));
    }
    let type_field = || format!("{} array element type", field());
    let elem_ty = c.u32(&type_field)?;
    let Some(min) = min_value_bytes(elem_ty) else {
        return Err(c.err(&type_field, format!("unknown value type {elem_ty}")));
    };
    let len_field = || format!("{} array length", field());
    let count = c.u64(&len_field)?;
    let left = c.remaining() as u64;
    if count.checked_mul(min).is_none_or(|need| need > left) {
        return Err(c.err(
            &len_field,
            format!(
                "{count} elements of at least {min} bytes each cannot fit in the {left} bytes \
                 left in the file"
            ),
        ));
    }
    if count > *budget {
        return Err(c.err(
            &len_field,
            format!("the file's metadata holds more than {MAX_METADATA_VALUES} values"),
        ));
    }
    *budget -= count;
    // Bounded by the check above: at most `left / min` elements.
    let mut items = Vec::with_capacity(count as usize);
    for j in 0..count {
        let elem_field = || format!("{} element {j}", field());
        items.push(read_value(c, elem_ty, depth + 1, &elem_field, budget)?);
    }
    Ok(GgufValue::Array(items))
}

pub(super) fn alignment(metadata: &[(String, GgufValue)], path: &Path) -> Result<u64> {
    let Some((_, v)) = metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let a = v.as_u64().ok_or_else(|| {
        fmt_err(
            path,
            ALIGNMENT_KEY,
            format!("expected an unsigned integer, found {}", v.type_name()),
        )
    })?;
    if !a.is_power_of_two() {
        return Err(fmt_err(
            path,
            ALIGNMENT_KEY,
            format!("{a} is not a nonzero power of two"),
        ));
    }
    Ok(a)
}
