// Hessian accumulation for GPTQ/SparseGPT: H[C, C] = beta * H + alpha * X^T X for X[N, C].
// Each invocation owns a T x T block of H and walks the rows of X, so every pair of loaded
// values feeds T multiply-adds; T and WG are tuning knobs. Only blocks on or above the
// diagonal are computed, and each writes its mirror too (H is symmetric).

struct Params {
    rows: u32,
    c: u32,
    alpha: f32,
    beta: f32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> h: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

const T: u32 = {{T}}u;

@compute @workgroup_size({{WG}})
fn xtx(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let gid = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * {{WG}}u + li;
    let tiles = (params.c + T - 1u) / T;
    if (gid >= tiles * tiles) {
        return;
    }
    let bi = gid / tiles;
    let bj = gid % tiles;
    if (bj < bi) {
        return;
    }
    let i0 = bi * T;
    let j0 = bj * T;
    let c = params.c;
    var acc: array<f32, T * T>;
    for (var r = 0u; r < params.rows; r++) {
        let base = r * c;
        var xi: array<f32, T>;
        var xj: array<f32, T>;
        for (var a = 0u; a < T; a++) {
            xi[a] = x[base + min(i0 + a, c - 1u)];
            xj[a] = x[base + min(j0 + a, c - 1u)];
        }
        for (var a = 0u; a < T; a++) {
            for (var b = 0u; b < T; b++) {
                acc[a * T + b] += xi[a] * xj[b];
            }
        }
    }
    for (var a = 0u; a < T; a++) {
        let i = i0 + a;
        if (i >= c) {
            break;
        }
        for (var b = 0u; b < T; b++) {
            let j = j0 + b;
            if (j >= c) {
                break;
            }
            // In a diagonal block both (i, j) and (j, i) come by; the lower one is the mirror.
            if (j < i) {
                continue;
            }
            let v = params.beta * h[i * c + j] + params.alpha * acc[a * T + b];
            h[i * c + j] = v;
            if (i != j) {
                h[j * c + i] = v;
            }
        }
    }
}
