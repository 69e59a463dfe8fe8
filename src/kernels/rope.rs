//! Rotary position embeddings (shaders/rope.wgsl), Hugging Face's rotate_half convention:
//! in every head, pair (k, k + hd/2) turns by the angle of (position, k). The angles never
//! reach the GPU's sin/cos (imprecise for large arguments on some GPUs): the host builds a
//! table [positions, hd] (cos in columns 0..hd/2, sin in hd/2..hd; `model::rope::Rope::table`)
//! and uploads it once; the kernel reads it.
//!
//! q [N, nh·hd] and k [N, nkv·hd] are rotated by one call each, on [`View`]s (so they may sit
//! inside a packed qkv buffer), in place or from another buffer. Backward is the rotation by
//! the negative angle (the transpose), also in place or not.

use crate::gpu::shaders::Template;
use crate::gpu::{grid, groups, Gpu, Program, Tensor};

use super::View;

const SRC: &str = include_str!("../../shaders/rope.wgsl");

/// The variant: out of place or in place, position base from params or from a GPU buffer.
fn source(in_place: bool, at: bool) -> String {
    Template::new("rope", SRC)
        .set("SRC", if in_place { "dst" } else { "src" })
        .set("START", if at { "pos[0]" } else { "p.start" })
        .render()
}

fn key(in_place: bool, at: bool) -> String {
    format!("rope:{}:{}", if in_place { "inplace" } else { "copy" }, if at { "at" } else { "start" })
}

pub fn variants() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for in_place in [false, true] {
        for at in [false, true] {
            v.push((key(in_place, at), source(in_place, at)));
        }
    }
    v
}

/// The shape of a rotation: `n` rows of `heads` heads of `head_dim` values (even); row i
/// sits at position (start + i mod `t`) — `t` is the sequence length of a [B, T] batch of
/// rows, or `n` for rows at consecutive positions (a prompt being decoded).
#[derive(Clone, Copy, Debug)]
pub struct Rope {
    pub n: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub t: usize,
}

/// Where the positions start.
#[derive(Clone, Copy)]
pub enum Positions<'a> {
    /// A fixed first position (training: 0).
    Start(usize),
    /// The first position is `pos[0]` of a u32 tensor [1], read on the GPU, so one prepared
    /// dispatch serves every decoding step.
    At(&'a Tensor),
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    t: u32,
    start: u32,
    heads: u32,
    half: u32,
    positions: u32,
    src_off: u32,
    src_ld: u32,
    dst_off: u32,
    dst_ld: u32,
    sign: f32,
    pad: u32,
}

/// out = RoPE(x) on [n, heads·head_dim] views; `x` None rotates `out` in place, otherwise
/// `x` must lie in another buffer than `out`. `table` [positions, head_dim] as built by
/// `model::rope::Rope::table`; positions past it give zero rows (callers size the table to
/// the longest sequence they run).
#[allow(clippy::too_many_arguments)]
pub fn rope_forward(
    gpu: &Gpu,
    prog: &mut Program,
    d: &Rope,
    x: Option<View>,
    out: View,
    table: &Tensor,
    positions: Positions,
) {
    rotate(gpu, prog, d, x, out, table, positions, 1.0);
}

/// dx = RoPE backward (the rotation by the negative angle) of dy, overwriting dx; `dy` None
/// works in place on `dx` (which then holds dy on entry). Same views, table and positions as
/// the forward.
#[allow(clippy::too_many_arguments)]
pub fn rope_backward(
    gpu: &Gpu,
    prog: &mut Program,
    d: &Rope,
    dy: Option<View>,
    dx: View,
    table: &Tensor,
    positions: Positions,
) {
    rotate(gpu, prog, d, dy, dx, table, positions, -1.0);
}

#[allow(clippy::too_many_arguments)]
fn rotate(
    gpu: &Gpu,
    prog: &mut Program,
    d: &Rope,
    src: Option<View>,
    dst: View,
    table: &Tensor,
    positions: Positions,
    sign: f32,
) {
    let (hd, width) = (d.head_dim, d.heads * d.head_dim);
    debug_assert!(hd % 2 == 0, "rope: head_dim {hd} must be even");
    debug_assert!(dst.fits(d.n, width) && src.is_none_or(|s| s.fits(d.n, width)), "rope: view out of bounds");
    let pairs = d.n * d.heads * (hd / 2);
    if pairs == 0 || d.t == 0 {
        return;
    }
    let (in_place, at) = (src.is_none(), matches!(positions, Positions::At(_)));
    let k = gpu.kernel(&key(in_place, at), &|| source(in_place, at), "rotate", &[]);
    let s = src.unwrap_or(dst);
    let params = Params {
        n: d.n as u32,
        t: d.t as u32,
        start: match positions {
            Positions::Start(p) => p as u32,
            Positions::At(_) => 0,
        },
        heads: d.heads as u32,
        half: (hd / 2) as u32,
        positions: (table.len() / hd) as u32,
        src_off: s.offset as u32,
        src_ld: s.ld as u32,
        dst_off: dst.offset as u32,
        dst_ld: dst.ld as u32,
        sign,
        pad: 0,
    };
    let mut b = vec![(1, &s.t.buffer), (2, &table.buffer), (4, &dst.t.buffer)];
    if let Positions::At(pos) = positions {
        debug_assert!(!pos.is_empty());
        b.push((3, &pos.buffer));
    }
    let label = if sign > 0.0 { "rope.forward" } else { "rope.backward" };
    prog.push(gpu.dispatch(label, &k, super::bytes_of(&params), &b, grid(groups(pairs, 256))));
}
