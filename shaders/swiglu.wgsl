// The SwiGLU gate: act[r, c] = silu(gate_up[r, c]) * gate_up[r, I + c], with each gate_up row
// laid out as [gate (I) | up (I)] (the fused projection). silu is written so that exp never
// sees a large positive argument, as on the CPU.

struct Params {
    rows: u32,
    i: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> gate_up: array<f32>;
@group(0) @binding(1) var<storage, read_write> act: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

fn silu(v: f32) -> f32 {
    if (v >= 0.0) {
        return v / (1.0 + exp(-v));
    }
    let e = exp(v);
    return v * e / (1.0 + e);
}

@compute @workgroup_size({{WG}})
fn swiglu(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let idx = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * {{WG}}u + li;
    if (idx >= params.rows * params.i) {
        return;
    }
    let r = idx / params.i;
    let c = idx % params.i;
    let base = r * 2u * params.i;
    act[idx] = silu(gate_up[base + c]) * gate_up[base + params.i + c];
}
