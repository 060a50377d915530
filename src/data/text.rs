//! Plain-text corpora (calibration, perplexity, unlearning forget/retain sets) and the WikiText-2
//! join used by the study's perplexity evaluation.
//!
//! A `.jsonl`/`.json` file is one document per record; anything else is one document holding the
//! whole file. Record fields, in order of preference:
//! * `text` (C4, WMDP forget corpora);
//! * `question` + `answer` (TOFU), joined by one space into `"question answer"`: the question
//!   then its answer as plain text, with no chat template, since templates belong to the model
//!   and are applied after reading;
//! * `prompt` + `response` (the same TOFU data as renamed by some copies), joined the same way;
//! * a bare JSON string.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::fields::Obj;
use super::source::{self, Limits};
use crate::error::{Error, Result};

const KIND: &str = "text corpus";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextCorpus {
    pub documents: Vec<String>,
    pub path: PathBuf,
}

/// Reads a corpus: JSON Lines (or a JSON array) by extension, plain text otherwise.
pub fn read_text_corpus(path: &Path) -> Result<TextCorpus> {
    read_text_corpus_with(path, &Limits::DEFAULT)
}

pub(crate) fn read_text_corpus_with(path: &Path, limits: &Limits) -> Result<TextCorpus> {
    let text = source::read_text(path, KIND, limits)?;
    let is_json = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jsonl" | "json" | "ndjson"));
    let documents = if is_json {
        source::json_records(&text, path, KIND, limits)?
            .iter()
            .map(|r| document(r, path))
            .collect::<Result<Vec<_>>>()?
    } else {
        if text.trim().is_empty() {
            return Err(Error::format(KIND, path, "file", "empty file"));
        }
        vec![text]
    };
    Ok(TextCorpus {
        documents,
        path: path.to_path_buf(),
    })
}

fn document(r: &source::Record, path: &Path) -> Result<String> {
    if let Value::String(s) = &r.value {
        return Ok(s.clone());
    }
    let o = Obj::new(r, path, KIND)?;
    if o.has("text") {
        return Ok(o.str("text")?.to_string());
    }
    for (q, a) in [("question", "answer"), ("prompt", "response")] {
        if o.has(q) && o.has(a) {
            return Ok(format!("{} {}", o.str(q)?, o.str(a)?));
        }
    }
    Err(o.err(
        None,
        format!(
            "no text field: it has keys [{}]; expected `text`, `question` + `answer`, or `prompt` + `response`",
            o.keys()
        ),
    ))
}

/// WikiText rows as Hugging Face `datasets` yields them from a raw file in the original layout:
/// a blank line is the row `""`, any other line is the row `line + "\n"`.
pub fn wikitext_rows(raw: &str) -> Vec<String> {
    raw.lines()
        .map(|l| {
            if l.trim().is_empty() {
                String::new()
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// The perplexity text of the study (`sparsellm/lib/eval.py`, composability.md §3; the same as
/// GPTQ's `datautils.get_wikitext2`): the HF rows joined by `"\n\n"`.
///
/// Exact only for a raw file that keeps the blank lines of the original layout. The
/// `wikitext2/wiki.test.raw` in shared data has them removed (SOURCES.md §4a), which drops one
/// `"\n\n"` per blank row; use [`wikitext_rows_with_layout`] with `wiki.test.tokens` to restore them.
pub fn wikitext_join(raw: &str) -> String {
    wikitext_rows(raw).join("\n\n")
}

/// Rebuilds the HF rows of a raw file whose blank lines were removed, taking the row layout
/// (which rows are blank) from the tokenised file of the same split (`wiki.test.tokens`, which
/// keeps the original 4,358-line layout). The counts of non-blank lines must agree.
pub fn wikitext_rows_with_layout(raw_path: &Path, layout_path: &Path) -> Result<Vec<String>> {
    let raw = source::read_text(raw_path, KIND, &Limits::DEFAULT)?;
    let layout = source::read_text(layout_path, KIND, &Limits::DEFAULT)?;
    let mut content = raw.lines().filter(|l| !l.trim().is_empty());
    let mut rows = Vec::new();
    for (i, shape) in layout.lines().enumerate() {
        if shape.trim().is_empty() {
            rows.push(String::new());
            continue;
        }
        let Some(line) = content.next() else {
            return Err(Error::format(
                KIND,
                layout_path,
                format!("line {}", i + 1),
                format!(
                    "`{}` has fewer text lines than this layout",
                    raw_path.display()
                ),
            ));
        };
        rows.push(format!("{line}\n"));
    }
    if content.next().is_some() {
        return Err(Error::format(
            KIND,
            raw_path,
            "file",
            format!(
                "more text lines than the layout `{}` has",
                layout_path.display()
            ),
        ));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::requests::tests::{fixture, shared};
    use std::io::Write;

    fn file(suffix: &str, text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(suffix).tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn plain_text_is_one_document() {
        let f = file(".txt", "line one\n\nline two\n");
        let c = read_text_corpus(f.path()).unwrap();
        assert_eq!(c.documents, ["line one\n\nline two\n"]);
        assert_eq!(c.path, f.path());
    }

    #[test]
    fn jsonl_fields_in_order_of_preference() {
        let f = file(
            ".jsonl",
            r#"{"text": "doc", "question": "ignored", "answer": "x"}
{"question": "Who?", "answer": "Her."}
{"prompt": "P", "response": "R"}
"bare"
"#,
        );
        let c = read_text_corpus(f.path()).unwrap();
        assert_eq!(c.documents, ["doc", "Who? Her.", "P R", "bare"]);
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            (".txt", " \n", "empty file"),
            (".jsonl", "", "no records"),
            (
                ".jsonl",
                "{\"text\": \"a\"}\n{\"text\": 3}\n",
                "line 2 field `text`",
            ),
            (
                ".jsonl",
                "{\"text\": \"a\"}\n{\"url\": \"u\"}\n",
                "line 2: no text field: it has keys [url]",
            ),
            (
                ".jsonl",
                "{\"text\": \"a\"}\n{\"question\": \"q\"}\n",
                "line 2: no text field",
            ),
            (
                ".jsonl",
                "{\"text\": \"a\"}\n{\"text\": \n",
                "line 2: malformed JSON",
            ),
            (
                ".jsonl",
                "{\"text\": \"a\"}\n7\n",
                "line 2: expected a JSON object",
            ),
        ];
        for (suffix, text, want) in cases {
            let f = file(suffix, text);
            let e = read_text_corpus(f.path()).unwrap_err().to_string();
            assert!(
                e.contains(want) && e.contains(&*f.path().to_string_lossy()),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn wikitext_join_matches_the_hf_recipe() {
        // HF rows: "", " = A = \n", "", " para \n"  →  "\n\n".join(rows)
        let raw = " \n = A = \n \n para \n";
        // Each non-blank row keeps its own "\n", so a blank row between two lines gives five.
        assert_eq!(wikitext_join(raw), "\n\n = A = \n\n\n\n\n para \n");
    }

    #[test]
    fn layout_restores_blank_rows() {
        let raw = file(".raw", " = A = \n para \n");
        let layout = file(".tokens", " \n = A = \n \n para \n");
        let rows = wikitext_rows_with_layout(raw.path(), layout.path()).unwrap();
        assert_eq!(rows, ["", " = A = \n", "", " para \n"]);
        let short = file(".tokens", " = A = \n");
        let e = wikitext_rows_with_layout(raw.path(), short.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("more text lines"), "{e}");
        let long = file(".tokens", " = A = \n\n x \n y \n");
        let e = wikitext_rows_with_layout(raw.path(), long.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 4") && e.contains("fewer text lines"),
            "{e}"
        );
    }

    #[test]
    fn fixtures_read() {
        let c = read_text_corpus(&fixture("c4_en_validation_first94.jsonl")).unwrap();
        assert_eq!(c.documents.len(), 94);
        assert!(c.documents[0].starts_with("We offer valet parking"));
        let w = read_text_corpus(&fixture("wikitext2_test_raw_first200.txt")).unwrap();
        assert_eq!(w.documents.len(), 1);
        // No blank rows in this file: each row's own "\n" plus the "\n\n" separator.
        let joined = wikitext_join(&w.documents[0]);
        assert!(
            joined.starts_with(" = Robert Boulter = \n\n\n Robert"),
            "{:?}",
            &joined[..40]
        );
        assert_eq!(wikitext_rows(&w.documents[0]).len(), 200);
    }

    #[test]
    fn real_corpora_count_as_in_sources() {
        let cases = [
            ("calibration/c4/c4_en_validation_2k.jsonl", 2000),
            ("calibration/c4/c4_en_train_00000_first1000.jsonl", 1000),
            ("calibration/tofu/full.jsonl", 4000),
            ("calibration/tofu/forget10_perturbed.jsonl", 400),
            ("calibration/tofu/world_facts_perturbed.jsonl", 117),
            ("calibration/shakespeare/tinyshakespeare.txt", 1),
        ];
        for (rel, want) in cases {
            let Some(p) = shared(rel) else {
                return;
            };
            assert_eq!(read_text_corpus(&p).unwrap().documents.len(), want, "{rel}");
        }
        if let Some(p) = shared("calibration/c4/c4_en_train_00000_first1000.jsonl") {
            let c = read_text_corpus(&p).unwrap();
            assert!(c.documents[0].starts_with("Beginners BBQ Class Taking Place in Missoula!"));
        }
        if let Some(p) = shared("calibration/tofu/forget01.jsonl") {
            let c = read_text_corpus(&p).unwrap();
            assert_eq!(c.documents.len(), 40);
            assert!(c.documents[0].contains("? "), "{}", c.documents[0]);
        }
    }

    #[test]
    fn real_wikitext_layout_rebuilds_the_split() {
        let (Some(raw), Some(tokens)) = (
            shared("wikitext2/wiki.test.raw"),
            shared("wikitext2/wiki.test.tokens"),
        ) else {
            return;
        };
        let rows = wikitext_rows_with_layout(&raw, &tokens).unwrap();
        // SOURCES.md §4: 4,358 HF rows, 2,891 of them non-blank, and "".join(rows) is the file.
        assert_eq!(rows.len(), 4358);
        assert_eq!(rows.iter().filter(|r| !r.is_empty()).count(), 2891);
        let text = std::fs::read_to_string(&raw).unwrap();
        assert_eq!(rows.concat(), text);
        assert!(rows
            .join("\n\n")
            .starts_with("\n\n = Robert Boulter = \n\n\n\n\n Robert"));
    }
}
