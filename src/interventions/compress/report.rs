//! What a compression step records per tensor and overall, measured on the values as stored
//! (after the cast to the output dtype): zeros, distinct values per quantisation group, the
//! group layout, and what the Hessian factorisation needed.

use serde::Serialize;
use serde_json::{json, Value};

use super::hessian::DampReport;
use super::quant::QuantSpec;
use super::solve::ObjectiveErrors;

/// One compressed tensor.
#[derive(Clone, Debug, Serialize)]
pub struct TensorReport {
    pub name: String,
    pub shape: [usize; 2],
    pub zeros: usize,
    pub sparsity: f64,
    /// The largest number of distinct stored values in one quantisation group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_distinct_per_group: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damp: Option<DampSummary>,
    /// AWQ: the winning scale exponent of the scaling group this tensor belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awq_alpha: Option<f32>,
    /// GPTQ: its objective and round-to-nearest's on the same Hessian.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub errors: Option<ObjectiveErrors>,
}

/// `DampReport` without the per-column list (only its length).
#[derive(Clone, Debug, Serialize)]
pub struct DampSummary {
    pub percdamp_used: f64,
    pub retries: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    pub dead_columns: usize,
}

impl From<&DampReport> for DampSummary {
    fn from(d: &DampReport) -> Self {
        DampSummary {
            percdamp_used: d.percdamp_used,
            retries: d.retries,
            failures: d.failures.clone(),
            dead_columns: d.dead_columns.len(),
        }
    }
}

/// Measures a stored `[rows, cols]` matrix (values as read back from the output dtype).
/// `g_idx` is the group of each input column where it is not `column / group` (GPTQ with
/// act-order groups columns in the permuted order).
pub fn measure(
    name: &str,
    rows: usize,
    cols: usize,
    values: &[f32],
    spec: Option<&QuantSpec>,
    g_idx: Option<&[u32]>,
) -> TensorReport {
    let zeros = values.iter().filter(|&&v| v == 0.0).count();
    let max_distinct_per_group = spec.map(|s| {
        let gw = s.group_width(cols).max(1);
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); s.n_groups(cols).max(1)];
        for c in 0..cols {
            let g = g_idx.map_or(c / gw, |gi| gi[c] as usize);
            // A g_idx out of range would be an internal error; count it as its own group.
            if g >= members.len() {
                members.resize(g + 1, Vec::new());
            }
            members[g].push(c);
        }
        let mut most = 0;
        let mut buf: Vec<u32> = Vec::with_capacity(gw);
        for row in values.chunks(cols) {
            for cols_of_group in &members {
                buf.clear();
                // -0.0 and 0.0 are one value: compare numerically.
                buf.extend(cols_of_group.iter().map(|&c| (row[c] + 0.0).to_bits()));
                buf.sort_unstable();
                buf.dedup();
                most = most.max(buf.len());
            }
        }
        most
    });
    TensorReport {
        name: name.to_string(),
        shape: [rows, cols],
        zeros,
        sparsity: zeros as f64 / values.len().max(1) as f64,
        max_distinct_per_group,
        damp: None,
        awq_alpha: None,
        errors: None,
    }
}

/// The step's `report`: overall figures first (what `inspect` shows), then per tensor.
pub fn summarise(
    tensors: &[TensorReport],
    spec: Option<&QuantSpec>,
    calib: Option<Value>,
) -> Value {
    let numel: usize = tensors.iter().map(|t| t.shape[0] * t.shape[1]).sum();
    let zeros: usize = tensors.iter().map(|t| t.zeros).sum();
    let retries: u32 = tensors
        .iter()
        .filter_map(|t| t.damp.as_ref())
        .map(|d| d.retries)
        .sum();
    let mut out = json!({
        "tensors_compressed": tensors.len(),
        "sparsity_overall": zeros as f64 / numel.max(1) as f64,
        "damping_retries": retries,
    });
    if let Some(s) = spec {
        let o = out.as_object_mut().expect("object");
        o.insert("bits".into(), json!(s.bits));
        o.insert("group_size".into(), json!(s.group));
        o.insert(
            "max_distinct_per_group".into(),
            json!(tensors
                .iter()
                .filter_map(|t| t.max_distinct_per_group)
                .max()),
        );
        let short: Vec<String> = {
            let mut v: Vec<String> = tensors
                .iter()
                .filter_map(|t| {
                    let cols = t.shape[1];
                    let gw = s.group_width(cols);
                    (cols % gw != 0)
                        .then(|| format!("{} inputs: last group {} of {gw}", cols, cols % gw))
                })
                .collect();
            v.sort();
            v.dedup();
            v
        };
        if !short.is_empty() {
            o.insert(
                "note".into(),
                json!(format!(
                    "input width not a multiple of the group size; the last group of each row is shorter ({})",
                    short.join("; ")
                )),
            );
        }
    }
    let errors: Vec<&ObjectiveErrors> = tensors.iter().filter_map(|t| t.errors.as_ref()).collect();
    if !errors.is_empty() {
        out["output_error_below_rtn"] = json!(format!(
            "{} of {} tensors",
            errors
                .iter()
                .filter(|e| e.output_error < e.rtn_output_error)
                .count(),
            errors.len()
        ));
    }
    if retries > 0 {
        let which: Vec<Value> = tensors
            .iter()
            .filter_map(|t| {
                let d = t.damp.as_ref()?;
                (d.retries > 0).then(|| json!({"tensor": t.name, "percdamp_used": d.percdamp_used, "failures": d.failures}))
            })
            .collect();
        out["damping_retried"] = json!(which);
    }
    if let Some(c) = calib {
        out["calibration"] = c;
    }
    out["per_tensor"] = json!(tensors);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interventions::compress::quant::Grid;

    #[test]
    fn distinct_values_are_counted_per_g_idx_group() {
        // Two groups of 4 columns; group 0 holds the even columns, group 1 the odd ones, and
        // each group has one value per group (as GPTQ with act-order leaves them).
        let spec = QuantSpec::new(2, 4, Grid::GptqAsym).unwrap();
        let row = [1.0f32, 5.0, 1.0, 5.0, 1.0, 5.0, 1.0, 5.0];
        let g_idx = [0u32, 1, 0, 1, 0, 1, 0, 1];
        let by_gidx = measure("w", 1, 8, &row, Some(&spec), Some(&g_idx));
        assert_eq!(by_gidx.max_distinct_per_group, Some(1));
        // Contiguous groups see both values.
        let contiguous = measure("w", 1, 8, &row, Some(&spec), None);
        assert_eq!(contiguous.max_distinct_per_group, Some(2));
        // -0.0 and 0.0 count once; zeros are counted.
        let z = measure("w", 1, 4, &[0.0, -0.0, 2.0, 0.0], Some(&spec), None);
        assert_eq!((z.max_distinct_per_group, z.zeros), (Some(2), 3));
    }
}
