// The linear layer y[M, N] (+)= x[M, K] . W[N, K]^T (+ bias) for hardware GPUs: the same
// product as matmul.wgsl, shaped for cards with fast workgroup memory.
//
// A workgroup owns a BM x BN tile of y. For each slice of BK columns of K it stages the x rows
// and W rows of its tile in workgroup memory, transposed to k-major, so that every invocation
// then reads its TM rows and TN columns as vec4s and does TM * TN multiply-adds per k from
// registers. The next slice is fetched from global memory into registers before the current
// one is consumed, so its latency hides behind the arithmetic. Block bodies are unrolled on the
// host (`//#unroll`), keeping every accumulator a distinct register.
//
// x and W are read as vec4 along K, which needs K % 4 == 0 and bindings that are whole vec4s;
// ops/matmul.rs checks both and otherwise uses matmul.wgsl. Rows past M or past the W chunk
// are clamped into range when staged (their results are computed and not stored) and K past
// its end reads as zeros, so the inner loop has no branches. W may be one row chunk of a
// larger weight (rows n0..n0+n_len). `Params` and `store` come from linear_common.wgsl.

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

const BM: u32 = {{BM}}u;
const BN: u32 = {{BN}}u;
const BK: u32 = {{BK}}u;
const TM: u32 = {{TM}}u;
const TN: u32 = {{TN}}u;
const THREADS: u32 = {{THREADS}}u;  // (BM / TM) * (BN / TN)
const KQ: u32 = BK / 4u;            // vec4s per row of one K slice

// [k][m / 4] and [k][n / 4]: the TM rows (TN columns) one invocation needs at one k are
// TM / 4 (TN / 4) consecutive vec4s.
var<workgroup> xs: array<vec4<f32>, {{XS}}>;
var<workgroup> ws: array<vec4<f32>, {{WS}}>;

@compute @workgroup_size({{THREADS}})
fn linear_tiled(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let tiles_n = (params.n_len + BN - 1u) / BN;
    let tiles_m = (params.m + BM - 1u) / BM;
    let tile = wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y;
    // The whole workgroup leaves together, so the barriers below stay in uniform control flow.
    if (tile >= tiles_n * tiles_m) {
        return;
    }
    let m0 = (tile / tiles_n) * BM;
    let c0 = (tile % tiles_n) * BN;
    let kv = params.k / 4u;
    let tx = li % (BN / TN);
    let ty = li / (BN / TN);

    // Staging: element e = li + L * THREADS of the slice is row e % BM at vec4 e / BM, so
    // neighbouring invocations write neighbouring words of workgroup memory.
    //#unroll L {{XLOADS}}
    let xr$L = min(m0 + (li + $Lu * THREADS) % BM, params.m - 1u) * kv;
    let xq$L = (li + $Lu * THREADS) / BM;
    let xc$L = (li + $Lu * THREADS) % BM;
    //#end
    //#unroll L {{WLOADS}}
    let wr$L = min(c0 + (li + $Lu * THREADS) % BN, params.n_len - 1u) * kv;
    let wq$L = (li + $Lu * THREADS) / BN;
    let wc$L = (li + $Lu * THREADS) % BN;
    //#end

    //#unroll A {{TM4}}
    //#unroll C 4
    //#unroll J {{TN4}}
    var acc$A_$C_$J = vec4<f32>(0.0);
    //#end
    //#end
    //#end

    // The first slice, fetched before the loop.
    //#unroll L {{XLOADS}}
    var gx$L = fetch_x(xr$L, xq$L, kv);
    //#end
    //#unroll L {{WLOADS}}
    var gw$L = fetch_w(wr$L, wq$L, kv);
    //#end

    for (var k0 = 0u; k0 < kv; k0 += KQ) {
        //#unroll L {{XLOADS}}
        xs[(xq$L * 4u + 0u) * (BM / 4u) + xc$L / 4u][xc$L % 4u] = gx$L.x;
        xs[(xq$L * 4u + 1u) * (BM / 4u) + xc$L / 4u][xc$L % 4u] = gx$L.y;
        xs[(xq$L * 4u + 2u) * (BM / 4u) + xc$L / 4u][xc$L % 4u] = gx$L.z;
        xs[(xq$L * 4u + 3u) * (BM / 4u) + xc$L / 4u][xc$L % 4u] = gx$L.w;
        //#end
        //#unroll L {{WLOADS}}
        ws[(wq$L * 4u + 0u) * (BN / 4u) + wc$L / 4u][wc$L % 4u] = gw$L.x;
        ws[(wq$L * 4u + 1u) * (BN / 4u) + wc$L / 4u][wc$L % 4u] = gw$L.y;
        ws[(wq$L * 4u + 2u) * (BN / 4u) + wc$L / 4u][wc$L % 4u] = gw$L.z;
        ws[(wq$L * 4u + 3u) * (BN / 4u) + wc$L / 4u][wc$L % 4u] = gw$L.w;
        //#end
        workgroupBarrier();

        // The next slice (past the end: clamped, zero, never used).
        //#unroll L {{XLOADS}}
        gx$L = fetch_x(xr$L, k0 + KQ + xq$L, kv);
        //#end
        //#unroll L {{WLOADS}}
        gw$L = fetch_w(wr$L, k0 + KQ + wq$L, kv);
        //#end

        //#unroll P {{BK}}
        {
            //#unroll A {{TM4}}
            let a$A = xs[$Pu * (BM / 4u) + ty * (TM / 4u) + $Au];
            //#end
            //#unroll J {{TN4}}
            let b$J = ws[$Pu * (BN / 4u) + tx * (TN / 4u) + $Ju];
            //#end
            //#unroll A {{TM4}}
            //#unroll C 4
            //#unroll J {{TN4}}
            acc$A_$C_$J = fma(vec4<f32>(a$A[$C]), b$J, acc$A_$C_$J);
            //#end
            //#end
            //#end
        }
        //#end
        workgroupBarrier();
    }

    //#unroll A {{TM4}}
    //#unroll C 4
    //#unroll J {{TN4}}
    store4(m0 + ty * TM + $Au * 4u + $Cu, c0 + tx * TN + $Ju * 4u, acc$A_$C_$J);
    //#end
    //#end
    //#end
}

// vec4 q of x's row at offset `row` (in vec4s), zero past the end of K.
fn fetch_x(row: u32, q: u32, kv: u32) -> vec4<f32> {
    let v = x[row + min(q, kv - 1u)];
    return select(vec4<f32>(0.0), v, q < kv);
}

fn fetch_w(row: u32, q: u32, kv: u32) -> vec4<f32> {
    let v = w[row + min(q, kv - 1u)];
    return select(vec4<f32>(0.0), v, q < kv);
}

fn store4(r: u32, c: u32, a: vec4<f32>) {
    store(r, c, a.x);
    store(r, c + 1u, a.y);
    store(r, c + 2u, a.z);
    store(r, c + 3u, a.w);
}
