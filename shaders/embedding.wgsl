// Token embedding gather from one row chunk of the table (rows r0..r0+rows): each output
// element whose token falls in the chunk is copied; the host dispatches once per chunk, so a
// table larger than one binding works. Token ids were checked against the vocabulary on the
// host; an id outside the chunk is simply not this dispatch's to write.

struct Params {
    tokens: u32,
    c: u32,
    r0: u32,
    rows: u32,
}

@group(0) @binding(0) var<storage, read> table: array<f32>;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size({{WG}})
fn gather(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let idx = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * {{WG}}u + li;
    if (idx >= params.tokens * params.c) {
        return;
    }
    let t = idx / params.c;
    let col = idx % params.c;
    let id = ids[t];
    if (id < params.r0 || id - params.r0 >= params.rows) {
        return;
    }
    out[idx] = table[(id - params.r0) * params.c + col];
}
