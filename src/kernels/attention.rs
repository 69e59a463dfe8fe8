//! Causal multi-head attention, composed from the batched strided matmul
//! ([`super::matmul`]) and the causal softmax of shaders/attention.wgsl.
//!
//! Every product runs over batch z = b·nh + h (batch_inner = nh) on strided views:
//! head h of q, k, v is columns h·hd.., c + h·hd.., 2c + h·hd.. of qkv [B, T, 3C];
//! att [B, nh, T, T] is packed per head; out [B, T, C] and dout hold head h in
//! columns h·hd..(h+1)·hd. The products tell the matmul which triangle matters
//! ([`Causal`]), so tiles above the diagonal are neither computed nor read.

use super::matmul::{matmul_causal, Causal, Matmul};
use crate::gpu::shaders::{reduce_lib, Template};
use crate::gpu::{grid, Gpu, Program, Tensor};

/// The largest head dimension [`attention_decode`] supports (shaders/attention.wgsl `MAX_HD`).
pub const DECODE_MAX_HEAD_DIM: usize = 256;

const SRC: &str = include_str!("../../shaders/attention.wgsl");

fn source() -> String {
    Template::new("attention", SRC).lib(&reduce_lib()).render()
}

pub fn variants() -> Vec<(String, String)> {
    vec![("attention".into(), source())]
}

/// Shapes: batch `b`, sequence `t`, channels `c`, heads `nh` (c divisible by nh).
#[derive(Clone, Copy, Debug)]
pub struct Attention {
    pub b: usize,
    pub t: usize,
    pub c: usize,
    pub nh: usize,
}

impl Attention {
    fn hd(&self) -> usize {
        self.c / self.nh
    }
    fn scale(&self) -> f32 {
        1.0 / (self.hd() as f32).sqrt()
    }
    /// A product over every (batch, head), with the strides of its operands.
    fn per_head(&self, mm: Matmul, a: (usize, usize), b: (usize, usize), c: (usize, usize)) -> Matmul {
        Matmul {
            batch: self.b * self.nh,
            batch_inner: self.nh,
            a_stride: a,
            b_stride: b,
            c_stride: c,
            ..mm
        }
    }
    /// (outer, inner) strides of a head's view into qkv [B, T, 3C].
    fn qkv_stride(&self) -> (usize, usize) {
        (self.t * 3 * self.c, self.hd())
    }
    /// ... into att / datt [B, nh, T, T].
    fn att_stride(&self) -> (usize, usize) {
        (self.nh * self.t * self.t, self.t * self.t)
    }
    /// ... into out / dout [B, T, C].
    fn out_stride(&self) -> (usize, usize) {
        (self.t * self.c, self.hd())
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    t: u32,
    rows: u32,
    /// Decoding only (0 for the softmax).
    c: u32,
    nh: u32,
}

fn softmax(gpu: &Gpu, prog: &mut Program, d: &Attention, entry: &str, att: &Tensor, x: &Tensor) {
    let rows = d.b * d.nh * d.t;
    let k = gpu.kernel("attention", &source, entry, &[]);
    let params = Params {
        t: d.t as u32,
        rows: rows as u32,
        c: 0,
        nh: 0,
    };
    prog.push(gpu.dispatch(
        &format!("attention.{entry}"),
        &k,
        super::bytes_of(&params),
        &[(1, &att.buffer), (2, &x.buffer)],
        grid(rows as u32),
    ));
}

/// qkv [B,T,3C] (q | k | v, head h at columns h*hd..(h+1)*hd of each part) -> out [B,T,C];
/// att [B,nh,T,T] saves the softmax probabilities for backward (zero above the diagonal).
pub fn attention_forward(gpu: &Gpu, prog: &mut Program, d: &Attention, qkv: &Tensor, att: &Tensor, out: &Tensor) {
    debug_assert!(d.nh > 0 && d.c.is_multiple_of(d.nh), "attention: c must be divisible by nh");
    debug_assert!(qkv.len() >= d.b * d.t * 3 * d.c && att.len() >= d.b * d.nh * d.t * d.t);
    debug_assert!(out.len() >= d.b * d.t * d.c);
    if d.b == 0 || d.t == 0 || d.c == 0 {
        return;
    }
    let (c, t, hd) = (d.c, d.t, d.hd());
    let (qkv_s, att_s, out_s) = (d.qkv_stride(), d.att_stride(), d.out_stride());
    // att = q · kᵀ / √hd   [T, T] per head
    let mut s = d.per_head(Matmul::new(t, t, hd).tb().alpha(d.scale()), qkv_s, qkv_s, att_s);
    (s.lda, s.ldb, s.b_offset) = (3 * c, 3 * c, c);
    matmul_causal(gpu, prog, &s, qkv, qkv, att, None, Causal::LowerC);
    // att = causal softmax(att), in place
    softmax(gpu, prog, d, "softmax_forward", att, att);
    // out = att · v   [T, hd] per head, into out's head columns
    let mut s = d.per_head(Matmul::new(t, hd, t), att_s, qkv_s, out_s);
    (s.ldb, s.b_offset, s.ldc) = (3 * c, 2 * c, c);
    matmul_causal(gpu, prog, &s, att, qkv, out, None, Causal::LowerA);
}

/// dout [B,T,C] -> dqkv [B,T,3C] (overwritten). datt [B,nh,T,T] is scratch.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    gpu: &Gpu,
    prog: &mut Program,
    d: &Attention,
    dout: &Tensor,
    qkv: &Tensor,
    att: &Tensor,
    datt: &Tensor,
    dqkv: &Tensor,
) {
    debug_assert!(d.nh > 0 && d.c.is_multiple_of(d.nh), "attention: c must be divisible by nh");
    debug_assert!(dqkv.len() >= d.b * d.t * 3 * d.c && datt.len() >= d.b * d.nh * d.t * d.t);
    if d.b == 0 || d.t == 0 || d.c == 0 {
        return;
    }
    let (c, t, hd) = (d.c, d.t, d.hd());
    let (qkv_s, att_s, out_s) = (d.qkv_stride(), d.att_stride(), d.out_stride());
    // datt = dout · vᵀ   [T, T] per head
    let mut s = d.per_head(Matmul::new(t, t, hd).tb(), out_s, qkv_s, att_s);
    (s.lda, s.ldb, s.b_offset) = (c, 3 * c, 2 * c);
    matmul_causal(gpu, prog, &s, dout, qkv, datt, None, Causal::LowerC);
    // dv = attᵀ · dout   [T, hd] per head, into dqkv's v columns
    let mut s = d.per_head(Matmul::new(t, hd, t).ta(), att_s, out_s, qkv_s);
    (s.ldb, s.ldc, s.c_offset) = (c, 3 * c, 2 * c);
    matmul_causal(gpu, prog, &s, att, dout, dqkv, None, Causal::UpperA);
    // datt = softmax backward (unscaled dscores), in place
    softmax(gpu, prog, d, "softmax_backward", att, datt);
    // dq = datt · k / √hd, into dqkv's q columns
    let mut s = d.per_head(Matmul::new(t, hd, t).alpha(d.scale()), att_s, qkv_s, qkv_s);
    (s.ldb, s.b_offset, s.ldc) = (3 * c, c, 3 * c);
    matmul_causal(gpu, prog, &s, datt, qkv, dqkv, None, Causal::LowerA);
    // dk = dattᵀ · q / √hd, into dqkv's k columns
    let mut s = d.per_head(Matmul::new(t, hd, t).ta().alpha(d.scale()), att_s, qkv_s, qkv_s);
    (s.ldb, s.ldc, s.c_offset) = (3 * c, 3 * c, c);
    matmul_causal(gpu, prog, &s, datt, qkv, dqkv, None, Causal::UpperA);
}

/// Shapes of KV-cached decoding for one sequence: channels `c`, heads `nh` (c divisible
/// by nh, head dim at most [`DECODE_MAX_HEAD_DIM`]), cache rows `max_len`.
#[derive(Clone, Copy, Debug)]
pub struct AttentionDecode {
    pub c: usize,
    pub nh: usize,
    pub max_len: usize,
}

impl AttentionDecode {
    fn params(&self, rows: usize) -> Params {
        Params {
            t: self.max_len as u32,
            rows: rows as u32,
            c: self.c as u32,
            nh: self.nh as u32,
        }
    }
}

/// Copies k and v of `rows` rows of qkv [rows, 3C] into rows pos[0].. of k_cache and
/// v_cache [max_len, C]. `pos` is a u32 tensor [1] read on the GPU, so one prepared
/// dispatch serves every position; rows past max_len are dropped.
#[allow(clippy::too_many_arguments)]
pub fn kv_store(
    gpu: &Gpu,
    prog: &mut Program,
    d: &AttentionDecode,
    qkv: &Tensor,
    rows: usize,
    pos: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
) {
    debug_assert!(qkv.len() >= rows * 3 * d.c && k_cache.len() >= d.max_len * d.c && v_cache.len() >= d.max_len * d.c);
    if rows == 0 || d.c == 0 || d.max_len == 0 {
        return;
    }
    let k = gpu.kernel("attention", &source, "kv_store", &[]);
    prog.push(gpu.dispatch(
        "attention.kv_store",
        &k,
        super::bytes_of(&d.params(rows)),
        &[
            (3, &qkv.buffer),
            (4, &pos.buffer),
            (5, &k_cache.buffer),
            (6, &v_cache.buffer),
        ],
        grid(rows as u32),
    ));
}

/// One query against the cache: out [C] (head h in columns h·hd..) = softmax(q·kᵀ/√hd)·v
/// over cache rows 0..=pos[0], q = columns 0..C of qkv row 0. Run [`kv_store`] for the
/// query's own row first. One workgroup per head, numerically stable (online) softmax.
#[allow(clippy::too_many_arguments)]
pub fn attention_decode(
    gpu: &Gpu,
    prog: &mut Program,
    d: &AttentionDecode,
    qkv: &Tensor,
    pos: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    out: &Tensor,
) {
    debug_assert!(
        d.nh > 0 && d.c.is_multiple_of(d.nh),
        "attention_decode: c must be divisible by nh"
    );
    debug_assert!(
        d.c / d.nh.max(1) <= DECODE_MAX_HEAD_DIM,
        "attention_decode: head dim above {DECODE_MAX_HEAD_DIM}"
    );
    debug_assert!(qkv.len() >= d.c && out.len() >= d.c && k_cache.len() >= d.max_len * d.c);
    if d.c == 0 || d.nh == 0 || d.max_len == 0 {
        return;
    }
    let k = gpu.kernel("attention", &source, "decode", &[]);
    prog.push(gpu.dispatch(
        "attention.decode",
        &k,
        super::bytes_of(&d.params(1)),
        &[
            (3, &qkv.buffer),
            (4, &pos.buffer),
            (5, &k_cache.buffer),
            (6, &v_cache.buffer),
            (7, &out.buffer),
        ],
        (d.nh as u32, 1, 1),
    ));
}
