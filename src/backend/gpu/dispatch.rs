//! Dispatch sizing: a flat workgroup count becomes an `[x, y, z]` grid within the adapter's
//! per-dimension limit (65,535 on every WebGPU adapter). Kernels rebuild the flat workgroup id
//! as `x + y * nx + z * nx * ny` (from `@builtin(num_workgroups)`) and bounds-check it, since
//! the grid may hold a few more workgroups than asked for.

use super::{GpuError, GpuResult};

/// A dispatch grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub x: u32,
    pub y: u32,
    pub z: u32,
}

impl Grid {
    pub fn total(&self) -> u64 {
        u64::from(self.x) * u64::from(self.y) * u64::from(self.z)
    }
}

/// The grid for `workgroups` workgroups with at most `max_per_dim` per dimension. The spill
/// goes into y and then z, and x is shrunk to the smallest value that still covers the count,
/// so at most `y * z - 1` surplus workgroups run (each returns at its bounds check).
pub fn grid(workgroups: u64, max_per_dim: u32) -> GpuResult<Grid> {
    let max = u64::from(max_per_dim.max(1));
    if workgroups == 0 {
        return Ok(Grid { x: 0, y: 1, z: 1 });
    }
    if workgroups > max * max * max {
        return Err(GpuError::shape(
            "dispatch",
            format!("{workgroups} workgroups exceed the adapter's {max}^3 grid"),
        ));
    }
    let rows = workgroups.div_ceil(max); // y * z needed with x at its maximum
    let z = rows.div_ceil(max);
    let y = rows.div_ceil(z);
    let x = workgroups.div_ceil(y * z);
    // Each factor is at most `max`, which came from a u32.
    Ok(Grid {
        x: x as u32,
        y: y as u32,
        z: z as u32,
    })
}

/// Workgroups needed for `items` invocations at `per_group` each.
pub fn groups_for(items: u64, per_group: u32) -> u64 {
    items.div_ceil(u64::from(per_group.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 65_535;

    fn check(n: u64) {
        let g = grid(n, MAX).unwrap();
        assert!(g.x <= MAX && g.y <= MAX && g.z <= MAX, "{n}: {g:?}");
        assert!(g.total() >= n, "{n}: {g:?} does not cover");
        // The surplus is under one x-row per (y, z) pair: the shader's bounds check absorbs it.
        assert!(
            g.total() - n < u64::from(g.y) * u64::from(g.z),
            "{n}: {g:?}"
        );
    }

    #[test]
    fn stays_within_the_limit_near_its_edges() {
        let m = u64::from(MAX);
        for n in [
            1,
            2,
            m - 1,
            m,
            m + 1,
            2 * m,
            2 * m + 1,
            m * m - 1,
            m * m,
            m * m + 1,
            m * m * 7 + 3,
            m * m * m,
        ] {
            check(n);
        }
        assert_eq!(grid(m, MAX).unwrap(), Grid { x: MAX, y: 1, z: 1 });
        assert_eq!(grid(m + 1, MAX).unwrap().y, 2);
        assert!(grid(m * m + 1, MAX).unwrap().z >= 2);
        assert!(grid(m * m * m + 1, MAX).is_err());
        assert_eq!(grid(0, MAX).unwrap().total(), 0);
    }

    #[test]
    fn respects_a_small_limit() {
        for n in 1..=343 {
            let g = grid(n, 7).unwrap();
            assert!(
                g.x <= 7 && g.y <= 7 && g.z <= 7 && g.total() >= n,
                "{n}: {g:?}"
            );
        }
        assert!(grid(344, 7).is_err());
        assert_eq!(groups_for(65, 64), 2);
        assert_eq!(groups_for(64, 64), 1);
    }
}
