// Grouped-query causal attention backward over packed rows (the forward's span contract:
// query row r sees key rows spans[r].start .. + len; query head h reads kv head h / group).
// The probabilities are recomputed rather than stored (as FlashAttention does): with
// s_j = q.k_j * scale, P_j = exp(s_j - lse), dP_j = dO.v_j and delta = sum_j P_j dP_j,
//   dq   = scale * sum_j P_j (dP_j - delta) k_j                  (entry `attn_dq`)
//   dk_j += scale * sum_(r,h) P_j (dP_j - delta) q               (entry `attn_dkv`)
//   dv_j += sum_(r,h) P_j dO
// `attn_dq` runs one invocation per (row, head) and also records (lse, delta) per (row, head)
// in `stats`; `attn_dkv` then runs one invocation per (key row, kv head), looping over the
// query rows whose span holds that key, so every key gradient is summed by one invocation in
// row order: deterministic, no atomics. Every operand is a column window of a wider matrix
// (element e of head h of row r at r * stride + off + h * D + e), so q/k/v may be read from
// the fused qkv rows and dq/dk/dv written into the fused gradient.

struct Params {
    rows: u32,
    heads: u32,
    group: u32,
    scale: f32,
    key_rows: u32,
    kv_heads: u32,
    q_stride: u32,
    q_off: u32,
    k_stride: u32,
    k_off: u32,
    v_stride: u32,
    v_off: u32,
    o_stride: u32,   // dout
    o_off: u32,
    dq_stride: u32,
    dq_off: u32,
    dk_stride: u32,
    dk_off: u32,
    dv_stride: u32,
    dv_off: u32,
}

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> spans: array<u32>;  // [rows, 2]: start, len
@group(0) @binding(4) var<storage, read> dout: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;  // [rows * heads, 2]
@group(0) @binding(6) var<storage, read_write> dq: array<f32>;
@group(0) @binding(7) var<storage, read_write> dk: array<f32>;
@group(0) @binding(8) var<storage, read_write> dv: array<f32>;
@group(0) @binding(9) var<uniform> params: Params;

const D: u32 = {{D}}u;

fn kbase(j: u32, g: u32) -> u32 {
    return j * params.k_stride + params.k_off + g * D;
}

fn vbase(j: u32, g: u32) -> u32 {
    return j * params.v_stride + params.v_off + g * D;
}

@compute @workgroup_size({{WG}})
fn attn_dq(
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
    let start = spans[2u * r];
    let len = spans[2u * r + 1u];
    var qv: array<f32, D>;
    var ov: array<f32, D>;
    let qb = r * params.q_stride + params.q_off + h * D;
    let ob = r * params.o_stride + params.o_off + h * D;
    for (var e = 0u; e < D; e++) {
        qv[e] = q[qb + e];
        ov[e] = dout[ob + e];
    }
    // Pass 1: the log-normaliser, with a running max (spans are never empty).
    var m = 0.0;
    var l = 0.0;
    for (var j = start; j < start + len; j++) {
        let kb = kbase(j, g);
        var s = 0.0;
        for (var e = 0u; e < D; e++) {
            s += qv[e] * k[kb + e];
        }
        s *= params.scale;
        if (j == start) {
            m = s;
        }
        let m_new = max(m, s);
        l = l * exp(m - m_new) + exp(s - m_new);
        m = m_new;
    }
    let lse = m + log(l);
    // Pass 2: delta = sum_j P_j dP_j.
    var delta = 0.0;
    for (var j = start; j < start + len; j++) {
        let kb = kbase(j, g);
        let vb = vbase(j, g);
        var s = 0.0;
        var dp = 0.0;
        for (var e = 0u; e < D; e++) {
            s += qv[e] * k[kb + e];
            dp += ov[e] * v[vb + e];
        }
        delta += exp(s * params.scale - lse) * dp;
    }
    // Pass 3: dq.
    var acc: array<f32, D>;
    for (var j = start; j < start + len; j++) {
        let kb = kbase(j, g);
        let vb = vbase(j, g);
        var s = 0.0;
        var dp = 0.0;
        for (var e = 0u; e < D; e++) {
            s += qv[e] * k[kb + e];
            dp += ov[e] * v[vb + e];
        }
        let ds = exp(s * params.scale - lse) * (dp - delta) * params.scale;
        for (var e = 0u; e < D; e++) {
            acc[e] += ds * k[kb + e];
        }
    }
    let db = r * params.dq_stride + params.dq_off + h * D;
    for (var e = 0u; e < D; e++) {
        dq[db + e] = acc[e];
    }
    stats[2u * idx] = lse;
    stats[2u * idx + 1u] = delta;
}

@compute @workgroup_size({{WG}})
fn attn_dkv(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let idx = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * {{WG}}u + li;
    if (idx >= params.key_rows * params.kv_heads) {
        return;
    }
    let j = idx / params.kv_heads;
    let g = idx % params.kv_heads;
    var kv: array<f32, D>;
    var vv: array<f32, D>;
    let kb = kbase(j, g);
    let vb = vbase(j, g);
    for (var e = 0u; e < D; e++) {
        kv[e] = k[kb + e];
        vv[e] = v[vb + e];
    }
    var ak: array<f32, D>;
    var av: array<f32, D>;
    for (var r = 0u; r < params.rows; r++) {
        let start = spans[2u * r];
        if (j < start || j >= start + spans[2u * r + 1u]) {
            continue;
        }
        for (var h = g * params.group; h < (g + 1u) * params.group; h++) {
            let qb = r * params.q_stride + params.q_off + h * D;
            let ob = r * params.o_stride + params.o_off + h * D;
            var s = 0.0;
            var dp = 0.0;
            for (var e = 0u; e < D; e++) {
                s += q[qb + e] * kv[e];
                dp += dout[ob + e] * vv[e];
            }
            let st = 2u * (r * params.heads + h);
            let p = exp(s * params.scale - stats[st]);
            let ds = p * (dp - stats[st + 1u]) * params.scale;
            for (var e = 0u; e < D; e++) {
                av[e] += p * dout[ob + e];
                ak[e] += ds * q[qb + e];
            }
        }
    }
    let dkb = j * params.dk_stride + params.dk_off + g * D;
    let dvb = j * params.dv_stride + params.dv_off + g * D;
    for (var e = 0u; e < D; e++) {
        dk[dkb + e] = dk[dkb + e] + ak[e];
        dv[dvb + e] = dv[dvb + e] + av[e];
    }
}
