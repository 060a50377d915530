//! Verification: recompute the id from the stored weights and check provenance.json against
//! it. The checks, each reported as a sentence naming the file and what differs:
//! - the weights hash to the recorded id (and, when they do not, which tensors changed, from
//!   the per-tensor hashes, and whether they are the weights of an earlier step);
//! - each chain entry's links: its parent is the previous entry's output, the last output is
//!   the id, every evaluation names a checkpoint of the chain;
//! - each chain entry and evaluation still matches the digest recorded when it was written;
//! - input files that are present (paths as recorded) still hash to what the step recorded.
//!
//! The pure part (`check_provenance`) takes no file system access, so it can be fuzzed.

use std::collections::BTreeMap;
use std::path::Path;

use super::provenance::{entry_digest, CHAIN_TAG, EVALUATION_TAG};
use super::safetensors_write::tensor_hash;
use super::{hash_file, Checkpoint, InputFile, Provenance, PROVENANCE_FILE};
use crate::error::Result;

#[derive(Debug)]
pub struct VerifyReport {
    pub computed_id: String,
    pub recorded_id: Option<String>,
    /// Each mismatch found, as a sentence naming the file and what differs.
    pub problems: Vec<String>,
    /// What could not be checked (absent input files, entries without digests).
    pub notes: Vec<String>,
    /// Input files found and re-hashed.
    pub inputs_checked: usize,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Re-hash the input files named in the chain and evaluations where they are present.
    pub check_inputs: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions { check_inputs: true }
    }
}

/// Tensors named in a list of differences before the rest are counted.
const MAX_LISTED: usize = 20;

pub fn verify(dir: &Path) -> Result<VerifyReport> {
    verify_with(dir, &VerifyOptions::default())
}

pub fn verify_with(dir: &Path, opts: &VerifyOptions) -> Result<VerifyReport> {
    let ckpt = Checkpoint::open(dir)?;
    let computed_id = ckpt.compute_id();
    let prov_path = dir.join(PROVENANCE_FILE);
    let mut report = VerifyReport {
        computed_id: computed_id.clone(),
        recorded_id: ckpt.provenance.as_ref().map(|p| p.id.clone()),
        problems: Vec::new(),
        notes: Vec::new(),
        inputs_checked: 0,
    };
    let Some(p) = &ckpt.provenance else {
        report
            .problems
            .push(format!("`{}` is missing", prov_path.display()));
        return Ok(report);
    };
    // Per-tensor hashes cost a second pass over the weights; only needed to name what changed.
    let hashes = (p.id != computed_id && !p.tensors.is_empty()).then(|| {
        ckpt.names()
            .map(|n| {
                let (_, bytes) = ckpt.bytes(n).expect("indexed");
                (n.to_string(), tensor_hash(bytes))
            })
            .collect::<BTreeMap<_, _>>()
    });
    let (problems, notes) = check_provenance(p, &computed_id, hashes.as_ref(), &prov_path);
    report.problems.extend(problems);
    report.notes.extend(notes);
    if opts.check_inputs {
        check_inputs(p, &prov_path, &mut report);
    }
    Ok(report)
}

/// Checks provenance against the id the weights hash to (and, if given, each tensor's hash).
/// Returns (problems, notes).
pub fn check_provenance(
    p: &Provenance,
    computed_id: &str,
    tensor_hashes: Option<&BTreeMap<String, String>>,
    prov_path: &Path,
) -> (Vec<String>, Vec<String>) {
    let prov = prov_path.display();
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    if p.id != computed_id {
        let mut msg = format!(
            "weights hash to {computed_id}, but `{prov}` records id {}",
            p.id
        );
        let n = p.chain.len();
        if let Some((i, s)) = p
            .chain
            .iter()
            .enumerate()
            .take(n.saturating_sub(1))
            .find(|(_, s)| s.output == computed_id)
        {
            msg += &format!(
                "; they are the weights of chain[{i}] (`{}`), an earlier checkpoint of this lineage",
                s.op
            );
        }
        problems.push(msg);
        if let Some(now) = tensor_hashes {
            problems.extend(tensor_differences(&p.tensors, now, &prov));
        }
    }
    let mut prev: Option<&str> = None;
    for (i, step) in p.chain.iter().enumerate() {
        if step.parent.as_deref() != prev {
            problems.push(format!(
                "`{prov}` chain[{i}] (`{}`): parent {:?} is not the previous step's output {:?}",
                step.op, step.parent, prev
            ));
        }
        prev = Some(&step.output);
    }
    match p.chain.last() {
        None => problems.push(format!("`{prov}` has an empty chain")),
        Some(last) if last.output != p.id => problems.push(format!(
            "`{prov}`: the last step's output {} is not the recorded id {}",
            last.output, p.id
        )),
        _ => {}
    }
    for (i, ev) in p.evaluations.iter().enumerate() {
        if !p.chain.iter().any(|s| s.output == ev.checkpoint) {
            problems.push(format!(
                "`{prov}` evaluations[{i}] names checkpoint {} which is not in the chain",
                ev.checkpoint
            ));
        }
    }
    let describe_step = |i: usize| format!("chain[{i}] (`{}`)", p.chain[i].op);
    check_digests(
        CHAIN_TAG,
        &p.chain,
        &p.chain_digests,
        "chain",
        describe_step,
        false,
        &prov,
        &mut problems,
        &mut notes,
    );
    let describe_eval = |i: usize| {
        format!(
            "evaluations[{i}] (`{}` of {})",
            p.evaluations[i].task, p.evaluations[i].checkpoint
        )
    };
    check_digests(
        EVALUATION_TAG,
        &p.evaluations,
        &p.evaluation_digests,
        "evaluations",
        describe_eval,
        // A file whose chain has digests was written by a version that digests evaluations
        // too, so an evaluation without one was added by hand.
        !p.chain_digests.is_empty(),
        &prov,
        &mut problems,
        &mut notes,
    );
    (problems, notes)
}

/// Recomputes each entry's digest from its content and the previous recorded digest, so an
/// edit shows up at the entry that was edited (and a reordering at every moved entry).
#[allow(clippy::too_many_arguments)]
fn check_digests<T: serde::Serialize>(
    tag: &str,
    entries: &[T],
    recorded: &[String],
    what: &str,
    describe: impl Fn(usize) -> String,
    require: bool,
    prov: &std::path::Display,
    problems: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    if entries.is_empty() {
        if !recorded.is_empty() {
            problems.push(format!(
                "`{prov}` records {} {what} digests for no entries",
                recorded.len()
            ));
        }
        return;
    }
    if recorded.is_empty() && !require {
        notes.push(format!(
            "`{prov}` has no {what} digests (written before intervene recorded them); the \
             entries' contents were not checked"
        ));
        return;
    }
    if recorded.len() != entries.len() {
        problems.push(format!(
            "`{prov}` records {} {what} digests for {} entries; entries were added or removed",
            recorded.len(),
            entries.len()
        ));
        return;
    }
    for (i, e) in entries.iter().enumerate() {
        let prev = i.checked_sub(1).map(|j| recorded[j].as_str());
        let now = entry_digest(tag, prev, e);
        if now != recorded[i] {
            problems.push(format!(
                "`{prov}` {}: content differs from what was written (digest {now}, recorded {}); \
                 the entry was edited, moved or replaced",
                describe(i),
                recorded[i]
            ));
        }
    }
}

/// Tensors whose stored bytes no longer hash to what provenance recorded, by name.
fn tensor_differences(
    recorded: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
    prov: &std::path::Display,
) -> Vec<String> {
    if recorded.is_empty() {
        return Vec::new();
    }
    let mut diffs = Vec::new();
    for (name, h) in now {
        match recorded.get(name) {
            Some(r) if r == h => {}
            Some(r) => diffs.push(format!(
                "tensor `{name}`: stored bytes hash to {h}, `{prov}` records {r}"
            )),
            None => diffs.push(format!(
                "tensor `{name}` is in the weights but not recorded in `{prov}`"
            )),
        }
    }
    for name in recorded.keys().filter(|n| !now.contains_key(*n)) {
        diffs.push(format!(
            "tensor `{name}` is recorded in `{prov}` but missing from the weights"
        ));
    }
    let n = diffs.len();
    if n > MAX_LISTED {
        diffs.truncate(MAX_LISTED);
        diffs.push(format!("... and {} more tensors differ", n - MAX_LISTED));
    }
    diffs
}

/// Re-hashes each recorded input that exists as a regular file or a directory (paths as
/// recorded: relative ones resolve against the current directory). Anything else (absent,
/// a device, a fifo) is noted and skipped, so a hostile path cannot make verify block.
fn check_inputs(p: &Provenance, prov_path: &Path, report: &mut VerifyReport) {
    let prov = prov_path.display();
    let mut absent = Vec::new();
    let mut check = |what: String, f: &InputFile| {
        let path = Path::new(&f.path);
        let now = match std::fs::metadata(path) {
            Ok(m) if m.is_file() => hash_file(path),
            Ok(m) if m.is_dir() => crate::eval::record::data_file(&f.role, path).map(|i| i.blake3),
            _ => {
                absent.push(f.path.clone());
                return;
            }
        };
        report.inputs_checked += 1;
        match now {
            Ok(h) if h == f.blake3 => {}
            Ok(h) => report.problems.push(format!(
                "`{prov}` {what} input `{}` (`{}`) now hashes to {h}, recorded {}",
                f.role, f.path, f.blake3
            )),
            Err(e) => report
                .problems
                .push(format!("`{prov}` {what} input `{}`: {e}", f.role)),
        }
    };
    for (i, s) in p.chain.iter().enumerate() {
        for f in &s.inputs {
            check(format!("chain[{i}] (`{}`)", s.op), f);
        }
    }
    for (i, e) in p.evaluations.iter().enumerate() {
        check(format!("evaluations[{i}] (`{}`)", e.task), &e.data);
    }
    if !absent.is_empty() {
        report.notes.push(format!(
            "{} input file(s) not present here, not re-hashed: {}",
            absent.len(),
            absent.join(", ")
        ));
    }
}
