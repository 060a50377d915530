//! What a compression step records per tensor and overall, measured on the values as stored
//! (after the cast to the output dtype): zeros, distinct values per quantisation group, the
//! group layout, and what the Hessian factorisation needed.

use serde::Serialize;
use serde_json::{json, Value};

use super::hessian::DampReport;
use super::quant::QuantSpec;

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
pub fn measure(
    name: &str,
    rows: usize,
    cols: usize,
    values: &[f32],
    spec: Option<&QuantSpec>,
) -> TensorReport {
    let zeros = values.iter().filter(|&&v| v == 0.0).count();
    let max_distinct_per_group = spec.map(|s| {
        let gw = s.group_width(cols).max(1);
        let mut most = 0;
        let mut buf: Vec<u32> = Vec::with_capacity(gw);
        for row in values.chunks(cols) {
            for g in row.chunks(gw) {
                buf.clear();
                // -0.0 and 0.0 are one value: compare numerically.
                buf.extend(g.iter().map(|v| (v + 0.0).to_bits()));
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
