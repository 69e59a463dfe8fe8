//! GELU (shaders/gelu.wgsl): Hugging Face `gelu_new`, the tanh approximation GPT-2 uses,
//! elementwise over any number of values.

use crate::gpu::{grid, groups, Gpu, Program, Tensor};

const SRC: &str = include_str!("../../shaders/gelu.wgsl");

fn source() -> String {
    SRC.to_string()
}

pub fn variants() -> Vec<(String, String)> {
    vec![("gelu".into(), source())]
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
}

/// y = gelu_new(x), elementwise; `x` and `y` have the same length and are different tensors.
pub fn gelu_forward(gpu: &Gpu, prog: &mut Program, x: &Tensor, y: &Tensor) {
    debug_assert!(x.len() == y.len());
    let k = gpu.kernel("gelu", &source, "forward", &[]);
    let params = Params { n: x.len() as u32 };
    prog.push(gpu.dispatch(
        "gelu.forward",
        &k,
        super::bytes_of(&params),
        &[(1, &x.buffer), (3, &y.buffer)],
        grid(groups(x.len(), 256)),
    ));
}

/// dx = dy · gelu_new'(x) (overwrite); `dx` must be a tensor other than `x` and `dy`.
pub fn gelu_backward(gpu: &Gpu, prog: &mut Program, x: &Tensor, dy: &Tensor, dx: &Tensor) {
    debug_assert!(x.len() == dy.len() && x.len() == dx.len());
    let k = gpu.kernel("gelu", &source, "backward", &[]);
    let params = Params { n: x.len() as u32 };
    prog.push(gpu.dispatch(
        "gelu.backward",
        &k,
        super::bytes_of(&params),
        &[(1, &x.buffer), (2, &dy.buffer), (3, &dx.buffer)],
        grid(groups(x.len(), 256)),
    ));
}
