//! Which recorded evaluations are criteria, and whose: each intervention is judged on its own
//! criterion (composability.md §1): an edit on edit success, generalisation and locality; an
//! unlearning on accuracy on the forget multiple-choice benchmark (e = accuracy); a compression
//! on utility, multiple-choice accuracy on anything else (MMLU, the facts retain set), with
//! perplexity shown beside it. Every criterion is scored for every pair, as the study did;
//! ownership only marks the rows.
//!
//! Which MC file is the forget benchmark: those named with `--forget-mc FILE` (matched by
//! content hash), or else any whose file name contains `forget` or starts with `wmdp`
//! (`facts_forget_mc.jsonl`, `wmdp_bio.jsonl`).

use serde::Serialize;
use serde_json::Value;

use super::metrics::Direction;
use crate::checkpoint::Evaluation;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    EditSuccess,
    Generalization,
    Locality,
    /// Accuracy on the forget benchmark.
    Forget,
    /// Accuracy on any other MC benchmark.
    Utility,
    Perplexity,
}

impl Kind {
    pub fn direction(self) -> Direction {
        match self {
            Kind::Forget => Direction::ErrorIsScore,
            Kind::Perplexity => Direction::Unbounded,
            _ => Direction::HigherIsBetter,
        }
    }

    /// The intervention category whose own criterion this is.
    pub fn owner(self) -> &'static str {
        match self {
            Kind::EditSuccess | Kind::Generalization | Kind::Locality => "edit",
            Kind::Forget => "unlearn",
            Kind::Utility | Kind::Perplexity => "compress",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::EditSuccess => "edit_success",
            Kind::Generalization => "generalization",
            Kind::Locality => "locality",
            Kind::Forget => "forget_acc",
            Kind::Utility => "utility_acc",
            Kind::Perplexity => "perplexity",
        }
    }
}

/// How to tell the forget benchmark from the utility ones.
#[derive(Clone, Debug, Default)]
pub struct ForgetRule {
    /// Content hashes (`blake3:...`) of the forget MC files; empty: go by file name.
    pub hashes: Vec<String>,
}

impl ForgetRule {
    pub fn is_forget(&self, data_path: &str, data_hash: &str) -> bool {
        if !self.hashes.is_empty() {
            return self.hashes.iter().any(|h| h == data_hash);
        }
        let name = std::path::Path::new(data_path)
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        name.contains("forget") || name.starts_with("wmdp")
    }
}

/// One criterion as recorded: the task, the metric inside it, the data file (by hash) and the
/// evaluation settings. Two checkpoints are compared on a criterion only when all four agree.
#[derive(Clone, Debug, Serialize)]
pub struct Criterion {
    pub kind: Kind,
    pub task: String,
    pub metric: String,
    /// The data file's name (for display; matching is by hash).
    pub data: String,
    pub data_blake3: String,
    pub settings: Value,
}

impl Criterion {
    /// The identity two evaluations must share to be compared.
    pub fn key(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}",
            self.task, self.metric, self.data_blake3, self.settings
        )
    }

    /// The identity across edit batches: the same as `key` without the batch's offset.
    pub fn group_key(&self) -> String {
        let mut s = self.settings.clone();
        if self.task == "edit" {
            if let Value::Object(o) = &mut s {
                o.remove("offset");
            }
        }
        format!(
            "{}\t{}\t{}\t{}",
            self.task, self.metric, self.data_blake3, s
        )
    }

    /// A short label: the metric and the data file's name.
    pub fn label(&self) -> String {
        format!("{} ({})", self.kind.name(), self.data)
    }
}

/// The criteria one evaluation yields, with their scores (absent metrics are skipped).
fn of_evaluation(e: &Evaluation, rule: &ForgetRule) -> Vec<(Criterion, f64)> {
    let kinds: Vec<(Kind, &str)> = match e.task.as_str() {
        "edit" => vec![
            (Kind::EditSuccess, "edit_success"),
            (Kind::Generalization, "generalization"),
            (Kind::Locality, "locality"),
        ],
        "mc" if rule.is_forget(&e.data.path, &e.data.blake3) => vec![(Kind::Forget, "acc")],
        "mc" => vec![(Kind::Utility, "acc")],
        "ppl" => vec![(Kind::Perplexity, "ppl")],
        _ => Vec::new(),
    };
    let data = std::path::Path::new(&e.data.path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| e.data.path.clone());
    kinds
        .into_iter()
        .filter_map(|(kind, metric)| {
            let v = e.metrics.get(metric)?.as_f64()?;
            v.is_finite().then(|| {
                (
                    Criterion {
                        kind,
                        task: e.task.clone(),
                        metric: metric.to_string(),
                        data: data.clone(),
                        data_blake3: e.data.blake3.clone(),
                        settings: e.settings.clone(),
                    },
                    v,
                )
            })
        })
        .collect()
}

/// The criteria of a list of evaluations of one checkpoint, by key; an evaluation repeated
/// with the same key counts once, the latest (as the study kept the most recent run).
pub fn criteria<'a>(
    evals: impl Iterator<Item = &'a Evaluation>,
    rule: &ForgetRule,
) -> Vec<(Criterion, f64)> {
    let mut out: Vec<(Criterion, f64)> = Vec::new();
    for e in evals {
        for (c, v) in of_evaluation(e, rule) {
            match out.iter_mut().find(|(o, _)| o.key() == c.key()) {
                Some(slot) => *slot = (c, v),
                None => out.push((c, v)),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::InputFile;
    use serde_json::json;

    fn eval(task: &str, path: &str, metrics: Value) -> Evaluation {
        Evaluation {
            checkpoint: "blake3:x".into(),
            task: task.into(),
            data: InputFile {
                role: "data".into(),
                path: path.into(),
                blake3: format!("blake3:{path}"),
            },
            settings: json!({"limit": 5}),
            metrics,
            seconds: 0.0,
            tool_version: "t".into(),
        }
    }

    #[test]
    fn kinds_follow_the_task_and_the_forget_rule() {
        let evals = [
            eval(
                "edit",
                "zsre.json",
                json!({"edit_success": 0.9, "generalization": 0.8, "locality": null}),
            ),
            eval("mc", "data/facts_forget_mc.jsonl", json!({"acc": 0.3})),
            eval("mc", "wmdp_bio.jsonl", json!({"acc": 0.26})),
            eval("mc", "facts_retain_mc.jsonl", json!({"acc": 0.7})),
            eval("ppl", "wiki.txt", json!({"ppl": 18.6})),
            eval("unknown", "x", json!({"acc": 1.0})),
        ];
        let cs = criteria(evals.iter(), &ForgetRule::default());
        let kinds: Vec<Kind> = cs.iter().map(|(c, _)| c.kind).collect();
        // Locality is null (no locality prompts): skipped, not zero.
        assert_eq!(
            kinds,
            [
                Kind::EditSuccess,
                Kind::Generalization,
                Kind::Forget,
                Kind::Forget,
                Kind::Utility,
                Kind::Perplexity
            ]
        );
        // Named by hash, only that file is the forget benchmark.
        let rule = ForgetRule {
            hashes: vec!["blake3:facts_retain_mc.jsonl".into()],
        };
        let cs = criteria(evals.iter(), &rule);
        let forget: Vec<&str> = cs
            .iter()
            .filter(|(c, _)| c.kind == Kind::Forget)
            .map(|(c, _)| c.data.as_str())
            .collect();
        assert_eq!(forget, ["facts_retain_mc.jsonl"]);
    }

    #[test]
    fn a_repeated_evaluation_counts_once_the_latest() {
        let evals = [
            eval("mc", "m.csv", json!({"acc": 0.2})),
            eval("mc", "m.csv", json!({"acc": 0.4})),
        ];
        let cs = criteria(evals.iter(), &ForgetRule::default());
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].1, 0.4);
    }

    #[test]
    fn edit_batches_share_a_group_key_not_a_key() {
        let mut a = eval("edit", "z.json", json!({"edit_success": 1.0}));
        let mut b = a.clone();
        a.settings = json!({"offset": 0, "limit": 50});
        b.settings = json!({"offset": 50, "limit": 50});
        let ca = &criteria([a].iter(), &ForgetRule::default())[0].0;
        let cb = &criteria([b].iter(), &ForgetRule::default())[0].0;
        assert_ne!(ca.key(), cb.key());
        assert_eq!(ca.group_key(), cb.group_key());
    }
}
