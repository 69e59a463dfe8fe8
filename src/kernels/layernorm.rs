//! LayerNorm (shaders/layernorm.wgsl) over `n` rows of width `c`, as PyTorch computes it
//! (biased variance, eps inside the square root). Forward saves mean and rstd [n] for the
//! backward. Backward: dx per row; dgamma/dbeta by an atomic-free column reduction over
//! rows (see [`super::reduce`] for the chunking), so results are deterministic.

use crate::gpu::shaders::{reduce_lib, Template};
use crate::gpu::{grid, groups, Gpu, Program, Tensor};

use super::reduce::{row_chunks, scratch, COLS};

const SRC: &str = include_str!("../../shaders/layernorm.wgsl");

fn source() -> String {
    Template::new("layernorm", SRC).lib(&reduce_lib()).render()
}

pub fn variants() -> Vec<(String, String)> {
    vec![("layernorm".into(), source())]
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    eps: f32,
    accumulate: u32,
    rows_per_chunk: u32,
    chunks: u32,
    col_blocks: u32,
    pad: u32,
}

fn params(n: usize, c: usize, eps: f32, accumulate: bool) -> Params {
    let (per, chunks) = row_chunks(n);
    Params {
        n: n as u32,
        c: c as u32,
        eps,
        accumulate: accumulate as u32,
        rows_per_chunk: per as u32,
        chunks: chunks as u32,
        col_blocks: c.div_ceil(COLS) as u32,
        pad: 0,
    }
}

/// y [n, c] = LayerNorm(x [n, c]) · gamma [c] + beta [c]; writes mean [n] and rstd [n].
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    gpu: &Gpu,
    prog: &mut Program,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    y: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    n: usize,
    c: usize,
    eps: f32,
) {
    debug_assert!(x.len() >= n * c && y.len() >= n * c && gamma.len() >= c && beta.len() >= c);
    debug_assert!(mean.len() >= n && rstd.len() >= n);
    if n == 0 || c == 0 {
        return;
    }
    let k = gpu.kernel("layernorm", &source, "forward", &[]);
    let p = params(n, c, eps, false);
    prog.push(gpu.dispatch(
        "layernorm.forward",
        &k,
        super::bytes_of(&p),
        &[
            (1, &x.buffer),
            (2, &gamma.buffer),
            (3, &beta.buffer),
            (4, &y.buffer),
            (5, &mean.buffer),
            (6, &rstd.buffer),
        ],
        grid(n as u32),
    ));
}

/// dx = LN backward (overwrite, or += when accumulate_dx); if `dparams` = Some((dgamma, dbeta)) they are
/// ACCUMULATED (+=) (deterministic: a column-reduction pass over rows, no float atomics).
/// `dx` must be a tensor other than `dy` and `x`.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    gpu: &Gpu,
    prog: &mut Program,
    dy: &Tensor,
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dx: &Tensor,
    accumulate_dx: bool,
    dparams: Option<(&Tensor, &Tensor)>,
    n: usize,
    c: usize,
) {
    debug_assert!(dy.len() >= n * c && x.len() >= n * c && dx.len() >= n * c && gamma.len() >= c);
    debug_assert!(mean.len() >= n && rstd.len() >= n);
    if n == 0 || c == 0 {
        return;
    }
    let p = params(n, c, 0.0, accumulate_dx);
    let pb = super::bytes_of(&p);
    let k = gpu.kernel("layernorm", &source, "backward_dx", &[]);
    prog.push(gpu.dispatch(
        "layernorm.backward_dx",
        &k,
        pb,
        &[
            (1, &x.buffer),
            (2, &gamma.buffer),
            (7, &dy.buffer),
            (8, &mean.buffer),
            (9, &rstd.buffer),
            (10, &dx.buffer),
        ],
        grid(n as u32),
    ));
    let Some((dgamma, dbeta)) = dparams else { return };
    debug_assert!(dgamma.len() >= c && dbeta.len() >= c);
    let inputs = [(1, &x.buffer), (7, &dy.buffer), (8, &mean.buffer), (9, &rstd.buffer)];
    if p.chunks == 1 {
        let k = gpu.kernel("layernorm", &source, "dparams_direct", &[]);
        let mut b = inputs.to_vec();
        b.extend([(11, &dgamma.buffer), (12, &dbeta.buffer)]);
        prog.push(gpu.dispatch("layernorm.dparams_direct", &k, pb, &b, grid(p.col_blocks)));
        return;
    }
    let partial = scratch(gpu, "layernorm.partial", 2 * p.chunks as usize * c);
    let k = gpu.kernel("layernorm", &source, "dparams_partial", &[]);
    let mut b = inputs.to_vec();
    b.push((13, &partial));
    prog.push(gpu.dispatch("layernorm.dparams_partial", &k, pb, &b, grid(p.col_blocks * p.chunks)));
    let k = gpu.kernel("layernorm", &source, "dparams_finish", &[]);
    prog.push(gpu.dispatch(
        "layernorm.dparams_finish",
        &k,
        pb,
        &[(11, &dgamma.buffer), (12, &dbeta.buffer), (13, &partial)],
        grid(groups(c, 256)),
    ));
}
