//! KV-cached decoding kernels against the CPU reference:
//! - `kv_store` + `attention_decode` (shaders/attention.wgsl) vs the last row of
//!   `reference::ops::attention_forward`, rtol 1e-4, atol 1e-5, on odd head dims, p = 0 and
//!   p > 0, key counts across the 64-key chunks, head dims past 64/128/192 (every output lane);
//! - `embedding_forward_at` (shaders/embedding.wgsl) vs `reference::ops::embedding_forward`
//!   rows at a position offset (exact).
//!
//! Cache rows past the query start as NaN, so reading beyond pos shows up.
mod common;
use common::*;
use webtune::gpu::Program;
use webtune::kernels::attention::{attention_decode, kv_store, AttentionDecode};
use webtune::kernels::embedding::embedding_forward_at;
use webtune::reference::ops;

/// (t = keys incl. the query, c, nh, max_len)
const SHAPES: [(usize, usize, usize, usize); 7] = [
    (1, 4, 1, 3),      // p = 0
    (1, 15, 3, 1),     // p = 0, hd 5, cache of one row
    (7, 15, 3, 9),     // hd 5
    (65, 21, 3, 80),   // hd 7, two chunks (64 + 1)
    (130, 10, 2, 131), // three chunks
    (5, 134, 2, 6),    // hd 67: second output lane
    (3, 201, 1, 4),    // hd 201: all four output lanes, the last one partly
];

#[test]
fn attention_decode_matches_reference_last_row() {
    let gpu = gpu();
    for (i, &(t, c, nh, max_len)) in SHAPES.iter().enumerate() {
        let what = format!("t{t} c{c} nh{nh} max_len{max_len}");
        let d = AttentionDecode { c, nh, max_len };
        let qkv: Vec<f32> = rand_vec(t * 3 * c, 300 + i as u64).iter().map(|v| 2.0 * v).collect();
        let (want, _) = ops::attention_forward(&qkv, 1, t, c, nh);
        let want_last = &want[(t - 1) * c..];

        let nan = vec![f32::NAN; max_len * c];
        let g_k = gpu.upload("k_cache", &[max_len, c], &nan).unwrap();
        let g_v = gpu.upload("v_cache", &[max_len, c], &nan).unwrap();
        let g_out = gpu.upload("out", &[c], &vec![f32::NAN; c]).unwrap();
        let g_pos = gpu.upload_u32("pos", &[1], &[0]).unwrap();
        // the earlier rows as a prefill would store them (rows 0..t-1 at pos 0)
        if t > 1 {
            let g_prefix = gpu
                .upload("qkv prefix", &[t - 1, 3 * c], &qkv[..(t - 1) * 3 * c])
                .unwrap();
            let mut prog = Program::new();
            kv_store(&gpu, &mut prog, &d, &g_prefix, t - 1, &g_pos, &g_k, &g_v);
            prog.run(&gpu);
        }
        // the query's step: store its k, v at pos = t - 1, then attend
        gpu.write_u32(&g_pos, &[(t - 1) as u32]);
        let g_row = gpu.upload("qkv row", &[1, 3 * c], &qkv[(t - 1) * 3 * c..]).unwrap();
        let mut prog = Program::new();
        kv_store(&gpu, &mut prog, &d, &g_row, 1, &g_pos, &g_k, &g_v);
        attention_decode(&gpu, &mut prog, &d, &g_row, &g_pos, &g_k, &g_v, &g_out);
        prog.run(&gpu);

        assert_close(
            &format!("{what} out"),
            &gpu.read_blocking(&g_out).unwrap(),
            want_last,
            1e-4,
            1e-5,
        );
        // caches: rows 0..t hold k and v exactly, the rest is untouched
        let (k, v) = (gpu.read_blocking(&g_k).unwrap(), gpu.read_blocking(&g_v).unwrap());
        for s in 0..max_len {
            for j in 0..c {
                let (gk, gv) = (k[s * c + j], v[s * c + j]);
                if s < t {
                    assert_eq!(gk, qkv[s * 3 * c + c + j], "{what} k_cache[{s}, {j}]");
                    assert_eq!(gv, qkv[s * 3 * c + 2 * c + j], "{what} v_cache[{s}, {j}]");
                } else {
                    assert!(gk.is_nan() && gv.is_nan(), "{what}: cache row {s} was written");
                }
            }
        }
    }
}

/// Rows stored past max_len are dropped, not written out of bounds.
#[test]
fn kv_store_drops_rows_past_the_cache() {
    let gpu = gpu();
    let (c, rows, max_len) = (6, 4, 5);
    let d = AttentionDecode { c, nh: 2, max_len };
    let qkv = rand_vec(rows * 3 * c, 9);
    let g_qkv = gpu.upload("qkv", &[rows, 3 * c], &qkv).unwrap();
    let g_k = gpu.upload("k", &[max_len, c], &vec![7.0; max_len * c]).unwrap();
    let g_v = gpu.upload("v", &[max_len, c], &vec![7.0; max_len * c]).unwrap();
    let g_pos = gpu.upload_u32("pos", &[1], &[3]).unwrap();
    let mut prog = Program::new();
    kv_store(&gpu, &mut prog, &d, &g_qkv, rows, &g_pos, &g_k, &g_v);
    prog.run(&gpu);
    let k = gpu.read_blocking(&g_k).unwrap();
    for s in 0..max_len {
        for j in 0..c {
            let want = if s >= 3 { qkv[(s - 3) * 3 * c + c + j] } else { 7.0 };
            assert_eq!(k[s * c + j], want, "k[{s}, {j}]");
        }
    }
    gpu.check().unwrap();
}

#[test]
fn embedding_forward_at_matches_reference_rows() {
    let gpu = gpu();
    for &(n, c, vocab, npos, at) in &[
        (1usize, 5usize, 11usize, 9usize, 0u32),
        (1, 5, 11, 9, 8),
        (3, 37, 13, 10, 4),
    ] {
        let wte = rand_vec(vocab * c, 1);
        let wpe = rand_vec(npos * c, 2);
        let tokens: Vec<u32> = (0..n as u32).map(|r| (r * 5 + 3) % vocab as u32).collect();
        let g_tok = gpu.upload_u32("tokens", &[n], &tokens).unwrap();
        let g_pos = gpu.upload_u32("pos", &[1], &[at]).unwrap();
        let g_wte = gpu.upload("wte", &[vocab, c], &wte).unwrap();
        let g_wpe = gpu.upload("wpe", &[npos, c], &wpe).unwrap();
        let g_x = gpu.upload("x", &[n, c], &vec![f32::NAN; n * c]).unwrap();
        let mut prog = Program::new();
        embedding_forward_at(&gpu, &mut prog, &g_tok, &g_pos, &g_wte, &g_wpe, &g_x, n, c);
        prog.run(&gpu);
        // the reference embeds positions 0..at+n; our rows are its last n
        let t = at as usize + n;
        let mut all_tokens = vec![0u32; at as usize];
        all_tokens.extend(&tokens);
        let want = ops::embedding_forward(&all_tokens, &wte, &wpe, 1, t, c);
        assert_eq!(
            gpu.read_blocking(&g_x).unwrap(),
            want[at as usize * c..],
            "n{n} c{c} at{at}"
        );
    }
}
