//! CounterFact in EasyEdit's flattened layout, taken verbatim as the study's
//! `get_edits_counterfact` does: prompt, subject, target_new, ground_truth (→ target_true),
//! rephrase_prompt, locality_prompt answered by locality_ground_truth.
//!
//! EasyEdit writes the prompt fields either as one string or as a list, so both are accepted.
//! Only `prompt`, `subject` and `target_new` are required, which also makes this the layout for
//! hand-written request files.

use super::{require_subject, EditRequest, LocalityPrompt};
use crate::data::fields::Obj;
use crate::error::Result;
use serde_json::Value;

pub(super) fn normalise(o: &Obj) -> Result<EditRequest> {
    let subject = o.text("subject")?;
    let prompt = o.text("prompt")?;
    require_subject(o, "prompt", &prompt, &subject)?;
    let target_new = o.text("target_new")?;
    let target_true = match o.opt_str("ground_truth")? {
        Some(s) => Some(o.checked("ground_truth", s)?),
        None => None,
    };
    let rephrase_prompts = optional_texts(o, "rephrase_prompt")?;
    let prompts = optional_texts(o, "locality_prompt")?;
    let answers = optional_texts(o, "locality_ground_truth")?;
    if prompts.len() != answers.len() {
        return Err(o.err(
            Some("locality_ground_truth"),
            format!(
                "{} answers for {} locality prompts",
                answers.len(),
                prompts.len()
            ),
        ));
    }
    let locality = prompts
        .into_iter()
        .zip(answers)
        .map(|(prompt, answer)| LocalityPrompt { prompt, answer })
        .collect();
    Ok(EditRequest {
        line: o.line(),
        case_id: case_id(o)?,
        prompt,
        subject,
        target_new,
        target_true,
        rephrase_prompts,
        locality,
    })
}

fn optional_texts(o: &Obj, key: &str) -> Result<Vec<String>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(_) => o.texts(key),
    }
}

/// `case_id` as a string: CounterFact writes an integer, other tools a string.
pub(super) fn case_id(o: &Obj) -> Result<Option<String>> {
    match o.get("case_id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.is_u64() => Ok(Some(n.to_string())),
        Some(Value::String(s)) => o.checked("case_id", s).map(Some),
        Some(_) => Err(o.err(
            Some("case_id"),
            "expected a non-negative integer or a string",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{file, shared};
    use super::super::{read_requests, RequestFormat};

    const GOOD: &str = r#"{"case_id": 0, "prompt": "The mother tongue of Danielle Darrieux is", "target_new": "English", "subject": "Danielle Darrieux", "ground_truth": "French", "rephrase_prompt": "Where Danielle Darrieux is from, people speak", "locality_prompt": "Michel Rocard is a native speaker of", "locality_ground_truth": "French"}"#;

    fn with(key: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        v[key] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    #[test]
    fn normalises_verbatim() {
        let f = file(GOOD);
        let (fmt, r) = read_requests(f.path(), 0, None).unwrap();
        assert_eq!(fmt, RequestFormat::CounterFactEasyEdit);
        let r = &r[0];
        assert_eq!(r.case_id.as_deref(), Some("0"));
        assert_eq!(r.prompt, "The mother tongue of Danielle Darrieux is");
        assert_eq!(r.target_true.as_deref(), Some("French"));
        assert_eq!(r.rephrase_prompts.len(), 1);
        assert_eq!(r.locality[0].prompt, "Michel Rocard is a native speaker of");
        assert_eq!(r.locality[0].answer, "French");
    }

    #[test]
    fn lists_and_minimal_records_are_accepted() {
        let list = with("locality_prompt", r#"["a", "b"]"#);
        let list = {
            let mut v: serde_json::Value = serde_json::from_str(&list).unwrap();
            v["locality_ground_truth"] = serde_json::json!(["x", "y"]);
            v.to_string()
        };
        let minimal = r#"{"prompt": "S is", "subject": "S", "target_new": "t"}"#;
        let f = file(&format!("{list}\n{minimal}\n"));
        let (_, r) = read_requests(f.path(), 0, None).unwrap();
        assert_eq!(r[0].locality.len(), 2);
        assert_eq!(r[0].locality[1].answer, "y");
        assert!(r[1].locality.is_empty() && r[1].target_true.is_none());
    }

    #[test]
    fn field_errors_name_line_and_field() {
        let cases = [
            ("subject", r#""Someone Else""#, "field `prompt`"),
            ("target_new", r#""  ""#, "field `target_new`"),
            ("target_new", r#""None""#, "field `target_new`"),
            ("ground_truth", "7", "field `ground_truth`"),
            (
                "locality_ground_truth",
                r#"["a", "b"]"#,
                "field `locality_ground_truth`",
            ),
            ("rephrase_prompt", r#"[""]"#, "field `rephrase_prompt[0]`"),
            ("case_id", "-1", "field `case_id`"),
        ];
        for (key, value, want) in cases {
            let f = file(&format!("{GOOD}\n{}\n", with(key, value)));
            let e = read_requests(f.path(), 0, None).unwrap_err().to_string();
            assert!(e.contains(&format!("line 2 {want}")), "{key}={value}: {e}");
        }
    }

    #[test]
    fn real_file_counts_and_first_record() {
        let Some(p) = shared("knowledge_editing/counterfact_easyedit_edit_1800.jsonl") else {
            return;
        };
        let (fmt, r) = read_requests(&p, 0, None).unwrap();
        assert_eq!((fmt, r.len()), (RequestFormat::CounterFactEasyEdit, 1800));
        assert_eq!(r[0].case_id.as_deref(), Some("0"));
        assert_eq!(r[0].subject, "Danielle Darrieux");
        assert_eq!(r[0].target_new, "English");
        assert_eq!(r[0].target_true.as_deref(), Some("French"));
        assert_eq!(r[0].locality[0].answer, "French");
    }
}
