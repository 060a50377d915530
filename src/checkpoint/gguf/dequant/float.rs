//! Unquantised element types: F32, F16 and BF16, one element per "block" (ggml `ggml_fp16_to_fp32`,
//! `ggml_bf16_to_fp32`). All three convert to f32 exactly.

pub(super) fn f32_block(b: &[u8; 4], y: &mut [f32; 1]) {
    y[0] = f32::from_le_bytes(*b);
}

pub(super) fn f16_block(b: &[u8; 2], y: &mut [f32; 1]) {
    y[0] = half::f16::from_le_bytes(*b).to_f32();
}

/// bf16 is the top half of an f32, so widening is a shift (ggml and gguf-py do the same; it
/// also keeps NaN payloads, which a rounding conversion might not).
pub(super) fn bf16_block(b: &[u8; 2], y: &mut [f32; 1]) {
    y[0] = f32::from_bits(u32::from(u16::from_le_bytes(*b)) << 16);
}

/// An fp16 scale stored little-endian at byte `i` of a block.
#[inline(always)]
pub(super) fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// An f32 as little-endian fp16 bytes, rounded to nearest even (ggml `GGML_FP32_TO_FP16`).
#[inline(always)]
pub(super) fn f16_bytes(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

/// F32 -> F16 "block" for the quantisation driver.
pub(super) fn f16_encode(x: &[f32; 1]) -> [u8; 2] {
    f16_bytes(x[0])
}

/// F32 -> F32 "block" for the quantisation driver.
pub(super) fn f32_encode(x: &[f32; 1]) -> [u8; 4] {
    x[0].to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_known_bit_patterns() {
        let mut y = [0.0f32];
        f16_block(&0x3c00u16.to_le_bytes(), &mut y);
        assert_eq!(y[0], 1.0);
        f16_block(&0xc000u16.to_le_bytes(), &mut y);
        assert_eq!(y[0], -2.0);
        f16_block(&0x0001u16.to_le_bytes(), &mut y);
        assert_eq!(y[0], 2f32.powi(-24), "smallest subnormal half");
        bf16_block(&0x3fc0u16.to_le_bytes(), &mut y);
        assert_eq!(y[0], 1.5);
        f32_block(&(-0.25f32).to_le_bytes(), &mut y);
        assert_eq!(y[0], -0.25);
    }
}
