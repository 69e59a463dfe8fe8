// Causal grouped-query attention, flash style: forward and backward side by side, then
// KV-cached decoding. src/kernels/attention.rs owns the shapes and fills the placeholders.
//
// Layout: q, k, v (and dq, dk, dv) are views into row-major [B·T, ...] tensors: element d of
// head h in row r (= b·T + t) is at off + r·ld + h·hd + d. out and dout are packed
// [B·T, nh·hd]. Query head h reads key/value head h / (nh / nkv). lse and delta are
// [B, nh, T]: per query, the log-sum-exp of its scaled scores and rowsum(dout ∘ out).
//
// Tiles: a workgroup of TR x TC threads owns a tile of BR = 8·TR rows (queries; keys in the
// dk/dv pass) and walks the other side in blocks of BC = 4·TC columns. Thread (ty, tx) holds
// the 8 x 4 scores of rows 8ty.. and columns 4tx.. of a block (a Tile: row i as a vec4 over
// its 4 columns), and 8 rows x 8 head-dim columns of its output (an Acc: row i as a mat2x4
// whose column c holds head-dim columns 4·(tx + c·TC)..+3), so HDP, the head dim rounded up
// to the variant's, is 8·TC. Every register is named and the loops of the block walk index
// workgroup memory only (private arrays appear only in the once-per-workgroup stores), so
// the checked (browser) build keeps them in registers.
//
// Scores X·Yᵀ stream X and Y through As / Bs in DK-wide slices of the head dim; a product
// P·Z (P a BR x BC block, Z BC rows of v / k / dout / q) reads P from Ps and Z from Cs, KC
// rows at a time. As/Bs, Cs and the row-reduction scratch are never live together and share
// `stage`. Loads outside the matrices (t >= T, d >= hd) read 0 and stores outside are
// skipped, so any T and hd work. Nothing is accumulated with atomics: every output element
// is written by one thread in a fixed order.

const HDP: u32 = {{HDP}}u;
const TR: u32 = {{TR}}u;
const DK: u32 = {{DK}}u;
const KC: u32 = {{KC}}u;
const TC: u32 = HDP / 8u;
const TWG: u32 = TR * TC;
const BR: u32 = 8u * TR;
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
// dk and dv when they are views of one buffer (GPT-2's packed dqkv): WebGPU forbids binding a
// buffer to two writable bindings of one dispatch.
@group(0) @binding(17) var<storage, read_write> dkv: array<f32>;

// stage: As [BR/4][DK] at 0 and Bs [DK][BC/4] after it while scores run; Cs [KC][HD4] at 0
// during a product; two vec4 per thread (its 8 rows) during a row reduction; decoding keeps
// its query there.
const AS_LEN: u32 = DK * BR / 4u;
const STAGE: u32 = max(max(AS_LEN + DK * BC / 4u, KC * HD4), max(2u * TWG, MAX_HD / 4u));
var<workgroup> stage: array<vec4<f32>, STAGE>;
var<workgroup> Ps: array<vec4<f32>, BC * BR / 4u>; // [BC][BR/4]: P or dS, 4 rows per vec4

// 8 x 4 scores: lo column i = row i, hi column i = row 4 + i, each a vec4 over 4 columns.
struct Tile {
    lo: mat4x4<f32>,
    hi: mat4x4<f32>,
}

// Per-row values of a thread's 8 rows: lo = rows 0..3, hi = rows 4..7.
struct Rows {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// The 8 x 8 outputs of a thread: r<i>[c] = row i, column group c.
struct Acc {
    r0: mat2x4<f32>,
    r1: mat2x4<f32>,
    r2: mat2x4<f32>,
    r3: mat2x4<f32>,
    r4: mat2x4<f32>,
    r5: mat2x4<f32>,
    r6: mat2x4<f32>,
    r7: mat2x4<f32>,
}

fn acc_zero() -> Acc {
    let z = mat2x4<f32>(vec4<f32>(0.0), vec4<f32>(0.0));
    return Acc(z, z, z, z, z, z, z, z);
}

// Row i of the accumulator times f's row i.
fn acc_scale(a: Acc, f: Rows) -> Acc {
    return Acc(a.r0 * f.lo.x, a.r1 * f.lo.y, a.r2 * f.lo.z, a.r3 * f.lo.w,
               a.r4 * f.hi.x, a.r5 * f.hi.y, a.r6 * f.hi.z, a.r7 * f.hi.w);
}

// Sources the tile loaders read.
const SRC_Q: u32 = 0u;
const SRC_K: u32 = 1u;
const SRC_V: u32 = 2u;
const SRC_DOUT: u32 = 3u;

// Elements d..d+3 of head `head` in row t of sequence b of a source; 0 outside t < T, d < hd.
fn elem4(src: u32, b: u32, head: u32, t: u32, d: u32) -> vec4<f32> {
    if (t >= p.t || d >= p.hd) {
        return vec4<f32>(0.0);
    }
    let row = b * p.t + t;
    let col = head * p.hd + d;
    var i: u32;
    switch src {
        case 0u: { i = p.q_off + row * p.q_ld + col; }
        case 1u: { i = p.k_off + row * p.k_ld + col; }
        case 2u: { i = p.v_off + row * p.v_ld + col; }
        default: { i = row * p.nh * p.hd + col; }
    }
    let n = min(p.hd - d, 4u);
    var r = vec4<f32>(0.0);
    switch src {
        case 0u: {
            r.x = q[i];
            if (n > 1u) { r.y = q[i + 1u]; }
            if (n > 2u) { r.z = q[i + 2u]; }
            if (n > 3u) { r.w = q[i + 3u]; }
        }
        case 1u: {
            r.x = k[i];
            if (n > 1u) { r.y = k[i + 1u]; }
            if (n > 2u) { r.z = k[i + 2u]; }
            if (n > 3u) { r.w = k[i + 3u]; }
        }
        case 2u: {
            r.x = v[i];
            if (n > 1u) { r.y = v[i + 1u]; }
            if (n > 2u) { r.z = v[i + 2u]; }
            if (n > 3u) { r.w = v[i + 3u]; }
        }
        default: {
            r.x = dout[i];
            if (n > 1u) { r.y = dout[i + 1u]; }
            if (n > 2u) { r.z = dout[i + 2u]; }
            if (n > 3u) { r.w = dout[i + 3u]; }
        }
    }
    return r;
}

// As = rows r0..r0+BR of sx, Bs = rows c0..c0+BC of sy, head-dim slice d0..d0+DK; each
// thread loads 4 consecutive head-dim columns of one row and spreads them over 4 entries.
fn fill_ab(sx: u32, hx: u32, sy: u32, hy: u32, b: u32, r0: u32, c0: u32, d0: u32, lid: u32) {
    for (var s = lid; s < BR * DK / 4u; s += TWG) {
        let row = s / (DK / 4u);
        let dd = 4u * (s % (DK / 4u));
        let x = elem4(sx, b, hx, r0 + row, d0 + dd);
        let at = (row / 4u) * DK + dd;
        stage[at][row % 4u] = x.x;
        stage[at + 1u][row % 4u] = x.y;
        stage[at + 2u][row % 4u] = x.z;
        stage[at + 3u][row % 4u] = x.w;
    }
    for (var s = lid; s < BC * DK / 4u; s += TWG) {
        let col = s / (DK / 4u);
        let dd = 4u * (s % (DK / 4u));
        let y = elem4(sy, b, hy, c0 + col, d0 + dd);
        let at = AS_LEN + dd * (BC / 4u) + col / 4u;
        stage[at][col % 4u] = y.x;
        stage[at + BC / 4u][col % 4u] = y.y;
        stage[at + BC / 2u][col % 4u] = y.z;
        stage[at + 3u * BC / 4u][col % 4u] = y.w;
    }
}

// Cs = rows t0..t0+KC of src, every head-dim column.
fn fill_c(src: u32, b: u32, head: u32, t0: u32, lid: u32) {
    for (var s = lid; s < KC * HD4; s += TWG) {
        stage[s] = elem4(src, b, head, t0 + s / HD4, 4u * (s % HD4));
    }
}

// X·Yᵀ for this thread's rows r0 + 8ty.. (X = source sx, head hx) and columns c0 + 4tx..
// (Y = source sy, head hy). As is [BR/4][DK] (a vec4 holds 4 rows), Bs [DK][BC/4].
fn scores(sx: u32, hx: u32, sy: u32, hy: u32, b: u32, r0: u32, c0: u32, lid: u32) -> Tile {
    let tx = lid % TC;
    let ty = lid / TC;
    var s0 = vec4<f32>(0.0);
    var s1 = vec4<f32>(0.0);
    var s2 = vec4<f32>(0.0);
    var s3 = vec4<f32>(0.0);
    var s4 = vec4<f32>(0.0);
    var s5 = vec4<f32>(0.0);
    var s6 = vec4<f32>(0.0);
    var s7 = vec4<f32>(0.0);
    for (var d0 = 0u; d0 < p.hd; d0 += DK) {
        fill_ab(sx, hx, sy, hy, b, r0, c0, d0, lid);
        workgroupBarrier();
        for (var dd = 0u; dd < DK; dd++) {
            let x = stage[(2u * ty) * DK + dd];
            let z = stage[(2u * ty + 1u) * DK + dd];
            let y = stage[AS_LEN + dd * (BC / 4u) + tx];
            s0 = fma(vec4<f32>(x.x), y, s0);
            s1 = fma(vec4<f32>(x.y), y, s1);
            s2 = fma(vec4<f32>(x.z), y, s2);
            s3 = fma(vec4<f32>(x.w), y, s3);
            s4 = fma(vec4<f32>(z.x), y, s4);
            s5 = fma(vec4<f32>(z.y), y, s5);
            s6 = fma(vec4<f32>(z.z), y, s6);
            s7 = fma(vec4<f32>(z.w), y, s7);
        }
        workgroupBarrier();
    }
    return Tile(mat4x4<f32>(s0, s1, s2, s3), mat4x4<f32>(s4, s5, s6, s7));
}

fn tile_scale(m: Tile, f: f32) -> Tile {
    return Tile(m.lo * f, m.hi * f);
}

// Ps = this thread's 8 x 4 block of m (rows 8ty.., columns 4tx..), stored column by column.
fn put_p(m: Tile, lid: u32) {
    let tx = lid % TC;
    let ty = lid / TC;
    let lo = transpose(m.lo); // column j = column 4tx + j over rows 0..3
    let hi = transpose(m.hi);
    let at = (4u * tx) * (BR / 4u) + 2u * ty;
    Ps[at] = lo[0];
    Ps[at + 1u] = hi[0];
    Ps[at + BR / 4u] = lo[1];
    Ps[at + BR / 4u + 1u] = hi[1];
    Ps[at + BR / 2u] = lo[2];
    Ps[at + BR / 2u + 1u] = hi[2];
    Ps[at + 3u * BR / 4u] = lo[3];
    Ps[at + 3u * BR / 4u + 1u] = hi[3];
}

// a + Ps · Z, Z = rows c0..c0+BC of source sz (head hz): row i of the thread's 8 gets
// Σ_j Ps[row i, j] · Z[j, its 8 columns]. Run put_p first (the barrier here publishes it).
fn acc_product(a: Acc, sz: u32, hz: u32, b: u32, c0: u32, lid: u32) -> Acc {
    let tx = lid % TC;
    let ty = lid / TC;
    var r = a;
    for (var j0 = 0u; j0 < BC; j0 += KC) {
        fill_c(sz, b, hz, c0 + j0, lid);
        workgroupBarrier();
        for (var jj = 0u; jj < KC; jj++) {
            let pl = Ps[(j0 + jj) * (BR / 4u) + 2u * ty];
            let ph = Ps[(j0 + jj) * (BR / 4u) + 2u * ty + 1u];
            let z0 = stage[jj * HD4 + tx];
            let z1 = stage[jj * HD4 + tx + TC];
            r.r0 = mat2x4<f32>(fma(vec4<f32>(pl.x), z0, r.r0[0]), fma(vec4<f32>(pl.x), z1, r.r0[1]));
            r.r1 = mat2x4<f32>(fma(vec4<f32>(pl.y), z0, r.r1[0]), fma(vec4<f32>(pl.y), z1, r.r1[1]));
            r.r2 = mat2x4<f32>(fma(vec4<f32>(pl.z), z0, r.r2[0]), fma(vec4<f32>(pl.z), z1, r.r2[1]));
            r.r3 = mat2x4<f32>(fma(vec4<f32>(pl.w), z0, r.r3[0]), fma(vec4<f32>(pl.w), z1, r.r3[1]));
            r.r4 = mat2x4<f32>(fma(vec4<f32>(ph.x), z0, r.r4[0]), fma(vec4<f32>(ph.x), z1, r.r4[1]));
            r.r5 = mat2x4<f32>(fma(vec4<f32>(ph.y), z0, r.r5[0]), fma(vec4<f32>(ph.y), z1, r.r5[1]));
            r.r6 = mat2x4<f32>(fma(vec4<f32>(ph.z), z0, r.r6[0]), fma(vec4<f32>(ph.z), z1, r.r6[1]));
            r.r7 = mat2x4<f32>(fma(vec4<f32>(ph.w), z0, r.r7[0]), fma(vec4<f32>(ph.w), z1, r.r7[1]));
        }
        workgroupBarrier();
    }
    return r;
}

// Per row of the thread's 8, the max (or sum, in tx order) of v over the TC threads of its rows.
fn rows_max(v: Rows, lid: u32) -> Rows {
    stage[2u * lid] = v.lo;
    stage[2u * lid + 1u] = v.hi;
    workgroupBarrier();
    let base = 2u * (lid / TC) * TC;
    var r = Rows(stage[base], stage[base + 1u]);
    for (var i = 1u; i < TC; i++) {
        r = Rows(max(r.lo, stage[base + 2u * i]), max(r.hi, stage[base + 2u * i + 1u]));
    }
    workgroupBarrier();
    return r;
}

fn rows_sum(v: Rows, lid: u32) -> Rows {
    stage[2u * lid] = v.lo;
    stage[2u * lid + 1u] = v.hi;
    workgroupBarrier();
    let base = 2u * (lid / TC) * TC;
    var r = Rows(stage[base], stage[base + 1u]);
    for (var i = 1u; i < TC; i++) {
        r = Rows(r.lo + stage[base + 2u * i], r.hi + stage[base + 2u * i + 1u]);
    }
    workgroupBarrier();
    return r;
}

// Row maxima and sums of a tile.
fn tile_max(m: Tile) -> Rows {
    return Rows(vec4<f32>(hmax(m.lo[0]), hmax(m.lo[1]), hmax(m.lo[2]), hmax(m.lo[3])),
                vec4<f32>(hmax(m.hi[0]), hmax(m.hi[1]), hmax(m.hi[2]), hmax(m.hi[3])));
}

fn tile_sum(m: Tile) -> Rows {
    return Rows(vec4<f32>(hsum(m.lo[0]), hsum(m.lo[1]), hsum(m.lo[2]), hsum(m.lo[3])),
                vec4<f32>(hsum(m.hi[0]), hsum(m.hi[1]), hsum(m.hi[2]), hsum(m.hi[3])));
}

fn hmax(x: vec4<f32>) -> f32 {
    return max(max(x.x, x.y), max(x.z, x.w));
}

fn hsum(x: vec4<f32>) -> f32 {
    return (x.x + x.y) + (x.z + x.w);
}

// exp(m - f) with f per row (a Rows) or per column (a vec4 over the 4 columns).
fn exp_rows(m: Tile, f: Rows) -> Tile {
    return Tile(mat4x4<f32>(exp(m.lo[0] - f.lo.x), exp(m.lo[1] - f.lo.y), exp(m.lo[2] - f.lo.z), exp(m.lo[3] - f.lo.w)),
                mat4x4<f32>(exp(m.hi[0] - f.hi.x), exp(m.hi[1] - f.hi.y), exp(m.hi[2] - f.hi.z), exp(m.hi[3] - f.hi.w)));
}

fn exp_cols(m: Tile, f: vec4<f32>) -> Tile {
    return Tile(mat4x4<f32>(exp(m.lo[0] - f), exp(m.lo[1] - f), exp(m.lo[2] - f), exp(m.lo[3] - f)),
                mat4x4<f32>(exp(m.hi[0] - f), exp(m.hi[1] - f), exp(m.hi[2] - f), exp(m.hi[3] - f)));
}

// dS = P ∘ (dP - delta), delta per row or per column.
fn ds_rows(pm: Tile, dp: Tile, dl: Rows) -> Tile {
    return Tile(mat4x4<f32>(pm.lo[0] * (dp.lo[0] - dl.lo.x), pm.lo[1] * (dp.lo[1] - dl.lo.y),
                            pm.lo[2] * (dp.lo[2] - dl.lo.z), pm.lo[3] * (dp.lo[3] - dl.lo.w)),
                mat4x4<f32>(pm.hi[0] * (dp.hi[0] - dl.hi.x), pm.hi[1] * (dp.hi[1] - dl.hi.y),
                            pm.hi[2] * (dp.hi[2] - dl.hi.z), pm.hi[3] * (dp.hi[3] - dl.hi.w)));
}

fn ds_cols(pm: Tile, dp: Tile, dl: vec4<f32>) -> Tile {
    return Tile(mat4x4<f32>(pm.lo[0] * (dp.lo[0] - dl), pm.lo[1] * (dp.lo[1] - dl),
                            pm.lo[2] * (dp.lo[2] - dl), pm.lo[3] * (dp.lo[3] - dl)),
                mat4x4<f32>(pm.hi[0] * (dp.hi[0] - dl), pm.hi[1] * (dp.hi[1] - dl),
                            pm.hi[2] * (dp.hi[2] - dl), pm.hi[3] * (dp.hi[3] - dl)));
}

// Causal mask of the thread's 8 x 4 scores (rows from i0, columns from j0): the scores of a
// key after its query become NEG. Rows are queries, or keys when `keys_are_rows` (the dk/dv
// pass, where queries past T are masked too).
fn mask(m: Tile, i0: u32, j0: u32, keys_are_rows: bool) -> Tile {
    let j = vec4<u32>(j0) + vec4<u32>(0u, 1u, 2u, 3u);
    return Tile(mat4x4<f32>(mask_row(m.lo[0], i0, j, keys_are_rows), mask_row(m.lo[1], i0 + 1u, j, keys_are_rows),
                            mask_row(m.lo[2], i0 + 2u, j, keys_are_rows), mask_row(m.lo[3], i0 + 3u, j, keys_are_rows)),
                mat4x4<f32>(mask_row(m.hi[0], i0 + 4u, j, keys_are_rows), mask_row(m.hi[1], i0 + 5u, j, keys_are_rows),
                            mask_row(m.hi[2], i0 + 6u, j, keys_are_rows), mask_row(m.hi[3], i0 + 7u, j, keys_are_rows)));
}

fn mask_row(x: vec4<f32>, i: u32, j: vec4<u32>, keys_are_rows: bool) -> vec4<f32> {
    let iv = vec4<u32>(i);
    var keep = j <= iv;
    if (keys_are_rows) {
        keep = (iv <= j) & (j < vec4<u32>(p.t));
    }
    return select(vec4<f32>(NEG), x, keep);
}

// The accumulator's rows as an array, for the stores (run once per workgroup).
fn acc_rows(a: Acc) -> array<mat2x4<f32>, 8> {
    return array<mat2x4<f32>, 8>(a.r0, a.r1, a.r2, a.r3, a.r4, a.r5, a.r6, a.r7);
}

// Element n (0..64) of a thread's accumulator is row i = n / 8, column group c = n / 4 % 2,
// lane e = n % 4; `at` gives its (row r0 + 8ty + i, head-dim column 4·(tx + c·TC) + e).
fn at(n: u32, r0: u32, lid: u32) -> vec2<u32> {
    return vec2<u32>(r0 + 8u * (lid / TC) + n / 8u, 4u * (lid % TC + ((n / 4u) % 2u) * TC) + n % 4u);
}

// Stores f · the accumulator's elements inside the matrix (row < T, column < hd) into a
// destination's head `head`: out (packed), or the views dq, dk, dv.
fn store_out(a: Acc, f: f32, b: u32, head: u32, r0: u32, lid: u32) {
    var rows = acc_rows(a);
    for (var n = 0u; n < 64u; n++) {
        let e = at(n, r0, lid);
        if (e.x < p.t && e.y < p.hd) {
            out[(b * p.t + e.x) * p.nh * p.hd + head * p.hd + e.y] = f * rows[n / 8u][(n / 4u) % 2u][n % 4u];
        }
    }
}

fn store_dq(a: Acc, f: f32, b: u32, head: u32, r0: u32, lid: u32) {
    var rows = acc_rows(a);
    for (var n = 0u; n < 64u; n++) {
        let e = at(n, r0, lid);
        if (e.x < p.t && e.y < p.hd) {
            dq[p.dq_off + (b * p.t + e.x) * p.dq_ld + head * p.hd + e.y] = f * rows[n / 8u][(n / 4u) % 2u][n % 4u];
        }
    }
}

fn store_dk(a: Acc, f: f32, b: u32, head: u32, r0: u32, lid: u32) {
    var rows = acc_rows(a);
    for (var n = 0u; n < 64u; n++) {
        let e = at(n, r0, lid);
        if (e.x < p.t && e.y < p.hd) {
            dk[p.dk_off + (b * p.t + e.x) * p.dk_ld + head * p.hd + e.y] = f * rows[n / 8u][(n / 4u) % 2u][n % 4u];
        }
    }
}

fn store_dv(a: Acc, f: f32, b: u32, head: u32, r0: u32, lid: u32) {
    var rows = acc_rows(a);
    for (var n = 0u; n < 64u; n++) {
        let e = at(n, r0, lid);
        if (e.x < p.t && e.y < p.hd) {
            dv[p.dv_off + (b * p.t + e.x) * p.dv_ld + head * p.hd + e.y] = f * rows[n / 8u][(n / 4u) % 2u][n % 4u];
        }
    }
}

fn store_dkv(a: Acc, f: f32, off: u32, ld: u32, b: u32, head: u32, r0: u32, lid: u32) {
    var rows = acc_rows(a);
    for (var n = 0u; n < 64u; n++) {
        let e = at(n, r0, lid);
        if (e.x < p.t && e.y < p.hd) {
            dkv[off + (b * p.t + e.x) * ld + head * p.hd + e.y] = f * rows[n / 8u][(n / 4u) % 2u][n % 4u];
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
    let i0 = r0 + 8u * (lid / TC);
    let j_lane = 4u * (lid % TC);
    var m = Rows(vec4<f32>(NEG), vec4<f32>(NEG));
    var l = Rows(vec4<f32>(0.0), vec4<f32>(0.0));
    var acc = acc_zero();
    let keys = min(p.t, r0 + BR);
    for (var c0 = 0u; c0 < keys; c0 += BC) {
        let s = mask(tile_scale(scores(SRC_Q, h, SRC_K, g, b, r0, c0, lid), p.scale), i0, c0 + j_lane, false);
        let mx = rows_max(tile_max(s), lid);
        let m_new = Rows(max(m.lo, mx.lo), max(m.hi, mx.hi));
        let corr = Rows(exp(m.lo - m_new.lo), exp(m.hi - m_new.hi));
        let e = exp_rows(s, m_new);
        let es = tile_sum(e);
        l = Rows(fma(l.lo, corr.lo, es.lo), fma(l.hi, corr.hi, es.hi));
        m = m_new;
        put_p(e, lid);
        acc = acc_product(acc_scale(acc, corr), SRC_V, g, b, c0, lid);
    }
    l = rows_sum(l, lid);
    store_out(acc_scale(acc, Rows(1.0 / l.lo, 1.0 / l.hi)), 1.0, b, h, r0, lid);
    if (lid % TC == 0u) {
        for (var i = 0u; i < 4u; i++) {
            if (i0 + i < p.t) {
                lse_out[z * p.t + i0 + i] = m.lo[i] + log(l.lo[i]);
            }
            if (i0 + 4u + i < p.t) {
                lse_out[z * p.t + i0 + 4u + i] = m.hi[i] + log(l.hi[i]);
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
    let i0 = r0 + 8u * (lid / TC);
    let j_lane = 4u * tx;
    // delta over this thread's 8 columns of its 8 rows, then across the row
    var dsum = array<f32, 8>();
    for (var i = 0u; i < 8u; i++) {
        let t = i0 + i;
        if (t < p.t) {
            let row = (b * p.t + t) * p.nh * p.hd + h * p.hd;
            var x = 0.0;
            for (var c = 0u; c < 2u; c++) {
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
    let dl = rows_sum(Rows(vec4<f32>(dsum[0], dsum[1], dsum[2], dsum[3]), vec4<f32>(dsum[4], dsum[5], dsum[6], dsum[7])), lid);
    if (tx == 0u) {
        for (var i = 0u; i < 4u; i++) {
            if (i0 + i < p.t) {
                delta_out[z * p.t + i0 + i] = dl.lo[i];
            }
            if (i0 + 4u + i < p.t) {
                delta_out[z * p.t + i0 + 4u + i] = dl.hi[i];
            }
        }
    }
    let lrow = Rows(lse4(z, i0), lse4(z, i0 + 4u));
    var acc = acc_zero();
    let keys = min(p.t, r0 + BR);
    for (var c0 = 0u; c0 < keys; c0 += BC) {
        let s = mask(tile_scale(scores(SRC_Q, h, SRC_K, g, b, r0, c0, lid), p.scale), i0, c0 + j_lane, false);
        let dp = scores(SRC_DOUT, h, SRC_V, g, b, r0, c0, lid);
        put_p(ds_rows(exp_rows(s, lrow), dp, dl), lid);
        acc = acc_product(acc, SRC_K, g, b, c0, lid);
    }
    store_dq(acc, p.scale, b, h, r0, lid);
}

// Backward, pass 2: dk and dv. One workgroup per (b, key/value head g, tile of BR keys); rows
// are keys, columns queries. For each query head of the group in order, over query blocks from
// the diagonal on: Pᵀ = exp(scale·k·qᵀ - lse), dv += Pᵀ·dout, dPᵀ = v·doutᵀ,
// dSᵀ = Pᵀ ∘ (dPᵀ - delta), dk += dSᵀ·q; dk *= scale (by the stores). Two entry points
// differ only in where they store: dk and dv in buffers of their own, or in one.
struct KeyGrads {
    dk: Acc,
    dv: Acc,
}

// Sequence, kv head and first key of workgroup `id`.
fn key_tile(id: u32) -> vec3<u32> {
    let zk = id / p.blocks; // b·nkv + g
    return vec3<u32>(zk / p.nkv, zk % p.nkv, (id % p.blocks) * BR);
}

fn key_grads(id: u32, lid: u32) -> KeyGrads {
    let kt = key_tile(id);
    let b = kt.x;
    let g = kt.y;
    let r0 = kt.z;
    let group = p.nh / p.nkv;
    let i0 = r0 + 8u * (lid / TC);
    let j_lane = 4u * (lid % TC);
    var acc_k = acc_zero();
    var acc_v = acc_zero();
    for (var hh = 0u; hh < group; hh++) {
        let h = g * group + hh;
        let z = b * p.nh + h;
        for (var c0 = (r0 / BC) * BC; c0 < p.t; c0 += BC) {
            let s = mask(tile_scale(scores(SRC_K, g, SRC_Q, h, b, r0, c0, lid), p.scale), i0, c0 + j_lane, true);
            let pm = exp_cols(s, lse4(z, c0 + j_lane));
            put_p(pm, lid);
            acc_v = acc_product(acc_v, SRC_DOUT, h, b, c0, lid);
            let dp = scores(SRC_V, g, SRC_DOUT, h, b, r0, c0, lid);
            put_p(ds_cols(pm, dp, delta4(z, c0 + j_lane)), lid);
            acc_k = acc_product(acc_k, SRC_Q, h, b, c0, lid);
        }
    }
    return KeyGrads(acc_k, acc_v);
}

@compute @workgroup_size(TWG)
fn backward_dkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.total) {
        return;
    }
    let r = key_grads(id, lid);
    let kt = key_tile(id);
    store_dk(r.dk, p.scale, kt.x, kt.y, kt.z, lid);
    store_dv(r.dv, 1.0, kt.x, kt.y, kt.z, lid);
}

@compute @workgroup_size(TWG)
fn backward_dkv_shared(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.total) {
        return;
    }
    let r = key_grads(id, lid);
    let kt = key_tile(id);
    store_dkv(r.dk, p.scale, p.dk_off, p.dk_ld, kt.x, kt.y, kt.z, lid);
    store_dkv(r.dv, 1.0, p.dv_off, p.dv_ld, kt.x, kt.y, kt.z, lid);
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
        stage[d / 4u][d % 4u] = q[qcol + d];
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
                dot4 += stage[d / 4u]
                    * vec4<f32>(k_cache[kb + d], k_cache[kb + d + 1u], k_cache[kb + d + 2u], k_cache[kb + d + 3u]);
            }
            var dot = (dot4.x + dot4.y) + (dot4.z + dot4.w);
            for (var d = hd4; d < hd; d++) {
                dot += stage[d / 4u][d % 4u] * k_cache[kb + d];
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
