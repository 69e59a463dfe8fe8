//! GPT-2 on the GPU: parameters, the activations of one (B, T) shape, and the forward
//! and backward passes written as one explicit sequence of layer calls, backward in
//! reverse order right below the forward (karpathy/llm.c style). Shapes: N = B·T rows,
//! C = n_embd, H = n_head, V = vocab, r = LoRA rank.
//!
//! Nothing here runs anything: the calls push prepared dispatches onto a [`Program`]
//! that the trainer (or `logits`) records into one command encoder per step.

use super::linear::{lora_scratch, LinearParams, Param, RowParam, Trainable};
use super::lora::LoraConfig;
use super::weights::upload_tensor;
use super::{Linear, LoraAdapter, ModelConfig, WeightSource};
use crate::gpu::{Gpu, GpuError, Program, Tensor};
use super::head::{head_logits, Io};
use crate::kernels::attention::{self, Attention, AttentionDecode, Qkv};
use crate::kernels::embedding;
use crate::kernels::{gelu, layernorm, residual};

/// GPT-2's tensors outside the blocks: those before them (the embeddings) and after (the final norm).
pub fn outer_shapes(cfg: &ModelConfig) -> [Vec<(String, Vec<usize>)>; 2] {
    let c = cfg.n_embd;
    [
        vec![("wte.weight".to_string(), vec![cfg.vocab_size, c]), ("wpe.weight".to_string(), vec![cfg.n_positions, c])],
        vec![("ln_f.weight".to_string(), vec![c]), ("ln_f.bias".to_string(), vec![c])],
    ]
}

/// The 12 tensors of every GPT-2 block, by their name inside the block, in checkpoint order.
pub fn layer_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let c = cfg.n_embd;
    let mut v = vec![("ln_1.weight".to_string(), vec![c]), ("ln_1.bias".to_string(), vec![c])];
    for lin in Linear::GPT2 {
        let (_, fo) = lin.dims(cfg);
        v.push((format!("{}.weight", lin.hf_name()), lin.weight_shape(cfg)));
        v.push((format!("{}.bias", lin.hf_name()), vec![fo]));
        if lin == Linear::AttnProj {
            v.push(("ln_2.weight".to_string(), vec![c]));
            v.push(("ln_2.bias".to_string(), vec![c]));
        }
    }
    v
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
    pub fn linears(&self) -> [&LinearParams; 4] {
        [&self.c_attn, &self.attn_proj, &self.c_fc, &self.mlp_proj]
    }
}

pub struct Gpt2Gpu {
    pub config: ModelConfig,
    pub trainable: Trainable,
    pub lora_config: Option<LoraConfig>,
    /// [V, C], row-chunked when larger than one binding.
    pub wte: RowParam,
    pub wpe: Param,
    pub blocks: Vec<Block>,
    pub ln_f: (Param, Param),
    /// Only for checkpoints with an untied head; otherwise the head is `wte`.
    pub lm_head: Option<RowParam>,
}

impl Gpt2Gpu {
    /// Uploads the model. With `adapter`, LoRA layers are added (trained when
    /// `trainable` is Lora); `Trainable::Full` trains every base tensor.
    pub fn new(gpu: &Gpu, w: &dyn WeightSource, adapter: Option<&LoraAdapter>, trainable: Trainable) -> Result<Gpt2Gpu, GpuError> {
        let cfg = w.config();
        let full = trainable == Trainable::Full;
        let p = |name: &str| Param::new(gpu, name, &*upload_tensor(w, name)?, full);
        let linear = |layer: usize, kind: Linear| {
            let lora = adapter.and_then(|a| a.get(layer, kind).map(|m| (m, a.scale())));
            LinearParams::new(gpu, w, layer, kind, lora, full, trainable == Trainable::Lora)
        };
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let b = |s: &str| cfg.block_name(l, s);
            blocks.push(Block {
                ln_1: (p(&b("ln_1.weight"))?, p(&b("ln_1.bias"))?),
                c_attn: linear(l, Linear::AttnQkv)?,
                attn_proj: linear(l, Linear::AttnProj)?,
                ln_2: (p(&b("ln_2.weight"))?, p(&b("ln_2.bias"))?),
                c_fc: linear(l, Linear::MlpFc)?,
                mlp_proj: linear(l, Linear::MlpProj)?,
            });
        }
        let lm_head = match w.has("lm_head.weight") {
            true => Some(RowParam::new(gpu, w, "lm_head.weight", full)?),
            false => None,
        };
        Ok(Gpt2Gpu {
            config: cfg.clone(),
            trainable,
            lora_config: adapter.map(|a| a.config.clone()),
            wte: RowParam::new(gpu, w, "wte.weight", full)?,
            wpe: p("wpe.weight")?,
            blocks,
            ln_f: (p("ln_f.weight")?, p("ln_f.bias")?),
            lm_head,
        })
    }

    /// The head weight [V, C]: the untied `lm_head` if there is one, else `wte`.
    pub fn head(&self) -> &RowParam {
        self.lm_head.as_ref().unwrap_or(&self.wte)
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
        let ln = |p: &(Param, Param)| (p.0.frozen(), p.1.frozen());
        Gpt2Gpu {
            config: self.config.clone(),
            trainable: Trainable::None,
            lora_config: None,
            wte: self.wte.frozen(),
            wpe: self.wpe.frozen(),
            blocks: self
                .blocks
                .iter()
                .map(|b| Block {
                    ln_1: ln(&b.ln_1),
                    c_attn: b.c_attn.frozen(),
                    attn_proj: b.attn_proj.frozen(),
                    ln_2: ln(&b.ln_2),
                    c_fc: b.c_fc.frozen(),
                    mlp_proj: b.mlp_proj.frozen(),
                })
                .collect(),
            ln_f: ln(&self.ln_f),
            lm_head: self.lm_head.as_ref().map(RowParam::frozen),
        }
    }

    /// Every parameter, base tensors in checkpoint order, then the head, then LoRA pairs.
    pub fn params(&self) -> Vec<&Param> {
        let mut v: Vec<&Param> = self.wte.parts.iter().collect();
        v.push(&self.wpe);
        for b in &self.blocks {
            v.extend([&b.ln_1.0, &b.ln_1.1]);
            for (i, lin) in b.linears().into_iter().enumerate() {
                v.extend(lin.base_params());
                if i == 1 {
                    v.extend([&b.ln_2.0, &b.ln_2.1]);
                }
            }
        }
        v.extend([&self.ln_f.0, &self.ln_f.1]);
        v.extend(self.lm_head.iter().flat_map(|h| &h.parts));
        for b in &self.blocks {
            for lin in b.linears() {
                v.extend(lin.lora_params());
            }
        }
        v
    }

    /// Every linear layer with its block's index, in block order.
    pub fn linears(&self) -> Vec<(usize, &LinearParams)> {
        self.blocks.iter().enumerate().flat_map(|(l, b)| b.linears().map(|lin| (l, lin))).collect()
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
}

/// Everything one (B, T) shape needs, created once.
pub struct Activations {
    /// The batch in, the loss out (io.lnf [N, C] is the final LayerNorm's output).
    pub io: Io,
    pub x0: Tensor,  // [N, C] embeddings
    pub tmp: Tensor, // [N, C] output of a projection before its residual add
    pub layers: Vec<LayerActs>,
    pub lnf_mean: Tensor, // [N]
    pub lnf_rstd: Tensor, // [N]
    pub grads: Option<GradActs>,
}

impl Activations {
    /// Allocates for B sequences of T tokens; `backward` adds the gradient scratch.
    /// `head_bytes` bounds the chunked head's logits scratch.
    pub fn new(gpu: &Gpu, m: &Gpt2Gpu, b: usize, t: usize, backward: bool, head_bytes: u64) -> Result<Activations, GpuError> {
        let cfg = &m.config;
        let (c, h, v, n, f) = (cfg.n_embd, cfg.n_head, cfg.vocab_size, b * t, cfg.intermediate);
        Attention::check_heads(h, h, c / h.max(1))
            .map_err(|e| GpuError::Invalid(format!("n_embd {c} over n_head {h}: {e}")))?;
        let z = |name: &str, shape: &[usize]| gpu.zeros(name, shape);
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for (l, blk) in m.blocks.iter().enumerate() {
            let lz = |name: &str, shape: &[usize]| gpu.zeros(&format!("h.{l}.{name}"), shape);
            let xa = |lin: &LinearParams| lora_scratch(gpu, lin, &format!("h.{l}.{}", lin.kind.hf_name()), n);
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
                fc: lz("fc", &[n, f])?,
                fc_gelu: lz("fc_gelu", &[n, f])?,
                x_out: lz("x_out", &[n, c])?,
                lora,
            });
        }
        let grads = if backward {
            Some(GradActs {
                dresid: z("dresid", &[n, c])?,
                dln: z("dln", &[n, c])?,
                dqkv: z("dqkv", &[n, 3 * c])?,
                delta: z("delta", &[b, h, t])?,
                datty: z("datty", &[n, c])?,
                dfc: z("dfc", &[n, f])?,
                dfc_gelu: z("dfc_gelu", &[n, f])?,
                dxa: z("dxa", &[n, m.max_rank().max(1)])?,
            })
        } else {
            None
        };
        Ok(Activations {
            io: Io::new(gpu, b, t, c, v, backward, backward && m.wte.is_trained(), head_bytes)?,
            x0: z("x0", &[n, c])?,
            tmp: z("tmp", &[n, c])?,
            layers,
            lnf_mean: z("lnf_mean", &[n])?,
            lnf_rstd: z("lnf_rstd", &[n])?,
            grads,
        })
    }
}

impl Gpt2Gpu {
    /// Forward to the final LayerNorm: a.lnf [N, C].
    pub fn forward(&self, gpu: &Gpu, prog: &mut Program, a: &Activations) {
        let cfg = &self.config;
        let (b, t, c, n, eps) = (a.io.b, a.io.t, cfg.n_embd, a.io.b * a.io.t, cfg.layer_norm_epsilon);
        let dims = Attention::mha(b, t, c, cfg.n_head);
        embedding::embedding_forward_chunked(gpu, prog, &a.io.tokens, &self.wte.values(), Some(&self.wpe.value), &a.x0, b, t, c); // x0 [N, C]
        for (l, (blk, la)) in self.blocks.iter().zip(&a.layers).enumerate() {
            let x = if l == 0 { &a.x0 } else { &a.layers[l - 1].x_out }; // [N, C]
            layernorm::layernorm_forward(gpu, prog, x, &blk.ln_1.0.value, &blk.ln_1.1.value, &la.ln1, &la.ln1_mean, &la.ln1_rstd, n, c, eps);
            blk.c_attn.forward(gpu, prog, &la.ln1, &la.qkv, la.lora.c_attn.as_ref(), n); // qkv [N, 3C]
            attention::attention_forward(gpu, prog, &dims, Qkv::packed(&la.qkv, c), &la.atty, &la.lse); // atty [N, C], lse [B, H, T]
            blk.attn_proj.forward(gpu, prog, &la.atty, &a.tmp, la.lora.attn_proj.as_ref(), n); // [N, C]
            residual::add_forward(gpu, prog, x, &a.tmp, &la.x_mid); // x_mid [N, C]
            layernorm::layernorm_forward(gpu, prog, &la.x_mid, &blk.ln_2.0.value, &blk.ln_2.1.value, &la.ln2, &la.ln2_mean, &la.ln2_rstd, n, c, eps);
            blk.c_fc.forward(gpu, prog, &la.ln2, &la.fc, la.lora.c_fc.as_ref(), n); // fc [N, 4C]
            gelu::gelu_forward(gpu, prog, &la.fc, &la.fc_gelu); // [N, 4C]
            blk.mlp_proj.forward(gpu, prog, &la.fc_gelu, &a.tmp, la.lora.mlp_proj.as_ref(), n); // [N, C]
            residual::add_forward(gpu, prog, &la.x_mid, &a.tmp, &la.x_out); // x_out [N, C]
        }
        let last = a.layers.last().map(|la| &la.x_out).unwrap_or(&a.x0);
        layernorm::layernorm_forward(gpu, prog, last, &self.ln_f.0.value, &self.ln_f.1.value, &a.io.lnf, &a.lnf_mean, &a.lnf_rstd, n, c, eps);
    }

    /// LM head + cross-entropy over a.io.lnf: a.io.loss [1], a.io.losses [N]; with
    /// gradients, dln = d lnf [N, C] and the head's weight gradient accumulated.
    pub fn head_loss(&self, gpu: &Gpu, prog: &mut Program, a: &Activations) {
        a.io.head_loss(gpu, prog, self.head(), a.grads.as_ref().map(|g| &g.dln));
    }

    /// Backward from dln = d lnf (written by `head_loss`) to every trained gradient.
    /// Weight gradients accumulate, so the step program clears them first.
    pub fn backward(&self, gpu: &Gpu, prog: &mut Program, a: &Activations) {
        let Some(g) = &a.grads else { return };
        let cfg = &self.config;
        let (b, t, c, n) = (a.io.b, a.io.t, cfg.n_embd, a.io.b * a.io.t);
        let dims = Attention::mha(b, t, c, cfg.n_head);
        fn ln_grads(p: &(Param, Param)) -> Option<(&Tensor, &Tensor)> {
            p.0.grad.as_ref().zip(p.1.grad.as_ref())
        }
        let last = a.layers.last().map(|la| &la.x_out).unwrap_or(&a.x0);
        layernorm::layernorm_backward(gpu, prog, &g.dln, last, &self.ln_f.0.value, &a.lnf_mean, &a.lnf_rstd, &g.dresid, false, ln_grads(&self.ln_f), n, c);
        for (l, (blk, la)) in self.blocks.iter().zip(&a.layers).enumerate().rev() {
            let x = if l == 0 { &a.x0 } else { &a.layers[l - 1].x_out }; // [N, C]
            // MLP: dresid is d x_out
            blk.mlp_proj.backward(gpu, prog, &g.dresid, &la.fc_gelu, la.lora.mlp_proj.as_ref(), &g.dfc_gelu, false, &g.dxa, n); // d fc_gelu [N, 4C]
            gelu::gelu_backward(gpu, prog, &la.fc, &g.dfc_gelu, &g.dfc); // d fc [N, 4C]
            blk.c_fc.backward(gpu, prog, &g.dfc, &la.ln2, la.lora.c_fc.as_ref(), &g.dln, false, &g.dxa, n); // d ln2 [N, C]
            layernorm::layernorm_backward(gpu, prog, &g.dln, &la.x_mid, &blk.ln_2.0.value, &la.ln2_mean, &la.ln2_rstd, &g.dresid, true, ln_grads(&blk.ln_2), n, c);
            // attention: dresid is now d x_mid
            blk.attn_proj.backward(gpu, prog, &g.dresid, &la.atty, la.lora.attn_proj.as_ref(), &g.datty, false, &g.dxa, n); // d atty [N, C]
            attention::attention_backward(gpu, prog, &dims, Qkv::packed(&la.qkv, c), &la.atty, &la.lse, &g.datty, &g.delta, Qkv::packed(&g.dqkv, c)); // d qkv [N, 3C]
            blk.c_attn.backward(gpu, prog, &g.dqkv, &la.ln1, la.lora.c_attn.as_ref(), &g.dln, false, &g.dxa, n); // d ln1 [N, C]
            layernorm::layernorm_backward(gpu, prog, &g.dln, x, &blk.ln_1.0.value, &la.ln1_mean, &la.ln1_rstd, &g.dresid, true, ln_grads(&blk.ln_1), n, c);
        }
        // dresid is now d x0
        if let (Some(dwte), Some(dwpe), Some(ix)) = (self.wte.grads(), &self.wpe.grad, &a.io.token_index) {
            embedding::embedding_backward_chunked(gpu, prog, &g.dresid, ix, &dwte, Some(dwpe), b, t, c);
        }
    }

    /// One decoding step (N = 1, the same block sequence as `forward`): the token at position
    /// pos[0] -> logits [V], its key and value stored in cache row pos[0] first. Returns the
    /// program and the step's own buffers (kept with it).
    pub fn decode_program(
        &self,
        gpu: &Gpu,
        d: &AttentionDecode,
        caches: &[(Tensor, Tensor)],
        token: &Tensor,
        pos: &Tensor,
        logits: &Tensor,
    ) -> Result<(Program, Vec<Tensor>), GpuError> {
        let cfg = &self.config;
        let (c, v, f, eps) = (cfg.n_embd, cfg.vocab_size, cfg.intermediate, cfg.layer_norm_epsilon);
        let z = |name: &str, shape: &[usize]| gpu.zeros(&format!("decode {name}"), shape);
        let (x, x_mid, ln, mean, rstd) = (z("x", &[1, c])?, z("x_mid", &[1, c])?, z("ln", &[1, c])?, z("mean", &[1])?, z("rstd", &[1])?);
        let (qkv, atty, tmp) = (z("qkv", &[1, 3 * c])?, z("atty", &[1, c])?, z("tmp", &[1, c])?);
        let (fc, fc_gelu, xa) = (z("fc", &[1, f])?, z("fc_gelu", &[1, f])?, z("lora_xa", &[1, self.max_rank().max(1)])?);
        let mut prog = Program::new();
        let p = &mut prog;
        let xa_ = Some(&xa);
        let norm = |p: &mut Program, x: &Tensor, (w, bias): &(Param, Param)| {
            layernorm::layernorm_forward(gpu, p, x, &w.value, &bias.value, &ln, &mean, &rstd, 1, c, eps)
        };
        embedding::embedding_forward_at_chunked(gpu, p, token, pos, &self.wte.values(), Some(&self.wpe.value), &x, 1, c); // x [1, C]
        for (blk, (kc, vc)) in self.blocks.iter().zip(caches) {
            norm(p, &x, &blk.ln_1); // ln [1, C]
            blk.c_attn.forward(gpu, p, &ln, &qkv, xa_, 1); // qkv [1, 3C]
            let q = Qkv::packed(&qkv, c);
            attention::kv_store(gpu, p, d, q.k, q.v, 1, pos, kc, vc); // cache row pos = k, v
            attention::attention_decode(gpu, p, d, q.q, pos, kc, vc, &atty); // atty [1, C]
            blk.attn_proj.forward(gpu, p, &atty, &tmp, xa_, 1); // [1, C]
            residual::add_forward(gpu, p, &x, &tmp, &x_mid); // x_mid [1, C]
            norm(p, &x_mid, &blk.ln_2); // ln [1, C]
            blk.c_fc.forward(gpu, p, &ln, &fc, xa_, 1); // fc [1, 4C]
            gelu::gelu_forward(gpu, p, &fc, &fc_gelu); // [1, 4C]
            blk.mlp_proj.forward(gpu, p, &fc_gelu, &tmp, xa_, 1); // [1, C]
            residual::add_forward(gpu, p, &x_mid, &tmp, &x); // x [1, C]: the block output
        }
        norm(p, &x, &self.ln_f); // ln [1, C]
        head_logits(gpu, p, &ln, 0, self.head(), logits, 1, v, c); // logits [V]
        Ok((prog, vec![x, x_mid, ln, mean, rstd, qkv, atty, tmp, fc, fc_gelu, xa]))
    }

    /// After `forward` over a prompt of `len` tokens (B = 1): its keys and values into cache
    /// rows pos[0].. (pos[0] = 0).
    #[allow(clippy::too_many_arguments)]
    pub fn store_prompt(&self, gpu: &Gpu, prog: &mut Program, a: &Activations, d: &AttentionDecode, caches: &[(Tensor, Tensor)], pos: &Tensor, len: usize) {
        for (la, (kc, vc)) in a.layers.iter().zip(caches) {
            let x = Qkv::packed(&la.qkv, self.config.n_embd);
            attention::kv_store(gpu, prog, d, x.k, x.v, len, pos, kc, vc);
        }
    }

    /// Logits [B, T, V] for a batch of tokens (inference; the head is materialised here,
    /// so keep B·T·V small). Used by tests and generation.
    pub async fn logits(&self, gpu: &Gpu, tokens: &[u32], b: usize, t: usize) -> Result<Vec<f32>, GpuError> {
        let a = Activations::new(gpu, self, b, t, false, 1 << 20)?;
        let v = self.config.vocab_size;
        let out = gpu.zeros("logits", &[b * t, v])?;
        a.io.write_batch(gpu, tokens, &vec![-100; tokens.len()]);
        let mut prog = Program::new();
        self.forward(gpu, &mut prog, &a);
        head_logits(gpu, &mut prog, &a.io.lnf, 0, self.head(), &out, b * t, v, self.config.n_embd);
        prog.run(gpu);
        gpu.read(&out).await
    }
}
