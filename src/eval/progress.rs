//! A progress bar on stderr for evaluations that take more than a moment; hidden when stderr is
//! not a terminal or with `--quiet`, so logs and pipes stay clean.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress(ProgressBar);

impl Progress {
    pub fn new(len: usize, what: &str, quiet: bool) -> Self {
        let bar = ProgressBar::new(len as u64);
        if quiet || !std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        } else if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        Progress(bar)
    }

    /// A bar that never draws (library callers and tests).
    pub fn hidden() -> Self {
        Progress(ProgressBar::hidden())
    }

    pub fn inc(&self, n: usize) {
        self.0.inc(n as u64);
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}
