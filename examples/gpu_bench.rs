//! Matmul throughput and whole-forward time on the GPU backend and on the CPU backend, for
//! `bench/gpu.sh`. Shapes are `M x K x N` for `y[M, N] = x[M, K] W[N, K]^T`: 1024^3 and the
//! SmolLM2-135M MLP shapes 512x576x1536 and 512x1536x576 (plus 4096^3 on a hardware adapter).
//! Forward: SmolLM2-135M-sized random weights, a 128-token prefill (`--tokens N` for another
//! length; several may be given) with last-position logits, as llama.cpp's `pp` tests time it.
//!
//! Run: `cargo run --release --example gpu_bench [-- --quick] [--matmul-only] [--gpu-only]
//! [--forward-only] [--tokens N]...`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use intervene::backend::cpu::matmul::linear as cpu_linear;
use intervene::backend::gpu::ops::matmul::linear as gpu_linear;
use intervene::backend::gpu::{AdapterPolicy, Gpu, GpuTensor};
use intervene::backend::Tensor;
use intervene::model::{GpuLlama, Hooks, Llama, LlamaConfig, Logits};

fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Median seconds of `reps` runs after one warm-up.
fn median(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

const SMOLLM2: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama",
 "vocab_size":49152,"hidden_size":576,"intermediate_size":1536,"num_hidden_layers":30,
 "num_attention_heads":9,"num_key_value_heads":3,"rms_norm_eps":1e-5,"rope_theta":100000.0,
 "max_position_embeddings":8192,"tie_word_embeddings":true}"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let matmul_only = std::env::args().any(|a| a == "--matmul-only");
    // Tile sweeps: skip the CPU product (the GPU's result is still checked, on samples).
    let gpu_only = std::env::args().any(|a| a == "--gpu-only");
    let forward_only = std::env::args().any(|a| a == "--forward-only");
    let args: Vec<String> = std::env::args().collect();
    let mut prefills: Vec<usize> = Vec::new();
    for pair in args.windows(2).filter(|p| p[0] == "--tokens") {
        match pair[1].parse() {
            Ok(n) if n > 0 => prefills.push(n),
            _ => return Err(format!("--tokens {:?} is not a positive count", pair[1]).into()),
        }
    }
    if prefills.is_empty() {
        prefills.push(128);
    }
    let gpu = Gpu::new(AdapterPolicy::Any)?;
    println!("adapter: {}", gpu.describe());
    println!("tuning: {:?}", gpu.tuning());
    println!("cpu threads: {}", rayon::current_num_threads());
    let mut shapes = vec![(1024, 1024, 1024), (512, 576, 1536), (512, 1536, 576)];
    if !gpu.is_software() {
        shapes.push((4096, 4096, 4096));
    }
    if forward_only {
        shapes.clear();
    }
    let reps = if quick { 3 } else { 7 };
    if !shapes.is_empty() {
        println!("| M x K x N | CPU GFLOP/s | GPU GFLOP/s | GPU ms | GPU max rel err |");
        println!("|---|---|---|---|---|");
    }
    for &(m, k, n) in &shapes {
        let x = random(m * k, 1, 1.0);
        let w = random(n * k, 2, 0.05);
        let flops = 2.0 * (m * n * k) as f64;
        let mut y = vec![0.0f32; m * n];
        let cpu =
            (!gpu_only).then(|| median(reps, || cpu_linear(&x, &w, None, &mut y, m, k, n, false)));
        let gx = GpuTensor::upload(&gpu, &[m, k], &x)?;
        let gw = GpuTensor::upload(&gpu, &[n, k], &w)?;
        let gy = GpuTensor::zeros(&gpu, &[m, n])?;
        gpu.sync()?;
        let g = median(reps, || {
            gpu_linear(&gpu, &gx, &gw, None, &gy, false).expect("gpu linear");
            gpu.sync().expect("sync");
        });
        // 512 sampled outputs against an f64 dot product, relative to the row-and-column
        // scale sum |x||w|, so a fast but wrong kernel shows here.
        let got = gy.download(&gpu)?;
        let mut err = 0.0f64;
        for s in 0..512u64 {
            let (i, j) = ((s * 7919) as usize % m, (s * 104_729 + 13) as usize % n);
            let (xr, wr) = (&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
            let dot: f64 = xr.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum();
            let mag: f64 = xr
                .iter()
                .zip(wr)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
            err = err.max((got[i * n + j] as f64 - dot).abs() / mag.max(f64::MIN_POSITIVE));
        }
        let cpu = cpu.map_or("-".to_string(), |c| format!("{:.1}", flops / c / 1e9));
        println!(
            "| {m} x {k} x {n} | {cpu} | {:.1} | {:.2} | {err:.1e} |",
            flops / g / 1e9,
            g * 1e3
        );
    }

    if matmul_only {
        return Ok(());
    }
    let cfg = LlamaConfig::from_json_bytes(SMOLLM2.as_bytes(), Path::new("smollm2"))?;
    let tensors: BTreeMap<String, Tensor> = cfg
        .expected_tensors()
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let numel: usize = shape.iter().product();
            let scale = if shape.len() == 1 {
                1.0
            } else {
                1.0 / (shape[1] as f32).sqrt()
            };
            let t = Tensor::new(shape, random(numel, i as u64 + 1, scale)).expect("shape");
            (name, t)
        })
        .collect();
    let model = Llama::from_tensors(cfg, tensors)?;
    let on_gpu = GpuLlama::upload(&gpu, &model)?;
    let freps = if quick { 1 } else { 3 };
    for &tokens in &prefills {
        let prompt: Vec<u32> = (0..tokens as u32).map(|i| (i * 7919) % 49152).collect();
        let cpu = (!gpu_only).then(|| {
            median(freps, || {
                model
                    .forward(&[&prompt], Logits::Last, &Hooks::default())
                    .expect("cpu forward");
            })
        });
        let g = median(freps, || {
            on_gpu
                .logits(&[&prompt], Logits::Last)
                .expect("gpu forward");
        });
        let cpu = cpu.map_or("CPU skipped".to_string(), |c| {
            format!("CPU {:.1} ms ({:.0} tok/s)", c * 1e3, tokens as f64 / c)
        });
        println!(
            "forward, SmolLM2-135M shapes, {tokens}-token prefill: {cpu}, GPU {:.1} ms ({:.0} tok/s)",
            g * 1e3,
            tokens as f64 / g
        );
    }
    Ok(())
}
