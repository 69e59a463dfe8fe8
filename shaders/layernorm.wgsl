// LayerNorm over rows of width c, PyTorch semantics (biased variance, eps inside the sqrt):
//   y = (x - mean) * rstd * gamma + beta,  rstd = 1 / sqrt(var + eps).
// forward:         one workgroup per row; mean, then the variance around it (two passes
//                  over the row, workgroup tree sums from shaders/lib/reduce.wgsl); saves mean and rstd.
// backward_dx:     one workgroup per row; dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
//                  with g = dy * gamma; overwrites dx or adds to it.
// dparams_*:       dgamma += sum_i dy * xhat, dbeta += sum_i dy: a column reduction over rows
//                  (no atomics, fixed order). A workgroup owns 64 columns x a chunk of rows
//                  (4 row lanes). With one chunk it adds straight into dgamma/dbeta
//                  (dparams_direct); otherwise chunks write partials and dparams_finish adds
//                  them up in chunk order.

struct Params {
    n: u32,
    c: u32,
    eps: f32,
    accumulate: u32,
    rows_per_chunk: u32,
    chunks: u32,
    col_blocks: u32,
    pad: u32,
}

const WG: u32 = 256u; // COLS (columns per dparams workgroup) = 64: 4 row lanes (shaders/lib/reduce.wgsl)

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> mean_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> rstd_out: array<f32>;
@group(0) @binding(7) var<storage, read> dy: array<f32>;
@group(0) @binding(8) var<storage, read> mean_in: array<f32>;
@group(0) @binding(9) var<storage, read> rstd_in: array<f32>;
@group(0) @binding(10) var<storage, read_write> dx: array<f32>;
@group(0) @binding(11) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(12) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(13) var<storage, read_write> partial: array<f32>;  // [chunks, 2, c]

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.n) {
        return;
    }
    let base = row * p.c;
    let inv_c = 1.0 / f32(p.c);
    var s = 0.0;
    for (var j = lid; j < p.c; j += WG) {
        s += x[base + j];
    }
    let m = wg_sum(lid, s) * inv_c;
    var v = 0.0;
    for (var j = lid; j < p.c; j += WG) {
        let d = x[base + j] - m;
        v += d * d;
    }
    let r = 1.0 / sqrt(wg_sum(lid, v) * inv_c + p.eps);
    for (var j = lid; j < p.c; j += WG) {
        y[base + j] = (x[base + j] - m) * r * gamma[j] + beta[j];
    }
    if (lid == 0u) {
        mean_out[row] = m;
        rstd_out[row] = r;
    }
}

@compute @workgroup_size(256)
fn backward_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.n) {
        return;
    }
    let base = row * p.c;
    let m = mean_in[row];
    let r = rstd_in[row];
    var a = vec2<f32>(0.0);
    for (var j = lid; j < p.c; j += WG) {
        let xh = (x[base + j] - m) * r;
        let g = dy[base + j] * gamma[j];
        a += vec2<f32>(g, g * xh);
    }
    let s = wg_sum2(lid, a) * (1.0 / f32(p.c));
    for (var j = lid; j < p.c; j += WG) {
        let xh = (x[base + j] - m) * r;
        let g = dy[base + j] * gamma[j];
        let d = r * (g - s.x - xh * s.y);
        if (p.accumulate != 0u) {
            dx[base + j] += d;
        } else {
            dx[base + j] = d;
        }
    }
}

// (sum dy * xhat, sum dy) over rows [r0, r1) of column `block * COLS + lid % COLS`;
// the result is meaningful in invocations lid < COLS.
fn dparams_block(lid: u32, block: u32, r0: u32, r1: u32) -> vec2<f32> {
    let j = block * COLS + lid % COLS;
    var a = vec2<f32>(0.0);
    if (j < p.c) {
        for (var i = r0 + lid / COLS; i < r1; i += WG / COLS) {
            let d = dy[i * p.c + j];
            a += vec2<f32>((x[i * p.c + j] - mean_in[i]) * rstd_in[i] * d, d);
        }
    }
    return lanes_sum2(lid, a);
}

@compute @workgroup_size(256)
fn dparams_direct(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let block = wid.x + wid.y * nwg.x;
    if (block >= p.col_blocks) {
        return;
    }
    let s = dparams_block(lid, block, 0u, p.n);
    let j = block * COLS + lid;
    if (lid < COLS && j < p.c) {
        dgamma[j] += s.x;
        dbeta[j] += s.y;
    }
}

@compute @workgroup_size(256)
fn dparams_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.col_blocks * p.chunks) {
        return;
    }
    let block = id % p.col_blocks;
    let chunk = id / p.col_blocks;
    let r0 = chunk * p.rows_per_chunk;
    let s = dparams_block(lid, block, r0, min(r0 + p.rows_per_chunk, p.n));
    let j = block * COLS + lid;
    if (lid < COLS && j < p.c) {
        partial[2u * chunk * p.c + j] = s.x;
        partial[(2u * chunk + 1u) * p.c + j] = s.y;
    }
}

@compute @workgroup_size(256)
fn dparams_finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let j = (wid.x + wid.y * nwg.x) * WG + lid;
    if (j >= p.c) {
        return;
    }
    var s = vec2<f32>(0.0);
    for (var k = 0u; k < p.chunks; k++) {
        s += vec2<f32>(partial[2u * k * p.c + j], partial[(2u * k + 1u) * p.c + j]);
    }
    dgamma[j] += s.x;
    dbeta[j] += s.y;
}
