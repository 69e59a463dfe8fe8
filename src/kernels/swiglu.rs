//! SwiGLU (shaders/swiglu.wgsl), the Llama MLP's activation: h = silu(gate) · up on [n, i],
//! silu computed without overflow for any |gate|. The backward reads the forward's inputs
//! (gate, up) again and recomputes σ(gate): no extra activation is kept.
//!
//! Layout: every operand is a [`View`], so gate and up may be two [n, i] tensors or the two
//! halves of one packed [n, 2i] buffer (gate in columns 0..i, up in i..2i: `View::cols(t, 0, 2i)`
//! and `View::cols(t, i, 2i)`), which the gate_proj and up_proj matmuls fill with ldc = 2i;
//! likewise dgate and dup may be the halves of one [n, 2i] gradient buffer. h and dh are
//! usually contiguous [n, i].

use crate::gpu::{grid, groups, Gpu, Program};

use super::View;

const SRC: &str = include_str!("../../shaders/swiglu.wgsl");

fn source() -> String {
    SRC.to_string()
}

pub fn variants() -> Vec<(String, String)> {
    vec![("swiglu".into(), source())]
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    i: u32,
    g_off: u32,
    g_ld: u32,
    u_off: u32,
    u_ld: u32,
    h_off: u32,
    h_ld: u32,
    dg_off: u32,
    dg_ld: u32,
    du_off: u32,
    du_ld: u32,
}

fn params(n: usize, i: usize, gate: &View, up: &View, h: &View, dgate: Option<&View>, dup: Option<&View>) -> Params {
    let o = |v: Option<&View>| v.map_or((0, 0), |v| (v.offset as u32, v.ld as u32));
    let ((dg_off, dg_ld), (du_off, du_ld)) = (o(dgate), o(dup));
    Params {
        n: n as u32,
        i: i as u32,
        g_off: gate.offset as u32,
        g_ld: gate.ld as u32,
        u_off: up.offset as u32,
        u_ld: up.ld as u32,
        h_off: h.offset as u32,
        h_ld: h.ld as u32,
        dg_off,
        dg_ld,
        du_off,
        du_ld,
    }
}

/// h [n, i] = silu(gate [n, i]) · up [n, i]. `h` must lie in another buffer than gate and up
/// (gate and up may share one).
pub fn swiglu_forward(gpu: &Gpu, prog: &mut Program, gate: View, up: View, h: View, n: usize, i: usize) {
    debug_assert!(gate.fits(n, i) && up.fits(n, i) && h.fits(n, i), "swiglu: view out of bounds");
    if n == 0 || i == 0 {
        return;
    }
    let k = gpu.kernel("swiglu", &source, "forward", &[]);
    let p = params(n, i, &gate, &up, &h, None, None);
    prog.push(gpu.dispatch(
        "swiglu.forward",
        &k,
        super::bytes_of(&p),
        &[(1, &gate.t.buffer), (2, &up.t.buffer), (3, &h.t.buffer)],
        grid(groups(n * i, 256)),
    ));
}

/// (dgate, dup) [n, i] from dh [n, i] and the forward's gate and up, overwritten. dgate and
/// dup may share a buffer (e.g. the halves of a packed [n, 2i] gradient), which must not be
/// the buffer of dh, gate or up.
#[allow(clippy::too_many_arguments)]
pub fn swiglu_backward(
    gpu: &Gpu,
    prog: &mut Program,
    dh: View,
    gate: View,
    up: View,
    dgate: View,
    dup: View,
    n: usize,
    i: usize,
) {
    debug_assert!(
        [&dh, &gate, &up, &dgate, &dup].iter().all(|v| v.fits(n, i)),
        "swiglu: view out of bounds"
    );
    if n == 0 || i == 0 {
        return;
    }
    // WebGPU forbids binding one buffer twice for writing: dgate and dup in one buffer take the
    // entry point that writes both through one binding
    let entry = if dgate.t.buffer == dup.t.buffer { "backward_shared" } else { "backward" };
    let k = gpu.kernel("swiglu", &source, entry, &[]);
    let p = params(n, i, &gate, &up, &dh, Some(&dgate), Some(&dup));
    prog.push(gpu.dispatch(
        &format!("swiglu.{entry}"),
        &k,
        super::bytes_of(&p),
        &[
            (1, &gate.t.buffer),
            (2, &up.t.buffer),
            (4, &dh.t.buffer),
            (5, &dgate.t.buffer),
            (6, &dup.t.buffer),
            (7, &dgate.t.buffer),
        ],
        grid(groups(n * i, 256)),
    ));
}
