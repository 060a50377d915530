//! `score DIR` on one two-step lineage: each criterion on the base (when it was evaluated),
//! after the first intervention (the intermediate checkpoint, whose evaluations the child
//! inherited) and after the second, so a user sees what the second step did to the first's
//! criterion.

use serde::Serialize;

use super::compare::Summary;
use super::criteria::{criteria, Criterion, ForgetRule};
use super::lineage::{Intervention, Lineage};
use crate::error::{Error, Result};

#[derive(Clone, Debug, Serialize)]
pub struct StepRow {
    pub criterion: Criterion,
    pub label: String,
    pub base: Option<f64>,
    pub after_a: f64,
    pub after_b: f64,
    /// after_b - after_a: what the second step did.
    pub delta: f64,
    /// The op(s) whose own criterion this is.
    pub own: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Steps {
    pub base: String,
    pub a: Summary,
    pub intermediate: String,
    pub b: Summary,
    pub output: String,
    pub rows: Vec<StepRow>,
}

pub fn steps(l: &Lineage, rule: &ForgetRule) -> Result<Steps> {
    let (sa, sb) = l.pair()?;
    let (a, b) = (
        Summary::of(&Intervention::of(sa)),
        Summary::of(&Intervention::of(sb)),
    );
    let base = l.base_id()?.to_string();
    let mid = criteria(l.evaluations_of(&sa.output), rule);
    if mid.is_empty() {
        return Err(Error::Check(format!(
            "the intermediate checkpoint {} (after `{}`) of `{}` has no evaluations: evaluate it before applying `{}` (the child inherits them)",
            sa.output,
            sa.op,
            l.dir.display(),
            sb.op
        )));
    }
    let fin = criteria(l.evaluations_of(&sb.output), rule);
    let start = criteria(l.evaluations_of(&base), rule);
    let rows: Vec<StepRow> = mid
        .iter()
        .filter_map(|(c, v)| {
            let (_, w) = fin.iter().find(|(d, _)| d.key() == c.key())?;
            let own = [&a, &b]
                .iter()
                .filter(|s| s.category == c.kind.owner())
                .map(|s| s.label.clone())
                .collect();
            Some(StepRow {
                label: c.label(),
                base: start.iter().find(|(d, _)| d.key() == c.key()).map(|x| x.1),
                after_a: *v,
                after_b: *w,
                delta: w - v,
                own,
                criterion: c.clone(),
            })
        })
        .collect();
    if rows.is_empty() {
        return Err(Error::Check(format!(
            "no criterion was evaluated on both the intermediate {} and the final {} of `{}` with the same data file and settings",
            sa.output,
            sb.output,
            l.dir.display()
        )));
    }
    Ok(Steps {
        base,
        a,
        intermediate: sa.output.clone(),
        b,
        output: sb.output.clone(),
        rows,
    })
}
