//! shaders/matmul.wgsl against `reference::ops::matmul`: every layout on odd shapes,
//! alpha/beta, bias, batched strided products like attention's, and a batch big
//! enough to need a 2D grid. Elements of C outside the product must stay untouched.
//! Tolerance: rtol 1e-4, atol 1e-5·√k (the typical magnitude of a k-term sum of
//! products of values in [-1, 1)).
mod common;
use common::*;
use webtune::gpu::{Gpu, Program};
use webtune::kernels::matmul::{matmul, Matmul};
use webtune::reference::ops;

/// Copies the op-matrix of batch z out of a strided buffer as a packed row-major
/// [rows, cols] matrix (as stored, i.e. before any transpose).
fn gather(buf: &[f32], off: usize, ld: usize, rows: usize, cols: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        out.extend_from_slice(&buf[off + r * ld..off + r * ld + cols]);
    }
    out
}

fn batch_off(off: usize, st: (usize, usize), z: usize, inner: usize) -> usize {
    off + (z / inner) * st.0 + (z % inner) * st.1
}

/// Expected C buffer after the product, from the reference on each batch.
fn expected(s: &Matmul, a: &[f32], b: &[f32], c0: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let mut c = c0.to_vec();
    let inner = s.batch_inner.max(1);
    let (ar, ac) = if s.ta { (s.k, s.m) } else { (s.m, s.k) };
    let (br, bc) = if s.tb { (s.n, s.k) } else { (s.k, s.n) };
    for z in 0..s.batch {
        let am = gather(a, batch_off(s.a_offset, s.a_stride, z, inner), s.lda, ar, ac);
        let bm = gather(b, batch_off(s.b_offset, s.b_stride, z, inner), s.ldb, br, bc);
        let prod = ops::matmul(&am, &bm, s.m, s.n, s.k, s.ta, s.tb);
        let co = batch_off(s.c_offset, s.c_stride, z, inner);
        for i in 0..s.m {
            for j in 0..s.n {
                let idx = co + i * s.ldc + j;
                let mut v = s.alpha as f64 * prod[i * s.n + j] as f64 + s.beta as f64 * c0[idx] as f64;
                if let Some(bias) = bias {
                    v += bias[j] as f64;
                }
                c[idx] = v as f32;
            }
        }
    }
    c
}

/// Runs `s` on random buffers of the given lengths and compares the whole C buffer.
fn check(gpu: &Gpu, what: &str, s: &Matmul, lens: (usize, usize, usize), with_bias: bool, seed: u64) {
    let a = rand_vec(lens.0, seed);
    let b = rand_vec(lens.1, seed + 1);
    let c0 = rand_vec(lens.2, seed + 2);
    let bias = with_bias.then(|| rand_vec(s.n, seed + 3));
    let ta = gpu.upload("a", &[lens.0], &a).unwrap();
    let tb = gpu.upload("b", &[lens.1], &b).unwrap();
    let tc = gpu.upload("c", &[lens.2], &c0).unwrap();
    let tbias = bias.as_ref().map(|v| gpu.upload("bias", &[v.len()], v).unwrap());
    let mut prog = Program::new();
    matmul(gpu, &mut prog, s, &ta, &tb, &tc, tbias.as_ref());
    prog.run(gpu);
    let got = gpu.read_blocking(&tc).unwrap();
    let want = expected(s, &a, &b, &c0, bias.as_deref());
    let atol = 1e-5 * (s.k.max(1) as f32).sqrt() * s.alpha.abs().max(1.0);
    assert_close(what, &got, &want, 1e-4, atol);
}

/// Packed single product: buffers exactly the size of A, B, C.
fn check_packed(gpu: &Gpu, s: &Matmul, with_bias: bool, seed: u64) {
    let what = format!(
        "m{} n{} k{} ta{} tb{} alpha{} beta{} bias{}",
        s.m, s.n, s.k, s.ta, s.tb, s.alpha, s.beta, with_bias
    );
    check(gpu, &what, s, (s.m * s.k, s.k * s.n, s.m * s.n), with_bias, seed);
}

const SHAPES: [(usize, usize, usize); 6] = [
    (1, 1, 1),
    (3, 5, 7),
    (33, 65, 17),
    (97, 48, 144),
    (130, 70, 129),
    (64, 64, 16),
];

#[test]
fn matmul_nn_matches_reference() {
    let gpu = gpu();
    for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
        check_packed(&gpu, &Matmul::new(m, n, k), false, 10 + i as u64);
    }
}

#[test]
fn matmul_nt_matches_reference() {
    let gpu = gpu();
    for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
        check_packed(&gpu, &Matmul::new(m, n, k).tb(), false, 20 + i as u64);
    }
}

#[test]
fn matmul_tn_matches_reference() {
    let gpu = gpu();
    for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
        check_packed(&gpu, &Matmul::new(m, n, k).ta(), false, 30 + i as u64);
    }
}

#[test]
fn matmul_alpha_beta_and_bias() {
    let gpu = gpu();
    // alpha scales, beta 1 accumulates into random C, bias adds per column.
    check_packed(&gpu, &Matmul::new(33, 65, 17).tb().alpha(0.37).accumulate(), false, 40);
    check_packed(&gpu, &Matmul::new(65, 33, 70).ta().accumulate(), false, 41);
    check_packed(&gpu, &Matmul::new(97, 48, 144), true, 42);
    check_packed(&gpu, &Matmul::new(7, 130, 3).tb().alpha(-2.0).accumulate(), true, 43);
    check_packed(&gpu, &Matmul::new(1, 1, 1).alpha(0.5).accumulate(), true, 44);
    // k = 0: C = beta·C + bias, no product.
    check_packed(&gpu, &Matmul::new(5, 3, 0).accumulate(), true, 45);
    // beta 0 must overwrite without reading C: C starts as NaN.
    let s = Matmul::new(9, 11, 13);
    let a = gpu.upload("a", &[9 * 13], &rand_vec(9 * 13, 46)).unwrap();
    let b = gpu.upload("b", &[13 * 11], &rand_vec(13 * 11, 47)).unwrap();
    let c = gpu.upload("c", &[9 * 11], &vec![f32::NAN; 9 * 11]).unwrap();
    let mut prog = Program::new();
    matmul(&gpu, &mut prog, &s, &a, &b, &c, None);
    prog.run(&gpu);
    let got = gpu.read_blocking(&c).unwrap();
    let want = ops::matmul(&rand_vec(9 * 13, 46), &rand_vec(13 * 11, 47), 9, 11, 13, false, false);
    assert_close("beta 0 over NaN", &got, &want, 1e-4, 1e-5 * 13f32.sqrt());
}

#[test]
fn matmul_strided_submatrices() {
    let gpu = gpu();
    // Padded leading dimensions and offsets in every layout; C has untouched gaps.
    for (i, &(ta, tb)) in [(false, false), (false, true), (true, false)].iter().enumerate() {
        let (m, n, k) = (37, 70, 19);
        let mut s = Matmul::new(m, n, k);
        if ta {
            s = s.ta();
        }
        if tb {
            s = s.tb();
        }
        s.lda += 5;
        s.ldb += 3;
        s.ldc = n + 7;
        s.a_offset = 11;
        s.b_offset = 2;
        s.c_offset = 13;
        let a_rows = if ta { k } else { m };
        let b_rows = if tb { n } else { k };
        let lens = (
            s.a_offset + a_rows * s.lda,
            s.b_offset + b_rows * s.ldb,
            s.c_offset + m * s.ldc + 5,
        );
        check(&gpu, &format!("strided ta{ta} tb{tb}"), &s, lens, false, 50 + i as u64);
    }
}

/// The products causal attention makes: per (batch, head), strided views into
/// qkv [B, T, 3C], att [B, nh, T, T] and out [B, T, C].
#[test]
fn matmul_batched_attention_layouts() {
    let gpu = gpu();
    for (bsz, t, c, nh) in [(2usize, 7usize, 12usize, 3usize), (1, 65, 40, 5)] {
        let hd = c / nh;
        let qkv_len = bsz * t * 3 * c;
        let att_len = bsz * nh * t * t;
        let out_len = bsz * t * c;
        let qkv_st = (t * 3 * c, hd);
        let att_st = (nh * t * t, t * t);
        let out_st = (t * c, hd);
        let batched = |mut s: Matmul| {
            s.batch = bsz * nh;
            s.batch_inner = nh;
            s
        };
        // scores = Q · Kᵀ / √hd  (NT)
        let mut s = batched(Matmul::new(t, t, hd).tb().alpha(1.0 / (hd as f32).sqrt()));
        (s.lda, s.ldb, s.b_offset) = (3 * c, 3 * c, c);
        (s.a_stride, s.b_stride, s.c_stride) = (qkv_st, qkv_st, att_st);
        check_two(&gpu, "att = q kT", &s, qkv_len, qkv_len, att_len, 60);
        // out = att · V  (NN), written into out's head columns
        let mut s = batched(Matmul::new(t, hd, t));
        (s.ldb, s.b_offset, s.ldc) = (3 * c, 2 * c, c);
        (s.a_stride, s.b_stride, s.c_stride) = (att_st, qkv_st, out_st);
        check(&gpu, "out = att v", &s, (att_len, qkv_len, out_len), false, 61);
        // dV = attᵀ · dout  (TN), written into dqkv's V columns
        let mut s = batched(Matmul::new(t, hd, t).ta());
        (s.ldb, s.ldc, s.c_offset) = (c, 3 * c, 2 * c);
        (s.a_stride, s.b_stride, s.c_stride) = (att_st, out_st, qkv_st);
        check(&gpu, "dv = attT dout", &s, (att_len, out_len, qkv_len), false, 62);
    }
}

/// Like `check`, but A and B are the same buffer (as Q and K are both in qkv).
fn check_two(gpu: &Gpu, what: &str, s: &Matmul, a_len: usize, _b_len: usize, c_len: usize, seed: u64) {
    let a = rand_vec(a_len, seed);
    let c0 = rand_vec(c_len, seed + 2);
    let ta = gpu.upload("qkv", &[a_len], &a).unwrap();
    let tc = gpu.upload("c", &[c_len], &c0).unwrap();
    let mut prog = Program::new();
    matmul(gpu, &mut prog, s, &ta, &ta, &tc, None);
    prog.run(gpu);
    let got = gpu.read_blocking(&tc).unwrap();
    let want = expected(s, &a, &a, &c0, None);
    assert_close(what, &got, &want, 1e-4, 1e-5 * (s.k as f32).sqrt());
}

#[test]
fn matmul_batch_needs_2d_grid() {
    let gpu = gpu();
    // 65537 tiny products (one workgroup each): just over the 65535 of one grid dimension.
    let batch = 65537;
    let mut s = Matmul::new(1, 2, 3);
    s.batch = batch;
    s.batch_inner = 7;
    s.a_stride = (7 * 3, 3);
    s.b_stride = (0, 6); // B repeats across the outer index
    s.c_stride = (7 * 2, 2);
    check(&gpu, "2d grid", &s, (batch * 3, 7 * 6, batch * 2), false, 70);
}
