//! A bounds-checked little-endian cursor over the GGUF bytes. Every read names the field it is
//! reading, so a truncated file reports what was cut off.

use std::path::Path;

use super::fmt_err;
use crate::error::{Error, Result};

/// The message for a read past the end of the file.
pub(super) fn truncated(need: u64, at: usize, file_len: usize) -> String {
    format!("truncated: needs {need} bytes at offset {at}, but the file is {file_len} bytes long")
}

/// Describes the field being read, built only when an error needs it.
pub(super) type Field<'f> = &'f dyn Fn() -> String;

/// A bounds-checked little-endian cursor.
/// Invariant: `pos <= buf.len()`.
pub(super) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(buf: &'a [u8], path: &'a Path) -> Self {
        Cursor { buf, pos: 0, path }
    }

    /// Bytes consumed so far.
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(super) fn err(&self, field: Field, msg: impl Into<String>) -> Error {
        fmt_err(self.path, field(), msg)
    }

    pub(super) fn take(&mut self, n: u64, field: Field) -> Result<&'a [u8]> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| self.err(field, truncated(n, self.pos, self.buf.len())))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(super) fn array<const N: usize>(&mut self, field: Field) -> Result<[u8; N]> {
        let s = self.take(N as u64, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(super) fn u32(&mut self, field: Field) -> Result<u32> {
        self.array(field).map(u32::from_le_bytes)
    }

    pub(super) fn u64(&mut self, field: Field) -> Result<u64> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// A GGUF string: u64 length, then UTF-8 bytes.
    pub(super) fn string(&mut self, cap: u64, field: Field) -> Result<String> {
        let len = self.u64(&|| format!("{} length", field()))?;
        if len > cap {
            return Err(self.err(
                &|| format!("{} length", field()),
                format!("{len} bytes exceeds the {cap}-byte cap"),
            ));
        }
        if len > self.remaining() as u64 {
            return Err(self.err(
                &|| format!("{} length", field()),
                format!(
                    "truncated: a {len}-byte string at offset {} runs past the end of the \
                     {}-byte file",
                    self.pos,
                    self.buf.len()
                ),
            ));
        }
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| self.err(field, format!("not UTF-8: {e}")))
    }
}

/// Rejects a count over `cap` or whose smallest encoding would not fit in the rest of the file,
/// so that the count can size an allocation.
pub(super) fn bound_count(
    c: &Cursor,
    count: u64,
    min_bytes: u64,
    cap: u64,
    field: &str,
    what: &str,
) -> Result<()> {
    if count > cap {
        return Err(c.err(
            &|| field.to_string(),
            format!("{count} {what} exceeds the cap of {cap}"),
        ));
    }
    let left = c.remaining() as u64;
    if count.checked_mul(min_bytes).is_none_or(|need| need > left) {
        return Err(c.err(
            &|| field.to_string(),
            format!("{count} {what} cannot fit in the {left} bytes left in the file"),
        ));
    }
    Ok(())
}
