//! shaders/optimizer.wgsl against reference::ops::{grad_norm, clip_coef, adamw_step}:
//! odd tensor sizes, clipping active / inactive / off, three consecutive AdamW steps
//! replaying one prepared program, and a tensor large enough for a 2D grid.
mod common;
use common::*;
use webtune::gpu::{Gpu, Program, Tensor};
use webtune::kernels::optimizer::{adamw, AdamWStep, GradNorm};
use webtune::reference::ops::{self, AdamW};

const H: AdamW = AdamW {
    lr: 1e-2,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    weight_decay: 0.1,
};

struct Param {
    p: Tensor,
    g: Tensor,
    m: Tensor,
    v: Tensor,
    host_p: Vec<f32>,
    host_m: Vec<f32>,
    host_v: Vec<f32>,
}

fn param(gpu: &Gpu, n: usize, seed: u64) -> Param {
    let host_p = rand_vec(n, seed);
    Param {
        p: gpu.upload("p", &[n], &host_p).unwrap(),
        g: gpu.zeros("g", &[n]).unwrap(),
        m: gpu.zeros("m", &[n]).unwrap(),
        v: gpu.zeros("v", &[n]).unwrap(),
        host_p,
        host_m: vec![0.0; n],
        host_v: vec![0.0; n],
    }
}

/// Runs `steps` AdamW steps with fresh gradients each step, through GradNorm with
/// `max_norm`, and checks norm, clip, p, m and v after every step.
fn run_steps(sizes: &[usize], max_norm: f32, grad_scale: f32, steps: u32, expect_clipping: Option<bool>) {
    let gpu = gpu();
    let mut params: Vec<Param> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| param(&gpu, n, 100 + i as u64))
        .collect();
    let step_t = gpu.zeros("adamw.step", &[8]).unwrap();
    let mut prog = Program::new();
    let grads: Vec<&Tensor> = params.iter().map(|p| &p.g).collect();
    let norm = GradNorm::new(&gpu, &mut prog, &grads, max_norm).unwrap();
    for p in &params {
        adamw(&gpu, &mut prog, &step_t, &norm.out, &p.p, &p.g, &p.m, &p.v);
    }
    for t in 1..=steps {
        let host_g: Vec<Vec<f32>> = params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                rand_vec(p.host_p.len(), 1000 * t as u64 + i as u64)
                    .iter()
                    .map(|x| x * grad_scale)
                    .collect()
            })
            .collect();
        for (p, g) in params.iter().zip(&host_g) {
            gpu.write(&p.g, g);
        }
        gpu.write(&step_t, &AdamWStep::new(H, t).as_f32s());
        prog.run(&gpu);

        let refs: Vec<&[f32]> = host_g.iter().map(|g| g.as_slice()).collect();
        let want_norm = ops::grad_norm(&refs);
        let want_clip = if max_norm > 0.0 {
            ops::clip_coef(want_norm, max_norm)
        } else {
            1.0
        };
        if let Some(c) = expect_clipping {
            assert_eq!(
                want_clip < 1.0,
                c,
                "test setup: clipping should be {c} (norm {want_norm})"
            );
        }
        let got = gpu.read_blocking(&norm.out).unwrap();
        assert_close(&format!("step {t} norm"), &got[..1], &[want_norm], 1e-5, 1e-7);
        assert_close(&format!("step {t} clip"), &got[1..2], &[want_clip], 1e-5, 1e-7);

        for (i, (p, g)) in params.iter_mut().zip(&host_g).enumerate() {
            let gc: Vec<f32> = g.iter().map(|x| x * want_clip).collect();
            ops::adamw_step(&mut p.host_p, &gc, &mut p.host_m, &mut p.host_v, t, H);
            let n = p.host_p.len();
            assert_close(
                &format!("step {t} tensor {i} (n={n}) p"),
                &gpu.read_blocking(&p.p).unwrap(),
                &p.host_p,
                1e-5,
                1e-7,
            );
            assert_close(
                &format!("step {t} tensor {i} (n={n}) m"),
                &gpu.read_blocking(&p.m).unwrap(),
                &p.host_m,
                1e-5,
                1e-7,
            );
            assert_close(
                &format!("step {t} tensor {i} (n={n}) v"),
                &gpu.read_blocking(&p.v).unwrap(),
                &p.host_v,
                1e-5,
                1e-7,
            );
        }
    }
}

const SIZES: [usize; 4] = [1, 7, 1000, 300_001];

#[test]
fn adamw_three_steps_with_clipping() {
    // norm ~ sqrt(301009 / 3) ~ 317 >> 1
    run_steps(&SIZES, 1.0, 1.0, 3, Some(true));
}

#[test]
fn adamw_three_steps_without_clipping() {
    run_steps(&SIZES, 1.0e4, 1.0, 3, Some(false));
}

#[test]
fn adamw_clipping_off_when_max_norm_not_positive() {
    run_steps(&[7, 1000], 0.0, 3.0, 2, None);
}

#[test]
fn adamw_on_a_2d_grid() {
    // more than 65535 workgroups of 256
    run_steps(&[256 * 65535 + 3], 1.0, 1.0, 1, Some(true));
}

#[test]
fn grad_norm_is_deterministic_and_skips_empty_tensors() {
    let gpu = gpu();
    let data: Vec<Vec<f32>> = [300_001usize, 0, 33, 65_537]
        .iter()
        .enumerate()
        .map(|(i, &n)| rand_vec(n, 7 + i as u64))
        .collect();
    let tensors: Vec<Tensor> = data.iter().map(|d| gpu.upload("g", &[d.len()], d).unwrap()).collect();
    let refs: Vec<&Tensor> = tensors.iter().collect();
    let mut prog = Program::new();
    let norm = GradNorm::new(&gpu, &mut prog, &refs, 2.0).unwrap();
    prog.run(&gpu);
    let first = gpu.read_blocking(&norm.out).unwrap();
    let host: Vec<&[f32]> = data.iter().map(|d| d.as_slice()).collect();
    let want = ops::grad_norm(&host);
    assert_close("norm", &first[..1], &[want], 1e-5, 1e-7);
    assert_close("clip", &first[1..], &[ops::clip_coef(want, 2.0)], 1e-5, 1e-7);
    for _ in 0..3 {
        prog.run(&gpu);
        let again = gpu.read_blocking(&norm.out).unwrap();
        assert_eq!(first[0].to_bits(), again[0].to_bits(), "norm differs between runs");
    }

    // no gradients at all: norm 0, clip 1
    let mut prog = Program::new();
    let none = GradNorm::new(&gpu, &mut prog, &[], 1.0).unwrap();
    prog.run(&gpu);
    assert_eq!(gpu.read_blocking(&none.out).unwrap()[..2], [0.0, 1.0]);
}

#[test]
fn adamw_step_scalars_match_pytorch_formulas() {
    let s = AdamWStep::new(H, 3);
    let bc1 = 1.0 - 0.9f32 as f64 * 0.9f32 as f64 * 0.9f32 as f64;
    let bc2 = 1.0 - (0.999f32 as f64).powi(3);
    assert_close("step_size", &[s.step_size], &[(1e-2f32 as f64 / bc1) as f32], 1e-7, 0.0);
    assert_close("bc2_sqrt", &[s.bc2_sqrt], &[bc2.sqrt() as f32], 1e-7, 0.0);
    // the uniform the shader reads, by hand: lr, beta1, beta2, eps, weight decay,
    // lr / (1 - 0.9³) = 0.01 / 0.271, sqrt(1 - β2³) = 0.0547445 with β2 = 0.99900001287 (the f32
    // nearest 0.999; 1 - β2³ cancels, so 0.999 itself would give 0.0547449), padding
    let want = [0.01, 0.9, 0.999, 1e-8, 0.1, 0.036_900_36, 0.054_744_52, 0.0];
    assert_close("uniform", &s.as_f32s(), &want, 1e-6, 0.0);
}
