//! The training loop. One step = upload a batch, then one command encoder holding
//! [clear grads -> forward -> LM head + loss -> backward -> clip -> AdamW], submitted
//! once. Loss and gradient norm are copied into a small history ring on the GPU and
//! read back every `readback_every` steps, so the CPU never waits on each step.
//!
//! Gradient accumulation (`grad_accum` = k > 1): one optimizer step is k micro-batches of
//! `batch` sequences, each uploaded and submitted as its own encoder [forward -> loss ->
//! backward] (the first one clears the gradients first, later ones add to them; the last
//! one adds clip + AdamW). Each micro-batch's loss is its mean over its counted positions,
//! and its loss scale is 1 / (counted · k), so the step's gradient is the mean of the
//! micro-batch gradients (Hugging Face Trainer's loss / gradient_accumulation_steps).

use super::optimizer::{AdamWConfig, Optimizer};
use super::TrainError;
use crate::data::Batcher;
use crate::gpu::{Gpu, GpuError, MemoryClass, Program, Tensor};
use crate::model::{Acts, ModelGpu, Trainable};
use crate::model::HostTensor;

#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub batch: usize,
    pub seq: usize,
    pub adamw: AdamWConfig,
    /// Micro-batches of `batch` sequences per optimizer step (gradient accumulation); 1 = off.
    pub grad_accum: usize,
    /// Steps between loss readbacks (1 = every step).
    pub readback_every: usize,
    /// Bytes allowed for the chunked LM head's logits scratch.
    pub head_bytes: u64,
}

/// Bytes allowed for the LM head's logits chunk by default.
pub const HEAD_BYTES: u64 = 64 << 20;

impl TrainConfig {
    pub fn new(batch: usize, seq: usize, adamw: AdamWConfig) -> TrainConfig {
        TrainConfig { batch, seq, adamw, grad_accum: 1, readback_every: 16, head_bytes: HEAD_BYTES }
    }
}

/// What one step reports (`--log-json` writes one of these per line).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLog {
    pub step: u32,
    /// Mean cross-entropy of the step's batch, before the update; with gradient
    /// accumulation the mean of the micro-batches' losses.
    pub loss: f32,
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
}

pub struct Trainer {
    pub model: ModelGpu,
    pub acts: Acts,
    pub optimizer: Optimizer,
    pub batcher: Batcher,
    pub config: TrainConfig,
    program: Program,               // forward + loss + backward (no gradient clears)
    grad_clears: Vec<wgpu::Buffer>, // zeroed before a step's first micro-batch
    update: Program,                // clip + AdamW, once per optimizer step
    history: Tensor,                // [readback_every, grad_accum + 1]: micro-batch losses / grad_accum, grad_norm
    pending: Vec<(u32, f32)>,       // (step, lr) of steps whose history is not read yet
}

impl Trainer {
    /// Plans memory and builds the step program once. Fails up front, naming the
    /// tensor, when the shape does not fit this GPU.
    pub fn new(gpu: &Gpu, model: ModelGpu, batcher: Batcher, config: TrainConfig) -> Result<Trainer, TrainError> {
        let cfg = model.config();
        if config.seq > cfg.n_positions {
            return Err(TrainError::Invalid(format!(
                "--seq {} is longer than the model's n_positions {}",
                config.seq, cfg.n_positions
            )));
        }
        if config.grad_accum == 0 {
            return Err(TrainError::Invalid("--grad-accum must be at least 1".into()));
        }
        if model.trained().is_empty() {
            return Err(TrainError::Invalid("nothing to train: give LoRA targets or use full fine-tuning".into()));
        }
        let fit = |e: GpuError| {
            TrainError::Invalid(format!(
                "{e}; this run does not fit the GPU: try a smaller --batch or --seq{}",
                if model.trainable() == Trainable::Full { ", or LoRA instead of --full" } else { "" }
            ))
        };
        let acts = gpu
            .in_class(MemoryClass::Activations, || model.activations(gpu, config.batch, config.seq, true, config.head_bytes))
            .map_err(fit)?;
        let mut program = model.gradient_program(gpu, &acts);
        let grad_clears = std::mem::take(&mut program.clears);
        let mut update = Program::new();
        let optimizer =
            gpu.in_class(MemoryClass::Optimizer, || Optimizer::new(gpu, &mut update, &model, config.adamw)).map_err(fit)?;
        let history = gpu
            .in_class(MemoryClass::Activations, || gpu.zeros("loss history", &[config.readback_every.max(1), config.grad_accum + 1]))
            .map_err(fit)?;
        let pending = Vec::new();
        Ok(Trainer { model, acts, optimizer, batcher, config, program, grad_clears, update, history, pending })
    }

    /// Optimizer steps taken so far (the number of the last step queued).
    pub fn steps_done(&self) -> u32 {
        self.optimizer.step
    }

    /// Continues a run from a checkpoint, before its first step: `step` updates were taken,
    /// the data position is `position` windows, and AdamW's (m, v) per trained tensor name.
    /// Parameters come with the model. `what` names the checkpoint in messages.
    pub fn restore(
        &mut self,
        gpu: &Gpu,
        step: u32,
        position: u64,
        moments: &std::collections::BTreeMap<String, (HostTensor, HostTensor)>,
        what: &str,
    ) -> Result<(), TrainError> {
        if !self.pending.is_empty() {
            return Err(TrainError::Invalid("restore: steps were already queued".into()));
        }
        self.optimizer.restore(gpu, &self.model, step, moments, what)?;
        self.batcher.seek(position);
        Ok(())
    }

    /// Queues one training step at learning rate `lr`. Returns the logs that became
    /// available (every `readback_every` steps), in step order.
    /// With gradient accumulation a step takes `grad_accum` batches (one submit each).
    pub async fn step(&mut self, gpu: &Gpu, lr: f32) -> Result<Vec<StepLog>, GpuError> {
        let k = self.config.grad_accum;
        let row = (k as u64 + 1) * 4; // bytes per history row
        let slot = self.pending.len() as u64;
        self.optimizer.begin_step(gpu, lr);
        for micro in 0..k {
            // queue writes land at the next submit, so each micro-batch is its own submit
            let batch = self.batcher.next_batch();
            self.acts.io().write_micro_batch(gpu, &batch.tokens, &batch.targets, k);
            let mut enc = gpu.encoder("train step");
            if micro == 0 {
                for g in &self.grad_clears {
                    enc.clear_buffer(g, 0, None);
                }
            }
            self.program.record(&mut enc);
            let at = slot * row + micro as u64 * 4;
            enc.copy_buffer_to_buffer(&self.acts.io().loss.buffer, 0, &self.history.buffer, at, 4);
            if micro + 1 == k {
                self.update.record(&mut enc);
                let at = slot * row + k as u64 * 4;
                enc.copy_buffer_to_buffer(&self.optimizer.norm.out.buffer, 0, &self.history.buffer, at, 4);
            }
            gpu.submit(enc);
        }
        self.pending.push((self.optimizer.step, lr));
        if self.pending.len() >= self.config.readback_every.max(1) {
            self.flush(gpu).await
        } else {
            Ok(Vec::new())
        }
    }

    /// Reads back the logs of every step not yet reported.
    pub async fn flush(&mut self, gpu: &Gpu) -> Result<Vec<StepLog>, GpuError> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let h = gpu.read(&self.history).await?;
        let k = self.config.grad_accum;
        let logs = self
            .pending
            .iter()
            .zip(h.chunks_exact(k + 1))
            .map(|(&(step, lr), row)| {
                // each entry is a micro-batch's mean loss / k: their sum is the mean of the losses
                StepLog { step, loss: row[..k].iter().sum(), lr, grad_norm: row[k] }
            })
            .collect();
        self.pending.clear();
        Ok(logs)
    }
}
