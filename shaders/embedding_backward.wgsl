// Embedding backward: d_table[id] += dx[t] for every token t with that id, without float
// atomics. The host groups the token positions by id (ids sorted, positions in token order
// within an id: `uids`, `offs` (CSR offsets) and `pos`), and one invocation owns one
// (distinct id, column) element, adding its tokens' gradients in token order into the value
// already there: the CPU's order exactly, so the result is bit-identical and deterministic.
// The table may be chunked: the host dispatches once per chunk over the ids that fall in it
// (a contiguous range of the sorted ids, u0 .. u0 + n_ids).

struct Params {
    c: u32,
    u0: u32,     // first distinct id (index into uids) of this dispatch
    n_ids: u32,  // distinct ids in this dispatch
    r0: u32,     // first table row of this chunk
}

@group(0) @binding(0) var<storage, read> dx: array<f32>;
@group(0) @binding(1) var<storage, read> uids: array<u32>;
@group(0) @binding(2) var<storage, read> offs: array<u32>;
@group(0) @binding(3) var<storage, read> pos: array<u32>;
@group(0) @binding(4) var<storage, read_write> d_table: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size({{WG}})
fn scatter_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let idx = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * {{WG}}u + li;
    if (idx >= params.n_ids * params.c) {
        return;
    }
    let u = params.u0 + idx / params.c;
    let col = idx % params.c;
    let o = (uids[u] - params.r0) * params.c + col;
    var v = d_table[o];
    for (var i = offs[u]; i < offs[u + 1u]; i++) {
        v += dx[pos[i] * params.c + col];
    }
    d_table[o] = v;
}
