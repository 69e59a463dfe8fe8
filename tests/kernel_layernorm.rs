//! shaders/layernorm.wgsl against reference::ops::{layernorm_forward, layernorm_backward}
//! on odd shapes: rows n in {1, 3, 33, 130} (130 > 128 takes the chunked dgamma/dbeta
//! path), widths c in {1, 7, 48, 97, 770} (770 > 256 loops within a row).
mod common;
use common::*;
use webtune::gpu::Program;
use webtune::kernels::layernorm;
use webtune::reference::ops;

const NS: [usize; 4] = [1, 3, 33, 130];
const CS: [usize; 5] = [1, 7, 48, 97, 770];

/// Rows with a non-zero mean, so a one-pass E[x²] - mean² variance would show.
fn input(n: usize, c: usize, seed: u64) -> Vec<f32> {
    rand_vec(n * c, seed).iter().map(|v| 2.0 * v + 0.75).collect()
}

fn gamma_beta(c: usize) -> (Vec<f32>, Vec<f32>) {
    (rand_vec(c, 11).iter().map(|v| 1.0 + 0.5 * v).collect(), rand_vec(c, 12))
}

#[test]
fn forward_matches_reference() {
    let gpu = gpu();
    let eps = 1e-5;
    for n in NS {
        for c in CS {
            let x = input(n, c, (n * 1000 + c) as u64);
            let (g, b) = gamma_beta(c);
            let (want_y, want_m, want_r) = ops::layernorm_forward(&x, &g, &b, c, eps);
            let tx = gpu.upload("x", &[n, c], &x).unwrap();
            let tg = gpu.upload("gamma", &[c], &g).unwrap();
            let tb = gpu.upload("beta", &[c], &b).unwrap();
            let y = gpu.upload("y", &[n, c], &vec![9.0; n * c]).unwrap();
            let m = gpu.zeros("mean", &[n]).unwrap();
            let r = gpu.zeros("rstd", &[n]).unwrap();
            let mut prog = Program::new();
            layernorm::layernorm_forward(&gpu, &mut prog, &tx, &tg, &tb, &y, &m, &r, n, c, eps);
            prog.run(&gpu);
            let what = format!("n={n} c={c}");
            assert_close(
                &format!("y {what}"),
                &gpu.read_blocking(&y).unwrap(),
                &want_y,
                1e-5,
                1e-5,
            );
            assert_close(
                &format!("mean {what}"),
                &gpu.read_blocking(&m).unwrap(),
                &want_m,
                1e-5,
                1e-5,
            );
            assert_close(
                &format!("rstd {what}"),
                &gpu.read_blocking(&r).unwrap(),
                &want_r,
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn forward_uses_eps_argument() {
    // constant rows: var = 0, so rstd = 1 / sqrt(eps) exactly shows which eps was used
    let gpu = gpu();
    let (n, c, eps) = (3, 7, 0.25f32);
    let x = vec![1.5f32; n * c];
    let (g, b) = gamma_beta(c);
    let (want_y, want_m, want_r) = ops::layernorm_forward(&x, &g, &b, c, eps);
    let tx = gpu.upload("x", &[n, c], &x).unwrap();
    let tg = gpu.upload("gamma", &[c], &g).unwrap();
    let tb = gpu.upload("beta", &[c], &b).unwrap();
    let (y, m, r) = (
        gpu.zeros("y", &[n, c]).unwrap(),
        gpu.zeros("m", &[n]).unwrap(),
        gpu.zeros("r", &[n]).unwrap(),
    );
    let mut prog = Program::new();
    layernorm::layernorm_forward(&gpu, &mut prog, &tx, &tg, &tb, &y, &m, &r, n, c, eps);
    prog.run(&gpu);
    assert_close("y", &gpu.read_blocking(&y).unwrap(), &want_y, 1e-5, 1e-5);
    assert_close("mean", &gpu.read_blocking(&m).unwrap(), &want_m, 1e-5, 1e-5);
    assert_close("rstd", &gpu.read_blocking(&r).unwrap(), &want_r, 1e-6, 0.0);
    assert_close("rstd = 2", &want_r, &[2.0; 3], 1e-6, 0.0);
}

#[test]
fn backward_matches_reference_overwrite_and_accumulate() {
    let gpu = gpu();
    for n in NS {
        for c in CS {
            let seed = (n * 1000 + c) as u64;
            let x = input(n, c, seed);
            let dy = rand_vec(n * c, seed + 1);
            let (g, b) = gamma_beta(c);
            let (_, mean, rstd) = ops::layernorm_forward(&x, &g, &b, c, 1e-5);
            let (want_dx, want_dg, want_db) = ops::layernorm_backward(&dy, &x, &g, &mean, &rstd, c);
            let tdy = gpu.upload("dy", &[n, c], &dy).unwrap();
            let tx = gpu.upload("x", &[n, c], &x).unwrap();
            let tg = gpu.upload("gamma", &[c], &g).unwrap();
            let tm = gpu.upload("mean", &[n], &mean).unwrap();
            let tr = gpu.upload("rstd", &[n], &rstd).unwrap();
            let what = format!("n={n} c={c}");

            // overwrite dx (stale contents), accumulate dgamma/dbeta onto non-zero buffers
            let dx = gpu.upload("dx", &[n, c], &vec![7.0; n * c]).unwrap();
            let dg0 = rand_vec(c, 21);
            let db0 = rand_vec(c, 22);
            let dg = gpu.upload("dgamma", &[c], &dg0).unwrap();
            let db = gpu.upload("dbeta", &[c], &db0).unwrap();
            let mut prog = Program::new();
            layernorm::layernorm_backward(
                &gpu,
                &mut prog,
                &tdy,
                &tx,
                &tg,
                &tm,
                &tr,
                &dx,
                false,
                Some((&dg, &db)),
                n,
                c,
            );
            prog.run(&gpu);
            assert_close(
                &format!("dx {what}"),
                &gpu.read_blocking(&dx).unwrap(),
                &want_dx,
                1e-4,
                1e-5,
            );
            let add = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x + y).collect::<Vec<f32>>();
            assert_close(
                &format!("dgamma {what}"),
                &gpu.read_blocking(&dg).unwrap(),
                &add(&dg0, &want_dg),
                1e-4,
                1e-5,
            );
            assert_close(
                &format!("dbeta {what}"),
                &gpu.read_blocking(&db).unwrap(),
                &add(&db0, &want_db),
                1e-4,
                1e-5,
            );

            // accumulate into a non-zero dx, no parameter gradients
            let dx0 = rand_vec(n * c, seed + 2);
            let dx = gpu.upload("dx", &[n, c], &dx0).unwrap();
            let mut prog = Program::new();
            layernorm::layernorm_backward(&gpu, &mut prog, &tdy, &tx, &tg, &tm, &tr, &dx, true, None, n, c);
            prog.run(&gpu);
            assert_close(
                &format!("dx += {what}"),
                &gpu.read_blocking(&dx).unwrap(),
                &add(&dx0, &want_dx),
                1e-4,
                1e-5,
            );
        }
    }
}

#[test]
fn dparams_chunked_over_many_rows() {
    // 1000 rows = 8 chunks of 128 (the last one partial), 3 column blocks (the last partial)
    let gpu = gpu();
    let (n, c) = (1000, 130);
    let x = input(n, c, 5);
    let dy = rand_vec(n * c, 6);
    let (g, b) = gamma_beta(c);
    let (_, mean, rstd) = ops::layernorm_forward(&x, &g, &b, c, 1e-5);
    let (want_dx, want_dg, want_db) = ops::layernorm_backward(&dy, &x, &g, &mean, &rstd, c);
    let tdy = gpu.upload("dy", &[n, c], &dy).unwrap();
    let tx = gpu.upload("x", &[n, c], &x).unwrap();
    let tg = gpu.upload("gamma", &[c], &g).unwrap();
    let tm = gpu.upload("mean", &[n], &mean).unwrap();
    let tr = gpu.upload("rstd", &[n], &rstd).unwrap();
    let dx = gpu.zeros("dx", &[n, c]).unwrap();
    let dg = gpu.zeros("dgamma", &[c]).unwrap();
    let db = gpu.zeros("dbeta", &[c]).unwrap();
    let mut prog = Program::new();
    layernorm::layernorm_backward(
        &gpu,
        &mut prog,
        &tdy,
        &tx,
        &tg,
        &tm,
        &tr,
        &dx,
        false,
        Some((&dg, &db)),
        n,
        c,
    );
    prog.run(&gpu);
    assert_close("dx", &gpu.read_blocking(&dx).unwrap(), &want_dx, 1e-4, 1e-5);
    assert_close("dgamma", &gpu.read_blocking(&dg).unwrap(), &want_dg, 1e-4, 1e-5);
    assert_close("dbeta", &gpu.read_blocking(&db).unwrap(), &want_db, 1e-4, 1e-5);
}
