//! shaders/matmul.wgsl against `reference::ops::matmul`: every layout on odd shapes,
//! alpha/beta, bias, the GELU epilogue, batched strided products like attention's, and a batch
//! big enough to need a 2D grid. Elements of C outside the product must stay untouched.
//! Every tile any device may run gives bit-identical results on odd and vec4-aligned shapes
//! (so the autotuner's choice never changes a run), shapes reaching past a tensor are refused,
//! and the tuner's measured choice is kept in its cache file.
//! Tolerance: rtol 1e-4, atol 1e-5·√k (the typical magnitude of a k-term sum of
//! products of values in [-1, 1)).
mod common;
use common::*;
use webtune::gpu::{Gpu, Program, Tensor, Tuning};
use webtune::kernels::matmul::{all_tiles, matmul, matmul_gelu, push_with, tile_for, Class, Epilogue, Matmul, Tile};
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

/// Per-(batch, head) products as attention written with matmuls would make them: strided views into
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

fn layout(m: usize, n: usize, k: usize, ta: bool, tb: bool) -> Matmul {
    let s = Matmul::new(m, n, k);
    match (ta, tb) {
        (true, _) => s.ta(),
        (_, true) => s.tb(),
        _ => s,
    }
}

/// Runs `s` with `tile` on fresh copies of the buffers; returns the whole C buffer.
#[allow(clippy::too_many_arguments)]
fn run_tile(gpu: &Gpu, s: &Matmul, tile: Tile, a: &Tensor, b: &Tensor, c0: &[f32], bias: Option<&Tensor>) -> Vec<f32> {
    let c = gpu.upload("c", &[c0.len()], c0).unwrap();
    let mut prog = Program::new();
    push_with(gpu, &mut prog, s, a, b, &c, Epilogue { bias, gelu: None }, tile).unwrap();
    prog.run(gpu);
    let got = gpu.read_blocking(&c).unwrap();
    gpu.check().unwrap();
    got
}

fn same_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: element {i} is {} but the first tile gave {}", got[i], want[i]);
    }
}

/// Every tile (CPU table, GPU candidates), every layout, on an odd shape (scalar loads, clamped
/// edges), a vec4-aligned one (vec4 loads; m, n, k not multiples of any tile) and a one-row one:
/// the same bits, and those match the reference. Also per-(batch, head) strided views into one
/// buffer.
#[test]
fn every_tile_gives_identical_bits() {
    let gpu = gpu();
    let tiles = all_tiles();
    assert!(tiles.len() >= 8, "{tiles:?}");
    for (li, &(ta, tb)) in [(false, false), (false, true), (true, false)].iter().enumerate() {
        for (si, &(m, n, k, bias)) in [(37usize, 45usize, 29usize, true), (36, 44, 28, false), (1, 21, 13, true)].iter().enumerate() {
            let seed = 100 + 10 * li as u64 + si as u64;
            let s = layout(m, n, k, ta, tb).alpha(0.75).accumulate();
            let (av, bv, c0) = (rand_vec(m * k, seed), rand_vec(k * n, seed + 1), rand_vec(m * n, seed + 2));
            let biasv = rand_vec(n, seed + 3);
            let (a, b) = (gpu.upload("a", &[m * k], &av).unwrap(), gpu.upload("b", &[k * n], &bv).unwrap());
            let tbias = gpu.upload("bias", &[n], &biasv).unwrap();
            let bias = bias.then_some(&tbias);
            let want = expected(&s, &av, &bv, &c0, bias.map(|_| &biasv[..]));
            let first = run_tile(&gpu, &s, tiles[0], &a, &b, &c0, bias);
            assert_close(&format!("{m}x{n}x{k} ta{ta} tb{tb}"), &first, &want, 1e-4, 1e-5 * (k as f32).sqrt());
            for &tile in &tiles[1..] {
                let got = run_tile(&gpu, &s, tile, &a, &b, &c0, bias);
                same_bits(&format!("{} {m}x{n}x{k} ta{ta} tb{tb}", tile.name()), &got, &first);
            }
        }
    }
    // Strided products over (batch, head) as a packed-qkv layout makes them: T = 20 (no tile's
    // multiple), hd = 8, views with row strides and offsets into one buffer.
    let (bsz, t, nh, hd) = (2usize, 20usize, 2usize, 8usize);
    let c = nh * hd;
    let qkv = rand_vec(bsz * t * 3 * c, 7);
    let att = rand_vec(bsz * nh * t * t, 8);
    let tq = gpu.upload("qkv", &[qkv.len()], &qkv).unwrap();
    let ta_ = gpu.upload("att", &[att.len()], &att).unwrap();
    let per_head = |mut s: Matmul, a: (usize, usize), b: (usize, usize), cs: (usize, usize)| {
        (s.batch, s.batch_inner, s.a_stride, s.b_stride, s.c_stride) = (bsz * nh, nh, a, b, cs);
        s
    };
    let (qkv_s, att_s) = ((t * 3 * c, hd), (nh * t * t, t * t));
    // q · kᵀ, att · v, attᵀ · q, the last two into qkv-shaped buffers
    let mut s1 = per_head(Matmul::new(t, t, hd).tb(), qkv_s, qkv_s, att_s);
    (s1.lda, s1.ldb, s1.b_offset) = (3 * c, 3 * c, c);
    let mut s2 = per_head(Matmul::new(t, hd, t), att_s, qkv_s, qkv_s);
    (s2.ldb, s2.b_offset, s2.ldc) = (3 * c, 2 * c, 3 * c);
    let mut s3 = per_head(Matmul::new(t, hd, t).ta(), att_s, qkv_s, qkv_s);
    (s3.ldb, s3.ldc, s3.c_offset) = (3 * c, 3 * c, c);
    for (name, s, a, av, b, bv, len) in [
        ("q kT", s1, &tq, &qkv, &tq, &qkv, att.len()),
        ("att v", s2, &ta_, &att, &tq, &qkv, qkv.len()),
        ("attT q", s3, &ta_, &att, &tq, &qkv, qkv.len()),
    ] {
        let c0 = rand_vec(len, 9);
        let first = run_tile(&gpu, &s, tiles[0], a, b, &c0, None);
        let want = expected(&s, av, bv, &c0, None);
        assert_close(name, &first, &want, 1e-4, 1e-5 * (s.k as f32).sqrt());
        for &tile in &tiles[1..] {
            let got = run_tile(&gpu, &s, tile, a, b, &c0, None);
            same_bits(&format!("{name} {}", tile.name()), &got, &first);
        }
    }
}

/// D = gelu_new(C) alongside C = A·B + bias: C as without the epilogue (same bits), D against
/// the reference GELU of the reference product, on an odd and an aligned shape.
#[test]
fn gelu_epilogue_matches_reference() {
    let gpu = gpu();
    for (i, &(m, n, k)) in [(37usize, 45usize, 29usize), (32, 64, 16)].iter().enumerate() {
        let seed = 200 + 10 * i as u64;
        let (av, bv) = (rand_vec(m * k, seed), rand_vec(k * n, seed + 1));
        let biasv: Vec<f32> = rand_vec(n, seed + 2).iter().map(|x| 3.0 * x).collect();
        let a = gpu.upload("a", &[m * k], &av).unwrap();
        let b = gpu.upload("b", &[k * n], &bv).unwrap();
        let bias = gpu.upload("bias", &[n], &biasv).unwrap();
        let (c, c_plain) = (gpu.zeros("c", &[m * n]).unwrap(), gpu.zeros("c plain", &[m * n]).unwrap());
        let d = gpu.upload("d", &[m * n], &vec![7.0; m * n]).unwrap();
        let s = Matmul::new(m, n, k);
        let mut prog = Program::new();
        matmul_gelu(&gpu, &mut prog, &s, &a, &b, &c, Some(&bias), &d);
        matmul(&gpu, &mut prog, &s, &a, &b, &c_plain, Some(&bias));
        prog.run(&gpu);
        let (got_c, got_d) = (gpu.read_blocking(&c).unwrap(), gpu.read_blocking(&d).unwrap());
        gpu.check().unwrap();
        same_bits("C with the GELU epilogue", &got_c, &gpu.read_blocking(&c_plain).unwrap());
        let want_c = expected(&s, &av, &bv, &vec![0.0; m * n], Some(&biasv));
        assert_close("C", &got_c, &want_c, 1e-4, 1e-5 * (k as f32).sqrt());
        assert_close("D = gelu(C)", &got_d, &ops::gelu_forward(&got_c), 1e-5, 1e-6);
    }
}

/// A shape reaching past a tensor is refused before anything runs (the kernel has no runtime
/// bounds checks natively): push_with names the operand, matmul reports it through Gpu::check.
#[test]
fn out_of_bounds_shapes_are_refused() {
    let gpu = gpu();
    let a = gpu.zeros("a", &[6 * 5]).unwrap();
    let b = gpu.zeros("b", &[5 * 4]).unwrap();
    let c = gpu.zeros("c", &[6 * 4]).unwrap();
    let tile = tile_for(&gpu, &Matmul::new(6, 4, 5));
    let cases: [(Matmul, &str); 5] = [
        (Matmul::new(7, 4, 5), "A reaches past"),
        (Matmul { b_offset: 1, ..Matmul::new(6, 4, 5) }, "B reaches past"),
        (Matmul { ldc: 5, ..Matmul::new(6, 4, 5) }, "C reaches past"),
        (Matmul { batch: 2, a_stride: (30, 0), ..Matmul::new(6, 4, 5) }, "A reaches past"),
        (Matmul { ta: true, tb: true, ..Matmul::new(6, 4, 5) }, "not supported"),
    ];
    for (s, msg) in cases {
        let mut prog = Program::new();
        let e = push_with(&gpu, &mut prog, &s, &a, &b, &c, Epilogue::default(), tile).unwrap_err();
        assert!(e.contains(msg), "{s:?}: {e}");
        assert!(prog.is_empty());
    }
    let bias = gpu.zeros("short bias", &[3]).unwrap();
    let mut prog = Program::new();
    let e = push_with(&gpu, &mut prog, &Matmul::new(6, 4, 5), &a, &b, &c, Epilogue { bias: Some(&bias), gelu: None }, tile).unwrap_err();
    assert!(e.contains("bias 'short bias'"), "{e}");
    gpu.check().unwrap();
    matmul(&gpu, &mut prog, &Matmul::new(7, 4, 5), &a, &b, &c, None);
    assert!(prog.is_empty());
    let e = gpu.check().unwrap_err().to_string();
    assert!(e.contains("matmul 7x4x5") && e.contains("'a'"), "{e}");
}

/// With measuring on, the first product of a (layout, class) times the candidates and keeps the
/// winner in the cache file; a new device with that file uses it without measuring, and an
/// unreadable file is ignored.
#[test]
fn tuner_measures_once_and_caches_the_choice() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tune.json");
    let gpu = gpu();
    gpu.set_tune_file(Some(file.clone()));
    gpu.set_tuning(Tuning::Measure);
    let s = Matmul::new(40, 36, 24).tb();
    assert_eq!(Class::of(&s), Class::Small);
    let chosen = tile_for(&gpu, &s);
    assert_eq!(gpu.tuned("matmul:nt:Small"), Some(chosen.name()));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("matmul:nt:Small") && text.contains(&chosen.name()), "{text}");
    assert_eq!(tile_for(&gpu, &s), chosen);

    let again = common::gpu();
    again.set_tune_file(Some(file.clone()));
    assert_eq!(again.tuned("matmul:nt:Small"), Some(chosen.name()));
    std::fs::write(&file, "{ not json").unwrap();
    again.set_tune_file(Some(file));
    assert_eq!(again.tuned("matmul:nt:Small"), None);
}
