//! The study's composability metrics (`../shared/reference/composability.md` §1), computed from
//! per-order mean scores: the error of one criterion, the order-free error
//! E_OF = min(e(A then B), e(B then A)) and the order sensitivity E_OS = |s(A then B) - s(B then A)|.
//! No normalisation to the base model or to chance, as in the study.

use serde::Serialize;

/// How a criterion's score turns into an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Accuracies and F1 (edit success, generalisation, locality, utility): e = 1 - s.
    HigherIsBetter,
    /// Unlearning's forget benchmark: e = s, the accuracy itself (chance is 0.25 for 4-way MC).
    ErrorIsScore,
    /// Not in [0, 1] (perplexity): shown beside the criteria, no E_OF/E_OS.
    Unbounded,
}

/// e_c for one score, `None` for an unbounded criterion.
pub fn error(score: f64, dir: Direction) -> Option<f64> {
    match dir {
        Direction::HigherIsBetter => Some(1.0 - score),
        Direction::ErrorIsScore => Some(score),
        Direction::Unbounded => None,
    }
}

/// E_OF: the best-case error over the two orders.
pub fn order_free_error(s_ab: f64, s_ba: f64, dir: Direction) -> Option<f64> {
    Some(error(s_ab, dir)?.min(error(s_ba, dir)?))
}

/// E_OS: how much the order changes the score (sign-free, symmetric in A and B).
pub fn order_sensitivity(s_ab: f64, s_ba: f64, dir: Direction) -> Option<f64> {
    match dir {
        Direction::Unbounded => None,
        _ => Some((s_ab - s_ba).abs()),
    }
}

/// The mean of the scores of one order (edit batches, seeds), `None` for none.
pub fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// Both metrics from each order's lineage scores: each order is averaged first, then min/abs,
/// as the study's notebook does (group by composition, mean over edit sets, then MCE/OI).
pub fn from_groups(ab: &[f64], ba: &[f64], dir: Direction) -> Option<(f64, f64, f64, f64)> {
    let (s_ab, s_ba) = (mean(ab)?, mean(ba)?);
    Some((
        s_ab,
        s_ba,
        order_free_error(s_ab, s_ba, dir)?,
        order_sensitivity(s_ab, s_ba, dir)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rounding in the study's printed tables is 2 decimals; the metric itself is exact here,
    /// so a tolerance far below that print precision still catches a wrong formula.
    const TOL: f64 = 1e-12;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() <= TOL, "{a} vs {b}");
    }

    #[test]
    fn memit_wanda_edit_success_worked_example() {
        // composability.md §1: MEMIT->Wanda(0.25) edit success .70, Wanda(0.25)->MEMIT .95.
        let d = Direction::HigherIsBetter;
        close(order_free_error(0.70, 0.95, d).unwrap(), 0.05);
        close(order_sensitivity(0.70, 0.95, d).unwrap(), 0.25);
        // Symmetric in the order of the arguments.
        close(order_free_error(0.95, 0.70, d).unwrap(), 0.05);
        close(order_sensitivity(0.95, 0.70, d).unwrap(), 0.25);
        // The 4-dp anchors (.0541, .2448) follow from scores .7011 and .9459.
        close(order_free_error(0.7011, 0.9459, d).unwrap(), 0.0541);
        close(order_sensitivity(0.7011, 0.9459, d).unwrap(), 0.2448);
    }

    #[test]
    fn rmu_gptq_wmdp_worked_example() {
        // composability.md §1: RMU->GPTQ(4) Avg-WMDP .27, GPTQ(4)->RMU .45; e = accuracy.
        let d = Direction::ErrorIsScore;
        close(order_free_error(0.27, 0.45, d).unwrap(), 0.27);
        close(order_sensitivity(0.27, 0.45, d).unwrap(), 0.18);
        // Read as a higher-is-better criterion the same scores would give .55: the direction
        // matters.
        close(
            order_free_error(0.27, 0.45, Direction::HigherIsBetter).unwrap(),
            0.55,
        );
    }

    #[test]
    fn groups_are_averaged_before_min_and_abs() {
        // Two edit batches per order: means .70 and .95 as in the worked example, although
        // min/abs over the per-batch values would give other numbers (min error .0, |d| up to .45).
        let ab = [0.60, 0.80];
        let ba = [1.00, 0.90];
        let (s_ab, s_ba, of, os) = from_groups(&ab, &ba, Direction::HigherIsBetter).unwrap();
        close(s_ab, 0.70);
        close(s_ba, 0.95);
        close(of, 0.05);
        close(os, 0.25);
        assert!(from_groups(&[], &ba, Direction::HigherIsBetter).is_none());
    }

    #[test]
    fn perplexity_has_no_composability_error() {
        assert_eq!(error(18.6, Direction::Unbounded), None);
        assert_eq!(order_free_error(18.6, 20.0, Direction::Unbounded), None);
        assert_eq!(order_sensitivity(18.6, 20.0, Direction::Unbounded), None);
    }
}
