//! Bench-only perplexity helper (until the `eval` command lands): WikiText-2 test rows joined
//! with "\n\n" (blank-line layout restored from `wiki.test.tokens`), tokenised with the
//! checkpoint's tokenizer, scored over the first N non-overlapping windows of L tokens with
//! `Llama::batch_nll`; PPL = exp(mean NLL over the scored positions).
//!
//! `cargo run --release --example ppl -- DIR RAW TOKENS [WINDOWS] [SEQLEN]`

use std::path::Path;
use std::time::Instant;

use intervene::checkpoint::Checkpoint;
use intervene::data::wikitext_rows_with_layout;
use intervene::model::Llama;
use intervene::tokenizer::Tokenizer;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        anyhow::bail!("usage: ppl DIR RAW TOKENS [WINDOWS=40] [SEQLEN=2048]");
    }
    let dir = Path::new(&args[0]);
    let windows: usize = args.get(3).map_or(Ok(40), |s| s.parse())?;
    let seqlen: usize = args.get(4).map_or(Ok(2048), |s| s.parse())?;
    let start = Instant::now();
    let rows = wikitext_rows_with_layout(Path::new(&args[1]), Path::new(&args[2]))?;
    let text = rows.join("\n\n");
    let tok = Tokenizer::from_file(dir.join("tokenizer.json"))?;
    let ids = tok.encode(&text, true)?;
    let n = windows.min(ids.len() / seqlen);
    let model = Llama::load(&Checkpoint::open(dir)?)?;
    let (mut sum, mut count) = (0f64, 0usize);
    for i in 0..n {
        let w = &ids[i * seqlen..(i + 1) * seqlen];
        for nll in model.batch_nll(&[w])?.concat() {
            sum += nll as f64;
            count += 1;
        }
    }
    let ppl = (sum / count.max(1) as f64).exp();
    println!(
        "{}",
        serde_json::json!({"ppl": ppl, "windows": n, "seqlen": seqlen, "tokens_total": ids.len(),
                           "seconds": start.elapsed().as_secs_f64()})
    );
    Ok(())
}
