// Quantisation onto the uniform group grid (GPTQ's Quantizer, AWQ's pseudo_quantize_tensor),
// as the CPU oracle `interventions::compress::quant` / `rtn`: per (row, group of consecutive
// columns) a scale and zero point from the group's min and max, then every weight's grid
// index clamp(round(x / scale) + zero, 0, maxq) and its value scale * (index - zero).
// The CPU's f32 arithmetic in the CPU's order, with round-half-to-even (WGSL `round`), so the
// result is bit-identical as long as division is correctly rounded: `div_rn` and the fit live
// in quant_common.wgsl, appended to this file at load.

struct Params {
    rows: u32,
    cols: u32,
    gw: u32,     // columns per group (the last group may be shorter)
    ng: u32,     // groups per row
    grid: u32,   // 0 GPTQ asymmetric, 1 GPTQ symmetric, 2 AWQ
    maxq: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> w: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read_write> q: array<f32>;        // grid indices (exact small integers)
@group(0) @binding(3) var<storage, read_write> scales: array<f32>;   // [rows, ng]
@group(0) @binding(4) var<storage, read_write> zeros: array<f32>;    // [rows, ng]
@group(0) @binding(5) var<uniform> params: Params;

// Test hook for `div_rn`: out[i] = w[i] / q[i] for i < params.rows.
@compute @workgroup_size({{WG}})
fn divide_rn(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * {{WG}}u + li;
    if (i < params.rows) {
        out[i] = div_rn(w[i], q[i]);
    }
}

@compute @workgroup_size({{WG}})
fn quantize_groups(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let idx = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * {{WG}}u + li;
    if (idx >= params.rows * params.ng) {
        return;
    }
    let r = idx / params.ng;
    let g = idx % params.ng;
    let c0 = r * params.cols + g * params.gw;
    let c1 = r * params.cols + min((g + 1u) * params.gw, params.cols);
    var lo = w[c0];
    var hi = w[c0];
    for (var i = c0 + 1u; i < c1; i++) {
        lo = min(lo, w[i]);
        hi = max(hi, w[i]);
    }
    let maxq = params.maxq;
    let sz = fit_range(lo, hi, params.grid, maxq);
    let scale = sz.x;
    let zero = sz.y;
    scales[idx] = scale;
    zeros[idx] = zero;
    for (var i = c0; i < c1; i++) {
        let k = grid_index(w[i], scale, zero, maxq);
        q[i] = k;
        out[i] = scale * (k - zero);
    }
}

// The value of every grid index: out = scale * (q - zero), its group's parameters by column.
@compute @workgroup_size({{WG}})
fn dequantize(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let idx = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * {{WG}}u + li;
    if (idx >= params.rows * params.cols) {
        return;
    }
    let r = idx / params.cols;
    let g = (idx % params.cols) / params.gw;
    let p = r * params.ng + g;
    out[idx] = scales[p] * (q[idx] - zeros[p]);
}
