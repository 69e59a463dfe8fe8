//! The one interface the trainer, evaluation, generation, checkpoints, the CLI and the browser
//! engine see a model through: a causal language model on the GPU, whatever its family. This
//! file is the only place that matches on the family; each family's file (gpt2.rs, llama.rs)
//! has the same methods with its own layer sequence.

use super::gpt2::{self, Gpt2Gpu};
use super::head::Io;
use super::linear::{join_parts, Param, RowParam, Trainable};
use super::llama::{self, LlamaGpu};
use super::lora::LoraConfig;
use super::{Family, HostTensor, LoraAdapter, ModelConfig, WeightSource, Weights};
use crate::gpu::{Gpu, GpuError, Program, Tensor};
use crate::kernels::attention::AttentionDecode;

/// A model on the GPU. Made once per run and kept in place, so its variants are not boxed.
#[allow(clippy::large_enum_variant)]
pub enum ModelGpu {
    Gpt2(Gpt2Gpu),
    Llama(LlamaGpu),
}

/// The activations of one (B, T) shape of a model (made once per shape and kept in place).
#[allow(clippy::large_enum_variant)]
pub enum Acts {
    Gpt2(gpt2::Activations),
    Llama(llama::Activations),
}

/// Calls the same method on whichever family a value is.
macro_rules! each {
    ($v:expr, $m:ident => $e:expr) => {
        match $v {
            ModelGpu::Gpt2($m) => $e,
            ModelGpu::Llama($m) => $e,
        }
    };
}

impl ModelGpu {
    /// Uploads the model from `w` (host [`Weights`], or files read one tensor at a time). With
    /// `adapter`, LoRA layers are added (trained when `trainable` is Lora); `Trainable::Full`
    /// trains every base tensor.
    pub fn new(gpu: &Gpu, w: &dyn WeightSource, adapter: Option<&LoraAdapter>, trainable: Trainable) -> Result<ModelGpu, GpuError> {
        Ok(match w.config().family {
            Family::Gpt2 => ModelGpu::Gpt2(Gpt2Gpu::new(gpu, w, adapter, trainable)?),
            Family::Llama => ModelGpu::Llama(LlamaGpu::new(gpu, w, adapter, trainable)?),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        each!(self, m => &m.config)
    }

    pub fn trainable(&self) -> Trainable {
        each!(self, m => m.trainable)
    }

    pub fn lora_config(&self) -> Option<&LoraConfig> {
        each!(self, m => m.lora_config.as_ref())
    }

    /// The LM head weight [V, C] (the token embedding when tied).
    pub fn head(&self) -> &RowParam {
        each!(self, m => m.head())
    }

    /// The largest LoRA rank of any adapted linear (0 without an adapter).
    pub fn max_rank(&self) -> usize {
        each!(self, m => m.max_rank())
    }

    /// Every parameter, base tensors in checkpoint order, then the head, then LoRA pairs.
    pub fn params(&self) -> Vec<&Param> {
        each!(self, m => m.params())
    }

    /// The parameters that have gradients, in [`params`](Self::params) order.
    pub fn trained(&self) -> Vec<&Param> {
        self.params().into_iter().filter(|p| p.grad.is_some()).collect()
    }

    /// The model without LoRA layers and gradients, sharing this one's buffers.
    pub fn base_view(&self) -> ModelGpu {
        match self {
            ModelGpu::Gpt2(m) => ModelGpu::Gpt2(m.base_view()),
            ModelGpu::Llama(m) => ModelGpu::Llama(m.base_view()),
        }
    }

    /// Reads the base weights back (e.g. after full fine-tuning), row chunks joined.
    pub async fn download_weights(&self, gpu: &Gpu) -> Result<Weights, GpuError> {
        let mut list = Vec::new();
        for p in self.params() {
            if p.name.contains(".lora_") {
                continue;
            }
            list.push((p.name.clone(), HostTensor::new(&p.value.shape, gpu.read(&p.value).await?)));
        }
        Ok(Weights { config: self.config().clone(), tensors: join_parts(list).into_iter().collect() })
    }

    /// Reads the adapter back, if the model has one.
    pub async fn download_adapter(&self, gpu: &Gpu) -> Result<Option<LoraAdapter>, GpuError> {
        let Some(config) = self.lora_config().cloned() else { return Ok(None) };
        let mut modules = Vec::new();
        for (layer, lin) in each!(self, m => m.linears()) {
            modules.extend(lin.download_lora(gpu, layer).await?);
        }
        Ok(Some(LoraAdapter { config, modules }))
    }

    /// Activations for B sequences of T tokens; `backward` adds the gradient scratch;
    /// `head_bytes` bounds the chunked head's logits scratch.
    pub fn activations(&self, gpu: &Gpu, b: usize, t: usize, backward: bool, head_bytes: u64) -> Result<Acts, GpuError> {
        Ok(match self {
            ModelGpu::Gpt2(m) => Acts::Gpt2(gpt2::Activations::new(gpu, m, b, t, backward, head_bytes)?),
            ModelGpu::Llama(m) => Acts::Llama(llama::Activations::new(gpu, m, b, t, backward, head_bytes)?),
        })
    }

    /// Forward to the final norm (`acts.io().lnf`) and, with `head`, the LM head + loss.
    pub fn forward(&self, gpu: &Gpu, prog: &mut Program, acts: &Acts, head: bool) {
        match (self, acts) {
            (ModelGpu::Gpt2(m), Acts::Gpt2(a)) => {
                m.forward(gpu, prog, a);
                if head {
                    m.head_loss(gpu, prog, a);
                }
            }
            (ModelGpu::Llama(m), Acts::Llama(a)) => {
                m.forward(gpu, prog, a);
                if head {
                    m.head_loss(gpu, prog, a);
                }
            }
            _ => unreachable!("activations of another family than the model's"),
        }
    }

    /// A training step's gradient part: zero the trained gradients, forward, head and loss,
    /// backward. After it runs, `acts.io().loss` holds the batch loss and every trained
    /// `Param::grad` its gradient.
    pub fn gradient_program(&self, gpu: &Gpu, acts: &Acts) -> Program {
        let mut prog = Program::new();
        for p in self.trained() {
            if let Some(g) = &p.grad {
                prog.clear(g);
            }
        }
        self.forward(gpu, &mut prog, acts, true);
        match (self, acts) {
            (ModelGpu::Gpt2(m), Acts::Gpt2(a)) => m.backward(gpu, &mut prog, a),
            (ModelGpu::Llama(m), Acts::Llama(a)) => m.backward(gpu, &mut prog, a),
            _ => unreachable!("activations of another family than the model's"),
        }
        prog
    }

    /// One decoding step's program (N = 1): the token at position pos[0] -> logits [V], its key
    /// and value stored in cache row pos[0]; with the step's own buffers.
    pub fn decode_program(
        &self,
        gpu: &Gpu,
        d: &AttentionDecode,
        caches: &[(Tensor, Tensor)],
        token: &Tensor,
        pos: &Tensor,
        logits: &Tensor,
    ) -> Result<(Program, Vec<Tensor>), GpuError> {
        each!(self, m => m.decode_program(gpu, d, caches, token, pos, logits))
    }

    /// After `forward` over a prompt of `len` tokens (B = 1): its keys and values into the caches.
    #[allow(clippy::too_many_arguments)]
    pub fn store_prompt(&self, gpu: &Gpu, prog: &mut Program, acts: &Acts, d: &AttentionDecode, caches: &[(Tensor, Tensor)], pos: &Tensor, len: usize) {
        match (self, acts) {
            (ModelGpu::Gpt2(m), Acts::Gpt2(a)) => m.store_prompt(gpu, prog, a, d, caches, pos, len),
            (ModelGpu::Llama(m), Acts::Llama(a)) => m.store_prompt(gpu, prog, a, d, caches, pos, len),
            _ => unreachable!("activations of another family than the model's"),
        }
    }

    /// Logits [B, T, V] for a batch of tokens (inference; keep B·T·V small).
    pub async fn logits(&self, gpu: &Gpu, tokens: &[u32], b: usize, t: usize) -> Result<Vec<f32>, GpuError> {
        each!(self, m => m.logits(gpu, tokens, b, t).await)
    }
}

impl Acts {
    /// The batch in, the loss out.
    pub fn io(&self) -> &Io {
        match self {
            Acts::Gpt2(a) => &a.io,
            Acts::Llama(a) => &a.io,
        }
    }
}

impl From<Gpt2Gpu> for ModelGpu {
    fn from(m: Gpt2Gpu) -> ModelGpu {
        ModelGpu::Gpt2(m)
    }
}

impl From<LlamaGpu> for ModelGpu {
    fn from(m: LlamaGpu) -> ModelGpu {
        ModelGpu::Llama(m)
    }
}
