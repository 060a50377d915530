// GPTQ's column sweep (IST-DASLab/gptq `fasterquant`) as the CPU oracle
// `interventions::compress::gptq`: per lazy-batch block [i1, i1 + count), one invocation per
// row quantises the block's columns in order, spreading each column's error over the rest of
// the block through the upper Cholesky factor U of H^-1 (`gptq_block`); then every later
// column takes the block's errors at once, W[:, i2:] -= Err · U[i1:i2, i2:] (`obs_update`).
// `obs_update` (obs_update.wgsl), division and the grid (quant_common.wgsl) are appended at
// load. A column's grid index matches the CPU's whenever the weight reaching it does; the
// rank-1 updates may be fused into FMAs by the driver, so weights later in a row can differ
// in the last bits.

struct Params {
    rows: u32,
    cols: u32,
    i1: u32,     // first column of the block
    count: u32,  // columns in the block
    bs: u32,     // row stride of w1 and err (the block size)
    gw: u32,     // columns per group
    ng: u32,     // groups per row
    mode: u32,   // 0 params per row (prefilled), 1 dynamic groups, 2 static groups (prefilled)
    grid: u32,   // 0 GPTQ asymmetric, 1 GPTQ symmetric
    maxq: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> w: array<f32>;       // [rows, cols], permuted order
@group(0) @binding(1) var<storage, read> u: array<f32>;             // [cols, cols]
@group(0) @binding(2) var<storage, read_write> qv: array<f32>;      // [rows, cols] values
@group(0) @binding(3) var<storage, read_write> qi: array<f32>;      // [rows, cols] grid indices
@group(0) @binding(4) var<storage, read_write> scales: array<f32>;  // [rows, ng]
@group(0) @binding(5) var<storage, read_write> zeros: array<f32>;   // [rows, ng]
@group(0) @binding(6) var<storage, read_write> w1: array<f32>;      // [rows, bs] block copy
@group(0) @binding(7) var<storage, read_write> err: array<f32>;     // [rows, bs]
@group(0) @binding(8) var<storage, read_write> loss: array<f32>;    // [rows]
@group(0) @binding(9) var<storage, read> col_group: array<u32>;     // [cols] static groups
@group(0) @binding(10) var<uniform> params: Params;

@compute @workgroup_size({{WG}})
fn gptq_block(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let r = flat_id(wid, nwg, li);
    if (r >= params.rows) {
        return;
    }
    let cols = params.cols;
    let base = r * cols;
    let b1 = r * params.bs;
    let maxq = params.maxq;
    for (var i = 0u; i < params.count; i++) {
        w1[b1 + i] = w[base + params.i1 + i];
    }
    // The quantiser state carries across blocks: a group may start in an earlier block.
    var p = r * params.ng;
    if (params.mode == 1u) {
        p = r * params.ng + params.i1 / params.gw;
    }
    var scale = scales[p];
    var zero = zeros[p];
    var row_loss = loss[r];
    for (var i = 0u; i < params.count; i++) {
        let c = params.i1 + i;
        if (params.mode == 2u) {
            // The original column's own group, whatever the order.
            let g = r * params.ng + col_group[c];
            scale = scales[g];
            zero = zeros[g];
        } else if (params.mode == 1u && c % params.gw == 0u) {
            // From the outer W, as `find_params(W[:, c:c+g])`.
            let end = min(c + params.gw, cols);
            var lo = w[base + c];
            var hi = lo;
            for (var j = c + 1u; j < end; j++) {
                lo = min(lo, w[base + j]);
                hi = max(hi, w[base + j]);
            }
            let sz = fit_range(lo, hi, params.grid, maxq);
            scale = sz.x;
            zero = sz.y;
            scales[r * params.ng + c / params.gw] = scale;
            zeros[r * params.ng + c / params.gw] = zero;
        }
        let x = w1[b1 + i];
        let k = grid_index(x, scale, zero, maxq);
        let q = scale * (k - zero);
        qv[base + c] = q;
        qi[base + c] = k;
        row_loss = row_loss + obs_step(b1, i, x, q);
    }
    loss[r] = row_loss;
}
