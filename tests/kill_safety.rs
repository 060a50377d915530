//! Crash safety of checkpoint writes through the real binary.
//! - SIGKILL at random moments while `import` and `rtn` write a synthetic model (tens of MB, so
//!   a write takes long enough to be interrupted at every stage), many times: OUT is absent or
//!   a complete checkpoint that `verify` passes, the input is byte-identical, leftovers are only
//!   hidden `.OUT.tmp-<pid>-*` staging entries (swept by the next write), and a rerun succeeds.
//! - A full disk (a 1 MiB tmpfs when the test runs as root, and a file-size limit otherwise and
//!   always) and a read-only output parent exit 2 with a clear message and leave nothing behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::synth::{write_model, Dims};
use common::{intervene, path_str};

const BIN: &str = env!("CARGO_BIN_EXE_intervene");

fn dims() -> Dims {
    Dims {
        hidden: 256,
        intermediate: 704,
        layers: 4,
        heads: 8,
        kv_heads: 4,
        vocab: 2048,
    }
}

fn hash_dir(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let h = blake3::hash(&std::fs::read(&p).unwrap())
                .to_hex()
                .to_string();
            (p.file_name().unwrap().to_string_lossy().into_owned(), h)
        })
        .collect();
    v.sort();
    v
}

/// Names in `dir` other than `keep`.
fn others(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

/// A SplitMix64 for kill delays (fixed seed: the run is reproducible in its choices).
struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Runs `args` to completion and returns how long it took.
fn timed(args: &[&str]) -> Duration {
    let t = Instant::now();
    let r = intervene(args);
    assert_eq!(r.code, 0, "{args:?}: {r}");
    t.elapsed()
}

#[test]
fn sigkill_never_leaves_a_half_written_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let src = root.join("src");
    write_model(&src, &dims(), 7);
    let base = root.join("base");
    let t_import = timed(&["-q", "import", path_str(&src), "-o", path_str(&base)]);
    let probe = root.join("probe");
    let t_rtn = timed(&["-q", "rtn", path_str(&base), "-o", path_str(&probe)]);
    std::fs::remove_dir_all(&probe).unwrap();
    let src_hashes = hash_dir(&src);
    let base_hashes = hash_dir(&base);

    let iterations = 120;
    let mut rng = Rng(2026);
    let (mut absent, mut complete, mut leftovers_seen) = (0, 0, 0);
    let out = root.join("out");
    for i in 0..iterations {
        // Alternate the two writers; delays span 0 to 1.2x a full run, so some kills land
        // before the write starts, most during it, and some after it finished.
        let (args, full): (Vec<&str>, Duration) = if i % 2 == 0 {
            (
                vec!["-q", "import", path_str(&src), "-o", path_str(&out)],
                t_import,
            )
        } else {
            (
                vec!["-q", "rtn", path_str(&base), "-o", path_str(&out)],
                t_rtn,
            )
        };
        let delay = full.mul_f64((rng.next_u64() % 1200) as f64 / 1000.0);
        let mut child = Command::new(BIN)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL on Unix
        child.wait().unwrap();

        if out.exists() {
            let v = intervene(&["verify", "--no-inputs", path_str(&out)]);
            assert_eq!(
                v.code, 0,
                "iteration {i} ({args:?}, kill after {delay:?}): {v}"
            );
            complete += 1;
        } else {
            absent += 1;
        }
        assert_eq!(hash_dir(&src), src_hashes, "iteration {i}: input changed");
        assert_eq!(hash_dir(&base), base_hashes, "iteration {i}: input changed");
        // Anything else beside OUT is a hidden staging entry of a killed writer.
        for n in others(root, &["src", "base", "out"]) {
            assert!(n.starts_with(".out.tmp-"), "iteration {i}: stray `{n}`");
            leftovers_seen += 1;
        }
        // Rerun to completion over whatever is there: succeeds, verifies, and sweeps leftovers.
        if i % 10 == 9 {
            let r = intervene(&["-q", args[1], args[2], "-o", path_str(&out), "--force"]);
            assert_eq!(r.code, 0, "rerun after iteration {i}: {r}");
            let v = intervene(&["verify", "--no-inputs", path_str(&out)]);
            assert_eq!(v.code, 0, "{v}");
            assert_eq!(
                others(root, &["src", "base", "out"]),
                Vec::<String>::new(),
                "the rerun did not sweep the killed writers' staging entries"
            );
        }
        if out.exists() {
            std::fs::remove_dir_all(&out).unwrap();
        }
    }
    eprintln!(
        "kill test: {iterations} SIGKILLs (import {t_import:?}, rtn {t_rtn:?} per full run): \
         {absent} left no OUT, {complete} left a complete verified OUT, 0 half-written; \
         {leftovers_seen} hidden staging leftovers seen (swept by the next write)"
    );
    assert!(absent > 0 && complete > 0, "kills did not span the write");
}

/// Unmounts on drop, so a failing assertion does not leave a mount behind.
struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Mounts a tmpfs of `size` (with `ro` if asked) at `dir`; None where mounting is not allowed.
fn tmpfs(dir: &Path, opts: &str) -> Option<Mount> {
    std::fs::create_dir_all(dir).unwrap();
    if !is_root() {
        return None;
    }
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then(|| Mount(dir.to_path_buf()))
}

#[test]
fn a_full_disk_exits_2_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write_model(&src, &dims(), 3);
    // A real full file system: a 1 MiB tmpfs, when the test may mount one.
    let small = tmp.path().join("small");
    match tmpfs(&small, "size=1m") {
        Some(_m) => {
            let out = small.join("out");
            let r = intervene(&["import", path_str(&src), "-o", path_str(&out)]);
            assert_eq!(r.code, 2, "{r}");
            assert!(r.stderr.contains("No space left on device"), "{r}");
            assert!(r.stderr.contains("out.tmp-"), "names the file: {r}");
            assert_eq!(others(&small, &[]), Vec::<String>::new(), "left behind");
        }
        None => eprintln!("not root: skipped the tmpfs half of the disk-full test"),
    }
    // Everywhere: a file-size limit makes the weights write fail mid-way (SIGXFSZ ignored, so
    // the write returns EFBIG as a full disk returns ENOSPC).
    let dir = tmp.path().join("limited");
    std::fs::create_dir(&dir).unwrap();
    let out = dir.join("out");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 2048; exec '{BIN}' import '{}' -o '{}' 2>'{}'",
            src.display(),
            out.display(),
            tmp.path().join("err").display()
        ))
        .status()
        .unwrap();
    let err = std::fs::read_to_string(tmp.path().join("err")).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("File too large"), "{err}");
    assert_eq!(others(&dir, &[]), Vec::<String>::new(), "left behind");
}

#[test]
fn a_read_only_output_parent_exits_2_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let ro = tmp.path().join("ro");
    // Root ignores permission bits, so as root the parent is a read-only mount instead.
    let _mount = tmpfs(&ro, "ro,size=1m");
    if _mount.is_none() {
        let mut perm = std::fs::metadata(&ro).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o555);
        std::fs::set_permissions(&ro, perm).unwrap();
    }
    let out = ro.join("out");
    let r = intervene(&[
        "import",
        path_str(&common::fixture("tiny/hf")),
        "-o",
        path_str(&out),
    ]);
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr
            .contains("-o/--output: cannot create the staging directory"),
        "{r}"
    );
    assert!(
        r.stderr.contains("Read-only file system") || r.stderr.contains("Permission denied"),
        "{r}"
    );
    assert_eq!(others(&ro, &[]), Vec::<String>::new());
}
