//! Options every command shares, and small output helpers.

use std::io::Write;

use clap::{Args, ValueEnum};
#[cfg(feature = "gpu")]
use intervene::backend::gpu::{AdapterPolicy, Gpu};

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
        Ok(())
    }

    /// The backend recorded in provenance by commands that run only on the CPU backend so far
    /// (evaluation, editing, unlearning); `generate` and the compression commands resolve
    /// `--device` through `backend()`.
    pub fn device_name(&self) -> &'static str {
        "cpu"
    }

    /// Resolves `--device` for a command that computes. Commands that only read or write
    /// files never call this, so they never touch wgpu. `gpu` takes any adapter (software
    /// ones included) and fails with exit 2 when there is none; `auto` takes a hardware
    /// adapter and otherwise falls back to the CPU with a one-line note.
    pub fn backend(&self) -> anyhow::Result<Backend> {
        match self.device {
            DeviceChoice::Cpu => Ok(Backend::Cpu),
            #[cfg(feature = "gpu")]
            DeviceChoice::Gpu => match Gpu::new(AdapterPolicy::Any) {
                Ok(g) => {
                    self.note(&format!("device: {}", g.describe()));
                    Ok(Backend::Gpu(Box::new(g)))
                }
                Err(e) => Err(intervene::Error::usage("--device gpu", e.to_string()).into()),
            },
            #[cfg(not(feature = "gpu"))]
            DeviceChoice::Gpu => Err(intervene::Error::usage(
                "--device gpu",
                "this build has no GPU backend (built without the `gpu` feature); use --device cpu",
            )
            .into()),
            #[cfg(feature = "gpu")]
            DeviceChoice::Auto => match Gpu::new(AdapterPolicy::RealOnly) {
                Ok(g) => {
                    self.note(&format!("device: {}", g.describe()));
                    Ok(Backend::Gpu(Box::new(g)))
                }
                Err(e) => {
                    self.note(&format!("note: --device auto: {e}; using the CPU backend"));
                    Ok(Backend::Cpu)
                }
            },
            #[cfg(not(feature = "gpu"))]
            DeviceChoice::Auto => Ok(Backend::Cpu),
        }
    }

    /// Whether `--device` asks for a GPU explicitly (`gpu`, not `auto`).
    pub fn wants_gpu(&self) -> bool {
        self.device == DeviceChoice::Gpu
    }

    /// A one-line message on stderr, unless `--quiet`.
    pub fn note(&self, msg: &str) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }
}

/// The compute backend a command runs on.
pub enum Backend {
    Cpu,
    #[cfg(feature = "gpu")]
    Gpu(Box<Gpu>),
}

impl Backend {
    /// The backend name recorded in provenance.
    pub fn name(&self) -> String {
        match self {
            Backend::Cpu => "cpu".into(),
            #[cfg(feature = "gpu")]
            Backend::Gpu(g) => format!("gpu:{}", g.info().name),
        }
    }
}

/// Writes a JSON value to stdout, pretty-printed, with a trailing newline.
pub fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}
