//! CPU reference of every op, forward and backward side by side, shapes in the
//! signatures. Row-major f32 in and out, f64 accumulation, so the oracle is more
//! accurate than any kernel compared with it.

use std::f64::consts::PI;

/// C[m, n] = op(A) · op(B). `a` is [m, k] ([k, m] if `ta`), `b` is [k, n] ([n, k] if `tb`).
pub fn matmul(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, ta: bool, tb: bool) -> Vec<f32> {
    assert_eq!(a.len(), m * k, "matmul: A has {} elements, want {m}x{k}", a.len());
    assert_eq!(b.len(), k * n, "matmul: B has {} elements, want {k}x{n}", b.len());
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                let av = if ta { a[p * m + i] } else { a[i * k + p] };
                let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                acc += av as f64 * bv as f64;
            }
            c[i * n + j] = acc as f32;
        }
    }
    c
}

/// Conv1D linear layer: y[n, out] = x[n, in] · w[in, out] + bias[out].
pub fn linear_forward(x: &[f32], w: &[f32], bias: &[f32], n: usize, fin: usize, fout: usize) -> Vec<f32> {
    let mut y = matmul(x, w, n, fout, fin, false, false);
    for row in y.chunks_mut(fout) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
    y
}

/// Backward of [`linear_forward`]: (dx [n, in], dw [in, out], dbias [out]).
pub fn linear_backward(dy: &[f32], x: &[f32], w: &[f32], n: usize, fin: usize, fout: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dx = matmul(dy, w, n, fin, fout, false, true);
    let dw = matmul(x, dy, fin, fout, n, true, false);
    (dx, dw, sum_rows(dy, n, fout))
}

/// Column sums: out[j] = Σ_i x[i, j] over a [rows, cols] matrix.
pub fn sum_rows(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut acc = vec![0.0f64; cols];
    for i in 0..rows {
        for j in 0..cols {
            acc[j] += x[i * cols + j] as f64;
        }
    }
    acc.into_iter().map(|v| v as f32).collect()
}

/// LayerNorm over rows of width `c`: returns (y [n, c], mean [n], rstd [n]).
pub fn layernorm_forward(x: &[f32], gamma: &[f32], beta: &[f32], c: usize, eps: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = x.len() / c;
    let (mut y, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    for i in 0..n {
        let row = &x[i * c..(i + 1) * c];
        let m = row.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let var = row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / c as f64;
        let r = 1.0 / (var + eps as f64).sqrt();
        for j in 0..c {
            y[i * c + j] = ((row[j] as f64 - m) * r * gamma[j] as f64 + beta[j] as f64) as f32;
        }
        mean[i] = m as f32;
        rstd[i] = r as f32;
    }
    (y, mean, rstd)
}

/// Backward of [`layernorm_forward`]: (dx [n, c], dgamma [c], dbeta [c]).
pub fn layernorm_backward(
    dy: &[f32],
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    c: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = x.len() / c;
    let mut dx = vec![0.0f32; n * c];
    let (mut dgamma, mut dbeta) = (vec![0.0f64; c], vec![0.0f64; c]);
    for i in 0..n {
        let (m, r) = (mean[i] as f64, rstd[i] as f64);
        let xhat = |j: usize| (x[i * c + j] as f64 - m) * r;
        let dxhat = |j: usize| dy[i * c + j] as f64 * gamma[j] as f64;
        let mean_dxhat = (0..c).map(dxhat).sum::<f64>() / c as f64;
        let mean_dxhat_xhat = (0..c).map(|j| dxhat(j) * xhat(j)).sum::<f64>() / c as f64;
        for j in 0..c {
            dx[i * c + j] = (r * (dxhat(j) - mean_dxhat - xhat(j) * mean_dxhat_xhat)) as f32;
            dgamma[j] += dy[i * c + j] as f64 * xhat(j);
            dbeta[j] += dy[i * c + j] as f64;
        }
    }
    (dx, dgamma.into_iter().map(|v| v as f32).collect(), dbeta.into_iter().map(|v| v as f32).collect())
}

const GELU_K: f64 = 0.044715;

/// HF `gelu_new`: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
pub fn gelu_forward(x: &[f32]) -> Vec<f32> {
    let s = (2.0 / PI).sqrt();
    x.iter()
        .map(|&v| {
            let v = v as f64;
            (0.5 * v * (1.0 + (s * (v + GELU_K * v * v * v)).tanh())) as f32
        })
        .collect()
}

/// Backward of [`gelu_forward`]: dx = dy · gelu'(x).
pub fn gelu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    let s = (2.0 / PI).sqrt();
    x.iter()
        .zip(dy)
        .map(|(&v, &g)| {
            let v = v as f64;
            let t = (s * (v + GELU_K * v * v * v)).tanh();
            let d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * s * (1.0 + 3.0 * GELU_K * v * v);
            (g as f64 * d) as f32
        })
        .collect()
}

/// Token + position embedding: x[b, t, c] = wte[tokens[b, t]] + wpe[t].
pub fn embedding_forward(tokens: &[u32], wte: &[f32], wpe: &[f32], b: usize, t: usize, c: usize) -> Vec<f32> {
    let mut x = vec![0.0f32; b * t * c];
    for bi in 0..b {
        for ti in 0..t {
            let tok = tokens[bi * t + ti] as usize;
            for j in 0..c {
                x[(bi * t + ti) * c + j] = wte[tok * c + j] + wpe[ti * c + j];
            }
        }
    }
    x
}

/// Backward of [`embedding_forward`]: (dwte [vocab, c], dwpe [t, c]) (scatter-add).
pub fn embedding_backward(dx: &[f32], tokens: &[u32], b: usize, t: usize, c: usize, vocab: usize) -> (Vec<f32>, Vec<f32>) {
    let mut dwte = vec![0.0f64; vocab * c];
    let mut dwpe = vec![0.0f64; t * c];
    for bi in 0..b {
        for ti in 0..t {
            let tok = tokens[bi * t + ti] as usize;
            for j in 0..c {
                let g = dx[(bi * t + ti) * c + j] as f64;
                dwte[tok * c + j] += g;
                dwpe[ti * c + j] += g;
            }
        }
    }
    (dwte.into_iter().map(|v| v as f32).collect(), dwpe.into_iter().map(|v| v as f32).collect())
}

/// Softmax cross-entropy over rows of `logits` [n, v]. A negative target (PyTorch's
/// -100) is ignored. Returns (mean loss over the counted rows, per-row loss (0 where
/// ignored), dlogits [n, v] of the mean loss).
pub fn cross_entropy(logits: &[f32], targets: &[i32], v: usize) -> (f32, Vec<f32>, Vec<f32>) {
    let n = targets.len();
    let count = targets.iter().filter(|&&y| y >= 0).count();
    let mut losses = vec![0.0f32; n];
    let mut dlogits = vec![0.0f32; n * v];
    let mut total = 0.0f64;
    for i in 0..n {
        if targets[i] < 0 {
            continue;
        }
        let row = &logits[i * v..(i + 1) * v];
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let sum: f64 = row.iter().map(|&z| (z as f64 - max).exp()).sum();
        let lse = max + sum.ln();
        let y = targets[i] as usize;
        let loss = lse - row[y] as f64;
        losses[i] = loss as f32;
        total += loss;
        for j in 0..v {
            let p = (row[j] as f64 - lse).exp();
            let g = p - if j == y { 1.0 } else { 0.0 };
            dlogits[i * v + j] = (g / count as f64) as f32;
        }
    }
    let mean = if count == 0 { 0.0 } else { total / count as f64 };
    (mean as f32, losses, dlogits)
}

/// Tied LM head + cross-entropy: logits = h[n, c] · wteᵀ; returns
/// (mean loss, dh [n, c], dwte [vocab, c]).
pub fn lm_head_loss(h: &[f32], wte: &[f32], targets: &[i32], c: usize, vocab: usize) -> (f32, Vec<f32>, Vec<f32>) {
    let n = targets.len();
    let logits = matmul(h, wte, n, vocab, c, false, true);
    let (loss, _, dlogits) = cross_entropy(&logits, targets, vocab);
    let dh = matmul(&dlogits, wte, n, c, vocab, false, false);
    let dwte = matmul(&dlogits, h, vocab, c, n, true, false);
    (loss, dh, dwte)
}

/// √(Σ g²) over every gradient tensor.
pub fn grad_norm(grads: &[&[f32]]) -> f32 {
    grads.iter().flat_map(|g| g.iter()).map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt() as f32
}

/// PyTorch's `clip_grad_norm_` factor: min(1, max_norm / (norm + 1e-6)).
pub fn clip_coef(norm: f32, max_norm: f32) -> f32 {
    ((max_norm as f64) / (norm as f64 + 1e-6)).min(1.0) as f32
}

/// AdamW's hyperparameters for one step: the kernel's own parameter struct (the oracle shares it).
pub use crate::kernels::optimizer::AdamWParams as AdamW;

/// One AdamW step (1-based `step`) in place, PyTorch semantics: decoupled weight decay
/// p -= lr·wd·p, then p -= lr/(1-β1ᵗ) · m / (√v/√(1-β2ᵗ) + eps). `g` is used as given
/// (clip it first).
pub fn adamw_step(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], step: u32, h: AdamW) {
    let (b1, b2) = (h.beta1 as f64, h.beta2 as f64);
    let bc1 = 1.0 - b1.powi(step as i32);
    let bc2 = 1.0 - b2.powi(step as i32);
    for i in 0..p.len() {
        let gi = g[i] as f64;
        let mut pi = p[i] as f64 * (1.0 - h.lr as f64 * h.weight_decay as f64);
        let mi = b1 * m[i] as f64 + (1.0 - b1) * gi;
        let vi = b2 * v[i] as f64 + (1.0 - b2) * gi * gi;
        pi -= h.lr as f64 / bc1 * mi / (vi.sqrt() / bc2.sqrt() + h.eps as f64);
        p[i] = pi as f32;
        m[i] = mi as f32;
        v[i] = vi as f32;
    }
}

/// Elementwise sum (the residual connection, and gradient accumulation): out = a + b.
pub fn residual_forward(a: &[f32], b: &[f32]) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "residual_forward: lengths {} and {}", a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// LoRA branch of an adapted linear layer: delta[n, out] = scale · (x[n, in] · aᵀ) · bᵀ with
/// a [r, in], b [out, r]. Returns (delta [n, out], u = x · aᵀ [n, r]); `u` is kept for the backward.
#[allow(clippy::too_many_arguments)]
pub fn lora_forward(
    x: &[f32],
    a: &[f32],
    b: &[f32],
    scale: f32,
    n: usize,
    fin: usize,
    fout: usize,
    r: usize,
) -> (Vec<f32>, Vec<f32>) {
    let u = matmul(x, a, n, r, fin, false, true); // [n, r]
    let mut delta = matmul(&u, b, n, fout, r, false, true); // [n, out]
    delta.iter_mut().for_each(|v| *v = (*v as f64 * scale as f64) as f32);
    (delta, u)
}

/// Backward of [`lora_forward`] from ddelta [n, out]: (dx [n, in], da [r, in], db [out, r]).
#[allow(clippy::too_many_arguments)]
pub fn lora_backward(
    ddelta: &[f32],
    x: &[f32],
    u: &[f32],
    a: &[f32],
    b: &[f32],
    scale: f32,
    n: usize,
    fin: usize,
    fout: usize,
    r: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let s = scale as f64;
    // du[n, r] = scale · ddelta · b
    let mut du = matmul(ddelta, b, n, r, fout, false, false);
    du.iter_mut().for_each(|v| *v = (*v as f64 * s) as f32);
    // db[out, r] = scale · ddeltaᵀ · u
    let mut db = matmul(ddelta, u, fout, r, n, true, false);
    db.iter_mut().for_each(|v| *v = (*v as f64 * s) as f32);
    // da[r, in] = duᵀ · x;  dx[n, in] = du · a
    let da = matmul(&du, x, r, fin, n, true, false);
    let dx = matmul(&du, a, n, fin, r, false, false);
    (dx, da, db)
}
