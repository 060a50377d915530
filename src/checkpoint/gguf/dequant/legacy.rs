//! Legacy 32-element blocks: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, as ggml-quants.c
//! `dequantize_row_q*_ref`. Layouts (ggml-common.h): an fp16 scale `d`, for the `_1` types an fp16
//! minimum `m`, for the 5-bit types 32 high bits `qh`, then the low bits. Nibble `j` of a byte
//! holds element `j` (low nibble) and element `j + 16` (high nibble).
//!
//! Each expression keeps ggml's operation order (`q * d`, then `+ m`) so the f32 results are
//! bit-identical to ggml's scalar path and to gguf-py.

use super::float::f16_at;

/// Q4_0: d, qs[16]; value = (q - 8) * d.
pub(super) fn q4_0_block(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = (i32::from(q & 0x0f) - 8) as f32 * d;
        y[j + 16] = (i32::from(q >> 4) - 8) as f32 * d;
    }
}

/// Q4_1: d, m, qs[16]; value = q * d + m.
pub(super) fn q4_1_block(b: &[u8; 20], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    for j in 0..16 {
        let q = b[4 + j];
        y[j] = f32::from(q & 0x0f) * d + m;
        y[j + 16] = f32::from(q >> 4) * d + m;
    }
}

/// The fifth bits of elements `j` and `j + 16`, already shifted to bit 4.
#[inline(always)]
fn high_bits(qh: u32, j: usize) -> (u8, u8) {
    let h0 = ((qh >> j) << 4) & 0x10;
    let h1 = (qh >> (j + 12)) & 0x10;
    (h0 as u8, h1 as u8)
}

/// Q5_0: d, qh (u32), qs[16]; value = (q - 16) * d.
pub(super) fn q5_0_block(b: &[u8; 22], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for j in 0..16 {
        let q = b[6 + j];
        let (h0, h1) = high_bits(qh, j);
        y[j] = (i32::from((q & 0x0f) | h0) - 16) as f32 * d;
        y[j + 16] = (i32::from((q >> 4) | h1) - 16) as f32 * d;
    }
}

/// Q5_1: d, m, qh (u32), qs[16]; value = q * d + m.
pub(super) fn q5_1_block(b: &[u8; 24], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for j in 0..16 {
        let q = b[8 + j];
        let (h0, h1) = high_bits(qh, j);
        y[j] = f32::from((q & 0x0f) | h0) * d + m;
        y[j + 16] = f32::from((q >> 4) | h1) * d + m;
    }
}

/// Q8_0: d, qs[32] (int8); value = q * d.
pub(super) fn q8_0_block(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for j in 0..32 {
        y[j] = f32::from(b[2 + j] as i8) * d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: [u8; 2] = 0x3c00u16.to_le_bytes(); // fp16 1.0
    const HALF: [u8; 2] = 0x3800u16.to_le_bytes(); // fp16 0.5

    #[test]
    fn q4_0_nibble_order_and_offset() {
        let mut b = [0u8; 18];
        b[..2].copy_from_slice(&HALF);
        b[2] = 0xf0; // element 0 -> q 0, element 16 -> q 15
        b[17] = 0x18; // element 15 -> q 8, element 31 -> q 1
        let mut y = [0.0; 32];
        q4_0_block(&b, &mut y);
        assert_eq!(y[0], -4.0);
        assert_eq!(y[16], 3.5);
        assert_eq!(y[15], 0.0);
        assert_eq!(y[31], -3.5);
        assert_eq!(y[1], -4.0, "nibble 0 is q = 0");
    }

    #[test]
    fn q4_1_adds_the_minimum() {
        let mut b = [0u8; 20];
        b[..2].copy_from_slice(&HALF);
        b[2..4].copy_from_slice(&ONE);
        b[4] = 0x3f;
        let mut y = [0.0; 32];
        q4_1_block(&b, &mut y);
        assert_eq!((y[0], y[16], y[1]), (8.5, 2.5, 1.0));
    }

    #[test]
    fn q5_high_bits_come_from_qh() {
        let mut b = [0u8; 22];
        b[..2].copy_from_slice(&ONE);
        // Bit 0 -> element 0, bit 16 -> element 16, bit 31 -> element 31.
        b[2..6].copy_from_slice(&(1u32 | 1 << 16 | 1 << 31).to_le_bytes());
        b[6] = 0x21; // element 0 low = 1, element 16 low = 2
        let mut y = [0.0; 32];
        q5_0_block(&b, &mut y);
        assert_eq!(y[0], 1.0); // 17 - 16
        assert_eq!(y[16], 2.0); // 18 - 16
        assert_eq!(y[31], 0.0); // 16 - 16
        assert_eq!(y[1], -16.0);

        let mut b1 = [0u8; 24];
        b1[..2].copy_from_slice(&ONE);
        b1[2..4].copy_from_slice(&HALF);
        b1[4..8].copy_from_slice(&(1u32 << 15).to_le_bytes());
        b1[8 + 15] = 0x0f;
        let mut y1 = [0.0; 32];
        q5_1_block(&b1, &mut y1);
        assert_eq!(y1[15], 31.5);
        assert_eq!(y1[31], 0.5);
    }

    #[test]
    fn q8_0_is_signed() {
        let mut b = [0u8; 34];
        b[..2].copy_from_slice(&HALF);
        b[2] = 0x81; // -127
        b[33] = 127;
        let mut y = [0.0; 32];
        q8_0_block(&b, &mut y);
        assert_eq!((y[0], y[31], y[1]), (-63.5, 63.5, 0.0));
    }
}
