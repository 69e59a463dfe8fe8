//! RMSNorm (shaders/rmsnorm.wgsl) as Hugging Face's LlamaRMSNorm computes it in f32:
//! y = w · (x · rstd), rstd = 1 / √(mean(x²) + eps). Forward saves rstd per group for the
//! backward. Backward: dx per group (overwrite or +=); dw by an atomic-free column
//! reduction over groups (see [`super::reduce`] for the chunking), so results are
//! deterministic.
//!
//! One call normalises `n` rows of `heads` groups of `c` values each, every group on its own:
//! - a Llama block's norms: heads = 1, c = hidden, on [N, hidden] tensors;
//! - Qwen3's q/k norm over each head: heads = nh (or nkv), c = hd. The views may be q or k
//!   inside a packed projection buffer (offset = the first column, ld = the packed row
//!   width) or contiguous [N, heads·hd] tensors (= [N·heads, hd]); either works, and the
//!   weight w [hd] is shared by the heads, as in transformers.

use crate::gpu::shaders::{reduce_lib, Template};
use crate::gpu::{grid, groups, Gpu, Program, Tensor};

use super::reduce::{row_chunks, scratch, COLS};
use super::View;

const SRC: &str = include_str!("../../shaders/rmsnorm.wgsl");

/// Invocations per group: narrow groups (per-head norms, hd ≤ 256) share a workgroup
/// eight to one instead of leaving most of 256 invocations idle.
fn lanes(c: usize) -> usize {
    if c <= 256 {
        32
    } else {
        256
    }
}

fn source(lanes: usize) -> String {
    Template::new("rmsnorm", SRC).lib(&reduce_lib()).set("LANES", lanes).render()
}

pub fn variants() -> Vec<(String, String)> {
    [32, 256].into_iter().map(|l| (format!("rmsnorm:{l}"), source(l))).collect()
}

/// The shape of an RMSNorm call: `n` rows of `heads` groups of `c` values; `eps` as in the
/// model's config (`rms_norm_eps`).
#[derive(Clone, Copy, Debug)]
pub struct RmsNorm {
    pub n: usize,
    pub heads: usize,
    pub c: usize,
    pub eps: f32,
}

impl RmsNorm {
    fn groups(&self) -> usize {
        self.n * self.heads
    }
    fn width(&self) -> usize {
        self.heads * self.c
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    heads: u32,
    c: u32,
    eps: f32,
    accumulate: u32,
    rows_per_chunk: u32,
    chunks: u32,
    col_blocks: u32,
    x_off: u32,
    x_ld: u32,
    y_off: u32,
    y_ld: u32,
    dx_off: u32,
    dx_ld: u32,
    pad: [u32; 2],
}

fn params(d: &RmsNorm, x: &View, y: &View, dx: Option<&View>, accumulate: bool) -> Params {
    let (per, chunks) = row_chunks(d.groups());
    Params {
        rows: d.groups() as u32,
        heads: d.heads as u32,
        c: d.c as u32,
        eps: d.eps,
        accumulate: accumulate as u32,
        rows_per_chunk: per as u32,
        chunks: chunks as u32,
        col_blocks: d.c.div_ceil(COLS) as u32,
        x_off: x.offset as u32,
        x_ld: x.ld as u32,
        y_off: y.offset as u32,
        y_ld: y.ld as u32,
        dx_off: dx.map_or(0, |v| v.offset) as u32,
        dx_ld: dx.map_or(0, |v| v.ld) as u32,
        pad: [0; 2],
    }
}

/// y [n, heads·c] = RMSNorm(x [n, heads·c]) per group of c, times w [c]; writes rstd
/// [n·heads] (group h of row i at i·heads + h). `y` must lie in another buffer than `x`.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_forward(gpu: &Gpu, prog: &mut Program, d: &RmsNorm, x: View, w: &Tensor, y: View, rstd: &Tensor) {
    debug_assert!(x.fits(d.n, d.width()) && y.fits(d.n, d.width()), "rmsnorm: view out of bounds");
    debug_assert!(w.len() >= d.c && rstd.len() >= d.groups());
    if d.groups() == 0 || d.c == 0 {
        return;
    }
    let l = lanes(d.c);
    let k = gpu.kernel(&format!("rmsnorm:{l}"), &|| source(l), "forward", &[]);
    let p = params(d, &x, &y, None, false);
    prog.push(gpu.dispatch(
        "rmsnorm.forward",
        &k,
        super::bytes_of(&p),
        &[(1, &x.t.buffer), (2, &w.buffer), (3, &y.t.buffer), (4, &rstd.buffer)],
        grid(groups(d.groups(), 256 / l)),
    ));
}

/// dx = RMSNorm backward from dy (overwrite, or += when `accumulate_dx`); if `dw` is given it
/// is ACCUMULATED (+=), deterministically (a column reduction over groups, no float atomics).
/// `dx` must lie in another buffer than `dy` and `x`; `rstd` is the forward's.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(
    gpu: &Gpu,
    prog: &mut Program,
    d: &RmsNorm,
    dy: View,
    x: View,
    w: &Tensor,
    rstd: &Tensor,
    dx: View,
    accumulate_dx: bool,
    dw: Option<&Tensor>,
) {
    debug_assert!(
        dy.fits(d.n, d.width()) && x.fits(d.n, d.width()) && dx.fits(d.n, d.width()),
        "rmsnorm: view out of bounds"
    );
    debug_assert!(w.len() >= d.c && rstd.len() >= d.groups());
    if d.groups() == 0 || d.c == 0 {
        return;
    }
    let l = lanes(d.c);
    let key = format!("rmsnorm:{l}");
    let src = || source(l);
    let p = params(d, &x, &dy, Some(&dx), accumulate_dx);
    let pb = super::bytes_of(&p);
    let k = gpu.kernel(&key, &src, "backward_dx", &[]);
    prog.push(gpu.dispatch(
        "rmsnorm.backward_dx",
        &k,
        pb,
        &[
            (1, &x.t.buffer),
            (2, &w.buffer),
            (5, &dy.t.buffer),
            (6, &rstd.buffer),
            (7, &dx.t.buffer),
        ],
        grid(groups(d.groups(), 256 / l)),
    ));
    let Some(dw) = dw else { return };
    debug_assert!(dw.len() >= d.c);
    let inputs = [(1, &x.t.buffer), (5, &dy.t.buffer), (6, &rstd.buffer)];
    if p.chunks == 1 {
        let k = gpu.kernel(&key, &src, "dw_direct", &[]);
        let mut b = inputs.to_vec();
        b.push((8, &dw.buffer));
        prog.push(gpu.dispatch("rmsnorm.dw_direct", &k, pb, &b, grid(p.col_blocks)));
        return;
    }
    let partial = scratch(gpu, "rmsnorm.partial", p.chunks as usize * d.c);
    let k = gpu.kernel(&key, &src, "dw_partial", &[]);
    let mut b = inputs.to_vec();
    b.push((9, &partial));
    prog.push(gpu.dispatch("rmsnorm.dw_partial", &k, pb, &b, grid(p.col_blocks * p.chunks)));
    let k = gpu.kernel(&key, &src, "dw_finish", &[]);
    prog.push(gpu.dispatch(
        "rmsnorm.dw_finish",
        &k,
        pb,
        &[(8, &dw.buffer), (9, &partial)],
        grid(groups(d.c, 256)),
    ));
}
