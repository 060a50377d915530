// Cross-entropy on chosen rows of logits [R, V], with the gradient to the logits: for row r
// with targets (token_t, w_t) (CSR: offs[r] .. offs[r + 1] into toks / wts),
//   loss_r = sum_t w_t * -(logits[token_t] - lse),  dlogits += (sum_t w_t) softmax - sum_t w_t onehot(token_t)
// (negative weights give gradient ascent). One workgroup per row: a max and a sum-of-exp
// tree reduction, then the softmax term by every invocation and the one-hot terms by the
// first, after a storage barrier, so repeated tokens add up in target order as on the CPU.

struct Params {
    rows: u32,
    v: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> offs: array<u32>;
@group(0) @binding(2) var<storage, read> toks: array<u32>;
@group(0) @binding(3) var<storage, read> wts: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

const WG: u32 = {{WG}}u;
var<workgroup> part: array<f32, {{WG}}>;

@compute @workgroup_size({{WG}})
fn cross_entropy(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y;
    // Uniform across the workgroup, so the barriers below stay uniform.
    if (row >= params.rows) {
        return;
    }
    let n = params.v;
    let base = row * n;
    var mx = logits[base];
    for (var j = li; j < n; j += WG) {
        mx = max(mx, logits[base + j]);
    }
    part[li] = mx;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            part[li] = max(part[li], part[li + s]);
        }
        workgroupBarrier();
    }
    let m = part[0];
    workgroupBarrier();
    var z = 0.0;
    for (var j = li; j < n; j += WG) {
        z += exp(logits[base + j] - m);
    }
    part[li] = z;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            part[li] = part[li] + part[li + s];
        }
        workgroupBarrier();
    }
    let lse = m + log(part[0]);
    let t0 = offs[row];
    let t1 = offs[row + 1u];
    var wsum = 0.0;
    for (var t = t0; t < t1; t++) {
        wsum += wts[t];
    }
    for (var j = li; j < n; j += WG) {
        let i = base + j;
        dlogits[i] = dlogits[i] + wsum * exp(logits[i] - lse);
    }
    storageBarrier();
    if (li == 0u) {
        var l = 0.0;
        for (var t = t0; t < t1; t++) {
            let i = base + toks[t];
            l -= wts[t] * (logits[i] - lse);
            dlogits[i] = dlogits[i] - wts[t];
        }
        loss[row] = l;
    }
}
