//! shaders/residual.wgsl against the hand-derived sum, on an odd length and on one
//! that needs a 2D grid.
mod common;
use common::*;
use webtune::gpu::Program;
use webtune::kernels::residual;

#[test]
fn add_matches_elementwise_sum() {
    let gpu = gpu();
    for n in [1usize, 77, 256 * 65535 + 3] {
        let a = rand_vec(n, 1);
        let b = rand_vec(n, 2);
        let ta = gpu.upload("a", &[n], &a).unwrap();
        let tb = gpu.upload("b", &[n], &b).unwrap();
        let out = gpu.zeros("out", &[n]).unwrap();
        let mut prog = Program::new();
        residual::add_forward(&gpu, &mut prog, &ta, &tb, &out);
        prog.run(&gpu);
        let got = gpu.read_blocking(&out).unwrap();
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_close("add", &got, &want, 0.0, 0.0);
    }
}
