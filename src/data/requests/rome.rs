//! ROME `requested_rewrite` records (algorithms.md §6 "Inputs"): a prompt template with one `{}`,
//! the subject, `target_new.str` and `target_true.str`. Three wrappings are accepted:
//! ROME's `counterfact.json` (`requested_rewrite` plus `paraphrase_prompts`,
//! `neighborhood_prompts`, `case_id`), the `{"fname": "case_<id>.json", "request": {...}}` lines
//! of `counterfact_rome_requests_100.jsonl`, and a bare rewrite object.
//!
//! The prompt is the template filled with the subject (`template.format(subject)`, as MQuAKE's
//! loader in the study does). Python's `format` fails on a second `{}` or on other braces, so
//! those templates are refused. Neighbourhood prompts given as plain strings are scored against
//! `target_true` (ROME's CounterFact evaluation); `{prompt, target}` objects carry their own.

use serde_json::Value;

use super::counterfact::case_id;
use super::{require_subject, EditRequest, LocalityPrompt};
use crate::data::fields::{type_name, Obj};
use crate::error::Result;

pub(super) fn normalise(o: &Obj) -> Result<EditRequest> {
    let rewrite = if o.has("requested_rewrite") {
        if let Some(Value::Array(_)) = o.get("requested_rewrite") {
            return Err(o.err(
                Some("requested_rewrite"),
                "a list of rewrites (MQuAKE layout) is not supported; give one rewrite per record",
            ));
        }
        o.child("requested_rewrite")?
    } else if o.has("request") {
        o.child("request")?
    } else {
        o.clone()
    };
    let template = rewrite.text("prompt")?;
    if template.matches("{}").count() != 1 || template.matches(['{', '}']).count() != 2 {
        return Err(rewrite.err(
            Some("prompt"),
            format!(
                "expected a template with exactly one `{{}}` and no other braces, got {template:?}"
            ),
        ));
    }
    let subject = rewrite.text("subject")?;
    let prompt = template.replacen("{}", &subject, 1);
    require_subject(&rewrite, "prompt", &prompt, &subject)?;
    let target_new = target(&rewrite, "target_new")?
        .ok_or_else(|| rewrite.err(Some("target_new"), "missing"))?;
    let target_true = target(&rewrite, "target_true")?;

    let rephrase_prompts = match o.get("paraphrase_prompts") {
        None | Some(Value::Null) => Vec::new(),
        Some(_) => o.texts("paraphrase_prompts")?,
    };
    let locality = neighbourhood(o, target_true.as_deref())?;
    let case_id = match case_id(o)? {
        Some(id) => Some(id),
        None => o.opt_str("fname")?.map(case_from_fname),
    };
    Ok(EditRequest {
        line: o.line(),
        case_id,
        prompt,
        subject,
        target_new,
        target_true,
        rephrase_prompts,
        locality,
    })
}

/// `target_new` / `target_true`: ROME's `{"str": ..., "id": ...}`, or a plain string.
fn target(o: &Obj, key: &str) -> Result<Option<String>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => o.checked(key, s).map(Some),
        Some(Value::Object(_)) => o.child(key)?.text("str").map(Some),
        Some(other) => Err(o.err(
            Some(key),
            format!(
                "expected {{\"str\": ...}} or a string, got {}",
                type_name(other)
            ),
        )),
    }
}

fn neighbourhood(o: &Obj, target_true: Option<&str>) -> Result<Vec<LocalityPrompt>> {
    let key = "neighborhood_prompts";
    let items = match o.get(key) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(o.err(
                Some(key),
                format!("expected a list, got {}", type_name(other)),
            ))
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("{key}[{i}]");
        let (prompt, answer) = match item {
            Value::String(p) => {
                let answer = target_true.ok_or_else(|| {
                    o.err(
                        Some(&field),
                        "a plain neighbourhood prompt is scored against `target_true`, which is missing",
                    )
                })?;
                (p.as_str(), answer)
            }
            Value::Object(m) => match (m.get("prompt"), m.get("target")) {
                (Some(Value::String(p)), Some(Value::String(t))) => (p.as_str(), t.as_str()),
                _ => {
                    return Err(o.err(
                        Some(&field),
                        "expected a string or {\"prompt\": string, \"target\": string}",
                    ))
                }
            },
            other => {
                return Err(o.err(
                    Some(&field),
                    format!("expected a string or an object, got {}", type_name(other)),
                ))
            }
        };
        out.push(LocalityPrompt {
            prompt: o.checked(&field, prompt)?,
            answer: o.checked(&field, answer)?,
        });
    }
    Ok(out)
}

/// `case_1004.json` → `1004`; any other name is kept whole.
fn case_from_fname(fname: &str) -> String {
    fname
        .strip_prefix("case_")
        .and_then(|s| s.strip_suffix(".json"))
        .unwrap_or(fname)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{file, shared};
    use super::super::{read_requests, RequestFormat};

    const WRAPPED: &str = r#"{"fname": "case_1004.json", "request": {"prompt": "The twin city of {} is", "relation_id": "P190", "target_new": {"str": "Shanghai", "id": "Q8686"}, "target_true": {"str": "Beijing", "id": "Q956"}, "subject": "Tirana"}}"#;
    const COUNTERFACT: &str = r#"{"case_id": 7, "pararel_idx": 1, "requested_rewrite": {"prompt": "{}, the", "relation_id": "P413", "target_new": {"str": "outfielder"}, "target_true": {"str": "midfielder"}, "subject": "Ivan Gudelj"}, "paraphrase_prompts": ["a. Ivan Gudelj plays as"], "neighborhood_prompts": ["X plays as", {"prompt": "Y is a", "target": "goalkeeper"}], "attribute_prompts": [], "generation_prompts": []}"#;

    fn edit(json: &str, pointer: &str, value: serde_json::Value) -> String {
        let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
        *v.pointer_mut(pointer).unwrap() = value;
        v.to_string()
    }

    #[test]
    fn wrapped_request_is_filled_in() {
        let f = file(WRAPPED);
        let (fmt, r) = read_requests(f.path(), 0, None).unwrap();
        assert_eq!(fmt, RequestFormat::RomeRequestedRewrite);
        let r = &r[0];
        assert_eq!(r.case_id.as_deref(), Some("1004"));
        assert_eq!(r.prompt, "The twin city of Tirana is");
        assert_eq!(r.template(), "The twin city of {} is");
        assert_eq!(r.target_new, "Shanghai");
        assert_eq!(r.target_true.as_deref(), Some("Beijing"));
        assert!(r.rephrase_prompts.is_empty() && r.locality.is_empty());
    }

    #[test]
    fn counterfact_record_keeps_lists() {
        let f = file(COUNTERFACT);
        let (_, r) = read_requests(f.path(), 0, None).unwrap();
        let r = &r[0];
        assert_eq!(r.case_id.as_deref(), Some("7"));
        assert_eq!(r.prompt, "Ivan Gudelj, the");
        assert_eq!(r.rephrase_prompts, ["a. Ivan Gudelj plays as"]);
        assert_eq!(r.locality[0].answer, "midfielder");
        assert_eq!(r.locality[1].answer, "goalkeeper");
    }

    #[test]
    fn bare_rewrite_is_accepted() {
        let f = file(r#"{"prompt": "{} is in", "subject": "S", "target_new": {"str": "T"}}"#);
        let (fmt, r) = read_requests(f.path(), 0, None).unwrap();
        assert_eq!(fmt, RequestFormat::RomeRequestedRewrite);
        assert_eq!(r[0].prompt, "S is in");
    }

    #[test]
    fn errors_name_line_and_field() {
        use serde_json::json;
        let cases = [
            (
                WRAPPED,
                "/request/prompt",
                json!("no braces"),
                "field `request.prompt`",
            ),
            (
                WRAPPED,
                "/request/prompt",
                json!("{} and {}"),
                "field `request.prompt`",
            ),
            (
                WRAPPED,
                "/request/prompt",
                json!("{0} x"),
                "field `request.prompt`",
            ),
            (
                WRAPPED,
                "/request/target_new/str",
                json!(""),
                "field `request.target_new.str`",
            ),
            (
                WRAPPED,
                "/request/target_new",
                json!(3),
                "field `request.target_new`",
            ),
            (
                WRAPPED,
                "/request/subject",
                json!(null),
                "field `request.subject`",
            ),
            (WRAPPED, "/request", json!("x"), "field `request`"),
            (
                COUNTERFACT,
                "/requested_rewrite",
                json!([{}]),
                "field `requested_rewrite`",
            ),
            (
                COUNTERFACT,
                "/requested_rewrite/target_true",
                json!(null),
                "field `neighborhood_prompts[0]`",
            ),
            (
                COUNTERFACT,
                "/neighborhood_prompts/1",
                json!({"prompt": "p"}),
                "field `neighborhood_prompts[1]`",
            ),
            (
                COUNTERFACT,
                "/paraphrase_prompts",
                json!([1]),
                "field `paraphrase_prompts[0]`",
            ),
        ];
        for (base, pointer, value, want) in cases {
            let bad = edit(base, pointer, value.clone());
            let f = file(&format!("{base}\n{bad}\n"));
            let e = read_requests(f.path(), 0, None).unwrap_err().to_string();
            assert!(
                e.contains(&format!("line 2 {want}")),
                "{pointer}={value}: {e}"
            );
        }
    }

    #[test]
    fn real_file_counts_and_first_record() {
        let Some(p) = shared("knowledge_editing/counterfact_rome_requests_100.jsonl") else {
            return;
        };
        let (fmt, r) = read_requests(&p, 0, None).unwrap();
        assert_eq!((fmt, r.len()), (RequestFormat::RomeRequestedRewrite, 100));
        assert_eq!(r[0].case_id.as_deref(), Some("1004"));
        assert_eq!(r[0].prompt, "The twin city of Tirana is");
        assert_eq!(r[0].target_new, "Shanghai");
        assert_eq!(r[99].subject, "Andrew Jacobson");
    }
}
