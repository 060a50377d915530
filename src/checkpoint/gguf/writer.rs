//! GGUF v3 writer (spec: ggml `docs/gguf.md`): header, metadata in the order given, tensor
//! infos with offsets aligned to `general.alignment` (32 unless the metadata says otherwise),
//! then the tensor data streamed one tensor at a time, each padded with zeros to the alignment.
//! Output is a pure function of the inputs, so the same export gives the same bytes.

use std::io::Write;

use super::{GgmlType, GgufValue, ALIGNMENT_KEY, DEFAULT_ALIGNMENT};

/// Errors of the writer itself (the caller adds the path).
#[derive(Debug, thiserror::Error)]
pub enum GgufWriteError {
    #[error("metadata `{key}`: {msg}")]
    Metadata { key: String, msg: String },
    #[error("tensor `{name}`: {msg}")]
    Tensor { name: String, msg: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A tensor as it will be described in the file: dims in ggml order (fastest first).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorPlan {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
}

impl TensorPlan {
    /// Bytes of the data, or `None` when the first dim is not a block multiple or it overflows.
    pub fn n_bytes(&self) -> Option<u64> {
        let bs = self.ggml_type.block_size() as u64;
        let first = *self.dims.first()?;
        if first % bs != 0 {
            return None;
        }
        let n = self.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
        (n / bs).checked_mul(self.ggml_type.type_size() as u64)
    }
}

/// Streams a GGUF file: [`GgufWriter::new`] writes everything up to the data section, then
/// [`GgufWriter::write_tensor`] once per tensor in plan order, then [`GgufWriter::finish`].
pub struct GgufWriter<W: Write> {
    w: W,
    tensors: Vec<TensorPlan>,
    sizes: Vec<u64>,
    next: usize,
    alignment: u64,
}

impl<W: Write> GgufWriter<W> {
    pub fn new(
        mut w: W,
        metadata: &[(String, GgufValue)],
        tensors: Vec<TensorPlan>,
    ) -> Result<Self, GgufWriteError> {
        let alignment = alignment_of(metadata)?;
        let mut sizes = Vec::with_capacity(tensors.len());
        for t in &tensors {
            let n = t.n_bytes().ok_or_else(|| GgufWriteError::Tensor {
                name: t.name.clone(),
                msg: format!(
                    "dims {:?} do not fit {} blocks of {}",
                    t.dims,
                    t.ggml_type,
                    t.ggml_type.block_size()
                ),
            })?;
            sizes.push(n);
        }
        let mut h = Vec::new();
        h.extend_from_slice(b"GGUF");
        h.extend_from_slice(&3u32.to_le_bytes());
        h.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        h.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (i, (key, value)) in metadata.iter().enumerate() {
            if metadata[..i].iter().any(|(k, _)| k == key) {
                return Err(meta_err(key, "appears twice"));
            }
            put_str(&mut h, key);
            h.extend_from_slice(&type_id(value).to_le_bytes());
            put_value(&mut h, key, value)?;
        }
        let mut offset = 0u64;
        for (t, &n) in tensors.iter().zip(&sizes) {
            put_str(&mut h, &t.name);
            h.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                h.extend_from_slice(&d.to_le_bytes());
            }
            h.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            h.extend_from_slice(&offset.to_le_bytes());
            offset += n.div_ceil(alignment) * alignment;
        }
        pad(&mut h, alignment);
        w.write_all(&h)?;
        Ok(GgufWriter {
            w,
            tensors,
            sizes,
            next: 0,
            alignment,
        })
    }

    /// The next tensor to write, if any.
    pub fn next_tensor(&self) -> Option<&TensorPlan> {
        self.tensors.get(self.next)
    }

    /// Writes the data of the next tensor, which must be `name` with exactly its planned size.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<(), GgufWriteError> {
        let t = self
            .tensors
            .get(self.next)
            .ok_or_else(|| tensor_err(name, "written after the last planned tensor"))?;
        if t.name != name {
            return Err(tensor_err(
                name,
                format!("written out of order (expected `{}`)", t.name),
            ));
        }
        if bytes.len() as u64 != self.sizes[self.next] {
            return Err(tensor_err(
                name,
                format!("{} bytes, planned {}", bytes.len(), self.sizes[self.next]),
            ));
        }
        self.w.write_all(bytes)?;
        let padded = (bytes.len() as u64).div_ceil(self.alignment) * self.alignment;
        let zeros = vec![0u8; (padded - bytes.len() as u64) as usize];
        self.w.write_all(&zeros)?;
        self.next += 1;
        Ok(())
    }

    /// Checks every tensor was written and returns the sink.
    pub fn finish(mut self) -> Result<W, GgufWriteError> {
        if let Some(t) = self.tensors.get(self.next) {
            return Err(tensor_err(&t.name, "planned but never written"));
        }
        self.w.flush()?;
        Ok(self.w)
    }
}

fn meta_err(key: &str, msg: impl Into<String>) -> GgufWriteError {
    GgufWriteError::Metadata {
        key: key.to_string(),
        msg: msg.into(),
    }
}

fn tensor_err(name: &str, msg: impl Into<String>) -> GgufWriteError {
    GgufWriteError::Tensor {
        name: name.to_string(),
        msg: msg.into(),
    }
}

fn alignment_of(metadata: &[(String, GgufValue)]) -> Result<u64, GgufWriteError> {
    match metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some((_, GgufValue::U32(a))) if *a > 0 && a.is_power_of_two() => Ok(u64::from(*a)),
        Some(_) => Err(meta_err(ALIGNMENT_KEY, "must be a u32 power of two")),
    }
}

fn pad(h: &mut Vec<u8>, alignment: u64) {
    let n = (h.len() as u64).div_ceil(alignment) * alignment;
    h.resize(n as usize, 0);
}

fn put_str(h: &mut Vec<u8>, s: &str) {
    h.extend_from_slice(&(s.len() as u64).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

/// `gguf_type` ids (GGUF spec).
fn type_id(v: &GgufValue) -> u32 {
    match v {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::String(_) => 8,
        GgufValue::Array(_) => 9,
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
    }
}

fn put_value(h: &mut Vec<u8>, key: &str, v: &GgufValue) -> Result<(), GgufWriteError> {
    match v {
        GgufValue::U8(x) => h.push(*x),
        GgufValue::I8(x) => h.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U16(x) => h.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => h.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => h.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => h.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => h.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => h.push(u8::from(*x)),
        GgufValue::String(s) => put_str(h, s),
        GgufValue::U64(x) => h.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => h.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => h.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Array(items) => {
            // Arrays are homogeneous in the file: one element type, then the bare values.
            let elem = items.first().map(type_id).unwrap_or(0);
            if items.iter().any(|x| type_id(x) != elem) {
                return Err(meta_err(key, "array elements of different types"));
            }
            h.extend_from_slice(&elem.to_le_bytes());
            h.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for x in items {
                put_value(h, key, x)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::GgufFile;
    use super::*;

    fn s(x: &str) -> GgufValue {
        GgufValue::String(x.into())
    }

    #[test]
    fn written_file_reads_back_with_every_value_type() {
        let meta: Vec<(String, GgufValue)> = vec![
            ("general.architecture".into(), s("llama")),
            ("a.u8".into(), GgufValue::U8(7)),
            ("a.i8".into(), GgufValue::I8(-7)),
            ("a.u16".into(), GgufValue::U16(700)),
            ("a.i16".into(), GgufValue::I16(-700)),
            ("a.u32".into(), GgufValue::U32(70_000)),
            ("a.i32".into(), GgufValue::I32(-70_000)),
            ("a.f32".into(), GgufValue::F32(0.25)),
            ("a.bool".into(), GgufValue::Bool(true)),
            ("a.u64".into(), GgufValue::U64(1 << 40)),
            ("a.i64".into(), GgufValue::I64(-(1 << 40))),
            ("a.f64".into(), GgufValue::F64(-1.5e300)),
            ("a.strs".into(), GgufValue::Array(vec![s("x"), s("ý ü")])),
            (
                "a.nested".into(),
                GgufValue::Array(vec![GgufValue::Array(vec![GgufValue::I32(1)])]),
            ),
        ];
        let vals: Vec<f32> = (0..3 * 5).map(|i| i as f32 - 7.5).collect();
        let f32_bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let q8 = vec![0u8; 34 * 2];
        let plans = vec![
            TensorPlan {
                name: "t.f32".into(),
                dims: vec![5, 3],
                ggml_type: GgmlType::F32,
            },
            TensorPlan {
                name: "t.q8".into(),
                dims: vec![32, 2],
                ggml_type: GgmlType::Q8_0,
            },
        ];
        let mut w = GgufWriter::new(Vec::new(), &meta, plans).unwrap();
        w.write_tensor("t.f32", &f32_bytes).unwrap();
        w.write_tensor("t.q8", &q8).unwrap();
        let bytes = w.finish().unwrap();

        let dir = std::env::temp_dir().join(format!("gguf-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.gguf");
        std::fs::write(&p, &bytes).unwrap();
        let g = GgufFile::open(&p).unwrap();
        assert_eq!(g.version(), 3);
        assert_eq!(g.metadata(), &meta[..]);
        let t = g.tensor("t.f32").unwrap();
        assert_eq!(t.hf_shape(), vec![3, 5]);
        assert_eq!(g.dequantize(t).unwrap(), vals);
        assert_eq!(g.tensor("t.q8").unwrap().ggml_type, GgmlType::Q8_0);
        assert_eq!(g.data_start() % 32, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn misuse_is_an_error_naming_the_key_or_tensor() {
        let plan = |dims: Vec<u64>, ty| TensorPlan {
            name: "w".into(),
            dims,
            ggml_type: ty,
        };
        let e = GgufWriter::new(Vec::new(), &[], vec![plan(vec![48, 2], GgmlType::Q4_0)])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("`w`") && e.contains("Q4_0"), "{e}");
        let dup = vec![("k".to_string(), s("a")), ("k".to_string(), s("b"))];
        let e = GgufWriter::new(Vec::new(), &dup, vec![]).err().unwrap();
        assert!(e.to_string().contains("`k`"));
        let mixed = vec![(
            "m".to_string(),
            GgufValue::Array(vec![s("a"), GgufValue::U8(1)]),
        )];
        assert!(GgufWriter::new(Vec::new(), &mixed, vec![]).is_err());

        let mut w = GgufWriter::new(Vec::new(), &[], vec![plan(vec![2], GgmlType::F32)]).unwrap();
        assert!(w.write_tensor("v", &[0; 8]).is_err(), "wrong name");
        assert!(w.write_tensor("w", &[0; 4]).is_err(), "wrong size");
        let w2 = GgufWriter::new(Vec::new(), &[], vec![plan(vec![2], GgmlType::F32)]).unwrap();
        assert!(w2.finish().is_err(), "tensor never written");
        w.write_tensor("w", &[0; 8]).unwrap();
        assert!(w.write_tensor("w", &[0; 8]).is_err(), "past the end");
    }
}
