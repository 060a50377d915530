//! Token embedding: gathers rows of the `[V, C]` table.

/// Writes the embedding rows of `tokens` into `out` (`[T, C]`). The caller has checked every
/// id against the vocabulary (ids come from user input; see `model::forward`).
pub fn embed(table: &[f32], c: usize, tokens: &[u32], out: &mut [f32]) {
    assert_eq!(out.len(), tokens.len() * c, "embed: out is not [T, C]");
    for (row, &t) in out.chunks_exact_mut(c).zip(tokens) {
        let t = t as usize;
        row.copy_from_slice(&table[t * c..(t + 1) * c]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_rows() {
        let table: Vec<f32> = (0..15).map(|v| v as f32 + 0.5).collect(); // V = 5, C = 3
        let mut out = vec![0.0; 9];
        embed(&table, 3, &[4, 0, 4], &mut out);
        assert_eq!(out, [12.5, 13.5, 14.5, 0.5, 1.5, 2.5, 12.5, 13.5, 14.5]);
    }
}
