//! ROME's "known facts" (`dsets/compiled/known_1000.json`, SOURCES.md §1d): facts GPT-2 XL
//! already predicts, used for causal tracing. They are not edit requests (there is no new
//! target), so they have their own type and reader.

use std::path::Path;

use super::fields::Obj;
use super::source::{self, Limits};
use crate::error::Result;

const KIND: &str = "known facts";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownFact {
    /// 1-based line of the record in its file.
    pub line: usize,
    pub known_id: Option<u64>,
    pub subject: String,
    /// The filled-in prompt; the subject occurs in it (checked).
    pub prompt: String,
    /// The object the model is expected to produce.
    pub attribute: String,
    /// The prompt template with `{}` for the subject, when given.
    pub template: Option<String>,
    /// GPT-2 XL's continuation as recorded by ROME, when given.
    pub prediction: Option<String>,
    pub relation_id: Option<String>,
}

/// Reads a known-facts file (ROME's JSON array, or the same records as JSON Lines), in file order.
pub fn read_known_facts(path: &Path) -> Result<Vec<KnownFact>> {
    read_known_facts_with(path, &Limits::DEFAULT)
}

pub(crate) fn read_known_facts_with(path: &Path, limits: &Limits) -> Result<Vec<KnownFact>> {
    let text = source::read_text(path, KIND, limits)?;
    source::json_records(&text, path, KIND, limits)?
        .iter()
        .map(|r| fact(&Obj::new(r, path, KIND)?))
        .collect()
}

fn fact(o: &Obj) -> Result<KnownFact> {
    if !o.has("attribute") {
        return Err(o.err(
            None,
            format!(
                "not a known fact: it has keys [{}]; expected subject, prompt, attribute",
                o.keys()
            ),
        ));
    }
    let subject = o.text("subject")?;
    let prompt = o.text("prompt")?;
    if !prompt.contains(&subject) {
        return Err(o.err(
            Some("prompt"),
            format!("the subject {subject:?} does not occur in the prompt {prompt:?}"),
        ));
    }
    let known_id = match o.get("known_id") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| o.err(Some("known_id"), "expected a non-negative integer"))?,
        ),
    };
    Ok(KnownFact {
        line: o.line(),
        known_id,
        subject,
        prompt,
        attribute: o.text("attribute")?,
        template: o.opt_str("template")?.map(str::to_string),
        prediction: o.opt_str("prediction")?.map(str::to_string),
        relation_id: o.opt_str("relation_id")?.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::requests::tests::{file, shared};

    const GOOD: &str = r#"{"known_id": 0, "subject": "Vinson Massif", "attribute": "Antarctica", "template": "{} is located in the continent", "prediction": " of Antarctica.", "prompt": "Vinson Massif is located in the continent of", "relation_id": "P30"}"#;

    #[test]
    fn reads_array_and_lines() {
        let f = file(&format!("[\n  {GOOD},\n  {GOOD}\n]"));
        let r = read_known_facts(f.path()).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].line, 3);
        assert_eq!(r[0].attribute, "Antarctica");
        assert_eq!(r[0].relation_id.as_deref(), Some("P30"));
        let f = file(GOOD);
        assert_eq!(read_known_facts(f.path()).unwrap()[0].known_id, Some(0));
    }

    #[test]
    fn errors_name_line_and_field() {
        let cases = [
            (
                r#"{"prompt": "S is", "subject": "S"}"#,
                "line 2: not a known fact",
            ),
            (
                r#"{"prompt": "S is", "subject": "T", "attribute": "a"}"#,
                "line 2 field `prompt`",
            ),
            (
                r#"{"prompt": "S is", "subject": "S", "attribute": ""}"#,
                "line 2 field `attribute`",
            ),
            (
                r#"{"prompt": "S is", "subject": "S", "attribute": "a", "known_id": -3}"#,
                "line 2 field `known_id`",
            ),
            ("3", "line 2: expected a JSON object"),
        ];
        for (bad, want) in cases {
            let f = file(&format!("{GOOD}\n{bad}\n"));
            let e = read_known_facts(f.path()).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn real_file_counts_and_first_record() {
        let Some(p) = shared("knowledge_editing/rome_known_1000.json") else {
            return;
        };
        let r = read_known_facts(&p).unwrap();
        assert_eq!(r.len(), 1209);
        assert_eq!(r[0].subject, "Vinson Massif");
        assert_eq!(r[0].prompt, "Vinson Massif is located in the continent of");
        assert_eq!(r[0].line, 2);
    }
}
