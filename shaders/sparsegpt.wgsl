// SparseGPT's column sweep (IST-DASLab/sparsegpt `fasterprune`) as the CPU oracle
// `interventions::compress::sparsegpt`: per lazy-batch block [i1, i1 + count), the OBS scores
// w^2 / U_jj^2 of the block (`obs_scores`, for the host's unstructured threshold), then one
// invocation per row prunes the block's columns in order (mask from the threshold, or per row
// the N smallest of every M columns scored on the in-block-updated weights), spreading each
// pruned weight's error over the rest of the block through U (`sparsegpt_block`); then the
// later columns take the block's errors at once (`obs_update`, obs_update.wgsl). Division is
// `div_rn` (quant_common.wgsl), so scores are the CPU's bit for bit on the same weights.

struct Params {
    rows: u32,
    cols: u32,
    i1: u32,
    count: u32,
    bs: u32,
    n: u32,        // N:M: pruned per group (0 for unstructured)
    m: u32,        // N:M: group width
    nm: u32,       // 1 N:M, 0 unstructured (prune where score <= thresh)
    thresh: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> w: array<f32>;       // [rows, cols]
@group(0) @binding(1) var<storage, read> u: array<f32>;             // [cols, cols]
@group(0) @binding(2) var<storage, read_write> mask: array<f32>;    // [rows, cols], 1 = pruned
@group(0) @binding(3) var<storage, read_write> scores: array<f32>;  // [rows, bs]
@group(0) @binding(6) var<storage, read_write> w1: array<f32>;      // [rows, bs] block copy
@group(0) @binding(7) var<storage, read_write> err: array<f32>;     // [rows, bs]
@group(0) @binding(8) var<storage, read_write> loss: array<f32>;    // [rows]
@group(0) @binding(10) var<uniform> params: Params;

fn obs_score(x: f32, c: u32) -> f32 {
    let d = u[c * params.cols + c];
    return div_rn(x * x, d * d);
}

@compute @workgroup_size({{WG}})
fn obs_scores(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let idx = flat_id(wid, nwg, li);
    if (idx >= params.rows * params.count) {
        return;
    }
    let r = idx / params.count;
    let i = idx % params.count;
    let c = params.i1 + i;
    scores[r * params.bs + i] = obs_score(w[r * params.cols + c], c);
}

@compute @workgroup_size({{WG}})
fn sparsegpt_block(
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
    for (var i = 0u; i < params.count; i++) {
        let c = params.i1 + i;
        w1[b1 + i] = w[base + c];
        if (params.nm == 0u) {
            mask[base + c] = select(0.0, 1.0, scores[b1 + i] <= params.thresh);
        }
    }
    var row_loss = loss[r];
    for (var i = 0u; i < params.count; i++) {
        let c = params.i1 + i;
        if (params.nm == 1u && i % params.m == 0u) {
            // Per row, the N smallest scores of the next M columns (ties: lower column first,
            // as the CPU's stable sort): column j is pruned when fewer than N rank before it.
            for (var j = 0u; j < params.m; j++) {
                let sj = obs_score(w1[b1 + i + j], c + j);
                var before = 0u;
                for (var k = 0u; k < params.m; k++) {
                    let sk = obs_score(w1[b1 + i + k], c + k);
                    if (sk < sj || (sk == sj && k < j)) {
                        before = before + 1u;
                    }
                }
                mask[base + c + j] = select(0.0, 1.0, before < params.n);
            }
        }
        let x = w1[b1 + i];
        var q = x;
        if (mask[base + c] != 0.0) {
            q = 0.0;
        }
        row_loss = row_loss + obs_step(b1, i, x, q);
        w1[b1 + i] = q;
    }
    for (var i = 0u; i < params.count; i++) {
        w[base + params.i1 + i] = w1[b1 + i];
    }
    loss[r] = row_loss;
}
