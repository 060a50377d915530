//! Reader tests on GGUF bytes built in memory: a valid file round-trips, and every malformed
//! input is rejected with an error that names the field at fault.

use super::*;

/// Builds GGUF bytes piece by piece; raw setters allow writing malformed files.
struct Builder {
    version: u32,
    kv: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    alignment: usize,
    data: Vec<u8>,
}

const T_U8: u32 = 0;
const T_U32: u32 = 4;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;

fn gguf_str(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

impl Builder {
    fn new() -> Self {
        Builder {
            version: 3,
            kv: Vec::new(),
            n_kv: 0,
            infos: Vec::new(),
            n_tensors: 0,
            alignment: 32,
            data: Vec::new(),
        }
    }

    /// A key with type `ty` and already-encoded value bytes.
    fn kv(mut self, key: &str, ty: u32, value: &[u8]) -> Self {
        self.kv.extend(gguf_str(key));
        self.kv.extend(ty.to_le_bytes());
        self.kv.extend_from_slice(value);
        self.n_kv += 1;
        self
    }

    fn kv_u32(self, key: &str, v: u32) -> Self {
        self.kv(key, T_U32, &v.to_le_bytes())
    }

    fn tensor(mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        self.infos.extend(gguf_str(name));
        self.infos.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(ty.to_le_bytes());
        self.infos.extend(offset.to_le_bytes());
        self.n_tensors += 1;
        self
    }

    fn data(mut self, bytes: &[u8]) -> Self {
        self.data.extend_from_slice(bytes);
        self
    }

    fn build(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(self.version.to_le_bytes());
        b.extend(self.n_tensors.to_le_bytes());
        b.extend(self.n_kv.to_le_bytes());
        b.extend(&self.kv);
        b.extend(&self.infos);
        while !b.len().is_multiple_of(self.alignment) {
            b.push(0);
        }
        b.extend(&self.data);
        b
    }
}

/// A small valid file: two metadata keys and two F32 tensors of 8 elements (32 bytes) each.
fn valid() -> Builder {
    let data: Vec<u8> = (0..16).flat_map(|i| (i as f32).to_le_bytes()).collect();
    Builder::new()
        .kv("general.name", T_STRING, &gguf_str("tiny"))
        .kv_u32("llama.block_count", 2)
        .tensor("a", &[4, 2], 0, 0)
        .tensor("b", &[8], 0, 32)
        .data(&data)
}

fn parse_bytes(b: &[u8]) -> Result<Parsed> {
    parse(b, Path::new("mem.gguf"))
}

/// Asserts that parsing fails with a format error on `field` whose message contains `msg`.
#[track_caller]
fn assert_err(b: &[u8], field: &str, msg: &str) {
    match parse_bytes(b) {
        Ok(_) => panic!("parsed, expected an error on `{field}`"),
        Err(Error::Format {
            field: f, msg: m, ..
        }) => {
            assert_eq!(f, field, "wrong field (message: {m})");
            assert!(m.contains(msg), "message `{m}` lacks `{msg}`");
        }
        Err(e) => panic!("expected a format error on `{field}`, got {e}"),
    }
}

#[test]
fn valid_file_parses() {
    let p = parse_bytes(&valid().build()).unwrap();
    assert_eq!(p.version, 3);
    assert_eq!(p.alignment, 32);
    assert_eq!(p.metadata.len(), 2);
    assert_eq!(p.metadata[0].1.as_str(), Some("tiny"));
    assert_eq!(p.metadata[1].1.as_u64(), Some(2));
    assert_eq!(p.tensors.len(), 2);
    let a = &p.tensors[0];
    assert_eq!(a.dims, vec![4, 2]);
    assert_eq!(a.hf_shape(), vec![2, 4]);
    assert_eq!((a.numel(), a.n_bytes), (8, 32));
    assert_eq!(a.offset, p.data_start);
    assert_eq!(p.tensors[1].offset, p.data_start + 32);
    assert_eq!(p.data_start % 32, 0);
}

#[test]
fn version_2_parses() {
    let mut b = valid();
    b.version = 2;
    assert_eq!(parse_bytes(&b.build()).unwrap().version, 2);
}

#[test]
fn every_truncation_is_an_error() {
    let full = valid().build();
    for len in 0..full.len() {
        assert!(
            parse_bytes(&full[..len]).is_err(),
            "a file cut to {len} of {} bytes parsed",
            full.len()
        );
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    // A fixed xorshift stream flips bytes of a valid file; parsing must return, Ok or Err.
    let full = valid().build();
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut errors = 0;
    for _ in 0..2000 {
        let mut b = full.clone();
        for _ in 0..3 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let i = (s % b.len() as u64) as usize;
            b[i] = (s >> 32) as u8;
        }
        errors += usize::from(parse_bytes(&b).is_err());
    }
    assert!(errors > 0, "no corruption was detected at all");
}

#[test]
fn wrong_magic() {
    let mut b = valid().build();
    b[..4].copy_from_slice(b"GGML");
    assert_err(&b, "magic", "expected `GGUF`");
}

#[test]
fn truncated_header() {
    let b = valid().build();
    assert_err(&b[..6], "version", "truncated");
    assert_err(&b[..12], "tensor_count", "truncated");
}

#[test]
fn version_1_and_unknown_versions() {
    let mut b = valid();
    b.version = 1;
    assert_err(&b.build(), "version", "v1");
    b.version = 4;
    assert_err(&b.build(), "version", "unknown version 4");
    b.version = 3u32.swap_bytes();
    assert_err(&b.build(), "version", "big-endian");
}

#[test]
fn truncated_metadata_string() {
    let b = Builder::new().kv("k", T_STRING, &gguf_str("hello")).build();
    // Cut inside the value's 8-byte length.
    let cut = 24 + 8 + 1 + 4 + 3;
    assert_err(&b[..cut], "metadata key #0 (`k`) length", "truncated");
    // Cut inside the key itself (leaving enough bytes to pass the kv_count bound).
    let b = Builder::new().kv("a.long.key.name", T_U8, &[1]).build();
    assert_err(&b[..24 + 8 + 13], "metadata key #0 length", "truncated");
}

#[test]
fn string_length_past_end() {
    let mut v = 1000u64.to_le_bytes().to_vec();
    v.extend_from_slice(b"abc");
    let b = Builder::new().kv("k", T_STRING, &v).build();
    assert_err(&b, "metadata key #0 (`k`) length", "runs past the end");
}

#[test]
fn string_over_cap() {
    let v = (MAX_STRING_BYTES + 1).to_le_bytes();
    let b = Builder::new().kv("k", T_STRING, &v).build();
    assert_err(&b, "metadata key #0 (`k`) length", "cap");
}

#[test]
fn string_not_utf8() {
    let mut v = 2u64.to_le_bytes().to_vec();
    v.extend_from_slice(&[0xff, 0xfe]);
    let b = Builder::new().kv("k", T_STRING, &v).build();
    assert_err(&b, "metadata key #0 (`k`)", "UTF-8");
}

#[test]
fn array_length_huge() {
    let mut v = T_STRING.to_le_bytes().to_vec();
    v.extend(u64::MAX.to_le_bytes());
    let b = Builder::new()
        .kv("tokenizer.ggml.tokens", T_ARRAY, &v)
        .build();
    assert_err(
        &b,
        "metadata key #0 (`tokenizer.ggml.tokens`) array length",
        "cannot fit",
    );
    // A length that fits u64 arithmetic but not the file.
    let mut v = T_U8.to_le_bytes().to_vec();
    v.extend(1000u64.to_le_bytes());
    v.extend([1, 2, 3]);
    let b = Builder::new().kv("k", T_ARRAY, &v).build();
    assert_err(&b, "metadata key #0 (`k`) array length", "cannot fit");
}

#[test]
fn nested_arrays_parse_and_depth_is_capped() {
    // [[1, 2], [3]] as u8 arrays.
    let mut v = T_ARRAY.to_le_bytes().to_vec();
    v.extend(2u64.to_le_bytes());
    for inner in [&[1u8, 2][..], &[3]] {
        v.extend(T_U8.to_le_bytes());
        v.extend((inner.len() as u64).to_le_bytes());
        v.extend_from_slice(inner);
    }
    let p = parse_bytes(&Builder::new().kv("n", T_ARRAY, &v).build()).unwrap();
    let outer = p.metadata[0].1.as_array().unwrap();
    assert_eq!(
        outer[0],
        GgufValue::Array(vec![GgufValue::U8(1), GgufValue::U8(2)])
    );
    assert_eq!(outer[1], GgufValue::Array(vec![GgufValue::U8(3)]));

    // Arrays of one array, nested past the cap.
    let mut deep = Vec::new();
    for _ in 0..MAX_ARRAY_DEPTH + 1 {
        deep.extend(T_ARRAY.to_le_bytes());
        deep.extend(1u64.to_le_bytes());
    }
    deep.extend(T_U8.to_le_bytes());
    deep.extend(1u64.to_le_bytes());
    deep.push(0);
    let b = Builder::new().kv("d", T_ARRAY, &deep).build();
    let err = parse_bytes(&b).err().unwrap().to_string();
    assert!(err.contains("metadata key #0 (`d`) element 0"), "{err}");
    assert!(err.contains("nested more than"), "{err}");
}

#[test]
fn bad_value_types() {
    let b = Builder::new().kv("k", 13, &[0; 8]).build();
    assert_err(&b, "metadata key #0 (`k`) type", "unknown value type 13");
    let b = Builder::new().kv("k", T_BOOL, &[2]).build();
    assert_err(&b, "metadata key #0 (`k`)", "neither 0 nor 1");
    let mut v = 77u32.to_le_bytes().to_vec();
    v.extend(1u64.to_le_bytes());
    let b = Builder::new().kv("k", T_ARRAY, &v).build();
    assert_err(
        &b,
        "metadata key #0 (`k`) array element type",
        "unknown value type 77",
    );
}

#[test]
fn duplicate_key() {
    let b = Builder::new().kv_u32("k", 1).kv_u32("k", 2).build();
    assert_err(&b, "metadata key #1 (`k`)", "duplicate key");
}

#[test]
fn counts_larger_than_the_file() {
    let mut b = valid().build();
    b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_err(&b, "kv_count", "exceeds the cap");
    b[16..24].copy_from_slice(&1000u64.to_le_bytes());
    assert_err(&b, "kv_count", "cannot fit");
    let mut b = valid().build();
    b[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert_err(&b, "tensor_count", "exceeds the cap");
    b[8..16].copy_from_slice(&1000u64.to_le_bytes());
    assert_err(&b, "tensor_count", "cannot fit");
}

#[test]
fn n_dims_5() {
    let b = Builder::new().tensor("t", &[1, 1, 1, 1, 1], 0, 0).build();
    assert_err(&b, "tensor `t` n_dims", "at most 4");
}

#[test]
fn unknown_ggml_type_99() {
    let b = Builder::new().tensor("t", &[32], 99, 0).build();
    assert_err(&b, "tensor `t` type", "unknown ggml type 99");
}

#[test]
fn dims_product_overflow() {
    let b = Builder::new()
        .tensor("t", &[1 << 32, 1 << 32, 2], 0, 0)
        .build();
    assert_err(&b, "tensor `t` dims", "overflows");
    let b = Builder::new().tensor("t", &[u64::MAX], 0, 0).build();
    assert_err(&b, "tensor `t` dims[0]", "int64");
}

#[test]
fn ne0_not_a_multiple_of_block_size() {
    // Q8_0 (type 8) has 32-element blocks.
    let b = Builder::new()
        .tensor("blk.0.attn_q.weight", &[48, 2], 8, 0)
        .data(&[0; 128])
        .build();
    assert_err(
        &b,
        "tensor `blk.0.attn_q.weight` dims[0]",
        "not a multiple of the Q8_0 block size 32",
    );
}

#[test]
fn offset_out_of_range() {
    let b = valid().tensor("c", &[8], 0, 64).build();
    assert_err(&b, "tensor `c` offset", "past the end");
    let b = valid().tensor("c", &[8], 0, u64::MAX - 31).build();
    assert_err(&b, "tensor `c` offset", "past the end");
}

#[test]
fn misaligned_offset() {
    let b = valid().tensor("c", &[1], 0, 4).build();
    assert_err(
        &b,
        "tensor `c` offset",
        "not a multiple of the alignment 32",
    );
}

#[test]
fn overlapping_tensors() {
    let b = Builder::new()
        .tensor("a", &[16], 0, 0)
        .tensor("b", &[8], 0, 32)
        .data(&[0; 64])
        .build();
    assert_err(&b, "tensor `b` offset", "overlap tensor `a`");
}

#[test]
fn duplicate_tensor_name() {
    let b = valid().tensor("a", &[8], 0, 64).data(&[0; 32]).build();
    assert_err(&b, "tensor #2 name", "duplicate tensor name `a`");
}

#[test]
fn alignment_key() {
    for bad in [0u32, 48] {
        let b = valid().kv_u32(ALIGNMENT_KEY, bad).build();
        assert_err(&b, ALIGNMENT_KEY, "power of two");
    }
    let b = valid().kv(ALIGNMENT_KEY, T_STRING, &gguf_str("64")).build();
    assert_err(&b, ALIGNMENT_KEY, "found string");

    // A valid custom alignment moves the data section and is enforced on offsets.
    let mut b = Builder::new()
        .kv_u32(ALIGNMENT_KEY, 64)
        .tensor("a", &[8], 0, 0)
        .tensor("b", &[8], 0, 64)
        .data(&[0; 96]);
    b.alignment = 64;
    let p = parse_bytes(&b.build()).unwrap();
    assert_eq!((p.alignment, p.data_start % 64), (64, 0));
    let b = valid().kv_u32(ALIGNMENT_KEY, 64);
    // Tensor `b` sits at data offset 32, not a multiple of 64.
    assert_err(&b.build(), "tensor `b` offset", "alignment 64");
}

#[test]
fn tensor_bytes_of_a_foreign_info_is_empty_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    std::fs::write(&path, valid().build()).unwrap();
    let f = GgufFile::open(&path).unwrap();
    let mut info = f.tensor("b").unwrap().clone();
    assert_eq!(
        f.dequantize(&info).unwrap(),
        (8..16).map(|i| i as f32).collect::<Vec<_>>()
    );
    info.offset = u64::MAX - 4;
    assert!(f.tensor_bytes(&info).is_empty());
    let err = f.dequantize(&info).unwrap_err().to_string();
    assert!(err.contains("tensor `b` data"), "{err}");
}

#[test]
fn empty_file_is_a_truncated_magic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.gguf");
    std::fs::write(&path, b"").unwrap();
    let err = GgufFile::open(&path).err().unwrap().to_string();
    assert!(err.contains("magic: truncated"), "{err}");
}
