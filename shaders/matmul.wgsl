{{ENABLE}}
// Batched, strided matmul: C = alpha * op(A) · op(B) + beta * C (+ bias[n] per row), and
// optionally D = gelu_new(C) of the same values (the GELU epilogue).
//
// One template, many kernels: src/kernels/matmul.rs owns every value below and generates
// the unrolled parts (BODY, SHARED below) for one tile configuration:
// - a WX x WY workgroup computes a BM x BN block of C (BM = TM * WY, BN = TN * WX); each
//   thread holds TM x TN results in vec4 registers;
// - staged tiles (for GPUs) copy BK-deep slices of A and B into workgroup memory, k-major as
//   vec4s, and each thread reads its operands there; direct tiles (no workgroup memory, no
//   barriers: what a CPU adapter such as lavapipe runs best) read A and B straight from the
//   buffers, with row and column indices clamped into the matrix so no load needs a branch.
// The workgroup's x dimension (which CPU drivers such as lavapipe run as SIMD lanes) runs
// along n, or along m for narrow products (LANES_M).
// Every configuration computes each element of C the same way: acc = 0, then
// acc = fma(op(A)[i, kk], op(B)[kk, j], acc) for kk = 0, 1, .., k-1 in order (a staged tile
// also adds exact zeros past k, which leave acc unchanged), then the epilogue below. So all
// configurations give bit-identical results and the autotuner's choice never changes a run.
//
// TA = A stored [k, m]; TB = B stored [n, k]. Any m, n, k (odd, 1) is handled: loads outside
// the matrix are clamped or read 0 and stores outside it are skipped.
//
// Workgroups: one per (batch, tile row, tile column), linear id wid.x + wid.y * nwg.x
// over a 2D grid (so more than 65535 of them work); tile column varies fastest.

const TA: bool = {{TA}};
const TB: bool = {{TB}};

const WX: u32 = {{WX}}u;
const WY: u32 = {{WY}}u;
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
    alpha: f32,
    beta: f32,
    d_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// A and B are bound as array<f32>, or as array<vec4<f32>> (a4, b4) when the host has checked
// that every vec4 the kernel loads is aligned (VA, VB); a_at / b_at read one element either way
// (a4_at / b4_at one vec4). Either may be stored as f16 (frozen base weights, ENABLE = "enable
// f16;"): loads convert to f32, so products and accumulation stay f32.
{{A_DECL}}
{{B_DECL}}
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
// The GELU epilogue's output D (binding 5), declared only in its variants: browsers refuse a
// dispatch that binds one buffer to two writable bindings, so the others have no binding 5.
{{D_DECL}}

{{SHARED}}

// op(A)[row, kk], 0 outside the matrix (staged tiles).
fn load_a(base: u32, row: u32, kk: u32) -> f32 {
    if (row < p.m && kk < p.k) {
        if (TA) {
            return a_at(base + kk * p.lda + row);
        }
        return a_at(base + row * p.lda + kk);
    }
    return 0.0;
}

// op(B)[kk, col], 0 outside the matrix (staged tiles).
fn load_b(base: u32, kk: u32, col: u32) -> f32 {
    if (col < p.n && kk < p.k) {
        if (TB) {
            return b_at(base + col * p.ldb + kk);
        }
        return b_at(base + kk * p.ldb + col);
    }
    return 0.0;
}

// HF gelu_new, as shaders/gelu.wgsl computes it.
fn gelu(v: f32) -> f32 {
    let u = clamp(0.7978845608028654 * (v + 0.044715 * v * v * v), -15.0, 15.0);
    return 0.5 * v * (1.0 + tanh(u));
}

// C[row, col] = alpha * v + beta * C[row, col] (+ bias[col]) (D[row, col] = gelu of it).
fn store1(idx: u32, col: u32, v: f32) {
    var x = p.alpha * v;
    if (p.beta != 0.0) {
        x += p.beta * c[idx];
    }
    if (p.has_bias != 0u) {
        x += bias[col];
    }
    c[idx] = x;
    {{D_STORE}}
}

// Columns col..col+3 of one row, inside the matrix only.
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

@compute @workgroup_size({{WG}})
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
    let tx = {{TX}}; // thread along n
    let ty = {{TY}}; // thread along m

{{BODY}}
}
