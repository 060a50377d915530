//! Round-trip helper (scripts/roundtrip.py): our logits at every position of a token sequence,
//! written as raw little-endian f32 `[T, V]` so a Python script can compare them with another
//! implementation's.
//!
//! `cargo run --release --example logits -- DIR OUT.bin ID,ID,...`

use std::path::Path;

use intervene::checkpoint::Checkpoint;
use intervene::model::{Hooks, Llama, Logits};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, out, ids] = args.as_slice() else {
        anyhow::bail!("usage: logits DIR OUT.bin ID,ID,...");
    };
    let ids: Vec<u32> = ids
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let model = Llama::load(&Checkpoint::open(Path::new(dir))?)?;
    let fwd = model.forward(&[&ids[..]], Logits::All, &Hooks::default())?;
    let logits = fwd
        .logits
        .ok_or_else(|| anyhow::anyhow!("no logits computed"))?;
    let bytes: Vec<u8> = logits.data().iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(out, bytes)?;
    Ok(())
}
