//! The product kernel alone on the shapes of the training step (`bench/train_step.sh`: 4 x 256
//! rows of SmolLM2), `y[M, N] = x[M, K] . w[N, K]^T` through `backend::cpu::matmul::linear`,
//! the call every forward linear makes; `bench/gemm_bench.py` times `torch.nn.functional.linear`
//! on the same shapes. Says how much of the step's gap to PyTorch is the kernel's.
//!
//! Usage: `gemm_bench [threads] [reps]`; prints one line per shape: M K N, median seconds,
//! GFLOP/s. `gemm_bench shapes` prints the shapes (name M K N), which the PyTorch side reads.

use std::time::Instant;

use intervene::backend::cpu::matmul::linear;

/// (name, M, K, N): the forward products of one layer and of one head chunk, then the
/// backward's largest (input and weight gradients of gate/up and down, as `x . w^T` shapes).
const SHAPES: [(&str, usize, usize, usize); 9] = [
    ("qkv", 1024, 576, 960),
    ("o", 1024, 576, 576),
    ("gate_up", 1024, 576, 3072),
    ("down", 1024, 1536, 576),
    ("head_chunk", 256, 576, 49152),
    ("dx_gate_up", 1024, 3072, 576),
    ("dx_down", 1024, 576, 1536),
    ("dw_gate_up", 3072, 1024, 576),
    ("dw_down", 576, 1024, 1536),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("shapes") {
        for (name, m, k, n) in SHAPES {
            println!("{name} {m} {k} {n}");
        }
        return Ok(());
    }
    let threads: usize = args.get(1).map_or(Ok(2), |s| s.parse())?;
    let reps: usize = args.get(2).map_or(Ok(7), |s| s.parse())?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;
    // A fixed pseudo-random fill: zeros would let no kernel take a shortcut, but random data
    // is the honest case.
    let mut state = 0x9e37_79b9_u32;
    let mut fill = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    };
    for (name, m, k, n) in SHAPES {
        let (x, w) = (fill(m * k), fill(n * k));
        let mut y = vec![0.0f32; m * n];
        linear(&x, &w, None, &mut y, m, k, n, false);
        let mut times: Vec<f64> = (0..reps)
            .map(|_| {
                let t = Instant::now();
                linear(&x, &w, None, &mut y, m, k, n, false);
                t.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let med = times[reps / 2];
        let gflops = 2.0 * (m * k * n) as f64 / med / 1e9;
        println!("ours  {name:<11} {m:>5} {k:>5} {n:>6} {med:.5} s {gflops:7.1} GFLOP/s");
    }
    Ok(())
}
