//! The shared uniform quantisation grid: GPTQ's `Quantizer` (IST-DASLab/gptq `quant.py`, the
//! same in AutoGPTQ) and AWQ's `pseudo_quantize_tensor` (mit-han-lab/llm-awq
//! `awq/quantize/quantizer.py`), per group of consecutive input columns of a `[out, in]` row.
//!
//! Arithmetic is f32 in the reference's order (`x / scale`, round, `+ zero`, clamp,
//! `scale * (q - zero)`), with round-half-to-even as `torch.round`, so that grid indices agree
//! bit for bit with a PyTorch/NumPy f32 port.

use super::{check_finite, tensor_err};
use crate::backend::Tensor;
use crate::error::{Error, Result};

/// Which zero-point/scale rule fits a group (algorithms.md section 13 item 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grid {
    /// GPTQ asymmetric: range forced to contain 0, `zero = round(-xmin/scale)`.
    GptqAsym,
    /// GPTQ symmetric: `xmax = max(|xmin|, xmax)`, `xmin = -xmax` when `xmin < 0`,
    /// `zero = (maxq + 1) / 2` (8 for 4 bits).
    GptqSym,
    /// AWQ (`zero_point=True`): raw group min/max, `scale = max(max - min, 1e-5) / maxq`,
    /// `zero = clamp(-round(min/scale), 0, maxq)`.
    Awq,
}

/// Bits, group size and grid of a quantiser. `group` counts consecutive input columns; `-1`
/// is the whole row. When `in` is not a multiple of `group`, the last group is shorter (as
/// GPTQ allows; AWQ's reference asserts divisibility, we do not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantSpec {
    pub bits: u32,
    pub group: i64,
    pub grid: Grid,
}

impl QuantSpec {
    /// Validated constructor: bits in 2..=8, group `-1` or positive.
    pub fn new(bits: u32, group: i64, grid: Grid) -> Result<Self> {
        validate_bits(bits)?;
        validate_group(group)?;
        Ok(QuantSpec { bits, group, grid })
    }

    pub fn validate(&self) -> Result<()> {
        validate_bits(self.bits)?;
        validate_group(self.group)
    }

    /// The largest grid index, `2^bits - 1`.
    pub fn maxq(&self) -> f32 {
        ((1u32 << self.bits) - 1) as f32
    }

    /// Columns per group for a row of `cols` (a group wider than the row is the whole row).
    pub fn group_width(&self, cols: usize) -> usize {
        if self.group < 0 {
            cols
        } else {
            (self.group as usize).min(cols)
        }
    }

    /// Number of groups per row, the last possibly shorter.
    pub fn n_groups(&self, cols: usize) -> usize {
        cols.div_ceil(self.group_width(cols).max(1))
    }

    /// Fits a group's parameters to `values` (one row's columns of the group).
    pub fn fit(&self, values: &[f32]) -> GroupParams {
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for &v in values {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        GroupParams::from_range(self.grid, self.maxq(), lo, hi)
    }
}

pub fn validate_bits(bits: u32) -> Result<()> {
    if !(2..=8).contains(&bits) {
        return Err(Error::usage(
            "--bits",
            format!("bits must be in 2..=8, got {bits}"),
        ));
    }
    Ok(())
}

pub fn validate_group(group: i64) -> Result<()> {
    if group == 0 || group < -1 {
        return Err(Error::usage(
            "--group-size",
            format!("group size must be -1 (whole row) or positive, got {group}"),
        ));
    }
    Ok(())
}

/// `x.round_ties_even()` (torch.round) without the libm call that the baseline x86-64 target
/// makes of it (no SSE4.1 `roundss`; LLVM even hoists that call out of a guarding branch).
/// Adding and subtracting 2²³ with x's sign leaves the nearest integer, ties to even, for
/// |x| < 2²³; the sign is put back so that -0.3 gives -0.0 as `rint` does. Larger magnitudes
/// are integers already; NaN stays NaN.
#[inline]
pub fn round_half_even(x: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    let t = TWO_23.copysign(x);
    let r = ((x + t) - t).copysign(x);
    if x.abs() < TWO_23 {
        r
    } else {
        x
    }
}

/// Scale and zero point of one (row, group), and the grid's top index.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupParams {
    pub scale: f32,
    pub zero: f32,
    pub maxq: f32,
}

impl GroupParams {
    /// Parameters from a group's raw minimum and maximum (`lo <= hi`, finite).
    pub fn from_range(grid: Grid, maxq: f32, lo: f32, hi: f32) -> Self {
        match grid {
            Grid::GptqAsym | Grid::GptqSym => {
                // quant.py `find_params`: the range always contains 0.
                let mut xmin = lo.min(0.0);
                let mut xmax = hi.max(0.0);
                if grid == Grid::GptqSym {
                    xmax = xmin.abs().max(xmax);
                    if xmin < 0.0 {
                        xmin = -xmax;
                    }
                }
                if xmin == 0.0 && xmax == 0.0 {
                    xmin = -1.0;
                    xmax = 1.0;
                }
                let scale = (xmax - xmin) / maxq;
                let zero = if grid == Grid::GptqSym {
                    (maxq + 1.0) / 2.0
                } else {
                    round_half_even(-xmin / scale)
                };
                GroupParams { scale, zero, maxq }
            }
            Grid::Awq => {
                let scale = (hi - lo).max(1e-5) / maxq;
                let zero = (-round_half_even(lo / scale)).clamp(0.0, maxq);
                GroupParams { scale, zero, maxq }
            }
        }
    }

    /// Grid index `clamp(round(x/scale) + zero, 0, maxq)`.
    #[inline]
    pub fn index(&self, x: f32) -> u8 {
        self.index_f32(x) as u8
    }

    #[inline]
    fn index_f32(&self, x: f32) -> f32 {
        (round_half_even(x / self.scale) + self.zero).clamp(0.0, self.maxq)
    }

    /// The value of grid index `q`: `scale * (q - zero)`.
    #[inline]
    pub fn dequant(&self, q: u8) -> f32 {
        self.scale * (q as f32 - self.zero)
    }

    /// Quantise-dequantise one value.
    #[inline]
    pub fn quantize(&self, x: f32) -> f32 {
        self.scale * (self.index_f32(x) - self.zero)
    }

    /// Quantise-dequantise a column slice in place.
    pub fn quantize_slice(&self, xs: &mut [f32]) {
        for x in xs {
            *x = self.quantize(*x);
        }
    }
}

/// A quantised weight: the dequantised matrix plus what a packer needs.
#[derive(Clone, Debug)]
pub struct QuantizedWeight {
    /// Dequantised ("fake-quant") weight, `[out, in]`, original column order.
    pub weight: Tensor,
    /// Grid index of every weight, `[out, in]` row-major, original column order.
    pub q: Vec<u8>,
    /// Per (row, group) scale, `[out, n_groups]` row-major.
    pub scales: Vec<f32>,
    /// Per (row, group) zero point, `[out, n_groups]` row-major.
    pub zeros: Vec<f32>,
    pub n_groups: usize,
    /// Group of each input column (`[in]`): `j / group` without act-order, the permuted
    /// position's group with it (AutoGPTQ's `g_idx`).
    pub g_idx: Vec<u32>,
}

impl QuantizedWeight {
    /// The parameters used for weight `(r, c)`.
    pub fn params(&self, r: usize, c: usize, maxq: f32) -> GroupParams {
        let k = r * self.n_groups + self.g_idx[c] as usize;
        GroupParams {
            scale: self.scales[k],
            zero: self.zeros[k],
            maxq,
        }
    }
}

/// Checks a group-parameter table (e.g. AWQ clip values) for shape and finiteness.
pub(crate) fn check_table(name: &str, data: &[f32], len: usize) -> Result<()> {
    if data.len() != len {
        return Err(tensor_err(
            name,
            format!("expected {len} values, got {}", data.len()),
        ));
    }
    check_finite(name, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gptq_sym_4bit_grid_matches_reference_quirks() {
        // Row max 1.5, min -0.5 → sym range [-1.5, 1.5], scale 0.2, zero 8.
        let spec = QuantSpec::new(4, -1, Grid::GptqSym).unwrap();
        let p = spec.fit(&[1.5, -0.5, 0.3]);
        assert_eq!(p.zero, 8.0);
        assert!((p.scale - 0.2).abs() < 1e-7);
        // +xmax maps to 7.5 → round half even → 8 → index 16 clamped to 15 → 7·scale.
        assert_eq!(p.index(1.5), 15);
        assert!((p.quantize(1.5) - 1.4).abs() < 1e-6);
        assert_eq!(p.index(-1.5), 0);
        // An all-non-negative row keeps xmin = 0 (no mirroring): scale = xmax/15, zero still 8.
        let p = spec.fit(&[0.0, 1.5]);
        assert!((p.scale - 0.1).abs() < 1e-7);
        assert_eq!(p.zero, 8.0);
    }

    #[test]
    fn round_half_even_is_rint_bit_for_bit() {
        let mut xs = vec![
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.49999997,
            -0.49999997,
        ];
        xs.extend([
            4_194_303.5,
            4_194_304.5,
            -4_194_304.5,
            8_388_607.5,
            1e30,
            -1e30,
        ]);
        xs.extend([
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
        ]);
        // Every half-integer and its neighbours over a wide range, then pseudo-random values.
        for k in -20_000i32..20_000 {
            let h = k as f32 + 0.5;
            xs.extend([
                h,
                f32::from_bits(h.to_bits() + 1),
                f32::from_bits(h.to_bits() - 1),
            ]);
        }
        let mut state = 0x9e37_79b9u32;
        for _ in 0..200_000 {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let v = f32::from_bits(state);
            if v.is_finite() {
                xs.push(v);
                xs.push(v * 1e-30); // magnitudes near the grid's range
            }
        }
        for &x in &xs {
            let (a, b) = (round_half_even(x), x.round_ties_even());
            assert_eq!(a.to_bits(), b.to_bits(), "x = {x:e}: {a:e} vs {b:e}");
        }
        assert!(round_half_even(f32::NAN).is_nan());
    }

    #[test]
    fn gptq_asym_forces_zero_into_range_and_rounds_half_even() {
        let spec = QuantSpec::new(2, -1, Grid::GptqAsym).unwrap();
        // min 0.5 → xmin 0, xmax 3 → scale 1, zero 0.
        let p = spec.fit(&[0.5, 3.0]);
        assert_eq!((p.scale, p.zero), (1.0, 0.0));
        // 0.5 → round half even → 0; 1.5 → 2; 2.5 → 2.
        assert_eq!(p.index(0.5), 0);
        assert_eq!(p.index(1.5), 2);
        assert_eq!(p.index(2.5), 2);
        // All-zero group → [-1, 1].
        let p = spec.fit(&[0.0, 0.0]);
        assert!((p.scale - 2.0 / 3.0).abs() < 1e-7);
        assert_eq!(p.zero, 2.0);
    }

    #[test]
    fn awq_grid_uses_raw_range_and_clamps() {
        let spec = QuantSpec::new(4, 128, Grid::Awq).unwrap();
        let p = spec.fit(&[0.5, 2.0]);
        assert!((p.scale - 0.1).abs() < 1e-7);
        // zero = clamp(-round(5), 0, 15) = 0 (raw min, not forced to 0).
        assert_eq!(p.zero, 0.0);
        assert_eq!(p.index(0.5), 5);
        // Constant group: scale clamped at 1e-5/15.
        let p = spec.fit(&[1.0, 1.0]);
        assert!((p.scale - 1e-5 / 15.0).abs() < 1e-12);
        assert!(p.quantize(1.0).is_finite());
    }

    #[test]
    fn at_most_two_pow_bits_values_per_group() {
        let mut rng = crate::interventions::compress::TestRng::new(1);
        for bits in 2..=8 {
            for grid in [Grid::GptqAsym, Grid::GptqSym, Grid::Awq] {
                let spec = QuantSpec::new(bits, -1, grid).unwrap();
                let xs: Vec<f32> = (0..1000).map(|_| rng.normal()).collect();
                let p = spec.fit(&xs);
                let mut vals: Vec<u32> = xs.iter().map(|&x| p.quantize(x).to_bits()).collect();
                vals.sort();
                vals.dedup();
                assert!(vals.len() <= 1 << bits, "{grid:?} {bits}: {}", vals.len());
                for &x in &xs {
                    assert_eq!(p.dequant(p.index(x)), p.quantize(x));
                }
            }
        }
    }

    #[test]
    fn validation() {
        assert!(QuantSpec::new(1, -1, Grid::GptqSym).is_err());
        assert!(QuantSpec::new(9, -1, Grid::GptqSym).is_err());
        assert!(QuantSpec::new(4, 0, Grid::GptqSym).is_err());
        assert!(QuantSpec::new(4, -2, Grid::GptqSym).is_err());
        let s = QuantSpec::new(4, 32, Grid::Awq).unwrap();
        assert_eq!((s.group_width(80), s.n_groups(80)), (32, 3));
        assert_eq!((s.group_width(20), s.n_groups(20)), (20, 1));
    }
}
