//! The checkpoint id: `blake3:<hex>` over the tensors in name order. For each tensor the hash
//! takes, each length-prefixed (u64 little-endian): its name, its dtype name, its dims, its
//! bytes. Metadata never enters the id, so evaluations and provenance can be appended without
//! changing it; the file layout does not either, so the id can be recomputed from any reader.

use super::dtype::DType;

pub struct IdHasher {
    hasher: blake3::Hasher,
    last_name: Option<String>,
}

impl Default for IdHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl IdHasher {
    pub fn new() -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"intervene-id/1");
        IdHasher {
            hasher,
            last_name: None,
        }
    }

    fn field(&mut self, bytes: &[u8]) {
        self.hasher.update(&(bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }

    /// Adds one tensor. Tensors must come in strictly increasing name order; the caller
    /// guarantees it (the writer sorts), and a debug assertion checks it.
    pub fn tensor(&mut self, name: &str, dtype: DType, shape: &[usize], bytes: &[u8]) {
        debug_assert!(
            self.last_name.as_deref().is_none_or(|p| p < name),
            "tensor order"
        );
        self.last_name = Some(name.to_string());
        self.field(name.as_bytes());
        self.field(dtype.name().as_bytes());
        self.hasher.update(&(shape.len() as u64).to_le_bytes());
        for d in shape {
            self.hasher.update(&(*d as u64).to_le_bytes());
        }
        self.field(bytes);
    }

    pub fn finish(self) -> String {
        format!("blake3:{}", self.hasher.finalize().to_hex())
    }
}

/// The blake3 of a file's bytes, as `blake3:<hex>` (for provenance input records).
pub fn hash_file(path: &std::path::Path) -> crate::error::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_mmap(path)
        .map_err(|e| crate::error::Error::io("hash", path, e))?;
    Ok(format!("blake3:{}", hasher.finalize().to_hex()))
}
