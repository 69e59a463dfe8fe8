//! KV-cached decoding kernels against the CPU reference:
//! - `kv_store` + `attention_decode` (shaders/attention.wgsl) vs the last row of
//!   `reference::attention::forward`, rtol 1e-4, atol 1e-5, on odd head dims, p = 0 and
//!   p > 0, key counts across the 64-key chunks, head dims past 64/128/192 up to 256 (every
//!   output lane), grouped-query heads (3 over 1, 4 over 2), with q, k, v as column views of
//!   one fused row [q | k | v] (GPT-2's packed qkv when nkv = nh);
//! - `embedding_forward_at` (shaders/embedding.wgsl) vs `reference::ops::embedding_forward`
//!   rows at a position offset (exact).
//!
//! Cache rows past the query start as NaN, so reading beyond pos shows up.
mod common;
use common::*;
use webtune::gpu::{Program, Tensor};
use webtune::kernels::attention::{attention_decode, kv_store, Attention, AttentionDecode};
use webtune::kernels::embedding::embedding_forward_at;
use webtune::kernels::View;
use webtune::reference::attention as reference;
use webtune::reference::ops;

/// (t = keys incl. the query, nh, nkv, hd, max_len)
const SHAPES: [(usize, usize, usize, usize, usize); 11] = [
    (1, 1, 1, 4, 3),      // p = 0
    (1, 3, 3, 5, 1),      // p = 0, hd 5, cache of one row
    (7, 3, 3, 5, 9),      // hd 5
    (65, 3, 3, 7, 80),    // hd 7, two chunks (64 + 1)
    (130, 2, 2, 5, 131),  // three chunks
    (5, 2, 2, 67, 6),     // hd 67: second output lane
    (3, 1, 1, 201, 4),    // hd 201: all four output lanes, the last one partly
    (9, 3, 1, 16, 12),    // 3 query heads over 1 kv head
    (70, 4, 2, 24, 70),   // 4 over 2, two chunks
    (4, 2, 1, 128, 5),    // Qwen3's head dim
    (6, 2, 1, 256, 6),    // the largest head dim
];

/// Splits fused rows [t, (nh + 2·nkv)·hd] into packed q [t, nh·hd], k and v [t, nkv·hd].
fn split(x: &[f32], t: usize, nh: usize, nkv: usize, hd: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (wq, wk) = (nh * hd, nkv * hd);
    let w = wq + 2 * wk;
    let cols = |from: usize, len: usize| (0..t).flat_map(|r| x[r * w + from..][..len].to_vec()).collect();
    (cols(0, wq), cols(wq, wk), cols(wq + wk, wk))
}

#[test]
fn attention_decode_matches_reference_last_row() {
    let gpu = gpu();
    for (i, &(t, nh, nkv, hd, max_len)) in SHAPES.iter().enumerate() {
        let what = format!("t{t} nh{nh} nkv{nkv} hd{hd} max_len{max_len}");
        let d = AttentionDecode { nkv, ..AttentionDecode::mha(nh * hd, nh, max_len) };
        let (wq, wk) = (nh * hd, nkv * hd);
        let w = wq + 2 * wk;
        let fused: Vec<f32> = rand_vec(t * w, 300 + i as u64).iter().map(|v| 2.0 * v).collect();
        let (q, k, v) = split(&fused, t, nh, nkv, hd);
        let (want, _) = reference::forward(&Attention::gqa(1, t, nh, nkv, hd), &q, &k, &v);
        let want_last = &want[(t - 1) * wq..];

        let nan = vec![f32::NAN; max_len * wk];
        let g_k = gpu.upload("k_cache", &[max_len, wk], &nan).unwrap();
        let g_v = gpu.upload("v_cache", &[max_len, wk], &nan).unwrap();
        let g_out = gpu.upload("out", &[wq], &vec![f32::NAN; wq]).unwrap();
        let g_pos = gpu.upload_u32("pos", &[1], &[0]).unwrap();
        fn views(x: &Tensor, wq: usize, wk: usize) -> (View<'_>, View<'_>, View<'_>) {
            let w = wq + 2 * wk;
            (View::cols(x, 0, w), View::cols(x, wq, w), View::cols(x, wq + wk, w))
        }
        // the earlier rows as a prefill would store them (rows 0..t-1 at pos 0)
        if t > 1 {
            let g_prefix = gpu.upload("prefix", &[t - 1, w], &fused[..(t - 1) * w]).unwrap();
            let (_, vk, vv) = views(&g_prefix, wq, wk);
            let mut prog = Program::new();
            kv_store(&gpu, &mut prog, &d, vk, vv, t - 1, &g_pos, &g_k, &g_v);
            prog.run(&gpu);
        }
        // the query's step: store its k, v at pos = t - 1, then attend
        gpu.write_u32(&g_pos, &[(t - 1) as u32]);
        let g_row = gpu.upload("row", &[1, w], &fused[(t - 1) * w..]).unwrap();
        let (vq, vk, vv) = views(&g_row, wq, wk);
        let mut prog = Program::new();
        kv_store(&gpu, &mut prog, &d, vk, vv, 1, &g_pos, &g_k, &g_v);
        attention_decode(&gpu, &mut prog, &d, vq, &g_pos, &g_k, &g_v, &g_out);
        prog.run(&gpu);

        assert_close(&format!("{what} out"), &gpu.read_blocking(&g_out).unwrap(), want_last, 1e-4, 1e-5);
        // caches: rows 0..t hold k and v exactly, the rest is untouched
        let (gk, gv) = (gpu.read_blocking(&g_k).unwrap(), gpu.read_blocking(&g_v).unwrap());
        for s in 0..max_len {
            for j in 0..wk {
                let (ck, cv) = (gk[s * wk + j], gv[s * wk + j]);
                if s < t {
                    assert_eq!(ck, k[s * wk + j], "{what} k_cache[{s}, {j}]");
                    assert_eq!(cv, v[s * wk + j], "{what} v_cache[{s}, {j}]");
                } else {
                    assert!(ck.is_nan() && cv.is_nan(), "{what}: cache row {s} was written");
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
    let d = AttentionDecode::mha(c, 2, max_len);
    let qkv = rand_vec(rows * 3 * c, 9);
    let g_qkv = gpu.upload("qkv", &[rows, 3 * c], &qkv).unwrap();
    let g_k = gpu.upload("k", &[max_len, c], &vec![7.0; max_len * c]).unwrap();
    let g_v = gpu.upload("v", &[max_len, c], &vec![7.0; max_len * c]).unwrap();
    let g_pos = gpu.upload_u32("pos", &[1], &[3]).unwrap();
    let mut prog = Program::new();
    let (k, v) = (View::cols(&g_qkv, c, 3 * c), View::cols(&g_qkv, 2 * c, 3 * c));
    kv_store(&gpu, &mut prog, &d, k, v, rows, &g_pos, &g_k, &g_v);
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
        embedding_forward_at(&gpu, &mut prog, &g_tok, &g_pos, &g_wte, Some(&g_wpe), &g_x, n, c);
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
