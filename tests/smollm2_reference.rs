//! The default model against transformers: `fixtures/smollm2/reference.json` holds what
//! transformers computed straight from the SmolLM2 GGUF (its own dequantisation, un-permute,
//! tokenizer and forward; `fixtures/gen_smollm2_reference.py`). Here the same prompts go through
//! intervene's import, tokenizer and forward. Runs when an imported checkpoint is at
//! `models/smollm2` (made by `scripts/demo.sh`) or at `$INTERVENE_SMOLLM2_DIR`.

use std::path::PathBuf;

use intervene::checkpoint::{Checkpoint, TOKENIZER_FILE};
use intervene::model::{Hooks, Llama, Logits};
use intervene::tokenizer::Tokenizer;
use serde_json::Value;

/// Logits are O(10-30); both sides run f32 over the same dequantised weights, so differences
/// come only from summation order across 30 layers. Measured worst case is recorded in
/// bench/RESULTS.md (3.5e-5); 2e-4 leaves headroom while still failing on any real layout error
/// (a wrong Q/K permutation moves logits by whole units).
const LOGIT_TOL: f32 = 2e-4;
/// Per-token NLL differences follow from the logit tolerance (log-softmax is 1-Lipschitz per
/// entry, twice over).
const NLL_TOL: f32 = 2e-4;
/// The foundation issue's requirement: perplexity within 0.1% of the reference.
const PPL_REL_TOL: f64 = 1e-3;

fn checkpoint_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("INTERVENE_SMOLLM2_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/smollm2"));
    dir.join("model.safetensors").exists().then_some(dir)
}

fn reference() -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/smollm2/reference.json");
    let v: Value =
        serde_json::from_slice(&std::fs::read(&p).expect("reference.json")).expect("json");
    assert_eq!(
        v["format"], "intervene-smollm2-reference/1",
        "regenerate with fixtures/gen_smollm2_reference.py"
    );
    v
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn smollm2_matches_transformers_on_logits_nll_greedy_and_perplexity() {
    let Some(dir) = checkpoint_dir() else {
        eprintln!("skipped: no imported SmolLM2 at models/smollm2 (run scripts/demo.sh) or $INTERVENE_SMOLLM2_DIR");
        return;
    };
    let ckpt = Checkpoint::open(&dir).unwrap();
    let model = Llama::load(&ckpt).unwrap();
    let tok = Tokenizer::from_file(dir.join(TOKENIZER_FILE)).unwrap();
    let r = reference();
    let mut worst_logit = 0.0f32;
    let mut worst_nll = 0.0f32;
    for p in r["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        let want_ids = ids(&p["ids"]);
        assert_eq!(
            tok.encode(text, true).unwrap(),
            want_ids,
            "token ids of {text:?}"
        );
        let out = model
            .forward(&[&want_ids], Logits::All, &Hooks::default())
            .unwrap();
        let top_ids = p["top_ids"].as_array().unwrap();
        let top_logits = p["top_logits"].as_array().unwrap();
        for (pos, (ids_row, vals_row)) in top_ids.iter().zip(top_logits).enumerate() {
            let row = out.logits_at(0, pos).unwrap();
            for (id, val) in ids_row
                .as_array()
                .unwrap()
                .iter()
                .zip(vals_row.as_array().unwrap())
            {
                let d = (row[id.as_u64().unwrap() as usize] - val.as_f64().unwrap() as f32).abs();
                worst_logit = worst_logit.max(d);
            }
            let argmax = intervene::backend::cpu::argmax::argmax(row);
            assert_eq!(
                argmax.map(|a| a as u64),
                ids_row[0].as_u64(),
                "argmax at {text:?} position {pos}"
            );
        }
        let nll = model.sequence_nll(&want_ids).unwrap();
        for (a, b) in nll.iter().zip(p["nll"].as_array().unwrap()) {
            worst_nll = worst_nll.max((a - b.as_f64().unwrap() as f32).abs());
        }
        let greedy = model
            .generate_greedy(&want_ids, ids(&p["greedy"]).len(), &[])
            .unwrap();
        assert_eq!(greedy, ids(&p["greedy"]), "greedy continuation of {text:?}");
    }
    eprintln!("SmolLM2 vs transformers: max |logit diff| {worst_logit:.2e}, max |nll diff| {worst_nll:.2e}");
    assert!(
        worst_logit <= LOGIT_TOL,
        "max |logit diff| {worst_logit} > {LOGIT_TOL}"
    );
    assert!(
        worst_nll <= NLL_TOL,
        "max |nll diff| {worst_nll} > {NLL_TOL}"
    );

    let ppl = &r["ppl"];
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(ppl["file"].as_str().unwrap()),
    )
    .unwrap();
    let toks = tok.encode(&text, true).unwrap();
    assert_eq!(
        toks.len() as u64,
        ppl["tokens"].as_u64().unwrap(),
        "paragraph token count"
    );
    let nll = model.sequence_nll(&toks).unwrap();
    let mean = nll.iter().map(|&x| x as f64).sum::<f64>() / nll.len() as f64;
    let ours = mean.exp();
    let want = ppl["perplexity"].as_f64().unwrap();
    eprintln!("perplexity: ours {ours:.5}, transformers {want:.5}");
    assert!(
        ((ours - want) / want).abs() <= PPL_REL_TOL,
        "perplexity {ours} vs {want}"
    );
    // Greedy " Paris." for the DESIGN.md check.
    let first = &r["prompts"][0];
    let text = tok.decode(&ids(&first["greedy"]), true).unwrap();
    assert!(text.starts_with(" Paris."), "{text:?}");
}
