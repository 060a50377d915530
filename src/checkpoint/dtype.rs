//! Storage dtypes of checkpoint tensors and their conversion to and from the f32 compute type.

use half::{bf16, f16};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    F16,
    BF16,
}

/// Every dtype name the safetensors format defines; the ones we cannot compute with are
/// recognised so the error can say "unsupported" rather than "unknown".
const SAFETENSORS_DTYPES: [&str; 16] = [
    "BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64",
    "F8_E4M3", "F8_E5M2", "F8_E8M0",
];

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// The safetensors name (`F32`, `F16`, `BF16`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
        }
    }

    /// The `torch_dtype` string transformers expects in config.json.
    pub fn torch_name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
        }
    }

    /// Parses a safetensors dtype name. `Err(true)` means a valid safetensors dtype that we do
    /// not support; `Err(false)` means not a safetensors dtype at all.
    pub fn parse(name: &str) -> Result<Self, bool> {
        match name {
            "F32" => Ok(DType::F32),
            "F16" => Ok(DType::F16),
            "BF16" => Ok(DType::BF16),
            other => Err(SAFETENSORS_DTYPES.contains(&other)),
        }
    }

    /// Parses a user-facing name (`f32`, `f16`, `bf16`, any case).
    pub fn from_user(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Some(DType::F32),
            "f16" | "float16" => Some(DType::F16),
            "bf16" | "bfloat16" => Some(DType::BF16),
            _ => None,
        }
    }

    /// Little-endian bytes of this dtype to f32. `bytes.len()` must be a multiple of `size()`.
    pub fn to_f32(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
            DType::BF16 => bytes
                .chunks_exact(2)
                .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
        }
    }

    /// f32 values to little-endian bytes of this dtype (round to nearest even).
    pub fn from_f32(self, values: &[f32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(values.len() * self.size());
        match self {
            DType::F32 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            DType::F16 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes())),
            DType::BF16 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_bits().to_le_bytes())),
        }
        out
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_each_dtype_on_values_it_represents_exactly() {
        // Values with at most 8 significant bits are exact in f16 and bf16 alike.
        let vals = [1.5f32, -0.375, 3.0, -2.0e-2 * 0.0 + 0.25, 96.0];
        for dt in [DType::F32, DType::F16, DType::BF16] {
            assert_eq!(dt.to_f32(&dt.from_f32(&vals)), vals, "{dt}");
        }
    }

    #[test]
    fn parse_distinguishes_unsupported_from_unknown() {
        assert_eq!(DType::parse("BF16"), Ok(DType::BF16));
        assert_eq!(DType::parse("I64"), Err(true));
        assert_eq!(DType::parse("Q9"), Err(false));
    }
}
