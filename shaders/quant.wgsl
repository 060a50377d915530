// Quantisation onto the uniform group grid (GPTQ's Quantizer, AWQ's pseudo_quantize_tensor),
// as the CPU oracle `interventions::compress::quant` / `rtn`: per (row, group of consecutive
// columns) a scale and zero point from the group's min and max, then every weight's grid
// index clamp(round(x / scale) + zero, 0, maxq) and its value scale * (index - zero).
// The CPU's f32 arithmetic in the CPU's order, with round-half-to-even (WGSL `round`), so the
// result is bit-identical as long as division is correctly rounded. Vulkan only promises
// 2.5 ULP for `/`, so every division goes through `div_rn`, which corrects the quotient with
// its exact residual (see there).

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

// x = hi + lo exactly, each with at most 12 significant bits (the low 12 mantissa bits of x
// masked off for hi), so every product of two halves is exact in f32.
fn split(x: f32) -> vec2<f32> {
    let hi = bitcast<f32>(bitcast<u32>(x) & 0xFFFFF000u);
    return vec2<f32>(hi, x - hi);
}

// a / b rounded to nearest-even. Drivers may compute `/` as a * (1/b) (llvmpipe does; Vulkan
// allows 2.5 ULP), and may or may not fuse `fma`, so the quotient is corrected with its exact
// residual r = a - q*b, formed without relying on either: p = q*b rounded, its rounding error
// e from Dekker's exact product of the halves, r = (a - p) - e (each step exact for a quotient
// within a few ULP). q + r/b then lands on the correctly rounded quotient: the correction is
// under an ULP of q, so its own rounding cannot move the result unless the exact quotient
// lies within ~2^-20 ULP of a rounding midpoint.
fn div_rn(a: f32, b: f32) -> f32 {
    let q = a / b;
    let p = q * b;
    let qs = split(q);
    let bs = split(b);
    let e = ((qs.x * bs.x - p) + qs.x * bs.y + qs.y * bs.x) + qs.y * bs.y;
    let r = (a - p) - e;
    return q + r / b;
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
