// The OBS steps shared by GPTQ (gptq.wgsl) and SparseGPT (sparsegpt.wgsl), appended to either
// at load: one column's error spread over the rest of its block (`obs_step`), and after a
// block [i1, i1 + count) is swept, every later column taking the block's errors at once,
// W[:, i2:] -= Err · U[i1:i2, i2:] (`obs_update`). They use the including file's `w`
// (binding 0), `u` (1), `w1` (6), `err` (7) and `params` (10: rows, cols, i1, count, bs).

// Column c = i1 + i of the row whose block copy starts at w1[b1]: its weight x goes to q; the
// error (x - q) / U_cc is recorded and spread over the block's later columns. Returns the
// row's loss term (x - q)^2 / U_cc^2 / 2.
fn obs_step(b1: u32, i: u32, x: f32, q: f32) -> f32 {
    let c = params.i1 + i;
    let d = u[c * params.cols + c];
    let diff = x - q;
    let e = div_rn(diff, d);
    for (var j = i + 1u; j < params.count; j++) {
        w1[b1 + j] = w1[b1 + j] - e * u[c * params.cols + params.i1 + j];
    }
    err[b1 + i] = e;
    return div_rn(diff * diff, d * d) * 0.5;
}

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
