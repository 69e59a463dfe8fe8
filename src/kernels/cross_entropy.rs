//! Tied LM head fused with softmax cross-entropy (shaders/cross_entropy.wgsl plus the
//! matmul kernel), computed in row chunks so the [n, V] logits never exist.

use super::matmul::{matmul, Matmul};
use super::RowChunk;
use crate::gpu::shaders::{reduce_lib, Template};
use crate::gpu::{grid, Gpu, Program, Tensor};

const SRC: &str = include_str!("../../shaders/cross_entropy.wgsl");

fn source() -> String {
    Template::new("cross_entropy", SRC).lib(&reduce_lib()).render()
}

pub fn variants() -> Vec<(String, String)> {
    vec![("cross_entropy".into(), source())]
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    v: u32,
    row0: u32,
    rows: u32,
    backward: u32,
}

/// Shape of one fused LM head + loss: `n` rows (B*T) of width `c`, vocabulary `v`,
/// `chunk` rows of logits at a time; `backward` also produces dlogits, dh and dwte.
#[derive(Clone, Copy, Debug)]
pub struct LmHeadLoss {
    /// rows = B*T
    pub n: usize,
    pub c: usize,
    /// vocabulary
    pub v: usize,
    /// rows per chunk
    pub chunk: usize,
    pub backward: bool,
}

/// Rows per chunk so that chunk * v * 4 bytes <= max_bytes (at least 1, at most n).
pub fn chunk_rows(n: usize, v: usize, max_bytes: u64) -> usize {
    let per_row = 4 * v.max(1) as u64;
    ((max_bytes / per_row).min(usize::MAX as u64) as usize).clamp(1, n.max(1))
}

/// The cross-entropy row kernel alone, on a chunk of `rows` rows of `logits` ([rows, v]
/// at its start) whose first row is global row `row0`: writes losses[row0 + r] (0 where
/// ignored) and, if `backward`, turns the rows into dlogits = (softmax - onehot) *
/// scale[0] in place (zero rows where ignored). `targets` is u32 [n] holding i32 bits;
/// a target < 0 or >= v is ignored.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_rows(
    gpu: &Gpu,
    prog: &mut Program,
    v: usize,
    row0: usize,
    rows: usize,
    backward: bool,
    logits: &Tensor,
    targets: &Tensor,
    scale: &Tensor,
    losses: &Tensor,
) {
    debug_assert!(logits.len() >= rows * v && targets.len() >= row0 + rows && losses.len() >= row0 + rows);
    if rows == 0 {
        return;
    }
    let k = gpu.kernel("cross_entropy", &source, "ce_rows", &[]);
    let params = Params {
        v: v as u32,
        row0: row0 as u32,
        rows: rows as u32,
        backward: backward as u32,
    };
    prog.push(gpu.dispatch(
        "cross_entropy.ce_rows",
        &k,
        super::bytes_of(&params),
        &[
            (1, &logits.buffer),
            (2, &targets.buffer),
            (3, &scale.buffer),
            (4, &losses.buffer),
        ],
        grid(rows as u32),
    ));
}

/// loss[0] = scale[0] * Σ losses[0..n], summed in a fixed order (one workgroup).
pub fn loss_sum(gpu: &Gpu, prog: &mut Program, n: usize, scale: &Tensor, losses: &Tensor, loss: &Tensor) {
    debug_assert!(losses.len() >= n);
    let k = gpu.kernel("cross_entropy", &source, "loss_sum", &[]);
    let params = Params {
        v: 0,
        row0: 0,
        rows: n as u32,
        backward: 0,
    };
    prog.push(gpu.dispatch(
        "cross_entropy.loss_sum",
        &k,
        super::bytes_of(&params),
        &[(3, &scale.buffer), (4, &losses.buffer), (5, &loss.buffer)],
        (1, 1, 1),
    ));
}

/// Tied LM head fused with softmax cross-entropy, `chunk` rows at a time, so the [n, V]
/// logits never exist. Per chunk: logits[chunk, V] = h[rows]·wteᵀ (into `logits`, a
/// [chunk, V] scratch); the CE kernel writes losses[rows] (0 for ignored rows) and, if
/// backward, turns logits into dlogits = (softmax - onehot) * scale[0] in place (0 rows
/// for ignored); then dh[rows] = dlogits·wte (overwrite, if `dh` is Some) and, if `dwte`
/// is Some, dwte += dlogitsᵀ·h[rows]. Finally loss[0] = scale[0] * Σ losses (a
/// deterministic reduction).
///
/// Shapes: h [n, c], wte [v, c], targets u32 [n] holding i32 bit patterns (negative =
/// ignored, PyTorch's -100; a target >= v is ignored too), scale f32 [1] = 1/(number of
/// counted rows), written by the host per batch, logits [>= chunk * v], losses [n],
/// loss [1], dh [n, c], dwte [v, c]. Without `backward`, `dh` and `dwte` are untouched.
#[allow(clippy::too_many_arguments)]
pub fn lm_head_loss(
    gpu: &Gpu,
    prog: &mut Program,
    d: &LmHeadLoss,
    h: &Tensor,
    wte: &Tensor,
    targets: &Tensor,
    scale: &Tensor,
    logits: &Tensor,
    losses: &Tensor,
    loss: &Tensor,
    dh: Option<&Tensor>,
    dwte: Option<&Tensor>,
) {
    let dwte = dwte.map(|g| RowChunk::whole(g, d.c));
    let wte = RowChunk::whole(wte, d.c);
    lm_head_loss_chunked(gpu, prog, d, h, &wte, targets, scale, logits, losses, loss, dh, dwte.as_ref().map(|g| &g[..]));
}

/// [`lm_head_loss`] with the head weight (and its gradient) stored as row chunks, consecutive
/// from row 0 ([`RowChunk::list`]; `dwte`'s chunks have `wte`'s rows). Each row chunk's logits
/// are still [rows, V] in `logits`: vocabulary chunk j fills columns row0_j.. of them
/// (logits[:, v0..v1] = h·W_jᵀ), so cross-entropy is unchanged; then dh = Σ_j dlogits[:, v0..v1]·W_j
/// and dW_j += dlogits[:, v0..v1]ᵀ·h. The logits and dW are the same bits as with one chunk; dh
/// sums the vocabulary in chunk order, so it can differ from one chunk's in the last bits.
#[allow(clippy::too_many_arguments)]
pub fn lm_head_loss_chunked(
    gpu: &Gpu,
    prog: &mut Program,
    d: &LmHeadLoss,
    h: &Tensor,
    wte: &[RowChunk],
    targets: &Tensor,
    scale: &Tensor,
    logits: &Tensor,
    losses: &Tensor,
    loss: &Tensor,
    dh: Option<&Tensor>,
    dwte: Option<&[RowChunk]>,
) {
    let (n, c, v) = (d.n, d.c, d.v);
    let chunk = d.chunk.clamp(1, n.max(1));
    debug_assert!(h.len() >= n * c && targets.len() >= n && losses.len() >= n);
    debug_assert!(wte.iter().map(|w| w.rows).sum::<usize>() == v && wte.iter().all(|w| w.t.len() >= w.rows * c));
    debug_assert!(dwte.is_none_or(|g| g.len() == wte.len() && g.iter().zip(wte).all(|(g, w)| g.row0 == w.row0 && g.rows == w.rows)));
    debug_assert!(
        logits.len() >= chunk * v,
        "lm_head_loss: logits scratch smaller than chunk * v"
    );
    let mut r0 = 0;
    while r0 < n {
        let rows = chunk.min(n - r0);
        for w in wte {
            // logits[rows, v0..v1] = h[r0.., c] · W_jᵀ
            let mut fwd = Matmul::new(rows, w.rows, c).tb();
            fwd.a_offset = r0 * c;
            fwd.c_offset = w.row0;
            fwd.ldc = v;
            matmul(gpu, prog, &fwd, h, w.t, logits, None);
        }
        cross_entropy_rows(gpu, prog, v, r0, rows, d.backward, logits, targets, scale, losses);
        if d.backward {
            if let Some(dh) = dh {
                for (j, w) in wte.iter().enumerate() {
                    // dh[r0.., c] (+)= dlogits[rows, v0..v1] · W_j[v1 - v0, c]
                    let mut bwd = Matmul::new(rows, c, w.rows);
                    bwd.a_offset = w.row0;
                    bwd.lda = v;
                    bwd.c_offset = r0 * c;
                    let bwd = if j == 0 { bwd } else { bwd.accumulate() };
                    matmul(gpu, prog, &bwd, logits, w.t, dh, None);
                }
            }
            if let Some(dwte) = dwte {
                for g in dwte {
                    // dW_j[v1 - v0, c] += dlogits[rows, v0..v1]ᵀ · h[r0.., c]
                    let mut dw = Matmul::new(g.rows, c, rows).ta().accumulate();
                    dw.a_offset = g.row0;
                    dw.lda = v;
                    dw.b_offset = r0 * c;
                    matmul(gpu, prog, &dw, logits, h, g.t, None);
                }
            }
        }
        r0 += rows;
    }
    loss_sum(gpu, prog, n, scale, losses, loss);
}
