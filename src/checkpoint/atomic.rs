//! Atomic checkpoint directories: everything is written into `.OUT.tmp-<pid>-<random>` beside
//! OUT, fsynced, then renamed into place. A crash leaves at most a temp directory, never a half
//! checkpoint at OUT; dropping an uncommitted `StagingDir` removes the temp directory. A process
//! killed outright (SIGKILL, power loss) cannot run that cleanup, so the next write to the same
//! OUT removes the temp entries whose writer process is gone (`sweep_stale`).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub struct StagingDir {
    tmp: PathBuf,
    out: PathBuf,
    force: bool,
    committed: bool,
}

/// A suffix unique enough for sibling temp names: pid, time and a process-wide counter.
fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let h = blake3::hash(format!("{}-{nanos}-{n}", std::process::id()).as_bytes());
    h.to_hex()[..12].to_string()
}

/// Checks an output path before any work is done, so a long run does not fail at the end.
pub fn check_output_path(out: &Path, force: bool) -> Result<()> {
    if out.as_os_str().is_empty() {
        return Err(Error::usage("-o/--output", "empty path"));
    }
    match fs::symlink_metadata(out) {
        Ok(m) if !m.is_dir() => {
            return Err(Error::usage(
                "-o/--output",
                format!("`{}` exists and is not a directory", out.display()),
            ))
        }
        Ok(_) if !force => {
            return Err(Error::usage(
                "-o/--output",
                format!(
                    "`{}` already exists (use --force to replace it)",
                    out.display()
                ),
            ))
        }
        _ => {}
    }
    let parent = parent_of(out);
    if !parent.is_dir() {
        return Err(Error::usage(
            "-o/--output",
            format!("parent directory `{}` does not exist", parent.display()),
        ));
    }
    Ok(())
}

fn parent_of(out: &Path) -> PathBuf {
    match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sibling_prefix(out: &Path, tag: &str) -> String {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".to_string());
    format!(".{name}.{tag}-")
}

/// `.OUT.tag-<pid>-<random>`: the pid lets a later run tell a dead writer's leftovers from a
/// live writer's work in progress.
fn sibling(out: &Path, tag: &str) -> PathBuf {
    parent_of(out).join(format!(
        "{}{}-{}",
        sibling_prefix(out, tag),
        std::process::id(),
        unique_suffix()
    ))
}

/// Removes `.OUT.tmp-<pid>-*` entries left beside OUT by writers that were killed (their pid
/// no longer runs). Only on systems with `/proc`, where liveness can be checked; elsewhere the
/// leftovers stay (they are hidden names, never mistaken for OUT). Moved-aside old outputs
/// (`.OUT.old-*`) are never removed here: after a kill between the two renames of `--force`
/// they hold the only copy of the previous output.
pub fn sweep_stale(out: &Path) {
    let proc_root = Path::new("/proc/self");
    if !proc_root.exists() {
        return;
    }
    let prefix = sibling_prefix(out, "tmp");
    let Ok(entries) = fs::read_dir(parent_of(out)) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let p = e.path();
        let _ = if p.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
    }
}

impl StagingDir {
    pub fn create(out: &Path, force: bool) -> Result<Self> {
        check_output_path(out, force)?;
        sweep_stale(out);
        let tmp = sibling(out, "tmp");
        fs::create_dir(&tmp).map_err(|e| {
            Error::usage(
                "-o/--output",
                format!(
                    "cannot create the staging directory `{}` beside `{}`: {e}",
                    tmp.display(),
                    out.display()
                ),
            )
        })?;
        Ok(StagingDir {
            tmp,
            out: out.to_path_buf(),
            force,
            committed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Writes a whole small file into the staging directory and fsyncs it.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let p = self.tmp.join(name);
        let mut f = File::create(&p).map_err(|e| Error::io("create", &p, e))?;
        f.write_all(bytes).map_err(|e| Error::io("write", &p, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &p, e))
    }

    /// Renames the staging directory to OUT. With `force`, an existing OUT is moved aside
    /// first and removed only after the rename succeeded.
    pub fn commit(mut self) -> Result<PathBuf> {
        sync_dir(&self.tmp)?;
        let mut old = None;
        if fs::symlink_metadata(&self.out).is_ok() {
            if !self.force {
                return Err(Error::usage(
                    "-o/--output",
                    format!(
                        "`{}` appeared while writing; not replaced",
                        self.out.display()
                    ),
                ));
            }
            let aside = sibling(&self.out, "old");
            fs::rename(&self.out, &aside).map_err(|e| Error::io("move aside", &self.out, e))?;
            old = Some(aside);
        }
        fs::rename(&self.tmp, &self.out)
            .map_err(|e| Error::io("rename into place", &self.out, e))?;
        self.committed = true;
        sync_dir(&parent_of(&self.out))?;
        if let Some(aside) = old {
            fs::remove_dir_all(&aside).map_err(|e| Error::io("remove", &aside, e))?;
        }
        Ok(self.out.clone())
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    // Directory fsync makes the rename durable on Linux; elsewhere opening a directory may fail
    // and there is nothing more to do.
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
    Ok(())
}

/// Writes a single file atomically (temp file beside it, fsync, rename): used to append
/// evaluations to provenance.json without ever leaving a truncated file.
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    sweep_stale(path);
    let tmp = sibling(path, "tmp");
    let res = (|| {
        let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io("rename into place", path, e))
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// A single output file written atomically, for outputs too large to hold in memory (an
/// exported GGUF): a hidden temp file beside OUT is streamed to, fsynced and renamed into
/// place by [`StagingFile::commit`]; dropping it uncommitted removes the temp file.
pub struct StagingFile {
    tmp: PathBuf,
    out: PathBuf,
    force: bool,
    file: Option<File>,
}

/// Checks a single-file output path: its parent exists, and it is absent, or a file and
/// `force` is given.
pub fn check_output_file(out: &Path, force: bool) -> Result<()> {
    if out.as_os_str().is_empty() {
        return Err(Error::usage("-o/--output", "empty path"));
    }
    match fs::symlink_metadata(out) {
        Ok(m) if m.is_dir() => {
            return Err(Error::usage(
                "-o/--output",
                format!("`{}` is a directory", out.display()),
            ))
        }
        Ok(_) if !force => {
            return Err(Error::usage(
                "-o/--output",
                format!(
                    "`{}` already exists (use --force to replace it)",
                    out.display()
                ),
            ))
        }
        _ => {}
    }
    let parent = parent_of(out);
    if !parent.is_dir() {
        return Err(Error::usage(
            "-o/--output",
            format!("parent directory `{}` does not exist", parent.display()),
        ));
    }
    Ok(())
}

impl StagingFile {
    pub fn create(out: &Path, force: bool) -> Result<Self> {
        check_output_file(out, force)?;
        let tmp = sibling(out, "tmp");
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        Ok(StagingFile {
            tmp,
            out: out.to_path_buf(),
            force,
            file: Some(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The open temp file, for streaming writes (wrap it in a `BufWriter`).
    pub fn file(&self) -> &File {
        self.file.as_ref().expect("open until commit")
    }

    /// Fsyncs the temp file and renames it to OUT (replacing a file only with `force`).
    pub fn commit(mut self) -> Result<PathBuf> {
        let file = self.file.take().expect("open until commit");
        file.sync_all()
            .map_err(|e| Error::io("fsync", &self.tmp, e))?;
        drop(file);
        if !self.force && fs::symlink_metadata(&self.out).is_ok() {
            return Err(Error::usage(
                "-o/--output",
                format!(
                    "`{}` appeared while writing; not replaced",
                    self.out.display()
                ),
            ));
        }
        fs::rename(&self.tmp, &self.out)
            .map_err(|e| Error::io("rename into place", &self.out, e))?;
        // Renamed: nothing left for Drop to remove.
        self.tmp = PathBuf::new();
        sync_dir(&parent_of(&self.out))?;
        Ok(self.out.clone())
    }
}

impl Drop for StagingFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}
