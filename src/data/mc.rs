//! Multiple-choice questions: MMLU (`<subject>_test.csv`, SOURCES.md §2) and WMDP (JSON Lines
//! with `question`, `choices`, `answer`, §3), both scored zero-shot by log-likelihood of each
//! choice (composability.md §3, lm-eval `acc,none`).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::fields::Obj;
use super::source::{self, Limits};
use crate::data::csv;
use crate::error::{Error, Result};

const MMLU: &str = "MMLU CSV";
const WMDP: &str = "multiple-choice JSONL";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McQuestion {
    /// Where the question came from: `file name:line`.
    pub source: String,
    /// The MMLU subject (from the file name); `None` for WMDP.
    pub subject: Option<String>,
    pub question: String,
    pub choices: Vec<String>,
    /// Index into `choices` of the correct answer.
    pub answer: usize,
}

/// Reads MMLU (a `.csv` file or a directory of them), or WMDP-style JSON Lines (`.jsonl`,
/// `.json`), by the path's kind and extension.
pub fn read_mc(path: &Path) -> Result<Vec<McQuestion>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        _ if path.is_dir() => read_mmlu(path),
        Some("csv") => read_mmlu(path),
        Some("jsonl" | "json") => read_wmdp_jsonl(path),
        _ => Err(Error::unsupported(
            "multiple-choice file",
            path,
            "expected a .csv (MMLU), a directory of them, or .jsonl (WMDP)",
        )),
    }
}

/// Reads one MMLU CSV, or every `*.csv` in a directory in file-name order (not recursive).
/// Each row is `question, A, B, C, D, answer letter`, with no header.
pub fn read_mmlu(path: &Path) -> Result<Vec<McQuestion>> {
    if !path.is_dir() {
        return read_mmlu_file(path, &Limits::DEFAULT);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::io("read directory", path, e))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io("read directory", path, e))?;
    files.retain(|p| p.is_file() && p.extension().is_some_and(|e| e == "csv"));
    // Sorted by name so the question order, and so any subsampling, is the same everywhere.
    files.sort();
    if files.is_empty() {
        return Err(Error::format(MMLU, path, "directory", "no .csv files"));
    }
    let mut out = Vec::new();
    for file in &files {
        out.extend(read_mmlu_file(file, &Limits::DEFAULT)?);
    }
    Ok(out)
}

/// `college_biology_test.csv` → `college_biology`; the split suffixes of the official layout
/// (`_test`, `_dev`, `_val`) are dropped, other names are kept whole.
fn mmlu_subject(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    ["_test", "_dev", "_val"]
        .iter()
        .find_map(|suffix| stem.strip_suffix(suffix))
        .unwrap_or(&stem)
        .to_string()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

pub(crate) fn read_mmlu_file(path: &Path, limits: &Limits) -> Result<Vec<McQuestion>> {
    let text = source::read_text(path, MMLU, limits)?;
    let rows = csv::parse(&text, path, MMLU)?;
    if rows.is_empty() {
        return Err(Error::format(MMLU, path, "file", "no rows (empty file)"));
    }
    let subject = mmlu_subject(path);
    let name = file_name(path);
    rows.into_iter()
        .map(|row| {
            let at = format!("line {}", row.line);
            let n = row.fields.len();
            let [question, a, b, c, d, letter]: [String; 6] =
                row.fields.try_into().map_err(|_| {
                    Error::format(
                        MMLU,
                        path,
                        &at,
                        format!("{n} columns, expected 6 (question, A, B, C, D, answer)"),
                    )
                })?;
            let answer = match letter.trim() {
                "A" => 0,
                "B" => 1,
                "C" => 2,
                "D" => 3,
                other => {
                    return Err(Error::format(
                        MMLU,
                        path,
                        format!("{at} field `answer`"),
                        format!("answer {other:?} is not one of A, B, C, D"),
                    ))
                }
            };
            Ok(McQuestion {
                source: format!("{name}:{}", row.line),
                subject: Some(subject.clone()),
                question,
                choices: vec![a, b, c, d],
                answer,
            })
        })
        .collect()
}

/// Reads WMDP-style JSON Lines (a JSON array also works): `question` (string), `choices`
/// (at least two strings) and `answer` (an index into `choices`).
pub fn read_wmdp_jsonl(path: &Path) -> Result<Vec<McQuestion>> {
    read_wmdp_with(path, &Limits::DEFAULT)
}

pub(crate) fn read_wmdp_with(path: &Path, limits: &Limits) -> Result<Vec<McQuestion>> {
    let text = source::read_text(path, WMDP, limits)?;
    let name = file_name(path);
    source::json_records(&text, path, WMDP, limits)?
        .iter()
        .map(|r| {
            let o = Obj::new(r, path, WMDP)?;
            let question = o.str("question")?.to_string();
            let choices = o.string_list("choices")?;
            if choices.len() < 2 {
                return Err(o.err(
                    Some("choices"),
                    format!("{} choices, need at least 2", choices.len()),
                ));
            }
            let answer = o
                .get("answer")
                .and_then(Value::as_u64)
                .ok_or_else(|| o.err(Some("answer"), "expected a non-negative integer index"))?;
            let answer = usize::try_from(answer)
                .ok()
                .filter(|&a| a < choices.len())
                .ok_or_else(|| {
                    o.err(
                        Some("answer"),
                        format!(
                            "index {answer} is out of range for {} choices",
                            choices.len()
                        ),
                    )
                })?;
            Ok(McQuestion {
                source: format!("{name}:{}", o.line()),
                subject: None,
                question,
                choices,
                answer,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::requests::tests::{fixture, shared};
    use std::io::Write;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        p
    }

    fn err(r: Result<Vec<McQuestion>>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn mmlu_row_with_quotes_and_newlines() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "college_biology_test.csv",
            "\"Q1, with comma\nand newline\",a,\"b \"\"x\"\"\",c,d,C\nQ2,a,b,c,d,A\n",
        );
        let q = read_mc(&p).unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].question, "Q1, with comma\nand newline");
        assert_eq!(q[0].choices[1], "b \"x\"");
        assert_eq!(q[0].answer, 2);
        assert_eq!(q[0].subject.as_deref(), Some("college_biology"));
        assert_eq!(q[1].source, "college_biology_test.csv:3");
    }

    #[test]
    fn mmlu_directory_is_sorted() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "zoology_test.csv", "Z,a,b,c,d,D\n");
        write(d.path(), "anatomy_test.csv", "A,a,b,c,d,B\n");
        write(d.path(), "notes.txt", "ignored");
        let q = read_mc(d.path()).unwrap();
        let subjects: Vec<_> = q.iter().map(|q| q.subject.clone().unwrap()).collect();
        assert_eq!(subjects, ["anatomy", "zoology"]);
    }

    #[test]
    fn mmlu_errors() {
        let d = tempfile::tempdir().unwrap();
        let cases = [
            ("", "no rows"),
            ("Q,a,b,c,d,A\nQ,a,b,c,D\n", "line 2: 5 columns, expected 6"),
            ("Q,a,b,c,d,A\nQ,a,b,c,d,A,extra\n", "line 2: 7 columns"),
            ("Q,a,b,c,d,E\n", "line 1 field `answer`: answer \"E\""),
            ("Q,a,b,c,d,\"A\n", "unterminated"),
        ];
        for (i, (text, want)) in cases.iter().enumerate() {
            let p = write(d.path(), &format!("s{i}_test.csv"), text);
            let e = err(read_mmlu(&p));
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let empty = tempfile::tempdir().unwrap();
        assert!(err(read_mmlu(empty.path())).contains("no .csv files"));
    }

    #[test]
    fn wmdp_reads_and_checks() {
        let d = tempfile::tempdir().unwrap();
        let good = r#"{"question": "q?", "choices": ["a", "b", "c", "d"], "answer": 3}"#;
        let p = write(d.path(), "bio.jsonl", &format!("{good}\n{good}\n"));
        let q = read_mc(&p).unwrap();
        assert_eq!(
            (q.len(), q[1].answer, q[1].source.as_str()),
            (2, 3, "bio.jsonl:2")
        );
        let cases = [
            (
                r#"{"question": "q", "choices": ["a", "b"], "answer": 2}"#,
                "field `answer`: index 2 is out of range",
            ),
            (
                r#"{"question": "q", "choices": ["a", "b"], "answer": -1}"#,
                "field `answer`",
            ),
            (
                r#"{"question": "q", "choices": ["a", "b"], "answer": "A"}"#,
                "field `answer`",
            ),
            (
                r#"{"question": "q", "choices": ["a"], "answer": 0}"#,
                "field `choices`: 1 choices",
            ),
            (
                r#"{"question": "q", "choices": "ab", "answer": 0}"#,
                "field `choices`",
            ),
            (
                r#"{"question": "q", "choices": ["a", 2], "answer": 0}"#,
                "field `choices[1]`",
            ),
            (
                r#"{"choices": ["a", "b"], "answer": 0}"#,
                "field `question`: missing",
            ),
            (
                r#"{"question": "q", "choices": ["a", "b"], "answer": 0"#,
                "malformed JSON",
            ),
        ];
        for (bad, want) in cases {
            let p = write(d.path(), "bad.jsonl", &format!("{good}\n{bad}\n"));
            let e = err(read_wmdp_jsonl(&p));
            assert!(e.contains("line 2") && e.contains(want), "{bad}: {e}");
        }
        let p = write(d.path(), "empty.jsonl", "");
        assert!(err(read_wmdp_jsonl(&p)).contains("no records"));
    }

    #[test]
    fn none_is_a_valid_choice() {
        // WMDP bio line 222 has the choice "None"; only requests reject missing-value markers.
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "q.jsonl",
            r#"{"question": "q", "choices": ["None", ""], "answer": 0}"#,
        );
        assert_eq!(read_wmdp_jsonl(&p).unwrap()[0].choices, ["None", ""]);
    }

    #[test]
    fn fixtures_read() {
        let q = read_mc(&fixture("mmlu")).unwrap();
        assert_eq!(q.len(), 20);
        assert_eq!(q[0].subject.as_deref(), Some("college_biology"));
        assert_eq!(q[0].choices[3], "increase the mortality rate");
        assert_eq!(q[0].answer, 2);
        let w = read_mc(&fixture("wmdp_bio_first20.jsonl")).unwrap();
        assert_eq!(w.len(), 20);
        assert_eq!(w[1].answer, 3);
    }

    #[test]
    fn unknown_extension_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "q.parquet", "x");
        assert!(matches!(read_mc(&p), Err(Error::Unsupported { .. })));
    }

    /// Test-row counts per subject, from SOURCES.md §2.
    const MMLU_COUNTS: &[(&str, usize)] = &[
        ("abstract_algebra", 100),
        ("anatomy", 135),
        ("astronomy", 152),
        ("business_ethics", 100),
        ("clinical_knowledge", 265),
        ("college_biology", 144),
        ("college_chemistry", 100),
        ("college_computer_science", 100),
        ("college_mathematics", 100),
        ("college_medicine", 173),
        ("college_physics", 102),
        ("computer_security", 100),
        ("conceptual_physics", 235),
        ("econometrics", 114),
        ("electrical_engineering", 145),
        ("elementary_mathematics", 378),
        ("formal_logic", 126),
        ("global_facts", 100),
        ("high_school_biology", 310),
        ("high_school_computer_science", 100),
        ("high_school_european_history", 165),
        ("high_school_government_and_politics", 193),
        ("high_school_mathematics", 270),
        ("high_school_microeconomics", 238),
        ("high_school_psychology", 545),
        ("high_school_statistics", 216),
        ("high_school_us_history", 204),
        ("high_school_world_history", 237),
        ("human_aging", 223),
        ("international_law", 121),
        ("jurisprudence", 108),
        ("logical_fallacies", 163),
        ("management", 103),
        ("marketing", 234),
        ("medical_genetics", 100),
        ("moral_disputes", 346),
        ("moral_scenarios", 895),
        ("nutrition", 306),
        ("philosophy", 311),
        ("prehistory", 324),
        ("professional_accounting", 282),
        ("professional_law", 1534),
        ("security_studies", 245),
        ("sociology", 201),
        ("us_foreign_policy", 100),
        ("virology", 166),
        ("world_religions", 171),
    ];

    #[test]
    fn real_mmlu_counts_match_sources() {
        let Some(dir) = shared("mmlu/test") else {
            return;
        };
        let all = read_mmlu(&dir).unwrap();
        let mut seen = 0;
        for (subject, want) in MMLU_COUNTS {
            let got = all
                .iter()
                .filter(|q| q.subject.as_deref() == Some(subject))
                .count();
            if got > 0 {
                assert_eq!(got, *want, "{subject}");
                seen += 1;
            }
        }
        // SOURCES.md: 42 of the 47 subjects are in this folder.
        assert_eq!(seen, 42);
        let first = &all[0];
        assert_eq!(first.source, "abstract_algebra_test.csv:1");
        assert!(all.iter().all(|q| q.choices.len() == 4 && q.answer < 4));
    }

    #[test]
    fn real_wmdp_counts_match_sources() {
        for (name, want) in [
            ("wmdp/wmdp_bio.jsonl", 1273),
            ("wmdp/wmdp_cyber.jsonl", 1987),
        ] {
            let Some(p) = shared(name) else {
                return;
            };
            let q = read_mc(&p).unwrap();
            assert_eq!(q.len(), want, "{name}");
            assert!(q.iter().all(|q| q.choices.len() == 4));
        }
        if let Some(p) = shared("wmdp/wmdp_bio.jsonl") {
            let q = read_wmdp_jsonl(&p).unwrap();
            assert!(q[0].question.starts_with("What is a disseminating factor"));
            assert_eq!(q[0].answer, 0);
        }
    }
}
