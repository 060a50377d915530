//! Speed of the f32 forward pass on this machine (issue 2, "Speed"): prefill of a 128-token
//! prompt and KV-cache decode, next to the two ceilings they are judged against, both measured
//! in the same run: the `gemm` crate's f32 GEMM peak and the read bandwidth of main memory.
//!
//! Usage: `cargo run --release --example bench_forward -- <ckpt> [--threads N]
//!         [--prompt FILE] [--prompt-tokens T] [--decode-tokens N] [--repeats R]`
//! Prints one JSON object on stdout.

use std::path::PathBuf;
use std::time::Instant;

use intervene::backend::cpu::argmax::argmax;
use intervene::checkpoint::Checkpoint;
use intervene::model::{Decoder, Hooks, Llama, LlamaConfig, Logits};
use intervene::tokenizer::Tokenizer;
use rayon::prelude::*;
use serde_json::json;

struct Args {
    ckpt: PathBuf,
    threads: usize,
    prompt: PathBuf,
    prompt_tokens: usize,
    decode_tokens: usize,
    repeats: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        ckpt: PathBuf::new(),
        threads: 2,
        prompt: PathBuf::from("bench/prompt.txt"),
        prompt_tokens: 128,
        decode_tokens: 64,
        repeats: 7,
    };
    let mut it = std::env::args().skip(1);
    let mut ckpt = None;
    while let Some(s) = it.next() {
        let mut val = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match s.as_str() {
            "--threads" => a.threads = val("--threads").parse().expect("--threads N"),
            "--prompt" => a.prompt = PathBuf::from(val("--prompt")),
            "--prompt-tokens" => a.prompt_tokens = val("--prompt-tokens").parse().expect("T"),
            "--decode-tokens" => a.decode_tokens = val("--decode-tokens").parse().expect("N"),
            "--repeats" => a.repeats = val("--repeats").parse().expect("R"),
            _ if ckpt.is_none() && !s.starts_with("--") => ckpt = Some(PathBuf::from(s)),
            _ => panic!("unknown argument {s}"),
        }
    }
    a.ckpt = ckpt.expect("usage: bench_forward <ckpt> [--threads N]");
    a
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Seconds per call of `f`, one sample per repeat, after one untimed warm-up call (page
/// faults, rayon start-up and gemm's packing buffers would otherwise land in the first one).
fn time_it(repeats: usize, mut f: impl FnMut()) -> Vec<f64> {
    f();
    (0..repeats)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect()
}

/// Plain row-major `C[m,n] = A[m,k] B[k,n]` through the `gemm` crate with all pool threads:
/// the peak the prefill's GFLOP/s is compared with.
fn gemm_peak(m: usize, k: usize, n: usize, repeats: usize) -> serde_json::Value {
    let a: Vec<f32> = (0..m * k).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
    let mut c = vec![0.0f32; m * n];
    let secs = time_it(repeats, || {
        // SAFETY: a, b, c are exactly m*k, k*n and m*n long with the row-major strides given.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                k as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
        }
    });
    let flops = 2.0 * (m * k * n) as f64;
    let med = median(secs.clone());
    json!({
        "shape_mkn": [m, k, n],
        "median_s": med,
        "gflops_median": flops / med / 1e9,
        "gflops_best": flops / secs.iter().cloned().fold(f64::INFINITY, f64::min) / 1e9,
    })
}

/// Read-only bandwidth: a sum over a buffer far larger than the last-level cache, split over
/// the pool's threads. Eight independent accumulators let the loop vectorise, so the loads,
/// not the adds, are the limit.
fn bandwidth(bytes: usize, repeats: usize) -> serde_json::Value {
    let buf: Vec<f32> = (0..bytes / 4).map(|i| (i % 3) as f32).collect();
    let mut sink = 0.0f32;
    let secs = time_it(repeats, || {
        let s: f32 = buf
            .par_chunks(1 << 16)
            .map(|c| {
                let mut acc = [0.0f32; 16];
                for x in c.chunks_exact(16) {
                    for l in 0..16 {
                        acc[l] += x[l];
                    }
                }
                acc.iter().sum::<f32>()
            })
            .sum();
        sink += s;
    });
    std::hint::black_box(sink);
    let med = median(secs);
    json!({
        "buffer_mib": bytes >> 20,
        "median_s": med,
        "gb_per_s": bytes as f64 / med / 1e9,
    })
}

/// Parameters in the linear layers (q, k, v, o, gate, up, down over all layers).
fn linear_params(c: &LlamaConfig) -> usize {
    let (h, d) = (c.hidden_size, c.head_dim);
    let qd = c.num_attention_heads * d;
    let kvd = c.num_key_value_heads * d;
    let i = c.intermediate_size;
    c.num_hidden_layers * (h * (qd + 2 * kvd) + qd * h + 3 * h * i)
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let a = parse_args();
    rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build_global()?;
    let load_start = load_avg();

    let gemm_small = gemm_peak(512, 576, 1536, 3 * a.repeats);
    let gemm_big = gemm_peak(1024, 1024, 1024, a.repeats);
    let bw = bandwidth(1 << 30, a.repeats);

    let ckpt = Checkpoint::open(&a.ckpt)?;
    let tok = Tokenizer::from_file(a.ckpt.join("tokenizer.json"))?;
    let text = std::fs::read_to_string(&a.prompt)?;
    let mut ids = tok.encode(&text, false)?;
    anyhow::ensure!(
        ids.len() >= a.prompt_tokens,
        "{} encodes to {} tokens, fewer than {}",
        a.prompt.display(),
        ids.len(),
        a.prompt_tokens
    );
    ids.truncate(a.prompt_tokens);
    let t_load = Instant::now();
    let model = Llama::load(&ckpt)?;
    let load_s = t_load.elapsed().as_secs_f64();
    let cfg = model.config().clone();
    let t = ids.len();

    // Prefill: the batched forward with logits for the last position only, as generation
    // needs; the KV-cache decoder's prefill (`Decoder::feed(prompt)`) is timed as well.
    let hooks = Hooks::default();
    let prefill = time_it(a.repeats, || {
        let out = model
            .forward(&[&ids[..]], Logits::Last, &hooks)
            .expect("forward");
        std::hint::black_box(out);
    });
    let feed = time_it(a.repeats, || {
        let mut dec = Decoder::new(&model, t + a.decode_tokens + 1);
        std::hint::black_box(dec.feed(&ids).expect("feed")[0]);
    });

    // Decode: prefill (untimed), then `decode_tokens` greedy steps, one token each; only the
    // steps are timed. The first run is a warm-up and is dropped.
    let mut generated = Vec::new();
    let mut decode_samples = Vec::new();
    for run in 0..=a.repeats.clamp(3, 5) {
        let mut dec = Decoder::new(&model, t + a.decode_tokens + 1);
        let mut next = argmax(dec.feed(&ids)?).expect("logits") as u32;
        generated.clear();
        let t0 = Instant::now();
        for _ in 0..a.decode_tokens {
            generated.push(next);
            next = argmax(dec.feed(&[next])?).expect("logits") as u32;
        }
        if run > 0 {
            decode_samples.push(t0.elapsed().as_secs_f64());
        }
    }
    let decode_s = median(decode_samples.clone());

    // FLOPs of the prefill as computed: every linear on every row, causal attention
    // (QK^T and PV over the keys each row sees), and the LM head for the last row only.
    // Norms, rope, softmax and SwiGLU are O(T*C) and left out.
    let p_lin = linear_params(&cfg);
    let (v, c) = (cfg.vocab_size, cfg.hidden_size);
    let hd = cfg.num_attention_heads * cfg.head_dim;
    let f_lin = 2.0 * p_lin as f64 * t as f64;
    let f_att = cfg.num_hidden_layers as f64 * 4.0 * hd as f64 * (t * (t + 1) / 2) as f64;
    let f_head = 2.0 * (v * c) as f64;
    let flops = f_lin + f_att + f_head;
    let prefill_med = median(prefill.clone());
    let feed_med = median(feed.clone());

    // Decode reads every linear weight and the LM head once per token (the tied embedding
    // when the embeddings are tied); KV-cache reads are ~0.1% of that at this length.
    let head_params = v * c;
    let bytes_per_token = 4 * (p_lin + head_params);
    let gbps = bw["gb_per_s"].as_f64().unwrap_or(0.0);
    let bound = gbps * 1e9 / bytes_per_token as f64;
    let decode_tps = a.decode_tokens as f64 / decode_s;
    let peak = gemm_small["gflops_median"].as_f64().unwrap_or(0.0);
    let prefill_gflops = flops / prefill_med / 1e9;

    let out = json!({
        "tool": "intervene",
        "checkpoint": a.ckpt,
        "threads": a.threads,
        "load_avg_start": load_start,
        "load_avg_end": load_avg(),
        "model_load_s": load_s,
        "gemm_f32": { "512x576x1536": gemm_small, "1024x1024x1024": gemm_big },
        "bandwidth": bw,
        "prompt_tokens": t,
        "prompt_ids": ids,
        "prefill": {
            "what": "Llama::forward(batch of 1, Logits::Last)",
            "median_s": prefill_med,
            "samples_s": prefill,
            "tokens_per_s": t as f64 / prefill_med,
            "flops_counted": "2*linear_params*T + causal attention 4*H*D*T(T+1)/2 per layer + LM head 2*V*C for the last row; norms/rope/softmax/SwiGLU not counted",
            "flops": flops,
            "gflops": prefill_gflops,
            "fraction_of_gemm_peak_512x576x1536": prefill_gflops / peak,
            "decoder_feed_median_s": feed_med,
            "decoder_feed_samples_s": feed,
        },
        "decode": {
            "tokens": a.decode_tokens,
            "median_s": decode_s,
            "samples_s": decode_samples,
            "tokens_per_s": decode_tps,
            "weight_bytes_per_token": bytes_per_token,
            "bandwidth_bound_tokens_per_s": bound,
            "fraction_of_bound": decode_tps / bound,
            "greedy_ids": generated,
        },
        "params": { "linear": p_lin, "lm_head": head_params },
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
