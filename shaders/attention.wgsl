// Causal softmax over the rows of att [B, nh, T, T], forward and backward side by side.
// The matmuls around it (scores = q·kᵀ/√hd, out = att·v and their backward) are
// shaders/matmul.wgsl; src/kernels/attention.rs composes them.
//
// One workgroup of 64 threads per row r (query t = r % T); threads stride over the
// keys s and combine their partial results with the workgroup reductions of shaders/lib/reduce.wgsl.
// Keys after the query (s > t) are masked: their output is written as 0.

const WG: u32 = 64u;

struct Params {
    t: u32,    // T: row length and rows per (batch, head). Decoding: rows of the K/V caches (max_len)
    rows: u32, // B * nh * T. Decoding: rows kv_store copies
    c: u32,    // decoding only: channels C
    nh: u32,   // decoding only: heads
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> att: array<f32>;   // backward: the saved probabilities
@group(0) @binding(2) var<storage, read_write> x: array<f32>; // forward: scores -> probs; backward: datt -> dscores

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
    m = wg_max(lid, m);
    var sum = 0.0;
    for (var s = lid; s <= t; s += WG) {
        sum += exp(x[base + s] - m);
    }
    sum = wg_sum(lid, sum);
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
    dot = wg_sum(lid, dot);
    for (var s = lid; s < p.t; s += WG) {
        var v = 0.0;
        if (s <= t) {
            v = att[base + s] * (x[base + s] - dot);
        }
        x[base + s] = v;
    }
}

// ---------------------------------------------------------------------------------------
// Decoding with a KV cache (one sequence). pos[0] is the position of the first new row,
// written by the host before each step; k_cache and v_cache are [max_len, C] (head h in
// columns h*hd..(h+1)*hd), qkv holds new rows [rows, 3C] (q | k | v).

@group(0) @binding(3) var<storage, read> qkv: array<f32>;
@group(0) @binding(4) var<storage, read> pos: array<u32>;
@group(0) @binding(5) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(6) var<storage, read_write> v_cache: array<f32>;
@group(0) @binding(7) var<storage, read_write> dec_out: array<f32>;

// Largest head dimension decode supports: each thread owns output columns lid + WG*i, i < 4.
const MAX_HD: u32 = 256u;

var<workgroup> qs: array<f32, MAX_HD>; // the head's query
var<workgroup> probs: array<f32, WG>;  // exp-scores of the current chunk of keys

// k_cache[pos + r, :] = k of qkv row r; v_cache likewise (rows past the cache are dropped).
// One workgroup per row.
@compute @workgroup_size(64)
fn kv_store(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    let dst = pos[0] + r;
    if (r >= p.rows || dst >= p.t) {
        return;
    }
    let src = r * 3u * p.c;
    for (var j = lid; j < p.c; j += WG) {
        k_cache[dst * p.c + j] = qkv[src + p.c + j];
        v_cache[dst * p.c + j] = qkv[src + 2u * p.c + j];
    }
}

// dec_out[h*hd + d] = Σ_{s <= pos} softmax_s(q·k_s / √hd) v_s[d] for the query in qkv row 0.
// One workgroup per head. Keys go in chunks of WG (one per thread) with an online softmax:
// the running max m, sum l and each thread's output columns (acc) are rescaled by
// exp(m_old - m_new) whenever a chunk raises the max.
@compute @workgroup_size(64)
fn decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let hd = p.c / p.nh;
    if (h >= p.nh || hd > MAX_HD) {
        return;
    }
    let n = min(pos[0] + 1u, p.t); // keys 0..n
    let scale = 1.0 / sqrt(f32(hd));
    let col = h * hd;
    for (var d = lid; d < hd; d += WG) {
        qs[d] = qkv[col + d];
    }
    workgroupBarrier();
    let hd4 = hd & ~3u;
    var m = -3.4028234e38; // (not -3.4028235e38: Tint rejects literals above f32 max)
    var l = 0.0;
    var acc = vec4<f32>(0.0);
    for (var s0 = 0u; s0 < n; s0 += WG) {
        let s = s0 + lid;
        var score = -3.4028234e38;
        if (s < n) {
            let kb = s * p.c + col;
            var dot4 = vec4<f32>(0.0);
            for (var d = 0u; d < hd4; d += 4u) {
                dot4 += vec4<f32>(qs[d], qs[d + 1u], qs[d + 2u], qs[d + 3u])
                    * vec4<f32>(k_cache[kb + d], k_cache[kb + d + 1u], k_cache[kb + d + 2u], k_cache[kb + d + 3u]);
            }
            var dot = (dot4.x + dot4.y) + (dot4.z + dot4.w);
            for (var d = hd4; d < hd; d++) {
                dot += qs[d] * k_cache[kb + d];
            }
            score = dot * scale;
        }
        let m_new = max(m, wg_max(lid, score));
        var e = 0.0;
        if (s < n) {
            e = exp(score - m_new);
        }
        probs[lid] = e;
        let chunk_sum = wg_sum(lid, e); // its barriers also publish probs
        let corr = exp(m - m_new);
        l = l * corr + chunk_sum;
        acc *= corr;
        m = m_new;
        let cnt = min(WG, n - s0);
        for (var j = 0u; j < cnt; j++) {
            let pj = probs[j];
            let vb = (s0 + j) * p.c + col + lid;
            if (lid < hd) {
                acc.x += pj * v_cache[vb];
            }
            if (lid + WG < hd) {
                acc.y += pj * v_cache[vb + WG];
            }
            if (lid + 2u * WG < hd) {
                acc.z += pj * v_cache[vb + 2u * WG];
            }
            if (lid + 3u * WG < hd) {
                acc.w += pj * v_cache[vb + 3u * WG];
            }
        }
        workgroupBarrier(); // probs is rewritten by the next chunk
    }
    let inv = 1.0 / l;
    let ob = col + lid;
    if (lid < hd) {
        dec_out[ob] = acc.x * inv;
    }
    if (lid + WG < hd) {
        dec_out[ob + WG] = acc.y * inv;
    }
    if (lid + 2u * WG < hd) {
        dec_out[ob + 2u * WG] = acc.z * inv;
    }
    if (lid + 3u * WG < hd) {
        dec_out[ob + 3u * WG] = acc.w * inv;
    }
}
