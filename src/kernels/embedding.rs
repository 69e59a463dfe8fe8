//! Token + position embedding (shaders/embedding.wgsl) and its backward.
//!
//! The backward is a scatter-add done without float atomics, so it is deterministic: the
//! host groups the batch's positions by token once ([`TokenIndex`], CSR), uploads it with
//! the batch ([`TokenIndexBuffers::write`]), and one workgroup per unique token sums its
//! positions' rows of dx in position order. The dispatch size is fixed at plan time
//! (B·T workgroups); those past the uploaded unique count return at once.

use crate::gpu::shaders::Template;
use super::RowChunk;
use crate::gpu::{grid, Gpu, GpuError, Program, Tensor};

const SRC: &str = include_str!("../../shaders/embedding.wgsl");

/// The shader with or without learned positions (GPT-2's wpe), reading an f32 or f16 (`half`:
/// frozen base weights) table.
fn source(positions: bool, half: bool) -> String {
    Template::new(&key(positions, half), SRC)
        .set("POSITIONS", positions)
        .set("ENABLE", if half { "enable f16;" } else { "" })
        .set("WTE_T", if half { "f16" } else { "f32" })
        .render()
}

fn key(positions: bool, half: bool) -> String {
    let p = if positions { "" } else { ":no-positions" };
    let h = if half { ":f16" } else { "" };
    format!("embedding{p}{h}")
}

fn kernel(gpu: &Gpu, positions: bool, half: bool, entry: &str) -> crate::gpu::Kernel {
    gpu.kernel(&key(positions, half), &|| source(positions, half), entry, &[])
}

/// Whether a table's chunks are f16 (all of them are, or none).
fn half(wte: &[RowChunk]) -> bool {
    wte.first().is_some_and(|ch| ch.t.half)
}

pub fn variants() -> Vec<(String, String)> {
    [(true, false), (false, false), (true, true), (false, true)].map(|(p, h)| (key(p, h), source(p, h))).to_vec()
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    t: u32,
    c: u32,
    rows: u32,
    row0: u32,
    tail: u32,
    pad: [u32; 2],
}

impl Params {
    /// For chunk `j` of `chunks` (the last one also writes the rows of ids past the table).
    fn chunk(n: usize, t: usize, c: usize, chunks: &[RowChunk], j: usize) -> Params {
        let ch = &chunks[j];
        Params {
            n: n as u32,
            t: t as u32,
            c: c as u32,
            rows: ch.rows as u32,
            row0: ch.row0 as u32,
            tail: (j + 1 == chunks.len()) as u32,
            pad: [0; 2],
        }
    }
}

/// tokens: u32 tensor [B*T]; x[b,t,:] = wte[tokens[b,t],:] (+ wpe[t,:] when the model has learned
/// positions, `wpe` Some).
/// The vocabulary size is `wte.len() / c`; a token id beyond it reads as a zero row
/// (the data layer is expected to reject such ids before they get here).
#[allow(clippy::too_many_arguments)]
pub fn embedding_forward(
    gpu: &Gpu,
    prog: &mut Program,
    tokens: &Tensor,
    wte: &Tensor,
    wpe: Option<&Tensor>,
    x: &Tensor,
    b: usize,
    t: usize,
    c: usize,
) {
    embedding_forward_chunked(gpu, prog, tokens, &RowChunk::whole(wte, c), wpe, x, b, t, c);
}

/// [`embedding_forward`] over a table stored as row chunks (consecutive, from row 0; the
/// vocabulary is their rows together): one dispatch per chunk, each writing the rows whose
/// token it holds (the last also those past the table, as zero rows).
#[allow(clippy::too_many_arguments)]
pub fn embedding_forward_chunked(
    gpu: &Gpu,
    prog: &mut Program,
    tokens: &Tensor,
    wte: &[RowChunk],
    wpe: Option<&Tensor>,
    x: &Tensor,
    b: usize,
    t: usize,
    c: usize,
) {
    let n = b * t;
    debug_assert!(tokens.len() >= n && x.len() >= n * c && wpe.is_none_or(|w| w.len() >= t * c));
    if n == 0 || c == 0 {
        return;
    }
    let k = kernel(gpu, wpe.is_some(), half(wte), "forward");
    for (j, ch) in wte.iter().enumerate() {
        let params = Params::chunk(n, t, c, wte, j);
        prog.push(gpu.dispatch(
            "embedding.forward",
            &k,
            super::bytes_of(&params),
            &[(1, &tokens.buffer), (2, &ch.t.buffer), (3, &wpe.unwrap_or(ch.t).buffer), (4, &x.buffer)],
            grid(n as u32),
        ));
    }
}

/// Positions grouped by token (CSR): the positions of `unique[i]` are
/// `positions[offsets[i]..offsets[i + 1]]`, ascending; `unique` is sorted ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIndex {
    pub unique: Vec<u32>,
    pub offsets: Vec<u32>,
    pub positions: Vec<u32>,
}

impl TokenIndex {
    /// Groups the flat positions (b·T + t) of `tokens` by token id.
    pub fn build(tokens: &[u32]) -> TokenIndex {
        let mut positions: Vec<u32> = (0..tokens.len() as u32).collect();
        // stable: positions stay ascending within a token
        positions.sort_by_key(|&p| tokens[p as usize]);
        let mut unique = Vec::new();
        let mut offsets = Vec::new();
        for (k, &p) in positions.iter().enumerate() {
            let tok = tokens[p as usize];
            if unique.last() != Some(&tok) {
                unique.push(tok);
                offsets.push(k as u32);
            }
        }
        offsets.push(positions.len() as u32);
        TokenIndex {
            unique,
            offsets,
            positions,
        }
    }
}

/// GPU buffers for a TokenIndex, sized for n = B*T tokens, created once; `write` uploads a batch's index.
pub struct TokenIndexBuffers {
    pub n: usize,
    /// u32 [1]: how many entries of `unique` the current batch uses.
    pub unique_count: Tensor,
    /// u32 [n]
    pub unique: Tensor,
    /// u32 [n + 1]
    pub offsets: Tensor,
    /// u32 [n]
    pub positions: Tensor,
}

impl TokenIndexBuffers {
    pub fn new(gpu: &Gpu, n: usize) -> Result<TokenIndexBuffers, GpuError> {
        Ok(TokenIndexBuffers {
            n,
            unique_count: gpu.zeros("token_index.unique_count", &[1])?,
            unique: gpu.zeros("token_index.unique", &[n])?,
            offsets: gpu.zeros("token_index.offsets", &[n + 1])?,
            positions: gpu.zeros("token_index.positions", &[n])?,
        })
    }

    /// Uploads `idx` (queued; lands before the next submit runs). An index built from
    /// more than `n` tokens is a caller bug: only the unique tokens whose positions all
    /// fit are uploaded (debug builds assert).
    pub fn write(&self, gpu: &Gpu, idx: &TokenIndex) {
        debug_assert!(idx.positions.len() <= self.n && idx.offsets.len() == idx.unique.len() + 1);
        let pos = idx.positions.len().min(self.n);
        let u = idx
            .unique
            .iter()
            .enumerate()
            .take_while(|&(i, _)| idx.offsets.get(i + 1).is_some_and(|&end| end as usize <= pos))
            .count()
            .min(self.n);
        gpu.write_u32(&self.unique_count, &[u as u32]);
        gpu.write_u32(&self.unique, &idx.unique[..u]);
        gpu.write_u32(&self.offsets, &idx.offsets[..(u + 1).min(idx.offsets.len())]);
        gpu.write_u32(&self.positions, &idx.positions[..pos]);
    }
}

/// ACCUMULATES (+=) dwte [V, C] and (with learned positions) rows 0..t of dwpe [P, C] from dx [B*T, C], using the
/// batch's index (uploaded with [`TokenIndexBuffers::write`]). Deterministic, no float
/// atomics. V is `dwte.len() / c`.
#[allow(clippy::too_many_arguments)]
pub fn embedding_backward(
    gpu: &Gpu,
    prog: &mut Program,
    dx: &Tensor,
    index: &TokenIndexBuffers,
    dwte: &Tensor,
    dwpe: Option<&Tensor>,
    b: usize,
    t: usize,
    c: usize,
) {
    embedding_backward_chunked(gpu, prog, dx, index, &RowChunk::whole(dwte, c), dwpe, b, t, c);
}

/// [`embedding_backward`] into a gradient stored as row chunks: one dispatch per chunk, each
/// adding the rows of the tokens it holds, in the same order as one dispatch would (so the
/// result is the same bits).
#[allow(clippy::too_many_arguments)]
pub fn embedding_backward_chunked(
    gpu: &Gpu,
    prog: &mut Program,
    dx: &Tensor,
    index: &TokenIndexBuffers,
    dwte: &[RowChunk],
    dwpe: Option<&Tensor>,
    b: usize,
    t: usize,
    c: usize,
) {
    let n = b * t;
    debug_assert!(index.n >= n && dx.len() >= n * c && dwpe.is_none_or(|w| w.len() >= t * c));
    if n == 0 || c == 0 {
        return;
    }
    let k = kernel(gpu, dwpe.is_some(), false, "dwte_add");
    for (j, ch) in dwte.iter().enumerate() {
        let params = Params::chunk(n, t, c, dwte, j);
        prog.push(gpu.dispatch(
            "embedding.dwte_add",
            &k,
            super::bytes_of(&params),
            &[
                (5, &dx.buffer),
                (6, &index.unique_count.buffer),
                (7, &index.unique.buffer),
                (8, &index.offsets.buffer),
                (9, &index.positions.buffer),
                (10, &ch.t.buffer),
            ],
            grid(n as u32),
        ));
    }
    let Some(dwpe) = dwpe else { return };
    let params = Params { n: n as u32, t: t as u32, c: c as u32, rows: 0, row0: 0, tail: 0, pad: [0; 2] };
    let k = kernel(gpu, true, false, "dwpe_add");
    prog.push(gpu.dispatch(
        "embedding.dwpe_add",
        &k,
        super::bytes_of(&params),
        &[(5, &dx.buffer), (11, &dwpe.buffer)],
        grid(t as u32),
    ));
}

/// Decoding: x[r, :] = wte[tokens[r], :] (+ wpe[pos[0] + r, :]) for r < n, with the position
/// offset `pos` (u32 [1]) read on the GPU, so one prepared dispatch serves every step.
/// Out-of-range token ids or positions read as zero rows.
#[allow(clippy::too_many_arguments)]
pub fn embedding_forward_at(
    gpu: &Gpu,
    prog: &mut Program,
    tokens: &Tensor,
    pos: &Tensor,
    wte: &Tensor,
    wpe: Option<&Tensor>,
    x: &Tensor,
    n: usize,
    c: usize,
) {
    embedding_forward_at_chunked(gpu, prog, tokens, pos, &RowChunk::whole(wte, c), wpe, x, n, c);
}

/// [`embedding_forward_at`] over a table stored as row chunks (one dispatch per chunk).
#[allow(clippy::too_many_arguments)]
pub fn embedding_forward_at_chunked(
    gpu: &Gpu,
    prog: &mut Program,
    tokens: &Tensor,
    pos: &Tensor,
    wte: &[RowChunk],
    wpe: Option<&Tensor>,
    x: &Tensor,
    n: usize,
    c: usize,
) {
    debug_assert!(tokens.len() >= n && x.len() >= n * c && !pos.is_empty());
    if n == 0 || c == 0 {
        return;
    }
    let k = kernel(gpu, wpe.is_some(), half(wte), "forward_at");
    for (j, ch) in wte.iter().enumerate() {
        let params = Params::chunk(n, wpe.map_or(0, |w| w.len()) / c, c, wte, j);
        prog.push(gpu.dispatch(
            "embedding.forward_at",
            &k,
            super::bytes_of(&params),
            &[
                (1, &tokens.buffer),
                (2, &ch.t.buffer),
                (3, &wpe.unwrap_or(ch.t).buffer),
                (4, &x.buffer),
                (12, &pos.buffer),
            ],
            grid(n as u32),
        ));
    }
}
