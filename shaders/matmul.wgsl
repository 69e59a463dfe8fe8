// Batched, strided matmul: C = alpha * op(A) · op(B) + beta * C (+ bias[n] per row).
//
// Tiles: an 8x8 workgroup computes a 64x64 block of C, each thread an 8x8 block held
// in sixteen vec4 registers (rows ty*4.. and 32+ty*4.., columns tx*4.. and 32+tx*4..);
// K advances in steps of 16 through two shared tiles stored k-major as vec4s
// (As[k][m/4], Bs[k][n/4]), so per k the inner product reads two vec4s of A and two
// of B and does 64 fused multiply-adds with them.
//
// Layout and tile sizes are template placeholders that src/kernels/matmul.rs fills (it owns
// the values): TA = A stored [k, m]; TB = B stored [n, k]; BM x BN = the tile of C, BK = its
// K step. The thread layout below is written for BM = BN = 64, BK = 16. Any m, n, k (odd, 1) is handled:
// loads outside the matrix read 0 and stores outside it are skipped.
//
// Workgroups: one per (batch, tile row, tile column), linear id wid.x + wid.y * nwg.x
// over a 2D grid (so more than 65535 of them work); tile column varies fastest.
//
// Causal modes (p.causal, for attention's triangular matrices; 0 = none):
// 1: C is only needed on and below the diagonal (col <= row): tiles wholly above it
//    are skipped and their elements left as they were.
// 2: op(A)[row, kk] is zero for kk > row: the k loop stops after the tile's last row.
// 3: op(A)[row, kk] is zero for kk < row: the k loop starts at the tile's first row.

const TA: bool = {{TA}};
const TB: bool = {{TB}};

const BM: u32 = {{BM}}u;
const BN: u32 = {{BN}}u;
const BK: u32 = {{BK}}u;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    batch_inner: u32,
    a_so: u32,
    a_si: u32,
    b_so: u32,
    b_si: u32,
    c_so: u32,
    c_si: u32,
    tiles_n: u32,
    tiles_mn: u32,
    total: u32,
    has_bias: u32,
    causal: u32,
    alpha: f32,
    beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

var<workgroup> As: array<vec4<f32>, BK * BM / 4u>; // [BK][BM / 4]
var<workgroup> Bs: array<vec4<f32>, BK * BN / 4u>; // [BK][BN / 4]

// A[row, col] of op(A) (row < m, col = k index), 0 outside.
fn load_a(base: u32, row: u32, kk: u32) -> f32 {
    if (row < p.m && kk < p.k) {
        if (TA) {
            return a[base + kk * p.lda + row];
        }
        return a[base + row * p.lda + kk];
    }
    return 0.0;
}

// op(B)[kk, col] (col < n), 0 outside.
fn load_b(base: u32, kk: u32, col: u32) -> f32 {
    if (col < p.n && kk < p.k) {
        if (TB) {
            return b[base + col * p.ldb + kk];
        }
        return b[base + kk * p.ldb + col];
    }
    return 0.0;
}

// C[row, col] = alpha * v + beta * C[row, col] (+ bias[col]), inside the matrix only.
fn store1(idx: u32, col: u32, v: f32) {
    var x = p.alpha * v;
    if (p.beta != 0.0) {
        x += p.beta * c[idx];
    }
    if (p.has_bias != 0u) {
        x += bias[col];
    }
    c[idx] = x;
}

fn store4(base: u32, row: u32, col: u32, v: vec4<f32>) {
    if (row >= p.m) {
        return;
    }
    let r = base + row * p.ldc + col;
    if (col + 3u < p.n) {
        store1(r, col, v.x);
        store1(r + 1u, col + 1u, v.y);
        store1(r + 2u, col + 2u, v.z);
        store1(r + 3u, col + 3u, v.w);
        return;
    }
    if (col < p.n) { store1(r, col, v.x); }
    if (col + 1u < p.n) { store1(r + 1u, col + 1u, v.y); }
    if (col + 2u < p.n) { store1(r + 2u, col + 2u, v.z); }
}

@compute @workgroup_size(8, 8)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid3: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.total) {
        return;
    }
    let z = id / p.tiles_mn;
    let t = id % p.tiles_mn;
    let m0 = (t / p.tiles_n) * BM;
    let n0 = (t % p.tiles_n) * BN;
    var k_begin = 0u;
    var k_end = p.k;
    if (p.causal == 1u && n0 >= m0 + BM) {
        return;
    }
    if (p.causal == 2u) {
        k_end = min(p.k, m0 + BM);
    }
    if (p.causal == 3u) {
        k_begin = min(p.k, (m0 / BK) * BK);
    }
    let outer = z / p.batch_inner;
    let inner = z % p.batch_inner;
    let a_base = p.a_off + outer * p.a_so + inner * p.a_si;
    let b_base = p.b_off + outer * p.b_so + inner * p.b_si;
    let c_base = p.c_off + outer * p.c_so + inner * p.c_si;

    let tx = lid3.x; // columns n0 + tx*4 .. +3 and n0 + 32 + tx*4 .. +3
    let ty = lid3.y; // rows m0 + ty*4 .. +3 and m0 + 32 + ty*4 .. +3

    // c<i><j>: row i of this thread's 8 (0-3 low half, 4-7 high half), column half j.
    var c00 = vec4<f32>(0.0); var c01 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0); var c21 = vec4<f32>(0.0);
    var c30 = vec4<f32>(0.0); var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0); var c41 = vec4<f32>(0.0);
    var c50 = vec4<f32>(0.0); var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0); var c61 = vec4<f32>(0.0);
    var c70 = vec4<f32>(0.0); var c71 = vec4<f32>(0.0);

    for (var k0 = k_begin; k0 < k_end; k0 += BK) {
        // Each tile is 256 vec4 slots; each of the 64 threads fills 4.
        for (var r = 0u; r < 4u; r++) {
            let slot = lid + r * 64u;
            // A tile (BM x BK) into As[kk][row / 4][row % 4].
            if (TA) {
                // stored [k, m]: 16 threads read 64 consecutive m of one k.
                let kk = slot / 16u;
                let row = m0 + (slot % 16u) * 4u;
                As[slot] = vec4<f32>(load_a(a_base, row, k0 + kk), load_a(a_base, row + 1u, k0 + kk),
                                     load_a(a_base, row + 2u, k0 + kk), load_a(a_base, row + 3u, k0 + kk));
            } else {
                // stored [m, k]: 4 threads read 16 consecutive k of one row.
                let row = slot / 4u;
                let kq = (slot % 4u) * 4u;
                let s = row / 4u;
                let q = row % 4u;
                As[(kq + 0u) * 16u + s][q] = load_a(a_base, m0 + row, k0 + kq);
                As[(kq + 1u) * 16u + s][q] = load_a(a_base, m0 + row, k0 + kq + 1u);
                As[(kq + 2u) * 16u + s][q] = load_a(a_base, m0 + row, k0 + kq + 2u);
                As[(kq + 3u) * 16u + s][q] = load_a(a_base, m0 + row, k0 + kq + 3u);
            }
            // B tile (BK x BN) into Bs[kk][col / 4][col % 4].
            if (TB) {
                // stored [n, k]: 4 threads read 16 consecutive k of one column.
                let col = slot / 4u;
                let kq = (slot % 4u) * 4u;
                let s = col / 4u;
                let q = col % 4u;
                Bs[(kq + 0u) * 16u + s][q] = load_b(b_base, k0 + kq, n0 + col);
                Bs[(kq + 1u) * 16u + s][q] = load_b(b_base, k0 + kq + 1u, n0 + col);
                Bs[(kq + 2u) * 16u + s][q] = load_b(b_base, k0 + kq + 2u, n0 + col);
                Bs[(kq + 3u) * 16u + s][q] = load_b(b_base, k0 + kq + 3u, n0 + col);
            } else {
                // stored [k, n]: 16 threads read 64 consecutive n of one k.
                let kk = slot / 16u;
                let col = n0 + (slot % 16u) * 4u;
                Bs[slot] = vec4<f32>(load_b(b_base, k0 + kk, col), load_b(b_base, k0 + kk, col + 1u),
                                     load_b(b_base, k0 + kk, col + 2u), load_b(b_base, k0 + kk, col + 3u));
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let a0 = As[kk * 16u + ty];
            let a1 = As[kk * 16u + ty + 8u];
            let b0 = Bs[kk * 16u + tx];
            let b1 = Bs[kk * 16u + tx + 8u];
            c00 = fma(vec4<f32>(a0.x), b0, c00); c01 = fma(vec4<f32>(a0.x), b1, c01);
            c10 = fma(vec4<f32>(a0.y), b0, c10); c11 = fma(vec4<f32>(a0.y), b1, c11);
            c20 = fma(vec4<f32>(a0.z), b0, c20); c21 = fma(vec4<f32>(a0.z), b1, c21);
            c30 = fma(vec4<f32>(a0.w), b0, c30); c31 = fma(vec4<f32>(a0.w), b1, c31);
            c40 = fma(vec4<f32>(a1.x), b0, c40); c41 = fma(vec4<f32>(a1.x), b1, c41);
            c50 = fma(vec4<f32>(a1.y), b0, c50); c51 = fma(vec4<f32>(a1.y), b1, c51);
            c60 = fma(vec4<f32>(a1.z), b0, c60); c61 = fma(vec4<f32>(a1.z), b1, c61);
            c70 = fma(vec4<f32>(a1.w), b0, c70); c71 = fma(vec4<f32>(a1.w), b1, c71);
        }
        workgroupBarrier();
    }

    let r0 = m0 + ty * 4u;
    let r1 = r0 + 32u;
    let col0 = n0 + tx * 4u;
    let col1 = col0 + 32u;
    store4(c_base, r0, col0, c00); store4(c_base, r0, col1, c01);
    store4(c_base, r0 + 1u, col0, c10); store4(c_base, r0 + 1u, col1, c11);
    store4(c_base, r0 + 2u, col0, c20); store4(c_base, r0 + 2u, col1, c21);
    store4(c_base, r0 + 3u, col0, c30); store4(c_base, r0 + 3u, col1, c31);
    store4(c_base, r1, col0, c40); store4(c_base, r1, col1, c41);
    store4(c_base, r1 + 1u, col0, c50); store4(c_base, r1 + 1u, col1, c51);
    store4(c_base, r1 + 2u, col0, c60); store4(c_base, r1 + 2u, col1, c61);
    store4(c_base, r1 + 3u, col0, c70); store4(c_base, r1 + 3u, col1, c71);
}
