// The register-blocked linear layer of matmul.wgsl with x and W read as vec4 along K: one
// load fetches four consecutive K values, where matmul.wgsl gathers them one by one. Needs
// K % 4 == 0 and bindings that are whole vec4s (ops/matmul.rs checks both and otherwise runs
// matmul.wgsl). On llvmpipe every per-lane load is a gather, so a quarter of the loads is
// most of the gain. `Params` and `store` come from linear_common.wgsl.

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

const TM: u32 = {{TM}}u;
const TN: u32 = {{TN}}u;
const WG: u32 = {{WG}}u;

@compute @workgroup_size({{WG}})
fn linear(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let gid = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * WG + li;
    let tiles_n = (params.n_len + TN - 1u) / TN;
    let tiles_m = (params.m + TM - 1u) / TM;
    if (gid >= tiles_n * tiles_m) {
        return;
    }
    let row0 = (gid / tiles_n) * TM;
    let col0 = (gid % tiles_n) * TN;
    let kq = params.k / 4u;

    // Row offsets, clamped into range so the inner loop needs no branches; the clamped
    // duplicates are computed and then not stored.
    //#unroll I {{TM}}
    let xb$I = min(row0 + $Iu, params.m - 1u) * kq;
    //#end
    //#unroll J {{TN}}
    let wb$J = min(col0 + $Ju, params.n_len - 1u) * kq;
    //#end
    //#unroll I {{TM}}
    //#unroll J {{TN}}
    var acc$I_$J = 0.0;
    //#end
    //#end

    for (var q = 0u; q < kq; q++) {
        //#unroll I {{TM}}
        let x$I = x[xb$I + q];
        //#end
        //#unroll J {{TN}}
        let w$J = w[wb$J + q];
        //#end
        //#unroll I {{TM}}
        //#unroll J {{TN}}
        acc$I_$J += dot(x$I, w$J);
        //#end
        //#end
    }

    //#unroll I {{TM}}
    //#unroll J {{TN}}
    store(row0 + $Iu, col0 + $Ju, acc$I_$J);
    //#end
    //#end
}
