//! A lineage: a checkpoint directory's provenance chain read as "base, then intervention A,
//! then intervention B" (its last two steps), and the checks that two lineages compose the same
//! two interventions in opposite orders from the same base. A failed check is `Error::Check`
//! (exit 1) naming the directory, the chain step and the field that differ.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::checkpoint::{Evaluation, Provenance, Step, PROVENANCE_FILE};
use crate::error::{Error, Result};

/// One checkpoint directory's provenance, checked to be a well-formed chain.
#[derive(Clone, Debug)]
pub struct Lineage {
    pub dir: PathBuf,
    pub prov: Provenance,
}

impl Lineage {
    /// Reads `dir/provenance.json` and checks that each step's parent is the previous step's
    /// output and that the last output is the checkpoint's id.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(PROVENANCE_FILE);
        if !path.is_file() {
            return Err(Error::usage(
                "DIR",
                format!(
                    "`{}` has no {PROVENANCE_FILE}: not an intervene checkpoint",
                    dir.display()
                ),
            ));
        }
        let prov = Provenance::read(&path)?;
        let Some(last) = prov.chain.last() else {
            return Err(Error::format("provenance", &path, "chain", "is empty"));
        };
        if last.output != prov.id {
            return Err(Error::format(
                "provenance",
                &path,
                "id",
                format!("{} but the last step wrote {}", prov.id, last.output),
            ));
        }
        for (i, w) in prov.chain.windows(2).enumerate() {
            if w[1].parent.as_deref() != Some(w[0].output.as_str()) {
                return Err(Error::format(
                    "provenance",
                    &path,
                    format!("chain[{}].parent", i + 1),
                    format!("{:?}, but chain[{i}] wrote {}", w[1].parent, w[0].output),
                ));
            }
        }
        Ok(Lineage {
            dir: dir.to_path_buf(),
            prov,
        })
    }

    pub fn id(&self) -> &str {
        &self.prov.id
    }

    /// Chain indices of the two interventions (the last two steps), or a check failure when the
    /// chain holds fewer than two steps after the import.
    pub fn pair_index(&self) -> Result<(usize, usize)> {
        let n = self.prov.chain.len();
        if n < 3 {
            return Err(Error::Check(format!(
                "`{}` holds {} step(s) after its import; a composition needs two interventions",
                self.dir.display(),
                n.saturating_sub(1)
            )));
        }
        Ok((n - 2, n - 1))
    }

    /// The first and second intervention.
    pub fn pair(&self) -> Result<(&Step, &Step)> {
        let (i, j) = self.pair_index()?;
        Ok((&self.prov.chain[i], &self.prov.chain[j]))
    }

    /// The checkpoint the two interventions started from.
    pub fn base_id(&self) -> Result<&str> {
        let (a, _) = self.pair()?;
        Ok(a.parent.as_deref().unwrap_or(""))
    }

    /// The evaluations run on checkpoint `id` (inherited ones carry their own checkpoint id).
    pub fn evaluations_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Evaluation> {
        self.prov
            .evaluations
            .iter()
            .filter(move |e| e.checkpoint == id)
    }
}

/// Input roles that are statistics of the step's *input checkpoint* (MEMIT/ROME's key
/// covariance, computed from the model it edits, the `stats_corpus` input and the sample counts
/// in params), not files the user chose: after another intervention they are recomputed on a
/// different model, so comparing them would refuse every edit applied second. They stay in
/// the provenance; the comparison leaves them out.
const DERIVED_INPUT_ROLES: &[&str] = &["covariance "];

fn derived(role: &str) -> bool {
    DERIVED_INPUT_ROLES.iter().any(|p| role.starts_with(p))
}

/// A step as the comparison sees it: op, category, params with file paths replaced by the
/// files' hashes (a path is compared by content: the same file under another path is the
/// same input), and inputs by role and hash, less the derived ones ([`DERIVED_INPUT_ROLES`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Intervention {
    pub op: String,
    pub category: String,
    pub params: Value,
    pub inputs: Vec<(String, String)>,
}

impl Intervention {
    pub fn of(step: &Step) -> Self {
        let mut params = step.params.clone();
        for f in step.inputs.iter().filter(|f| !derived(&f.role)) {
            replace_path(&mut params, &f.path, &f.blake3);
        }
        let mut inputs: Vec<(String, String)> = step
            .inputs
            .iter()
            .filter(|f| !derived(&f.role))
            .map(|f| (f.role.clone(), f.blake3.clone()))
            .collect();
        inputs.sort();
        Intervention {
            op: step.op.clone(),
            category: step.category.clone(),
            params,
            inputs,
        }
    }

    /// The first field where `self` and `other` differ, as `field: this vs that`.
    pub fn diff(&self, other: &Intervention) -> Option<String> {
        if self.op != other.op {
            return Some(format!("op: `{}` vs `{}`", self.op, other.op));
        }
        if self.category != other.category {
            return Some(format!(
                "category: `{}` vs `{}`",
                self.category, other.category
            ));
        }
        if let Some(d) = diff_value("params", &self.params, &other.params) {
            return Some(d);
        }
        for (role, hash) in &self.inputs {
            match other.inputs.iter().find(|(r, _)| r == role) {
                None => return Some(format!("inputs: `{role}` vs none")),
                Some((_, h)) if h != hash => {
                    return Some(format!("inputs.{role}.blake3: {hash} vs {h}"))
                }
                _ => {}
            }
        }
        for (role, _) in &other.inputs {
            if !self.inputs.iter().any(|(r, _)| r == role) {
                return Some(format!("inputs: none vs `{role}`"));
            }
        }
        if self.inputs != other.inputs {
            return Some("inputs: the same roles in other numbers".to_string());
        }
        None
    }
}

fn replace_path(v: &mut Value, path: &str, hash: &str) {
    match v {
        Value::String(s) if s == path => *s = hash.to_string(),
        Value::Array(a) => a.iter_mut().for_each(|x| replace_path(x, path, hash)),
        Value::Object(o) => o.values_mut().for_each(|x| replace_path(x, path, hash)),
        _ => {}
    }
}

/// The first differing leaf of two JSON values, named by its dotted path.
fn diff_value(at: &str, a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let p = format!("{at}.{k}");
                match y.get(k) {
                    Some(vb) => {
                        if let Some(d) = diff_value(&p, va, vb) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{p}: {va} vs absent")),
                }
            }
            y.iter()
                .find(|(k, _)| !x.contains_key(*k))
                .map(|(k, vb)| format!("{at}.{k}: absent vs {vb}"))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (va, vb))| diff_value(&format!("{at}[{i}]"), va, vb)),
        _ if a == b => None,
        _ => Some(format!("{at}: {a} vs {b}")),
    }
}

/// The composition two lineages were checked to form.
#[derive(Clone, Debug)]
pub struct Composition {
    pub base: String,
    /// The interventions in the first lineage's order.
    pub a: Intervention,
    pub b: Intervention,
}

/// Checks that `ab` applies A then B and `ba` applies B then A, from the same base.
pub fn check_pair(ab: &Lineage, ba: &Lineage) -> Result<Composition> {
    let (ia, ib) = ab.pair_index()?;
    let (ja, jb) = ba.pair_index()?;
    let (base_ab, base_ba) = (ab.base_id()?, ba.base_id()?);
    if base_ab != base_ba {
        return Err(Error::Check(format!(
            "different bases: `{}` starts its two interventions from {base_ab} (chain[{}].parent), `{}` from {base_ba} (chain[{}].parent)",
            ab.dir.display(),
            ia,
            ba.dir.display(),
            ja
        )));
    }
    let (a1, b1) = ab.pair()?;
    let (b2, a2) = ba.pair()?;
    let (a1, b1, b2, a2) = (
        Intervention::of(a1),
        Intervention::of(b1),
        Intervention::of(b2),
        Intervention::of(a2),
    );
    if a1.op == b2.op && b1.op == a2.op && a1.op != b1.op {
        return Err(Error::Check(format!(
            "the same order twice: `{}` and `{}` both apply `{}` then `{}`; the second lineage must apply them in the opposite order",
            ab.dir.display(),
            ba.dir.display(),
            a1.op,
            b1.op
        )));
    }
    let name = |l: &Lineage, i: usize| {
        format!(
            "chain[{i}] `{}` of `{}`",
            l.prov.chain[i].op,
            l.dir.display()
        )
    };
    if let Some(d) = a1.diff(&a2) {
        return Err(Error::Check(format!(
            "not the same intervention: {} and {} differ in {d}",
            name(ab, ia),
            name(ba, jb)
        )));
    }
    if let Some(d) = b1.diff(&b2) {
        return Err(Error::Check(format!(
            "not the same intervention: {} and {} differ in {d}",
            name(ab, ib),
            name(ba, ja)
        )));
    }
    if a1 == b1 {
        return Err(Error::Check(format!(
            "`{}` applies the same intervention twice (`{}`): there is no order to compare",
            ab.dir.display(),
            a1.op
        )));
    }
    Ok(Composition {
        base: base_ab.to_string(),
        a: a1,
        b: b1,
    })
}

/// Pairs each A-then-B lineage with a B-then-A lineage holding the same two interventions
/// (edit batches and seeds pair up one to one). Single lineages get `check_pair`'s exact
/// reason; in groups, a lineage with no partner is reported with its first mismatch.
pub fn pair_groups(ab: &[Lineage], ba: &[Lineage]) -> Result<Vec<(usize, usize, Composition)>> {
    if ab.is_empty() || ba.is_empty() {
        return Err(Error::usage(
            "--ab/--ba",
            "each order needs at least one lineage",
        ));
    }
    if ab.len() != ba.len() {
        return Err(Error::Check(format!(
            "{} lineage(s) in one order and {} in the other: each A-then-B lineage needs its B-then-A partner",
            ab.len(),
            ba.len()
        )));
    }
    let mut used = vec![false; ba.len()];
    let mut out = Vec::new();
    for (i, l) in ab.iter().enumerate() {
        let mut first_err = None;
        let mut found = None;
        for (j, m) in ba.iter().enumerate() {
            if used[j] {
                continue;
            }
            match check_pair(l, m) {
                Ok(c) => {
                    found = Some((j, c));
                    break;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match (found, first_err) {
            (Some((j, c)), _) => {
                used[j] = true;
                out.push((i, j, c));
            }
            (None, Some(e)) => return Err(e),
            (None, None) => unreachable!("ba holds as many lineages as ab"),
        }
    }
    // All pairs compose the same two methods (their params may differ: batches, seeds).
    let (a0, b0) = (&out[0].2.a, &out[0].2.b);
    for (i, _, c) in &out[1..] {
        if c.a.op != a0.op || c.b.op != b0.op || c.base != out[0].2.base {
            return Err(Error::Check(format!(
                "`{}` composes `{}` then `{}` from {}, but `{}` composes `{}` then `{}` from {}: a group holds one composition",
                ab[*i].dir.display(),
                c.a.op,
                c.b.op,
                c.base,
                ab[out[0].0].dir.display(),
                a0.op,
                b0.op,
                out[0].2.base
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::InputFile;
    use serde_json::json;

    fn memit(cov: &str, corpus: &str) -> Step {
        let file = |role: &str, path: &str, h: &str| InputFile {
            role: role.into(),
            path: path.into(),
            blake3: h.into(),
        };
        Step {
            op: "memit".into(),
            category: "edit".into(),
            params: json!({"requests": "req.jsonl", "layers": [4, 8]}),
            inputs: vec![
                file("requests", "req.jsonl", "blake3:aa"),
                file("stats_corpus", "wt.txt", corpus),
                file("covariance layer 4", "/c/cov-1.bin", cov),
            ],
            parent: Some("blake3:p".into()),
            output: "blake3:o".into(),
            tool_version: "t".into(),
            device: "cpu".into(),
            seconds: 1.0,
            report: Value::Null,
        }
    }

    #[test]
    fn covariance_of_the_input_model_is_not_part_of_the_intervention() {
        // The same edit on two different models: covariances differ, the intervention does not.
        let a = Intervention::of(&memit("blake3:c1", "blake3:w"));
        let b = Intervention::of(&memit("blake3:c2", "blake3:w"));
        assert_eq!(a.diff(&b), None);
        assert_eq!(a.inputs.len(), 2);
        // A different covariance corpus is a different intervention.
        let c = Intervention::of(&memit("blake3:c1", "blake3:x"));
        assert_eq!(
            a.diff(&c).as_deref(),
            Some("inputs.stats_corpus.blake3: blake3:w vs blake3:x")
        );
    }
}
