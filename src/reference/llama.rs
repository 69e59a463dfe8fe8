//! CPU reference of the Llama-family ops (RMSNorm, rotary position embeddings, SwiGLU),
//! forward and backward side by side, in ops.rs's conventions: contiguous row-major f32 in
//! and out, f64 inside. The GPU kernels' strided views are the tests' business: they pack
//! and unpack on the host and compare with these.

/// LlamaRMSNorm over rows of width `c`: y = w · x · rstd, rstd = 1 / √(mean(x²) + eps).
/// Returns (y [n, c], rstd [n]).
pub fn rmsnorm_forward(x: &[f32], w: &[f32], c: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let n = x.len() / c;
    let (mut y, mut rstd) = (vec![0.0; n * c], vec![0.0; n]);
    for i in 0..n {
        let row = &x[i * c..(i + 1) * c];
        let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / c as f64;
        let r = 1.0 / (ms + eps as f64).sqrt();
        for j in 0..c {
            y[i * c + j] = (w[j] as f64 * row[j] as f64 * r) as f32;
        }
        rstd[i] = r as f32;
    }
    (y, rstd)
}

/// Backward of [`rmsnorm_forward`]: (dx [n, c], dw [c]). With x̂ = x · rstd and g = dy · w:
/// dx = rstd · (g − x̂ · mean(g · x̂)), dw = Σ_rows dy · x̂.
pub fn rmsnorm_backward(dy: &[f32], x: &[f32], w: &[f32], rstd: &[f32], c: usize) -> (Vec<f32>, Vec<f32>) {
    let n = x.len() / c;
    let mut dx = vec![0.0f32; n * c];
    let mut dw = vec![0.0f64; c];
    for i in 0..n {
        let r = rstd[i] as f64;
        let xhat = |j: usize| x[i * c + j] as f64 * r;
        let g = |j: usize| dy[i * c + j] as f64 * w[j] as f64;
        let mean_gx = (0..c).map(|j| g(j) * xhat(j)).sum::<f64>() / c as f64;
        for j in 0..c {
            dx[i * c + j] = (r * (g(j) - xhat(j) * mean_gx)) as f32;
            dw[j] += dy[i * c + j] as f64 * xhat(j);
        }
    }
    (dx, dw.into_iter().map(|v| v as f32).collect())
}

/// Rotary position embedding, Hugging Face's rotate_half convention, on x [n, heads·hd]
/// (head h in columns h·hd..(h+1)·hd). Row i sits at position p = start + i mod t, and
/// `table` [positions, hd] holds cos in columns 0..hd/2 and sin in hd/2..hd of row p
/// (see `model::rope::Rope::table`). For k < hd/2, with (c, s) the table's pair k:
///   y[k] = x[k]·c − x[k + hd/2]·s,   y[k + hd/2] = x[k + hd/2]·c + x[k]·s.
pub fn rope_forward(x: &[f32], table: &[f32], heads: usize, hd: usize, t: usize, start: usize) -> Vec<f32> {
    rotate(x, table, heads, hd, t, start, 1.0)
}

/// Backward of [`rope_forward`] (its transpose: the rotation by the negative angle).
pub fn rope_backward(dy: &[f32], table: &[f32], heads: usize, hd: usize, t: usize, start: usize) -> Vec<f32> {
    rotate(dy, table, heads, hd, t, start, -1.0)
}

fn rotate(x: &[f32], table: &[f32], heads: usize, hd: usize, t: usize, start: usize, sign: f64) -> Vec<f32> {
    let (w, half) = (heads * hd, hd / 2);
    let mut y = vec![0.0f32; x.len()];
    for i in 0..x.len() / w {
        let p = start + i % t;
        for h in 0..heads {
            let b = i * w + h * hd;
            for k in 0..half {
                let (c, s) = (table[p * hd + k] as f64, sign * table[p * hd + half + k] as f64);
                let (a, z) = (x[b + k] as f64, x[b + half + k] as f64);
                y[b + k] = (a * c - z * s) as f32;
                y[b + half + k] = (z * c + a * s) as f32;
            }
        }
    }
    y
}

/// σ(v), without overflow for large |v|.
pub fn sigmoid(v: f64) -> f64 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}

/// SwiGLU, Llama's MLP activation: h = silu(gate) · up, silu(v) = v · σ(v); gate, up, h [n, i].
pub fn swiglu_forward(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter().zip(up).map(|(&g, &u)| (g as f64 * sigmoid(g as f64) * u as f64) as f32).collect()
}

/// Backward of [`swiglu_forward`]: (dgate, dup) with dup = dh · silu(gate),
/// dgate = dh · up · σ(gate) · (1 + gate · (1 − σ(gate))).
pub fn swiglu_backward(dh: &[f32], gate: &[f32], up: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (mut dgate, mut dup) = (Vec::with_capacity(gate.len()), Vec::with_capacity(gate.len()));
    for ((&d, &g), &u) in dh.iter().zip(gate).zip(up) {
        let (d, g, u) = (d as f64, g as f64, u as f64);
        let (s, s_neg) = (sigmoid(g), sigmoid(-g));
        dgate.push((d * u * s * (1.0 + g * s_neg)) as f32);
        dup.push((d * g * s) as f32);
    }
    (dgate, dup)
}
