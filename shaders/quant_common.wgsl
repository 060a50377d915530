// Shared by the shaders that quantise (quant.wgsl, gptq.wgsl): correctly rounded division and
// the group grid's fit, in the CPU oracle's f32 order (`interventions::compress::quant`).
// Vulkan only promises 2.5 ULP for `/`, so every division that decides a grid index goes
// through `div_rn`, which divides in integers (see there).

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

// A group's scale and zero point from its raw minimum `lo` and maximum `hi`, as the CPU's
// `GroupParams::from_range` (grid 0 GPTQ asymmetric, 1 GPTQ symmetric, 2 AWQ).
fn fit_range(lo: f32, hi: f32, grid: u32, maxq: f32) -> vec2<f32> {
    var scale: f32;
    var zero: f32;
    if (grid == 2u) {
        scale = div_rn(max(hi - lo, 1e-5), maxq);
        zero = clamp(-round(div_rn(lo, scale)), 0.0, maxq);
    } else {
        // quant.py `find_params`: the range always contains 0.
        var xmin = min(lo, 0.0);
        var xmax = max(hi, 0.0);
        if (grid == 1u) {
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
        if (grid == 1u) {
            zero = (maxq + 1.0) / 2.0;
        } else {
            zero = round(div_rn(-xmin, scale));
        }
    }
    return vec2<f32>(scale, zero);
}

// The grid index of x: clamp(round(x / scale) + zero, 0, maxq).
fn grid_index(x: f32, scale: f32, zero: f32, maxq: f32) -> f32 {
    return clamp(round(div_rn(x, scale)) + zero, 0.0, maxq);
}
