//! shaders/embedding.wgsl against reference::ops::{embedding_forward, embedding_backward}:
//! vocab 97, repeated tokens, accumulation onto non-zero gradients, a second batch with
//! fewer unique tokens than the first (stale index entries must be ignored), and a batch
//! of more than 65535 rows (2D grid).
mod common;
use common::*;
use webtune::gpu::Program;
use webtune::kernels::embedding::{self, TokenIndex, TokenIndexBuffers};
use webtune::reference::ops;
use webtune::rng::Rng;

const VOCAB: usize = 97;

/// Tokens below VOCAB with many repeats (half drawn from a pool of 3 ids).
fn tokens(n: usize, seed: u64) -> Vec<u32> {
    let mut r = Rng::new(seed);
    (0..n)
        .map(|_| {
            if r.below(2) == 0 {
                [5u32, 96, 0][r.below(3)]
            } else {
                r.below(VOCAB) as u32
            }
        })
        .collect()
}

fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

#[test]
fn token_index_groups_positions_by_token() {
    let idx = TokenIndex::build(&[7, 3, 7, 7, 0, 3]);
    assert_eq!(idx.unique, vec![0, 3, 7]);
    assert_eq!(idx.offsets, vec![0, 1, 3, 6]);
    assert_eq!(idx.positions, vec![4, 1, 5, 0, 2, 3]);
    let empty = TokenIndex::build(&[]);
    assert_eq!(
        (empty.unique.len(), empty.offsets, empty.positions.len()),
        (0, vec![0], 0)
    );
}

#[test]
fn forward_matches_reference() {
    let gpu = gpu();
    let (b, t, p) = (3usize, 11usize, 13usize);
    for c in [1usize, 7, 97, 770] {
        let toks = tokens(b * t, c as u64);
        let wte = rand_vec(VOCAB * c, 1);
        let wpe = rand_vec(p * c, 2);
        let tt = gpu.upload_u32("tokens", &[b * t], &toks).unwrap();
        let twte = gpu.upload("wte", &[VOCAB, c], &wte).unwrap();
        let twpe = gpu.upload("wpe", &[p, c], &wpe).unwrap();
        let x = gpu.upload("x", &[b * t, c], &vec![3.0; b * t * c]).unwrap();
        let mut prog = Program::new();
        embedding::embedding_forward(&gpu, &mut prog, &tt, &twte, Some(&twpe), &x, b, t, c);
        prog.run(&gpu);
        let want = ops::embedding_forward(&toks, &wte, &wpe, b, t, c);
        assert_close(&format!("x c={c}"), &gpu.read_blocking(&x).unwrap(), &want, 0.0, 0.0);
    }
}

#[test]
fn backward_accumulates_and_ignores_stale_index_entries() {
    let gpu = gpu();
    let (b, t, p) = (3usize, 11usize, 13usize);
    let n = b * t;
    for c in [1usize, 7, 97, 770] {
        let dwte0 = rand_vec(VOCAB * c, 3);
        let dwpe0 = rand_vec(p * c, 4);
        let dwte = gpu.upload("dwte", &[VOCAB, c], &dwte0).unwrap();
        let dwpe = gpu.upload("dwpe", &[p, c], &dwpe0).unwrap();
        let index = TokenIndexBuffers::new(&gpu, n).unwrap();
        let dx_t = gpu.zeros("dx", &[n, c]).unwrap();
        let mut prog = Program::new();
        embedding::embedding_backward(&gpu, &mut prog, &dx_t, &index, &dwte, Some(&dwpe), b, t, c);

        // batch 1: many distinct tokens; batch 2: only two, so most of batch 1's index is stale
        let batch1 = tokens(n, 100 + c as u64);
        let batch2: Vec<u32> = (0..n as u32).map(|i| if i % 3 == 0 { 42 } else { 96 }).collect();
        let (mut want_wte, mut want_wpe) = (dwte0.clone(), dwpe0.clone());
        for (k, toks) in [batch1, batch2].iter().enumerate() {
            let dx = rand_vec(n * c, 200 + k as u64);
            gpu.write(&dx_t, &dx);
            index.write(&gpu, &TokenIndex::build(toks));
            prog.run(&gpu); // the same prepared program replays on a new batch
            let (gw, gp) = ops::embedding_backward(&dx, toks, b, t, c, VOCAB);
            want_wte = add(&want_wte, &gw);
            let summed = add(&want_wpe[..t * c], &gp);
            want_wpe[..t * c].copy_from_slice(&summed);
            let what = format!("batch {k} c={c}");
            assert_close(
                &format!("dwte {what}"),
                &gpu.read_blocking(&dwte).unwrap(),
                &want_wte,
                1e-5,
                1e-5,
            );
            assert_close(
                &format!("dwpe {what}"),
                &gpu.read_blocking(&dwpe).unwrap(),
                &want_wpe,
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn more_rows_than_one_grid_dimension() {
    let gpu = gpu();
    let (b, t, c) = (1usize, 65537usize, 2usize);
    let n = b * t;
    let toks = tokens(n, 7);
    let wte = rand_vec(VOCAB * c, 1);
    let wpe = rand_vec(t * c, 2);
    let tt = gpu.upload_u32("tokens", &[n], &toks).unwrap();
    let twte = gpu.upload("wte", &[VOCAB, c], &wte).unwrap();
    let twpe = gpu.upload("wpe", &[t, c], &wpe).unwrap();
    let x = gpu.zeros("x", &[n, c]).unwrap();
    let dx = rand_vec(n * c, 3);
    let tdx = gpu.upload("dx", &[n, c], &dx).unwrap();
    let dwte = gpu.zeros("dwte", &[VOCAB, c]).unwrap();
    let dwpe = gpu.zeros("dwpe", &[t, c]).unwrap();
    let index = TokenIndexBuffers::new(&gpu, n).unwrap();
    index.write(&gpu, &TokenIndex::build(&toks));
    let mut prog = Program::new();
    embedding::embedding_forward(&gpu, &mut prog, &tt, &twte, Some(&twpe), &x, b, t, c);
    embedding::embedding_backward(&gpu, &mut prog, &tdx, &index, &dwte, Some(&dwpe), b, t, c);
    prog.run(&gpu);
    assert_close(
        "x",
        &gpu.read_blocking(&x).unwrap(),
        &ops::embedding_forward(&toks, &wte, &wpe, b, t, c),
        0.0,
        0.0,
    );
    let (gw, gp) = ops::embedding_backward(&dx, &toks, b, t, c, VOCAB);
    assert_close("dwte", &gpu.read_blocking(&dwte).unwrap(), &gw, 1e-5, 1e-5);
    assert_close("dwpe", &gpu.read_blocking(&dwpe).unwrap(), &gp, 1e-5, 1e-5);
}

/// The Llama family has no learned positions: x = wte[token] (the reference with a zero
/// position table), and the backward only scatters into dwte.
#[test]
fn without_positions_forward_and_backward_match_reference() {
    let gpu = gpu();
    let (b, t) = (2usize, 7usize);
    let n = b * t;
    for c in [1usize, 33, 300] {
        let toks = tokens(n, 500 + c as u64);
        let wte = rand_vec(VOCAB * c, 5);
        let tt = gpu.upload_u32("tokens", &[n], &toks).unwrap();
        let twte = gpu.upload("wte", &[VOCAB, c], &wte).unwrap();
        let x = gpu.upload("x", &[n, c], &vec![3.0; n * c]).unwrap();
        let dwte0 = rand_vec(VOCAB * c, 6);
        let dwte = gpu.upload("dwte", &[VOCAB, c], &dwte0).unwrap();
        let dx = rand_vec(n * c, 7);
        let tdx = gpu.upload("dx", &[n, c], &dx).unwrap();
        let index = TokenIndexBuffers::new(&gpu, n).unwrap();
        index.write(&gpu, &TokenIndex::build(&toks));
        let mut prog = Program::new();
        embedding::embedding_forward(&gpu, &mut prog, &tt, &twte, None, &x, b, t, c);
        embedding::embedding_backward(&gpu, &mut prog, &tdx, &index, &dwte, None, b, t, c);
        prog.run(&gpu);
        let zero_positions = vec![0.0; t * c];
        let want = ops::embedding_forward(&toks, &wte, &zero_positions, b, t, c);
        assert_close(&format!("x c={c}"), &gpu.read_blocking(&x).unwrap(), &want, 0.0, 0.0);
        let (gw, _) = ops::embedding_backward(&dx, &toks, b, t, c, VOCAB);
        assert_close(&format!("dwte c={c}"), &gpu.read_blocking(&dwte).unwrap(), &add(&dwte0, &gw), 1e-5, 1e-5);
    }
}

/// The table (and its gradient) stored as row chunks of 40, 40 and 17 rows (the model's split of a
/// table over the binding limit): forward, forward_at and the backward match the reference, ids
/// past the table (97, 200) read as zero rows in the last chunk's dispatch, and every output row is
/// written once (x starts as NaN, so a row no chunk writes would show).
#[test]
fn row_chunked_table_matches_reference() {
    use webtune::kernels::RowChunk;
    let gpu = gpu();
    let (b, t, c) = (2usize, 9usize, 7usize);
    let n = b * t;
    let mut toks = tokens(n, 21);
    toks[3] = 97;
    toks[11] = 200;
    toks[4] = 39;
    toks[5] = 40;
    toks[6] = 80;
    let wte = rand_vec(VOCAB * c, 22);
    let wpe = rand_vec(t * c, 23);
    let dx = rand_vec(n * c, 24);
    let bounds = [0usize, 40, 80, VOCAB];
    let parts: Vec<_> = bounds
        .windows(2)
        .map(|r| gpu.upload("wte chunk", &[r[1] - r[0], c], &wte[r[0] * c..r[1] * c]).unwrap())
        .collect();
    let grads: Vec<_> = bounds.windows(2).map(|r| gpu.zeros("dwte chunk", &[r[1] - r[0], c]).unwrap()).collect();
    let chunks = RowChunk::list(&parts.iter().collect::<Vec<_>>(), c);
    let gchunks = RowChunk::list(&grads.iter().collect::<Vec<_>>(), c);
    assert_eq!(chunks.iter().map(|ch| (ch.row0, ch.rows)).collect::<Vec<_>>(), [(0, 40), (40, 40), (80, 17)]);
    let tt = gpu.upload_u32("tokens", &[n], &toks).unwrap();
    let twpe = gpu.upload("wpe", &[t, c], &wpe).unwrap();
    let x = gpu.upload("x", &[n, c], &vec![f32::NAN; n * c]).unwrap();
    let x_at = gpu.upload("x_at", &[n, c], &vec![f32::NAN; n * c]).unwrap();
    let pos = gpu.upload_u32("pos", &[1], &[0]).unwrap();
    let tdx = gpu.upload("dx", &[n, c], &dx).unwrap();
    let dwpe = gpu.zeros("dwpe", &[t, c]).unwrap();
    let index = TokenIndexBuffers::new(&gpu, n).unwrap();
    index.write(&gpu, &TokenIndex::build(&toks));
    let mut prog = Program::new();
    embedding::embedding_forward_chunked(&gpu, &mut prog, &tt, &chunks, Some(&twpe), &x, b, t, c);
    // forward_at over one sequence of n rows, positions 0.. (wpe has t rows: later ones read as 0)
    embedding::embedding_forward_at_chunked(&gpu, &mut prog, &tt, &pos, &chunks, None, &x_at, n, c);
    embedding::embedding_backward_chunked(&gpu, &mut prog, &tdx, &index, &gchunks, Some(&dwpe), b, t, c);
    prog.run(&gpu);
    // the reference indexes the table directly: give it zero rows up to the largest id
    let wide = 201;
    let mut padded = wte.clone();
    padded.resize(wide * c, 0.0);
    let want = ops::embedding_forward(&toks, &padded, &wpe, b, t, c);
    assert_close("chunked x", &gpu.read_blocking(&x).unwrap(), &want, 0.0, 0.0);
    let want_at = ops::embedding_forward(&toks, &padded, &vec![0.0; n * c], 1, n, c);
    assert_close("chunked x (forward_at)", &gpu.read_blocking(&x_at).unwrap(), &want_at, 0.0, 0.0);
    let (mut gw, gp) = ops::embedding_backward(&dx, &toks, b, t, c, wide);
    gw.truncate(VOCAB * c);
    let got: Vec<f32> = grads.iter().flat_map(|g| gpu.read_blocking(g).unwrap()).collect();
    assert_close("chunked dwte", &got, &gw, 1e-5, 1e-5);
    assert_close("chunked dwpe", &gpu.read_blocking(&dwpe).unwrap(), &gp, 1e-5, 1e-5);
    // the same bits as one buffer (the same summation order per row)
    let one = gpu.zeros("dwte", &[VOCAB, c]).unwrap();
    let mut prog = Program::new();
    embedding::embedding_backward(&gpu, &mut prog, &tdx, &index, &one, None, b, t, c);
    prog.run(&gpu);
    assert!(gpu.read_blocking(&one).unwrap() == got, "chunked dwte differs from one buffer's");
}
