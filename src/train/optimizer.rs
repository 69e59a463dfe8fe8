//! AdamW with PyTorch's semantics over every trained tensor, after global-norm
//! clipping, all on the GPU: no gradient is read back.

use std::collections::BTreeMap;

use super::TrainError;
use crate::gpu::{Gpu, GpuError, Program, Tensor};
use crate::kernels::optimizer::{self, AdamWParams, AdamWStep, GradNorm};
use crate::model::ModelGpu;
use crate::model::linear::join_parts;
use crate::model::HostTensor;

/// The user's optimiser settings (PyTorch defaults but for weight decay).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Max global gradient norm; <= 0 turns clipping off.
    pub grad_clip: f32,
}

impl AdamWConfig {
    /// Checks every setting (finite; lr, eps > 0; weight decay, clip >= 0; betas in [0, 1)), shared by the
    /// CLI and the browser API. `flag` spells a setting's name (`lr`, `weight-decay`, `beta1`, `beta2`, `eps`,
    /// `grad-clip`) the caller's way in messages: `--lr` on the command line, `lr` / `weightDecay` in JS.
    pub fn validate(&self, flag: impl Fn(&str) -> String) -> Result<(), TrainError> {
        let checks: [(&str, f32, bool, &str); 6] = [
            ("lr", self.lr, self.lr > 0.0, "> 0"),
            ("weight-decay", self.weight_decay, self.weight_decay >= 0.0, ">= 0"),
            ("beta1", self.beta1, (0.0..1.0).contains(&self.beta1), "in [0, 1)"),
            ("beta2", self.beta2, (0.0..1.0).contains(&self.beta2), "in [0, 1)"),
            ("eps", self.eps, self.eps > 0.0, "> 0"),
            ("grad-clip", self.grad_clip, self.grad_clip >= 0.0, ">= 0 (0 turns clipping off)"),
        ];
        for (name, v, ok, want) in checks {
            if !(ok && v.is_finite()) {
                return Err(TrainError::Invalid(format!("{} {v} is invalid: it must be {want}", flag(name))));
            }
        }
        Ok(())
    }
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, grad_clip: 1.0 }
    }
}

pub struct Optimizer {
    pub config: AdamWConfig,
    /// Steps taken so far (AdamW's t after the next `begin_step` is step + 1).
    pub step: u32,
    /// (m, v) per trained tensor, in `ModelGpu::trained` order.
    pub moments: Vec<(Tensor, Tensor)>,
    step_params: Tensor,
    pub norm: GradNorm,
}

impl Optimizer {
    /// Allocates AdamW state and pushes the clip + update dispatches onto `prog`.
    pub fn new(gpu: &Gpu, prog: &mut Program, model: &ModelGpu, config: AdamWConfig) -> Result<Optimizer, GpuError> {
        let trained = model.trained();
        let grads: Vec<&Tensor> = trained.iter().filter_map(|p| p.grad.as_ref()).collect();
        let norm = GradNorm::new(gpu, prog, &grads, config.grad_clip)?;
        let step_params = gpu.zeros("adamw step", &[8])?;
        let mut moments = Vec::with_capacity(trained.len());
        for p in &trained {
            let m = gpu.zeros(&format!("adam m {}", p.name), &p.value.shape)?;
            let v = gpu.zeros(&format!("adam v {}", p.name), &p.value.shape)?;
            if let Some(g) = &p.grad {
                optimizer::adamw(gpu, prog, &step_params, &norm.out, &p.value, g, &m, &v);
            }
            moments.push((m, v));
        }
        Ok(Optimizer { config, step: 0, moments, step_params, norm })
    }

    /// Advances t and writes this step's scalars (learning rate `lr`, bias corrections).
    pub fn begin_step(&mut self, gpu: &Gpu, lr: f32) {
        self.step += 1;
        let c = self.config;
        let h = AdamWParams { lr, beta1: c.beta1, beta2: c.beta2, eps: c.eps, weight_decay: c.weight_decay };
        gpu.write(&self.step_params, &AdamWStep::new(h, self.step).as_f32s());
    }

    /// Reads AdamW's moments back: (trained tensor name, m, v) in `ModelGpu::trained` order, a
    /// row-chunked tensor's chunks joined into one (so the file has the whole tensor's shape).
    /// `model` must be the model this optimizer was made for.
    pub async fn read_moments(
        &self,
        gpu: &Gpu,
        model: &ModelGpu,
    ) -> Result<Vec<(String, HostTensor, HostTensor)>, GpuError> {
        let (mut ms, mut vs) = (Vec::with_capacity(self.moments.len()), Vec::with_capacity(self.moments.len()));
        for (p, (m, v)) in model.trained().into_iter().zip(&self.moments) {
            ms.push((p.name.clone(), HostTensor::new(&m.shape, gpu.read(m).await?)));
            vs.push((p.name.clone(), HostTensor::new(&v.shape, gpu.read(v).await?)));
        }
        Ok(join_parts(ms).into_iter().zip(join_parts(vs)).map(|((name, m), (_, v))| (name, m, v)).collect())
    }

    /// Continues from saved state: AdamW's step count (`step` updates taken) and (m, v) for every
    /// trained tensor of `model`, by name (a row-chunked tensor's moments are split over its
    /// chunks). Every trained tensor needs its pair with its shape, and no other name may appear;
    /// `what` names the source in messages.
    pub fn restore(
        &mut self,
        gpu: &Gpu,
        model: &ModelGpu,
        step: u32,
        moments: &BTreeMap<String, (HostTensor, HostTensor)>,
        what: &str,
    ) -> Result<(), TrainError> {
        let trained = model.trained();
        if let Some(extra) = moments.keys().find(|k| !trained.iter().any(|p| &p.name == *k)) {
            return Err(TrainError::Invalid(format!("{what}: AdamW state for '{extra}', which this run does not train")));
        }
        // Each trained part's first row in its whole tensor, and the whole tensors' shapes.
        let mut row0 = Vec::with_capacity(trained.len());
        let mut whole: Vec<(String, Vec<usize>)> = Vec::new();
        for p in &trained {
            let shape = &p.value.shape;
            match whole.last_mut() {
                Some((name, w)) if *name == p.name && !shape.is_empty() && w.len() == shape.len() && w[1..] == shape[1..] => {
                    row0.push(w[0]);
                    w[0] += shape[0];
                }
                _ => {
                    row0.push(0);
                    whole.push((p.name.clone(), shape.clone()));
                }
            }
        }
        for (name, shape) in &whole {
            let (hm, hv) =
                moments.get(name).ok_or_else(|| TrainError::Invalid(format!("{what}: no AdamW state for '{name}'")))?;
            for (h, kind) in [(hm, "m"), (hv, "v")] {
                if &h.shape != shape || h.data.len() != shape.iter().product::<usize>() {
                    return Err(TrainError::Invalid(format!(
                        "{what}: AdamW {kind} of '{name}' has shape {:?} but the tensor is {shape:?}",
                        h.shape
                    )));
                }
            }
        }
        for ((p, (m, v)), r0) in trained.iter().zip(&self.moments).zip(row0) {
            let (hm, hv) = &moments[&p.name];
            let row: usize = p.value.shape.get(1..).map_or(1, |s| s.iter().product());
            let range = r0 * row..r0 * row + m.len();
            gpu.write(m, &hm.data[range.clone()]);
            gpu.write(v, &hv.data[range]);
        }
        self.step = step;
        Ok(())
    }
}
