// Batched, strided matmul: C = alpha * op(A) · op(B) + beta * C (+ bias[n] per row).
//
// Tiles: a 16x16 workgroup computes a 64x64 block of C, each thread a 4x4 block held
// in four vec4 registers; K advances in steps of 16 through two shared tiles stored
// k-major as vec4s (As[k][m/4], Bs[k][n/4]), so the inner product reads one vec4 of A
// and one of B per k and does 16 fused multiply-adds with them.
//
// Layout comes from the two template constants below (src/kernels/matmul.rs rewrites
// them): TA = A stored [k, m]; TB = B stored [n, k]. Any m, n, k (odd, 1) is handled:
// loads outside the matrix read 0 and stores outside it are skipped.
//
// Workgroups: one per (batch, tile row, tile column), linear id wid.x + wid.y * nwg.x
// over a 2D grid (so more than 65535 of them work); tile column varies fastest.

const TA: bool = false;
const TB: bool = false;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

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
    alpha: f32,
    beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

var<workgroup> As: array<vec4<f32>, 256>; // [BK][BM / 4]
var<workgroup> Bs: array<vec4<f32>, 256>; // [BK][BN / 4]

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

fn store_row(base: u32, row: u32, col0: u32, v: vec4<f32>) {
    if (row >= p.m) {
        return;
    }
    let r = base + row * p.ldc;
    for (var j = 0u; j < 4u; j++) {
        let col = col0 + j;
        if (col < p.n) {
            var x = p.alpha * v[j];
            if (p.beta != 0.0) {
                x += p.beta * c[r + col];
            }
            if (p.has_bias != 0u) {
                x += bias[col];
            }
            c[r + col] = x;
        }
    }
}

@compute @workgroup_size(16, 16)
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
    let outer = z / p.batch_inner;
    let inner = z % p.batch_inner;
    let a_base = p.a_off + outer * p.a_so + inner * p.a_si;
    let b_base = p.b_off + outer * p.b_so + inner * p.b_si;
    let c_base = p.c_off + outer * p.c_so + inner * p.c_si;

    let tx = lid3.x; // column group: n0 + tx * 4 ..
    let ty = lid3.y; // row group: m0 + ty * 4 ..

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        // A tile (BM x BK) into As[kk][row / 4][row % 4].
        if (TA) {
            // stored [k, m]: 16 threads read 64 consecutive m of one k.
            let kk = lid / 16u;
            let r = m0 + (lid % 16u) * 4u;
            As[kk * 16u + lid % 16u] = vec4<f32>(load_a(a_base, r, k0 + kk), load_a(a_base, r + 1u, k0 + kk),
                                                 load_a(a_base, r + 2u, k0 + kk), load_a(a_base, r + 3u, k0 + kk));
        } else {
            // stored [m, k]: 4 threads read 16 consecutive k of one row.
            let row = lid / 4u;
            let kq = (lid % 4u) * 4u;
            let r = m0 + row;
            let s = row / 4u;
            let q = row % 4u;
            As[(kq + 0u) * 16u + s][q] = load_a(a_base, r, k0 + kq);
            As[(kq + 1u) * 16u + s][q] = load_a(a_base, r, k0 + kq + 1u);
            As[(kq + 2u) * 16u + s][q] = load_a(a_base, r, k0 + kq + 2u);
            As[(kq + 3u) * 16u + s][q] = load_a(a_base, r, k0 + kq + 3u);
        }
        // B tile (BK x BN) into Bs[kk][col / 4][col % 4].
        if (TB) {
            // stored [n, k]: 4 threads read 16 consecutive k of one column.
            let col = lid / 4u;
            let kq = (lid % 4u) * 4u;
            let cc = n0 + col;
            let s = col / 4u;
            let q = col % 4u;
            Bs[(kq + 0u) * 16u + s][q] = load_b(b_base, k0 + kq, cc);
            Bs[(kq + 1u) * 16u + s][q] = load_b(b_base, k0 + kq + 1u, cc);
            Bs[(kq + 2u) * 16u + s][q] = load_b(b_base, k0 + kq + 2u, cc);
            Bs[(kq + 3u) * 16u + s][q] = load_b(b_base, k0 + kq + 3u, cc);
        } else {
            // stored [k, n]: 16 threads read 64 consecutive n of one k.
            let kk = lid / 16u;
            let cc = n0 + (lid % 16u) * 4u;
            Bs[kk * 16u + lid % 16u] = vec4<f32>(load_b(b_base, k0 + kk, cc), load_b(b_base, k0 + kk, cc + 1u),
                                                 load_b(b_base, k0 + kk, cc + 2u), load_b(b_base, k0 + kk, cc + 3u));
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let av = As[kk * 16u + ty];
            let bv = Bs[kk * 16u + tx];
            acc0 = fma(vec4<f32>(av.x), bv, acc0);
            acc1 = fma(vec4<f32>(av.y), bv, acc1);
            acc2 = fma(vec4<f32>(av.z), bv, acc2);
            acc3 = fma(vec4<f32>(av.w), bv, acc3);
        }
        workgroupBarrier();
    }

    let row = m0 + ty * 4u;
    let col = n0 + tx * 4u;
    store_row(c_base, row, col, acc0);
    store_row(c_base, row + 1u, col, acc1);
    store_row(c_base, row + 2u, col, acc2);
    store_row(c_base, row + 3u, col, acc3);
}
