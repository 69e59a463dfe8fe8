//! Causal attention (batched matmuls + shaders/attention.wgsl softmax) against
//! `reference::ops::attention_forward/backward` on odd shapes: rtol 1e-4, atol 1e-5.
//! Outputs start as NaN, so anything the kernels fail to write shows up.
mod common;
use common::*;
use webtune::gpu::Program;
use webtune::kernels::attention::{attention_backward, attention_forward, Attention};
use webtune::reference::ops;

const SHAPES: [(usize, usize, usize, usize); 5] = [
    (1, 1, 4, 1),
    (2, 7, 12, 3),
    (3, 33, 48, 3),
    (1, 65, 40, 5),
    (1, 130, 8, 2),
];

#[test]
fn attention_matches_reference() {
    let gpu = gpu();
    for (i, &(b, t, c, nh)) in SHAPES.iter().enumerate() {
        let what = format!("b{b} t{t} c{c} nh{nh}");
        let d = Attention { b, t, c, nh };
        // Scores of a few units, so the softmax is far from uniform.
        let qkv: Vec<f32> = rand_vec(b * t * 3 * c, 100 + i as u64)
            .iter()
            .map(|v| 2.0 * v)
            .collect();
        let dout = rand_vec(b * t * c, 200 + i as u64);
        let nan = |n: usize| vec![f32::NAN; n];
        let g_qkv = gpu.upload("qkv", &[b, t, 3 * c], &qkv).unwrap();
        let g_att = gpu.upload("att", &[b, nh, t, t], &nan(b * nh * t * t)).unwrap();
        let g_out = gpu.upload("out", &[b, t, c], &nan(b * t * c)).unwrap();
        let g_dout = gpu.upload("dout", &[b, t, c], &dout).unwrap();
        let g_datt = gpu.upload("datt", &[b, nh, t, t], &nan(b * nh * t * t)).unwrap();
        let g_dqkv = gpu.upload("dqkv", &[b, t, 3 * c], &nan(b * t * 3 * c)).unwrap();
        let mut prog = Program::new();
        attention_forward(&gpu, &mut prog, &d, &g_qkv, &g_att, &g_out);
        attention_backward(&gpu, &mut prog, &d, &g_dout, &g_qkv, &g_att, &g_datt, &g_dqkv);
        prog.run(&gpu);

        let (want_out, want_att) = ops::attention_forward(&qkv, b, t, c, nh);
        let att = gpu.read_blocking(&g_att).unwrap();
        assert_close(&format!("{what} att"), &att, &want_att, 1e-4, 1e-6);
        assert_close(
            &format!("{what} out"),
            &gpu.read_blocking(&g_out).unwrap(),
            &want_out,
            1e-4,
            1e-5,
        );
        // Backward from the GPU's own att (what training uses).
        let want_dqkv = ops::attention_backward(&dout, &qkv, &att, b, t, c, nh);
        assert_close(
            &format!("{what} dqkv"),
            &gpu.read_blocking(&g_dqkv).unwrap(),
            &want_dqkv,
            1e-4,
            1e-5,
        );
    }
}

/// Running the same program twice gives the same result (nothing depends on stale
/// contents of att, datt or dqkv).
#[test]
fn attention_is_repeatable() {
    let gpu = gpu();
    let (b, t, c, nh) = (2, 9, 8, 2);
    let d = Attention { b, t, c, nh };
    let qkv = rand_vec(b * t * 3 * c, 7);
    let g_qkv = gpu.upload("qkv", &[b * t * 3 * c], &qkv).unwrap();
    let g_att = gpu.zeros("att", &[b * nh * t * t]).unwrap();
    let g_out = gpu.zeros("out", &[b * t * c]).unwrap();
    let g_dout = gpu.upload("dout", &[b * t * c], &rand_vec(b * t * c, 8)).unwrap();
    let g_datt = gpu.zeros("datt", &[b * nh * t * t]).unwrap();
    let g_dqkv = gpu.zeros("dqkv", &[b * t * 3 * c]).unwrap();
    let mut prog = Program::new();
    attention_forward(&gpu, &mut prog, &d, &g_qkv, &g_att, &g_out);
    attention_backward(&gpu, &mut prog, &d, &g_dout, &g_qkv, &g_att, &g_datt, &g_dqkv);
    prog.run(&gpu);
    let first = (gpu.read_blocking(&g_out).unwrap(), gpu.read_blocking(&g_dqkv).unwrap());
    prog.run(&gpu);
    let second = (gpu.read_blocking(&g_out).unwrap(), gpu.read_blocking(&g_dqkv).unwrap());
    assert_eq!(first, second);
}
