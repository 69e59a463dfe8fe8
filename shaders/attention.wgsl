// Causal softmax over the rows of att [B, nh, T, T], forward and backward side by side.
// The matmuls around it (scores = q·kᵀ/√hd, out = att·v and their backward) are
// shaders/matmul.wgsl; src/kernels/attention.rs composes them.
//
// One workgroup of 64 threads per row r (query t = r % T); threads stride over the
// keys s and combine their partial results with a tree reduction in shared memory.
// Keys after the query (s > t) are masked: their output is written as 0.

const WG: u32 = 64u;

struct Params {
    t: u32,    // T: row length and rows per (batch, head)
    rows: u32, // B * nh * T
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> att: array<f32>;   // backward: the saved probabilities
@group(0) @binding(2) var<storage, read_write> x: array<f32>; // forward: scores -> probs; backward: datt -> dscores

var<workgroup> red: array<f32, WG>;

fn reduce_max(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier(); // red is reused by the next reduction
    return r;
}

fn reduce_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// x[row, s] = exp(x[row, s] - max) / Σ exp(..) over s <= t, 0 for s > t.
@compute @workgroup_size(64)
fn softmax_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) {
        return;
    }
    let t = r % p.t;
    let base = r * p.t;
    var m = -3.4028234e38; // about -f32 max; Tint (Chrome) rejects literals above f32 max such as -3.4028235e38
    for (var s = lid; s <= t; s += WG) {
        m = max(m, x[base + s]);
    }
    m = reduce_max(lid, m);
    var sum = 0.0;
    for (var s = lid; s <= t; s += WG) {
        sum += exp(x[base + s] - m);
    }
    sum = reduce_sum(lid, sum);
    let inv = 1.0 / sum;
    for (var s = lid; s < p.t; s += WG) {
        var v = 0.0;
        if (s <= t) {
            v = exp(x[base + s] - m) * inv;
        }
        x[base + s] = v;
    }
}

// x[row, s] = att[row, s] * (x[row, s] - Σ_s' att[row, s'] * x[row, s']) over s <= t, 0 for s > t.
// (The 1/√hd of the scores is folded into the alpha of the matmuls that follow.)
@compute @workgroup_size(64)
fn softmax_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) {
        return;
    }
    let t = r % p.t;
    let base = r * p.t;
    var dot = 0.0;
    for (var s = lid; s <= t; s += WG) {
        dot += att[base + s] * x[base + s];
    }
    dot = reduce_sum(lid, dot);
    for (var s = lid; s < p.t; s += WG) {
        var v = 0.0;
        if (s <= t) {
            v = att[base + s] * (x[base + s] - dot);
        }
        x[base + s] = v;
    }
}
