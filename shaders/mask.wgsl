// Pruning masks, as the CPU pruners (`interventions::compress::mask`): every entry decides
// from a score whether its weight is pruned; `w_out` is `w` with pruned weights 0, and `mask`
// holds 1.0 there (0.0 elsewhere). Inputs are read-only, so no decision reads a weight
// another invocation has already pruned. Scores are compared in IEEE total order (`f32::total_cmp`) through
// `key`, ties going to the lower column as the CPU's stable sorts do. `mode` picks the score:
// 0 `scores[i]` as given, 1 |w| (magnitude; `scores` unread), 2 |w| * scores[column]
// (Wanda: `scores` holds the per-input norms sqrt(scaler_row)).
//   `nm_mask`        per row, the N smallest of every run of M columns; one invocation per run
//   `row_smallest`   per row, the K smallest (Wanda's per-output comparison group): one
//                    workgroup per row finds the K-th smallest key by an 8-bit radix select
//   `threshold_mask` score <= t, one threshold for the layer (magnitude / SparseGPT), IEEE <=

struct Params {
    rows: u32,
    cols: u32,
    n: u32,       // N (nm_mask) or K (row_smallest)
    m: u32,       // M (nm_mask)
    mode: u32,
    thresh: f32,  // threshold_mask
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> scores: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> w_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> mask: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

const WG: u32 = {{WG}}u;

fn score(i: u32) -> f32 {
    if (params.mode == 1u) {
        return abs(w[i]);
    } else if (params.mode == 2u) {
        return abs(w[i]) * scores[i % params.cols];
    }
    return scores[i];
}

// Monotone in total order: non-negatives get the sign bit set, negatives are inverted.
fn key(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    return select(b | 0x80000000u, ~b, (b >> 31u) == 1u);
}

fn prune(i: u32, p: bool) {
    w_out[i] = select(w[i], 0.0, p);
    mask[i] = select(0.0, 1.0, p);
}

@compute @workgroup_size({{WG}})
fn nm_mask(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let idx = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * WG + li;
    let runs = params.cols / params.m;
    if (idx >= params.rows * runs) {
        return;
    }
    let base = (idx / runs) * params.cols + (idx % runs) * params.m;
    for (var a = 0u; a < params.m; a++) {
        let ka = key(score(base + a));
        var rank = 0u;
        for (var b = 0u; b < params.m; b++) {
            let kb = key(score(base + b));
            if (kb < ka || (kb == ka && b < a)) {
                rank++;
            }
        }
        prune(base + a, rank < params.n);
    }
}

@compute @workgroup_size({{WG}})
fn threshold_mask(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * WG + li;
    if (i >= params.rows * params.cols) {
        return;
    }
    prune(i, score(i) <= params.thresh);
}

var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> sel: array<u32, 2>;  // key prefix found so far, rank still to find within it

@compute @workgroup_size({{WG}})
fn row_smallest(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y;
    // Uniform across the workgroup, so the barriers below stay uniform.
    if (row >= params.rows) {
        return;
    }
    let base = row * params.cols;
    if (li == 0u) {
        sel[0] = 0u;
        sel[1] = params.n;  // 1-based rank of the K-th smallest key
    }
    var hi_mask = 0u;
    for (var round_i = 0u; round_i < 4u; round_i++) {
        let shift = 24u - 8u * round_i;
        for (var d = li; d < 256u; d += WG) {
            atomicStore(&hist[d], 0u);
        }
        workgroupBarrier();
        let prefix = sel[0];
        for (var j = li; j < params.cols; j += WG) {
            let k = key(score(base + j));
            if ((k & hi_mask) == prefix) {
                atomicAdd(&hist[(k >> shift) & 255u], 1u);
            }
        }
        workgroupBarrier();
        if (li == 0u) {
            var need = sel[1];
            var d = 0u;
            loop {
                let c = atomicLoad(&hist[d]);
                if (c >= need || d == 255u) {
                    break;
                }
                need -= c;
                d++;
            }
            sel[0] = prefix | (d << shift);
            sel[1] = need;
        }
        hi_mask |= 255u << shift;
        workgroupBarrier();
    }
    // sel[0] is the K-th smallest key; the first sel[1] entries equal to it (by column) go
    // with every smaller one.
    let kth = sel[0];
    let ties = sel[1];
    workgroupBarrier();
    for (var j = li; j < params.cols; j += WG) {
        let k = key(score(base + j));
        if (k != kth) {
            prune(base + j, k < kth);
        }
    }
    if (li == 0u) {
        var left = ties;
        for (var j = 0u; j < params.cols; j++) {
            if (key(score(base + j)) == kth) {
                prune(base + j, left > 0u);
                if (left > 0u) {
                    left--;
                }
            }
        }
    }
}
