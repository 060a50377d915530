//! Writing the result of an in-memory intervention (editing, unlearning): the tensors the
//! method changed come from the model, converted to each tensor's stored dtype; every other
//! tensor is copied byte for byte from the input, so an unchanged tensor keeps its exact bits
//! and the output id depends only on what the method did.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value;

use crate::checkpoint::provenance::TOOL_VERSION;
use crate::checkpoint::{
    write_checkpoint, Checkpoint, CheckpointFiles, InputFile, Provenance, Step, TensorSpec,
};
use crate::error::{Error, Result};
use crate::model::Llama;

/// What the step record says about an in-memory intervention.
#[derive(Clone, Debug)]
pub struct StepRecord {
    /// The subcommand (`rome`, `ga`, ...).
    pub op: String,
    /// `edit` or `unlearn`.
    pub category: String,
    /// The full validated settings.
    pub params: Value,
    /// Every file the step read (requests, corpora, statistics), by role, path and blake3.
    pub inputs: Vec<InputFile>,
    /// Facts found while running (losses, norms of the update, ...).
    pub report: Value,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct WriteOutcome {
    pub id: String,
    pub output: PathBuf,
    pub seconds: f64,
}

/// Writes `model`'s tensors named in `changed` over the input checkpoint `input` into
/// `output`, and appends `record` to the inherited chain. `start` is when the step began
/// (the step's `seconds` covers the whole run, not only the write). Non-finite values in a
/// changed tensor are refused before anything is staged: a diverged run must not produce a
/// checkpoint that looks like a result.
// The step's whole description (input, output, force, changed tensors, record, timing);
// bundling it in a struct would only rename the arguments at the one call site per op.
#[allow(clippy::too_many_arguments)]
pub fn write_changed(
    input: &Checkpoint,
    output: &Path,
    force: bool,
    model: &Llama,
    changed: &[String],
    record: StepRecord,
    device: &str,
    start: Instant,
) -> Result<WriteOutcome> {
    let changed: BTreeSet<&str> = changed.iter().map(String::as_str).collect();
    for &name in &changed {
        let info = input.info(name).ok_or_else(|| {
            Error::tensor(
                input.dir(),
                name,
                "changed by the step but absent from the input",
            )
        })?;
        let t = model.weight(name)?;
        if t.shape() != info.shape.as_slice() {
            return Err(Error::tensor(
                input.dir(),
                name,
                format!(
                    "model holds shape {:?}, the input stores {:?}",
                    t.shape(),
                    info.shape
                ),
            ));
        }
        if let Some(i) = t.data().iter().position(|v| !v.is_finite()) {
            return Err(Error::tensor(
                input.dir(),
                name,
                format!(
                    "{} produced a non-finite value ({}) at flat index {i}; nothing written (lower --lr?)",
                    record.op,
                    t.data()[i]
                ),
            ));
        }
    }
    let specs: Vec<TensorSpec> = input
        .names()
        .filter_map(|n| input.info(n).map(|i| (n, i)))
        .map(|(n, info)| TensorSpec {
            name: n.to_string(),
            dtype: info.dtype,
            shape: info.shape.clone(),
        })
        .collect();
    let files = CheckpointFiles::from_dir(input.dir())?;
    let parent = match &input.provenance {
        Some(p) => p.id.clone(),
        None => input.compute_id(),
    };
    let id = write_checkpoint(
        output,
        force,
        specs,
        |spec| {
            let (info, bytes) = input.bytes(&spec.name)?;
            if changed.contains(spec.name.as_str()) {
                let t = model.weight(&spec.name)?;
                return Ok(Cow::Owned(info.dtype.from_f32(t.data())));
            }
            Ok(Cow::Borrowed(bytes))
        },
        &files,
        |id| {
            let step = Step {
                op: record.op.clone(),
                category: record.category.clone(),
                params: record.params.clone(),
                inputs: record.inputs.clone(),
                parent: Some(parent.clone()),
                output: id.to_string(),
                tool_version: TOOL_VERSION.to_string(),
                device: device.to_string(),
                seconds: start.elapsed().as_secs_f64(),
                report: record.report.clone(),
            };
            match &input.provenance {
                Some(p) => p.child(step),
                None => Provenance::new_import(step),
            }
        },
    )?;
    Ok(WriteOutcome {
        id,
        output: output.to_path_buf(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Tensor;

    fn tiny() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny/hf")
    }

    fn record() -> StepRecord {
        StepRecord {
            op: "test".into(),
            category: "edit".into(),
            params: serde_json::json!({"k": 1}),
            inputs: vec![],
            report: Value::Null,
        }
    }

    #[test]
    fn only_changed_tensors_differ_and_chain_grows() {
        let ckpt = Checkpoint::open(&tiny()).unwrap();
        let mut model = Llama::load(&ckpt).unwrap();
        let name = "model.layers.1.mlp.down_proj.weight";
        let mut w = model.weight(name).unwrap();
        w.data_mut().iter_mut().for_each(|v| *v += 0.5);
        model.set_weight(name, &w).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let r = write_changed(
            &ckpt,
            &out,
            false,
            &model,
            &[name.to_string()],
            record(),
            "cpu",
            Instant::now(),
        )
        .unwrap();
        let written = Checkpoint::open(&out).unwrap();
        assert_eq!(written.compute_id(), r.id);
        for n in ckpt.names() {
            let same = ckpt.bytes(n).unwrap().1 == written.bytes(n).unwrap().1;
            assert_eq!(same, n != name, "{n}");
        }
        let prov = written.provenance.as_ref().unwrap();
        let last = prov.chain.last().unwrap();
        assert_eq!(last.op, "test");
        assert_eq!(last.output, r.id);
        assert_eq!(
            last.parent.as_deref(),
            Some(
                ckpt.provenance
                    .as_ref()
                    .map_or(ckpt.compute_id(), |p| p.id.clone())
                    .as_str()
            )
        );
    }

    #[test]
    fn non_finite_refused_before_writing() {
        let ckpt = Checkpoint::open(&tiny()).unwrap();
        let mut model = Llama::load(&ckpt).unwrap();
        let name = "model.layers.0.self_attn.q_proj.weight";
        let mut w: Tensor = model.weight(name).unwrap();
        w.data_mut()[3] = f32::NAN;
        model.set_weight(name, &w).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let e = write_changed(
            &ckpt,
            &out,
            false,
            &model,
            &[name.to_string()],
            record(),
            "cpu",
            Instant::now(),
        )
        .unwrap_err();
        assert!(e.to_string().contains(name), "{e}");
        assert!(!out.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
