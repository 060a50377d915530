// The linear layer y[M, N] (+)= x[M, K] . W[N, K]^T (+ bias), W in PyTorch's [out, in] layout.
// Register-blocked: each invocation owns a TM x TN block of y and walks K four at a time, so
// every loaded x and W value feeds TN (resp. TM) multiply-adds. No workgroup memory: on
// software rasterisers it only adds barriers; on hardware, TM/TN/WG are the tuning knobs
// (device.rs, `Tuning`). W may be one row chunk of a larger weight (rows n0..n0+n_len).

struct Params {
    m: u32,
    k: u32,
    n: u32,      // row stride of y (all output columns)
    n0: u32,     // first output column this chunk of W covers
    n_len: u32,  // output columns in this chunk
    flags: u32,  // bit 0: add to y; bit 1: add bias
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

const TM: u32 = {{TM}}u;
const TN: u32 = {{TN}}u;
const WG: u32 = {{WG}}u;

@compute @workgroup_size({{WG}})
fn linear(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let gid = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * WG + li;
    let tiles_n = (params.n_len + TN - 1u) / TN;
    let tiles_m = (params.m + TM - 1u) / TM;
    if (gid >= tiles_n * tiles_m) {
        return;
    }
    let row0 = (gid / tiles_n) * TM;
    let col0 = (gid % tiles_n) * TN;
    let k = params.k;

    // Row offsets, clamped into range so the inner loop needs no branches; the clamped
    // duplicates are computed and then not stored.
    var xb: array<u32, TM>;
    for (var i = 0u; i < TM; i++) {
        xb[i] = min(row0 + i, params.m - 1u) * k;
    }
    var wb: array<u32, TN>;
    for (var j = 0u; j < TN; j++) {
        wb[j] = min(col0 + j, params.n_len - 1u) * k;
    }

    var acc: array<f32, TM * TN>;
    let k4 = k & ~3u;
    for (var p = 0u; p < k4; p += 4u) {
        var xv: array<vec4<f32>, TM>;
        for (var i = 0u; i < TM; i++) {
            let o = xb[i] + p;
            xv[i] = vec4<f32>(x[o], x[o + 1u], x[o + 2u], x[o + 3u]);
        }
        for (var j = 0u; j < TN; j++) {
            let o = wb[j] + p;
            let wv = vec4<f32>(w[o], w[o + 1u], w[o + 2u], w[o + 3u]);
            for (var i = 0u; i < TM; i++) {
                acc[i * TN + j] += dot(xv[i], wv);
            }
        }
    }
    for (var p = k4; p < k; p++) {
        for (var i = 0u; i < TM; i++) {
            let xs = x[xb[i] + p];
            for (var j = 0u; j < TN; j++) {
                acc[i * TN + j] += xs * w[wb[j] + p];
            }
        }
    }

    for (var i = 0u; i < TM; i++) {
        let r = row0 + i;
        if (r >= params.m) {
            break;
        }
        for (var j = 0u; j < TN; j++) {
            let c = col0 + j;
            if (c >= params.n_len) {
                break;
            }
            let idx = r * params.n + params.n0 + c;
            var v = acc[i * TN + j];
            if ((params.flags & 1u) != 0u) {
                v += y[idx];
            }
            if ((params.flags & 2u) != 0u) {
                v += bias[params.n0 + c];
            }
            y[idx] = v;
        }
    }
}
