//! Finite-difference checks of the CPU oracle (src/reference): every op's analytic backward
//! against central differences of a random projection L = Σ r_i·y_i of its forward, on tiny odd
//! shapes; then the whole GPT-2 (full fine-tuning tied and untied, LoRA on all or some linears,
//! ignored targets) on a sample of entries of every gradient tensor; then AdamW and clipping
//! against hand-computed values.
//!
//! The forward runs in f32 (with f64 accumulation inside each op), so differences use a
//! fairly large step (1e-2 on O(1) inputs) and the loss/projection is summed in f64.
//! Tolerances: ops rtol 2e-3 + atol 2e-4; model rtol 5e-3 plus an atol of 2e-4 of the tensor's
//! largest gradient. Observed errors stay below 1/5 of these, yet a sign flip, a missing term or
//! a missing LoRA scale is off by O(1) relative on the largest entry (which is always sampled).
mod common;
use common::rand_vec;

use webtune::model::lora::LoraModule;
use webtune::model::weights::HostTensor;
use webtune::model::{Gpt2Config, Gpt2Weights, Linear, LoraAdapter, LoraConfig};
use webtune::reference::gpt2::{forward_logits, loss_and_grads, Gradients};
use webtune::reference::attention::{self, Attention};
use webtune::reference::{llama, ops};
use webtune::rng::Rng;

/// L = Σ r_i · y_i in f64.
fn proj(y: &[f32], r: &[f32]) -> f64 {
    assert_eq!(y.len(), r.len());
    y.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Central difference of `f` at x[i], with the step actually representable in f32.
fn central(x: &[f32], i: usize, eps: f32, f: &dyn Fn(&[f32]) -> f64) -> f64 {
    let mut xp = x.to_vec();
    let mut xm = x.to_vec();
    xp[i] = x[i] + eps;
    xm[i] = x[i] - eps;
    (f(&xp) - f(&xm)) / (xp[i] as f64 - xm[i] as f64)
}

/// Checks analytic[i] against central differences for every i in `idx`:
/// |fd - an| <= atol + rtol·|fd|. Returns the worst error relative to the tolerance.
#[allow(clippy::too_many_arguments)]
fn check_grad(
    what: &str,
    x: &[f32],
    analytic: &[f32],
    idx: &[usize],
    eps: f32,
    rtol: f64,
    atol: f64,
    f: &dyn Fn(&[f32]) -> f64,
) {
    assert_eq!(
        x.len(),
        analytic.len(),
        "{what}: gradient has {} entries for {} inputs",
        analytic.len(),
        x.len()
    );
    let mut worst = 0.0f64;
    for &i in idx {
        let fd = central(x, i, eps, f);
        let an = analytic[i] as f64;
        let tol = atol + rtol * fd.abs();
        assert!(an.is_finite(), "{what}[{i}]: analytic {an} not finite");
        assert!(
            (fd - an).abs() <= tol,
            "{what}[{i}]: analytic {an:e} vs finite difference {fd:e} (tol {tol:e})"
        );
        worst = worst.max((fd - an).abs() / tol);
    }
    eprintln!("{what}: worst |fd - analytic| / tol = {worst:.3}");
}

fn all(n: usize) -> Vec<usize> {
    (0..n).collect()
}

const EPS: f32 = 1e-2;
const RTOL: f64 = 2e-3;
const ATOL: f64 = 2e-4;

// ---------------------------------------------------------------- ops

#[test]
fn fd_linear() {
    let (n, fin, fout) = (3, 5, 7);
    let (x, w, b, r) = (
        rand_vec(n * fin, 1),
        rand_vec(fin * fout, 2),
        rand_vec(fout, 3),
        rand_vec(n * fout, 4),
    );
    let (dx, dw, db) = ops::linear_backward(&r, &x, &w, n, fin, fout);
    check_grad("linear dx", &x, &dx, &all(x.len()), EPS, RTOL, ATOL, &|x| {
        proj(&ops::linear_forward(x, &w, &b, n, fin, fout), &r)
    });
    check_grad("linear dw", &w, &dw, &all(w.len()), EPS, RTOL, ATOL, &|w| {
        proj(&ops::linear_forward(&x, w, &b, n, fin, fout), &r)
    });
    check_grad("linear db", &b, &db, &all(b.len()), EPS, RTOL, ATOL, &|b| {
        proj(&ops::linear_forward(&x, &w, b, n, fin, fout), &r)
    });
}

#[test]
fn fd_matmul_transposes_agree_with_explicit_transpose() {
    // matmul's ta/tb flags, which every backward relies on, against an explicit transpose.
    let (m, n, k) = (3, 5, 7);
    let (a, b) = (rand_vec(m * k, 5), rand_vec(k * n, 6));
    let tr = |x: &[f32], rows: usize, cols: usize| -> Vec<f32> {
        (0..cols)
            .flat_map(|j| (0..rows).map(move |i| (i, j)))
            .map(|(i, j)| x[i * cols + j])
            .collect()
    };
    let c = ops::matmul(&a, &b, m, n, k, false, false);
    let c_ta = ops::matmul(&tr(&a, m, k), &b, m, n, k, true, false);
    let c_tb = ops::matmul(&a, &tr(&b, k, n), m, n, k, false, true);
    let c_tt = ops::matmul(&tr(&a, m, k), &tr(&b, k, n), m, n, k, true, true);
    assert_eq!(c, c_ta);
    assert_eq!(c, c_tb);
    assert_eq!(c, c_tt);
    let want: f64 = (0..k).map(|p| a[k + p] as f64 * b[p * n + 2] as f64).sum();
    assert!((c[n + 2] as f64 - want).abs() < 1e-6);
}

#[test]
fn fd_layernorm() {
    let (n, c, eps) = (3, 7, 1e-5);
    let x: Vec<f32> = rand_vec(n * c, 7).iter().map(|v| 2.0 * v + 0.5).collect();
    let gamma: Vec<f32> = rand_vec(c, 8).iter().map(|v| 1.0 + 0.5 * v).collect();
    let beta = rand_vec(c, 9);
    let r = rand_vec(n * c, 10);
    let (_, mean, rstd) = ops::layernorm_forward(&x, &gamma, &beta, c, eps);
    let (dx, dg, db) = ops::layernorm_backward(&r, &x, &gamma, &mean, &rstd, c);
    let f = |x: &[f32], g: &[f32], b: &[f32]| proj(&ops::layernorm_forward(x, g, b, c, eps).0, &r);
    check_grad("layernorm dx", &x, &dx, &all(x.len()), EPS, RTOL, ATOL, &|x| {
        f(x, &gamma, &beta)
    });
    check_grad("layernorm dgamma", &gamma, &dg, &all(c), EPS, RTOL, ATOL, &|g| {
        f(&x, g, &beta)
    });
    check_grad("layernorm dbeta", &beta, &db, &all(c), EPS, RTOL, ATOL, &|b| {
        f(&x, &gamma, b)
    });
}

#[test]
fn fd_gelu() {
    let x: Vec<f32> = rand_vec(33, 11).iter().map(|v| 3.0 * v).collect();
    let r = rand_vec(33, 12);
    let dx = ops::gelu_backward(&x, &r);
    check_grad("gelu dx", &x, &dx, &all(x.len()), EPS, RTOL, ATOL, &|x| {
        proj(&ops::gelu_forward(x), &r)
    });
    // gelu_new at a few points (HF formula evaluated by hand): gelu(0) = 0, gelu(1) ≈ 0.841192, gelu(-1) ≈ -0.158808
    let y = ops::gelu_forward(&[0.0, 1.0, -1.0]);
    assert_eq!(y[0], 0.0);
    assert!(
        (y[1] - 0.841_192).abs() < 1e-5 && (y[2] + 0.158_808).abs() < 1e-5,
        "{y:?}"
    );
}

#[test]
fn fd_attention() {
    // (b, t, nh, nkv, hd, scale): multi-head, 3 query heads over 1 kv head, 4 over 2, T = 1
    for (b, t, nh, nkv, hd, scale) in [(2, 5, 3, 3, 2, 0.7), (1, 4, 3, 1, 3, 0.5), (2, 3, 4, 2, 2, 1.3), (1, 1, 2, 1, 3, 0.6)] {
        let d = Attention { scale, ..Attention::gqa(b, t, nh, nkv, hd) };
        let n = b * t;
        let q = rand_vec(n * nh * hd, 13);
        let k = rand_vec(n * nkv * hd, 14);
        let v = rand_vec(n * nkv * hd, 15);
        let r = rand_vec(n * nh * hd, 16);
        let (out, lse) = attention::forward(&d, &q, &k, &v);
        // position 0 attends only to itself (out = v[0] of its kv head); every row's
        // probabilities exp(score - lse) over keys j <= i sum to 1
        for bi in 0..b {
            for h in 0..nh {
                let g = h / (nh / nkv);
                let qrow = |i: usize| (bi * t + i) * nh * hd + h * hd;
                let krow = |j: usize| (bi * t + j) * nkv * hd + g * hd;
                assert_eq!(out[qrow(0)..qrow(0) + hd], v[krow(0)..krow(0) + hd], "t=0 output is v[0]");
                for i in 0..t {
                    let mass: f64 = (0..=i)
                        .map(|j| {
                            let s: f64 = (0..hd).map(|e| q[qrow(i) + e] as f64 * k[krow(j) + e] as f64).sum();
                            (s * scale as f64 - lse[(bi * nh + h) * t + i] as f64).exp()
                        })
                        .sum();
                    assert!((mass - 1.0).abs() < 1e-5, "lse of row {i}: probabilities sum to {mass}");
                }
            }
        }
        let (dq, dk, dv) = attention::backward(&d, &q, &k, &v, &r);
        let what = format!("attention {d:?}");
        let f = |q: &[f32], k: &[f32], v: &[f32]| proj(&attention::forward(&d, q, k, v).0, &r);
        check_grad(&format!("{what} dq"), &q, &dq, &all(q.len()), EPS, RTOL, ATOL, &|x| f(x, &k, &v));
        check_grad(&format!("{what} dk"), &k, &dk, &all(k.len()), EPS, RTOL, ATOL, &|x| f(&q, x, &v));
        check_grad(&format!("{what} dv"), &v, &dv, &all(v.len()), EPS, RTOL, ATOL, &|x| f(&q, &k, x));
    }
}

#[test]
fn fd_embedding() {
    let (b, t, c, vocab) = (2, 3, 5, 7);
    let tokens = [3u32, 1, 3, 6, 3, 0]; // repeats: the backward must scatter-add
    let (wte, wpe, r) = (rand_vec(vocab * c, 15), rand_vec(t * c, 16), rand_vec(b * t * c, 17));
    let (dwte, dwpe) = ops::embedding_backward(&r, &tokens, b, t, c, vocab);
    check_grad("embedding dwte", &wte, &dwte, &all(wte.len()), EPS, RTOL, ATOL, &|w| {
        proj(&ops::embedding_forward(&tokens, w, &wpe, b, t, c), &r)
    });
    check_grad("embedding dwpe", &wpe, &dwpe, &all(wpe.len()), EPS, RTOL, ATOL, &|w| {
        proj(&ops::embedding_forward(&tokens, &wte, w, b, t, c), &r)
    });
}

/// Mean cross-entropy in f64 over targets >= 0 (independent of ops::cross_entropy).
fn ce64(logits: &[f32], targets: &[i32], v: usize) -> f64 {
    let (mut total, mut count) = (0.0f64, 0usize);
    for (i, &y) in targets.iter().enumerate() {
        if y < 0 {
            continue;
        }
        let row: Vec<f64> = logits[i * v..(i + 1) * v].iter().map(|&z| z as f64).collect();
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + row.iter().map(|z| (z - max).exp()).sum::<f64>().ln();
        total += lse - row[y as usize];
        count += 1;
    }
    if count == 0 {
        0.0
    } else {
        total / count as f64
    }
}

#[test]
fn fd_cross_entropy() {
    let v = 7;
    let targets = [2i32, -100, 6, 0, -1];
    let logits: Vec<f32> = rand_vec(targets.len() * v, 18).iter().map(|x| 3.0 * x).collect();
    let (loss, losses, dlogits) = ops::cross_entropy(&logits, &targets, v);
    assert!((loss as f64 - ce64(&logits, &targets, v)).abs() < 1e-6);
    assert_eq!((losses[1], losses[4]), (0.0, 0.0), "ignored rows have no loss");
    assert!(
        dlogits[v..2 * v].iter().all(|&g| g == 0.0),
        "ignored rows have no gradient"
    );
    let mean_of_rows = losses.iter().map(|&l| l as f64).sum::<f64>() / 3.0;
    assert!((loss as f64 - mean_of_rows).abs() < 1e-6);
    check_grad(
        "cross_entropy dlogits",
        &logits,
        &dlogits,
        &all(logits.len()),
        EPS,
        RTOL,
        ATOL,
        &|z| ce64(z, &targets, v),
    );
    // every target ignored: zero loss and zero gradient, no NaN
    let (loss0, _, d0) = ops::cross_entropy(&logits, &[-100; 5], v);
    assert_eq!(loss0, 0.0);
    assert!(d0.iter().all(|&g| g == 0.0));
}

#[test]
fn fd_lm_head_loss() {
    let (c, vocab) = (5, 7);
    let targets = [4i32, -100, 0];
    let n = targets.len();
    let (h, wte) = (
        rand_vec(n * c, 19),
        rand_vec(vocab * c, 20).iter().map(|x| 2.0 * x).collect::<Vec<f32>>(),
    );
    let (loss, dh, dwte) = ops::lm_head_loss(&h, &wte, &targets, c, vocab);
    let f = |h: &[f32], w: &[f32]| ce64(&ops::matmul(h, w, n, vocab, c, false, true), &targets, vocab);
    assert!((loss as f64 - f(&h, &wte)).abs() < 1e-6);
    check_grad("lm_head_loss dh", &h, &dh, &all(h.len()), EPS, RTOL, ATOL, &|h| {
        f(h, &wte)
    });
    check_grad(
        "lm_head_loss dwte",
        &wte,
        &dwte,
        &all(wte.len()),
        EPS,
        RTOL,
        ATOL,
        &|w| f(&h, w),
    );
}

#[test]
fn fd_lora_branch() {
    let (n, fin, fout, r, scale) = (3, 5, 7, 2, 1.5f32);
    let (x, a, b, dy) = (
        rand_vec(n * fin, 21),
        rand_vec(r * fin, 22),
        rand_vec(fout * r, 23),
        rand_vec(n * fout, 24),
    );
    let (delta, u) = ops::lora_forward(&x, &a, &b, scale, n, fin, fout, r);
    // delta = scale · x · (Aᵀ Bᵀ), i.e. the merged Conv1D weight Aᵀ·Bᵀ [in, out]
    let merged = ops::matmul(&a, &b, fin, fout, r, true, true);
    let want: Vec<f32> = ops::matmul(&x, &merged, n, fout, fin, false, false)
        .iter()
        .map(|v| v * scale)
        .collect();
    common::assert_close("lora delta vs merged", &delta, &want, 1e-5, 1e-6);
    let (dx, da, db) = ops::lora_backward(&dy, &x, &u, &a, &b, scale, n, fin, fout, r);
    let f = |x: &[f32], a: &[f32], b: &[f32]| proj(&ops::lora_forward(x, a, b, scale, n, fin, fout, r).0, &dy);
    check_grad("lora dx", &x, &dx, &all(x.len()), EPS, RTOL, ATOL, &|x| f(x, &a, &b));
    check_grad("lora da", &a, &da, &all(a.len()), EPS, RTOL, ATOL, &|a| f(&x, a, &b));
    check_grad("lora db", &b, &db, &all(b.len()), EPS, RTOL, ATOL, &|b| f(&x, &a, b));
}

#[test]
fn residual_is_elementwise_sum() {
    assert_eq!(
        ops::residual_forward(&[1.0, -2.0, 0.5], &[0.25, 2.0, 1.0]),
        vec![1.25, 0.0, 1.5]
    );
}

// ---------------------------------------------------------------- Llama-family ops

#[test]
fn fd_rmsnorm() {
    let (n, c, eps) = (3, 7, 1e-5);
    let x: Vec<f32> = rand_vec(n * c, 41).iter().map(|v| 2.0 * v + 0.3).collect();
    let w: Vec<f32> = rand_vec(c, 42).iter().map(|v| 1.0 + 0.5 * v).collect();
    let r = rand_vec(n * c, 43);
    let (_, rstd) = llama::rmsnorm_forward(&x, &w, c, eps);
    let (dx, dw) = llama::rmsnorm_backward(&r, &x, &w, &rstd, c);
    let f = |x: &[f32], w: &[f32]| proj(&llama::rmsnorm_forward(x, w, c, eps).0, &r);
    check_grad("rmsnorm dx", &x, &dx, &all(x.len()), EPS, RTOL, ATOL, &|x| f(x, &w));
    check_grad("rmsnorm dw", &w, &dw, &all(c), EPS, RTOL, ATOL, &|w| f(&x, w));
    // by hand: x = (3, 4), eps 0: mean(x²) = 12.5, y = w · x / √12.5
    let (y, rstd) = llama::rmsnorm_forward(&[3.0, 4.0], &[1.0, 2.0], 2, 0.0);
    let s = 12.5f64.sqrt();
    assert_eq!(rstd, vec![(1.0 / s) as f32]);
    assert!((y[0] as f64 - 3.0 / s).abs() < 1e-6 && (y[1] as f64 - 8.0 / s).abs() < 1e-6, "{y:?}");
}

#[test]
fn fd_rope() {
    use webtune::model::rope::{Rope, RopeScaling};
    // rows 0..4 of two sequences of t = 2 starting at position 3; 2 heads of hd 6
    let (n, heads, hd, t, start) = (4, 2, 6, 2, 3);
    let table = Rope { head_dim: hd, theta: 10000.0, scaling: RopeScaling::None }.table(start + t).unwrap();
    let x = rand_vec(n * heads * hd, 44);
    let r = rand_vec(n * heads * hd, 45);
    let dx = llama::rope_backward(&r, &table, heads, hd, t, start);
    check_grad("rope dx", &x, &dx, &all(x.len()), EPS, RTOL, ATOL, &|x| {
        proj(&llama::rope_forward(x, &table, heads, hd, t, start), &r)
    });
    // backward undoes forward (a rotation), and position 0 is the identity
    let back = llama::rope_backward(&llama::rope_forward(&x, &table, heads, hd, t, start), &table, heads, hd, t, start);
    assert!(back.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-6));
    assert_eq!(llama::rope_forward(&x, &table, heads, hd, 1, 0), x);
    // by hand, HF's q·cos + rotate_half(q)·sin for one pair (k = 0, inv_freq 1) at position 1
    let y = llama::rope_forward(&x[..hd], &table, 1, hd, 1, 1);
    let (c, s) = (1f64.cos(), 1f64.sin());
    let (a, b) = (x[0] as f64, x[3] as f64);
    assert!((y[0] as f64 - (a * c - b * s)).abs() < 1e-6 && (y[3] as f64 - (b * c + a * s)).abs() < 1e-6);
}

#[test]
fn fd_swiglu() {
    let n = 40;
    let gate: Vec<f32> = rand_vec(n, 46).iter().map(|v| 6.0 * v).chain([30.0, -30.0, 90.0, -90.0]).collect();
    let up = rand_vec(n + 4, 47);
    let r = rand_vec(n + 4, 48);
    let (dgate, dup) = llama::swiglu_backward(&r, &gate, &up);
    check_grad("swiglu dgate", &gate, &dgate, &all(gate.len()), EPS, RTOL, ATOL, &|g| {
        proj(&llama::swiglu_forward(g, &up), &r)
    });
    check_grad("swiglu dup", &up, &dup, &all(up.len()), EPS, RTOL, ATOL, &|u| {
        proj(&llama::swiglu_forward(&gate, u), &r)
    });
    // by hand: silu(0) = 0, silu(1) = 1/(1 + e⁻¹), silu(±1e30) = 1e30 / -0 (no overflow to NaN)
    let h = llama::swiglu_forward(&[0.0, 1.0, 1e30, -1e30, -100.0], &[1.0; 5]);
    assert_eq!(h[0], 0.0);
    assert!((h[1] as f64 - 1.0 / (1.0 + (-1f64).exp())).abs() < 1e-7);
    assert_eq!(h[2], 1e30);
    assert_eq!(h[3], 0.0);
    assert!(h[4] <= 0.0 && h[4] > -1e-40);
    let (dg, _) = llama::swiglu_backward(&[1.0; 3], &[1e30, -1e30, 0.0], &[1.0; 3]);
    assert_eq!(dg, vec![1.0, 0.0, 0.5]);
}

// ---------------------------------------------------------------- whole model

const B: usize = 2;
const T: usize = 5;

fn cfg() -> Gpt2Config {
    Gpt2Config::new(2, 3, 12, 23, 16)
}

/// Weights far from GPT-2's tiny init so every gradient is sizeable: matrices ±0.4, embeddings
/// ±0.5, LayerNorm gains 1 ± 0.3, biases ±0.1. `untied` adds an `lm_head.weight`.
fn weights(seed: u64, untied: bool) -> Gpt2Weights {
    let cfg = cfg();
    let mut w = Gpt2Weights::random(&cfg, seed);
    if untied {
        let (v, c) = (cfg.vocab_size, cfg.n_embd);
        w.tensors
            .insert("lm_head.weight".into(), HostTensor::new(&[v, c], vec![0.0; v * c]));
    }
    let mut rng = Rng::new(seed + 100);
    for (name, t) in w.tensors.iter_mut() {
        let (center, spread) = if name.contains("ln_") && name.ends_with(".weight") {
            (1.0, 0.3)
        } else if name.ends_with(".bias") {
            (0.0, 0.1)
        } else if name.starts_with("h.") {
            (0.0, 0.4)
        } else {
            (0.0, 0.5)
        };
        t.data
            .iter_mut()
            .for_each(|v| *v = center + spread * rng.uniform_in(-1.0, 1.0));
    }
    w
}

/// LoRA r=2, alpha=3 (scale 1.5) on the given (layer, linear)s, with non-zero A and B.
fn adapter(mods: &[(usize, Linear)], seed: u64) -> LoraAdapter {
    let c = cfg().n_embd;
    let r = 2;
    let mut rng = Rng::new(seed);
    let mut rand = |n: usize, s: f32| (0..n).map(|_| s * rng.uniform_in(-1.0, 1.0)).collect::<Vec<f32>>();
    let modules = mods
        .iter()
        .map(|&(layer, linear)| {
            let (fin, fout) = linear.dims(c);
            LoraModule {
                layer,
                linear,
                a: HostTensor::new(&[r, fin], rand(r * fin, 0.5)),
                b: HostTensor::new(&[fout, r], rand(fout * r, 0.5)),
            }
        })
        .collect();
    LoraAdapter {
        config: LoraConfig {
            r,
            alpha: 3.0,
            targets: vec!["c_attn".into(), "c_proj".into(), "c_fc".into()],
            dropout: 0.0,
        },
        modules,
    }
}

fn all_modules() -> Vec<(usize, Linear)> {
    (0..cfg().n_layer)
        .flat_map(|l| Linear::ALL.map(|lin| (l, lin)))
        .collect()
}

fn tokens() -> Vec<u32> {
    vec![3, 17, 0, 22, 3, 9, 9, 1, 14, 5]
}

/// The model's loss in f64 from its f32 logits.
fn model_loss(w: &Gpt2Weights, lora: Option<&LoraAdapter>, targets: &[i32]) -> f64 {
    ce64(&forward_logits(w, lora, &tokens(), B, T), targets, w.config.vocab_size)
}

/// Indices to check in a gradient: its largest entry plus `k` random ones.
fn sample(g: &[f32], k: usize, rng: &mut Rng) -> Vec<usize> {
    let argmax = (0..g.len())
        .max_by(|&i, &j| g[i].abs().total_cmp(&g[j].abs()))
        .unwrap_or(0);
    let mut idx = vec![argmax];
    idx.extend((0..k).map(|_| rng.below(g.len())));
    idx
}

const MODEL_RTOL: f64 = 5e-3;

fn model_atol(g: &[f32]) -> f64 {
    2e-4 * g.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64 + 1e-6
}

fn check_full(w: &Gpt2Weights, targets: &[i32]) -> Gradients {
    let (loss, grads) = loss_and_grads(w, None, &tokens(), targets, B, T);
    assert!(
        (loss as f64 - model_loss(w, None, targets)).abs() < 1e-5,
        "loss_and_grads loss vs forward_logits"
    );
    assert!(grads.lora.is_empty());
    // exactly the model's tensors get a gradient, each of the tensor's size
    let names: Vec<&String> = w.tensors.keys().collect();
    assert_eq!(
        grads.base.keys().collect::<Vec<_>>(),
        names,
        "one gradient per base tensor"
    );
    let mut rng = Rng::new(7);
    for (name, g) in &grads.base {
        let x = &w.get(name).data;
        let atol = model_atol(g);
        assert!(
            atol > 1e-5,
            "{name}: gradient is (nearly) zero everywhere; the check would be vacuous"
        );
        check_grad(name, x, g, &sample(g, 6, &mut rng), EPS, MODEL_RTOL, atol, &|x| {
            let mut w2 = w.clone();
            w2.tensors.get_mut(name).unwrap().data = x.to_vec();
            model_loss(&w2, None, targets)
        });
    }
    grads
}

#[test]
fn fd_model_full_tied() {
    let targets = [17, 0, 22, 3, 9, 9, 1, 14, 5, 2];
    let w = weights(1, false);
    let g = check_full(&w, &targets);
    // wpe rows past t get nothing
    let c = w.config.n_embd;
    assert!(g.base["wpe.weight"][T * c..].iter().all(|&v| v == 0.0));
}

#[test]
fn fd_model_full_untied_with_ignored_targets() {
    let targets = [17, -100, 22, 3, -100, 9, 1, -100, -100, 2];
    let w = weights(2, true);
    let g = check_full(&w, &targets);
    // untied: wte only gets the embedding's gradient, so only rows of input tokens are non-zero
    let c = w.config.n_embd;
    let used = tokens();
    for tok in 0..w.config.vocab_size {
        let row_zero = g.base["wte.weight"][tok * c..(tok + 1) * c].iter().all(|&v| v == 0.0);
        assert_eq!(row_zero, !used.contains(&(tok as u32)), "wte row {tok}");
    }
    // ignored positions: changing an ignored target changes nothing
    let mut other = targets;
    other[1] = -1;
    let (l1, g1) = loss_and_grads(&w, None, &tokens(), &other, B, T);
    let (l0, g0) = loss_and_grads(&w, None, &tokens(), &targets, B, T);
    assert_eq!((l0, &g0), (l1, &g1));
}

fn check_lora(w: &Gpt2Weights, ad: &LoraAdapter, targets: &[i32]) {
    let (loss, grads) = loss_and_grads(w, Some(ad), &tokens(), targets, B, T);
    assert!(
        (loss as f64 - model_loss(w, Some(ad), targets)).abs() < 1e-5,
        "loss_and_grads loss vs forward_logits"
    );
    assert!(grads.base.is_empty(), "LoRA mode: no base gradients");
    let want: Vec<String> = ad.modules.iter().map(|m| m.name()).collect();
    assert_eq!(grads.lora.keys().cloned().collect::<Vec<_>>(), {
        let mut s = want.clone();
        s.sort();
        s
    });
    let mut rng = Rng::new(8);
    for (k, m) in ad.modules.iter().enumerate() {
        let (da, db) = &grads.lora[&m.name()];
        for (which, x, g) in [("A", &m.a.data, da), ("B", &m.b.data, db)] {
            let atol = model_atol(g);
            assert!(
                atol > 1e-5,
                "{} {which}: gradient is (nearly) zero everywhere",
                m.name()
            );
            let what = format!("{}.lora_{which}", m.name());
            check_grad(&what, x, g, &sample(g, 6, &mut rng), EPS, MODEL_RTOL, atol, &|x| {
                let mut ad2 = ad.clone();
                let t = if which == "A" {
                    &mut ad2.modules[k].a
                } else {
                    &mut ad2.modules[k].b
                };
                t.data = x.to_vec();
                model_loss(w, Some(&ad2), targets)
            });
        }
    }
}

#[test]
fn fd_model_lora_all_linears() {
    let targets = [17, 0, -100, 3, 9, 9, 1, 14, -100, 2];
    check_lora(&weights(3, false), &adapter(&all_modules(), 4), &targets);
}

#[test]
fn fd_model_lora_some_linears_untied() {
    // adapters only in layer 0's qkv and layer 1's mlp proj: gradients pass through unadapted layers
    let targets = [17, 0, 22, 3, 9, -100, 1, 14, 5, 2];
    check_lora(
        &weights(5, true),
        &adapter(&[(0, Linear::AttnQkv), (1, Linear::MlpProj)], 6),
        &targets,
    );
}

#[test]
fn lora_forward_equals_merged_weights() {
    // W' = W + scale · Aᵀ·Bᵀ (Conv1D [in, out]): the unadapted model with W' gives the same logits
    let w = weights(9, false);
    let ad = adapter(&all_modules(), 10);
    let mut merged = w.clone();
    for m in &ad.modules {
        let (fin, fout) = m.linear.dims(w.config.n_embd);
        let delta = ops::matmul(&m.a.data, &m.b.data, fin, fout, m.a.shape[0], true, true);
        let name = format!("{}.weight", m.name());
        let t = merged.tensors.get_mut(&name).unwrap();
        t.data.iter_mut().zip(&delta).for_each(|(p, d)| *p += ad.scale() * d);
    }
    let got = forward_logits(&w, Some(&ad), &tokens(), B, T);
    let want = forward_logits(&merged, None, &tokens(), B, T);
    common::assert_close("LoRA logits vs merged", &got, &want, 1e-4, 1e-5);
    // and the adapter does change the output (B is non-zero)
    let base = forward_logits(&w, None, &tokens(), B, T);
    assert!(got.iter().zip(&base).any(|(a, b)| (a - b).abs() > 1e-2));
}

#[test]
fn model_is_causal_and_sequences_independent() {
    let w = weights(11, false);
    let v = w.config.vocab_size;
    let toks = tokens();
    let base = forward_logits(&w, None, &toks, B, T);
    assert_eq!(base.len(), B * T * v);
    // changing the last token of sequence 0 changes only its last position
    let mut t2 = toks.clone();
    t2[T - 1] = (t2[T - 1] + 1) % v as u32;
    let got = forward_logits(&w, None, &t2, B, T);
    assert_eq!(got[..(T - 1) * v], base[..(T - 1) * v]);
    assert_ne!(got[(T - 1) * v..T * v], base[(T - 1) * v..T * v]);
    assert_eq!(got[T * v..], base[T * v..]);
    // a sequence alone (b = 1) gives the same logits as inside the batch
    let one = forward_logits(&w, None, &toks[T..], 1, T);
    assert_eq!(one, base[T * v..]);
}

// ---------------------------------------------------------------- optimizer

#[test]
fn adamw_first_step_by_hand() {
    let h = ops::AdamW {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let p0 = [0.5f32, -1.0, 2.0, 0.0, 0.3];
    let g = [0.2f32, -0.03, 0.0, 1e-6, -5.0];
    let (mut p, mut m, mut v) = (p0, [0.0f32; 5], [0.0f32; 5]);
    ops::adamw_step(&mut p, &g, &mut m, &mut v, 1, h);
    for i in 0..5 {
        let (p0, g) = (p0[i] as f64, g[i] as f64);
        let (lr, wd, eps) = (h.lr as f64, h.weight_decay as f64, h.eps as f64);
        let want = p0 * (1.0 - lr * wd) - lr * g / (g.abs() + eps);
        assert!((p[i] as f64 - want).abs() < 1e-6, "p[{i}] = {} want {want}", p[i]);
        assert!((m[i] as f64 - 0.1 * g).abs() <= 1e-6 * g.abs(), "m[{i}] = {}", m[i]);
        assert!((v[i] as f64 - 0.001 * g * g).abs() <= 1e-6 * g * g, "v[{i}] = {}", v[i]);
    }
    // second step with a new gradient: bias corrections 1-β1², 1-β2²
    let g2 = [0.1f32, 0.1, -0.4, 0.0, 2.0];
    let p1 = p;
    ops::adamw_step(&mut p, &g2, &mut m, &mut v, 2, h);
    for i in 0..5 {
        let (g1, g2v) = (g[i] as f64, g2[i] as f64);
        let m2 = 0.9 * 0.1 * g1 + 0.1 * g2v;
        let v2 = 0.999 * 0.001 * g1 * g1 + 0.001 * g2v * g2v;
        let mhat = m2 / (1.0 - 0.81);
        let vhat = v2 / (1.0 - 0.999f64 * 0.999);
        let want = p1[i] as f64 * (1.0 - 1e-3) - 1e-2 * mhat / (vhat.sqrt() + 1e-8);
        assert!(
            (p[i] as f64 - want).abs() < 1e-6,
            "step 2 p[{i}] = {} want {want}",
            p[i]
        );
    }
}

#[test]
fn clip_coef_and_grad_norm() {
    let (a, b) = ([3.0f32, 0.0], [4.0f32]);
    let norm = ops::grad_norm(&[&a, &b]);
    assert_eq!(norm, 5.0);
    assert_eq!(ops::clip_coef(norm, 10.0), 1.0, "no clipping under max_norm");
    let c = ops::clip_coef(norm, 1.0);
    assert!((c as f64 - 1.0 / (5.0 + 1e-6)).abs() < 1e-7, "{c}");
    assert_eq!(ops::clip_coef(0.0, 1.0), 1.0);
}
