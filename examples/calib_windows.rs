//! Bench-only: prints the calibration windows a compression run on DIR would use, as JSON, so
//! `bench/compress_vs_llmcompressor.sh` can hand llmcompressor the very same token ids. It calls
//! the library's own `CalibBatch::prepare` (the function `intervene gptq/awq/wanda/sparsegpt`
//! calls), so the sampling is not repeated anywhere else; `tokens_blake3` is the value the
//! run's provenance records, and the script checks the two agree.
//!
//! `cargo run --release --example calib_windows -- DIR CALIB SAMPLES SEQLEN SEED`
//! prints `{"tokens_blake3": .., "positions": [[doc, start], ..], "windows": [[id, ..], ..]}`.

use std::path::{Path, PathBuf};

use intervene::checkpoint::TOKENIZER_FILE;
use intervene::interventions::compress::calib::CalibBatch;
use intervene::interventions::compress::plan::CalibParams;
use intervene::tokenizer::Tokenizer;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, calib, samples, seqlen, seed] = args.as_slice() else {
        anyhow::bail!("usage: calib_windows DIR CALIB SAMPLES SEQLEN SEED");
    };
    let params = CalibParams {
        file: PathBuf::from(calib),
        samples: samples.parse()?,
        seqlen: seqlen.parse()?,
        seed: seed.parse()?,
        // Only the activation pass uses this; the windows do not depend on it.
        chunk_sequences: 1,
        packed: std::env::var_os("CALIB_PACKED").is_some(),
    };
    let tok = Tokenizer::from_file(Path::new(dir).join(TOKENIZER_FILE))?;
    let batch = CalibBatch::prepare(&params, &tok)?;
    let report = batch.report();
    println!(
        "{}",
        serde_json::json!({
            "tokens_blake3": batch.tokens_hash,
            "positions": report["positions"],
            "windows": batch.windows,
        })
    );
    Ok(())
}
