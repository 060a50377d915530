//! GGUF: the container reader and writer, ggml block (de)quantisation, and import into a
//! checkpoint.
//! Reading is split by concern: `reader` (container and validation), `value` (metadata
//! values), `ggml_type` (type ids and block geometry) and `dequant` (ggml blocks to f32).

pub mod dequant;
mod ggml_type;
mod reader;
mod value;
pub mod writer;

pub use dequant::DequantError;
pub use ggml_type::GgmlType;
pub use reader::{
    parse as parse_bytes, GgufFile, GgufTensorInfo, Parsed, ALIGNMENT_KEY, DEFAULT_ALIGNMENT,
    MAX_ARRAY_DEPTH, MAX_DIMS, MAX_METADATA_VALUES, MAX_NAME_BYTES, MAX_STRING_BYTES, MAX_TENSORS,
};
pub use value::GgufValue;
