// Rotary embeddings in Hugging Face's rotate_half layout, in place: within each head of size
// D, element i pairs with i + D/2. cos/sin come per row ([rows, D/2]), gathered on the host
// from the CPU backend's own table, so both backends rotate by identical angles. The operand
// may be a column window of a wider matrix (q or k inside the fused qkv rows): row r's head h
// starts at r * stride + offset + h * D.

struct Params {
    rows: u32,
    heads: u32,
    half: u32,    // D / 2
    stride: u32,
    offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read> cos_t: array<f32>;
@group(0) @binding(2) var<storage, read> sin_t: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size({{WG}})
fn rope(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let idx = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * {{WG}}u + li;
    let per_row = params.heads * params.half;
    if (idx >= params.rows * per_row) {
        return;
    }
    let r = idx / per_row;
    let h = (idx % per_row) / params.half;
    let i = idx % params.half;
    let lo = r * params.stride + params.offset + h * 2u * params.half + i;
    let hi = lo + params.half;
    let c = cos_t[r * params.half + i];
    let s = sin_t[r * params.half + i];
    let a = x[lo];
    let b = x[hi];
    x[lo] = a * c - b * s;
    x[hi] = b * c + a * s;
}
