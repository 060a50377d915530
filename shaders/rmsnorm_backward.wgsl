// RMSNorm backward (y = x * r * w, r = 1/sqrt(mean(x^2) + eps) per row, kept by the forward):
//   dx += r * (dy * w) - x * r^3 * mean(dy * w * x)     (entry `dx`, one workgroup per row)
//   dw += sum over rows of dy * x * r                   (entry `dw`, one invocation per column)
// The column sums walk the rows in order, as the CPU does; the row dot product is a tree sum
// in f32 where the CPU sums in f64.

struct Params {
    rows: u32,
    c: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> r: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> dw: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

const WG: u32 = {{WG}}u;
var<workgroup> part: array<f32, {{WG}}>;

@compute @workgroup_size({{WG}})
fn rms_dx(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y;
    // Uniform across the workgroup, so the barriers below stay uniform.
    if (row >= params.rows) {
        return;
    }
    let c = params.c;
    let base = row * c;
    var s = 0.0;
    for (var j = li; j < c; j += WG) {
        s += dy[base + j] * w[j] * x[base + j];
    }
    part[li] = s;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        if (li < h) {
            part[li] = part[li] + part[li + h];
        }
        workgroupBarrier();
    }
    let ri = r[row];
    let k = part[0] / f32(c) * ri * ri * ri;
    for (var j = li; j < c; j += WG) {
        let i = base + j;
        dx[i] = dx[i] + (ri * dy[i] * w[j] - k * x[i]);
    }
}

@compute @workgroup_size({{WG}})
fn rms_dw(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let j = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * WG + li;
    if (j >= params.c) {
        return;
    }
    var v = dw[j];
    for (var row = 0u; row < params.rows; row++) {
        let i = row * params.c + j;
        v += dy[i] * x[i] * r[row];
    }
    dw[j] = v;
}
