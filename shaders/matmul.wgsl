// The linear layer y[M, N] (+)= x[M, K] . W[N, K]^T (+ bias), W in PyTorch's [out, in] layout.
// Register-blocked: each invocation owns a TM x TN block of y and walks K four at a time, so
// every loaded x and W value feeds TN (resp. TM) multiply-adds. The block is fully unrolled
// (`//#unroll`, expanded on the host): its TM * TN accumulators are distinct scalars that
// the driver can keep in registers, where an indexed private array would live in memory.
// No workgroup memory: on software rasterisers it only adds barriers. Wherever K % 4 == 0,
// hardware adapters run matmul_tiled.wgsl and software ones matmul_vec4.wgsl, which reads
// whole vec4s; this kernel takes the rest. TM/TN/WG are the tuning knobs (device.rs,
// `Tuning`). W may be one row chunk of a larger weight (rows n0..n0+n_len). `Params` and
// `store` come from linear_common.wgsl.

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
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
    let k = params.k;

    // Row offsets, clamped into range so the inner loop needs no branches; the clamped
    // duplicates are computed and then not stored.
    //#unroll I {{TM}}
    let xb$I = min(row0 + $Iu, params.m - 1u) * k;
    //#end
    //#unroll J {{TN}}
    let wb$J = min(col0 + $Ju, params.n_len - 1u) * k;
    //#end
    //#unroll I {{TM}}
    //#unroll J {{TN}}
    var acc$I_$J = 0.0;
    //#end
    //#end

    let k4 = k & ~3u;
    for (var p = 0u; p < k4; p += 4u) {
        //#unroll I {{TM}}
        let x$I = vec4<f32>(x[xb$I + p], x[xb$I + p + 1u], x[xb$I + p + 2u], x[xb$I + p + 3u]);
        //#end
        //#unroll J {{TN}}
        let w$J = vec4<f32>(w[wb$J + p], w[wb$J + p + 1u], w[wb$J + p + 2u], w[wb$J + p + 3u]);
        //#end
        //#unroll I {{TM}}
        //#unroll J {{TN}}
        acc$I_$J += dot(x$I, w$J);
        //#end
        //#end
    }
    for (var p = k4; p < k; p++) {
        //#unroll I {{TM}}
        let x$I = x[xb$I + p];
        //#end
        //#unroll J {{TN}}
        let w$J = w[wb$J + p];
        //#end
        //#unroll I {{TM}}
        //#unroll J {{TN}}
        acc$I_$J += x$I * w$J;
        //#end
        //#end
    }

    //#unroll I {{TM}}
    //#unroll J {{TN}}
    store(row0 + $Iu, col0 + $Ju, acc$I_$J);
    //#end
    //#end
}
