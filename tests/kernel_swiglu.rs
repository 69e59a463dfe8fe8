//! shaders/swiglu.wgsl against reference::llama::{swiglu_forward, swiglu_backward}:
//! N in {1, 7, 33}, I in {1, 48, 80, 96, 300}, gate values including large |x| (±30, ±90, ±1e4,
//! ±1e30, where a naive exp overflows), on separate gate/up tensors and on the two halves of a
//! packed [N, 2I] buffer (gradients into the halves of another packed buffer; h and dh then in
//! padded buffers at an offset).
mod common;
use common::*;
use webtune::gpu::{Gpu, Program, Tensor};
use webtune::kernels::swiglu;
use webtune::kernels::View;
use webtune::reference::llama;

const NS: [usize; 3] = [1, 7, 33];
const IS: [usize; 5] = [1, 48, 80, 96, 300];
const LARGE: [f32; 8] = [30.0, -30.0, 90.0, -90.0, 1e4, -1e4, 1e30, -1e30];

fn up(gpu: &Gpu, name: &str, data: &[f32]) -> Tensor {
    gpu.upload(name, &[data.len()], data).unwrap()
}

/// gate: mostly in [-8, 8), every 7th value one of LARGE.
fn gate(len: usize, seed: u64) -> Vec<f32> {
    rand_vec(len, seed).iter().enumerate().map(|(k, v)| if k % 7 == 3 { LARGE[k / 7 % 8] } else { 8.0 * v }).collect()
}

fn halves(b: &[f32], i: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut g, mut u) = (Vec::new(), Vec::new());
    for row in b.chunks(2 * i) {
        g.extend_from_slice(&row[..i]);
        u.extend_from_slice(&row[i..]);
    }
    (g, u)
}

/// Columns first..first + width of each row of a [n, ld] buffer.
fn padded(b: &[f32], ld: usize, first: usize, width: usize) -> Vec<f32> {
    b.chunks(ld).flat_map(|row| row[first..first + width].to_vec()).collect()
}

#[test]
fn separate_gate_and_up() {
    let gpu = gpu();
    for n in NS {
        for i in IS {
            let what = format!("n={n} i={i}");
            let seed = (n * 1000 + i) as u64;
            let (g, u, dh) = (gate(n * i, seed), rand_vec(n * i, seed + 1), rand_vec(n * i, seed + 2));
            let want_h = llama::swiglu_forward(&g, &u);
            let (want_dg, want_du) = llama::swiglu_backward(&dh, &g, &u);
            let (tg, tu, tdh) = (up(&gpu, "gate", &g), up(&gpu, "up", &u), up(&gpu, "dh", &dh));
            let th = up(&gpu, "h", &vec![9.0; n * i]);
            let (tdg, tdu) = (up(&gpu, "dgate", &vec![9.0; n * i]), up(&gpu, "dup", &vec![9.0; n * i]));
            let mut prog = Program::new();
            let v = |t| View::rows(t, i);
            swiglu::swiglu_forward(&gpu, &mut prog, v(&tg), v(&tu), v(&th), n, i);
            swiglu::swiglu_backward(&gpu, &mut prog, v(&tdh), v(&tg), v(&tu), v(&tdg), v(&tdu), n, i);
            prog.run(&gpu);
            assert_close(&format!("h {what}"), &gpu.read_blocking(&th).unwrap(), &want_h, 1e-5, 1e-6);
            assert_close(&format!("dgate {what}"), &gpu.read_blocking(&tdg).unwrap(), &want_dg, 1e-5, 1e-6);
            assert_close(&format!("dup {what}"), &gpu.read_blocking(&tdu).unwrap(), &want_du, 1e-5, 1e-6);
        }
    }
}

#[test]
fn packed_gate_up_halves() {
    // gate | up in one [n, 2i] buffer, as gate_proj and up_proj write it with ldc = 2i; the
    // gradients into the halves of another [n, 2i] buffer (two writable views of one buffer);
    // h and dh at an offset inside [n, i + 3] buffers
    let gpu = gpu();
    for n in NS {
        for i in [48, 97] {
            let what = format!("n={n} i={i}");
            let seed = (n * 100 + i) as u64;
            let gu: Vec<f32> = gate(n * 2 * i, seed).iter().zip(rand_vec(n * 2 * i, seed + 1)).enumerate()
                .map(|(k, (g, u))| if k % (2 * i) < i { *g } else { u })
                .collect();
            let (g, u) = halves(&gu, i);
            let ld = i + 3;
            let dhb = rand_vec(n * ld, seed + 2);
            let dh = padded(&dhb, ld, 2, i);
            let want_h = llama::swiglu_forward(&g, &u);
            let (want_dg, want_du) = llama::swiglu_backward(&dh, &g, &u);
            let (tgu, tdh) = (up(&gpu, "gate_up", &gu), up(&gpu, "dh", &dhb));
            let th = up(&gpu, "h", &vec![9.0; n * ld]);
            let tdgu = up(&gpu, "dgate_up", &vec![9.0; n * 2 * i]);
            let (gv, uv) = (View::cols(&tgu, 0, 2 * i), View::cols(&tgu, i, 2 * i));
            let mut prog = Program::new();
            swiglu::swiglu_forward(&gpu, &mut prog, gv, uv, View::cols(&th, 1, ld), n, i);
            let (dgv, duv) = (View::cols(&tdgu, 0, 2 * i), View::cols(&tdgu, i, 2 * i));
            swiglu::swiglu_backward(&gpu, &mut prog, View::cols(&tdh, 2, ld), gv, uv, dgv, duv, n, i);
            prog.run(&gpu);
            let hb = gpu.read_blocking(&th).unwrap();
            assert_close(&format!("h {what}"), &padded(&hb, ld, 1, i), &want_h, 1e-5, 1e-6);
            let outside = hb.iter().enumerate().filter(|(k, _)| !(1..=i).contains(&(k % ld))).all(|(_, v)| *v == 9.0);
            assert!(outside, "{what}: h written outside its view");
            let (dg, du) = halves(&gpu.read_blocking(&tdgu).unwrap(), i);
            assert_close(&format!("dgate {what}"), &dg, &want_dg, 1e-5, 1e-6);
            assert_close(&format!("dup {what}"), &du, &want_du, 1e-5, 1e-6);
            assert_eq!(gpu.read_blocking(&tgu).unwrap(), gu, "{what}: the inputs changed");
        }
    }
}
