// Causal grouped-query attention, flash style: forward and backward side by side, then
// KV-cached decoding. src/kernels/attention.rs owns the shapes and fills the placeholders.
//
// Layout: q, k, v (and dq, dk, dv) are views into row-major [B·T, ...] tensors: element d of
// head h in row r (= b·T + t) is at off + r·ld + h·hd + d. out and dout are packed
// [B·T, nh·hd]. Query head h reads key/value head h / (nh / nkv). lse and delta are
// [B, nh, T]: per query, the log-sum-exp of its scaled scores and rowsum(dout ∘ out).
//
// Tiles: a workgroup of TR x TC threads owns a tile of BR = 4·TR rows (queries; keys in the
// dk/dv pass) and walks the other side in blocks of BC = 4·TC columns. Thread (ty, tx) holds
// the 4 x 4 scores of rows 4ty.. and columns 4tx.. of a block as a mat4x4 (column i = row
// 4ty + i as a vec4 over its 4 columns), and 4 rows x 16 head-dim columns of its output as
// an Acc (for row i and column group c, the columns 4·(tx + c·TC)..+3): every register is
// named, every loop runs over workgroup memory only, so the checked (browser) build keeps
// them in registers. HDP (the head dim rounded up to a multiple of 16) = 16·TC.
//
// Scores S = scale · X·Yᵀ stream X and Y through As / Bs in DK-wide slices of the head dim;
// a product P·Z (P a 4TR x BC block, Z BC rows of v / k / dout / q) reads P from Ps and Z
// from Cs, KC rows at a time. Loads outside the matrices (t >= T, d >= hd) read 0 and
// stores outside are skipped, so any T and hd work. Nothing is accumulated with atomics:
// every output element is written by one thread in a fixed order.

const HDP: u32 = {{HDP}}u;
const TR: u32 = {{TR}}u;
const DK: u32 = {{DK}}u;
const KC: u32 = {{KC}}u;
const TC: u32 = HDP / 16u;
const TWG: u32 = TR * TC;
const BR: u32 = 4u * TR;
const BC: u32 = 4u * TC;
const HD4: u32 = HDP / 4u;
// Masked scores: about -f32 max (Tint rejects literals beyond f32 max, e.g. -3.4028235e38).
const NEG: f32 = -3.4028234e38;

struct Params {
    t: u32,      // T (decoding: rows of the caches, max_len)
    nh: u32,     // query heads
    nkv: u32,    // key/value heads
    hd: u32,     // head dim
    blocks: u32, // row tiles per (sequence, head)
    total: u32,  // workgroups that do work
    rows: u32,   // kv_store: rows to copy
    scale: f32,  // score scale (1/√hd for GPT-2)
    q_off: u32,
    q_ld: u32,
    k_off: u32,
    k_ld: u32,
    v_off: u32,
    v_ld: u32,
    dq_off: u32,
    dq_ld: u32,
    dk_off: u32,
    dk_ld: u32,
    dv_off: u32,
    dv_ld: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;    // forward, decode
@group(0) @binding(5) var<storage, read_write> lse_out: array<f32>; // forward
@group(0) @binding(6) var<storage, read> o: array<f32>;            // backward: the forward's out
@group(0) @binding(7) var<storage, read> lse: array<f32>;          // backward
@group(0) @binding(8) var<storage, read> dout: array<f32>;         // backward (forward: any buffer, unread)
@group(0) @binding(9) var<storage, read_write> dq: array<f32>;
@group(0) @binding(10) var<storage, read_write> dk: array<f32>;
@group(0) @binding(11) var<storage, read_write> dv: array<f32>;
@group(0) @binding(12) var<storage, read_write> delta_out: array<f32>; // the dq pass writes it
@group(0) @binding(13) var<storage, read> delta: array<f32>;          // the dk/dv pass reads it

var<workgroup> As: array<vec4<f32>, DK * TR>; // [DK][TR]: a head-dim slice of 4 rows per vec4
var<workgroup> Bs: array<vec4<f32>, DK * TC>; // [DK][TC]: ... of 4 columns per vec4
var<workgroup> Ps: array<vec4<f32>, BC * TR>; // [BC][TR]: P or dS, 4 rows per vec4
var<workgroup> Cs: array<vec4<f32>, KC * HD4>; // [KC][HD4]: KC rows of v, k, dout or q
var<workgroup> part: array<vec4<f32>, TWG>;   // one vec4 (4 rows) per thread, for row reductions

// The 4 x 16 outputs of a thread: r<i>[c] = row i, column group c.
struct Acc {
    r0: mat4x4<f32>,
    r1: mat4x4<f32>,
    r2: mat4x4<f32>,
    r3: mat4x4<f32>,
}

fn acc_zero() -> Acc {
    let z = mat4x4<f32>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    return Acc(z, z, z, z);
}

// Row i of the accumulator times f[i].
fn acc_scale(a: Acc, f: vec4<f32>) -> Acc {
    return Acc(a.r0 * f.x, a.r1 * f.y, a.r2 * f.z, a.r3 * f.w);
}

// Sources the tile loaders read.
const SRC_Q: u32 = 0u;
const SRC_K: u32 = 1u;
const SRC_V: u32 = 2u;
const SRC_DOUT: u32 = 3u;

// Element d of head `head` in row t of sequence b of a source; 0 outside t < T, d < hd.
fn elem(src: u32, b: u32, head: u32, t: u32, d: u32) -> f32 {
    if (t >= p.t || d >= p.hd) {
        return 0.0;
    }
    let row = b * p.t + t;
    let col = head * p.hd + d;
    switch src {
        case 0u: { return q[p.q_off + row * p.q_ld + col]; }
        case 1u: { return k[p.k_off + row * p.k_ld + col]; }
        case 2u: { return v[p.v_off + row * p.v_ld + col]; }
        default: { return dout[row * p.nh * p.hd + col]; }
    }
}

// As = rows r0..r0+BR of src, head-dim slice d0..d0+DK.
fn fill_a(src: u32, b: u32, head: u32, r0: u32, d0: u32, lid: u32) {
    for (var s = lid; s < DK * TR; s += TWG) {
        let dd = s % DK;
        let t = r0 + 4u * (s / DK);
        let d = d0 + dd;
        As[dd * TR + s / DK] = vec4<f32>(elem(src, b, head, t, d), elem(src, b, head, t + 1u, d),
                                         elem(src, b, head, t + 2u, d), elem(src, b, head, t + 3u, d));
    }
}

// Bs = rows c0..c0+BC of src, head-dim slice d0..d0+DK.
fn fill_b(src: u32, b: u32, head: u32, c0: u32, d0: u32, lid: u32) {
    for (var s = lid; s < DK * TC; s += TWG) {
        let dd = s % DK;
        let t = c0 + 4u * (s / DK);
        let d = d0 + dd;
        Bs[dd * TC + s / DK] = vec4<f32>(elem(src, b, head, t, d), elem(src, b, head, t + 1u, d),
                                         elem(src, b, head, t + 2u, d), elem(src, b, head, t + 3u, d));
    }
}

// Cs = rows t0..t0+KC of src, every head-dim column.
fn fill_c(src: u32, b: u32, head: u32, t0: u32, lid: u32) {
    for (var s = lid; s < KC * HD4; s += TWG) {
        let t = t0 + s / HD4;
        let d = 4u * (s % HD4);
        Cs[s] = vec4<f32>(elem(src, b, head, t, d), elem(src, b, head, t, d + 1u),
                          elem(src, b, head, t, d + 2u), elem(src, b, head, t, d + 3u));
    }
}

// X·Yᵀ for this thread's rows r0 + 4ty.. (X = source sx, head hx) and columns c0 + 4tx..
// (Y = source sy, head hy); column i of the result is row i.
fn scores(sx: u32, hx: u32, sy: u32, hy: u32, b: u32, r0: u32, c0: u32, lid: u32) -> mat4x4<f32> {
    let tx = lid % TC;
    let ty = lid / TC;
    var s0 = vec4<f32>(0.0);
    var s1 = vec4<f32>(0.0);
    var s2 = vec4<f32>(0.0);
    var s3 = vec4<f32>(0.0);
    for (var d0 = 0u; d0 < p.hd; d0 += DK) {
        fill_a(sx, b, hx, r0, d0, lid);
        fill_b(sy, b, hy, c0, d0, lid);
        workgroupBarrier();
        for (var dd = 0u; dd < DK; dd++) {
            let x = As[dd * TR + ty];
            let y = Bs[dd * TC + tx];
            s0 = fma(vec4<f32>(x.x), y, s0);
            s1 = fma(vec4<f32>(x.y), y, s1);
            s2 = fma(vec4<f32>(x.z), y, s2);
            s3 = fma(vec4<f32>(x.w), y, s3);
        }
        workgroupBarrier();
    }
    return mat4x4<f32>(s0, s1, s2, s3);
}

// Ps = this thread's 4 x 4 block of m (rows 4ty.., columns 4tx..), stored column by column.
fn put_p(m: mat4x4<f32>, lid: u32) {
    let tx = lid % TC;
    let ty = lid / TC;
    let mt = transpose(m); // column j = column 4tx + j over the 4 rows
    Ps[(4u * tx) * TR + ty] = mt[0];
    Ps[(4u * tx + 1u) * TR + ty] = mt[1];
    Ps[(4u * tx + 2u) * TR + ty] = mt[2];
    Ps[(4u * tx + 3u) * TR + ty] = mt[3];
}

// a + Ps · Z, Z = rows c0..c0+BC of source sz (head hz): row i of the thread's 4 gets
// Σ_j Ps[row i, j] · Z[j, its 16 columns]. Run put_p first (the barrier here publishes it).
fn acc_product(a: Acc, sz: u32, hz: u32, b: u32, c0: u32, lid: u32) -> Acc {
    let tx = lid % TC;
    let ty = lid / TC;
    var r = a;
    for (var j0 = 0u; j0 < BC; j0 += KC) {
        fill_c(sz, b, hz, c0 + j0, lid);
        workgroupBarrier();
        for (var jj = 0u; jj < KC; jj++) {
            let pr = Ps[(j0 + jj) * TR + ty];
            let base = jj * HD4 + tx;
            let z = mat4x4<f32>(Cs[base], Cs[base + TC], Cs[base + 2u * TC], Cs[base + 3u * TC]);
            r.r0 += z * pr.x;
            r.r1 += z * pr.y;
            r.r2 += z * pr.z;
            r.r3 += z * pr.w;
        }
        workgroupBarrier();
    }
    return r;
}

// Per row of the thread's 4, the max (or sum, in tx order) of v over the TC threads of its row.
fn rows_max(v: vec4<f32>, lid: u32) -> vec4<f32> {
    part[lid] = v;
    workgroupBarrier();
    let base = (lid / TC) * TC;
    var r = part[base];
    for (var i = 1u; i < TC; i++) {
        r = max(r, part[base + i]);
    }
    workgroupBarrier();
    return r;
}

fn rows_sum(v: vec4<f32>, lid: u32) -> vec4<f32> {
    part[lid] = v;
    workgroupBarrier();
    let base = (lid / TC) * TC;
    var r = part[base];
    for (var i = 1u; i < TC; i++) {
        r += part[base + i];
    }
    workgroupBarrier();
    return r;
}

fn hmax(x: vec4<f32>) -> f32 {
    return max(max(x.x, x.y), max(x.z, x.w));
}

fn hsum(x: vec4<f32>) -> f32 {
    return (x.x + x.y) + (x.z + x.w);
}

// Causal mask of a 4 x 4 block of scores (rows from i0, columns from j0): the scores of a
// key after its query become NEG. Rows are queries, or keys when `keys_are_rows` (the dk/dv
// pass, where queries past T are masked too).
fn mask(m: mat4x4<f32>, i0: u32, j0: u32, keys_are_rows: bool) -> mat4x4<f32> {
    let j = vec4<u32>(j0) + vec4<u32>(0u, 1u, 2u, 3u);
    return mat4x4<f32>(mask_row(m[0], i0, j, keys_are_rows), mask_row(m[1], i0 + 1u, j, keys_are_rows),
                       mask_row(m[2], i0 + 2u, j, keys_are_rows), mask_row(m[3], i0 + 3u, j, keys_are_rows));
}

fn mask_row(x: vec4<f32>, i: u32, j: vec4<u32>, keys_are_rows: bool) -> vec4<f32> {
    let iv = vec4<u32>(i);
    var keep = j <= iv;
    if (keys_are_rows) {
        keep = (iv <= j) & (j < vec4<u32>(p.t));
    }
    return select(vec4<f32>(NEG), x, keep);
}

// Element n (0..64) of a thread's accumulator: row i = n / 16, column group c = n / 4 % 4,
// lane e = n % 4; `at` gives its (row r0 + 4ty + i, head-dim column 4·(tx + c·TC) + e).
fn acc_get(a: Acc, n: u32) -> f32 {
    var m = a.r3;
    switch n / 16u {
        case 0u: { m = a.r0; }
        case 1u: { m = a.r1; }
        case 2u: { m = a.r2; }
        default: {}
    }
    return m[(n / 4u) % 4u][n % 4u];
}

fn at(n: u32, r0: u32, lid: u32) -> vec2<u32> {
    return vec2<u32>(r0 + 4u * (lid / TC) + n / 16u, 4u * (lid % TC + ((n / 4u) % 4u) * TC) + n % 4u);
}

// Stores f · the accumulator's elements inside the matrix (row < T, column < hd) into a
// destination's head `head`: out (packed), or the views dq, dk, dv.
fn store_out(a: Acc, f: f32, b: u32, head: u32, r0: u32, lid: u32) {
    for (var n = 0u; n < 64u; n++) {
        let e = at(n, r0, lid);
        if (e.x < p.t && e.y < p.hd) {
            out[(b * p.t + e.x) * p.nh * p.hd + head * p.hd + e.y] = f * acc_get(a, n);
        }
    }
}

fn store_dq(a: Acc, f: f32, b: u32, head: u32, r0: u32, lid: u32) {
    for (var n = 0u; n < 64u; n++) {
        let e = at(n, r0, lid);
        if (e.x < p.t && e.y < p.hd) {
            dq[p.dq_off + (b * p.t + e.x) * p.dq_ld + head * p.hd + e.y] = f * acc_get(a, n);
        }
    }
}

fn store_dk(a: Acc, f: f32, b: u32, head: u32, r0: u32, lid: u32) {
    for (var n = 0u; n < 64u; n++) {
        let e = at(n, r0, lid);
        if (e.x < p.t && e.y < p.hd) {
            dk[p.dk_off + (b * p.t + e.x) * p.dk_ld + head * p.hd + e.y] = f * acc_get(a, n);
        }
    }
}

fn store_dv(a: Acc, f: f32, b: u32, head: u32, r0: u32, lid: u32) {
    for (var n = 0u; n < 64u; n++) {
        let e = at(n, r0, lid);
        if (e.x < p.t && e.y < p.hd) {
            dv[p.dv_off + (b * p.t + e.x) * p.dv_ld + head * p.hd + e.y] = f * acc_get(a, n);
        }
    }
}

// lse and delta of the 4 queries t0.. of (sequence, head) z, 0 past T.
fn lse4(z: u32, t0: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (t0 + i < p.t) {
            r[i] = lse[z * p.t + t0 + i];
        }
    }
    return r;
}

fn delta4(z: u32, t0: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (t0 + i < p.t) {
            r[i] = delta[z * p.t + t0 + i];
        }
    }
    return r;
}

// ---------------------------------------------------------------------------------------
// Forward: one workgroup per (sequence b, query head h, tile of BR queries). Over key blocks
// up to the diagonal: S = scale·q·kᵀ, online softmax (running row max m; l, the row sums of
// this thread's columns, and out rescaled by exp(m_old - m_new)), out += P·v.
// out = out / l; lse = m + log l.
@compute @workgroup_size(TWG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.total) {
        return;
    }
    let z = id / p.blocks; // b·nh + h
    let r0 = (id % p.blocks) * BR;
    let b = z / p.nh;
    let h = z % p.nh;
    let g = h / (p.nh / p.nkv);
    let i0 = r0 + 4u * (lid / TC);
    let j_lane = 4u * (lid % TC);
    var m = vec4<f32>(NEG);
    var l = vec4<f32>(0.0);
    var acc = acc_zero();
    let keys = min(p.t, r0 + BR);
    for (var c0 = 0u; c0 < keys; c0 += BC) {
        var s = mask(scores(SRC_Q, h, SRC_K, g, b, r0, c0, lid) * p.scale, i0, c0 + j_lane, false);
        let m_new = max(m, rows_max(vec4<f32>(hmax(s[0]), hmax(s[1]), hmax(s[2]), hmax(s[3])), lid));
        let corr = exp(m - m_new);
        s[0] = exp(s[0] - m_new.x);
        s[1] = exp(s[1] - m_new.y);
        s[2] = exp(s[2] - m_new.z);
        s[3] = exp(s[3] - m_new.w);
        l = l * corr + vec4<f32>(hsum(s[0]), hsum(s[1]), hsum(s[2]), hsum(s[3]));
        m = m_new;
        put_p(s, lid);
        acc = acc_product(acc_scale(acc, corr), SRC_V, g, b, c0, lid);
    }
    l = rows_sum(l, lid);
    let inv = 1.0 / l;
    store_out(acc_scale(acc, inv), 1.0, b, h, r0, lid);
    if (lid % TC == 0u) {
        for (var i = 0u; i < 4u; i++) {
            if (i0 + i < p.t) {
                lse_out[z * p.t + i0 + i] = m[i] + log(l[i]);
            }
        }
    }
}

// Backward, pass 1 (run first): dq, and delta for pass 2. One workgroup per (b, h, tile of
// BR queries): delta = rowsum(dout ∘ out); over key blocks up to the diagonal,
// P = exp(scale·q·kᵀ - lse), dP = dout·vᵀ, dS = P ∘ (dP - delta), dq += dS·k; dq *= scale.
@compute @workgroup_size(TWG)
fn backward_dq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.total) {
        return;
    }
    let z = id / p.blocks;
    let r0 = (id % p.blocks) * BR;
    let b = z / p.nh;
    let h = z % p.nh;
    let g = h / (p.nh / p.nkv);
    let tx = lid % TC;
    let i0 = r0 + 4u * (lid / TC);
    let j_lane = 4u * tx;
    // delta over this thread's 16 columns of its 4 rows, then across the row
    var dsum = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        let t = i0 + i;
        if (t < p.t) {
            let row = (b * p.t + t) * p.nh * p.hd + h * p.hd;
            var x = 0.0;
            for (var c = 0u; c < 4u; c++) {
                for (var e = 0u; e < 4u; e++) {
                    let d = 4u * (tx + c * TC) + e;
                    if (d < p.hd) {
                        x += dout[row + d] * o[row + d];
                    }
                }
            }
            dsum[i] = x;
        }
    }
    let dl = rows_sum(dsum, lid);
    if (tx == 0u) {
        for (var i = 0u; i < 4u; i++) {
            if (i0 + i < p.t) {
                delta_out[z * p.t + i0 + i] = dl[i];
            }
        }
    }
    let lrow = lse4(z, i0);
    var acc = acc_zero();
    let keys = min(p.t, r0 + BR);
    for (var c0 = 0u; c0 < keys; c0 += BC) {
        var s = mask(scores(SRC_Q, h, SRC_K, g, b, r0, c0, lid) * p.scale, i0, c0 + j_lane, false);
        let dp = scores(SRC_DOUT, h, SRC_V, g, b, r0, c0, lid);
        s[0] = exp(s[0] - lrow.x) * (dp[0] - dl.x);
        s[1] = exp(s[1] - lrow.y) * (dp[1] - dl.y);
        s[2] = exp(s[2] - lrow.z) * (dp[2] - dl.z);
        s[3] = exp(s[3] - lrow.w) * (dp[3] - dl.w);
        put_p(s, lid);
        acc = acc_product(acc, SRC_K, g, b, c0, lid);
    }
    store_dq(acc, p.scale, b, h, r0, lid);
}

// Backward, pass 2: dk and dv. One workgroup per (b, key/value head g, tile of BR keys); rows
// are keys, columns queries. For each query head of the group in order, over query blocks from
// the diagonal on: Pᵀ = exp(scale·k·qᵀ - lse), dv += Pᵀ·dout, dPᵀ = v·doutᵀ,
// dSᵀ = Pᵀ ∘ (dPᵀ - delta), dk += dSᵀ·q; dk *= scale.
@compute @workgroup_size(TWG)
fn backward_dkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.total) {
        return;
    }
    let zk = id / p.blocks; // b·nkv + g
    let r0 = (id % p.blocks) * BR;
    let b = zk / p.nkv;
    let g = zk % p.nkv;
    let group = p.nh / p.nkv;
    let i0 = r0 + 4u * (lid / TC);
    let j_lane = 4u * (lid % TC);
    var acc_k = acc_zero();
    var acc_v = acc_zero();
    for (var hh = 0u; hh < group; hh++) {
        let h = g * group + hh;
        let z = b * p.nh + h;
        for (var c0 = (r0 / BC) * BC; c0 < p.t; c0 += BC) {
            let lcol = lse4(z, c0 + j_lane);
            let dcol = delta4(z, c0 + j_lane);
            var s = mask(scores(SRC_K, g, SRC_Q, h, b, r0, c0, lid) * p.scale, i0, c0 + j_lane, true);
            s[0] = exp(s[0] - lcol);
            s[1] = exp(s[1] - lcol);
            s[2] = exp(s[2] - lcol);
            s[3] = exp(s[3] - lcol);
            put_p(s, lid);
            acc_v = acc_product(acc_v, SRC_DOUT, h, b, c0, lid);
            let dp = scores(SRC_V, g, SRC_DOUT, h, b, r0, c0, lid);
            s[0] = s[0] * (dp[0] - dcol);
            s[1] = s[1] * (dp[1] - dcol);
            s[2] = s[2] * (dp[2] - dcol);
            s[3] = s[3] * (dp[3] - dcol);
            put_p(s, lid);
            acc_k = acc_product(acc_k, SRC_Q, h, b, c0, lid);
        }
    }
    store_dk(acc_k, p.scale, b, g, r0, lid);
    store_dv(acc_v, 1.0, b, g, r0, lid);
}

// ---------------------------------------------------------------------------------------
// Decoding with a KV cache (one sequence). pos[0] is the position of the first new row,
// written by the host before each step; k_cache and v_cache are [max_len, nkv·hd] (kv head g
// in columns g·hd..(g+1)·hd); new rows come as views k, v (row r at k_off + r·k_ld), the query
// as view q (row 0).

@group(0) @binding(14) var<storage, read> pos: array<u32>;
@group(0) @binding(15) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(16) var<storage, read_write> v_cache: array<f32>;

// Workgroup size of decoding and kv_store, and of the reductions of shaders/lib/reduce.wgsl.
const WG: u32 = 64u;
// Largest head dimension decode supports: each thread owns output columns lid + WG*i, i < 4.
const MAX_HD: u32 = 256u;

var<workgroup> qs: array<f32, MAX_HD>; // the head's query
var<workgroup> probs: array<f32, WG>;  // exp-scores of the current chunk of keys

// k_cache[pos + r, :] = k row r; v_cache likewise (rows past the cache are dropped).
// One workgroup per row.
@compute @workgroup_size(WG)
fn kv_store(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    let dst = pos[0] + r;
    if (r >= p.rows || dst >= p.t) {
        return;
    }
    let w = p.nkv * p.hd;
    for (var j = lid; j < w; j += WG) {
        k_cache[dst * w + j] = k[p.k_off + r * p.k_ld + j];
        v_cache[dst * w + j] = v[p.v_off + r * p.v_ld + j];
    }
}

// out[h·hd + d] = Σ_{s <= pos} softmax_s(scale · q·k_s) v_s[d] for query head h (kv head
// h / (nh / nkv)). One workgroup per query head. Keys go in chunks of WG (one per thread) with
// an online softmax: the running max m, sum l and each thread's output columns (acc) are
// rescaled by exp(m_old - m_new) whenever a chunk raises the max.
@compute @workgroup_size(WG)
fn decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let hd = p.hd;
    if (h >= p.nh || hd > MAX_HD) {
        return;
    }
    let w = p.nkv * hd;
    let n = min(pos[0] + 1u, p.t); // keys 0..n
    let qcol = p.q_off + h * hd;
    let col = (h / (p.nh / p.nkv)) * hd;
    for (var d = lid; d < hd; d += WG) {
        qs[d] = q[qcol + d];
    }
    workgroupBarrier();
    let hd4 = hd & ~3u;
    var m = NEG;
    var l = 0.0;
    var acc = vec4<f32>(0.0);
    for (var s0 = 0u; s0 < n; s0 += WG) {
        let s = s0 + lid;
        var score = NEG;
        if (s < n) {
            let kb = s * w + col;
            var dot4 = vec4<f32>(0.0);
            for (var d = 0u; d < hd4; d += 4u) {
                dot4 += vec4<f32>(qs[d], qs[d + 1u], qs[d + 2u], qs[d + 3u])
                    * vec4<f32>(k_cache[kb + d], k_cache[kb + d + 1u], k_cache[kb + d + 2u], k_cache[kb + d + 3u]);
            }
            var dot = (dot4.x + dot4.y) + (dot4.z + dot4.w);
            for (var d = hd4; d < hd; d++) {
                dot += qs[d] * k_cache[kb + d];
            }
            score = dot * p.scale;
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
            let vb = (s0 + j) * w + col + lid;
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
    let ob = h * hd + lid;
    if (lid < hd) {
        out[ob] = acc.x * inv;
    }
    if (lid + WG < hd) {
        out[ob + WG] = acc.y * inv;
    }
    if (lid + 2u * WG < hd) {
        out[ob + 2u * WG] = acc.z * inv;
    }
    if (lid + 3u * WG < hd) {
        out[ob + 3u * WG] = acc.w * inv;
    }
}
