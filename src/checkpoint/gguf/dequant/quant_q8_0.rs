//! f32 -> Q8_0, as ggml-quants.c `quantize_row_q8_0_ref`: per block of 32, `d = max|x| / 127`,
//! `q = roundf(x / d)` (half away from zero), `d` stored as fp16. The arithmetic is f32 in ggml's
//! order (`x * (1/d)`, not `x / d`) so the bytes equal llama.cpp's for the same input.

use super::float::f16_bytes;

/// Quantises one block of 32 values into ggml's 34-byte `block_q8_0`.
pub(super) fn q8_0_quantize_block(x: &[f32; 32]) -> [u8; 34] {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut b = [0u8; 34];
    b[..2].copy_from_slice(&f16_bytes(d));
    for (j, &v) in x.iter().enumerate() {
        // |v * id| <= 127 (up to rounding of id), so the cast cannot saturate meaningfully.
        b[2 + j] = ((v * id).round() as i8) as u8;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::super::legacy::q8_0_block;
    use super::*;

    #[test]
    fn extremes_map_to_plus_minus_127_and_round_trip_within_half_a_step() {
        let mut x = [0.0f32; 32];
        for (j, v) in x.iter_mut().enumerate() {
            *v = ((j as f32 * 0.37).sin()) * 3.0;
        }
        x[5] = -4.0;
        let b = q8_0_quantize_block(&x);
        assert_eq!(b[2 + 5] as i8, -127);
        let mut y = [0.0f32; 32];
        q8_0_block(&b, &mut y);
        let step = 4.0 / 127.0;
        for j in 0..32 {
            // Half a step plus the fp16 rounding of d (relative 2^-11) times |q| <= 127.
            let tol = step * 0.5 + 127.0 * step * 2f32.powi(-11);
            assert!((x[j] - y[j]).abs() <= tol, "{j}: {} vs {}", x[j], y[j]);
        }
    }

    #[test]
    fn zero_block_is_zero() {
        let b = q8_0_quantize_block(&[0.0; 32]);
        assert!(b.iter().all(|&v| v == 0));
    }
}
