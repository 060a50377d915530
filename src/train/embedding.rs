//! Embedding backward, mirroring `backend::cpu::embedding::embed`: each token's row gradient
//! is added into its row of the table gradient (repeated tokens add up).
//!
//! Legend: T = tokens, C = channels, V = vocabulary.

/// `d_table[tokens[t]] += dx[t]` for every t. `dx` is `[T, C]`, `d_table` `[V, C]`; ids were
/// checked against the vocabulary before the forward ran.
pub fn embedding_backward(dx: &[f32], tokens: &[u32], c: usize, d_table: &mut [f32]) {
    assert_eq!(
        dx.len(),
        tokens.len() * c,
        "embedding_backward: dx is not [T, C]"
    );
    for (row, &t) in dx.chunks_exact(c).zip(tokens) {
        let t = t as usize;
        for (g, &d) in d_table[t * c..(t + 1) * c].iter_mut().zip(row) {
            *g += d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::embedding::embed;
    use crate::backend::cpu::testutil::Rng;
    use crate::train::gradcheck::{check_fd, to64};

    #[test]
    fn repeated_tokens_accumulate_and_match_finite_differences() {
        let mut rng = Rng::new(14);
        let (v, c) = (5, 3);
        let table = rng.vec(v * c, 1.0);
        let tokens = [4u32, 0, 4, 2];
        let dx = rng.vec(tokens.len() * c, 1.0);
        let mut out = vec![0.0; tokens.len() * c];
        embed(&table, c, &tokens, &mut out);
        let mut dt = vec![0.0; v * c];
        embedding_backward(&dx, &tokens, c, &mut dt);
        let dx64 = to64(&dx);
        check_fd("embedding d_table", &dt, &to64(&table), |tab| {
            tokens
                .iter()
                .enumerate()
                .map(|(r, &t)| {
                    (0..c)
                        .map(|j| tab[t as usize * c + j] * dx64[r * c + j])
                        .sum::<f64>()
                })
                .sum()
        });
        // Rows 1 and 3 are never used: exactly zero.
        assert!(dt[c..2 * c]
            .iter()
            .chain(&dt[3 * c..4 * c])
            .all(|&g| g == 0.0));
    }
}
