//! Column sums (shaders/reduce.wgsl): out[j] (+)= Σ_i x[i, j], the bias gradient of a
//! linear layer. Deterministic and atomic-free: workgroups own 64 columns × a chunk of
//! rows; with more than one chunk, partials go to a scratch buffer (made once, at plan
//! time) and a second pass adds them in chunk order.

use crate::gpu::shaders::{reduce_lib, Template};
use crate::gpu::{grid, groups, Gpu, Program, Tensor};

const SRC: &str = include_str!("../../shaders/reduce.wgsl");
pub(crate) use crate::gpu::shaders::COLS;

fn source() -> String {
    Template::new("reduce", SRC).lib(&reduce_lib()).render()
}

pub fn variants() -> Vec<(String, String)> {
    vec![("reduce".into(), source())]
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    accumulate: u32,
    rows_per_chunk: u32,
    chunks: u32,
    col_blocks: u32,
    pad: [u32; 2],
}

/// How a reduction over `rows` rows is split into chunks: (rows per chunk, chunks).
/// 128 rows a chunk gives a big GPU enough workgroups (B·T = 8192 rows → 64 chunks);
/// the chunk count stays below one grid dimension.
pub(crate) fn row_chunks(rows: usize) -> (usize, usize) {
    let per = 128usize.max(rows.div_ceil(65535));
    (per, rows.div_ceil(per).max(1))
}

/// A scratch buffer of `elems` f32 made at plan time; the bind group that uses it keeps it alive.
pub(crate) fn scratch(gpu: &Gpu, label: &str, elems: usize) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (4 * elems.max(4)) as u64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    })
}

/// out[j] (+)= Σ_i x[i, j] over x [rows, cols] (bias gradients). Deterministic.
/// With `accumulate` false `out` is overwritten (zero where rows = 0).
pub fn sum_rows(gpu: &Gpu, prog: &mut Program, x: &Tensor, out: &Tensor, rows: usize, cols: usize, accumulate: bool) {
    debug_assert!(x.len() >= rows * cols && out.len() >= cols);
    if cols == 0 {
        return;
    }
    let (per, chunks) = row_chunks(rows);
    let col_blocks = cols.div_ceil(COLS);
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        accumulate: accumulate as u32,
        rows_per_chunk: per as u32,
        chunks: chunks as u32,
        col_blocks: col_blocks as u32,
        pad: [0; 2],
    };
    let p = super::bytes_of(&params);
    if chunks == 1 {
        let k = gpu.kernel("reduce", &source, "sum_direct", &[]);
        prog.push(gpu.dispatch(
            "reduce.sum_direct",
            &k,
            p,
            &[(1, &x.buffer), (2, &out.buffer)],
            grid(col_blocks as u32),
        ));
        return;
    }
    let partial = scratch(gpu, "reduce.partial", chunks * cols);
    let k = gpu.kernel("reduce", &source, "sum_partial", &[]);
    prog.push(gpu.dispatch(
        "reduce.sum_partial",
        &k,
        p,
        &[(1, &x.buffer), (3, &partial)],
        grid((col_blocks * chunks) as u32),
    ));
    let k = gpu.kernel("reduce", &source, "sum_finish", &[]);
    prog.push(gpu.dispatch(
        "reduce.sum_finish",
        &k,
        p,
        &[(2, &out.buffer), (3, &partial)],
        grid(groups(cols, 256)),
    ));
}
