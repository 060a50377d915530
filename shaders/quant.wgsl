// Quantisation onto the uniform group grid (GPTQ's Quantizer, AWQ's pseudo_quantize_tensor),
// as the CPU oracle `interventions::compress::quant` / `rtn`: per (row, group of consecutive
// columns) a scale and zero point from the group's min and max, then every weight's grid
// index clamp(round(x / scale) + zero, 0, maxq) and its value scale * (index - zero).
// The CPU's f32 arithmetic in the CPU's order, with round-half-to-even (WGSL `round`), so the
// result is bit-identical as long as division is correctly rounded. Vulkan only promises
// 2.5 ULP for `/`, so every division goes through `div_rn`, which divides in integers (see
// there).

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

// A finite nonzero f32's significand with its leading one at bit 23 (a subnormal's shifted
// up) and its biased exponent to match (below 1 for subnormals).
struct Normalised {
    m: u32,
    e: i32,
}

fn normalised(u: u32) -> Normalised {
    let e = i32((u >> 23u) & 0xFFu);
    let m = u & 0x7FFFFFu;
    if (e == 0) {
        let s = countLeadingZeros(m) - 8u;
        return Normalised(m << s, 1 - i32(s));
    }
    return Normalised(m | 0x800000u, e);
}

// a / b rounded to nearest-even, by integer long division of the significands. Vulkan only
// promises 2.5 ULP for `/`, and a float correction of the quotient by its residual (Dekker
// products) still came out one ULP off under NVIDIA's compiler, which may contract and reorder
// float arithmetic (bench/RESULTS.md, H200 run); integer arithmetic is exact on every driver.
// Subnormal inputs and results and signed zeros as IEEE division; infinities, NaN and a zero
// divisor (never passed here: ranges are finite, scales positive) go to the driver's `/`.
fn div_rn(a: f32, b: f32) -> f32 {
    let ua = bitcast<u32>(a);
    let ub = bitcast<u32>(b);
    let sign = (ua ^ ub) & 0x80000000u;
    let inf_exp = 0x7F800000u;
    if ((ua & inf_exp) == inf_exp || (ub & inf_exp) == inf_exp || (ub & 0x7FFFFFFFu) == 0u) {
        return a / b;
    }
    if ((ua & 0x7FFFFFFFu) == 0u) {
        return bitcast<f32>(sign);
    }
    let na = normalised(ua);
    let nb = normalised(ub);
    var ma = na.m;
    let mb = nb.m;
    // Biased exponent of the quotient once ma / mb is brought into [1, 2).
    var e = na.e - nb.e + 127;
    if (ma < mb) {
        ma = ma << 1u;
        e = e - 1;
    }
    // Restoring division: q = floor(ma * 2^23 / mb) (24 bits), r = twice the remainder.
    var q = 0u;
    var r = ma;
    for (var i = 0u; i < 24u; i++) {
        q = q << 1u;
        if (r >= mb) {
            r = r - mb;
            q = q | 1u;
        }
        r = r << 1u;
    }
    if (e >= 1) {
        if (r > mb || (r == mb && (q & 1u) == 1u)) {
            q = q + 1u;
            if (q == 0x1000000u) {
                q = q >> 1u;
                e = e + 1;
            }
        }
        if (e >= 255) {
            return bitcast<f32>(sign | 0x7F800000u);
        }
        return bitcast<f32>(sign | (u32(e) << 23u) | (q & 0x7FFFFFu));
    }
    // Subnormal result: q * 2^(e - 1) units of 2^-149, rounded once from the exact value.
    let s = u32(1 - e);
    if (s >= 25u) {
        return bitcast<f32>(sign);
    }
    let kept = q >> s;
    let dropped = q & ((1u << s) - 1u);
    let half = 1u << (s - 1u);
    var m = kept;
    if (dropped > half || (dropped == half && (r != 0u || (kept & 1u) == 1u))) {
        m = m + 1u;
    }
    return bitcast<f32>(sign | m);
}

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
    var scale: f32;
    var zero: f32;
    if (params.grid == 2u) {
        scale = div_rn(max(hi - lo, 1e-5), maxq);
        zero = clamp(-round(div_rn(lo, scale)), 0.0, maxq);
    } else {
        // quant.py `find_params`: the range always contains 0.
        var xmin = min(lo, 0.0);
        var xmax = max(hi, 0.0);
        if (params.grid == 1u) {
            xmax = max(abs(xmin), xmax);
            if (xmin < 0.0) {
                xmin = -xmax;
            }
        }
        if (xmin == 0.0 && xmax == 0.0) {
            xmin = -1.0;
            xmax = 1.0;
        }
        scale = div_rn(xmax - xmin, maxq);
        if (params.grid == 1u) {
            zero = (maxq + 1.0) / 2.0;
        } else {
            zero = round(div_rn(-xmin, scale));
        }
    }
    scales[idx] = scale;
    zeros[idx] = zero;
    for (var i = c0; i < c1; i++) {
        let k = clamp(round(div_rn(w[i], scale)) + zero, 0.0, maxq);
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
