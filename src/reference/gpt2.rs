//! Whole-model CPU reference: GPT-2 forward, mean cross-entropy and backward (full or
//! LoRA), composed only from [`super::ops`] and [`super::attention`], llm.c-style: one
//! forward sequence with the shapes in comments, and the backward right after it in reverse
//! order.
//!
//! Model (HF semantics, no dropout): x = wte[tok] + wpe[pos]; per block
//! x += attn_proj(attention(qkv(ln_1(x)))); x += mlp_proj(gelu_new(fc(ln_2(x))));
//! logits = ln_f(x) · headᵀ, head = `lm_head.weight` if untied, else `wte.weight`.
//! An adapted linear adds scale · (x · Aᵀ) · Bᵀ to its output.
//!
//! Shapes: n = b·t rows, c = n_embd, V = vocab_size, nh = n_head. This is an oracle for
//! tests: malformed inputs (token out of range, t > n_positions, wrong lengths) panic.

use std::collections::BTreeMap;

use super::attention::{self, Attention};
use super::ops;
use crate::model::weights::block_name;
use crate::model::{Weights, Linear, LoraAdapter};

/// Gradients: `base` holds canonical-name -> gradient for every base tensor (full fine-tuning; empty in LoRA mode);
/// `lora` holds module name (`h.{i}.attn.c_attn`) -> (dA [r,in], dB [out,r]) in LoRA mode.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gradients {
    pub base: BTreeMap<String, Vec<f32>>,
    pub lora: BTreeMap<String, (Vec<f32>, Vec<f32>)>,
}

/// Output of one (possibly adapted) linear layer, with what its backward needs.
struct LinearAct {
    /// [n, out]
    y: Vec<f32>,
    /// x · Aᵀ [n, r] when the layer has a LoRA module.
    u: Option<Vec<f32>>,
}

/// Everything one block's backward needs.
struct BlockActs {
    x: Vec<f32>,        // [n, c]   block input (residual stream)
    ln1: Vec<f32>,      // [n, c]
    ln1_mean: Vec<f32>, // [n]
    ln1_rstd: Vec<f32>, // [n]
    qkv: LinearAct,     // [n, 3c]
    atty: Vec<f32>,     // [n, c]   attention output, before the projection
    attproj: LinearAct, // [n, c]
    x_mid: Vec<f32>,    // [n, c]   x + attproj
    ln2: Vec<f32>,      // [n, c]
    ln2_mean: Vec<f32>, // [n]
    ln2_rstd: Vec<f32>, // [n]
    fc: LinearAct,      // [n, 4c]  before GELU
    gelu: Vec<f32>,     // [n, 4c]
    mlpproj: LinearAct, // [n, c]
}

struct Acts {
    blocks: Vec<BlockActs>,
    x_out: Vec<f32>,    // [n, c] residual stream after the last block
    lnf: Vec<f32>,      // [n, c]
    lnf_mean: Vec<f32>, // [n]
    lnf_rstd: Vec<f32>, // [n]
}

fn check_inputs(w: &Weights, lora: Option<&LoraAdapter>, tokens: &[u32], b: usize, t: usize) {
    let cfg = &w.config;
    assert_eq!(tokens.len(), b * t, "tokens: {} ids for b={b}, t={t}", tokens.len());
    assert!(t <= cfg.n_positions, "t = {t} exceeds n_positions {}", cfg.n_positions);
    if let Some(&bad) = tokens.iter().find(|&&tok| tok as usize >= cfg.vocab_size) {
        panic!("token id {bad} is not below vocab_size {}", cfg.vocab_size);
    }
    assert_eq!(
        w.lm_head().data.len(),
        cfg.vocab_size * cfg.n_embd,
        "LM head is not [vocab, n_embd]"
    );
    for m in lora.map(|l| l.modules.as_slice()).unwrap_or(&[]) {
        let (fin, fout) = m.linear.dims(cfg);
        let r = m.a.shape[0];
        assert!(
            m.layer < cfg.n_layer,
            "LoRA module {} is beyond n_layer {}",
            m.name(),
            cfg.n_layer
        );
        assert_eq!(
            m.a.data.len(),
            r * fin,
            "LoRA {}: A is not [r, in] = [{r}, {fin}]",
            m.name()
        );
        assert_eq!(
            m.b.data.len(),
            fout * r,
            "LoRA {}: B is not [out, r] = [{fout}, {r}]",
            m.name()
        );
    }
}

fn param<'a>(w: &'a Weights, name: &str) -> &'a [f32] {
    &w.get(name).data
}

/// y[n, out] = x[n, in] · W + bias (+ scale · (x · Aᵀ) · Bᵀ if block `layer`'s `lin` is adapted).
fn linear_forward(
    w: &Weights,
    lora: Option<&LoraAdapter>,
    layer: usize,
    lin: Linear,
    x: &[f32],
    n: usize,
) -> LinearAct {
    let (fin, fout) = lin.dims(&w.config);
    let (wt, bias) = w.linear(layer, lin);
    let y = ops::linear_forward(x, &wt.data, bias.map_or(&[][..], |b| &b.data), n, fin, fout);
    match lora.and_then(|ad| ad.get(layer, lin).map(|m| (ad.scale(), m))) {
        None => LinearAct { y, u: None },
        Some((scale, m)) => {
            let (delta, u) = ops::lora_forward(x, &m.a.data, &m.b.data, scale, n, fin, fout, m.a.shape[0]);
            LinearAct {
                y: ops::residual_forward(&y, &delta),
                u: Some(u),
            }
        }
    }
}

/// Backward of [`linear_forward`]: returns dx [n, in]; stores dW, dbias (full mode) or dA, dB (LoRA mode).
#[allow(clippy::too_many_arguments)]
fn linear_backward(
    w: &Weights,
    lora: Option<&LoraAdapter>,
    layer: usize,
    lin: Linear,
    dy: &[f32],
    x: &[f32],
    act: &LinearAct,
    n: usize,
    grads: &mut Gradients,
) -> Vec<f32> {
    let (fin, fout) = lin.dims(&w.config);
    let (wt, _) = w.linear(layer, lin);
    let (dx, dw, dbias) = ops::linear_backward(dy, x, &wt.data, n, fin, fout);
    let Some(ad) = lora else {
        grads
            .base
            .insert(block_name(layer, &format!("{}.weight", lin.hf_name())), dw);
        grads
            .base
            .insert(block_name(layer, &format!("{}.bias", lin.hf_name())), dbias);
        return dx;
    };
    match (ad.get(layer, lin), &act.u) {
        (Some(m), Some(u)) => {
            let (dxl, da, db) =
                ops::lora_backward(dy, x, u, &m.a.data, &m.b.data, ad.scale(), n, fin, fout, m.a.shape[0]);
            grads.lora.insert(m.name(), (da, db));
            ops::residual_forward(&dx, &dxl)
        }
        _ => dx,
    }
}

fn forward(w: &Weights, lora: Option<&LoraAdapter>, tokens: &[u32], b: usize, t: usize) -> Acts {
    check_inputs(w, lora, tokens, b, t);
    let cfg = &w.config;
    let (n, c, nh, eps) = (b * t, cfg.n_embd, cfg.n_head, cfg.layer_norm_epsilon);
    let p = |l: usize, s: &str| param(w, &block_name(l, s));

    let mut x = ops::embedding_forward(tokens, param(w, "wte.weight"), param(w, "wpe.weight"), b, t, c); // [n, c]
    let mut blocks = Vec::with_capacity(cfg.n_layer);
    for l in 0..cfg.n_layer {
        let (ln1, ln1_mean, ln1_rstd) = ops::layernorm_forward(&x, p(l, "ln_1.weight"), p(l, "ln_1.bias"), c, eps); // [n, c]
        let qkv = linear_forward(w, lora, l, Linear::AttnQkv, &ln1, n); // [n, 3c]
        let (q, k, v) = attention::split_qkv(&qkv.y, n, c); // [n, c] each
        let (atty, _lse) = attention::forward(&Attention::mha(b, t, c, nh), &q, &k, &v); // [n, c]
        let attproj = linear_forward(w, lora, l, Linear::AttnProj, &atty, n); // [n, c]
        let x_mid = ops::residual_forward(&x, &attproj.y); // [n, c]
        let (ln2, ln2_mean, ln2_rstd) = ops::layernorm_forward(&x_mid, p(l, "ln_2.weight"), p(l, "ln_2.bias"), c, eps);
        let fc = linear_forward(w, lora, l, Linear::MlpFc, &ln2, n); // [n, 4c]
        let gelu = ops::gelu_forward(&fc.y); // [n, 4c]
        let mlpproj = linear_forward(w, lora, l, Linear::MlpProj, &gelu, n); // [n, c]
        let x_next = ops::residual_forward(&x_mid, &mlpproj.y); // [n, c]
        let block_in = std::mem::replace(&mut x, x_next);
        blocks.push(BlockActs {
            x: block_in,
            ln1,
            ln1_mean,
            ln1_rstd,
            qkv,
            atty,
            attproj,
            x_mid,
            ln2,
            ln2_mean,
            ln2_rstd,
            fc,
            gelu,
            mlpproj,
        });
    }
    let (lnf, lnf_mean, lnf_rstd) = ops::layernorm_forward(&x, param(w, "ln_f.weight"), param(w, "ln_f.bias"), c, eps);
    Acts {
        blocks,
        x_out: x,
        lnf,
        lnf_mean,
        lnf_rstd,
    }
}

/// Logits [b, t, vocab] (head = weights.lm_head(), tied or not).
pub fn forward_logits(w: &Weights, lora: Option<&LoraAdapter>, tokens: &[u32], b: usize, t: usize) -> Vec<f32> {
    let acts = forward(w, lora, tokens, b, t);
    let (c, v) = (w.config.n_embd, w.config.vocab_size);
    ops::matmul(&acts.lnf, &w.lm_head().data, b * t, v, c, false, true) // [n, V]
}

/// Mean cross-entropy over targets >= 0 (negative = ignored, PyTorch's -100) and its gradients.
/// With `lora` = Some: LoRA mode (only adapter gradients). With None: full fine-tuning (every base tensor; if the
/// head is tied, wte's gradient includes the head's contribution; an untied head gets `lm_head.weight`).
pub fn loss_and_grads(
    w: &Weights,
    lora: Option<&LoraAdapter>,
    tokens: &[u32],
    targets: &[i32],
    b: usize,
    t: usize,
) -> (f32, Gradients) {
    assert_eq!(targets.len(), b * t, "targets: {} for b={b}, t={t}", targets.len());
    let cfg = &w.config;
    let (n, c, nh, v) = (b * t, cfg.n_embd, cfg.n_head, cfg.vocab_size);
    let full = lora.is_none();
    let p = |l: usize, s: &str| param(w, &block_name(l, s));
    let acts = forward(w, lora, tokens, b, t);
    let mut g = Gradients::default();
    let put = |g: &mut Gradients, name: String, grad: Vec<f32>| {
        if full {
            g.base.insert(name, grad);
        }
    };

    // head + loss: logits = lnf · headᵀ [n, V]
    let (loss, dlnf, dhead) = ops::lm_head_loss(&acts.lnf, &w.lm_head().data, targets, c, v); // dlnf [n, c], dhead [V, c]
    let (mut dx, dgf, dbf) = ops::layernorm_backward(
        &dlnf,
        &acts.x_out,
        param(w, "ln_f.weight"),
        &acts.lnf_mean,
        &acts.lnf_rstd,
        c,
    );
    put(&mut g, "ln_f.weight".into(), dgf);
    put(&mut g, "ln_f.bias".into(), dbf);

    // blocks in reverse; dx is the gradient of the residual stream [n, c]
    for l in (0..cfg.n_layer).rev() {
        let a = &acts.blocks[l];
        // x_next = x_mid + mlpproj(gelu(fc(ln2(x_mid))))
        let dgelu = linear_backward(w, lora, l, Linear::MlpProj, &dx, &a.gelu, &a.mlpproj, n, &mut g); // [n, 4c]
        let dfc = ops::gelu_backward(&a.fc.y, &dgelu); // [n, 4c]
        let dln2 = linear_backward(w, lora, l, Linear::MlpFc, &dfc, &a.ln2, &a.fc, n, &mut g); // [n, c]
        let (dxm, dg2, db2) =
            ops::layernorm_backward(&dln2, &a.x_mid, p(l, "ln_2.weight"), &a.ln2_mean, &a.ln2_rstd, c);
        put(&mut g, block_name(l, "ln_2.weight"), dg2);
        put(&mut g, block_name(l, "ln_2.bias"), db2);
        dx = ops::residual_forward(&dx, &dxm); // d x_mid [n, c]
                                               // x_mid = x + attproj(attention(qkv(ln1(x))))
        let datty = linear_backward(w, lora, l, Linear::AttnProj, &dx, &a.atty, &a.attproj, n, &mut g); // [n, c]
        let (q, k, v) = attention::split_qkv(&a.qkv.y, n, c); // [n, c] each
        let (dq, dk, dv) = attention::backward(&Attention::mha(b, t, c, nh), &q, &k, &v, &datty); // [n, c] each
        let dqkv = attention::join_qkv(&dq, &dk, &dv, n, c); // [n, 3c]
        let dln1 = linear_backward(w, lora, l, Linear::AttnQkv, &dqkv, &a.ln1, &a.qkv, n, &mut g); // [n, c]
        let (dxi, dg1, db1) = ops::layernorm_backward(&dln1, &a.x, p(l, "ln_1.weight"), &a.ln1_mean, &a.ln1_rstd, c);
        put(&mut g, block_name(l, "ln_1.weight"), dg1);
        put(&mut g, block_name(l, "ln_1.bias"), db1);
        dx = ops::residual_forward(&dx, &dxi); // d x [n, c]
    }

    // embedding: x = wte[tokens] + wpe[0..t]
    if full {
        let (mut dwte, dwpe_t) = ops::embedding_backward(&dx, tokens, b, t, c, v); // [V, c], [t, c]
        let mut dwpe = vec![0.0f32; cfg.n_positions * c]; // rows >= t get no gradient
        dwpe[..t * c].copy_from_slice(&dwpe_t);
        if w.tensors.contains_key("lm_head.weight") {
            g.base.insert("lm_head.weight".into(), dhead);
        } else {
            dwte = ops::residual_forward(&dwte, &dhead);
        }
        g.base.insert("wte.weight".into(), dwte);
        g.base.insert("wpe.weight".into(), dwpe);
    }
    (loss, g)
}
