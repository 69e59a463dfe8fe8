//! The training loop. One step = upload a batch, then one command encoder holding
//! [clear grads -> forward -> LM head + loss -> backward -> clip -> AdamW], submitted
//! once. Loss and gradient norm are copied into a small history ring on the GPU and
//! read back every `readback_every` steps, so the CPU never waits on each step.

use super::optimizer::{AdamWConfig, Optimizer};
use super::TrainError;
use crate::data::Batcher;
use crate::gpu::{Gpu, GpuError, Program, Tensor};
use crate::model::gpt2::{Activations, Gpt2Gpu};

#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub batch: usize,
    pub seq: usize,
    pub adamw: AdamWConfig,
    /// Steps between loss readbacks (1 = every step).
    pub readback_every: usize,
    /// Bytes allowed for the chunked LM head's logits scratch.
    pub head_bytes: u64,
}

impl TrainConfig {
    pub fn new(batch: usize, seq: usize, adamw: AdamWConfig) -> TrainConfig {
        TrainConfig { batch, seq, adamw, readback_every: 16, head_bytes: 64 << 20 }
    }
}

/// What one step reports (`--log-json` writes one of these per line).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLog {
    pub step: u32,
    /// Mean cross-entropy of the step's batch, before the update.
    pub loss: f32,
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
}

pub struct Trainer {
    pub model: Gpt2Gpu,
    pub acts: Activations,
    pub optimizer: Optimizer,
    pub batcher: Batcher,
    pub config: TrainConfig,
    program: Program,
    history: Tensor, // [readback_every, 2]: (loss, grad_norm) per pending step
    pending: Vec<(u32, f32)>, // (step, lr) of steps whose history is not read yet
}

impl Trainer {
    /// Plans memory and builds the step program once. Fails up front, naming the
    /// tensor, when the shape does not fit this GPU.
    pub fn new(gpu: &Gpu, model: Gpt2Gpu, batcher: Batcher, config: TrainConfig) -> Result<Trainer, TrainError> {
        let cfg = &model.config;
        if config.seq > cfg.n_positions {
            return Err(TrainError::Invalid(format!(
                "--seq {} is longer than the model's n_positions {}",
                config.seq, cfg.n_positions
            )));
        }
        if model.trained().is_empty() {
            return Err(TrainError::Invalid("nothing to train: give LoRA targets or use full fine-tuning".into()));
        }
        let fit = |e: GpuError| {
            TrainError::Invalid(format!(
                "{e}; this run does not fit the GPU: try a smaller --batch or --seq{}",
                if model.trainable == crate::model::gpt2::Trainable::Full { ", or LoRA instead of --full" } else { "" }
            ))
        };
        let acts = Activations::new(gpu, &model, config.batch, config.seq, true, config.head_bytes).map_err(fit)?;
        let mut program = model.gradient_program(gpu, &acts);
        let optimizer = Optimizer::new(gpu, &mut program, &model, config.adamw).map_err(fit)?;
        let history = gpu.zeros("loss history", &[config.readback_every.max(1), 2]).map_err(fit)?;
        Ok(Trainer { model, acts, optimizer, batcher, config, program, history, pending: Vec::new() })
    }

    /// Queues one training step at learning rate `lr`. Returns the logs that became
    /// available (every `readback_every` steps), in step order.
    pub async fn step(&mut self, gpu: &Gpu, lr: f32) -> Result<Vec<StepLog>, GpuError> {
        let batch = self.batcher.next_batch();
        self.acts.write_batch(gpu, &batch.tokens, &batch.targets);
        self.optimizer.begin_step(gpu, lr);
        let slot = self.pending.len() as u64;
        let mut enc = gpu.encoder("train step");
        self.program.record(&mut enc);
        enc.copy_buffer_to_buffer(&self.acts.loss.buffer, 0, &self.history.buffer, slot * 8, 4);
        enc.copy_buffer_to_buffer(&self.optimizer.norm.out.buffer, 0, &self.history.buffer, slot * 8 + 4, 4);
        gpu.submit(enc);
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
        let logs = self
            .pending
            .iter()
            .enumerate()
            .map(|(i, &(step, lr))| StepLog { step, loss: h[2 * i], lr, grad_norm: h[2 * i + 1] })
            .collect();
        self.pending.clear();
        Ok(logs)
    }
}
