//! Causal grouped-query attention, forward and backward, written out the textbook way: every
//! row of probabilities is formed in full (f64), so this is an oracle independent of the
//! flash kernels' tiling and online softmax.
//!
//! Shapes ([`Attention`]): n = b·t rows; q and out are [n, nh·hd], k and v [n, nkv·hd], head h
//! in columns h·hd..(h+1)·hd; query head h reads key/value head h / (nh / nkv). Query i of a
//! sequence attends to keys j <= i with probabilities softmax_j(scale · q_i·k_j);
//! lse [b, nh, t] is the log-sum-exp of those scaled scores.

pub use crate::kernels::attention::Attention;

fn check(d: &Attention, q: &[f32], k: &[f32], v: &[f32]) {
    assert!(d.nkv > 0 && d.nh.is_multiple_of(d.nkv), "attention: nh {} is not a multiple of nkv {}", d.nh, d.nkv);
    let n = d.b * d.t;
    assert_eq!(q.len(), n * d.nh * d.hd, "attention: q is not [n, nh·hd]");
    assert_eq!(k.len(), n * d.nkv * d.hd, "attention: k is not [n, nkv·hd]");
    assert_eq!(v.len(), n * d.nkv * d.hd, "attention: v is not [n, nkv·hd]");
}

/// One (sequence, query head, query) row: the probabilities over keys 0..=i and the log-sum-exp.
fn probs(d: &Attention, q: &[f32], k: &[f32], bi: usize, h: usize, i: usize) -> (Vec<f64>, f64) {
    let (t, hd, g) = (d.t, d.hd, h / (d.nh / d.nkv));
    let qrow = &q[(bi * t + i) * d.nh * hd + h * hd..][..hd];
    let scores: Vec<f64> = (0..=i)
        .map(|j| {
            let krow = &k[(bi * t + j) * d.nkv * hd + g * hd..][..hd];
            qrow.iter().zip(krow).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() * d.scale as f64
        })
        .collect();
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
    (scores.iter().map(|s| (s - max).exp() / sum).collect(), max + sum.ln())
}

/// (out [n, nh·hd], lse [b, nh, t]).
pub fn forward(d: &Attention, q: &[f32], k: &[f32], v: &[f32]) -> (Vec<f32>, Vec<f32>) {
    check(d, q, k, v);
    let (t, hd) = (d.t, d.hd);
    let mut out = vec![0.0f32; d.b * t * d.nh * hd];
    let mut lse = vec![0.0f32; d.b * d.nh * t];
    for bi in 0..d.b {
        for h in 0..d.nh {
            let g = h / (d.nh / d.nkv);
            for i in 0..t {
                let (p, l) = probs(d, q, k, bi, h, i);
                lse[(bi * d.nh + h) * t + i] = l as f32;
                for e in 0..hd {
                    let o: f64 = (0..=i).map(|j| p[j] * v[(bi * t + j) * d.nkv * hd + g * hd + e] as f64).sum();
                    out[(bi * t + i) * d.nh * hd + h * hd + e] = o as f32;
                }
            }
        }
    }
    (out, lse)
}

/// Backward of [`forward`]: (dq [n, nh·hd], dk [n, nkv·hd], dv [n, nkv·hd]) from dout [n, nh·hd].
/// A key/value head's gradient sums those of every query head that reads it.
pub fn backward(d: &Attention, q: &[f32], k: &[f32], v: &[f32], dout: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    check(d, q, k, v);
    assert_eq!(dout.len(), q.len(), "attention: dout is not [n, nh·hd]");
    let (t, hd, nq, nk) = (d.t, d.hd, d.nh * d.hd, d.nkv * d.hd);
    let mut dq = vec![0.0f64; q.len()];
    let mut dk = vec![0.0f64; k.len()];
    let mut dv = vec![0.0f64; v.len()];
    for bi in 0..d.b {
        for h in 0..d.nh {
            let g = h / (d.nh / d.nkv);
            for i in 0..t {
                let (p, _) = probs(d, q, k, bi, h, i);
                let qi = (bi * t + i) * nq + h * hd;
                // dp_j = dout_i · v_j; dv_j += p_j · dout_i
                let dp: Vec<f64> = (0..=i)
                    .map(|j| (0..hd).map(|e| dout[qi + e] as f64 * v[(bi * t + j) * nk + g * hd + e] as f64).sum())
                    .collect();
                for j in 0..=i {
                    for e in 0..hd {
                        dv[(bi * t + j) * nk + g * hd + e] += p[j] * dout[qi + e] as f64;
                    }
                }
                // softmax backward: ds_j = p_j (dp_j - Σ p·dp), then the scores' inputs
                let dot: f64 = (0..=i).map(|j| p[j] * dp[j]).sum();
                for j in 0..=i {
                    let ds = p[j] * (dp[j] - dot) * d.scale as f64;
                    let kj = (bi * t + j) * nk + g * hd;
                    for e in 0..hd {
                        dq[qi + e] += ds * k[kj + e] as f64;
                        dk[kj + e] += ds * q[qi + e] as f64;
                    }
                }
            }
        }
    }
    let f = |x: Vec<f64>| x.into_iter().map(|v| v as f32).collect();
    (f(dq), f(dk), f(dv))
}

/// GPT-2's packed qkv [n, 3c] -> (q, k, v), each [n, c].
pub fn split_qkv(qkv: &[f32], n: usize, c: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(qkv.len(), n * 3 * c, "split_qkv: qkv is not [n, 3c]");
    let part = |i: usize| qkv.chunks(3 * c).flat_map(|row| &row[i * c..(i + 1) * c]).copied().collect();
    (part(0), part(1), part(2))
}

/// (q, k, v), each [n, c] -> packed [n, 3c]; the inverse of [`split_qkv`].
pub fn join_qkv(q: &[f32], k: &[f32], v: &[f32], n: usize, c: usize) -> Vec<f32> {
    let mut qkv = Vec::with_capacity(n * 3 * c);
    for r in 0..n {
        for x in [q, k, v] {
            qkv.extend_from_slice(&x[r * c..(r + 1) * c]);
        }
    }
    qkv
}
