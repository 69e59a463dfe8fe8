//! shaders/gelu.wgsl (HF gelu_new) against reference::ops::{gelu_forward, gelu_backward},
//! on odd lengths and on large |x| where a naive tanh overflows.
mod common;
use common::*;
use webtune::gpu::Program;
use webtune::kernels::gelu;
use webtune::reference::ops;

fn inputs(n: usize, seed: u64) -> Vec<f32> {
    let mut x: Vec<f32> = rand_vec(n, seed).iter().map(|v| 6.0 * v).collect();
    let extremes = [-100.0f32, -30.0, -9.5, -3.0, -1e-3, 0.0, 1e-4, 2.5, 9.5, 30.0, 100.0];
    for (xi, e) in x.iter_mut().zip(extremes) {
        *xi = e;
    }
    x
}

#[test]
fn forward_and_backward_match_reference() {
    let gpu = gpu();
    for n in [1usize, 7, 97, 770, 256 * 3 + 5] {
        let x = inputs(n, n as u64);
        let dy = rand_vec(n, n as u64 + 1);
        let tx = gpu.upload("x", &[n], &x).unwrap();
        let tdy = gpu.upload("dy", &[n], &dy).unwrap();
        let y = gpu.upload("y", &[n], &vec![5.0; n]).unwrap();
        let dx = gpu.upload("dx", &[n], &vec![5.0; n]).unwrap();
        let mut prog = Program::new();
        gelu::gelu_forward(&gpu, &mut prog, &tx, &y);
        gelu::gelu_backward(&gpu, &mut prog, &tx, &tdy, &dx);
        prog.run(&gpu);
        assert_close(
            &format!("y n={n}"),
            &gpu.read_blocking(&y).unwrap(),
            &ops::gelu_forward(&x),
            1e-5,
            1e-5,
        );
        assert_close(
            &format!("dx n={n}"),
            &gpu.read_blocking(&dx).unwrap(),
            &ops::gelu_backward(&x, &dy),
            1e-5,
            1e-5,
        );
    }
}
