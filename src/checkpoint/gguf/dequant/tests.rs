//! Driver tests: size checks, unsupported types, and the parallel driver against the sequential
//! reference on every supported type. Per-format values are checked in each kernel's module and
//! against gguf-py in tests/gguf_reader.rs.

use super::*;

/// Deterministic bytes (xorshift), so failures reproduce.
fn noise(n: usize, mut s: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

const SUPPORTED: [GgmlType; 14] = {
    use GgmlType::*;
    [
        F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K,
    ]
};

#[test]
fn supported_list_matches_can_dequantize() {
    for id in 0..64 {
        if let Some(ty) = GgmlType::from_u32(id) {
            assert_eq!(ty.can_dequantize(), SUPPORTED.contains(&ty), "{ty}");
        }
    }
}

#[test]
fn parallel_matches_sequential_bit_for_bit() {
    for (i, ty) in SUPPORTED.into_iter().enumerate() {
        // Past the parallel threshold, with a ragged last task.
        let n_blocks = PARALLEL_MIN_ELEMENTS / ty.block_size() + 3;
        let n = n_blocks * ty.block_size();
        let bytes = noise(n_blocks * ty.type_size(), 0x1234_5678 + i as u64);
        let par = dequantize(ty, &bytes, n).unwrap();
        let seq = dequantize_sequential(ty, &bytes, n).unwrap();
        assert_eq!(par.len(), n);
        // Random bytes include NaN scales: compare bit patterns.
        let differ = par
            .iter()
            .zip(&seq)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(differ, None, "{ty}: first difference at that index");
    }
}

#[test]
fn wrong_byte_count_is_an_error() {
    let err = dequantize(GgmlType::Q8_0, &[0; 33], 32).unwrap_err();
    assert_eq!(err.to_string(), "32 Q8_0 elements need 34 bytes, got 33",);
    assert!(dequantize(GgmlType::F32, &[0; 8], 3).is_err());
    assert!(dequantize_sequential(GgmlType::Q4_K, &[0; 145], 256).is_err());
}

#[test]
fn element_count_not_a_block_multiple() {
    let err = dequantize(GgmlType::Q4_0, &[0; 18], 31).unwrap_err();
    assert!(
        matches!(err, DequantError::NotBlockMultiple { block_size: 32, .. }),
        "{err}"
    );
}

#[test]
fn overflowing_expected_size_is_an_error() {
    let err = check_size(GgmlType::F32, 0, usize::MAX).unwrap_err();
    assert!(err.to_string().contains("more than usize::MAX"), "{err}");
}

#[test]
fn unsupported_types_are_refused() {
    for ty in [
        GgmlType::IQ4_NL,
        GgmlType::Q8_1,
        GgmlType::I32,
        GgmlType::TQ2_0,
    ] {
        let bytes = vec![0; ty.type_size()];
        assert_eq!(
            dequantize(ty, &bytes, ty.block_size()),
            Err(DequantError::Unsupported(ty))
        );
    }
}

#[test]
fn empty_input_is_empty_output() {
    assert_eq!(dequantize(GgmlType::Q6_K, &[], 0), Ok(vec![]));
}
