//! `intervene report DIR... -o OUT/`: a sweep's final checkpoints grouped into compositions
//! (same base, same two interventions, both orders), scored, and written as a Markdown report
//! with the study's E_OF/E_OS tables per category pair, heat maps of E_OF and E_OS, and each
//! criterion against compression strength for both orders (SVG). The directory is written
//! atomically.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::compare::{score, strength, Row, Score};
use super::criteria::{ForgetRule, Kind};
use super::lineage::{Intervention, Lineage};
use super::svg;
use crate::checkpoint::StagingDir;
use crate::error::{Error, Result};

/// The scored compositions of a sweep, and the lineages that formed none (with the reason).
pub struct Sweep {
    pub scores: Vec<Score>,
    pub skipped: Vec<String>,
    pub lineages: usize,
}

/// (base id, the two interventions' identities in sorted order).
type GroupKey = (String, String, String);

fn ident(i: &Intervention) -> String {
    format!("{}\t{}\t{}\t{:?}", i.op, i.category, i.params, i.inputs)
}

/// Groups lineages into compositions and scores each; a group that cannot be scored is listed
/// in `skipped`, not fatal (a sweep may be partly finished).
pub fn sweep(dirs: &[PathBuf], rule: &ForgetRule) -> Result<Sweep> {
    let mut skipped = Vec::new();
    // (base, first ident, second ident) sorted -> (lineages in sorted order, in the other)
    let mut groups: BTreeMap<GroupKey, (Vec<Lineage>, Vec<Lineage>)> = BTreeMap::new();
    for d in dirs {
        let l = Lineage::open(d)?;
        let (a, b) = match l.pair() {
            Ok((a, b)) => (ident(&Intervention::of(a)), ident(&Intervention::of(b))),
            Err(e) => {
                skipped.push(format!("`{}`: {e}", d.display()));
                continue;
            }
        };
        let base = l.base_id()?.to_string();
        let forward = a <= b;
        let key = if forward { (base, a, b) } else { (base, b, a) };
        let g = groups.entry(key).or_default();
        if forward {
            g.0.push(l);
        } else {
            g.1.push(l);
        }
    }
    let mut scores = Vec::new();
    for (_, (ab, ba)) in groups {
        if ab.is_empty() || ba.is_empty() {
            let l = ab.first().or(ba.first()).expect("a group holds a lineage");
            skipped.push(format!(
                "`{}`: no lineage applies its two interventions in the other order",
                l.dir.display()
            ));
            continue;
        }
        match score(&ab, &ba, rule) {
            Ok(s) => scores.push(s),
            Err(e @ Error::Check(_)) => skipped.push(format!("`{}`: {e}", ab[0].dir.display())),
            Err(e) => return Err(e),
        }
    }
    Ok(Sweep {
        scores,
        skipped,
        lineages: dirs.len(),
    })
}

fn rank(category: &str) -> u8 {
    match category {
        "edit" => 0,
        "unlearn" => 1,
        "compress" => 2,
        _ => 3,
    }
}

/// A composition oriented X <-> Y by category (edit, unlearn, compress), for the tables.
struct Oriented<'a> {
    s: &'a Score,
    x: &'a str,
    y: &'a str,
    cats: (String, String),
    /// Whether X is the score's B (then s(X then Y) is s_ba).
    swapped: bool,
}

fn orient(s: &Score) -> Oriented<'_> {
    let ka = (rank(&s.a.category), &s.a.label);
    let kb = (rank(&s.b.category), &s.b.label);
    let swapped = kb < ka;
    let (x, y) = if swapped { (&s.b, &s.a) } else { (&s.a, &s.b) };
    Oriented {
        s,
        x: &x.label,
        y: &y.label,
        cats: (x.category.clone(), y.category.clone()),
        swapped,
    }
}

/// The study's table format: two decimals, leading zero stripped, "1" above .995.
fn fmt2(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v > 0.995 => "1".into(),
        Some(v) => {
            let t = format!("{v:.2}");
            t.strip_prefix("0").map(str::to_string).unwrap_or(t)
        }
    }
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// Writes `report.md`, `scores.json` and the SVG figures into `out` (atomically). Returns the
/// file names written.
pub fn write_report(sw: &Sweep, out: &Path, force: bool) -> Result<Vec<String>> {
    let stage = StagingDir::create(out, force)?;
    let mut files: Vec<(String, String)> = Vec::new();
    let mut md = String::new();
    let _ = writeln!(md, "# Composition sweep\n");
    let mut bases: Vec<&str> = sw.scores.iter().map(|s| s.base.as_str()).collect();
    bases.sort();
    bases.dedup();
    let _ = writeln!(
        md,
        "{} compositions scored from {} lineages; base{} {}.\n",
        sw.scores.len(),
        sw.lineages,
        if bases.len() == 1 { "" } else { "s" },
        bases
            .iter()
            .map(|b| format!("`{b}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        md,
        "Order-free error E_OF = min(e(X then Y), e(Y then X)) and order sensitivity E_OS = |s(X then Y) - s(Y then X)| per criterion (lower is better for both; e = 1 - s, except forget accuracy where e = s). Each intervention's own criterion is shown; all scores are in `scores.json`.\n"
    );
    let oriented: Vec<Oriented> = sw.scores.iter().map(orient).collect();
    let mut pairs: Vec<(String, String)> = oriented.iter().map(|o| o.cats.clone()).collect();
    pairs.sort_by_key(|(a, b)| (rank(a), rank(b), a.clone(), b.clone()));
    pairs.dedup();
    for (cx, cy) in &pairs {
        let group: Vec<&Oriented> = oriented
            .iter()
            .filter(|o| (&o.cats.0, &o.cats.1) == (cx, cy))
            .collect();
        // Own criteria of either category, in order of first appearance (perplexity is raw only).
        let mut labels: Vec<String> = Vec::new();
        for o in &group {
            for r in &o.s.rows {
                let own = r.criterion.kind.owner();
                if r.criterion.kind != Kind::Perplexity
                    && (own == cx || own == cy)
                    && !labels.contains(&r.label)
                {
                    labels.push(r.label.clone());
                }
            }
        }
        let _ = writeln!(md, "## {cx} × {cy}\n");
        let mut head = "| Composition |".to_string();
        let mut rule = "|---|".to_string();
        for l in &labels {
            let _ = write!(head, " {l} E_OF | {l} E_OS |");
            rule.push_str("---|---|");
        }
        let _ = writeln!(md, "{head}\n{rule}");
        for o in &group {
            let mut line = format!("| {} ↔ {} |", o.x, o.y);
            for l in &labels {
                let r = cell(o, l);
                let _ = write!(
                    line,
                    " {} | {} |",
                    fmt2(r.and_then(|r| r.e_of)),
                    fmt2(r.and_then(|r| r.e_os))
                );
            }
            let _ = writeln!(md, "{line}");
        }
        if group.len() > 1 {
            let mut line = "| *Average* |".to_string();
            for l in &labels {
                let avg = |f: fn(&Row) -> Option<f64>| {
                    let v: Vec<f64> = group
                        .iter()
                        .filter_map(|o| cell(o, l).and_then(f))
                        .collect();
                    super::metrics::mean(&v)
                };
                let _ = write!(
                    line,
                    " {} | {} |",
                    fmt2(avg(|r| r.e_of)),
                    fmt2(avg(|r| r.e_os))
                );
            }
            let _ = writeln!(md, "{line}");
        }
        md.push('\n');
        // Heat maps: rows X, columns Y, one figure per criterion.
        let mut xs: Vec<&str> = group.iter().map(|o| o.x).collect();
        let mut ys: Vec<&str> = group.iter().map(|o| o.y).collect();
        xs.sort();
        xs.dedup();
        ys.sort();
        ys.dedup();
        let rows: Vec<String> = xs.iter().map(|s| s.to_string()).collect();
        let cols: Vec<String> = ys.iter().map(|s| s.to_string()).collect();
        for l in &labels {
            let grid = |f: fn(&Row) -> Option<f64>| -> Vec<Vec<Option<f64>>> {
                xs.iter()
                    .map(|x| {
                        ys.iter()
                            .map(|y| {
                                group
                                    .iter()
                                    .find(|o| o.x == *x && o.y == *y)
                                    .and_then(|o| cell(o, l))
                                    .and_then(f)
                            })
                            .collect()
                    })
                    .collect()
            };
            let name = format!("heat_{}_{}_{}.svg", slug(cx), slug(cy), slug(l));
            let fig = svg::heatmaps(
                &format!("{cx} × {cy}: {l}"),
                &rows,
                &cols,
                &[
                    ("E_OF".to_string(), grid(|r| r.e_of)),
                    ("E_OS".to_string(), grid(|r| r.e_os)),
                ],
            );
            let _ = writeln!(md, "![{cx} × {cy}: {l}]({name})\n");
            files.push((name, fig));
        }
        // Raw scores per order, every criterion (perplexity included).
        let _ = writeln!(md, "Scores per order:\n");
        let _ = writeln!(
            md,
            "| X | Y | criterion | X then Y | Y then X |\n|---|---|---|---|---|"
        );
        for o in &group {
            for r in &o.s.rows {
                let (xy, yx) = if o.swapped {
                    (r.s_ba, r.s_ab)
                } else {
                    (r.s_ab, r.s_ba)
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} |",
                    o.x,
                    o.y,
                    r.label,
                    raw(xy, r.criterion.kind),
                    raw(yx, r.criterion.kind)
                );
            }
        }
        md.push('\n');
    }
    let lines = line_figures(&oriented);
    if !lines.is_empty() {
        let _ = writeln!(md, "## Criteria against compression strength\n");
        for (name, title, fig) in lines {
            let _ = writeln!(md, "![{title}]({name})\n");
            files.push((name, fig));
        }
    }
    if !sw.skipped.is_empty() {
        let _ = writeln!(md, "## Not scored\n");
        for s in &sw.skipped {
            let _ = writeln!(md, "- {s}");
        }
        md.push('\n');
    }
    let notes: Vec<&String> = sw.scores.iter().flat_map(|s| &s.notes).collect();
    if !notes.is_empty() {
        let _ = writeln!(md, "## Notes\n");
        for n in notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    let json = serde_json::to_vec_pretty(&serde_json::json!({
        "scores": sw.scores,
        "skipped": sw.skipped,
    }))
    .expect("scores serialise");
    files.push((
        "scores.json".into(),
        String::from_utf8(json).expect("utf-8"),
    ));
    files.push(("report.md".into(), md));
    for (name, body) in &files {
        stage.write_file(name, body.as_bytes())?;
    }
    stage.commit()?;
    Ok(files.into_iter().map(|f| f.0).collect())
}

/// A composition's row for the criterion labelled `l`.
fn cell<'s>(o: &Oriented<'s>, l: &str) -> Option<&'s Row> {
    o.s.rows.iter().find(|r| r.label == l)
}

fn raw(v: f64, k: Kind) -> String {
    if k == Kind::Perplexity {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// One figure per (other intervention, compression method): a panel per criterion, the score
/// against the compressor's strength, one line per order.
fn line_figures(oriented: &[Oriented]) -> Vec<(String, String, String)> {
    // (other label, compress op, strength name) -> criterion label -> (kind, XC points, CX points)
    type Points = Vec<(f64, f64)>;
    type Lines = BTreeMap<String, (Kind, Points, Points)>;
    type FigKey = (String, String, &'static str);
    let mut figs: BTreeMap<FigKey, Lines> = BTreeMap::new();
    for o in oriented {
        let s = o.s;
        for (c, other, c_is_b) in [(&s.b, &s.a, true), (&s.a, &s.b, false)] {
            if c.category != "compress" {
                continue;
            }
            let Some((what, x)) = strength(&c.params) else {
                continue;
            };
            let fig = figs
                .entry((other.label.clone(), c.op.clone(), what))
                .or_default();
            for r in &s.rows {
                // s(other then C) and s(C then other).
                let (oc, co) = if c_is_b {
                    (r.s_ab, r.s_ba)
                } else {
                    (r.s_ba, r.s_ab)
                };
                let e = fig.entry(r.label.clone()).or_insert((
                    r.criterion.kind,
                    Vec::new(),
                    Vec::new(),
                ));
                e.1.push((x, oc));
                e.2.push((x, co));
            }
        }
    }
    figs.into_iter()
        .map(|((other, cop, what), lines)| {
            let panels: Vec<svg::Panel> = lines
                .into_iter()
                .map(|(label, (kind, oc, co))| svg::Panel {
                    title: label,
                    unit: kind != Kind::Perplexity,
                    series: vec![
                        svg::Series {
                            name: format!("{other} → {cop}"),
                            points: oc,
                        },
                        svg::Series {
                            name: format!("{cop} → {other}"),
                            points: co,
                        },
                    ],
                })
                .collect();
            let title = format!("{other} and {cop}: criteria against {what}");
            let name = format!("lines_{}_{}.svg", slug(&other), slug(&cop));
            let fig = svg::lines(&title, what, &panels);
            (name, title, fig)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_the_study_tables() {
        assert_eq!(fmt2(Some(0.2448)), ".24");
        assert_eq!(fmt2(Some(0.0541)), ".05");
        assert_eq!(fmt2(Some(0.996)), "1");
        assert_eq!(fmt2(None), "-");
        assert_eq!(
            slug("utility_acc (mmlu/college.csv)"),
            "utility_acc_mmlu_college_csv"
        );
    }
}
