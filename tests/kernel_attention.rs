//! Flash attention (shaders/attention.wgsl) against `reference::attention`: forward out and
//! lse, backward dq, dk, dv, on odd shapes (T = 1 and T not a multiple of any tile, head dims
//! 4, 5, 16, 24, 64, 128, 201, 3 query heads over 1 kv head, 4 over 2, B = 2), through GPT-2's
//! packed qkv views and through separate tensors whose views start at an offset and skip
//! columns; and once at GPT-2's real shape (hd 64, T = 1024). Tolerance: rtol 1e-4 (2e-4 for
//! gradients) plus atol 1e-5 (scaled by the largest reference value for gradients).
//!
//! Outputs start as NaN, so an element the kernels fail to write shows up; input elements
//! outside the views are NaN too (reading one poisons the result) and output elements
//! outside the views hold 7.0, which must survive.
mod common;
use common::*;
use webtune::gpu::{Gpu, Program, Tensor};
use webtune::kernels::attention::{attention_backward, attention_forward, Attention, Qkv};
use webtune::kernels::View;
use webtune::reference::attention as reference;

/// How q, k, v (and dq, dk, dv) are laid out.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// GPT-2: one [N, 3C] tensor (nkv = nh).
    Packed,
    /// One tensor each, the view at offset 5 with 3 unused columns after each row.
    Strided,
}

/// GPU results: out, lse, dq, dk, dv as packed host arrays.
struct Results {
    out: Vec<f32>,
    lse: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

const PAD_OFF: usize = 5;
const PAD_COLS: usize = 3;
const OUTSIDE: f32 = 7.0;

/// A tensor holding `rows` x `cols` (packed host data) as a strided view, `fill` elsewhere.
fn strided(gpu: &Gpu, name: &str, data: &[f32], rows: usize, cols: usize, fill: f32) -> Tensor {
    let ld = cols + PAD_COLS;
    let mut host = vec![fill; PAD_OFF + rows * ld + 2];
    for r in 0..rows {
        host[PAD_OFF + r * ld..][..cols].copy_from_slice(&data[r * cols..(r + 1) * cols]);
    }
    gpu.upload(name, &[host.len()], &host).unwrap()
}

/// Reads a strided tensor back: the view's packed data, checking the rest still holds OUTSIDE.
fn read_strided(gpu: &Gpu, what: &str, t: &Tensor, rows: usize, cols: usize) -> Vec<f32> {
    let host = gpu.read_blocking(t).unwrap();
    let ld = cols + PAD_COLS;
    let mut out = Vec::with_capacity(rows * cols);
    for (i, &x) in host.iter().enumerate() {
        let inside = i >= PAD_OFF && (i - PAD_OFF) / ld < rows && (i - PAD_OFF) % ld < cols;
        if inside {
            out.push(x);
        } else {
            assert_eq!(x, OUTSIDE, "{what}: element {i} outside the view was written");
        }
    }
    out
}

/// Forward then backward on the GPU, the program run `runs` times.
fn run(gpu: &Gpu, d: &Attention, layout: Layout, x: &Inputs, runs: usize) -> Results {
    let Inputs { q, k, v, dout } = x;
    let n = d.b * d.t;
    let (wq, wk) = (d.nh * d.hd, d.nkv * d.hd);
    let nan = |len: usize| vec![f32::NAN; len];
    let out = gpu.upload("out", &[n, wq], &nan(n * wq)).unwrap();
    let lse = gpu.upload("lse", &[d.stats_len()], &nan(d.stats_len())).unwrap();
    let delta = gpu.upload("delta", &[d.stats_len()], &nan(d.stats_len())).unwrap();
    let g_dout = gpu.upload("dout", &[n, wq], dout).unwrap();
    let read = |t: &Tensor| gpu.read_blocking(t).unwrap();
    let results = |prog: &Program, grads: &dyn Fn() -> (Vec<f32>, Vec<f32>, Vec<f32>)| {
        for _ in 0..runs {
            prog.run(gpu);
        }
        let (dq, dk, dv) = grads();
        Results { out: read(&out), lse: read(&lse), dq, dk, dv }
    };
    match layout {
        Layout::Packed => {
            assert_eq!(d.nh, d.nkv);
            let qkv = reference::join_qkv(q, k, v, n, wq);
            let g_qkv = gpu.upload("qkv", &[n, 3 * wq], &qkv).unwrap();
            let g_dqkv = gpu.upload("dqkv", &[n, 3 * wq], &nan(n * 3 * wq)).unwrap();
            let mut prog = Program::new();
            attention_forward(gpu, &mut prog, d, Qkv::packed(&g_qkv, wq), &out, &lse);
            let x = Qkv::packed(&g_qkv, wq);
            attention_backward(gpu, &mut prog, d, x, &out, &lse, &g_dout, &delta, Qkv::packed(&g_dqkv, wq));
            results(&prog, &|| reference::split_qkv(&read(&g_dqkv), n, wq))
        }
        Layout::Strided => {
            let (gq, gk, gv) = (
                strided(gpu, "q", q, n, wq, f32::NAN),
                strided(gpu, "k", k, n, wk, f32::NAN),
                strided(gpu, "v", v, n, wk, f32::NAN),
            );
            let (gdq, gdk, gdv) = (
                strided(gpu, "dq", &nan(n * wq), n, wq, OUTSIDE),
                strided(gpu, "dk", &nan(n * wk), n, wk, OUTSIDE),
                strided(gpu, "dv", &nan(n * wk), n, wk, OUTSIDE),
            );
            let views = |q, k, v, wq, wk| Qkv {
                q: View::cols(q, PAD_OFF, wq + PAD_COLS),
                k: View::cols(k, PAD_OFF, wk + PAD_COLS),
                v: View::cols(v, PAD_OFF, wk + PAD_COLS),
            };
            let x = views(&gq, &gk, &gv, wq, wk);
            let mut prog = Program::new();
            attention_forward(gpu, &mut prog, d, x, &out, &lse);
            attention_backward(gpu, &mut prog, d, x, &out, &lse, &g_dout, &delta, views(&gdq, &gdk, &gdv, wq, wk));
            results(&prog, &|| {
                (
                    read_strided(gpu, "dq", &gdq, n, wq),
                    read_strided(gpu, "dk", &gdk, n, wk),
                    read_strided(gpu, "dv", &gdv, n, wk),
                )
            })
        }
    }
}

/// q [N, nh·hd], k and v [N, nkv·hd], dout [N, nh·hd], packed.
struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    dout: Vec<f32>,
}

/// Random inputs for `d`: q and k scaled so that with scale 1/√hd the scores have a standard
/// deviation of about 2 (a softmax far from uniform).
fn inputs(d: &Attention, seed: u64) -> Inputs {
    let n = d.b * d.t;
    let amp = 2.5;
    let scaled = |len: usize, s: u64| rand_vec(len, s).iter().map(|x| amp * x).collect::<Vec<f32>>();
    Inputs {
        q: scaled(n * d.nh * d.hd, seed),
        k: scaled(n * d.nkv * d.hd, seed + 1),
        v: rand_vec(n * d.nkv * d.hd, seed + 2),
        dout: rand_vec(n * d.nh * d.hd, seed + 3),
    }
}

/// Gradient tolerance: rtol 2e-4 and an atol of 1e-5 of the tensor's largest entry (at least 1e-5).
fn check_grad(what: &str, got: &[f32], want: &[f32]) {
    let big = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    assert_close(what, got, want, 2e-4, 1e-5 * big);
}

fn check(gpu: &Gpu, d: Attention, layout: Layout, seed: u64) {
    let what = format!("{d:?} {layout:?}");
    let x = inputs(&d, seed);
    let got = run(gpu, &d, layout, &x, 1);
    let (out, lse) = reference::forward(&d, &x.q, &x.k, &x.v);
    let (dq, dk, dv) = reference::backward(&d, &x.q, &x.k, &x.v, &x.dout);
    assert_close(&format!("{what} out"), &got.out, &out, 1e-4, 1e-5);
    assert_close(&format!("{what} lse"), &got.lse, &lse, 1e-4, 1e-5);
    check_grad(&format!("{what} dq"), &got.dq, &dq);
    check_grad(&format!("{what} dk"), &got.dk, &dk);
    check_grad(&format!("{what} dv"), &got.dv, &dv);
}

#[test]
fn attention_matches_reference() {
    let gpu = gpu();
    // (b, t, nh, nkv, hd, layout)
    let cases = [
        (1, 1, 1, 1, 4, Layout::Packed),   // T = 1
        (2, 7, 3, 3, 5, Layout::Packed),   // hd 5, B 2
        (1, 130, 5, 5, 8, Layout::Packed), // three 64-query tiles, the last one partial
        (1, 65, 3, 1, 16, Layout::Strided), // 3 query heads over 1 kv head
        (2, 33, 4, 2, 24, Layout::Strided), // 4 over 2, hd 24 (padded to 32), B 2
        (1, 70, 2, 2, 64, Layout::Packed), // GPT-2's head dim
        (1, 40, 4, 1, 128, Layout::Strided), // Qwen3's head dim, 32-row tiles
        (1, 19, 2, 1, 201, Layout::Strided), // hd 201 (padded to 256), 16-row tiles
    ];
    for (i, &(b, t, nh, nkv, hd, layout)) in cases.iter().enumerate() {
        check(&gpu, Attention::gqa(b, t, nh, nkv, hd), layout, 100 + 10 * i as u64);
    }
}

/// The scale is the caller's, not 1/√hd.
#[test]
fn attention_uses_the_given_scale() {
    let gpu = gpu();
    let d = Attention { scale: 0.3, ..Attention::gqa(2, 21, 2, 1, 16) };
    check(&gpu, d, Layout::Strided, 7);
}

/// GPT-2's real attention shape: head dim 64, T = 1024 (B = 1, two heads, packed qkv).
#[test]
fn attention_matches_reference_at_gpt2_shape() {
    let gpu = gpu();
    check(&gpu, Attention::mha(1, 1024, 128, 2), Layout::Packed, 900);
}

/// Running the same program again gives the same bits (nothing depends on stale contents of
/// out, lse, delta or the gradients, and nothing is accumulated in a varying order).
#[test]
fn attention_is_repeatable() {
    let gpu = gpu();
    for (d, layout) in [
        (Attention::mha(2, 9, 8, 2), Layout::Packed),
        (Attention::gqa(1, 37, 6, 2, 24), Layout::Strided),
    ] {
        let x = inputs(&d, 3);
        let once = run(&gpu, &d, layout, &x, 1);
        let twice = run(&gpu, &d, layout, &x, 2);
        for (name, a, b) in [
            ("out", &once.out, &twice.out),
            ("lse", &once.lse, &twice.lse),
            ("dq", &once.dq, &twice.dq),
            ("dk", &once.dk, &twice.dk),
            ("dv", &once.dv, &twice.dv),
        ] {
            let bits = |x: &Vec<f32>| x.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
            assert_eq!(bits(a), bits(b), "{d:?} {name}");
        }
    }
}

/// Heads the kernels cannot run are refused with a message, before anything is dispatched:
/// by the shape check, and by a model whose head dim is too large.
#[test]
fn unsupported_heads_are_refused() {
    let msg = |nh, nkv, hd| Attention::check_heads(nh, nkv, hd).unwrap_err();
    assert!(msg(3, 2, 16).contains("nkv must divide nh"), "{}", msg(3, 2, 16));
    assert!(msg(4, 0, 16).contains("nkv must divide nh"));
    assert!(msg(2, 1, 257).contains("1..=256, not 257"), "{}", msg(2, 1, 257));
    assert!(msg(2, 1, 0).contains("not 0"));
    assert!(Attention::check_heads(6, 2, 256).is_ok() && Attention::check_heads(1, 1, 1).is_ok());

    let gpu = gpu();
    let cfg = webtune::model::ModelConfig::gpt2(1, 1, 260, 8, 4); // one head of 260
    let w = webtune::model::Weights::random(&cfg, 0);
    let m = webtune::model::gpt2::Gpt2Gpu::new(&gpu, &w, None, webtune::model::Trainable::None).unwrap();
    let err = webtune::model::gpt2::Activations::new(&gpu, &m, 1, 4, false, 1 << 20).err().expect("hd 260 must be refused");
    let text = err.to_string();
    assert!(text.contains("n_embd 260") && text.contains("n_head 1") && text.contains("not 260"), "{text}");
}
