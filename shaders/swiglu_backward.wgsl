// SwiGLU backward over the fused [gate (I) | up (I)] rows (act = silu(gate) * up):
//   d_up = d_act * silu(g),  d_gate = d_act * up * s * (1 + g * (1 - s)),  s = sigmoid(g).
// Writes d_gate_up (it is the only path into the fused projection's output). sigmoid never
// feeds exp a large positive argument, as on the CPU.

struct Params {
    rows: u32,
    i: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> d_act: array<f32>;
@group(0) @binding(1) var<storage, read> gate_up: array<f32>;
@group(0) @binding(2) var<storage, read_write> d_gate_up: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

fn sigmoid(v: f32) -> f32 {
    if (v >= 0.0) {
        return 1.0 / (1.0 + exp(-v));
    }
    let e = exp(v);
    return e / (1.0 + e);
}

@compute @workgroup_size({{WG}})
fn swiglu_backward(
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
    let g = gate_up[base + c];
    let u = gate_up[base + params.i + c];
    let da = d_act[idx];
    let s = sigmoid(g);
    d_gate_up[base + params.i + c] = da * g * s;
    d_gate_up[base + c] = da * u * s * (1.0 + g * (1.0 - s));
}
