//! The Llama family on the GPU — Llama (SmolLM2, TinyLlama, Llama 3.x), Qwen2 (Qwen2.5) and Qwen3
//! — as one explicit sequence of layer calls, backward in reverse right below the forward, like
//! gpt2.rs. Shapes: N = B·T rows, C = hidden, H = query heads, Hkv = key/value heads, D = head
//! dim, I = intermediate, V = vocab, r = LoRA rank.
//!
//! A block: x → RMSNorm → q, k, v projections (+ Qwen2's biases) → (Qwen3: RMSNorm per head of
//! q and k) → rotary embedding of q and k → causal grouped-query attention → o projection →
//! \+ x → RMSNorm → gate, up projections → silu(gate)·up → down projection → + residual.
//! Linear layers are nn.Linear (weight [out, in]); every one can carry a LoRA adapter.

use super::head::{head_logits, Io};
use super::linear::{lora_scratch, LinearParams, Param, RowParam, Trainable};
use super::lora::LoraConfig;
use super::weights::upload_tensor;
use super::{Linear, LoraAdapter, ModelConfig, WeightSource};
use crate::gpu::{Gpu, GpuError, MemoryClass, Program, Tensor};
use crate::kernels::attention::{self, Attention, AttentionDecode, Qkv};
use crate::kernels::embedding;
use crate::kernels::rmsnorm::{self, RmsNorm};
use crate::kernels::rope::{self, Positions, Rope};
use crate::kernels::{residual, swiglu, View};

/// The Llama family's tensors outside the blocks: the embedding before them, the final norm after.
pub fn outer_shapes(cfg: &ModelConfig) -> [Vec<(String, Vec<usize>)>; 2] {
    [vec![("embed_tokens.weight".to_string(), vec![cfg.vocab_size, cfg.n_embd])], vec![("norm.weight".to_string(), vec![cfg.n_embd])]]
}

/// The tensors of every block, by their name inside the block, in checkpoint order (biases where
/// the config has them, Qwen3's q/k norms).
pub fn layer_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (c, d) = (cfg.n_embd, cfg.head_dim);
    let mut v = vec![("input_layernorm.weight".to_string(), vec![c])];
    for lin in Linear::LLAMA {
        v.push((format!("{}.weight", lin.hf_name()), lin.weight_shape(cfg)));
        if lin.has_bias(cfg) {
            v.push((format!("{}.bias", lin.hf_name()), vec![lin.dims(cfg).1]));
        }
        if lin == Linear::O {
            if cfg.qk_norm {
                v.push(("self_attn.q_norm.weight".to_string(), vec![d]));
                v.push(("self_attn.k_norm.weight".to_string(), vec![d]));
            }
            v.push(("post_attention_layernorm.weight".to_string(), vec![c]));
        }
    }
    v
}

pub struct Block {
    pub input_norm: Param,
    pub q: LinearParams,
    pub k: LinearParams,
    pub v: LinearParams,
    pub o: LinearParams,
    /// Qwen3's per-head norms of q and k ([D] each).
    pub qk_norm: Option<(Param, Param)>,
    pub post_norm: Param,
    pub gate: LinearParams,
    pub up: LinearParams,
    pub down: LinearParams,
}

impl Block {
    pub fn linears(&self) -> [&LinearParams; 7] {
        [&self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down]
    }
}

pub struct LlamaGpu {
    pub config: ModelConfig,
    pub trainable: Trainable,
    pub lora_config: Option<LoraConfig>,
    /// [V, C], row-chunked when larger than one binding.
    pub embed: RowParam,
    pub blocks: Vec<Block>,
    pub norm: Param,
    /// Only for untied checkpoints; otherwise the head is the embedding.
    pub lm_head: Option<RowParam>,
    /// cos/sin of every position up to n_positions [P, D] (model::rope).
    pub rope_table: Tensor,
}

impl LlamaGpu {
    /// Uploads the model. With `adapter`, LoRA layers are added (trained when `trainable` is
    /// Lora); `Trainable::Full` trains every base tensor.
    pub fn new(gpu: &Gpu, w: &dyn WeightSource, adapter: Option<&LoraAdapter>, trainable: Trainable) -> Result<LlamaGpu, GpuError> {
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
            let qk_norm = match cfg.qk_norm {
                true => Some((p(&b("self_attn.q_norm.weight"))?, p(&b("self_attn.k_norm.weight"))?)),
                false => None,
            };
            blocks.push(Block {
                input_norm: p(&b("input_layernorm.weight"))?,
                q: linear(l, Linear::Q)?,
                k: linear(l, Linear::K)?,
                v: linear(l, Linear::V)?,
                o: linear(l, Linear::O)?,
                qk_norm,
                post_norm: p(&b("post_attention_layernorm.weight"))?,
                gate: linear(l, Linear::Gate)?,
                up: linear(l, Linear::Up)?,
                down: linear(l, Linear::Down)?,
            });
        }
        let lm_head = match w.has("lm_head.weight") {
            true => Some(RowParam::new(gpu, w, "lm_head.weight", full)?),
            false => None,
        };
        let rope = cfg.rope.as_ref().ok_or_else(|| GpuError::Invalid("a Llama-family config without RoPE".into()))?;
        let table = rope.table(cfg.n_positions).map_err(|e| GpuError::Invalid(e.to_string()))?;
        let rope_table =
            gpu.in_class(MemoryClass::Weights, || gpu.upload("rope table", &[cfg.n_positions, cfg.head_dim], &table))?;
        Ok(LlamaGpu {
            config: cfg.clone(),
            trainable,
            lora_config: adapter.map(|a| a.config.clone()),
            embed: RowParam::new(gpu, w, "embed_tokens.weight", full)?,
            blocks,
            norm: p("norm.weight")?,
            lm_head,
            rope_table,
        })
    }

    /// The head weight [V, C]: the untied `lm_head` if there is one, else the embedding.
    pub fn head(&self) -> &RowParam {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// The largest LoRA rank of any adapted linear (0 without an adapter).
    pub fn max_rank(&self) -> usize {
        self.blocks.iter().flat_map(|b| b.linears()).filter_map(|l| l.lora.as_ref().map(|lo| lo.r)).max().unwrap_or(0)
    }

    /// The base model without its LoRA layers and gradients, sharing this model's buffers.
    pub fn base_view(&self) -> LlamaGpu {
        LlamaGpu {
            config: self.config.clone(),
            trainable: Trainable::None,
            lora_config: None,
            embed: self.embed.frozen(),
            blocks: self
                .blocks
                .iter()
                .map(|b| Block {
                    input_norm: b.input_norm.frozen(),
                    q: b.q.frozen(),
                    k: b.k.frozen(),
                    v: b.v.frozen(),
                    o: b.o.frozen(),
                    qk_norm: b.qk_norm.as_ref().map(|(q, k)| (q.frozen(), k.frozen())),
                    post_norm: b.post_norm.frozen(),
                    gate: b.gate.frozen(),
                    up: b.up.frozen(),
                    down: b.down.frozen(),
                })
                .collect(),
            norm: self.norm.frozen(),
            lm_head: self.lm_head.as_ref().map(RowParam::frozen),
            rope_table: self.rope_table.shared(),
        }
    }

    /// Every parameter, base tensors in checkpoint order, then the head, then LoRA pairs.
    pub fn params(&self) -> Vec<&Param> {
        let mut v: Vec<&Param> = self.embed.parts.iter().collect();
        for b in &self.blocks {
            v.push(&b.input_norm);
            for lin in b.linears() {
                v.extend(lin.base_params());
                if lin.kind == Linear::O {
                    if let Some((q, k)) = &b.qk_norm {
                        v.extend([q, k]);
                    }
                    v.push(&b.post_norm);
                }
            }
        }
        v.push(&self.norm);
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

/// x · Aᵀ [N, r] of each adapted linear of a block, kept for backward (None: not adapted).
pub struct LoraActs {
    pub q: Option<Tensor>,
    pub k: Option<Tensor>,
    pub v: Option<Tensor>,
    pub o: Option<Tensor>,
    pub gate: Option<Tensor>,
    pub up: Option<Tensor>,
    pub down: Option<Tensor>,
}

/// Qwen3's q/k before their per-head norms, and the norms' rstd.
pub struct QkNormActs {
    pub q_pre: Tensor,  // [N, H·D]
    pub k_pre: Tensor,  // [N, Hkv·D]
    pub q_rstd: Tensor, // [N·H]
    pub k_rstd: Tensor, // [N·Hkv]
}

/// Activations of one layer, kept from forward for backward.
pub struct LayerActs {
    pub ln1: Tensor,   // [N, C]
    pub rstd1: Tensor, // [N]
    pub q: Tensor,     // [N, H·D] after the norm and the rotation: attention's input
    pub k: Tensor,     // [N, Hkv·D]
    pub v: Tensor,     // [N, Hkv·D]
    pub qk_norm: Option<QkNormActs>,
    pub att: Tensor,   // [N, H·D] attention output before o_proj
    pub lse: Tensor,   // [B, H, T] attention's log-sum-exp per query
    pub x_mid: Tensor, // [N, C] residual after attention
    pub ln2: Tensor,   // [N, C]
    pub rstd2: Tensor, // [N]
    pub gate: Tensor,  // [N, I]
    pub up: Tensor,    // [N, I]
    pub h: Tensor,     // [N, I] silu(gate)·up
    pub x_out: Tensor, // [N, C] residual after the MLP
    pub lora: LoraActs,
}

/// Gradient scratch, reused by every layer.
pub struct GradActs {
    pub dresid: Tensor,        // [N, C] gradient of the residual stream
    pub dln: Tensor,           // [N, C] gradient of a norm's output
    pub datt: Tensor,          // [N, H·D]
    pub dq: Tensor,            // [N, H·D]
    pub dk: Tensor,            // [N, Hkv·D]
    pub dv: Tensor,            // [N, Hkv·D]
    pub dqk_pre: Option<(Tensor, Tensor)>, // Qwen3: d q_pre, d k_pre
    pub delta: Tensor,         // [B, H, T] attention backward's rowsum(dO·O)
    pub dgate: Tensor,         // [N, I]
    pub dup: Tensor,           // [N, I]
    pub dh: Tensor,            // [N, I]
    pub dxa: Tensor,           // [N, r]
}

/// Everything one (B, T) shape needs, created once.
pub struct Activations {
    /// The batch in, the loss out (io.lnf [N, C] is the final RMSNorm's output).
    pub io: Io,
    pub x0: Tensor,  // [N, C] embeddings
    pub tmp: Tensor, // [N, C] output of a projection before its residual add
    pub layers: Vec<LayerActs>,
    pub rstd_f: Tensor, // [N]
    pub grads: Option<GradActs>,
}

impl Activations {
    /// Allocates for B sequences of T tokens; `backward` adds the gradient scratch. `head_bytes`
    /// bounds the chunked head's logits scratch.
    pub fn new(gpu: &Gpu, m: &LlamaGpu, b: usize, t: usize, backward: bool, head_bytes: u64) -> Result<Activations, GpuError> {
        let cfg = &m.config;
        let (c, n, i) = (cfg.n_embd, b * t, cfg.intermediate);
        let (qw, kvw) = (cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim);
        let z = |name: &str, shape: &[usize]| gpu.zeros(name, shape);
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for (l, blk) in m.blocks.iter().enumerate() {
            let lz = |name: &str, shape: &[usize]| gpu.zeros(&format!("layers.{l}.{name}"), shape);
            let xa = |lin: &LinearParams| lora_scratch(gpu, lin, &format!("layers.{l}.{}", lin.kind.hf_name()), n);
            let qk_norm = match blk.qk_norm {
                Some(_) => Some(QkNormActs {
                    q_pre: lz("q_pre", &[n, qw])?,
                    k_pre: lz("k_pre", &[n, kvw])?,
                    q_rstd: lz("q_rstd", &[n * cfg.n_head])?,
                    k_rstd: lz("k_rstd", &[n * cfg.n_kv_head])?,
                }),
                None => None,
            };
            layers.push(LayerActs {
                ln1: lz("ln1", &[n, c])?,
                rstd1: lz("rstd1", &[n])?,
                q: lz("q", &[n, qw])?,
                k: lz("k", &[n, kvw])?,
                v: lz("v", &[n, kvw])?,
                qk_norm,
                att: lz("att", &[n, qw])?,
                lse: lz("lse", &[b * cfg.n_head * t])?,
                x_mid: lz("x_mid", &[n, c])?,
                ln2: lz("ln2", &[n, c])?,
                rstd2: lz("rstd2", &[n])?,
                gate: lz("gate", &[n, i])?,
                up: lz("up", &[n, i])?,
                h: lz("h", &[n, i])?,
                x_out: lz("x_out", &[n, c])?,
                lora: LoraActs {
                    q: xa(&blk.q)?,
                    k: xa(&blk.k)?,
                    v: xa(&blk.v)?,
                    o: xa(&blk.o)?,
                    gate: xa(&blk.gate)?,
                    up: xa(&blk.up)?,
                    down: xa(&blk.down)?,
                },
            });
        }
        let grads = if backward {
            let dqk_pre = match cfg.qk_norm {
                true => Some((z("dq_pre", &[n, qw])?, z("dk_pre", &[n, kvw])?)),
                false => None,
            };
            Some(GradActs {
                dresid: z("dresid", &[n, c])?,
                dln: z("dln", &[n, c])?,
                datt: z("datt", &[n, qw])?,
                dq: z("dq", &[n, qw])?,
                dk: z("dk", &[n, kvw])?,
                dv: z("dv", &[n, kvw])?,
                dqk_pre,
                delta: z("attention delta", &[b * cfg.n_head * t])?,
                dgate: z("dgate", &[n, i])?,
                dup: z("dup", &[n, i])?,
                dh: z("dh", &[n, i])?,
                dxa: z("dxa", &[n, m.max_rank().max(1)])?,
            })
        } else {
            None
        };
        Ok(Activations {
            io: Io::new(gpu, b, t, c, cfg.vocab_size, backward, backward && m.embed.is_trained(), head_bytes)?,
            x0: z("x0", &[n, c])?,
            tmp: z("tmp", &[n, c])?,
            layers,
            rstd_f: z("rstd_f", &[n])?,
            grads,
        })
    }
}

impl LlamaGpu {
    fn attention(&self, b: usize, t: usize) -> Attention {
        Attention::gqa(b, t, self.config.n_head, self.config.n_kv_head, self.config.head_dim)
    }

    /// The rotations of q and k for N = B·T rows at positions 0..T of each sequence.
    fn ropes(&self, n: usize, t: usize) -> (Rope, Rope) {
        let (h, hkv, d) = (self.config.n_head, self.config.n_kv_head, self.config.head_dim);
        (Rope { n, heads: h, head_dim: d, t }, Rope { n, heads: hkv, head_dim: d, t })
    }

    /// Forward to the final RMSNorm: a.io.lnf [N, C].
    pub fn forward(&self, gpu: &Gpu, prog: &mut Program, a: &Activations) {
        let cfg = &self.config;
        let (b, t, c, eps) = (a.io.b, a.io.t, cfg.n_embd, cfg.layer_norm_epsilon);
        let n = b * t;
        let (qw, kvw, d, i) = (cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim, cfg.head_dim, cfg.intermediate);
        let norm = RmsNorm { n, heads: 1, c, eps };
        let (rope_q, rope_k) = self.ropes(n, t);
        let dims = self.attention(b, t);
        embedding::embedding_forward_chunked(gpu, prog, &a.io.tokens, &self.embed.values(), None, &a.x0, b, t, c); // x0 [N, C]
        for (l, (blk, la)) in self.blocks.iter().zip(&a.layers).enumerate() {
            let x = if l == 0 { &a.x0 } else { &a.layers[l - 1].x_out }; // [N, C]
            let lo = &la.lora;
            rmsnorm::rmsnorm_forward(gpu, prog, &norm, View::rows(x, c), &blk.input_norm.value, View::rows(&la.ln1, c), &la.rstd1);
            match (&blk.qk_norm, &la.qk_norm) {
                (Some((qn, kn)), Some(qa)) => {
                    blk.q.forward(gpu, prog, &la.ln1, &qa.q_pre, lo.q.as_ref(), n); // q_pre [N, H·D]
                    blk.k.forward(gpu, prog, &la.ln1, &qa.k_pre, lo.k.as_ref(), n); // k_pre [N, Hkv·D]
                    let (nq, nk) = (RmsNorm { n, heads: cfg.n_head, c: d, eps }, RmsNorm { n, heads: cfg.n_kv_head, c: d, eps });
                    rmsnorm::rmsnorm_forward(gpu, prog, &nq, View::rows(&qa.q_pre, qw), &qn.value, View::rows(&la.q, qw), &qa.q_rstd);
                    rmsnorm::rmsnorm_forward(gpu, prog, &nk, View::rows(&qa.k_pre, kvw), &kn.value, View::rows(&la.k, kvw), &qa.k_rstd);
                }
                _ => {
                    blk.q.forward(gpu, prog, &la.ln1, &la.q, lo.q.as_ref(), n); // q [N, H·D]
                    blk.k.forward(gpu, prog, &la.ln1, &la.k, lo.k.as_ref(), n); // k [N, Hkv·D]
                }
            }
            blk.v.forward(gpu, prog, &la.ln1, &la.v, lo.v.as_ref(), n); // v [N, Hkv·D]
            rope::rope_forward(gpu, prog, &rope_q, None, View::rows(&la.q, qw), &self.rope_table, Positions::Start(0));
            rope::rope_forward(gpu, prog, &rope_k, None, View::rows(&la.k, kvw), &self.rope_table, Positions::Start(0));
            attention::attention_forward(gpu, prog, &dims, Qkv::separate(&la.q, &la.k, &la.v, &dims), &la.att, &la.lse); // att [N, H·D]
            blk.o.forward(gpu, prog, &la.att, &a.tmp, lo.o.as_ref(), n); // [N, C]
            residual::add_forward(gpu, prog, x, &a.tmp, &la.x_mid); // x_mid [N, C]
            rmsnorm::rmsnorm_forward(gpu, prog, &norm, View::rows(&la.x_mid, c), &blk.post_norm.value, View::rows(&la.ln2, c), &la.rstd2);
            blk.gate.forward(gpu, prog, &la.ln2, &la.gate, lo.gate.as_ref(), n); // gate [N, I]
            blk.up.forward(gpu, prog, &la.ln2, &la.up, lo.up.as_ref(), n); // up [N, I]
            swiglu::swiglu_forward(gpu, prog, View::rows(&la.gate, i), View::rows(&la.up, i), View::rows(&la.h, i), n, i); // h [N, I]
            blk.down.forward(gpu, prog, &la.h, &a.tmp, lo.down.as_ref(), n); // [N, C]
            residual::add_forward(gpu, prog, &la.x_mid, &a.tmp, &la.x_out); // x_out [N, C]
        }
        let last = a.layers.last().map(|la| &la.x_out).unwrap_or(&a.x0);
        rmsnorm::rmsnorm_forward(gpu, prog, &norm, View::rows(last, c), &self.norm.value, View::rows(&a.io.lnf, c), &a.rstd_f);
    }

    /// LM head + cross-entropy over a.io.lnf: a.io.loss [1], a.io.losses [N]; with gradients,
    /// dln = d lnf [N, C] and the head's weight gradient accumulated.
    pub fn head_loss(&self, gpu: &Gpu, prog: &mut Program, a: &Activations) {
        a.io.head_loss(gpu, prog, self.head(), a.grads.as_ref().map(|g| &g.dln));
    }

    /// Backward from dln = d lnf (written by `head_loss`) to every trained gradient. Weight
    /// gradients accumulate, so the step program clears them first.
    pub fn backward(&self, gpu: &Gpu, prog: &mut Program, a: &Activations) {
        let Some(g) = &a.grads else { return };
        let cfg = &self.config;
        let (b, t, c, eps) = (a.io.b, a.io.t, cfg.n_embd, cfg.layer_norm_epsilon);
        let n = b * t;
        let (qw, kvw, d, i) = (cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim, cfg.head_dim, cfg.intermediate);
        let norm = RmsNorm { n, heads: 1, c, eps };
        let (rope_q, rope_k) = self.ropes(n, t);
        let dims = self.attention(b, t);
        let last = a.layers.last().map(|la| &la.x_out).unwrap_or(&a.x0);
        rmsnorm::rmsnorm_backward(gpu, prog, &norm, View::rows(&g.dln, c), View::rows(last, c), &self.norm.value, &a.rstd_f, View::rows(&g.dresid, c), false, self.norm.grad.as_ref());
        for (l, (blk, la)) in self.blocks.iter().zip(&a.layers).enumerate().rev() {
            let x = if l == 0 { &a.x0 } else { &a.layers[l - 1].x_out }; // [N, C]
            let lo = &la.lora;
            // MLP: dresid is d x_out
            blk.down.backward(gpu, prog, &g.dresid, &la.h, lo.down.as_ref(), &g.dh, false, &g.dxa, n); // d h [N, I]
            swiglu::swiglu_backward(gpu, prog, View::rows(&g.dh, i), View::rows(&la.gate, i), View::rows(&la.up, i), View::rows(&g.dgate, i), View::rows(&g.dup, i), n, i);
            blk.gate.backward(gpu, prog, &g.dgate, &la.ln2, lo.gate.as_ref(), &g.dln, false, &g.dxa, n); // d ln2 [N, C]
            blk.up.backward(gpu, prog, &g.dup, &la.ln2, lo.up.as_ref(), &g.dln, true, &g.dxa, n); // += d ln2
            rmsnorm::rmsnorm_backward(gpu, prog, &norm, View::rows(&g.dln, c), View::rows(&la.x_mid, c), &blk.post_norm.value, &la.rstd2, View::rows(&g.dresid, c), true, blk.post_norm.grad.as_ref());
            // attention: dresid is now d x_mid
            blk.o.backward(gpu, prog, &g.dresid, &la.att, lo.o.as_ref(), &g.datt, false, &g.dxa, n); // d att [N, H·D]
            let x_qkv = Qkv::separate(&la.q, &la.k, &la.v, &dims);
            let d_qkv = Qkv::separate(&g.dq, &g.dk, &g.dv, &dims);
            attention::attention_backward(gpu, prog, &dims, x_qkv, &la.att, &la.lse, &g.datt, &g.delta, d_qkv); // dq, dk, dv
            rope::rope_backward(gpu, prog, &rope_q, None, View::rows(&g.dq, qw), &self.rope_table, Positions::Start(0));
            rope::rope_backward(gpu, prog, &rope_k, None, View::rows(&g.dk, kvw), &self.rope_table, Positions::Start(0));
            let (dq, dk) = match (&blk.qk_norm, &la.qk_norm, &g.dqk_pre) {
                (Some((qn, kn)), Some(qa), Some((dq_pre, dk_pre))) => {
                    let (nq, nk) = (RmsNorm { n, heads: cfg.n_head, c: d, eps }, RmsNorm { n, heads: cfg.n_kv_head, c: d, eps });
                    rmsnorm::rmsnorm_backward(gpu, prog, &nq, View::rows(&g.dq, qw), View::rows(&qa.q_pre, qw), &qn.value, &qa.q_rstd, View::rows(dq_pre, qw), false, qn.grad.as_ref());
                    rmsnorm::rmsnorm_backward(gpu, prog, &nk, View::rows(&g.dk, kvw), View::rows(&qa.k_pre, kvw), &kn.value, &qa.k_rstd, View::rows(dk_pre, kvw), false, kn.grad.as_ref());
                    (dq_pre, dk_pre)
                }
                _ => (&g.dq, &g.dk),
            };
            blk.q.backward(gpu, prog, dq, &la.ln1, lo.q.as_ref(), &g.dln, false, &g.dxa, n); // d ln1 [N, C]
            blk.k.backward(gpu, prog, dk, &la.ln1, lo.k.as_ref(), &g.dln, true, &g.dxa, n); // += d ln1
            blk.v.backward(gpu, prog, &g.dv, &la.ln1, lo.v.as_ref(), &g.dln, true, &g.dxa, n); // += d ln1
            rmsnorm::rmsnorm_backward(gpu, prog, &norm, View::rows(&g.dln, c), View::rows(x, c), &blk.input_norm.value, &la.rstd1, View::rows(&g.dresid, c), true, blk.input_norm.grad.as_ref());
        }
        // dresid is now d x0
        if let (Some(dembed), Some(ix)) = (self.embed.grads(), &a.io.token_index) {
            embedding::embedding_backward_chunked(gpu, prog, &g.dresid, ix, &dembed, None, b, t, c);
        }
    }

    /// One decoding step (N = 1, the same block sequence as `forward`): the token at position
    /// pos[0] -> logits [V], its (rotated) key and value stored in cache row pos[0] first.
    /// Returns the program and the step's own buffers (kept with it).
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
        let (c, v, i, hd, eps) = (cfg.n_embd, cfg.vocab_size, cfg.intermediate, cfg.head_dim, cfg.layer_norm_epsilon);
        let (qw, kvw) = (cfg.n_head * hd, cfg.n_kv_head * hd);
        let z = |name: &str, shape: &[usize]| gpu.zeros(&format!("decode {name}"), shape);
        let (x, x_mid, ln, rstd) = (z("x", &[1, c])?, z("x_mid", &[1, c])?, z("ln", &[1, c])?, z("rstd", &[1])?);
        let (q, k, val, att, tmp) = (z("q", &[1, qw])?, z("k", &[1, kvw])?, z("v", &[1, kvw])?, z("att", &[1, qw])?, z("tmp", &[1, c])?);
        let (q_pre, k_pre, q_rstd, k_rstd) = (z("q_pre", &[1, qw])?, z("k_pre", &[1, kvw])?, z("q_rstd", &[cfg.n_head])?, z("k_rstd", &[cfg.n_kv_head])?);
        let (gate, up, h, xa) = (z("gate", &[1, i])?, z("up", &[1, i])?, z("h", &[1, i])?, z("lora_xa", &[1, self.max_rank().max(1)])?);
        let mut prog = Program::new();
        let p = &mut prog;
        let xa_ = Some(&xa);
        let norm = RmsNorm { n: 1, heads: 1, c, eps };
        let (rope_q, rope_k) = (Rope { n: 1, heads: cfg.n_head, head_dim: hd, t: 1 }, Rope { n: 1, heads: cfg.n_kv_head, head_dim: hd, t: 1 });
        let at = Positions::At(pos);
        embedding::embedding_forward_at_chunked(gpu, p, token, pos, &self.embed.values(), None, &x, 1, c); // x [1, C]
        for (blk, (kc, vc)) in self.blocks.iter().zip(caches) {
            rmsnorm::rmsnorm_forward(gpu, p, &norm, View::rows(&x, c), &blk.input_norm.value, View::rows(&ln, c), &rstd);
            match &blk.qk_norm {
                Some((qn, kn)) => {
                    blk.q.forward(gpu, p, &ln, &q_pre, xa_, 1);
                    blk.k.forward(gpu, p, &ln, &k_pre, xa_, 1);
                    let (nq, nk) = (RmsNorm { n: 1, heads: cfg.n_head, c: hd, eps }, RmsNorm { n: 1, heads: cfg.n_kv_head, c: hd, eps });
                    rmsnorm::rmsnorm_forward(gpu, p, &nq, View::rows(&q_pre, qw), &qn.value, View::rows(&q, qw), &q_rstd);
                    rmsnorm::rmsnorm_forward(gpu, p, &nk, View::rows(&k_pre, kvw), &kn.value, View::rows(&k, kvw), &k_rstd);
                }
                None => {
                    blk.q.forward(gpu, p, &ln, &q, xa_, 1); // q [1, H·D]
                    blk.k.forward(gpu, p, &ln, &k, xa_, 1); // k [1, Hkv·D]
                }
            }
            blk.v.forward(gpu, p, &ln, &val, xa_, 1); // v [1, Hkv·D]
            rope::rope_forward(gpu, p, &rope_q, None, View::rows(&q, qw), &self.rope_table, at);
            rope::rope_forward(gpu, p, &rope_k, None, View::rows(&k, kvw), &self.rope_table, at);
            attention::kv_store(gpu, p, d, View::rows(&k, kvw), View::rows(&val, kvw), 1, pos, kc, vc); // cache row pos
            attention::attention_decode(gpu, p, d, View::rows(&q, qw), pos, kc, vc, &att); // att [1, H·D]
            blk.o.forward(gpu, p, &att, &tmp, xa_, 1); // [1, C]
            residual::add_forward(gpu, p, &x, &tmp, &x_mid); // x_mid [1, C]
            rmsnorm::rmsnorm_forward(gpu, p, &norm, View::rows(&x_mid, c), &blk.post_norm.value, View::rows(&ln, c), &rstd);
            blk.gate.forward(gpu, p, &ln, &gate, xa_, 1); // gate [1, I]
            blk.up.forward(gpu, p, &ln, &up, xa_, 1); // up [1, I]
            swiglu::swiglu_forward(gpu, p, View::rows(&gate, i), View::rows(&up, i), View::rows(&h, i), 1, i);
            blk.down.forward(gpu, p, &h, &tmp, xa_, 1); // [1, C]
            residual::add_forward(gpu, p, &x_mid, &tmp, &x); // x [1, C]: the block output
        }
        rmsnorm::rmsnorm_forward(gpu, p, &norm, View::rows(&x, c), &self.norm.value, View::rows(&ln, c), &rstd);
        head_logits(gpu, p, &ln, 0, self.head(), logits, 1, v, c); // logits [V]
        Ok((prog, vec![x, x_mid, ln, rstd, q, k, val, att, tmp, q_pre, k_pre, q_rstd, k_rstd, gate, up, h, xa]))
    }

    /// After `forward` over a prompt of `len` tokens (B = 1): its rotated keys and its values into
    /// cache rows pos[0].. (pos[0] = 0).
    #[allow(clippy::too_many_arguments)]
    pub fn store_prompt(&self, gpu: &Gpu, prog: &mut Program, a: &Activations, d: &AttentionDecode, caches: &[(Tensor, Tensor)], pos: &Tensor, len: usize) {
        let kvw = self.config.n_kv_head * self.config.head_dim;
        for (la, (kc, vc)) in a.layers.iter().zip(caches) {
            attention::kv_store(gpu, prog, d, View::rows(&la.k, kvw), View::rows(&la.v, kvw), len, pos, kc, vc);
        }
    }

    /// Logits [B, T, V] for a batch of tokens (inference; keep B·T·V small).
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
