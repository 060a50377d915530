//! Scoring a composition: pair the A-then-B and B-then-A lineages, match the criteria evaluated
//! on both final checkpoints (same task, data hash and settings), average each order over its
//! lineages, then E_OF and E_OS per criterion (metrics.rs).

use serde::Serialize;
use serde_json::Value;

use super::criteria::{criteria, Criterion, ForgetRule};
use super::lineage::{pair_groups, Intervention, Lineage};
use super::metrics::{from_groups, mean, Direction};
use crate::error::{Error, Result};

/// An intervention as the output shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub op: String,
    pub category: String,
    pub params: Value,
    /// A short label: the op and its strength (`wanda 0.25`, `rtn 4-bit`).
    pub label: String,
}

impl Summary {
    pub fn of(i: &Intervention) -> Self {
        Summary {
            op: i.op.clone(),
            category: i.category.clone(),
            params: i.params.clone(),
            label: label(i),
        }
    }
}

/// The compression strength recorded in a compress step's params: sparsity or bits.
pub fn strength(params: &Value) -> Option<(&'static str, f64)> {
    if let Some(s) = params.pointer("/prune/sparsity").and_then(Value::as_f64) {
        return Some(("sparsity", s));
    }
    params
        .pointer("/quant/bits")
        .and_then(Value::as_f64)
        .map(|b| ("bits", b))
}

pub fn label(i: &Intervention) -> String {
    match strength(&i.params) {
        Some(("sparsity", s)) => format!("{} {s}", i.op),
        Some((_, b)) => format!("{} {b}-bit", i.op),
        None => i.op.clone(),
    }
}

/// One criterion of a composition.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub criterion: Criterion,
    pub label: String,
    pub direction: Direction,
    /// Mean score of each order over its lineages.
    pub s_ab: f64,
    pub s_ba: f64,
    pub e_of: Option<f64>,
    pub e_os: Option<f64>,
    /// The op(s) whose own criterion this is.
    pub own: Vec<String>,
    /// Lineage pairs the means are over.
    pub pairs: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Score {
    pub base: String,
    pub a: Summary,
    pub b: Summary,
    /// Final checkpoint ids of each order.
    pub ab: Vec<String>,
    pub ba: Vec<String>,
    pub rows: Vec<Row>,
    /// Criteria left out, and why.
    pub notes: Vec<String>,
}

/// A criterion matched across pairs: group key, criterion, scores of AB, of BA, pairs seen.
type Matched = (String, Criterion, Vec<f64>, Vec<f64>, usize);

/// Scores one composition from its lineages (one per order, or several: batches, seeds).
pub fn score(ab: &[Lineage], ba: &[Lineage], rule: &ForgetRule) -> Result<Score> {
    let pairs = pair_groups(ab, ba)?;
    let comp = &pairs[0].2;
    let (a, b) = (Summary::of(&comp.a), Summary::of(&comp.b));
    let mut notes = Vec::new();
    let mut acc: Vec<Matched> = Vec::new();
    for (i, j, _) in &pairs {
        let (l, m) = (&ab[*i], &ba[*j]);
        let cl = criteria(l.evaluations_of(l.id()), rule);
        let cm = criteria(m.evaluations_of(m.id()), rule);
        for (c, v) in &cl {
            match cm.iter().find(|(d, _)| d.key() == c.key()) {
                Some((_, w)) => {
                    let g = c.group_key();
                    match acc.iter_mut().find(|e| e.0 == g) {
                        Some(e) => {
                            e.2.push(*v);
                            e.3.push(*w);
                            e.4 += 1;
                        }
                        None => acc.push((g, c.clone(), vec![*v], vec![*w], 1)),
                    }
                }
                None => notes.push(format!(
                    "{} evaluated on `{}` only, not on `{}` with the same data and settings",
                    c.label(),
                    l.dir.display(),
                    m.dir.display()
                )),
            }
        }
        for (c, _) in &cm {
            if !cl.iter().any(|(d, _)| d.key() == c.key()) {
                notes.push(format!(
                    "{} evaluated on `{}` only, not on `{}` with the same data and settings",
                    c.label(),
                    m.dir.display(),
                    l.dir.display()
                ));
            }
        }
    }
    let mut rows = Vec::new();
    for (_, c, s_ab, s_ba, n) in acc {
        if n < pairs.len() {
            notes.push(format!(
                "{} evaluated on {n} of {} lineage pairs: left out",
                c.label(),
                pairs.len()
            ));
            continue;
        }
        let dir = c.kind.direction();
        let (m_ab, m_ba) = (
            mean(&s_ab).unwrap_or(f64::NAN),
            mean(&s_ba).unwrap_or(f64::NAN),
        );
        let metrics = from_groups(&s_ab, &s_ba, dir);
        let own: Vec<String> = [&a, &b]
            .iter()
            .filter(|s| s.category == c.kind.owner())
            .map(|s| s.label.clone())
            .collect();
        rows.push(Row {
            label: c.label(),
            direction: dir,
            s_ab: m_ab,
            s_ba: m_ba,
            e_of: metrics.map(|m| m.2),
            e_os: metrics.map(|m| m.3),
            own,
            pairs: n,
            criterion: c,
        });
    }
    if rows.is_empty() {
        return Err(Error::Check(format!(
            "no criterion was evaluated on both final checkpoints (`{}`, `{}`) with the same data file and settings: run `intervene eval` with the same flags on both",
            ab[pairs[0].0].dir.display(),
            ba[pairs[0].1].dir.display()
        )));
    }
    Ok(Score {
        base: comp.base.clone(),
        a,
        b,
        ab: pairs.iter().map(|p| ab[p.0].id().to_string()).collect(),
        ba: pairs.iter().map(|p| ba[p.1].id().to_string()).collect(),
        rows,
        notes,
    })
}
