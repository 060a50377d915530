//! Knowledge-editing requests: zsRE (MEND format), CounterFact (EasyEdit's flattened format) and
//! ROME `requested_rewrite` records, read from JSON Lines or a JSON array and normalised into one
//! [`EditRequest`] type. The per-format rules live in `requests/{zsre,counterfact,rome}.rs`.
//!
//! The format is detected per record from its keys; a file must hold one format throughout.
//! Every record is parsed and its format checked, but only the selected window
//! (`offset`, `limit`) is normalised and validated: the zsRE file here has two records with an
//! empty `alt` (lines 535 and 724), and a run that edits records 0..50 should not fail on them.
//! Selecting a bad record is an error naming its line, never a silent skip, so edit sets keep
//! their meaning.

mod counterfact;
mod rome;
mod zsre;

use std::path::Path;

use super::fields::Obj;
use super::source::{self, Limits};
use crate::error::{Error, Result};

const KIND: &str = "edit requests";

/// A prompt that an edit should leave alone, with the answer it is scored against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalityPrompt {
    pub prompt: String,
    pub answer: String,
}

/// One edit, the same shape whatever file it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EditRequest {
    /// 1-based line of the record in its file.
    pub line: usize,
    /// The dataset's case id where it has one (CounterFact `case_id`, ROME `case_<id>.json`).
    pub case_id: Option<String>,
    /// The full prompt with the subject filled in; the subject occurs in it (checked).
    pub prompt: String,
    pub subject: String,
    /// The new object, verbatim: a leading space is kept if the data has one (see `zsre.rs`).
    pub target_new: String,
    pub target_true: Option<String>,
    pub rephrase_prompts: Vec<String>,
    pub locality: Vec<LocalityPrompt>,
}

impl EditRequest {
    /// The prompt with the first occurrence of the subject replaced by `{}`: the template form
    /// ROME and MEMIT take. EasyEdit builds it with Python's `str.replace`, which replaces every
    /// occurrence and then fails on `.format`; the first occurrence is what its token lookup
    /// would find, so we use that.
    pub fn template(&self) -> String {
        self.prompt.replacen(&self.subject, "{}", 1)
    }
}

/// Which layout a request file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFormat {
    /// zsRE as distributed with MEND/ROME: `subject`, `src`, `alt`, `answers`, `rephrase`,
    /// `loc`, `loc_ans`.
    ZsreMend,
    /// EasyEdit's flattened CounterFact: `prompt`, `subject`, `target_new`, `ground_truth`,
    /// `rephrase_prompt`, `locality_prompt`, `locality_ground_truth`.
    CounterFactEasyEdit,
    /// ROME's `requested_rewrite` (template with `{}`), bare or under `requested_rewrite`
    /// (counterfact.json) or `request` (`counterfact_rome_requests_100.jsonl`).
    RomeRequestedRewrite,
}

impl RequestFormat {
    pub fn name(self) -> &'static str {
        match self {
            RequestFormat::ZsreMend => "zsRE (MEND)",
            RequestFormat::CounterFactEasyEdit => "CounterFact (EasyEdit)",
            RequestFormat::RomeRequestedRewrite => "ROME requested_rewrite",
        }
    }

    /// The format a record's keys say it is in, if any.
    fn detect(o: &Obj) -> Option<RequestFormat> {
        let target_is_object = matches!(o.get("target_new"), Some(serde_json::Value::Object(_)));
        if o.has("requested_rewrite") || o.has("request") || (o.has("prompt") && target_is_object) {
            Some(RequestFormat::RomeRequestedRewrite)
        } else if o.has("src") && o.has("alt") {
            Some(RequestFormat::ZsreMend)
        } else if o.has("prompt") && o.has("target_new") {
            Some(RequestFormat::CounterFactEasyEdit)
        } else {
            None
        }
    }

    fn normalise(self, o: &Obj) -> Result<EditRequest> {
        match self {
            RequestFormat::ZsreMend => zsre::normalise(o),
            RequestFormat::CounterFactEasyEdit => counterfact::normalise(o),
            RequestFormat::RomeRequestedRewrite => rome::normalise(o),
        }
    }
}

/// Reads the edit requests in `path` (JSON Lines or one JSON array), skipping the first `offset`
/// records and keeping at most `limit`. Returns the file's format and the normalised requests
/// in file order.
pub fn read_requests(
    path: &Path,
    offset: usize,
    limit: Option<usize>,
) -> Result<(RequestFormat, Vec<EditRequest>)> {
    read_requests_with(path, offset, limit, &Limits::DEFAULT)
}

pub(crate) fn read_requests_with(
    path: &Path,
    offset: usize,
    limit: Option<usize>,
    limits: &Limits,
) -> Result<(RequestFormat, Vec<EditRequest>)> {
    let text = source::read_text(path, KIND, limits)?;
    let records = source::json_records(&text, path, KIND, limits)?;
    let objs = records
        .iter()
        .map(|r| Obj::new(r, path, KIND))
        .collect::<Result<Vec<_>>>()?;

    let mut format: Option<(RequestFormat, usize)> = None;
    for o in &objs {
        let Some(this) = RequestFormat::detect(o) else {
            return Err(o.err(None, unknown_record_message(o)));
        };
        match format {
            None => format = Some((this, o.line())),
            Some((first, first_line)) if first != this => {
                return Err(o.err(
                    None,
                    format!(
                        "a {} record, but line {first_line} is {}; one file must hold one format",
                        this.name(),
                        first.name()
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    // `json_records` refuses empty files, so there is a first record.
    let Some((format, _)) = format else {
        return Err(Error::format(KIND, path, "file", "no records"));
    };

    if limit == Some(0) {
        return Err(Error::usage(
            "limit",
            "a limit of 0 selects no edit requests",
        ));
    }
    if offset >= objs.len() {
        return Err(Error::usage(
            "offset",
            format!(
                "offset {offset} is past the end of `{}` ({} records)",
                path.display(),
                objs.len()
            ),
        ));
    }
    let end = limit.map_or(objs.len(), |n| offset.saturating_add(n).min(objs.len()));
    let requests = objs
        .get(offset..end)
        .unwrap_or_default()
        .iter()
        .map(|o| format.normalise(o))
        .collect::<Result<Vec<_>>>()?;
    Ok((format, requests))
}

fn unknown_record_message(o: &Obj) -> String {
    let hint = if o.has("known_id") || (o.has("attribute") && o.has("template")) {
        " (this looks like ROME's known-facts data: read it with `read_known_facts`)"
    } else {
        ""
    };
    format!(
        "not an edit request: it has keys [{}]; expected zsRE (src, alt, ...), \
         CounterFact EasyEdit (prompt, target_new, ...) or ROME (requested_rewrite or request){hint}",
        o.keys()
    )
}

/// The editing methods locate the subject inside the prompt (ROME/MEMIT's `subject_last`
/// token), so a prompt without its subject cannot be edited: refuse it at the reader.
fn require_subject(o: &Obj, field: &str, prompt: &str, subject: &str) -> Result<()> {
    if prompt.contains(subject) {
        Ok(())
    } else {
        Err(o.err(
            Some(field),
            format!("the subject {subject:?} does not occur in the prompt {prompt:?}"),
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    pub fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix(".jsonl")
            .tempfile()
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    pub fn read_err(text: &str) -> String {
        let f = file(text);
        read_requests(f.path(), 0, None).unwrap_err().to_string()
    }

    /// A file in `fixtures/data` (always in the repository).
    pub fn fixture(rel: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/data")
            .join(rel)
    }

    /// A file in the shared data folder (`$INTERVENE_SHARED_DATA`, else `../shared/data` next to
    /// the crate), or `None`, with the reason printed, when this checkout has none.
    pub fn shared(rel: &str) -> Option<std::path::PathBuf> {
        let root = std::env::var_os("INTERVENE_SHARED_DATA")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
        let p = root.join(rel);
        if p.exists() {
            Some(p)
        } else {
            eprintln!("skipped: {} is absent in this checkout", p.display());
            None
        }
    }

    const ZSRE: &str = r#"{"subject": "UniFirst", "src": "What is the product made by UniFirst?", "alt": "x", "answers": ["uniform"], "rephrase": "r", "loc": "nq question: q", "loc_ans": "a"}"#;
    const CF: &str = r#"{"case_id": 0, "prompt": "p S", "subject": "S", "target_new": "t"}"#;

    #[test]
    fn unknown_record_names_line_and_keys() {
        let e = read_err(&format!("{ZSRE}\n{{\"foo\": 1, \"bar\": 2}}\n"));
        assert!(e.contains("line 2") && e.contains("[bar, foo]"), "{e}");
    }

    #[test]
    fn known_facts_get_a_hint() {
        let e = read_err(
            r#"[{"known_id": 0, "subject": "S", "prompt": "S is", "attribute": "a", "template": "{} is"}]"#,
        );
        assert!(
            e.contains("line 1") && e.contains("read_known_facts"),
            "{e}"
        );
    }

    #[test]
    fn mixed_formats_are_an_error() {
        let e = read_err(&format!("{ZSRE}\n\n{CF}\n"));
        assert!(
            e.contains("line 3") && e.contains("CounterFact") && e.contains("line 1 is zsRE"),
            "{e}"
        );
    }

    #[test]
    fn non_object_record_is_an_error() {
        let e = read_err(&format!("{ZSRE}\n[1, 2]\n"));
        assert!(e.contains("line 2") && e.contains("JSON object"), "{e}");
    }

    #[test]
    fn empty_file_is_an_error() {
        assert!(read_err("\n").contains("no records"));
    }

    #[test]
    fn offset_and_limit_select_a_window() {
        let text = (0..5)
            .map(|i| {
                format!(r#"{{"case_id": {i}, "prompt": "p S", "subject": "S", "target_new": "t"}}"#)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let f = file(&text);
        let (fmt, r) = read_requests(f.path(), 1, Some(2)).unwrap();
        assert_eq!(fmt, RequestFormat::CounterFactEasyEdit);
        let ids: Vec<_> = r.iter().map(|r| r.case_id.clone().unwrap()).collect();
        assert_eq!(ids, ["1", "2"]);
        assert_eq!(read_requests(f.path(), 3, Some(99)).unwrap().1.len(), 2);
        assert_eq!(read_requests(f.path(), 0, None).unwrap().1.len(), 5);
        let e = read_requests(f.path(), 5, None).unwrap_err().to_string();
        assert!(e.contains("past the end") && e.contains("5 records"), "{e}");
        assert!(read_requests(f.path(), 0, Some(0)).is_err());
    }

    #[test]
    fn only_the_selected_window_is_validated() {
        let bad = r#"{"prompt": "p S", "subject": "S", "target_new": ""}"#;
        let f = file(&format!("{CF}\n{bad}\n{CF}\n"));
        assert_eq!(read_requests(f.path(), 0, Some(1)).unwrap().1.len(), 1);
        assert_eq!(read_requests(f.path(), 2, None).unwrap().1.len(), 1);
        let e = read_requests(f.path(), 0, None).unwrap_err().to_string();
        assert!(
            e.contains("line 2 field `target_new`") && e.contains("empty"),
            "{e}"
        );
    }

    #[test]
    fn template_replaces_the_first_subject() {
        let f = file(CF);
        let (_, r) = read_requests(f.path(), 0, None).unwrap();
        assert_eq!(r[0].template(), "p {}");
    }

    #[test]
    fn fixtures_read_in_every_format() {
        let cases = [
            ("zsre_mend_train_first20.jsonl", RequestFormat::ZsreMend, 20),
            (
                "counterfact_easyedit_first20.jsonl",
                RequestFormat::CounterFactEasyEdit,
                20,
            ),
            (
                "counterfact_rome_requests_first10.jsonl",
                RequestFormat::RomeRequestedRewrite,
                10,
            ),
        ];
        for (name, want_fmt, want_len) in cases {
            let (fmt, r) = read_requests(&fixture(name), 0, None).unwrap();
            assert_eq!((fmt, r.len()), (want_fmt, want_len), "{name}");
            assert!(r.iter().all(|r| r.prompt.contains(&r.subject)), "{name}");
        }
        let (_, z) = read_requests(&fixture("zsre_mend_train_first20.jsonl"), 19, None).unwrap();
        assert_eq!(z[0].line, 20);
    }

    #[test]
    fn json_array_files_are_accepted() {
        let f = file(&format!("[\n{CF},\n{CF}\n]\n"));
        let (_, r) = read_requests(f.path(), 0, None).unwrap();
        assert_eq!(r.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 3]);
    }
}
