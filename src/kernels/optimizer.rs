//! Optimizer (shaders/optimizer.wgsl): global gradient norm with PyTorch
//! `clip_grad_norm_` semantics, and AdamW (`torch.optim.AdamW`) in place.

use crate::gpu::shaders::{reduce_lib, Template};
use crate::gpu::{grid, groups, Gpu, GpuError, Program, Tensor};

const SRC: &str = include_str!("../../shaders/optimizer.wgsl");

fn source() -> String {
    Template::new("optimizer", SRC).lib(&reduce_lib()).render()
}

pub fn variants() -> Vec<(String, String)> {
    vec![("optimizer".into(), source())]
}

/// Invocations per workgroup in every entry point.
const WG: usize = 256;
/// Most workgroups (so partial sums) one gradient tensor gets; larger tensors loop.
const MAX_GROUPS_PER_TENSOR: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    offset: u32,
    groups: u32,
    max_norm: f32,
}

/// Global gradient L2 norm over many tensors (deterministic multi-workgroup partial
/// sums, then a final reduce). `out` [2] = (norm, clip coefficient =
/// min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0), PyTorch `clip_grad_norm_`
/// semantics. The partial sums per tensor depend only on its length, so the result is
/// the same bits on every run.
pub struct GradNorm {
    pub out: Tensor,
    _partials: Tensor,
}

impl GradNorm {
    /// Workgroups (partial sums) for a gradient of `len` elements.
    fn groups_of(len: usize) -> usize {
        if len == 0 {
            0
        } else {
            (groups(len, WG) as usize).min(MAX_GROUPS_PER_TENSOR)
        }
    }

    /// Elements of the partial-sum scratch for gradients of these lengths (the memory plan's).
    pub fn partials_len(lens: impl IntoIterator<Item = usize>) -> usize {
        lens.into_iter().map(Self::groups_of).sum::<usize>().max(1)
    }

    /// Allocates the scratch and pushes the dispatches (one per non-empty gradient, plus
    /// the final reduce) onto `prog`.
    pub fn new(gpu: &Gpu, prog: &mut Program, grads: &[&Tensor], max_norm: f32) -> Result<GradNorm, GpuError> {
        let plan: Vec<usize> = grads.iter().map(|g| Self::groups_of(g.len())).collect();
        let total: usize = plan.iter().sum();
        let partials = gpu.zeros("grad_norm.partials", &[total.max(1)])?;
        let out = gpu.zeros("grad_norm.out", &[2])?;
        let sumsq = gpu.kernel("optimizer", &source, "sumsq_partials", &[]);
        let mut offset = 0usize;
        for (g, &nwg) in grads.iter().zip(&plan) {
            if nwg == 0 {
                continue;
            }
            let params = Params {
                n: g.len() as u32,
                offset: offset as u32,
                groups: nwg as u32,
                max_norm,
            };
            prog.push(gpu.dispatch(
                &format!("optimizer.sumsq_partials({})", g.label),
                &sumsq,
                super::bytes_of(&params),
                &[(1, &g.buffer), (2, &partials.buffer)],
                (nwg as u32, 1, 1),
            ));
            offset += nwg;
        }
        let finish = gpu.kernel("optimizer", &source, "norm_finish", &[]);
        let params = Params {
            n: total as u32,
            offset: 0,
            groups: 1,
            max_norm,
        };
        prog.push(gpu.dispatch(
            "optimizer.norm_finish",
            &finish,
            super::bytes_of(&params),
            &[(2, &partials.buffer), (3, &out.buffer)],
            (1, 1, 1),
        ));
        Ok(GradNorm {
            out,
            _partials: partials,
        })
    }
}

/// AdamW's hyperparameters for one step (`torch.optim.AdamW`'s lr, betas, eps, weight_decay).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWParams {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

/// The per-step AdamW scalars, written by the host each step into an 8-float f32
/// tensor (`step_tensor`).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// lr / (1 - β1^t)
    pub step_size: f32,
    /// sqrt(1 - β2^t)
    pub bc2_sqrt: f32,
    pub _pad: f32,
}

impl AdamWStep {
    /// The scalars of step `step` (1-based; 0 is treated as 1). Bias corrections are
    /// computed in f64, like PyTorch's Python floats.
    pub fn new(h: AdamWParams, step: u32) -> AdamWStep {
        let t = step.max(1) as i32;
        let bc1 = 1.0 - (h.beta1 as f64).powi(t);
        let bc2 = 1.0 - (h.beta2 as f64).powi(t);
        AdamWStep {
            lr: h.lr,
            beta1: h.beta1,
            beta2: h.beta2,
            eps: h.eps,
            weight_decay: h.weight_decay,
            step_size: (h.lr as f64 / bc1) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            _pad: 0.0,
        }
    }

    pub fn as_f32s(&self) -> [f32; 8] {
        [
            self.lr,
            self.beta1,
            self.beta2,
            self.eps,
            self.weight_decay,
            self.step_size,
            self.bc2_sqrt,
            self._pad,
        ]
    }
}

/// In place, PyTorch `torch.optim.AdamW` semantics: g' = g * clip[1]; p *= 1 - lr*wd;
/// m = β1 m + (1-β1) g'; v = β2 v + (1-β2) g'^2; p -= step_size * m / (sqrt(v)/bc2_sqrt + eps).
/// `step` is the 8-float [`AdamWStep`] tensor, `clip` a [2] tensor such as
/// [`GradNorm::out`]; `p`, `g`, `m`, `v` have the same length.
#[allow(clippy::too_many_arguments)]
pub fn adamw(
    gpu: &Gpu,
    prog: &mut Program,
    step: &Tensor,
    clip: &Tensor,
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
) {
    debug_assert!(step.len() >= 8 && clip.len() >= 2);
    debug_assert!(g.len() == p.len() && m.len() == p.len() && v.len() == p.len());
    if p.is_empty() {
        return;
    }
    let k = gpu.kernel("optimizer", &source, "adamw", &[]);
    let params = Params {
        n: p.len() as u32,
        offset: 0,
        groups: 0,
        max_norm: 0.0,
    };
    prog.push(gpu.dispatch(
        &format!("optimizer.adamw({})", p.label),
        &k,
        super::bytes_of(&params),
        &[
            (4, &step.buffer),
            (5, &clip.buffer),
            (6, &p.buffer),
            (7, &g.buffer),
            (8, &m.buffer),
            (9, &v.buffer),
        ],
        grid(groups(p.len(), WG)),
    ));
}
