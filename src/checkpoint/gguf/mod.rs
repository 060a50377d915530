//! GGUF: the container reader, ggml block dequantisation, and import into a checkpoint.
