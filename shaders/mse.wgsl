// Mean squared error between hidden states h[N, C] and a target (one [C] row broadcast to
// every row, or [N, C]), with its gradient: dh += k * (h - t), k = 2 w / (N C) computed on the
// host as the CPU does, and each row's sum of squared errors for the host to total. One
// workgroup per row with a tree sum (the CPU sums in f64).

struct Params {
    rows: u32,
    c: u32,
    broadcast: u32,
    k: f32,
}

@group(0) @binding(0) var<storage, read> h: array<f32>;
@group(0) @binding(1) var<storage, read> target_: array<f32>;
@group(0) @binding(2) var<storage, read_write> dh: array<f32>;
@group(0) @binding(3) var<storage, read_write> sq: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

const WG: u32 = {{WG}}u;
var<workgroup> part: array<f32, {{WG}}>;

@compute @workgroup_size({{WG}})
fn mse(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y;
    if (row >= params.rows) {
        return;
    }
    let base = row * params.c;
    let tbase = select(base, 0u, params.broadcast != 0u);
    var s = 0.0;
    for (var j = li; j < params.c; j += WG) {
        let e = h[base + j] - target_[tbase + j];
        s += e * e;
        dh[base + j] = dh[base + j] + params.k * e;
    }
    part[li] = s;
    workgroupBarrier();
    for (var hw = WG / 2u; hw > 0u; hw >>= 1u) {
        if (li < hw) {
            part[li] = part[li] + part[li + hw];
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        sq[row] = part[0];
    }
}
