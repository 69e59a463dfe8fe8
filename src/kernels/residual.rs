//! Residual add (shaders/residual.wgsl): out = a + b, any shape.

use crate::gpu::{grid, groups, Gpu, Program, Tensor};

const SRC: &str = include_str!("../../shaders/residual.wgsl");

fn source() -> String {
    SRC.to_string()
}

pub fn variants() -> Vec<(String, String)> {
    vec![("residual".into(), source())]
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
}

/// out[i] = a[i] + b[i]; all three have the same number of elements.
pub fn add_forward(gpu: &Gpu, prog: &mut Program, a: &Tensor, b: &Tensor, out: &Tensor) {
    debug_assert!(a.len() == b.len() && a.len() == out.len());
    let k = gpu.kernel("residual", &source, "add_forward", &[]);
    let params = Params { n: a.len() as u32 };
    prog.push(gpu.dispatch(
        "residual.add_forward",
        &k,
        super::bytes_of(&params),
        &[(1, &a.buffer), (2, &b.buffer), (3, &out.buffer)],
        grid(groups(a.len(), 256)),
    ));
}
