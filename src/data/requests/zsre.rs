//! zsRE records in the MEND/ROME layout, normalised as the composable-interventions study does
//! (`utils/edit_generator.py::get_edits_zsre`, summarised in composability.md §2):
//! prompt = `src` (the question already names the subject), target_new = `alt`,
//! target_true = `answers[0]`, rephrase = `rephrase`, locality = `loc` with the
//! "nq question:" prefix removed and whitespace trimmed (`loc.split("nq question:")[1].strip()`),
//! answered by `loc_ans`.
//!
//! `alt` is kept verbatim, including the leading space that 9 records of the MEND train split
//! carry: the study passes it through too (ROME's own loader strips it). Callers that tokenise
//! `" " + target` should know the space may already be there.

use super::{require_subject, EditRequest, LocalityPrompt};
use crate::data::fields::Obj;
use crate::error::Result;
use serde_json::Value;

const NQ_PREFIX: &str = "nq question:";

pub(super) fn normalise(o: &Obj) -> Result<EditRequest> {
    let subject = o.text("subject")?;
    let prompt = o.text("src")?;
    require_subject(o, "src", &prompt, &subject)?;
    let target_new = o.text("alt")?;
    let target_true = match o.get("answers") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) if a.is_empty() => None,
        Some(_) => o.texts("answers")?.into_iter().next(),
    };
    let rephrase_prompts = o.texts("rephrase")?;
    let loc = o.text("loc")?;
    // Python's `split(p)[1]` is the text between the first and second occurrence of `p`.
    let Some(question) = loc.split(NQ_PREFIX).nth(1) else {
        return Err(o.err(
            Some("loc"),
            format!("expected the {NQ_PREFIX:?} prefix of the MEND zsRE split, got {loc:?}"),
        ));
    };
    let question = o.checked("loc", question.trim())?;
    let answer = o.text("loc_ans")?;
    Ok(EditRequest {
        line: o.line(),
        case_id: None,
        prompt,
        subject,
        target_new,
        target_true,
        rephrase_prompts,
        locality: vec![LocalityPrompt {
            prompt: question,
            answer,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{file, read_err, shared};
    use super::super::{read_requests, RequestFormat};

    const GOOD: &str = r#"{"subject": "UniFirst", "src": "What is the product made by UniFirst?", "pred": "uniform", "rephrase": "What will be the product of UniFirst?", "alt": " unmanned aircraft", "answers": ["uniform", "x"], "loc": "nq question: john goodman's character", "loc_ans": "Walter Sobchak", "cond": "c"}"#;

    fn with(key: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        v[key] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    #[test]
    fn normalises_like_the_study() {
        let f = file(GOOD);
        let (fmt, r) = read_requests(f.path(), 0, None).unwrap();
        assert_eq!(fmt, RequestFormat::ZsreMend);
        let r = &r[0];
        assert_eq!(r.prompt, "What is the product made by UniFirst?");
        assert_eq!(r.target_new, " unmanned aircraft");
        assert_eq!(r.target_true.as_deref(), Some("uniform"));
        assert_eq!(
            r.rephrase_prompts,
            ["What will be the product of UniFirst?"]
        );
        assert_eq!(r.locality[0].prompt, "john goodman's character");
        assert_eq!(r.locality[0].answer, "Walter Sobchak");
        assert_eq!(r.template(), "What is the product made by {}?");
    }

    #[test]
    fn field_errors_name_line_and_field() {
        let cases = [
            ("alt", r#""""#, "field `alt`"),
            ("alt", r#""nan""#, "field `alt`"),
            ("alt", "null", "field `alt`"),
            ("subject", r#""Acme""#, "field `src`"),
            ("loc", r#""who plays x""#, "field `loc`"),
            ("loc", r#""nq question:   ""#, "field `loc`"),
            ("loc_ans", "3", "field `loc_ans`"),
            ("rephrase", "[]", ""),
            ("answers", "[1]", "field `answers[0]`"),
        ];
        for (key, value, want) in cases {
            let text = format!("{GOOD}\n{}\n", with(key, value));
            let f = file(&text);
            match read_requests(f.path(), 0, None) {
                Err(e) if !want.is_empty() => {
                    let e = e.to_string();
                    assert!(e.contains(&format!("line 2 {want}")), "{key}={value}: {e}");
                }
                Err(e) => panic!("{key}={value}: unexpected error {e}"),
                Ok(_) if want.is_empty() => {}
                Ok(_) => panic!("{key}={value}: accepted"),
            }
        }
    }

    #[test]
    fn missing_field_is_named() {
        let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        v.as_object_mut().unwrap().remove("loc_ans");
        let e = read_err(&v.to_string());
        assert!(e.contains("line 1 field `loc_ans`: missing"), "{e}");
    }

    #[test]
    fn real_file_counts_and_first_record() {
        let Some(p) = shared("knowledge_editing/zsre_mend_train_800.jsonl") else {
            return;
        };
        // Lines 535 and 724 have an empty `alt` (SOURCES.md §1a data, checked by hand).
        let e = read_requests(&p, 0, None).unwrap_err().to_string();
        assert!(e.contains("line 535 field `alt`"), "{e}");
        let (fmt, head) = read_requests(&p, 0, Some(534)).unwrap();
        assert_eq!((fmt, head.len()), (RequestFormat::ZsreMend, 534));
        let (_, mid) = read_requests(&p, 535, Some(188)).unwrap();
        let (_, tail) = read_requests(&p, 724, None).unwrap();
        assert_eq!(head.len() + 1 + mid.len() + 1 + tail.len(), 800);
        assert_eq!(tail.last().unwrap().line, 800);
        let r = &head[0];
        assert_eq!(r.subject, "UniFirst");
        assert_eq!(r.target_new, "unmanned aircraft");
        assert_eq!(
            r.locality[0].prompt,
            "john goodman's character in the big lebowski"
        );
        assert_eq!(r.locality[0].answer, "Walter Sobchak");
    }
}
