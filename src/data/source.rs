//! Reading a data file as bounded UTF-8 text, and splitting it into JSON records (JSON Lines or
//! one top-level JSON array) that remember the line they started on.
//!
//! Every reader in `data` goes through here, so the caps on file and line size (P11: inputs are
//! hostile) are enforced in one place.

use std::io::Read;
use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// Size caps for one data file. The defaults bound memory at roughly twice the file cap (the
/// bytes plus the parsed values); tests pass small caps to exercise the errors cheaply.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_file_bytes: u64,
    pub max_line_bytes: usize,
}

impl Limits {
    /// 2 GiB per file; 64 MiB per JSON line (the longest C4 document here is 61 KB, so this
    /// only stops a file that is one giant line).
    pub const DEFAULT: Limits = Limits {
        max_file_bytes: 2 << 30,
        max_line_bytes: 64 << 20,
    };
}

/// One JSON value from a data file and the 1-based line it starts on.
#[derive(Debug)]
pub struct Record {
    pub line: usize,
    pub value: Value,
}

/// Reads `path` as UTF-8, refusing files over `limits.max_file_bytes`. A leading UTF-8 byte-order
/// mark is dropped (spreadsheet exports add one). Invalid UTF-8 is an error naming the line.
pub fn read_text(path: &Path, kind: &'static str, limits: &Limits) -> Result<String> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    if len > limits.max_file_bytes {
        return Err(Error::format(
            kind,
            path,
            "file size",
            format!("{len} bytes, over the {} byte cap", limits.max_file_bytes),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // `take` guards against a file that grows between the stat and the read.
    file.take(limits.max_file_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", path, e))?;
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(Error::format(
            kind,
            path,
            "file size",
            format!("over the {} byte cap", limits.max_file_bytes),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let good = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..good].iter().filter(|&&b| b == b'\n').count();
        Error::format(kind, path, format!("line {line}"), "invalid UTF-8")
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// Parses `text` as JSON records: a top-level array when the first non-blank character is `[`,
/// JSON Lines otherwise (blank lines skipped, so a missing or extra final newline is fine).
/// An empty file is an error: every caller needs at least one record.
pub fn json_records(
    text: &str,
    path: &Path,
    kind: &'static str,
    limits: &Limits,
) -> Result<Vec<Record>> {
    let records = if text.trim_start().starts_with('[') {
        json_array(text, path, kind)?
    } else {
        json_lines(text, path, kind, limits)?
    };
    if records.is_empty() {
        return Err(Error::format(kind, path, "file", "no records (empty file)"));
    }
    Ok(records)
}

fn json_lines(text: &str, path: &Path, kind: &'static str, limits: &Limits) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        if raw.len() > limits.max_line_bytes {
            return Err(Error::format(
                kind,
                path,
                format!("line {line}"),
                format!(
                    "{} bytes, over the {} byte line cap",
                    raw.len(),
                    limits.max_line_bytes
                ),
            ));
        }
        let value = serde_json::from_str(raw).map_err(|e| {
            Error::format(
                kind,
                path,
                format!("line {line}"),
                format!("malformed JSON: {e}"),
            )
        })?;
        records.push(Record { line, value });
    }
    Ok(records)
}

fn json_array(text: &str, path: &Path, kind: &'static str) -> Result<Vec<Record>> {
    let values: Vec<Value> = serde_json::from_str(text).map_err(|e| {
        Error::format(
            kind,
            path,
            format!("line {}", e.line()),
            format!("malformed JSON array: {e}"),
        )
    })?;
    let lines = element_lines(text);
    // The scanner runs on text serde has accepted, so the counts agree; fall back to element
    // numbers rather than panic if they ever do not.
    let lines = if lines.len() == values.len() {
        lines
    } else {
        (1..=values.len()).collect()
    };
    Ok(values
        .into_iter()
        .zip(lines)
        .map(|(value, line)| Record { line, value })
        .collect())
}

/// The 1-based line on which each element of a valid top-level JSON array starts. serde_json
/// does not report element positions, and errors should name the line a user can open.
fn element_lines(text: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    let (mut line, mut depth) = (1usize, 0usize);
    let (mut in_string, mut escaped, mut expect_element) = (false, false, false);
    for c in text.chars() {
        if c == '\n' {
            line += 1;
        }
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if depth == 1 && expect_element && !c.is_whitespace() && c != ']' {
            lines.push(line);
            expect_element = false;
        }
        match c {
            '"' => in_string = true,
            '[' | '{' => {
                depth += 1;
                if depth == 1 {
                    expect_element = true;
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            ',' if depth == 1 => expect_element = true,
            _ => {}
        }
    }
    lines
}

/// Names a record in errors: `line 17`, or `line 17 field `alt`` when a field is at fault.
pub fn at(line: usize, field: Option<&str>) -> String {
    match field {
        Some(f) => format!("line {line} field `{f}`"),
        None => format!("line {line}"),
    }
}

/// The keys of a JSON object, sorted, for "what did this record have" error messages.
pub fn key_list(obj: &serde_json::Map<String, Value>) -> String {
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys.is_empty() {
        "no keys".to_string()
    } else {
        keys.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn msg(r: Result<impl std::fmt::Debug>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn file_over_cap_is_refused() {
        let f = file(b"0123456789");
        let limits = Limits {
            max_file_bytes: 9,
            ..Limits::DEFAULT
        };
        assert!(msg(read_text(f.path(), "t", &limits)).contains("over the 9 byte cap"));
    }

    #[test]
    fn invalid_utf8_names_line() {
        let f = file(b"ok\nok\n\xff\n");
        let e = msg(read_text(f.path(), "t", &Limits::DEFAULT));
        assert!(e.contains("line 3") && e.contains("invalid UTF-8"), "{e}");
    }

    #[test]
    fn bom_is_dropped() {
        let f = file("\u{feff}abc".as_bytes());
        assert_eq!(read_text(f.path(), "t", &Limits::DEFAULT).unwrap(), "abc");
    }

    #[test]
    fn missing_file_is_io_error() {
        let e = read_text(Path::new("/nonexistent/x.jsonl"), "t", &Limits::DEFAULT);
        assert!(matches!(e, Err(Error::Io { .. })));
    }

    #[test]
    fn jsonl_skips_blank_lines_and_keeps_line_numbers() {
        let r = json_records(
            "{\"a\":1}\n\n  \n{\"a\":2}",
            Path::new("x"),
            "t",
            &Limits::DEFAULT,
        )
        .unwrap();
        assert_eq!(r.iter().map(|r| r.line).collect::<Vec<_>>(), vec![1, 4]);
        assert_eq!(r[1].value["a"], 2);
    }

    #[test]
    fn malformed_line_is_named() {
        let e = msg(json_records(
            "{}\n{\"a\":\n",
            Path::new("x"),
            "t",
            &Limits::DEFAULT,
        ));
        assert!(e.contains("line 2") && e.contains("malformed JSON"), "{e}");
    }

    #[test]
    fn long_line_is_refused() {
        let limits = Limits {
            max_line_bytes: 8,
            ..Limits::DEFAULT
        };
        let e = msg(json_records(
            "{}\n{\"aaaaaa\":1}\n",
            Path::new("x"),
            "t",
            &limits,
        ));
        assert!(e.contains("line 2") && e.contains("line cap"), "{e}");
    }

    #[test]
    fn empty_file_is_an_error() {
        let e = msg(json_records(" \n\n", Path::new("x"), "t", &Limits::DEFAULT));
        assert!(e.contains("no records"), "{e}");
    }

    #[test]
    fn array_elements_get_their_start_lines() {
        let text = "[\n  {\"s\": \"a,[b]\\\"\"},\n  {\n    \"s\": {\"x\": [1, 2]}\n  },\n  3\n]\n";
        let r = json_records(text, Path::new("x"), "t", &Limits::DEFAULT).unwrap();
        assert_eq!(r.iter().map(|r| r.line).collect::<Vec<_>>(), vec![2, 3, 6]);
        assert_eq!(element_lines("[]"), Vec::<usize>::new());
        assert_eq!(element_lines("[1,2]"), vec![1, 1]);
    }

    #[test]
    fn malformed_array_names_line() {
        let e = msg(json_records(
            "[\n{},\n{,\n]",
            Path::new("x"),
            "t",
            &Limits::DEFAULT,
        ));
        assert!(
            e.contains("line 3") && e.contains("malformed JSON array"),
            "{e}"
        );
    }
}
