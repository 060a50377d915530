//! A small RFC 4180 CSV parser: quoted fields with embedded commas, newlines and doubled quotes,
//! LF or CRLF row ends. Written here rather than pulled in because MMLU is its only user and the
//! rules fit on a page.
//!
//! Two choices follow Python's `csv` module, which wrote and reads the MMLU files: a quote inside
//! an unquoted field is literal text, and blank lines are skipped (pandas skips them too). A
//! character after a closing quote other than a separator is an error, since it means the row
//! was cut or mis-quoted.

use std::path::Path;

use crate::error::{Error, Result};

/// One row and the 1-based line it starts on (rows can span lines inside quotes).
#[derive(Debug, PartialEq, Eq)]
pub struct Row {
    pub line: usize,
    pub fields: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a field.
    Start,
    Unquoted,
    Quoted,
    /// Just read a quote inside a quoted field: a second quote is an escaped `"`.
    AfterQuote,
}

pub fn parse(text: &str, path: &Path, kind: &'static str) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut state = State::Start;
    let (mut line, mut row_line, mut quote_line) = (1usize, 1usize, 1usize);
    // Whether the current row has any content yet; rows that end without any are blank lines.
    let mut row_started = false;
    let mut chars = text.chars().peekable();

    while let Some(c) = chars.next() {
        if !row_started && state == State::Start && c != '\n' && c != '\r' {
            row_line = line;
        }
        match (state, c) {
            (State::Quoted, '"') => state = State::AfterQuote,
            (State::Quoted, _) => field.push(c),
            (State::AfterQuote, '"') => {
                field.push('"');
                state = State::Quoted;
            }
            (State::Start, '"') => {
                state = State::Quoted;
                quote_line = line;
                row_started = true;
            }
            (_, ',') => {
                fields.push(std::mem::take(&mut field));
                state = State::Start;
                row_started = true;
            }
            (_, '\n' | '\r') => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                    line += 1;
                }
                if row_started {
                    fields.push(std::mem::take(&mut field));
                    rows.push(Row {
                        line: row_line,
                        fields: std::mem::take(&mut fields),
                    });
                }
                state = State::Start;
                row_started = false;
            }
            (State::AfterQuote, _) => {
                return Err(Error::format(
                    kind,
                    path,
                    format!("line {line}"),
                    format!("unexpected {c:?} after a closing quote (the field must end there)"),
                ))
            }
            (State::Start | State::Unquoted, _) => {
                field.push(c);
                state = State::Unquoted;
                row_started = true;
            }
        }
        // Only LF counts: a CRLF pair was counted above, and a lone CR (classic Mac) is rare
        // enough that a slightly off line number is acceptable.
        if c == '\n' {
            line += 1;
        }
    }
    if state == State::Quoted {
        return Err(Error::format(
            kind,
            path,
            format!("line {quote_line}"),
            "unterminated quoted field (the file ends inside quotes)",
        ));
    }
    if row_started {
        fields.push(field);
        rows.push(Row {
            line: row_line,
            fields,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &str) -> Vec<(usize, Vec<String>)> {
        parse(text, Path::new("t.csv"), "csv")
            .unwrap()
            .into_iter()
            .map(|r| (r.line, r.fields))
            .collect()
    }

    fn row(line: usize, fields: &[&str]) -> (usize, Vec<String>) {
        (line, fields.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn plain_and_quoted_fields() {
        assert_eq!(
            rows("a,b,c\n\"x, y\",\"say \"\"hi\"\"\",\n"),
            vec![
                row(1, &["a", "b", "c"]),
                row(2, &["x, y", "say \"hi\"", ""])
            ]
        );
    }

    #[test]
    fn newlines_inside_quotes_keep_line_numbers() {
        let r = rows("\"one\ntwo\nthree\",z\r\nnext,row\n\n\nlast");
        assert_eq!(r[0], row(1, &["one\ntwo\nthree", "z"]));
        assert_eq!(r[1], row(4, &["next", "row"]));
        assert_eq!(r[2], row(7, &["last"]));
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn crlf_and_empty_fields() {
        assert_eq!(
            rows(",\r\n\"\",x\r\n"),
            vec![row(1, &["", ""]), row(2, &["", "x"])]
        );
    }

    #[test]
    fn quote_inside_unquoted_field_is_literal() {
        assert_eq!(rows("5\" long,b\n"), vec![row(1, &["5\" long", "b"])]);
    }

    #[test]
    fn unterminated_quote_names_its_line() {
        let e = parse("a,b\nc,\"open\n\n", Path::new("t.csv"), "csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("unterminated"), "{e}");
    }

    #[test]
    fn text_after_closing_quote_is_an_error() {
        let e = parse("a,\"b\"c\n", Path::new("t.csv"), "csv")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 1") && e.contains("after a closing quote"),
            "{e}"
        );
    }
}
