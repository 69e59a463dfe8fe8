//! AdamW with PyTorch's semantics over every trained tensor, after global-norm
//! clipping, all on the GPU: no gradient is read back.

use std::collections::BTreeMap;

use super::TrainError;
use crate::gpu::{Gpu, GpuError, Program, Tensor};
use crate::kernels::optimizer::{self, AdamWParams, AdamWStep, GradNorm};
use crate::model::gpt2::Gpt2Gpu;
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
    /// (m, v) per trained tensor, in `Gpt2Gpu::trained` order.
    pub moments: Vec<(Tensor, Tensor)>,
    step_params: Tensor,
    pub norm: GradNorm,
}

impl Optimizer {
    /// Allocates AdamW state and pushes the clip + update dispatches onto `prog`.
    pub fn new(gpu: &Gpu, prog: &mut Program, model: &Gpt2Gpu, config: AdamWConfig) -> Result<Optimizer, GpuError> {
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

    /// Reads AdamW's moments back: (trained tensor name, m, v) in `Gpt2Gpu::trained` order.
    /// `model` must be the model this optimizer was made for.
    pub async fn read_moments(
        &self,
        gpu: &Gpu,
        model: &Gpt2Gpu,
    ) -> Result<Vec<(String, HostTensor, HostTensor)>, GpuError> {
        let mut out = Vec::with_capacity(self.moments.len());
        for (p, (m, v)) in model.trained().into_iter().zip(&self.moments) {
            let hm = HostTensor::new(&m.shape, gpu.read(m).await?);
            let hv = HostTensor::new(&v.shape, gpu.read(v).await?);
            out.push((p.name.clone(), hm, hv));
        }
        Ok(out)
    }

    /// Continues from saved state: AdamW's step count (`step` updates taken) and (m, v) for every
    /// trained tensor of `model`, by name. Every trained tensor needs its pair with its shape, and
    /// no other name may appear; `what` names the source in messages.
    pub fn restore(
        &mut self,
        gpu: &Gpu,
        model: &Gpt2Gpu,
        step: u32,
        moments: &BTreeMap<String, (HostTensor, HostTensor)>,
        what: &str,
    ) -> Result<(), TrainError> {
        let trained = model.trained();
        if let Some(extra) = moments.keys().find(|k| !trained.iter().any(|p| &p.name == *k)) {
            return Err(TrainError::Invalid(format!("{what}: AdamW state for '{extra}', which this run does not train")));
        }
        for (p, (m, v)) in trained.iter().zip(&self.moments) {
            let (hm, hv) = moments
                .get(&p.name)
                .ok_or_else(|| TrainError::Invalid(format!("{what}: no AdamW state for '{}'", p.name)))?;
            for (t, h, kind) in [(m, hm, "m"), (v, hv, "v")] {
                if h.shape != t.shape || h.data.len() != t.len() {
                    return Err(TrainError::Invalid(format!(
                        "{what}: AdamW {kind} of '{}' has shape {:?} but the tensor is {:?}",
                        p.name, h.shape, t.shape
                    )));
                }
            }
        }
        for (p, (m, v)) in trained.iter().zip(&self.moments) {
            let (hm, hv) = &moments[&p.name];
            gpu.write(m, &hm.data);
            gpu.write(v, &hv.data);
        }
        self.step = step;
        Ok(())
    }
}
