//! GGUF metadata values (`gguf_type` in the GGUF spec, `GGUFValueType` in gguf-py) and typed
//! accessors for them.

/// One metadata value. Arrays are homogeneous in the file (one element type per array) and may
/// nest.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// Any integer type holding a non-negative value. Writers disagree on the integer width of
    /// keys such as `llama.block_count` (u32 from convert_hf_to_gguf, i32 or u64 elsewhere), so
    /// readers should not insist on one.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any numeric type, widened to f64 (64-bit integers beyond 2^53 round).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v as f64),
            GgufValue::I64(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The GGUF type name, for error messages ("expected u32, found string").
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "u8",
            GgufValue::I8(_) => "i8",
            GgufValue::U16(_) => "u16",
            GgufValue::I16(_) => "i16",
            GgufValue::U32(_) => "u32",
            GgufValue::I32(_) => "i32",
            GgufValue::F32(_) => "f32",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::U64(_) => "u64",
            GgufValue::I64(_) => "i64",
            GgufValue::F64(_) => "f64",
            GgufValue::Array(_) => "array",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::GgufValue as V;

    #[test]
    fn as_u64_takes_non_negative_integers_only() {
        assert_eq!(V::U8(7).as_u64(), Some(7));
        assert_eq!(V::I32(30).as_u64(), Some(30));
        assert_eq!(V::I64(-1).as_u64(), None);
        assert_eq!(V::I8(-3).as_u64(), None);
        assert_eq!(V::U64(u64::MAX).as_u64(), Some(u64::MAX));
        assert_eq!(V::F32(1.0).as_u64(), None);
        assert_eq!(V::Bool(true).as_u64(), None);
    }

    #[test]
    fn as_f64_takes_every_numeric_type() {
        assert_eq!(V::I16(-5).as_f64(), Some(-5.0));
        assert_eq!(V::F32(0.5).as_f64(), Some(0.5));
        assert_eq!(V::U64(3).as_f64(), Some(3.0));
        assert_eq!(V::String("1".into()).as_f64(), None);
    }

    #[test]
    fn other_accessors_and_names() {
        let arr = V::Array(vec![V::String("a".into()), V::String("b".into())]);
        assert_eq!(arr.as_array().map(|a| a.len()), Some(2));
        assert_eq!(arr.type_name(), "array");
        assert_eq!(V::String("x".into()).as_str(), Some("x"));
        assert_eq!(V::Bool(false).as_bool(), Some(false));
        assert_eq!(V::U8(1).as_bool(), None);
        assert_eq!(V::F64(1.0).type_name(), "f64");
    }
}
