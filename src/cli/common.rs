//! Options every command shares, and small output helpers.

use std::io::Write;

use clap::{Args, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    /// A real GPU adapter when present, else the CPU backend.
    Auto,
    Cpu,
    Gpu,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalOpts {
    /// Compute device.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Worker threads for CPU compute (default: all cores).
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    /// Random seed for commands that sample.
    #[arg(long, global = true, default_value_t = 0)]
    pub seed: u64,
    /// No progress bars or notes on stderr.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
}

impl GlobalOpts {
    /// Applies process-wide settings (the thread pool) and resolves the device.
    pub fn apply(&self) -> anyhow::Result<()> {
        if let Some(n) = self.threads {
            if n == 0 {
                return Err(intervene::Error::usage("--threads", "must be at least 1").into());
            }
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global()
                .map_err(|e| intervene::Error::usage("--threads", e.to_string()))?;
        }
        if self.device == DeviceChoice::Gpu {
            return Err(intervene::Error::usage(
                "--device",
                "this build has no GPU backend yet; use --device cpu or auto",
            )
            .into());
        }
        Ok(())
    }

    /// The backend name recorded in provenance.
    pub fn device_name(&self) -> &'static str {
        "cpu"
    }
}

/// Writes a JSON value to stdout, pretty-printed, with a trailing newline.
pub fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}
