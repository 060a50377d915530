//! Typed errors for the library. Every variant carries the evidence a user needs to find the
//! fault: the file, the tensor or field, and what was expected. The CLI maps them to exit codes:
//! `Check` is 1 (a verification or score that failed), everything else is 2 (usage or input).

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on `path` failed.
    #[error("{op} `{}`: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file's content is malformed: `field` names the header field, tensor or record at fault.
    #[error("invalid {kind} `{}`: {field}: {msg}", path.display())]
    Format {
        kind: &'static str,
        path: PathBuf,
        field: String,
        msg: String,
    },

    /// A tensor is missing, or its dtype or shape disagrees with what the model needs.
    #[error("tensor `{name}` in `{}`: {msg}", path.display())]
    Tensor {
        path: PathBuf,
        name: String,
        msg: String,
    },

    /// A command-line flag or argument is invalid.
    #[error("{flag}: {msg}")]
    Usage { flag: String, msg: String },

    /// Something is not supported yet (an architecture, a tokenizer type, a ggml type).
    #[error("unsupported {what} in `{}`: {msg}", path.display())]
    Unsupported {
        what: &'static str,
        path: PathBuf,
        msg: String,
    },

    /// A check failed: a verify mismatch, a score that cannot be formed. Exit code 1.
    #[error("{0}")]
    Check(String),
}

impl Error {
    pub fn io(op: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn format(
        kind: &'static str,
        path: impl AsRef<Path>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Error::Format {
            kind,
            path: path.as_ref().to_path_buf(),
            field: field.into(),
            msg: msg.into(),
        }
    }

    pub fn tensor(path: impl AsRef<Path>, name: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor {
            path: path.as_ref().to_path_buf(),
            name: name.into(),
            msg: msg.into(),
        }
    }

    pub fn usage(flag: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Usage {
            flag: flag.into(),
            msg: msg.into(),
        }
    }

    pub fn unsupported(what: &'static str, path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Unsupported {
            what,
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    /// The process exit code this error maps to (DESIGN.md: 1 check failed, 2 usage or input).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Check(_) => 1,
            _ => 2,
        }
    }
}
