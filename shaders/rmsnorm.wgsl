// RMSNorm, one workgroup per row: y = x / sqrt(mean(x^2) + eps) * w. The CPU sums squares in
// f64; here the row is first scaled by its largest magnitude, so the f32 sum of squares can
// neither overflow (|x| ~ 1e20) nor lose everything to underflow (|x| ~ 1e-20).

struct Params {
    rows: u32,
    c: u32,
    eps: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const WG: u32 = {{WG}}u;
var<workgroup> part: array<f32, {{WG}}>;

@compute @workgroup_size({{WG}})
fn rmsnorm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y;
    // `row` is the same for the whole workgroup, so this return keeps barriers uniform.
    if (row >= params.rows) {
        return;
    }
    let c = params.c;
    let base = row * c;

    var mx = 0.0;
    for (var j = li; j < c; j += WG) {
        mx = max(mx, abs(x[base + j]));
    }
    part[li] = mx;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            part[li] = max(part[li], part[li + s]);
        }
        workgroupBarrier();
    }
    let scale = part[0];
    workgroupBarrier();

    let inv_scale = select(0.0, 1.0 / scale, scale > 0.0);
    var ss = 0.0;
    for (var j = li; j < c; j += WG) {
        let v = x[base + j] * inv_scale;
        ss += v * v;
    }
    part[li] = ss;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            part[li] = part[li] + part[li + s];
        }
        workgroupBarrier();
    }
    let ms = part[0] / f32(c);
    // rms = sqrt(scale^2 * ms + eps) = scale * sqrt(ms + eps / scale^2). When scale^2
    // underflows the row is negligible next to eps; when it overflows eps / inf = 0 is right.
    let t = scale * scale;
    var inv: f32;
    if (t < 1e-30) {
        inv = 1.0 / sqrt(t * ms + params.eps);
    } else {
        inv = 1.0 / (scale * sqrt(ms + params.eps / t));
    }
    for (var j = li; j < c; j += WG) {
        y[base + j] = x[base + j] * inv * w[j];
    }
}
