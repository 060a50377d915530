//! f32 -> Q4_0 in two ways.
//!
//! * [`q4_0_quantize_block`]: ggml-quants.c `quantize_row_q4_0_ref`. The signed value of largest
//!   magnitude `max` sets `d = max / -8`, so that value lands exactly on index 0 (`-8 d`); the
//!   others get `min(15, trunc(x / d + 8.5))`. Same f32 operations as ggml, so the same bytes.
//! * [`q4_0_encode_on_grid`]: for a block whose values already lie on a symmetric 4-bit grid
//!   `s * k`, `k` in `-8..=7` (what `rtn`/`gptq --bits 4 --sym` write: GPTQ's zero point is 8,
//!   Q4_0's offset is 8), it recovers `s` and the `k`, and stores them as they are. ggml's rule
//!   would instead re-fit the block to its signed extreme and move every value whenever that
//!   extreme is `+7 s` rather than `-8 s`. Storing `k` with `d = fp16(s)` is lossless exactly when
//!   `fp16(s) * k == s * k` in f32 for the block's `k` (in particular when `s` is an fp16
//!   number); otherwise each value moves by `|k| * |s - fp16(s)| <= 8 * 2^-11 * s`.

use super::float::{f16_at, f16_bytes};

/// Quantises one block of 32 values into ggml's 18-byte `block_q4_0` (ggml's reference rule).
pub(super) fn q4_0_quantize_block(x: &[f32; 32]) -> [u8; 18] {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut k = [0u8; 32];
    for (q, &v) in k.iter_mut().zip(x) {
        // C's `(int8_t)(x + 8.5f)` truncates toward zero; the argument is in [0.5, 16.5].
        *q = ((v * id + 8.5) as i8).min(15) as u8;
    }
    pack(f16_bytes(d), &k)
}

/// The grid a block was found on: `d` as stored (fp16 bytes) and the indices `q = k + 8`.
pub(super) fn q4_0_encode_on_grid(x: &[f32; 32]) -> Option<[u8; 18]> {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if !amax.is_finite() {
        return None;
    }
    if amax == 0.0 {
        // All zeros lie on every grid; keep ggml's bytes (d = -0.0, every q = 8).
        return Some(q4_0_quantize_block(x));
    }
    // The block's largest |k| is 1..=8; try each, largest first, and one f32 ulp either side
    // (amax / m need not round back to the grid's own s).
    for m in (1..=8u8).rev() {
        let s0 = amax / f32::from(m);
        for s in [s0, s0.next_down(), s0.next_up()] {
            if let Some(block) = try_scale(x, s) {
                return Some(block);
            }
        }
    }
    None
}

/// `Some` when every `x` is exactly `s * k` in f32 with `k` in `-8..=7` and `s` survives fp16
/// storage as a finite nonzero scale. (A block reaching `+8 s` is left to ggml's rule, which
/// picks `d = -s` for it by itself.)
fn try_scale(x: &[f32; 32], s: f32) -> Option<[u8; 18]> {
    if s.is_nan() || s <= 0.0 {
        return None;
    }
    let mut q = [0u8; 32];
    for (qj, &v) in q.iter_mut().zip(x) {
        let k = (v / s).round_ties_even();
        // `s * 0 = +0`: a stored -0.0 is not on the grid bit for bit.
        if !(-8.0..=7.0).contains(&k) || (s * k).to_bits() != v.to_bits() {
            return None;
        }
        *qj = (k as i8 + 8) as u8;
    }
    let d_bytes = f16_bytes(s);
    let d16 = f16_at(&d_bytes, 0);
    if d16 == 0.0 || !d16.is_finite() {
        return None;
    }
    Some(pack(d_bytes, &q))
}

/// ggml's layout: fp16 d, then byte j = q[j] | q[j + 16] << 4.
fn pack(d: [u8; 2], q: &[u8; 32]) -> [u8; 18] {
    let mut b = [0u8; 18];
    b[..2].copy_from_slice(&d);
    for j in 0..16 {
        b[2 + j] = q[j] | (q[j + 16] << 4);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::super::legacy::q4_0_block;
    use super::*;

    fn dequant(b: &[u8; 18]) -> [f32; 32] {
        let mut y = [0.0; 32];
        q4_0_block(b, &mut y);
        y
    }

    fn pseudo(seed: u32) -> [f32; 32] {
        let mut x = [0.0f32; 32];
        let mut s = seed.wrapping_mul(2654435761).max(1);
        for v in &mut x {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            *v = (s as f32 / u32::MAX as f32) * 2.0 - 1.0;
        }
        x
    }

    #[test]
    fn ggml_rule_puts_the_signed_extreme_on_index_zero() {
        let mut x = pseudo(3);
        x[9] = 1.5; // the extreme is positive: d = -1.5/8 and x[9] -> (0 - 8) * d = 1.5
        let b = q4_0_quantize_block(&x);
        let y = dequant(&b);
        assert_eq!(y[9], 1.5);
        let step = 1.5 / 8.0;
        for j in 0..32 {
            assert!((x[j] - y[j]).abs() <= step * 0.5 + 1e-3, "{j}");
        }
    }

    #[test]
    fn a_gptq_sym_block_with_an_fp16_scale_is_stored_losslessly() {
        // s = 0.0234375 = 3 * 2^-7 is an fp16 number; the block's extreme is +7 s, where
        // ggml's rule would re-fit to d = -7s/8 and move most values.
        let s = 0.0234375f32;
        let mut x = [0.0f32; 32];
        for (j, v) in x.iter_mut().enumerate() {
            *v = s * ((j as i32 % 15) - 7) as f32;
        }
        let b = q4_0_encode_on_grid(&x).expect("on grid");
        assert_eq!(dequant(&b).map(f32::to_bits), x.map(f32::to_bits));
        let ggml = dequant(&q4_0_quantize_block(&x));
        assert_ne!(ggml.map(f32::to_bits), x.map(f32::to_bits));
    }

    #[test]
    fn a_grid_with_an_f32_scale_moves_by_at_most_the_fp16_rounding() {
        let s = 0.0123457f32; // not an fp16 number
        let x: [f32; 32] = std::array::from_fn(|j| s * ((j as i32 * 7 % 16) - 8) as f32);
        let b = q4_0_encode_on_grid(&x).expect("on grid");
        let y = dequant(&b);
        let bound = 8.0 * s * 2f32.powi(-11);
        for j in 0..32 {
            assert!((x[j] - y[j]).abs() <= bound, "{j}: {} {}", x[j], y[j]);
        }
        assert_ne!(y.map(f32::to_bits), x.map(f32::to_bits));
    }

    #[test]
    fn a_block_reaching_plus_eight_is_left_to_ggml_which_finds_it() {
        let s = 0.5f32;
        let x: [f32; 32] = std::array::from_fn(|j| s * ((j as i32 % 16) - 7) as f32);
        assert!(q4_0_encode_on_grid(&x).is_none());
        // ggml: d = 4.0 / -8 = -s; equal values (zeros come back as -0.0).
        assert_eq!(dequant(&q4_0_quantize_block(&x)), x);
    }

    #[test]
    fn random_blocks_are_not_on_a_grid() {
        for seed in 1..50 {
            assert!(q4_0_encode_on_grid(&pseudo(seed)).is_none(), "{seed}");
        }
    }

    #[test]
    fn a_zero_block_is_on_the_grid_with_ggml_bytes() {
        let z = [0.0f32; 32];
        assert_eq!(q4_0_encode_on_grid(&z), Some(q4_0_quantize_block(&z)));
    }
}
