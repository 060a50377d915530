//! Typed access to the fields of one JSON record, with errors that name the file, the line and
//! the field (`line 17 field `requested_rewrite.target_new.str``).

use std::path::Path;

use serde_json::{Map, Value};

use super::source::{at, key_list, Record};
use crate::error::{Error, Result};

/// A JSON object from line `line` of `path`; `prefix` is the dotted path of nested objects.
#[derive(Clone)]
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    line: usize,
    path: &'a Path,
    kind: &'static str,
    prefix: String,
}

impl<'a> Obj<'a> {
    /// The record as an object; any other JSON value is an error naming its line.
    pub fn new(record: &'a Record, path: &'a Path, kind: &'static str) -> Result<Obj<'a>> {
        match &record.value {
            Value::Object(map) => Ok(Obj {
                map,
                line: record.line,
                path,
                kind,
                prefix: String::new(),
            }),
            other => Err(Error::format(
                kind,
                path,
                at(record.line, None),
                format!("expected a JSON object, got {}", type_name(other)),
            )),
        }
    }

    pub fn line(&self) -> usize {
        self.line
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    /// The sorted key list, for "record of no known format" errors.
    pub fn keys(&self) -> String {
        key_list(self.map)
    }

    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// An error about field `key` (or the whole record when `key` is `None`).
    pub fn err(&self, key: Option<&str>, msg: impl Into<String>) -> Error {
        let field = key.map(|k| self.name(k));
        Error::format(self.kind, self.path, at(self.line, field.as_deref()), msg)
    }

    /// The nested object at `key`.
    pub fn child(&self, key: &str) -> Result<Obj<'a>> {
        match self.map.get(key) {
            Some(Value::Object(map)) => Ok(Obj {
                map,
                line: self.line,
                path: self.path,
                kind: self.kind,
                prefix: format!("{}{key}.", self.prefix),
            }),
            Some(other) => Err(self.err(
                Some(key),
                format!("expected an object, got {}", type_name(other)),
            )),
            None => Err(self.err(Some(key), "missing")),
        }
    }

    /// A required string field, as given (it may be empty).
    pub fn str(&self, key: &str) -> Result<&'a str> {
        match self.map.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(self.err(
                Some(key),
                format!("expected a string, got {}", type_name(other)),
            )),
            None => Err(self.err(Some(key), "missing")),
        }
    }

    /// A string field that may be absent or `null`.
    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.str(key).map(Some),
        }
    }

    /// A required string that must carry text: see [`garbage`].
    pub fn text(&self, key: &str) -> Result<String> {
        let s = self.str(key)?;
        self.checked(key, s)
    }

    /// A required list of strings, taken as given (multiple-choice options such as "None" are
    /// real answers, so no [`garbage`] check here).
    pub fn string_list(&self, key: &str) -> Result<Vec<String>> {
        match self.map.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.err(
                        Some(&format!("{key}[{i}]")),
                        format!("expected a string, got {}", type_name(other)),
                    )),
                })
                .collect(),
            Some(other) => Err(self.err(
                Some(key),
                format!("expected a list of strings, got {}", type_name(other)),
            )),
            None => Err(self.err(Some(key), "missing")),
        }
    }

    /// Rejects `s` (a value of field `key`) when [`garbage`] says it carries no text.
    pub fn checked(&self, key: &str, s: &str) -> Result<String> {
        match garbage(s) {
            Some(why) => Err(self.err(Some(key), why)),
            None => Ok(s.to_string()),
        }
    }

    /// A field holding one string or a list of strings (EasyEdit writes both shapes); each must
    /// carry text.
    pub fn texts(&self, key: &str) -> Result<Vec<String>> {
        match self.map.get(key) {
            Some(Value::String(s)) => Ok(vec![self.checked(key, s)?]),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => self.checked(&format!("{key}[{i}]"), s),
                    other => Err(self.err(
                        Some(&format!("{key}[{i}]")),
                        format!("expected a string, got {}", type_name(other)),
                    )),
                })
                .collect(),
            Some(other) => Err(self.err(
                Some(key),
                format!(
                    "expected a string or a list of strings, got {}",
                    type_name(other)
                ),
            )),
            None => Err(self.err(Some(key), "missing")),
        }
    }
}

/// Why `s` is not usable text, if it is not: empty or blank, a NUL byte, or a missing-value
/// marker that a pandas/CSV round trip leaves behind (`nan`, `None`, `null`). Such values reach
/// the F1 metric as empty token sets and silently score 0, so we stop them at the reader.
pub fn garbage(s: &str) -> Option<&'static str> {
    let t = s.trim();
    if t.is_empty() {
        Some("empty or blank text")
    } else if s.contains('\0') {
        Some("contains a NUL character")
    } else if ["nan", "none", "null"].contains(&t.to_ascii_lowercase().as_str()) {
        Some("a missing-value marker (nan/None/null), not text")
    } else {
        None
    }
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(value: Value) -> Record {
        Record { line: 7, value }
    }

    #[test]
    fn garbage_catches_blank_nan_and_nul() {
        for bad in ["", "  ", "nan", "NaN", " None ", "null", "a\0b"] {
            assert!(garbage(bad).is_some(), "{bad:?}");
        }
        for good in ["Nancy", "0", " Dickens", "none of the above"] {
            assert!(garbage(good).is_none(), "{good:?}");
        }
    }

    #[test]
    fn non_object_record_is_an_error() {
        let r = rec(json!([1]));
        let e = Obj::new(&r, Path::new("f"), "t").err().unwrap().to_string();
        assert!(e.contains("line 7") && e.contains("a list"), "{e}");
    }

    #[test]
    fn errors_name_nested_fields() {
        let r = rec(json!({"a": {"b": 3}}));
        let o = Obj::new(&r, Path::new("f"), "t").unwrap();
        let e = o.child("a").unwrap().str("b").unwrap_err().to_string();
        assert!(
            e.contains("line 7 field `a.b`") && e.contains("a number"),
            "{e}"
        );
        let e = o.child("zz").err().unwrap().to_string();
        assert!(e.contains("field `zz`: missing"), "{e}");
    }

    #[test]
    fn texts_accepts_string_or_list() {
        let r = rec(json!({"one": "x", "many": ["x", "y"], "bad": ["x", 1], "blank": ["x", " "]}));
        let o = Obj::new(&r, Path::new("f"), "t").unwrap();
        assert_eq!(o.texts("one").unwrap(), vec!["x"]);
        assert_eq!(o.texts("many").unwrap(), vec!["x", "y"]);
        assert!(o.texts("bad").unwrap_err().to_string().contains("`bad[1]`"));
        assert!(o
            .texts("blank")
            .unwrap_err()
            .to_string()
            .contains("`blank[1]`"));
    }

    #[test]
    fn opt_str_treats_null_as_absent() {
        let r = rec(json!({"n": null, "s": "v", "x": 1}));
        let o = Obj::new(&r, Path::new("f"), "t").unwrap();
        assert_eq!(o.opt_str("n").unwrap(), None);
        assert_eq!(o.opt_str("missing").unwrap(), None);
        assert_eq!(o.opt_str("s").unwrap(), Some("v"));
        assert!(o.opt_str("x").is_err());
    }
}
