// The lazy batch update shared by GPTQ (gptq.wgsl) and SparseGPT (sparsegpt.wgsl), appended
// to either at load: after a block [i1, i1 + count) is swept, every later column takes the
// block's errors at once, W[:, i2:] -= Err · U[i1:i2, i2:]. It reads the including file's
// `w` (binding 0), `u` (1), `err` (7) and `params` (10: rows, cols, i1, count, bs).

fn flat_id(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * {{WG}}u + li;
}

// W[r, c] -= sum_j err[r, j] * U[i1 + j, c] for c >= i1 + count.
@compute @workgroup_size({{WG}})
fn obs_update(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let idx = flat_id(wid, nwg, li);
    let i2 = params.i1 + params.count;
    let tail = params.cols - i2;
    if (idx >= params.rows * tail) {
        return;
    }
    let r = idx / tail;
    let c = i2 + idx % tail;
    var acc = 0.0;
    for (var j = 0u; j < params.count; j++) {
        acc = acc + err[r * params.bs + j] * u[(params.i1 + j) * params.cols + c];
    }
    w[r * params.cols + c] = w[r * params.cols + c] - acc;
}
