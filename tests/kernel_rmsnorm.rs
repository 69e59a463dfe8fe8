//! shaders/rmsnorm.wgsl against reference::llama::{rmsnorm_forward, rmsnorm_backward} on odd
//! shapes: a Llama norm over rows (n in {1, 7, 33, 130}, widths c in {1, 48, 80, 96, 300, 770}:
//! 300 and 770 take the 256-lane variant and loop within a row), and Qwen3's per-head q/k norm
//! (hd in {16, 24, 128}) on heads inside a packed qkv buffer and on contiguous [N·heads, hd]
//! tensors. Backward: dx overwritten and accumulated, dw accumulated, through the direct
//! (≤ 128 groups) and chunked dw paths. Views: entries outside them must stay untouched.
mod common;
use common::*;
use webtune::gpu::{Gpu, Program, Tensor};
use webtune::kernels::rmsnorm::{self, RmsNorm};
use webtune::kernels::View;
use webtune::reference::llama;

/// Where a [n, heads·c] matrix lives inside a buffer of `len` values.
#[derive(Clone, Copy, Debug)]
struct Place {
    offset: usize,
    ld: usize,
    len: usize,
}

impl Place {
    fn packed(n: usize, width: usize) -> Place {
        Place { offset: 0, ld: width, len: n * width }
    }
    fn index(&self, i: usize, j: usize) -> usize {
        self.offset + i * self.ld + j
    }
    /// `m` [n, width] written into a buffer filled with `fill` elsewhere.
    fn pack(&self, m: &[f32], width: usize, fill: f32) -> Vec<f32> {
        let mut b = vec![fill; self.len];
        for (i, row) in m.chunks(width).enumerate() {
            for (j, v) in row.iter().enumerate() {
                b[self.index(i, j)] = *v;
            }
        }
        b
    }
    fn unpack(&self, b: &[f32], n: usize, width: usize) -> Vec<f32> {
        (0..n).flat_map(|i| (0..width).map(move |j| (i, j))).map(|(i, j)| b[self.index(i, j)]).collect()
    }
    /// Asserts every entry of `b` outside the view still equals the `fill` it was packed with.
    fn untouched(&self, what: &str, b: &[f32], before: &[f32], n: usize, width: usize) {
        let mut inside = vec![false; self.len];
        for i in 0..n {
            for j in 0..width {
                inside[self.index(i, j)] = true;
            }
        }
        for (k, (g, w)) in b.iter().zip(before).enumerate() {
            assert!(inside[k] || g == w, "{what}: entry {k} outside the view changed from {w} to {g}");
        }
    }
    fn view<'a>(&self, t: &'a Tensor) -> View<'a> {
        View::cols(t, self.offset, self.ld)
    }
}

fn weight(c: usize) -> Vec<f32> {
    rand_vec(c, 11).iter().map(|v| 1.0 + 0.5 * v).collect()
}

fn up(gpu: &Gpu, name: &str, data: &[f32]) -> Tensor {
    gpu.upload(name, &[data.len()], data).unwrap()
}

fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// Forward and backward of one shape on the given places; checks everything against the
/// reference run on the [n·heads, c] groups.
fn check(n: usize, heads: usize, c: usize, xp: Place, yp: Place, seed: u64) {
    let gpu = gpu();
    let what = format!("n={n} heads={heads} c={c} x={xp:?} y={yp:?}");
    let (width, groups) = (heads * c, n * heads);
    let d = RmsNorm { n, heads, c, eps: 1e-6 };
    // rows of mixed scale, one of them large, so mean(x²) is not ~1 everywhere
    let x: Vec<f32> =
        rand_vec(n * width, seed).iter().enumerate().map(|(k, v)| v * (1.0 + (k / c % 5) as f32 * 40.0)).collect();
    let w = weight(c);
    let (want_y, want_r) = llama::rmsnorm_forward(&x, &w, c, d.eps);

    let xb = xp.pack(&x, width, 5.0);
    let tx = up(&gpu, "x", &xb);
    let tw = up(&gpu, "w", &w);
    let y0 = yp.pack(&vec![9.0; n * width], width, -3.0);
    let ty = up(&gpu, "y", &y0);
    let tr = up(&gpu, "rstd", &vec![7.0; groups]);
    let mut prog = Program::new();
    rmsnorm::rmsnorm_forward(&gpu, &mut prog, &d, xp.view(&tx), &tw, yp.view(&ty), &tr);
    prog.run(&gpu);
    let yb = gpu.read_blocking(&ty).unwrap();
    assert_close(&format!("y {what}"), &yp.unpack(&yb, n, width), &want_y, 1e-5, 1e-5);
    yp.untouched(&format!("y {what}"), &yb, &y0, n, width);
    assert_close(&format!("rstd {what}"), &gpu.read_blocking(&tr).unwrap(), &want_r, 1e-5, 0.0);

    // backward: dy in y's place, dx in another buffer laid out like y
    let dy = rand_vec(n * width, seed + 1);
    let (want_dx, want_dw) = llama::rmsnorm_backward(&dy, &x, &w, &want_r, c);
    let tdy = up(&gpu, "dy", &yp.pack(&dy, width, 1.0));
    let dx0 = rand_vec(n * width, seed + 2);
    let dxb = yp.pack(&dx0, width, -4.0);
    let tdx = up(&gpu, "dx", &dxb);
    let dw0 = rand_vec(c, 21);
    let tdw = up(&gpu, "dw", &dw0);
    let tr = up(&gpu, "rstd", &want_r);
    // overwrite dx, dw += ...
    let mut prog = Program::new();
    rmsnorm::rmsnorm_backward(&gpu, &mut prog, &d, yp.view(&tdy), xp.view(&tx), &tw, &tr, yp.view(&tdx), false, Some(&tdw));
    prog.run(&gpu);
    let got = gpu.read_blocking(&tdx).unwrap();
    assert_close(&format!("dx {what}"), &yp.unpack(&got, n, width), &want_dx, 1e-4, 1e-5);
    yp.untouched(&format!("dx {what}"), &got, &dxb, n, width);
    assert_close(&format!("dw {what}"), &gpu.read_blocking(&tdw).unwrap(), &add(&dw0, &want_dw), 1e-4, 1e-4);
    // dx += ..., no dw
    let tdx = up(&gpu, "dx", &dxb);
    let mut prog = Program::new();
    rmsnorm::rmsnorm_backward(&gpu, &mut prog, &d, yp.view(&tdy), xp.view(&tx), &tw, &tr, yp.view(&tdx), true, None);
    prog.run(&gpu);
    let got = gpu.read_blocking(&tdx).unwrap();
    assert_close(&format!("dx += {what}"), &yp.unpack(&got, n, width), &add(&dx0, &want_dx), 1e-4, 1e-5);
}

#[test]
fn llama_norm_over_rows() {
    for n in [1, 7, 33, 130] {
        for c in [1, 48, 80, 96, 300, 770] {
            check(n, 1, c, Place::packed(n, c), Place::packed(n, c), (n * 1000 + c) as u64);
        }
    }
}

#[test]
fn qwen3_head_norm_inside_packed_qkv() {
    // q (3 heads) and k (1 head) inside qkv [n, 5·hd + 3]; outputs into another packed buffer
    // with a different offset and stride
    for hd in [16, 24, 128] {
        for n in [1, 7, 33] {
            let ld = 5 * hd + 3;
            let len = n * ld;
            let out = Place { offset: 2, ld: ld + 1, len: n * (ld + 1) + 2 };
            check(n, 3, hd, Place { offset: 0, ld, len }, out, 7 * n as u64 + hd as u64);
            let k = Place { offset: 3 * hd, ld, len };
            check(n, 1, hd, k, Place { offset: 3 * hd + 1, ..out }, 9 * n as u64 + hd as u64);
        }
    }
}

#[test]
fn qwen3_head_norm_on_contiguous_heads() {
    // [n, heads·hd] with heads groups equals [n·heads, hd] with one group: both layouts
    for hd in [16, 128] {
        let (n, heads) = (33, 4); // 132 groups: the chunked dw path
        let p = Place::packed(n, heads * hd);
        check(n, heads, hd, p, p, hd as u64);
        let p = Place::packed(n * heads, hd);
        check(n * heads, 1, hd, p, p, hd as u64);
    }
}

#[test]
fn dw_chunked_over_many_groups() {
    // 1000 groups = 8 chunks (the last partial), c = 130: 3 column blocks (the last partial)
    check(250, 4, 130, Place::packed(250, 520), Place::packed(250, 520), 5);
}

#[test]
fn forward_uses_eps_argument() {
    // zero rows: mean(x²) = 0, so rstd = 1 / √eps exactly shows which eps was used
    let gpu = gpu();
    let (n, c) = (3, 7);
    let d = RmsNorm { n, heads: 1, c, eps: 0.25 };
    let tx = gpu.zeros("x", &[n, c]).unwrap();
    let tw = up(&gpu, "w", &weight(c));
    let (ty, tr) = (gpu.zeros("y", &[n, c]).unwrap(), gpu.zeros("rstd", &[n]).unwrap());
    let mut prog = Program::new();
    rmsnorm::rmsnorm_forward(&gpu, &mut prog, &d, View::rows(&tx, c), &tw, View::rows(&ty, c), &tr);
    prog.run(&gpu);
    assert_eq!(gpu.read_blocking(&tr).unwrap(), vec![2.0; n]);
    assert_eq!(gpu.read_blocking(&ty).unwrap(), vec![0.0; n * c]);
}
