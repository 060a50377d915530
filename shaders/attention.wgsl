// Grouped-query causal attention over packed rows, the CPU backend's contract: query row r
// attends to key/value rows spans[r].start .. + spans[r].len (causal mask, sequence
// separation and KV cache in one description). Query head h reads kv head h / (H / G).
// One invocation per (row, head), with an online softmax (running max and sum), so the span
// can be any length without scratch memory. q, k and v may be column windows of wider
// matrices (the fused qkv rows): element e of head h of row r is at r * stride + off + h*D + e.

struct Params {
    rows: u32,
    heads: u32,
    group: u32,   // H / G
    scale: f32,   // 1 / sqrt(D), computed on the host as the CPU does
    q_stride: u32,
    q_off: u32,
    k_stride: u32,
    k_off: u32,
    v_stride: u32,
    v_off: u32,
    o_stride: u32,
    o_off: u32,
}

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> spans: array<u32>;  // [rows, 2]: start, len
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

const D: u32 = {{D}}u;

@compute @workgroup_size({{WG}})
fn attend(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let idx = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * {{WG}}u + li;
    if (idx >= params.rows * params.heads) {
        return;
    }
    let r = idx / params.heads;
    let h = idx % params.heads;
    let g = h / params.group;
    let qb = r * params.q_stride + params.q_off + h * D;
    let start = spans[2u * r];
    let len = spans[2u * r + 1u];

    var qv: array<f32, D>;
    for (var e = 0u; e < D; e++) {
        qv[e] = q[qb + e];
    }
    // The first key (spans are never empty) sets the running max, so no -inf or huge
    // sentinel ever enters exp.
    var acc: array<f32, D>;
    var m = 0.0;
    var l = 0.0;
    for (var j = start; j < start + len; j++) {
        let kb = j * params.k_stride + params.k_off + g * D;
        var s = 0.0;
        for (var e = 0u; e < D; e++) {
            s += qv[e] * k[kb + e];
        }
        s *= params.scale;
        if (j == start) {
            m = s;
        }
        // Rescale what was accumulated under the old maximum.
        let m_new = max(m, s);
        let corr = exp(m - m_new);
        let p = exp(s - m_new);
        l = l * corr + p;
        let vb = j * params.v_stride + params.v_off + g * D;
        for (var e = 0u; e < D; e++) {
            acc[e] = acc[e] * corr + p * v[vb + e];
        }
        m = m_new;
    }
    let ob = r * params.o_stride + params.o_off + h * D;
    let inv = 1.0 / l;
    for (var e = 0u; e < D; e++) {
        out[ob + e] = acc[e] * inv;
    }
}
