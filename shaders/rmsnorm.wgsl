// RMSNorm (Hugging Face LlamaRMSNorm, in f32) over groups of c values:
//   y = w * (x * rstd),  rstd = 1 / sqrt(mean(x^2) + eps).
// A row of the [n, heads * c] views holds `heads` groups side by side; group r = i * heads + h
// (row i, group h) starts at element off + i * ld + h * c of its view (x, y, dy and dx each
// have their own offset and row stride, so q inside a packed qkv buffer can be normalised per
// head). rstd is saved per group [n * heads].
// forward:      LANES invocations per group, WG / LANES groups per workgroup; the row sum is a
//               tree over the group's lanes (fixed order).
// backward_dx:  dx = rstd * (g - xhat * mean(g * xhat)), g = dy * w, xhat = x * rstd;
//               overwrites dx or adds to it.
// dw_*:         dw += sum over groups of dy * xhat: a column reduction over groups (no atomics,
//               fixed order), chunked like layernorm's dparams: a workgroup owns COLS columns x a
//               chunk of groups; with one chunk it adds straight into dw (dw_direct), otherwise
//               chunks write partials [chunks, c] and dw_finish adds them in chunk order.

struct Params {
    rows: u32,       // groups: n * heads
    heads: u32,
    c: u32,
    eps: f32,
    accumulate: u32,
    rows_per_chunk: u32,
    chunks: u32,
    col_blocks: u32,
    x_off: u32,
    x_ld: u32,
    y_off: u32,      // y (forward) or dy (backward)
    y_ld: u32,
    dx_off: u32,
    dx_ld: u32,
    pad0: u32,
    pad1: u32,
}

const WG: u32 = 256u;
const LANES: u32 = {{LANES}}u;  // invocations per group (a power of two dividing WG)
const GPW: u32 = WG / LANES;    // groups per workgroup

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> rstd_out: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read> rstd_in: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;
@group(0) @binding(8) var<storage, read_write> dw: array<f32>;
@group(0) @binding(9) var<storage, read_write> partial: array<f32>;  // [chunks, c]

var<workgroup> seg: array<f32, WG>;

// Σ v over the LANES invocations of lid's group, in a fixed tree order; every invocation of
// the workgroup must call it (barriers).
fn group_sum(lid: u32, v: f32) -> f32 {
    seg[lid] = v;
    workgroupBarrier();
    let lane = lid % LANES;
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            seg[lid] = seg[lid] + seg[lid + s];
        }
        workgroupBarrier();
    }
    let total = seg[lid - lane];
    workgroupBarrier();
    return total;
}

// First element of group r in a view with offset `off` and row stride `ld`.
fn at(off: u32, ld: u32, r: u32) -> u32 {
    return off + (r / p.heads) * ld + (r % p.heads) * p.c;
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let r = (wid.x + wid.y * nwg.x) * GPW + lid / LANES;
    let lane = lid % LANES;
    let ok = r < p.rows;
    var s = 0.0;
    if (ok) {
        let xb = at(p.x_off, p.x_ld, r);
        for (var j = lane; j < p.c; j += LANES) {
            let v = x[xb + j];
            s += v * v;
        }
    }
    let rs = 1.0 / sqrt(group_sum(lid, s) / f32(p.c) + p.eps);
    if (ok) {
        let xb = at(p.x_off, p.x_ld, r);
        let yb = at(p.y_off, p.y_ld, r);
        for (var j = lane; j < p.c; j += LANES) {
            y[yb + j] = w[j] * (x[xb + j] * rs);
        }
        if (lane == 0u) {
            rstd_out[r] = rs;
        }
    }
}

@compute @workgroup_size(256)
fn backward_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let r = (wid.x + wid.y * nwg.x) * GPW + lid / LANES;
    let lane = lid % LANES;
    let ok = r < p.rows;
    var rs = 0.0;
    var s = 0.0;
    if (ok) {
        rs = rstd_in[r];
        let xb = at(p.x_off, p.x_ld, r);
        let gb = at(p.y_off, p.y_ld, r);
        for (var j = lane; j < p.c; j += LANES) {
            s += dy[gb + j] * w[j] * (x[xb + j] * rs);
        }
    }
    let m = group_sum(lid, s) / f32(p.c);
    if (ok) {
        let xb = at(p.x_off, p.x_ld, r);
        let gb = at(p.y_off, p.y_ld, r);
        let db = at(p.dx_off, p.dx_ld, r);
        for (var j = lane; j < p.c; j += LANES) {
            let d = rs * (dy[gb + j] * w[j] - x[xb + j] * rs * m);
            if (p.accumulate != 0u) {
                dx[db + j] += d;
            } else {
                dx[db + j] = d;
            }
        }
    }
}

// Σ dy * xhat over groups [r0, r1) of column `block * COLS + lid % COLS`; meaningful in
// invocations lid < COLS.
fn dw_block(lid: u32, block: u32, r0: u32, r1: u32) -> f32 {
    let j = block * COLS + lid % COLS;
    var a = 0.0;
    if (j < p.c) {
        for (var r = r0 + lid / COLS; r < r1; r += WG / COLS) {
            a += dy[at(p.y_off, p.y_ld, r) + j] * (x[at(p.x_off, p.x_ld, r) + j] * rstd_in[r]);
        }
    }
    return lanes_sum(lid, a);
}

@compute @workgroup_size(256)
fn dw_direct(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let block = wid.x + wid.y * nwg.x;
    if (block >= p.col_blocks) {
        return;
    }
    let s = dw_block(lid, block, 0u, p.rows);
    let j = block * COLS + lid;
    if (lid < COLS && j < p.c) {
        dw[j] += s;
    }
}

@compute @workgroup_size(256)
fn dw_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.col_blocks * p.chunks) {
        return;
    }
    let block = id % p.col_blocks;
    let chunk = id / p.col_blocks;
    let r0 = chunk * p.rows_per_chunk;
    let s = dw_block(lid, block, r0, min(r0 + p.rows_per_chunk, p.rows));
    let j = block * COLS + lid;
    if (lid < COLS && j < p.c) {
        partial[chunk * p.c + j] = s;
    }
}

@compute @workgroup_size(256)
fn dw_finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let j = (wid.x + wid.y * nwg.x) * WG + lid;
    if (j >= p.c) {
        return;
    }
    var s = 0.0;
    for (var k = 0u; k < p.chunks; k++) {
        s += partial[k * p.c + j];
    }
    dw[j] += s;
}
