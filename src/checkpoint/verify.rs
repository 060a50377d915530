//! Verification: recompute the id from the stored weights and check the provenance chain's
//! links (each step's parent is the previous step's output; the last output is the id; every
//! evaluation names a checkpoint of the chain).

use std::path::Path;

use super::{Checkpoint, PROVENANCE_FILE};
use crate::error::Result;

#[derive(Debug)]
pub struct VerifyReport {
    pub computed_id: String,
    pub recorded_id: Option<String>,
    /// Each mismatch found, as a sentence naming the file and what differs.
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

pub fn verify(dir: &Path) -> Result<VerifyReport> {
    let ckpt = Checkpoint::open(dir)?;
    let computed_id = ckpt.compute_id();
    let prov_path = dir.join(PROVENANCE_FILE);
    let mut problems = Vec::new();
    let recorded_id = ckpt.provenance.as_ref().map(|p| p.id.clone());
    match &ckpt.provenance {
        None => problems.push(format!("`{}` is missing", prov_path.display())),
        Some(p) => {
            if p.id != computed_id {
                problems.push(format!(
                    "weights in `{}` hash to {computed_id}, but `{}` records id {}",
                    dir.display(),
                    prov_path.display(),
                    p.id
                ));
            }
            let mut prev: Option<&str> = None;
            for (i, step) in p.chain.iter().enumerate() {
                if step.parent.as_deref() != prev {
                    problems.push(format!(
                        "`{}` chain[{i}] (`{}`): parent {:?} is not the previous step's output {:?}",
                        prov_path.display(),
                        step.op,
                        step.parent,
                        prev
                    ));
                }
                prev = Some(&step.output);
            }
            match p.chain.last() {
                None => problems.push(format!("`{}` has an empty chain", prov_path.display())),
                Some(last) if last.output != p.id => problems.push(format!(
                    "`{}`: the last step's output {} is not the recorded id {}",
                    prov_path.display(),
                    last.output,
                    p.id
                )),
                _ => {}
            }
            for (i, ev) in p.evaluations.iter().enumerate() {
                if !p.chain.iter().any(|s| s.output == ev.checkpoint) {
                    problems.push(format!(
                        "`{}` evaluations[{i}] names checkpoint {} which is not in the chain",
                        prov_path.display(),
                        ev.checkpoint
                    ));
                }
            }
        }
    }
    Ok(VerifyReport {
        computed_id,
        recorded_id,
        problems,
    })
}
