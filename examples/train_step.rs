//! One training step (forward, backward, AdamW) on a checkpoint with the upper layers
//! trainable, timed; `bench/train_step.sh` runs it next to the same step in PyTorch.
//!
//! Usage: `train_step <model dir> <batch> <seq len> <upper layers>`.

use std::time::Instant;

use intervene::checkpoint::Checkpoint;
use intervene::model::Llama;
use intervene::optim::{Adam, AdamConfig};
use intervene::train::{LossTerm, Objective, Target, TrainableSet, Trainer};

/// The token stream both benchmarks use: a 32-bit LCG, so PyTorch's side can rebuild it.
fn tokens(batch: usize, len: usize, vocab: usize) -> Vec<Vec<u32>> {
    let mut x: u32 = 12345;
    (0..batch)
        .map(|_| {
            (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (x >> 8) % vocab as u32
                })
                .collect()
        })
        .collect()
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> intervene::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = || {
        intervene::Error::usage(
            "train_step",
            "usage: train_step <model dir> <batch> <seq len> <upper layers>",
        )
    };
    let [_, dir, b, t, upper] = &args[..] else {
        return Err(usage());
    };
    let (b, t, upper): (usize, usize, usize) = (
        b.parse().map_err(|_| usage())?,
        t.parse().map_err(|_| usage())?,
        upper.parse().map_err(|_| usage())?,
    );
    let t0 = Instant::now();
    let mut model = Llama::load(&Checkpoint::open(std::path::Path::new(dir))?)?;
    let load_s = t0.elapsed().as_secs_f64();
    let cfg = model.config().clone();
    let n = cfg.num_hidden_layers;
    let set = TrainableSet::default().select_weights(&cfg, n.saturating_sub(upper)..n, &[""])?;
    let batch = tokens(b, t, cfg.vocab_size);
    let obj = Objective::single(LossTerm::CrossEntropy(Target::next_token_mean(&batch)));
    let mut tr = Trainer::new(&mut model, set)?;
    let mut opt = Adam::new(AdamConfig::adamw(1e-5));
    let t1 = Instant::now();
    let loss = tr.forward_backward(&batch, &obj)?;
    let fb_s = t1.elapsed().as_secs_f64();
    tr.step(&mut opt)?;
    let step_s = t1.elapsed().as_secs_f64();
    // The gradients' bits, so a speed change can be checked to leave them alone
    // (after the timing, and the optimiser does not touch them).
    let mut h = blake3::Hasher::new();
    for (name, g) in tr.grads() {
        h.update(name.as_bytes());
        g.iter().for_each(|v| {
            h.update(&v.to_le_bytes());
        });
    }
    let grads_hash = h.finalize().to_hex();
    println!(
        "intervene: load {load_s:.2}s, forward+backward {fb_s:.2}s, step total {step_s:.2}s, loss {loss:.6}, peak RSS {:.0} MiB, grads blake3 {}",
        peak_rss_mib(),
        &grads_hash[..16]
    );
    Ok(())
}
