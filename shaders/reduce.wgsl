// Per-channel (column) statistics of activations x[N, C], for the compression solvers:
// sum of squares (Wanda's scaler_row numerator) and mean magnitude (AWQ's x_mean). One
// invocation per column, walking the rows, so neighbouring invocations read neighbouring
// addresses. Kahan-compensated, since the CPU accumulates in f64 and N can be large.

struct Params {
    rows: u32,
    c: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> sum_sq: array<f32>;
@group(0) @binding(2) var<storage, read_write> mean_abs: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size({{WG}})
fn col_stats(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let j = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * {{WG}}u + li;
    if (j >= params.c) {
        return;
    }
    var sq = 0.0;
    var sq_c = 0.0;
    var ab = 0.0;
    var ab_c = 0.0;
    for (var r = 0u; r < params.rows; r++) {
        let v = x[r * params.c + j];
        let y1 = v * v - sq_c;
        let t1 = sq + y1;
        sq_c = (t1 - sq) - y1;
        sq = t1;
        let y2 = abs(v) - ab_c;
        let t2 = ab + y2;
        ab_c = (t2 - ab) - y2;
        ab = t2;
    }
    sum_sq[j] = sq;
    mean_abs[j] = select(0.0, ab / f32(params.rows), params.rows > 0u);
}
