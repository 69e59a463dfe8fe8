//! Causal grouped-query attention, flash style (shaders/attention.wgsl): the B·H·T·T scores
//! are never stored. Forward keeps lse [B, nh, T] (each query's log-sum-exp) for backward;
//! backward is FlashAttention-2's: one pass per query tile makes dq (and delta =
//! rowsum(dout ∘ out)), then one pass per key tile makes dk and dv, summing the query heads of
//! a group in order. Deterministic: no atomics, each output element has one writer.
//!
//! Shapes ([`Attention`]): N = B·T rows; `nh` query heads over `nkv` key/value heads (head h
//! reads kv head h / (nh / nkv)), head dim `hd` up to [`MAX_HEAD_DIM`] whatever the model width.
//! q, k, v and dq, dk, dv are [`View`]s of [N, nh·hd] and [N, nkv·hd] (GPT-2 passes column
//! blocks of its packed qkv, [`Qkv::packed`]); out and dout are packed [N, nh·hd]. A view
//! written by a kernel must not share a buffer with one it reads.
//!
//! Decoding ([`attention_decode`], [`kv_store`]) runs one new query against K/V caches
//! [max_len, nkv·hd].
//!
//! Tiles: the shader is a template over the padded head dim HDP (16, 32, 64, 128 or 256; the
//! smallest that holds hd): a workgroup of TR x HDP/8 threads, each holding 8 rows x 8
//! head-dim columns of output and 8 x 4 scores in registers (see the shader's header).

use super::View;
use crate::gpu::shaders::{reduce_lib, Template};
use crate::gpu::{grid, Gpu, Program, Tensor};

/// The largest head dimension the kernels (training and decoding) support.
pub const MAX_HEAD_DIM: usize = 256;

const SRC: &str = include_str!("../../shaders/attention.wgsl");

/// The padded head dims there are variants for.
const PADDED: [usize; 5] = [16, 32, 64, 128, 256];

/// Tile parameters of the variant for padded head dim `hdp` (the shader's layout gives HDP/8
/// threads per row group, each with 8 rows): row groups TR (a tile has 8·TR rows), the
/// head-dim slice DK of the score products, the rows KC of the value-side operand staged at
/// once. Chosen for 64 threads (fewer for small head dims) and workgroup memory under
/// WebGPU's default 16 KiB.
fn tiles(hdp: usize) -> (usize, usize, usize) {
    let tr = match hdp {
        128 => 4,
        256 => 2,
        _ => 8,
    };
    let dk = if hdp == 256 { 8 } else { 16 };
    (tr, dk, (hdp / 2).min(1024 / hdp))
}

fn padded(hd: usize) -> usize {
    PADDED.iter().copied().find(|&p| p >= hd).unwrap_or(MAX_HEAD_DIM)
}

fn key(hdp: usize) -> String {
    format!("attention:hd{hdp}")
}

fn source(hdp: usize) -> String {
    let (tr, dk, kc) = tiles(hdp);
    Template::new(&key(hdp), SRC)
        .lib(&reduce_lib())
        .set("HDP", hdp)
        .set("TR", tr)
        .set("DK", dk)
        .set("KC", kc)
        .render()
}

pub fn variants() -> Vec<(String, String)> {
    PADDED.iter().map(|&h| (key(h), source(h))).collect()
}

/// Shapes: `b` sequences of `t` tokens, `nh` query heads over `nkv` key/value heads (nkv
/// divides nh), head dim `hd`, scores scaled by `scale` (1/√hd for GPT-2, Llama, Qwen).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attention {
    pub b: usize,
    pub t: usize,
    pub nh: usize,
    pub nkv: usize,
    pub hd: usize,
    pub scale: f32,
}

impl Attention {
    /// Multi-head attention over width `c` (GPT-2): nh heads of c / nh, nkv = nh, scale 1/√hd.
    pub fn mha(b: usize, t: usize, c: usize, nh: usize) -> Attention {
        Attention::gqa(b, t, nh, nh, c / nh.max(1))
    }

    /// Grouped-query attention with scale 1/√hd.
    pub fn gqa(b: usize, t: usize, nh: usize, nkv: usize, hd: usize) -> Attention {
        Attention { b, t, nh, nkv, hd, scale: 1.0 / (hd as f32).sqrt() }
    }

    /// Elements of lse and delta: [B, nh, T].
    pub fn stats_len(&self) -> usize {
        self.b * self.nh * self.t
    }

    /// Whether the kernels support these heads; the error says why not.
    pub fn check_heads(nh: usize, nkv: usize, hd: usize) -> Result<(), String> {
        if nkv == 0 || nh == 0 || !nh.is_multiple_of(nkv) {
            return Err(format!("{nh} query heads cannot share {nkv} key/value heads (nkv must divide nh)"));
        }
        if hd == 0 || hd > MAX_HEAD_DIM {
            return Err(format!("attention supports head dimensions 1..={MAX_HEAD_DIM}, not {hd}"));
        }
        Ok(())
    }

    fn params(&self, blocks: usize, total: usize) -> Params {
        Params {
            t: self.t as u32,
            nh: self.nh as u32,
            nkv: self.nkv as u32,
            hd: self.hd as u32,
            blocks: blocks as u32,
            total: total as u32,
            scale: self.scale,
            ..Params::default()
        }
    }
}

/// The query, key and value views of one attention call (or their gradients).
#[derive(Clone, Copy)]
pub struct Qkv<'a> {
    pub q: View<'a>,
    pub k: View<'a>,
    pub v: View<'a>,
}

impl<'a> Qkv<'a> {
    /// GPT-2's packed qkv [N, 3C]: q, k, v are columns 0.., C.., 2C.. of every row.
    pub fn packed(qkv: &'a Tensor, c: usize) -> Qkv<'a> {
        Qkv {
            q: View::cols(qkv, 0, 3 * c),
            k: View::cols(qkv, c, 3 * c),
            v: View::cols(qkv, 2 * c, 3 * c),
        }
    }

    /// Separate q [N, nh·hd], k and v [N, nkv·hd] tensors.
    pub fn separate(q: &'a Tensor, k: &'a Tensor, v: &'a Tensor, d: &Attention) -> Qkv<'a> {
        Qkv {
            q: View::rows(q, d.nh * d.hd),
            k: View::rows(k, d.nkv * d.hd),
            v: View::rows(v, d.nkv * d.hd),
        }
    }

    fn fits(&self, rows: usize, d: &Attention) -> bool {
        self.q.fits(rows, d.nh * d.hd) && self.k.fits(rows, d.nkv * d.hd) && self.v.fits(rows, d.nkv * d.hd)
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    t: u32,
    nh: u32,
    nkv: u32,
    hd: u32,
    blocks: u32,
    total: u32,
    rows: u32,
    scale: f32,
    q_off: u32,
    q_ld: u32,
    k_off: u32,
    k_ld: u32,
    v_off: u32,
    v_ld: u32,
    dq_off: u32,
    dq_ld: u32,
    dk_off: u32,
    dk_ld: u32,
    dv_off: u32,
    dv_ld: u32,
}

impl Params {
    fn inputs(mut self, x: &Qkv) -> Params {
        (self.q_off, self.q_ld) = (x.q.offset as u32, x.q.ld as u32);
        (self.k_off, self.k_ld) = (x.k.offset as u32, x.k.ld as u32);
        (self.v_off, self.v_ld) = (x.v.offset as u32, x.v.ld as u32);
        self
    }
    fn grads(mut self, dx: &Qkv) -> Params {
        (self.dq_off, self.dq_ld) = (dx.q.offset as u32, dx.q.ld as u32);
        (self.dk_off, self.dk_ld) = (dx.k.offset as u32, dx.k.ld as u32);
        (self.dv_off, self.dv_ld) = (dx.v.offset as u32, dx.v.ld as u32);
        self
    }
}

/// Debug checks shared by forward and backward; false if there is nothing to do.
fn prepare(d: &Attention, x: &Qkv, out: &Tensor, lse: &Tensor) -> bool {
    debug_assert!(Attention::check_heads(d.nh, d.nkv, d.hd).is_ok(), "attention: {d:?}");
    let n = d.b * d.t;
    debug_assert!(x.fits(n, d), "attention: q, k or v views out of bounds for {d:?}");
    debug_assert!(out.len() >= n * d.nh * d.hd && lse.len() >= d.stats_len());
    d.b > 0 && d.t > 0 && Attention::check_heads(d.nh, d.nkv, d.hd).is_ok()
}

/// Rows of one tile (8·TR) for head dim `hd`.
fn tile_rows(hd: usize) -> usize {
    8 * tiles(padded(hd)).0
}

/// out [N, nh·hd] = softmax(scale·q·kᵀ, causal)·v per head; lse [B, nh, T] is kept for backward.
pub fn attention_forward(gpu: &Gpu, prog: &mut Program, d: &Attention, x: Qkv, out: &Tensor, lse: &Tensor) {
    if !prepare(d, &x, out, lse) {
        return;
    }
    debug_check_aliasing(&[out, lse], &[x.q.t, x.k.t, x.v.t]);
    let hdp = padded(d.hd);
    let blocks = d.t.div_ceil(tile_rows(d.hd));
    let total = d.b * d.nh * blocks;
    let params = d.params(blocks, total).inputs(&x);
    let k = gpu.kernel(&key(hdp), &|| source(hdp), "forward", &[]);
    prog.push(gpu.dispatch(
        "attention.forward",
        &k,
        super::bytes_of(&params),
        &[
            (1, &x.q.t.buffer),
            (2, &x.k.t.buffer),
            (3, &x.v.t.buffer),
            (4, &out.buffer),
            (5, &lse.buffer),
            (8, &x.q.t.buffer), // dout: bound (the loaders name it) but not read
        ],
        grid(total as u32),
    ));
}

/// From dout [N, nh·hd]: dq, dk, dv (overwritten), given the forward's inputs `x`, its `out` and
/// `lse`. `delta` [B, nh, T] is scratch. dx's views must not share a buffer with x, out, lse,
/// dout or delta (dq, dk and dv may share one, as GPT-2's packed dqkv does).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    gpu: &Gpu,
    prog: &mut Program,
    d: &Attention,
    x: Qkv,
    out: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    delta: &Tensor,
    dx: Qkv,
) {
    if !prepare(d, &x, out, lse) {
        return;
    }
    debug_assert!(dx.fits(d.b * d.t, d), "attention: dq, dk or dv views out of bounds for {d:?}");
    debug_assert!(dout.len() >= d.b * d.t * d.nh * d.hd && delta.len() >= d.stats_len());
    let inputs = [x.q.t, x.k.t, x.v.t, out, lse, dout];
    debug_check_aliasing(&[dx.q.t, delta], &inputs);
    if dx.k.t.buffer == dx.v.t.buffer {
        debug_check_aliasing(&[dx.k.t], &inputs);
    } else {
        debug_check_aliasing(&[dx.k.t, dx.v.t], &inputs);
    }
    debug_check_aliasing(&[delta], &[dx.q.t, dx.k.t, dx.v.t]);
    let hdp = padded(d.hd);
    let blocks = d.t.div_ceil(tile_rows(d.hd));
    let source = || source(hdp);
    // pass 1: dq and delta, one workgroup per (b, h, query tile)
    let total = d.b * d.nh * blocks;
    let params = d.params(blocks, total).inputs(&x).grads(&dx);
    let k = gpu.kernel(&key(hdp), &source, "backward_dq", &[]);
    prog.push(gpu.dispatch(
        "attention.backward_dq",
        &k,
        super::bytes_of(&params),
        &[
            (1, &x.q.t.buffer),
            (2, &x.k.t.buffer),
            (3, &x.v.t.buffer),
            (6, &out.buffer),
            (7, &lse.buffer),
            (8, &dout.buffer),
            (9, &dx.q.t.buffer),
            (12, &delta.buffer),
        ],
        grid(total as u32),
    ));
    // pass 2: dk and dv, one workgroup per (b, kv head, key tile); WebGPU forbids binding one
    // buffer twice for writing, so dk and dv in one buffer take the entry point with one binding
    let total = d.b * d.nkv * blocks;
    let params = d.params(blocks, total).inputs(&x).grads(&dx);
    let shared = dx.k.t.buffer == dx.v.t.buffer;
    let entry = if shared { "backward_dkv_shared" } else { "backward_dkv" };
    let k = gpu.kernel(&key(hdp), &source, entry, &[]);
    prog.push(gpu.dispatch(
        &format!("attention.{entry}"),
        &k,
        super::bytes_of(&params),
        &[
            (1, &x.q.t.buffer),
            (2, &x.k.t.buffer),
            (3, &x.v.t.buffer),
            (7, &lse.buffer),
            (8, &dout.buffer),
            (10, &dx.k.t.buffer),
            (11, &dx.v.t.buffer),
            (13, &delta.buffer),
            (17, &dx.k.t.buffer),
        ],
        grid(total as u32),
    ));
}

/// Debug check of the WebGPU rule that a dispatch may not bind a buffer it writes to any other
/// binding (Chrome rejects it; wgpu on Vulkan does not, so the native tests would miss it).
fn debug_check_aliasing(written: &[&Tensor], read: &[&Tensor]) {
    for (i, w) in written.iter().enumerate() {
        debug_assert!(
            !read.iter().chain(&written[i + 1..]).any(|r| r.buffer == w.buffer),
            "attention: {} is written and also bound elsewhere in the same dispatch",
            w.label
        );
    }
}

/// Shapes of KV-cached decoding for one sequence: `nh` query heads over `nkv` key/value heads,
/// head dim `hd` (at most [`MAX_HEAD_DIM`]), cache rows `max_len`, score scale `scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionDecode {
    pub nh: usize,
    pub nkv: usize,
    pub hd: usize,
    pub max_len: usize,
    pub scale: f32,
}

impl AttentionDecode {
    /// Multi-head attention over width `c` (GPT-2): nh heads of c / nh, nkv = nh, scale 1/√hd.
    pub fn mha(c: usize, nh: usize, max_len: usize) -> AttentionDecode {
        let a = Attention::mha(1, 1, c, nh);
        AttentionDecode { nh, nkv: nh, hd: a.hd, max_len, scale: a.scale }
    }

    /// Elements of one cache row: nkv·hd.
    pub fn kv_width(&self) -> usize {
        self.nkv * self.hd
    }

    fn params(&self, rows: usize) -> Params {
        Params {
            t: self.max_len as u32,
            nh: self.nh as u32,
            nkv: self.nkv as u32,
            hd: self.hd as u32,
            rows: rows as u32,
            scale: self.scale,
            ..Params::default()
        }
    }

    fn ok(&self) -> bool {
        debug_assert!(Attention::check_heads(self.nh, self.nkv, self.hd).is_ok(), "attention_decode: {self:?}");
        self.max_len > 0 && Attention::check_heads(self.nh, self.nkv, self.hd).is_ok()
    }
}

/// Copies `rows` rows of the views k and v [rows, nkv·hd] into rows pos[0].. of k_cache and
/// v_cache [max_len, nkv·hd]. `pos` is a u32 tensor [1] read on the GPU, so one prepared
/// dispatch serves every position; rows past max_len are dropped.
#[allow(clippy::too_many_arguments)]
pub fn kv_store(
    gpu: &Gpu,
    prog: &mut Program,
    d: &AttentionDecode,
    k: View,
    v: View,
    rows: usize,
    pos: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
) {
    let w = d.kv_width();
    debug_assert!(k.fits(rows, w) && v.fits(rows, w), "kv_store: k or v view out of bounds");
    debug_assert!(k_cache.len() >= d.max_len * w && v_cache.len() >= d.max_len * w);
    if rows == 0 || !d.ok() {
        return;
    }
    let mut params = d.params(rows);
    (params.k_off, params.k_ld, params.v_off, params.v_ld) =
        (k.offset as u32, k.ld as u32, v.offset as u32, v.ld as u32);
    let hdp = padded(d.hd);
    let kernel = gpu.kernel(&key(hdp), &|| source(hdp), "kv_store", &[]);
    prog.push(gpu.dispatch(
        "attention.kv_store",
        &kernel,
        super::bytes_of(&params),
        &[
            (2, &k.t.buffer),
            (3, &v.t.buffer),
            (14, &pos.buffer),
            (15, &k_cache.buffer),
            (16, &v_cache.buffer),
        ],
        grid(rows as u32),
    ));
}

/// One query against the caches: out [nh·hd] (head h in columns h·hd..) =
/// softmax(scale·q·kᵀ)·v over cache rows 0..=pos[0] of kv head h / (nh / nkv), q = row 0 of
/// the view [1, nh·hd]. Run [`kv_store`] for the query's own row first. One workgroup per
/// query head, numerically stable (online) softmax.
#[allow(clippy::too_many_arguments)]
pub fn attention_decode(
    gpu: &Gpu,
    prog: &mut Program,
    d: &AttentionDecode,
    q: View,
    pos: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    out: &Tensor,
) {
    let w = d.kv_width();
    debug_assert!(q.fits(1, d.nh * d.hd) && out.len() >= d.nh * d.hd, "attention_decode: q or out too short");
    debug_assert!(k_cache.len() >= d.max_len * w && v_cache.len() >= d.max_len * w);
    if !d.ok() {
        return;
    }
    let mut params = d.params(1);
    params.q_off = q.offset as u32;
    let hdp = padded(d.hd);
    let kernel = gpu.kernel(&key(hdp), &|| source(hdp), "decode", &[]);
    prog.push(gpu.dispatch(
        "attention.decode",
        &kernel,
        super::bytes_of(&params),
        &[
            (1, &q.t.buffer),
            (4, &out.buffer),
            (14, &pos.buffer),
            (15, &k_cache.buffer),
            (16, &v_cache.buffer),
        ],
        (d.nh as u32, 1, 1),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_head_dim_has_a_variant_that_holds_it() {
        for hd in 1..=MAX_HEAD_DIM {
            let hdp = padded(hd);
            assert!(hdp >= hd && PADDED.contains(&hdp), "hd {hd} -> {hdp}");
            let (tr, dk, kc) = tiles(hdp);
            // the shader's layout: TR x HDP/8 threads, BC = HDP/2 columns per block staged KC rows at a time
            assert!(tr * hdp / 8 <= 256 && (hdp / 2).is_multiple_of(kc) && dk > 0, "hd {hd}");
        }
    }
}
