//! K-quants: 256-element super-blocks split into 16- or 32-element sub-blocks with their own
//! quantised scales, as ggml-quants.c `dequantize_row_q{2,3,4,5,6,8}_K`. Layouts: ggml-common.h
//! `block_q*_K`. Operation order follows ggml (`d * sc` first, then `* q`, then `- m`), so the f32
//! results match ggml's scalar path and gguf-py bit for bit.

use super::float::f16_at;

/// Unpacks sub-block `j`'s 6-bit scale and 6-bit minimum from the 12-byte `scales` field of
/// Q4_K/Q5_K (ggml `get_scale_min_k4`): bytes 0-3 hold scales 0-3, bytes 4-7 minimums 0-3, and
/// for sub-blocks 4-7 the low four bits sit in bytes 8-11 with the top two bits borrowed from
/// the high bits of bytes 0-7.
#[inline(always)]
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q2_K: scales[16] (low nibble scale, high nibble min), qs[64] (2-bit), d, dmin.
pub(super) fn q2_k_block(b: &[u8; 84], y: &mut [f32; 256]) {
    let d = f16_at(b, 80);
    let min = f16_at(b, 82);
    let mut is = 0;
    let mut yi = 0;
    for half in 0..2 {
        let q = 16 + 32 * half;
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let sc = b[is];
                is += 1;
                let dl = d * f32::from(sc & 0x0f);
                let ml = min * f32::from(sc >> 4);
                for l in 0..16 {
                    let v = (b[q + 16 * part + l] >> shift) & 3;
                    y[yi] = dl * f32::from(v) - ml;
                    yi += 1;
                }
            }
        }
    }
}

/// The 16 signed 6-bit scales of Q3_K: low four bits from bytes 0-7 (low nibbles first), high
/// two bits from bytes 8-11, minus 32.
fn q3_k_scales(s: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = (s[i % 8] >> (4 * (i / 8))) & 0x0f;
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = ((low | (high << 4)) as i8) - 32;
    }
    out
}

/// Q3_K: hmask[32] (third bit, subtract 4 where clear), qs[64] (2-bit), scales[12], d.
pub(super) fn q3_k_block(b: &[u8; 110], y: &mut [f32; 256]) {
    let d = f16_at(b, 108);
    let scales = q3_k_scales(&b[96..108]);
    let mut is = 0;
    let mut yi = 0;
    let mut mask = 1u8;
    for half in 0..2 {
        let q = 32 + 32 * half;
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let dl = d * f32::from(scales[is]);
                is += 1;
                for l in 0..16 {
                    let i = 16 * part + l;
                    let low = ((b[q + i] >> shift) & 3) as i8;
                    let sub = if b[i] & mask != 0 { 0 } else { 4 };
                    y[yi] = dl * f32::from(low - sub);
                    yi += 1;
                }
            }
            mask <<= 1;
        }
    }
}

/// Q4_K: d, dmin, scales[12] (6-bit scale/min pairs), qs[128]; 8 sub-blocks of 32.
pub(super) fn q4_k_block(b: &[u8; 144], y: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    let min = f16_at(b, 2);
    let scales = &b[4..16];
    for j in 0..4 {
        let q = 16 + 32 * j;
        let (sc1, m1) = scale_min_k4(2 * j, scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
        let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
        for l in 0..32 {
            y[64 * j + l] = d1 * f32::from(b[q + l] & 0x0f) - m1;
            y[64 * j + 32 + l] = d2 * f32::from(b[q + l] >> 4) - m2;
        }
    }
}

/// Q5_K: d, dmin, scales[12], qh[32] (fifth bits), qs[128]; 8 sub-blocks of 32.
pub(super) fn q5_k_block(b: &[u8; 176], y: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    let min = f16_at(b, 2);
    let scales = &b[4..16];
    for j in 0..4 {
        let q = 48 + 32 * j;
        let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
        let (sc1, m1) = scale_min_k4(2 * j, scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
        let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
        for l in 0..32 {
            let qh = b[16 + l];
            let h1 = if qh & u1 != 0 { 16 } else { 0 };
            let h2 = if qh & u2 != 0 { 16 } else { 0 };
            y[64 * j + l] = d1 * f32::from((b[q + l] & 0x0f) + h1) - m1;
            y[64 * j + 32 + l] = d2 * f32::from((b[q + l] >> 4) + h2) - m2;
        }
    }
}

/// Q6_K: ql[128] (low four bits), qh[64] (top two bits), scales[16] (int8), d; value =
/// d * scale * (q - 32) over 16 sub-blocks of 16.
pub(super) fn q6_k_block(b: &[u8; 210], y: &mut [f32; 256]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let (ql, qh, sc, out) = (64 * half, 128 + 32 * half, 192 + 8 * half, 128 * half);
        for l in 0..32 {
            let is = l / 16;
            let h = b[qh + l];
            let q1 = ((b[ql + l] & 0x0f) | ((h & 3) << 4)) as i8 - 32;
            let q2 = ((b[ql + l + 32] & 0x0f) | (((h >> 2) & 3) << 4)) as i8 - 32;
            let q3 = ((b[ql + l] >> 4) | (((h >> 4) & 3) << 4)) as i8 - 32;
            let q4 = ((b[ql + l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i8 - 32;
            let s = |k: usize| d * f32::from(b[sc + is + k] as i8);
            y[out + l] = s(0) * f32::from(q1);
            y[out + l + 32] = s(2) * f32::from(q2);
            y[out + l + 64] = s(4) * f32::from(q3);
            y[out + l + 96] = s(6) * f32::from(q4);
        }
    }
}

/// Q8_K: d (f32), qs[256] (int8), bsums[16] (only used by dot products); value = d * q.
pub(super) fn q8_k_block(b: &[u8; 292], y: &mut [f32; 256]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (j, v) in y.iter_mut().enumerate() {
        *v = d * f32::from(b[4 + j] as i8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: [u8; 2] = 0x3c00u16.to_le_bytes(); // fp16 1.0

    #[test]
    fn scale_min_k4_unpacks_both_halves() {
        let mut s = [0u8; 12];
        s[0] = 0b11_000101; // scale 0 = 5, top bits of scale 4 = 3
        s[4] = 0b10_000111; // min 0 = 7, top bits of min 4 = 2
        s[8] = 0x9a; // scale 4 low = 0xa, min 4 low = 0x9
        assert_eq!(scale_min_k4(0, &s), (5, 7));
        assert_eq!(scale_min_k4(4, &s), (0x3a, 0x29));
    }

    #[test]
    fn q3_k_scales_unpack_low_and_high_bits() {
        let mut s = [0u8; 12];
        s[0] = 0x21; // scale 0 low = 1, scale 8 low = 2
        s[8] = 0b11_00_00_01; // scale 0 high = 1, scale 12 high = 3
        let sc = q3_k_scales(&s);
        assert_eq!(sc[0], (1 | 1 << 4) - 32);
        assert_eq!(sc[8], 2 - 32);
        assert_eq!(sc[12], (3 << 4) - 32);
        assert_eq!(sc[1], -32);
    }

    #[test]
    fn q6_k_reassembles_six_bits() {
        let mut b = [0u8; 210];
        b[208..210].copy_from_slice(&ONE);
        for s in &mut b[192..208] {
            *s = 1;
        }
        b[0] = 0x0f; // element 0 low = 15; element 64 low = 0
        b[128] = 0b11_00_00_10; // element 0 high = 2, element 96 high = 3
        let mut y = [0.0; 256];
        q6_k_block(&b, &mut y);
        assert_eq!(y[0], f32::from((15 | 2 << 4) as i8 - 32));
        assert_eq!(y[64], -32.0);
        assert_eq!(y[96], f32::from((3 << 4) as i8 - 32));
    }

    #[test]
    fn q8_k_scales_signed_values() {
        let mut b = [0u8; 292];
        b[..4].copy_from_slice(&0.5f32.to_le_bytes());
        b[4] = 0xfe; // -2
        b[259] = 100;
        let mut y = [0.0; 256];
        q8_k_block(&b, &mut y);
        assert_eq!((y[0], y[255], y[1]), (-1.0, 50.0, 0.0));
    }
}
