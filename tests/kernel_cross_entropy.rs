//! shaders/cross_entropy.wgsl (+ matmul) against reference::ops::{cross_entropy,
//! lm_head_loss}: odd shapes, chunks that do not divide n, ignored targets (-100),
//! dwte accumulation, forward only, and a GPT-2-sized vocabulary.
mod common;
use common::*;
use webtune::gpu::Program;
use webtune::kernels::cross_entropy::{chunk_rows, cross_entropy_rows, lm_head_loss, loss_sum, LmHeadLoss};
use webtune::reference::ops;

const RTOL: f32 = 1e-4;
const ATOL: f32 = 1e-6;

/// Targets with every kind of row: ignored (-100), first and last class, random.
fn targets(n: usize, v: usize, seed: u64) -> Vec<i32> {
    let mut r = webtune::rng::Rng::new(seed);
    (0..n)
        .map(|i| match i % 5 {
            1 => -100,
            2 => v as i32 - 1,
            3 => 0,
            _ => r.below(v) as i32,
        })
        .collect()
}

fn as_u32(t: &[i32]) -> Vec<u32> {
    t.iter().map(|&x| x as u32).collect()
}

fn scale_of(t: &[i32]) -> f32 {
    let count = t.iter().filter(|&&y| y >= 0).count();
    if count == 0 {
        0.0
    } else {
        1.0 / count as f32
    }
}

/// One fused LM head + loss on the GPU against the reference.
#[allow(clippy::too_many_arguments)]
fn lm_case(n: usize, c: usize, v: usize, chunk: usize, backward: bool, with_dh: bool, with_dwte: bool, seed: u64) {
    let what = format!("n={n} c={c} v={v} chunk={chunk} backward={backward} dh={with_dh} dwte={with_dwte}");
    let gpu = gpu();
    let h = rand_vec(n * c, seed);
    let wte: Vec<f32> = rand_vec(v * c, seed + 1);
    let tg = targets(n, v, seed + 2);
    let scale = scale_of(&tg);
    let dwte0: Vec<f32> = rand_vec(v * c, seed + 3);
    let dh0 = vec![5.0f32; n * c];

    let th = gpu.upload("h", &[n, c], &h).unwrap();
    let twte = gpu.upload("wte", &[v, c], &wte).unwrap();
    let ttg = gpu.upload_u32("targets", &[n], &as_u32(&tg)).unwrap();
    let tscale = gpu.upload("scale", &[1], &[scale]).unwrap();
    let tlogits = gpu.zeros("logits", &[chunk, v]).unwrap();
    let tlosses = gpu.upload("losses", &[n], &vec![9.0; n]).unwrap();
    let tloss = gpu.zeros("loss", &[1]).unwrap();
    let tdh = gpu.upload("dh", &[n, c], &dh0).unwrap();
    let tdwte = gpu.upload("dwte", &[v, c], &dwte0).unwrap();

    let d = LmHeadLoss {
        n,
        c,
        v,
        chunk,
        backward,
    };
    let mut prog = Program::new();
    lm_head_loss(
        &gpu,
        &mut prog,
        &d,
        &th,
        &twte,
        &ttg,
        &tscale,
        &tlogits,
        &tlosses,
        &tloss,
        with_dh.then_some(&tdh),
        with_dwte.then_some(&tdwte),
    );
    prog.run(&gpu);

    let logits = ops::matmul(&h, &wte, n, v, c, false, true);
    let (_, want_losses, _) = ops::cross_entropy(&logits, &tg, v);
    let (want_loss, want_dh, want_dwte) = ops::lm_head_loss(&h, &wte, &tg, c, v);
    assert_close(
        &format!("{what} losses"),
        &gpu.read_blocking(&tlosses).unwrap(),
        &want_losses,
        RTOL,
        ATOL,
    );
    assert_close(
        &format!("{what} loss"),
        &gpu.read_blocking(&tloss).unwrap(),
        &[want_loss],
        RTOL,
        ATOL,
    );

    let got_dh = gpu.read_blocking(&tdh).unwrap();
    if backward && with_dh {
        assert_close(&format!("{what} dh"), &got_dh, &want_dh, RTOL, ATOL);
    } else {
        assert_eq!(got_dh, dh0, "{what}: dh must be untouched");
    }
    let got_dwte = gpu.read_blocking(&tdwte).unwrap();
    if backward && with_dwte {
        let want: Vec<f32> = dwte0.iter().zip(&want_dwte).map(|(a, b)| a + b).collect();
        assert_close(&format!("{what} dwte"), &got_dwte, &want, RTOL, ATOL);
    } else {
        assert_eq!(got_dwte, dwte0, "{what}: dwte must be untouched");
    }
}

#[test]
fn lm_head_loss_small_vocab() {
    lm_case(1, 7, 97, 1, true, true, true, 1);
    lm_case(5, 7, 97, 2, true, true, false, 2);
    lm_case(5, 48, 97, 5, true, true, true, 3);
    lm_case(33, 48, 97, 33, true, true, true, 4);
}

#[test]
fn lm_head_loss_chunks_not_dividing_rows() {
    lm_case(33, 48, 1000, 8, true, true, true, 5);
    lm_case(33, 7, 1000, 7, true, true, false, 6);
    lm_case(5, 48, 1000, 3, true, true, true, 7);
    lm_case(1, 48, 1000, 1, true, true, true, 8);
}

#[test]
fn lm_head_loss_forward_only_and_dwte_only() {
    lm_case(33, 48, 1000, 8, false, true, true, 9);
    lm_case(5, 7, 97, 2, true, false, true, 10);
}

#[test]
fn lm_head_loss_gpt2_vocab() {
    let chunk = chunk_rows(2, 50257, 50257 * 4);
    assert_eq!(chunk, 1);
    lm_case(2, 8, 50257, chunk, true, true, true, 11);
}

#[test]
fn chunk_rows_bounds() {
    assert_eq!(chunk_rows(33, 1000, 8 * 4000), 8);
    assert_eq!(chunk_rows(33, 1000, 8 * 4000 + 3999), 8);
    assert_eq!(chunk_rows(33, 1000, 1), 1);
    assert_eq!(chunk_rows(33, 1000, u64::MAX), 33);
    assert_eq!(chunk_rows(0, 1000, u64::MAX), 1);
    assert_eq!(chunk_rows(5, 0, 100), 5);
}

/// The row kernel alone on a chunk in the middle of the targets, with large logits
/// (a naive exp would overflow) and one-class rows.
#[test]
fn cross_entropy_rows_match_reference() {
    let gpu = gpu();
    for (v, mag) in [(1usize, 1.0f32), (97, 1.0), (300, 60.0), (1000, 200.0), (50257, 5.0)] {
        let (n, row0, rows) = (10usize, 3usize, 5usize);
        let logits: Vec<f32> = rand_vec(rows * v, v as u64).iter().map(|x| x * mag).collect();
        let tg = targets(n, v, 3 + v as u64);
        let chunk_tg = &tg[row0..row0 + rows];
        let scale = scale_of(chunk_tg);
        let tlogits = gpu.upload("logits", &[rows, v], &logits).unwrap();
        let ttg = gpu.upload_u32("targets", &[n], &as_u32(&tg)).unwrap();
        let tscale = gpu.upload("scale", &[1], &[scale]).unwrap();
        let tlosses = gpu.upload("losses", &[n], &vec![9.0; n]).unwrap();
        let tloss = gpu.zeros("loss", &[1]).unwrap();
        let mut prog = Program::new();
        cross_entropy_rows(&gpu, &mut prog, v, row0, rows, true, &tlogits, &ttg, &tscale, &tlosses);
        loss_sum(&gpu, &mut prog, n, &tscale, &tlosses, &tloss);
        prog.run(&gpu);

        let (_, want_rows, want_dl) = ops::cross_entropy(&logits, chunk_tg, v);
        let mut want_losses = vec![9.0f32; n];
        want_losses[row0..row0 + rows].copy_from_slice(&want_rows);
        let got_losses = gpu.read_blocking(&tlosses).unwrap();
        assert_close(&format!("v={v} losses"), &got_losses, &want_losses, RTOL, ATOL);
        assert_close(
            &format!("v={v} dlogits"),
            &gpu.read_blocking(&tlogits).unwrap(),
            &want_dl,
            RTOL,
            ATOL,
        );
        let want_sum = scale * want_losses.iter().sum::<f32>();
        assert_close(
            &format!("v={v} loss"),
            &gpu.read_blocking(&tloss).unwrap(),
            &[want_sum],
            RTOL,
            ATOL,
        );
    }
}

/// Every row ignored: zero losses, zero gradients, zero loss (scale 0 from the host).
#[test]
fn cross_entropy_all_ignored() {
    let gpu = gpu();
    let (n, v) = (3usize, 97usize);
    let logits = rand_vec(n * v, 5);
    let tg = vec![-100i32, -1, 97]; // 97 = v is out of range, ignored as well
    let tlogits = gpu.upload("logits", &[n, v], &logits).unwrap();
    let ttg = gpu.upload_u32("targets", &[n], &as_u32(&tg)).unwrap();
    let tscale = gpu.upload("scale", &[1], &[0.0]).unwrap();
    let tlosses = gpu.upload("losses", &[n], &[9.0; 3]).unwrap();
    let tloss = gpu.upload("loss", &[1], &[9.0]).unwrap();
    let mut prog = Program::new();
    cross_entropy_rows(&gpu, &mut prog, v, 0, n, true, &tlogits, &ttg, &tscale, &tlosses);
    loss_sum(&gpu, &mut prog, n, &tscale, &tlosses, &tloss);
    prog.run(&gpu);
    assert_eq!(gpu.read_blocking(&tlosses).unwrap(), vec![0.0; n]);
    assert_eq!(gpu.read_blocking(&tlogits).unwrap(), vec![0.0; n * v]);
    assert_eq!(gpu.read_blocking(&tloss).unwrap(), vec![0.0]);
}

/// The head weight and its gradient as row chunks (vocabulary 101 in chunks of 37, 37, 27; 13 rows
/// of logits at a time over n = 30): loss, dh and dW match the reference; the logits columns are
/// the same products as one buffer's, so the loss is the same bits.
#[test]
fn lm_head_loss_with_row_chunked_weight() {
    use webtune::kernels::cross_entropy::lm_head_loss_chunked;
    use webtune::kernels::RowChunk;
    let gpu = gpu();
    let (n, c, v, chunk) = (30usize, 19usize, 101usize, 13usize);
    let h = rand_vec(n * c, 41);
    let wte = rand_vec(v * c, 42);
    let tg = targets(n, v, 43);
    let dwte0 = rand_vec(v * c, 44);
    let th = gpu.upload("h", &[n, c], &h).unwrap();
    let ttg = gpu.upload_u32("targets", &[n], &as_u32(&tg)).unwrap();
    let tscale = gpu.upload("scale", &[1], &[scale_of(&tg)]).unwrap();
    let tlogits = gpu.zeros("logits", &[chunk, v]).unwrap();
    let tlosses = gpu.zeros("losses", &[n]).unwrap();
    let tloss = gpu.zeros("loss", &[1]).unwrap();
    let tdh = gpu.upload("dh", &[n, c], &vec![5.0; n * c]).unwrap();
    let bounds = [0usize, 37, 74, v];
    let parts: Vec<_> = bounds.windows(2).map(|r| gpu.upload("w", &[r[1] - r[0], c], &wte[r[0] * c..r[1] * c]).unwrap()).collect();
    let grads: Vec<_> = bounds.windows(2).map(|r| gpu.upload("dw", &[r[1] - r[0], c], &dwte0[r[0] * c..r[1] * c]).unwrap()).collect();
    let chunks = RowChunk::list(&parts.iter().collect::<Vec<_>>(), c);
    let gchunks = RowChunk::list(&grads.iter().collect::<Vec<_>>(), c);
    let d = LmHeadLoss { n, c, v, chunk, backward: true };
    let mut prog = Program::new();
    lm_head_loss_chunked(&gpu, &mut prog, &d, &th, &chunks, &ttg, &tscale, &tlogits, &tlosses, &tloss, Some(&tdh), Some(&gchunks));
    prog.run(&gpu);
    let (want_loss, want_dh, want_dwte) = ops::lm_head_loss(&h, &wte, &tg, c, v);
    assert_close("loss", &gpu.read_blocking(&tloss).unwrap(), &[want_loss], RTOL, ATOL);
    assert_close("dh", &gpu.read_blocking(&tdh).unwrap(), &want_dh, RTOL, ATOL);
    let got: Vec<f32> = grads.iter().flat_map(|g| gpu.read_blocking(g).unwrap()).collect();
    let want: Vec<f32> = dwte0.iter().zip(&want_dwte).map(|(a, b)| a + b).collect();
    assert_close("dwte", &got, &want, RTOL, ATOL);
    // one buffer, same rows: the same loss bits
    let whole = gpu.upload("wte", &[v, c], &wte).unwrap();
    let loss1 = gpu.zeros("loss1", &[1]).unwrap();
    let losses1 = gpu.zeros("losses1", &[n]).unwrap();
    let fwd = LmHeadLoss { backward: false, ..d };
    let mut prog = Program::new();
    lm_head_loss(&gpu, &mut prog, &fwd, &th, &whole, &ttg, &tscale, &tlogits, &losses1, &loss1, None, None);
    prog.run(&gpu);
    assert!(gpu.read_blocking(&losses1).unwrap() == gpu.read_blocking(&tlosses).unwrap(), "per-row losses differ");
}
