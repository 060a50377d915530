// The linear layer's backward (y = x W^T + b): dx += dy . W and dW += dy^T . x as one strided
// product, and db += column sums of dy. Transposes are strides, as in the CPU backward's GEMM:
// element (i, p) of A is a[a_off + i * a_rs + p * a_cs], element (p, j) of B is
// b[b_off + p * b_rs + j * b_cs], and C is c[i * n + j] (one chunk of dW, or all of dx).
// Register-blocked like the forward: each invocation owns a TM x TN block of C, so every
// loaded A value feeds TN multiply-adds and every B value TM. Everything accumulates into
// what C holds, as the CPU backward does (residual branches and gradient accumulation).

struct Params {
    m: u32,
    k: u32,
    n: u32,
    a_rs: u32,
    a_cs: u32,
    b_rs: u32,
    b_cs: u32,
    a_off: u32,
    b_off: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const TM: u32 = {{TM}}u;
const TN: u32 = {{TN}}u;
const WG: u32 = {{WG}}u;

@compute @workgroup_size({{WG}})
fn matmul_acc(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let gid = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * WG + li;
    let tiles_n = (params.n + TN - 1u) / TN;
    let tiles_m = (params.m + TM - 1u) / TM;
    if (gid >= tiles_n * tiles_m) {
        return;
    }
    let row0 = (gid / tiles_n) * TM;
    let col0 = (gid % tiles_n) * TN;

    // Clamped row/column bases, so the inner loop needs no branches; the duplicates the
    // clamping makes are computed and then not stored. Unrolled (`//#unroll`, expanded on the
    // host) so the accumulators are distinct scalars in registers, as in the forward.
    //#unroll I {{TM}}
    let ab$I = params.a_off + min(row0 + $Iu, params.m - 1u) * params.a_rs;
    //#end
    //#unroll J {{TN}}
    let bb$J = params.b_off + min(col0 + $Ju, params.n - 1u) * params.b_cs;
    //#end
    //#unroll I {{TM}}
    //#unroll J {{TN}}
    var acc$I_$J = 0.0;
    //#end
    //#end
    for (var p = 0u; p < params.k; p++) {
        let ao = p * params.a_cs;
        let bo = p * params.b_rs;
        //#unroll I {{TM}}
        let a$I = a[ab$I + ao];
        //#end
        //#unroll J {{TN}}
        let b$J = b[bb$J + bo];
        //#end
        //#unroll I {{TM}}
        //#unroll J {{TN}}
        acc$I_$J += a$I * b$J;
        //#end
        //#end
    }
    //#unroll I {{TM}}
    //#unroll J {{TN}}
    add_to(row0 + $Iu, col0 + $Ju, acc$I_$J);
    //#end
    //#end
}

fn add_to(r: u32, col: u32, v: f32) {
    if (r < params.m && col < params.n) {
        let idx = r * params.n + col;
        c[idx] = c[idx] + v;
    }
}

// db[j] += sum over the m rows of a[r * a_rs + j], j < n: one invocation per column, adding
// row after row into the running value in the CPU's order, so the result is bit-identical.
@compute @workgroup_size({{WG}})
fn col_sum(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let j = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * WG + li;
    if (j >= params.n) {
        return;
    }
    var v = c[j];
    for (var r = 0u; r < params.m; r++) {
        v += a[r * params.a_rs + j];
    }
    c[j] = v;
}
