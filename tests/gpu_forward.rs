//! The whole forward pass on the GPU backend against the CPU backend: logits within
//! `Tolerance::F32_FORWARD` (1e-4 max abs) on the tiny fixtures (and on SmolLM2 when
//! `INTERVENE_SMOLLM2_DIR` names an imported checkpoint), and identical greedy generations.
//! Without an adapter the test prints why and passes, unless `INTERVENE_REQUIRE_GPU` is set.
#![cfg(feature = "gpu")]

use std::path::{Path, PathBuf};

use intervene::backend::cpu::tolerance::Tolerance;
use intervene::backend::gpu::{AdapterPolicy, Gpu};
use intervene::checkpoint::Checkpoint;
use intervene::model::{GpuLlama, Hooks, Llama, Logits};

fn open_gpu() -> Option<Gpu> {
    match Gpu::new(AdapterPolicy::Any) {
        Ok(g) => Some(g),
        Err(e) => {
            assert!(
                std::env::var_os("INTERVENE_REQUIRE_GPU").is_none(),
                "INTERVENE_REQUIRE_GPU is set but {e}"
            );
            eprintln!("skipping the GPU forward: {e}");
            None
        }
    }
}

fn load(dir: &Path) -> Llama {
    let ckpt = Checkpoint::open(dir).expect("open checkpoint");
    Llama::load(&ckpt).expect("load model")
}

/// Compares a packed batch's logits (every position) and a greedy continuation.
fn compare(gpu: &Gpu, model: &Llama, what: &str, batch: &[Vec<u32>], gen_tokens: usize) {
    let cpu = model
        .forward(batch, Logits::All, &Hooks::default())
        .expect("cpu forward");
    let on_gpu = GpuLlama::upload(gpu, model).expect("upload weights");
    let (logits, rows) = on_gpu.logits(batch, Logits::All).expect("gpu forward");
    assert_eq!(rows, cpu.logit_rows, "{what}: logit rows");
    let want = cpu.logits.as_ref().expect("cpu logits");
    let stats = Tolerance::F32_FORWARD
        .check(&format!("{what} logits"), logits.data(), want.data())
        .unwrap();
    eprintln!("{what}: gpu vs cpu logits: {stats}");
    let (last, _) = on_gpu.logits(batch, Logits::Last).expect("gpu last");
    for (b, seq) in batch.iter().enumerate() {
        let cpu_row = cpu.logits_at(b, seq.len() - 1).expect("row computed");
        Tolerance::F32_FORWARD
            .check(&format!("{what} last row {b}"), last.row(b), cpu_row)
            .unwrap();
    }
    let prompt = &batch[0];
    let cpu_gen = model.generate_greedy(prompt, gen_tokens, &[]).unwrap();
    let gpu_gen = on_gpu.generate_greedy(prompt, gen_tokens, &[]).unwrap();
    assert_eq!(gpu_gen, cpu_gen, "{what}: greedy continuation");
}

#[test]
fn gpu_forward_matches_cpu_on_fixtures_and_smollm2_when_present() {
    let Some(gpu) = open_gpu() else { return };
    eprintln!("adapter: {}", gpu.describe());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny");
    for name in ["hf", "hf_variant", "q8_0_dequant"] {
        let model = load(&root.join(name));
        let v = model.config().vocab_size as u32;
        // Three packed sequences of different lengths (one of a single token).
        let batch: Vec<Vec<u32>> = vec![
            (0..13u32).map(|i| (i * 7 + 3) % v).collect(),
            vec![5 % v],
            (0..6u32).map(|i| (i * 11 + 1) % v).collect(),
        ];
        compare(&gpu, &model, name, &batch, 8);
    }
    match std::env::var_os("INTERVENE_SMOLLM2_DIR") {
        Some(dir) => {
            let model = load(Path::new(&dir));
            let batch = vec![[504u32, 3575, 282, 4649, 314].repeat(4), vec![1, 2, 3]];
            compare(&gpu, &model, "smollm2", &batch, 5);
        }
        None => eprintln!("smollm2 part skipped: set INTERVENE_SMOLLM2_DIR"),
    }
}
