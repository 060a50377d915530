// What matmul.wgsl and matmul_tiled.wgsl share (pipeline.rs appends it to each): their
// parameters (ops/matmul.rs `Params`) and the output step, which writes one element of
// y[M, N] from a chunk of W covering columns n0..n0+n_len, skipped outside the output, plus
// what y holds (flag bit 0) and the bias (bit 1), in the CPU's order.

struct Params {
    m: u32,
    k: u32,
    n: u32,      // row stride of y (all output columns)
    n0: u32,     // first output column this chunk of W covers
    n_len: u32,  // output columns in this chunk
    flags: u32,  // bit 0: add to y; bit 1: add bias
    _pad0: u32,
    _pad1: u32,
}

fn store(r: u32, c: u32, a: f32) {
    if (r >= params.m || c >= params.n_len) {
        return;
    }
    let idx = r * params.n + params.n0 + c;
    var v = a;
    if ((params.flags & 1u) != 0u) {
        v += y[idx];
    }
    if ((params.flags & 2u) != 0u) {
        v += bias[params.n0 + c];
    }
    y[idx] = v;
}
