//! GPT-2 on the GPU: parameters, the activations of one (B, T) shape, and the forward
//! and backward passes written as one explicit sequence of layer calls, backward in
//! reverse order right below the forward (karpathy/llm.c style). Shapes: N = B·T rows,
//! C = n_embd, H = n_head, V = vocab, r = LoRA rank.
//!
//! Nothing here runs anything: the calls push prepared dispatches onto a [`Program`]
//! that the trainer (or `logits`) records into one command encoder per step.

use super::lora::{LoraConfig, LoraModule};
use super::weights::block_name;
use super::{Gpt2Config, Gpt2Weights, HostTensor, Linear, LoraAdapter};
use crate::gpu::{Gpu, GpuError, Program, Tensor};
use crate::kernels::attention::{self, Attention, Qkv};
use crate::kernels::cross_entropy::{self, LmHeadLoss};
use crate::kernels::embedding::{self, TokenIndexBuffers};
use crate::kernels::matmul::{matmul, Matmul};
use crate::kernels::{gelu, layernorm, reduce, residual};

/// A parameter on the GPU; `grad` exists only when it is trained.
pub struct Param {
    pub name: String,
    pub value: Tensor,
    pub grad: Option<Tensor>,
}

impl Param {
    fn new(gpu: &Gpu, name: &str, t: &HostTensor, trainable: bool) -> Result<Param, GpuError> {
        let value = gpu.upload(name, &t.shape, &t.data)?;
        let grad = if trainable { Some(gpu.zeros(&format!("grad {name}"), &t.shape)?) } else { None };
        Ok(Param { name: name.to_string(), value, grad })
    }
}

/// The LoRA pair of one linear layer: A [r, in], B [out, r].
pub struct LoraParams {
    pub a: Param,
    pub b: Param,
    pub r: usize,
}

/// A Conv1D linear layer: w [in, out], b [out], optionally adapted.
pub struct LinearParams {
    pub kind: Linear,
    pub w: Param,
    pub b: Param,
    pub lora: Option<LoraParams>,
    pub fin: usize,
    pub fout: usize,
}

pub struct Block {
    pub ln_1: (Param, Param),
    pub c_attn: LinearParams,
    pub attn_proj: LinearParams,
    pub ln_2: (Param, Param),
    pub c_fc: LinearParams,
    pub mlp_proj: LinearParams,
}

impl Block {
    fn linears(&self) -> [&LinearParams; 4] {
        [&self.c_attn, &self.attn_proj, &self.c_fc, &self.mlp_proj]
    }
}

/// What is trained: nothing (inference), the LoRA adapter, or every tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trainable {
    None,
    Lora,
    Full,
}

pub struct Gpt2Gpu {
    pub config: Gpt2Config,
    pub trainable: Trainable,
    pub lora_config: Option<LoraConfig>,
    pub wte: Param,
    pub wpe: Param,
    pub blocks: Vec<Block>,
    pub ln_f: (Param, Param),
    /// Only for checkpoints with an untied head; otherwise the head is `wte`.
    pub lm_head: Option<Param>,
}

impl Gpt2Gpu {
    /// Uploads the model. With `adapter`, LoRA layers are added (trained when
    /// `trainable` is Lora); `Trainable::Full` trains every base tensor.
    pub fn new(gpu: &Gpu, w: &Gpt2Weights, adapter: Option<&LoraAdapter>, trainable: Trainable) -> Result<Gpt2Gpu, GpuError> {
        let cfg = &w.config;
        let full = trainable == Trainable::Full;
        let p = |name: &str| Param::new(gpu, name, w.get(name), full);
        let linear = |layer: usize, kind: Linear| -> Result<LinearParams, GpuError> {
            let (fin, fout) = kind.dims(cfg.n_embd);
            let name = block_name(layer, kind.hf_name());
            let lora = match adapter.and_then(|a| a.get(layer, kind)) {
                Some(m) => Some(LoraParams {
                    a: Param::new(gpu, &format!("{name}.lora_A"), &m.a, trainable == Trainable::Lora)?,
                    b: Param::new(gpu, &format!("{name}.lora_B"), &m.b, trainable == Trainable::Lora)?,
                    r: m.a.shape[0],
                }),
                None => None,
            };
            Ok(LinearParams { kind, w: p(&format!("{name}.weight"))?, b: p(&format!("{name}.bias"))?, lora, fin, fout })
        };
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            blocks.push(Block {
                ln_1: (p(&block_name(l, "ln_1.weight"))?, p(&block_name(l, "ln_1.bias"))?),
                c_attn: linear(l, Linear::AttnQkv)?,
                attn_proj: linear(l, Linear::AttnProj)?,
                ln_2: (p(&block_name(l, "ln_2.weight"))?, p(&block_name(l, "ln_2.bias"))?),
                c_fc: linear(l, Linear::MlpFc)?,
                mlp_proj: linear(l, Linear::MlpProj)?,
            });
        }
        let lm_head = match w.tensors.get("lm_head.weight") {
            Some(t) => Some(Param::new(gpu, "lm_head.weight", t, full)?),
            None => None,
        };
        Ok(Gpt2Gpu {
            config: cfg.clone(),
            trainable,
            lora_config: adapter.map(|a| a.config.clone()),
            wte: p("wte.weight")?,
            wpe: p("wpe.weight")?,
            blocks,
            ln_f: (p("ln_f.weight")?, p("ln_f.bias")?),
            lm_head,
        })
    }

    /// The head weight [V, C]: the untied `lm_head` if there is one, else `wte`.
    pub fn head(&self) -> &Param {
        self.lm_head.as_ref().unwrap_or(&self.wte)
    }

    fn lora_scale(&self) -> f32 {
        self.lora_config.as_ref().map(|c| c.scale()).unwrap_or(0.0)
    }

    /// The largest LoRA rank of any adapted linear (0 without an adapter).
    pub fn max_rank(&self) -> usize {
        self.blocks.iter().flat_map(|b| b.linears()).filter_map(|l| l.lora.as_ref().map(|lo| lo.r)).max().unwrap_or(0)
    }

    /// The base model without its LoRA layers and gradients, sharing this model's base-weight
    /// buffers (no GPU memory of its own): "the model before fine-tuning" during a LoRA run,
    /// whose base weights are frozen. (During full fine-tuning they change, so this is not
    /// the original model there.)
    pub fn base_view(&self) -> Gpt2Gpu {
        let frozen = |p: &Param| Param { name: p.name.clone(), value: p.value.shared(), grad: None };
        let linear = |l: &LinearParams| LinearParams {
            kind: l.kind,
            w: frozen(&l.w),
            b: frozen(&l.b),
            lora: None,
            fin: l.fin,
            fout: l.fout,
        };
        Gpt2Gpu {
            config: self.config.clone(),
            trainable: Trainable::None,
            lora_config: None,
            wte: frozen(&self.wte),
            wpe: frozen(&self.wpe),
            blocks: self
                .blocks
                .iter()
                .map(|b| Block {
                    ln_1: (frozen(&b.ln_1.0), frozen(&b.ln_1.1)),
                    c_attn: linear(&b.c_attn),
                    attn_proj: linear(&b.attn_proj),
                    ln_2: (frozen(&b.ln_2.0), frozen(&b.ln_2.1)),
                    c_fc: linear(&b.c_fc),
                    mlp_proj: linear(&b.mlp_proj),
                })
                .collect(),
            ln_f: (frozen(&self.ln_f.0), frozen(&self.ln_f.1)),
            lm_head: self.lm_head.as_ref().map(frozen),
        }
    }

    /// Every parameter, base tensors in checkpoint order, then the head, then LoRA pairs.
    pub fn params(&self) -> Vec<&Param> {
        let mut v = vec![&self.wte, &self.wpe];
        for b in &self.blocks {
            v.extend([&b.ln_1.0, &b.ln_1.1]);
            for (i, lin) in b.linears().into_iter().enumerate() {
                v.extend([&lin.w, &lin.b]);
                if i == 1 {
                    v.extend([&b.ln_2.0, &b.ln_2.1]);
                }
            }
        }
        v.extend([&self.ln_f.0, &self.ln_f.1]);
        v.extend(self.lm_head.as_ref());
        for b in &self.blocks {
            for lin in b.linears() {
                if let Some(lo) = &lin.lora {
                    v.extend([&lo.a, &lo.b]);
                }
            }
        }
        v
    }

    /// The parameters that have gradients, in [`params`](Self::params) order.
    pub fn trained(&self) -> Vec<&Param> {
        self.params().into_iter().filter(|p| p.grad.is_some()).collect()
    }

    /// Reads the base weights back (e.g. after full fine-tuning).
    pub async fn download_weights(&self, gpu: &Gpu) -> Result<Gpt2Weights, GpuError> {
        let mut tensors = std::collections::BTreeMap::new();
        for p in self.params() {
            if p.name.contains(".lora_") {
                continue;
            }
            tensors.insert(p.name.clone(), HostTensor::new(&p.value.shape, gpu.read(&p.value).await?));
        }
        Ok(Gpt2Weights { config: self.config.clone(), tensors })
    }

    /// Reads the adapter back, if the model has one.
    pub async fn download_adapter(&self, gpu: &Gpu) -> Result<Option<LoraAdapter>, GpuError> {
        let Some(config) = self.lora_config.clone() else { return Ok(None) };
        let mut modules = Vec::new();
        for (layer, b) in self.blocks.iter().enumerate() {
            for lin in b.linears() {
                if let Some(lo) = &lin.lora {
                    modules.push(LoraModule {
                        layer,
                        linear: lin.kind,
                        a: HostTensor::new(&lo.a.value.shape, gpu.read(&lo.a.value).await?),
                        b: HostTensor::new(&lo.b.value.shape, gpu.read(&lo.b.value).await?),
                    });
                }
            }
        }
        Ok(Some(LoraAdapter { config, modules }))
    }
}

/// Activations of one layer, kept from forward for backward.
pub struct LayerActs {
    pub ln1: Tensor,      // [N, C]
    pub ln1_mean: Tensor, // [N]
    pub ln1_rstd: Tensor, // [N]
    pub qkv: Tensor,      // [N, 3C]
    pub lse: Tensor,      // [B, H, T] log-sum-exp of each query's attention scores
    pub atty: Tensor,     // [N, C] attention output before c_proj
    pub x_mid: Tensor,    // [N, C] residual after attention
    pub ln2: Tensor,      // [N, C]
    pub ln2_mean: Tensor, // [N]
    pub ln2_rstd: Tensor, // [N]
    pub fc: Tensor,       // [N, 4C] before GELU
    pub fc_gelu: Tensor,  // [N, 4C]
    pub x_out: Tensor,    // [N, C] residual after the MLP
    /// x · Aᵀ of each adapted linear.
    pub lora: LoraActs,
}

/// x · Aᵀ [N, r] of each adapted linear of a block, kept for backward (None: not adapted).
pub struct LoraActs {
    pub c_attn: Option<Tensor>,
    pub attn_proj: Option<Tensor>,
    pub c_fc: Option<Tensor>,
    pub mlp_proj: Option<Tensor>,
}

/// Gradient scratch, reused by every layer.
pub struct GradActs {
    pub dresid: Tensor,   // [N, C] gradient of the residual stream
    pub dln: Tensor,      // [N, C] gradient of a LayerNorm output
    pub dqkv: Tensor,     // [N, 3C]
    pub delta: Tensor,    // [B, H, T] rowsum(d atty ∘ atty) per head, attention backward scratch
    pub datty: Tensor,    // [N, C]
    pub dfc: Tensor,      // [N, 4C]
    pub dfc_gelu: Tensor, // [N, 4C]
    pub dxa: Tensor,      // [N, r]
    pub token_index: Option<TokenIndexBuffers>,
}

/// Everything one (B, T) shape needs, created once.
pub struct Activations {
    pub b: usize,
    pub t: usize,
    pub tokens: Tensor,  // u32 [N]
    pub targets: Tensor, // i32 bits [N]
    pub scale: Tensor,   // [1] = 1 / counted targets
    pub x0: Tensor,      // [N, C] embeddings
    pub tmp: Tensor,     // [N, C] output of a projection before its residual add
    pub layers: Vec<LayerActs>,
    pub lnf: Tensor,      // [N, C]
    pub lnf_mean: Tensor, // [N]
    pub lnf_rstd: Tensor, // [N]
    pub head: LmHeadLoss,
    pub logits: Tensor, // [chunk, V] scratch of the chunked head
    pub losses: Tensor, // [N]
    pub loss: Tensor,   // [1]
    pub grads: Option<GradActs>,
}

impl Activations {
    /// Allocates for B sequences of T tokens; `backward` adds the gradient scratch.
    /// `head_bytes` bounds the chunked head's logits scratch.
    pub fn new(gpu: &Gpu, m: &Gpt2Gpu, b: usize, t: usize, backward: bool, head_bytes: u64) -> Result<Activations, GpuError> {
        let cfg = &m.config;
        let (c, h, v, n) = (cfg.n_embd, cfg.n_head, cfg.vocab_size, b * t);
        Attention::check_heads(h, h, c / h.max(1))
            .map_err(|e| GpuError::Invalid(format!("n_embd {c} over n_head {h}: {e}")))?;
        let z = |name: &str, shape: &[usize]| gpu.zeros(name, shape);
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for (l, blk) in m.blocks.iter().enumerate() {
            let lz = |name: &str, shape: &[usize]| gpu.zeros(&format!("h.{l}.{name}"), shape);
            let xa = |lin: &LinearParams| -> Result<Option<Tensor>, GpuError> {
                match &lin.lora {
                    Some(lo) => Ok(Some(lz(&format!("{}.lora_xa", lin.kind.hf_name()), &[n, lo.r])?)),
                    None => Ok(None),
                }
            };
            let lora = LoraActs {
                c_attn: xa(&blk.c_attn)?,
                attn_proj: xa(&blk.attn_proj)?,
                c_fc: xa(&blk.c_fc)?,
                mlp_proj: xa(&blk.mlp_proj)?,
            };
            layers.push(LayerActs {
                ln1: lz("ln1", &[n, c])?,
                ln1_mean: lz("ln1_mean", &[n])?,
                ln1_rstd: lz("ln1_rstd", &[n])?,
                qkv: lz("qkv", &[n, 3 * c])?,
                lse: lz("lse", &[b, h, t])?,
                atty: lz("atty", &[n, c])?,
                x_mid: lz("x_mid", &[n, c])?,
                ln2: lz("ln2", &[n, c])?,
                ln2_mean: lz("ln2_mean", &[n])?,
                ln2_rstd: lz("ln2_rstd", &[n])?,
                fc: lz("fc", &[n, 4 * c])?,
                fc_gelu: lz("fc_gelu", &[n, 4 * c])?,
                x_out: lz("x_out", &[n, c])?,
                lora,
            });
        }
        let chunk = cross_entropy::chunk_rows(n, v, head_bytes);
        let grads = if backward {
            Some(GradActs {
                dresid: z("dresid", &[n, c])?,
                dln: z("dln", &[n, c])?,
                dqkv: z("dqkv", &[n, 3 * c])?,
                delta: z("delta", &[b, h, t])?,
                datty: z("datty", &[n, c])?,
                dfc: z("dfc", &[n, 4 * c])?,
                dfc_gelu: z("dfc_gelu", &[n, 4 * c])?,
                dxa: z("dxa", &[n, m.max_rank().max(1)])?,
                token_index: if m.wte.grad.is_some() { Some(TokenIndexBuffers::new(gpu, n)?) } else { None },
            })
        } else {
            None
        };
        Ok(Activations {
            b,
            t,
            tokens: z("tokens", &[n])?,
            targets: z("targets", &[n])?,
            scale: z("loss scale", &[1])?,
            x0: z("x0", &[n, c])?,
            tmp: z("tmp", &[n, c])?,
            layers,
            lnf: z("lnf", &[n, c])?,
            lnf_mean: z("lnf_mean", &[n])?,
            lnf_rstd: z("lnf_rstd", &[n])?,
            head: LmHeadLoss { n, c, v, chunk, backward },
            logits: z("head logits chunk", &[chunk, v])?,
            losses: z("losses", &[n])?,
            loss: z("loss", &[1])?,
            grads,
        })
    }

    /// Uploads one batch: tokens [N], targets [N] (-100 = ignored) and, for full
    /// fine-tuning, the token index the embedding backward scatters with.
    pub fn write_batch(&self, gpu: &Gpu, tokens: &[u32], targets: &[i32]) {
        self.write_micro_batch(gpu, tokens, targets, 1);
    }

    /// As `write_batch`, for one of `micro_batches` accumulated into one step: the loss
    /// scale is 1 / (counted · micro_batches), so a.loss is this batch's mean loss / micro_batches.
    pub fn write_micro_batch(&self, gpu: &Gpu, tokens: &[u32], targets: &[i32], micro_batches: usize) {
        gpu.write_u32(&self.tokens, tokens);
        gpu.write_u32(&self.targets, bytemuck::cast_slice(targets));
        let counted = targets.iter().filter(|&&y| y >= 0).count() * micro_batches;
        gpu.write(&self.scale, &[if counted == 0 { 0.0 } else { 1.0 / counted as f32 }]);
        if let Some(ix) = self.grads.as_ref().and_then(|g| g.token_index.as_ref()) {
            ix.write(gpu, &embedding::TokenIndex::build(tokens));
        }
    }
}

impl Gpt2Gpu {
    /// Forward to the final LayerNorm: a.lnf [N, C].
    pub fn forward(&self, gpu: &Gpu, prog: &mut Program, a: &Activations) {
        let cfg = &self.config;
        let (b, t, c, n, eps) = (a.b, a.t, cfg.n_embd, a.b * a.t, cfg.layer_norm_epsilon);
        let dims = Attention::mha(b, t, c, cfg.n_head);
        embedding::embedding_forward(gpu, prog, &a.tokens, &self.wte.value, &self.wpe.value, &a.x0, b, t, c); // x0 [N, C]
        for (l, (blk, la)) in self.blocks.iter().zip(&a.layers).enumerate() {
            let x = if l == 0 { &a.x0 } else { &a.layers[l - 1].x_out }; // [N, C]
            layernorm::layernorm_forward(gpu, prog, x, &blk.ln_1.0.value, &blk.ln_1.1.value, &la.ln1, &la.ln1_mean, &la.ln1_rstd, n, c, eps);
            self.linear_forward(gpu, prog, &blk.c_attn, &la.ln1, &la.qkv, la.lora.c_attn.as_ref(), n); // qkv [N, 3C]
            attention::attention_forward(gpu, prog, &dims, Qkv::packed(&la.qkv, c), &la.atty, &la.lse); // atty [N, C], lse [B, H, T]
            self.linear_forward(gpu, prog, &blk.attn_proj, &la.atty, &a.tmp, la.lora.attn_proj.as_ref(), n); // [N, C]
            residual::add_forward(gpu, prog, x, &a.tmp, &la.x_mid); // x_mid [N, C]
            layernorm::layernorm_forward(gpu, prog, &la.x_mid, &blk.ln_2.0.value, &blk.ln_2.1.value, &la.ln2, &la.ln2_mean, &la.ln2_rstd, n, c, eps);
            self.linear_forward(gpu, prog, &blk.c_fc, &la.ln2, &la.fc, la.lora.c_fc.as_ref(), n); // fc [N, 4C]
            gelu::gelu_forward(gpu, prog, &la.fc, &la.fc_gelu); // [N, 4C]
            self.linear_forward(gpu, prog, &blk.mlp_proj, &la.fc_gelu, &a.tmp, la.lora.mlp_proj.as_ref(), n); // [N, C]
            residual::add_forward(gpu, prog, &la.x_mid, &a.tmp, &la.x_out); // x_out [N, C]
        }
        let last = a.layers.last().map(|la| &la.x_out).unwrap_or(&a.x0);
        layernorm::layernorm_forward(gpu, prog, last, &self.ln_f.0.value, &self.ln_f.1.value, &a.lnf, &a.lnf_mean, &a.lnf_rstd, n, c, eps);
    }

    /// LM head + cross-entropy over a.lnf: a.loss [1], a.losses [N]; with
    /// gradients, dln = d lnf [N, C] and the head's weight gradient accumulated.
    pub fn head_loss(&self, gpu: &Gpu, prog: &mut Program, a: &Activations) {
        let head = self.head();
        let dh = a.grads.as_ref().map(|g| &g.dln);
        cross_entropy::lm_head_loss(
            gpu, prog, &a.head, &a.lnf, &head.value, &a.targets, &a.scale, &a.logits, &a.losses, &a.loss, dh, head.grad.as_ref(),
        );
    }

    /// Backward from dln = d lnf (written by `head_loss`) to every trained gradient.
    /// Weight gradients accumulate, so the step program clears them first.
    pub fn backward(&self, gpu: &Gpu, prog: &mut Program, a: &Activations) {
        let Some(g) = &a.grads else { return };
        let cfg = &self.config;
        let (b, t, c, n) = (a.b, a.t, cfg.n_embd, a.b * a.t);
        let dims = Attention::mha(b, t, c, cfg.n_head);
        fn ln_grads(p: &(Param, Param)) -> Option<(&Tensor, &Tensor)> {
            p.0.grad.as_ref().zip(p.1.grad.as_ref())
        }
        let last = a.layers.last().map(|la| &la.x_out).unwrap_or(&a.x0);
        layernorm::layernorm_backward(gpu, prog, &g.dln, last, &self.ln_f.0.value, &a.lnf_mean, &a.lnf_rstd, &g.dresid, false, ln_grads(&self.ln_f), n, c);
        for (l, (blk, la)) in self.blocks.iter().zip(&a.layers).enumerate().rev() {
            let x = if l == 0 { &a.x0 } else { &a.layers[l - 1].x_out }; // [N, C]
            // MLP: dresid is d x_out
            self.linear_backward(gpu, prog, &blk.mlp_proj, &g.dresid, &la.fc_gelu, la.lora.mlp_proj.as_ref(), &g.dfc_gelu, g, n); // d fc_gelu [N, 4C]
            gelu::gelu_backward(gpu, prog, &la.fc, &g.dfc_gelu, &g.dfc); // d fc [N, 4C]
            self.linear_backward(gpu, prog, &blk.c_fc, &g.dfc, &la.ln2, la.lora.c_fc.as_ref(), &g.dln, g, n); // d ln2 [N, C]
            layernorm::layernorm_backward(gpu, prog, &g.dln, &la.x_mid, &blk.ln_2.0.value, &la.ln2_mean, &la.ln2_rstd, &g.dresid, true, ln_grads(&blk.ln_2), n, c);
            // attention: dresid is now d x_mid
            self.linear_backward(gpu, prog, &blk.attn_proj, &g.dresid, &la.atty, la.lora.attn_proj.as_ref(), &g.datty, g, n); // d atty [N, C]
            attention::attention_backward(gpu, prog, &dims, Qkv::packed(&la.qkv, c), &la.atty, &la.lse, &g.datty, &g.delta, Qkv::packed(&g.dqkv, c)); // d qkv [N, 3C]
            self.linear_backward(gpu, prog, &blk.c_attn, &g.dqkv, &la.ln1, la.lora.c_attn.as_ref(), &g.dln, g, n); // d ln1 [N, C]
            layernorm::layernorm_backward(gpu, prog, &g.dln, x, &blk.ln_1.0.value, &la.ln1_mean, &la.ln1_rstd, &g.dresid, true, ln_grads(&blk.ln_1), n, c);
        }
        // dresid is now d x0
        if let (Some(dwte), Some(dwpe), Some(ix)) = (&self.wte.grad, &self.wpe.grad, &g.token_index) {
            embedding::embedding_backward(gpu, prog, &g.dresid, ix, dwte, dwpe, b, t, c);
        }
    }

    /// The gradient part of a training step: zero the trained gradients, forward, head
    /// and loss, backward. After it runs, a.loss holds the batch loss and every trained
    /// `Param::grad` its gradient.
    pub fn gradient_program(&self, gpu: &Gpu, a: &Activations) -> Program {
        let mut prog = Program::new();
        for p in self.trained() {
            if let Some(g) = &p.grad {
                prog.clear(g);
            }
        }
        self.forward(gpu, &mut prog, a);
        self.head_loss(gpu, &mut prog, a);
        self.backward(gpu, &mut prog, a);
        prog
    }

    /// y [N, out] = x [N, in] · W + bias, plus scale · (x · Aᵀ) · Bᵀ when adapted (xa = x · Aᵀ [N, r] is kept).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn linear_forward(&self, gpu: &Gpu, prog: &mut Program, lin: &LinearParams, x: &Tensor, y: &Tensor, xa: Option<&Tensor>, n: usize) {
        matmul(gpu, prog, &Matmul::new(n, lin.fout, lin.fin), x, &lin.w.value, y, Some(&lin.b.value));
        if let (Some(lo), Some(xa)) = (&lin.lora, xa) {
            matmul(gpu, prog, &Matmul::new(n, lo.r, lin.fin).tb(), x, &lo.a.value, xa, None);
            matmul(gpu, prog, &Matmul::new(n, lin.fout, lo.r).tb().alpha(self.lora_scale()).accumulate(), xa, &lo.b.value, y, None);
        }
    }

    /// From dy [N, out]: dx [N, in] (overwritten), and the layer's trained gradients accumulated:
    /// dW += xᵀ·dy, dbias += Σrows dy; LoRA: dxa = s·dy·B, dB += s·dyᵀ·xa, dA += dxaᵀ·x, dx += dxa·A.
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &self,
        gpu: &Gpu,
        prog: &mut Program,
        lin: &LinearParams,
        dy: &Tensor,
        x: &Tensor,
        xa: Option<&Tensor>,
        dx: &Tensor,
        g: &GradActs,
        n: usize,
    ) {
        let (fin, fout) = (lin.fin, lin.fout);
        matmul(gpu, prog, &Matmul::new(n, fin, fout).tb(), dy, &lin.w.value, dx, None);
        if let Some(gw) = &lin.w.grad {
            matmul(gpu, prog, &Matmul::new(fin, fout, n).ta().accumulate(), x, dy, gw, None);
        }
        if let Some(gb) = &lin.b.grad {
            reduce::sum_rows(gpu, prog, dy, gb, n, fout, true);
        }
        if let (Some(lo), Some(xa)) = (&lin.lora, xa) {
            let (s, r) = (self.lora_scale(), lo.r);
            matmul(gpu, prog, &Matmul::new(n, r, fout).alpha(s), dy, &lo.b.value, &g.dxa, None);
            if let (Some(ga), Some(gb)) = (&lo.a.grad, &lo.b.grad) {
                matmul(gpu, prog, &Matmul::new(fout, r, n).ta().alpha(s).accumulate(), dy, xa, gb, None);
                matmul(gpu, prog, &Matmul::new(r, fin, n).ta().accumulate(), &g.dxa, x, ga, None);
            }
            matmul(gpu, prog, &Matmul::new(n, fin, r).accumulate(), &g.dxa, &lo.a.value, dx, None);
        }
    }

    /// Logits [B, T, V] for a batch of tokens (inference; the head is materialised here,
    /// so keep B·T·V small). Used by tests and generation.
    pub async fn logits(&self, gpu: &Gpu, tokens: &[u32], b: usize, t: usize) -> Result<Vec<f32>, GpuError> {
        let a = Activations::new(gpu, self, b, t, false, 1 << 20)?;
        let v = self.config.vocab_size;
        let out = gpu.zeros("logits", &[b * t, v])?;
        a.write_batch(gpu, tokens, &vec![-100; tokens.len()]);
        let mut prog = Program::new();
        self.forward(gpu, &mut prog, &a);
        matmul(gpu, &mut prog, &Matmul::new(b * t, v, self.config.n_embd).tb(), &a.lnf, &self.head().value, &out, None);
        prog.run(gpu);
        gpu.read(&out).await
    }
}
