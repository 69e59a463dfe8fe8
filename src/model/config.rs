//! A model's shape, read from a Hugging Face `config.json`: GPT-2 (`model_type` "gpt2") and the
//! Llama family ("llama": SmolLM2, TinyLlama, Llama 3.x; "qwen2": Qwen2.5; "qwen3": Qwen3). One
//! struct holds every family's settings (the ones a family does not have take the value that
//! family implies), so code that only needs the shape never asks which family it has.

use super::rope::Rope;
use super::ModelError;

/// How a family's blocks are built (src/model/gpt2.rs, src/model/llama.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// LayerNorm, learned positions, fused qkv Conv1D [in, out] layers with biases, GELU MLP.
    Gpt2,
    /// RMSNorm, rotary positions, grouped-query attention, nn.Linear [out, in] layers, SwiGLU MLP;
    /// Qwen2's q/k/v biases and Qwen3's per-head q/k norms are settings of it.
    Llama,
}

impl Family {
    /// Canonical name of block `layer`'s tensor or module `suffix`: `h.{layer}.{suffix}` (GPT-2),
    /// `layers.{layer}.{suffix}` (the Llama family). Canonical names are the HF names without the
    /// body's prefix ([`hf_prefix`](Self::hf_prefix)).
    pub fn block_name(self, layer: usize, suffix: &str) -> String {
        match self {
            Family::Gpt2 => format!("h.{layer}.{suffix}"),
            Family::Llama => format!("layers.{layer}.{suffix}"),
        }
    }

    /// HF's prefix of the body's tensors (`GPT2LMHeadModel.transformer`, `LlamaForCausalLM.model`);
    /// `lm_head.weight` has none.
    pub fn hf_prefix(self) -> &'static str {
        match self {
            Family::Gpt2 => "transformer.",
            Family::Llama => "model.",
        }
    }

    /// The token embedding's canonical name (the tied LM head).
    pub fn embedding_name(self) -> &'static str {
        match self {
            Family::Gpt2 => "wte.weight",
            Family::Llama => "embed_tokens.weight",
        }
    }

    /// PEFT's `fan_in_fan_out` for the family's linear layers: true for GPT-2's Conv1D ([in, out]).
    pub fn fan_in_fan_out(self) -> bool {
        self == Family::Gpt2
    }
}

/// The `model_type`s webtune reads.
pub const MODEL_TYPES: [&str; 4] = ["gpt2", "llama", "qwen2", "qwen3"];

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// config.json's `model_type`.
    pub model_type: String,
    pub family: Family,
    pub n_layer: usize,
    /// Query heads, and key/value heads (fewer: grouped-query attention; GPT-2: the same).
    pub n_head: usize,
    pub n_kv_head: usize,
    /// Width of the residual stream (GPT-2's `n_embd`, Llama's `hidden_size`).
    pub n_embd: usize,
    /// Values per attention head (`head_dim`, else n_embd / n_head).
    pub head_dim: usize,
    /// Width of the MLP's hidden layer (GPT-2: 4 · n_embd; Llama: `intermediate_size`).
    pub intermediate: usize,
    pub vocab_size: usize,
    /// The longest sequence (`n_positions`, `max_position_embeddings`).
    pub n_positions: usize,
    /// The norms' epsilon (GPT-2's LayerNorm `layer_norm_epsilon`, Llama's RMSNorm `rms_norm_eps`).
    pub layer_norm_epsilon: f32,
    /// The id that ends each training record, and every id that ends a generation (config.json
    /// may list several; the first is `eos_token_id`).
    pub eos_token_id: u32,
    pub eos_token_ids: Vec<u32>,
    pub bos_token_id: u32,
    /// The LM head is the token embedding (else `lm_head.weight` is its own tensor).
    pub tie_word_embeddings: bool,
    /// Biases on the q, k, v projections (Qwen2; Llama's `attention_bias`), on the attention
    /// output (Llama's `attention_bias`), on the MLP's projections (Llama's `mlp_bias`).
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Qwen3: an RMSNorm over each head of q and of k before the rotary embedding.
    pub qk_norm: bool,
    /// The rotary embedding (the Llama family).
    pub rope: Option<Rope>,
    /// The original config.json, kept so full fine-tuning and merges write it back unchanged
    /// apart from what webtune knows.
    pub raw: serde_json::Value,
}

impl ModelConfig {
    /// Parses config.json text; `path` names it in errors.
    pub fn from_json(text: &str, path: &str) -> Result<ModelConfig, ModelError> {
        let raw: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ModelError::Json { path: path.into(), msg: e.to_string() })?;
        let err = |msg: String| ModelError::Config { path: path.into(), msg };
        let obj = raw.as_object().ok_or_else(|| err("not a JSON object".into()))?;
        let model_type = match obj.get("model_type") {
            Some(serde_json::Value::String(t)) => t.clone(),
            None if obj.contains_key("n_embd") => "gpt2".to_string(), // old GPT-2 configs have no model_type
            Some(v) => return Err(err(format!("field 'model_type' must be a string, found {v}"))),
            None => return Err(err(format!("no 'model_type'; webtune reads {}", MODEL_TYPES.join(", ")))),
        };
        let family = match model_type.as_str() {
            "gpt2" => Family::Gpt2,
            "llama" | "qwen2" | "qwen3" => Family::Llama,
            t => {
                return Err(err(format!(
                    "model_type '{t}' is not supported; webtune trains {} models",
                    MODEL_TYPES.join(", ")
                )))
            }
        };
        let field = |names: &[&str]| -> Result<usize, ModelError> {
            for n in names {
                if let Some(v) = obj.get(*n) {
                    return v
                        .as_u64()
                        .filter(|x| *x > 0 && *x <= u32::MAX as u64)
                        .map(|x| x as usize)
                        .ok_or_else(|| err(format!("field '{n}' must be a positive integer, found {v}")));
                }
            }
            Err(err(format!("missing field '{}'", names[0])))
        };
        let flag = |name: &str, default: bool| -> Result<bool, ModelError> {
            match obj.get(name) {
                None | Some(serde_json::Value::Null) => Ok(default),
                Some(v) => v.as_bool().ok_or_else(|| err(format!("field '{name}' must be true or false, found {v}"))),
            }
        };
        let n_layer = field(&["n_layer", "num_hidden_layers"])?;
        let n_head = field(&["n_head", "num_attention_heads"])?;
        let n_embd = field(&["n_embd", "hidden_size"])?;
        let vocab_size = field(&["vocab_size"])?;
        let n_positions = field(&["n_positions", "max_position_embeddings"])?;
        let eps_key = if family == Family::Gpt2 { "layer_norm_epsilon" } else { "rms_norm_eps" };
        let eps = match obj.get(eps_key) {
            None | Some(serde_json::Value::Null) => if family == Family::Gpt2 { 1e-5 } else { 1e-6 },
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| err(format!("field '{eps_key}' must be a positive number, found {v}")))?,
        } as f32;
        let ids = |name: &str| -> Result<Vec<u32>, ModelError> {
            let bad = |v: &serde_json::Value| err(format!("'{name}' must be a token id below vocab_size {vocab_size}, found {v}"));
            let one = |v: &serde_json::Value| v.as_u64().filter(|x| (*x as usize) < vocab_size).map(|x| x as u32).ok_or_else(|| bad(v));
            match obj.get(name) {
                None | Some(serde_json::Value::Null) => Ok(Vec::new()),
                Some(serde_json::Value::Array(a)) => a.iter().map(one).collect(),
                Some(v) => Ok(vec![one(v)?]),
            }
        };
        let eos_token_ids = ids("eos_token_id")?;
        let bos = ids("bos_token_id")?;
        // GPT-2 configs without the ids: the last token, as GPT-2's <|endoftext|>.
        let last = (vocab_size - 1) as u32;
        let eos_token_id = eos_token_ids.first().copied().unwrap_or(last);
        let bos_token_id = bos.first().copied().unwrap_or(if family == Family::Gpt2 { last } else { eos_token_id });
        let eos_token_ids = if eos_token_ids.is_empty() { vec![eos_token_id] } else { eos_token_ids };

        let mut c = ModelConfig {
            model_type: model_type.clone(),
            family,
            n_layer,
            n_head,
            n_kv_head: n_head,
            n_embd,
            head_dim: n_embd / n_head,
            intermediate: 4 * n_embd,
            vocab_size,
            n_positions,
            layer_norm_epsilon: eps,
            eos_token_id,
            eos_token_ids,
            bos_token_id,
            tie_word_embeddings: flag("tie_word_embeddings", family == Family::Gpt2)?,
            qkv_bias: family == Family::Gpt2,
            o_bias: family == Family::Gpt2,
            mlp_bias: family == Family::Gpt2,
            qk_norm: false,
            rope: None,
            raw: raw.clone(),
        };
        match family {
            Family::Gpt2 => {
                if n_embd % n_head != 0 {
                    return Err(err(format!("n_embd {n_embd} is not a multiple of n_head {n_head}")));
                }
                if let Some(act) = obj.get("activation_function").and_then(|v| v.as_str()) {
                    if !matches!(act, "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast") {
                        return Err(err(format!(
                            "activation_function '{act}' is not supported (webtune implements the tanh GELU, 'gelu_new')"
                        )));
                    }
                }
            }
            Family::Llama => {
                c.n_kv_head = match obj.get("num_key_value_heads") {
                    None | Some(serde_json::Value::Null) => n_head,
                    Some(_) => field(&["num_key_value_heads"])?,
                };
                if n_head % c.n_kv_head != 0 {
                    return Err(err(format!(
                        "num_attention_heads {n_head} is not a multiple of num_key_value_heads {}",
                        c.n_kv_head
                    )));
                }
                c.intermediate = field(&["intermediate_size"])?;
                let rope = Rope::from_config(&raw, path)?;
                c.head_dim = rope.head_dim;
                c.rope = Some(rope);
                match obj.get("hidden_act").and_then(|v| v.as_str()).unwrap_or("silu") {
                    "silu" | "swish" => {}
                    act => return Err(err(format!("hidden_act '{act}' is not supported (webtune implements SwiGLU with silu)"))),
                }
                let attention_bias = flag("attention_bias", false)?;
                (c.qkv_bias, c.o_bias) = match model_type.as_str() {
                    "qwen2" => (true, false), // Qwen2's q/k/v projections always have biases
                    _ => (attention_bias, attention_bias),
                };
                c.mlp_bias = flag("mlp_bias", false)?;
                c.qk_norm = model_type == "qwen3";
                if flag("use_sliding_window", false)? {
                    return Err(err(
                        "use_sliding_window is true: sliding-window attention is not supported (set it to false to train \
                         with full causal attention)"
                            .into(),
                    ));
                }
            }
        }
        let too_big = c.n_layer.checked_mul(c.n_embd).and_then(|x| x.checked_mul(c.intermediate)).is_none()
            || c.vocab_size.checked_mul(c.n_embd).is_none()
            || c.n_head.checked_mul(c.head_dim).is_none();
        if too_big {
            return Err(err(format!(
                "the sizes it gives overflow this build's {}-bit sizes: a model this large cannot be loaded here{}",
                usize::BITS,
                if usize::BITS < 64 { " (a browser page's WebAssembly memory holds at most 4 GiB)" } else { "" }
            )));
        }
        Ok(c)
    }

    /// A GPT-2 config for tests and from-scratch models.
    pub fn gpt2(n_layer: usize, n_head: usize, n_embd: usize, vocab_size: usize, n_positions: usize) -> ModelConfig {
        let raw = serde_json::json!({
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "n_layer": n_layer, "n_head": n_head, "n_embd": n_embd,
            "vocab_size": vocab_size, "n_positions": n_positions, "n_ctx": n_positions,
            "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
            "bos_token_id": vocab_size - 1, "eos_token_id": vocab_size - 1,
            "tie_word_embeddings": true,
        });
        let eos = (vocab_size - 1) as u32;
        ModelConfig {
            model_type: "gpt2".into(),
            family: Family::Gpt2,
            n_layer,
            n_head,
            n_kv_head: n_head,
            n_embd,
            head_dim: n_embd / n_head.max(1),
            intermediate: 4 * n_embd,
            vocab_size,
            n_positions,
            layer_norm_epsilon: 1e-5,
            eos_token_id: eos,
            eos_token_ids: vec![eos],
            bos_token_id: eos,
            tie_word_embeddings: true,
            qkv_bias: true,
            o_bias: true,
            mlp_bias: true,
            qk_norm: false,
            rope: None,
            raw,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Canonical name of block `layer`'s tensor or module `suffix` ([`Family::block_name`]).
    pub fn block_name(&self, layer: usize, suffix: &str) -> String {
        self.family.block_name(layer, suffix)
    }

    /// HF's prefix of the body's tensors ([`Family::hf_prefix`]).
    pub fn hf_prefix(&self) -> &'static str {
        self.family.hf_prefix()
    }

    /// The token embedding's canonical name ([`Family::embedding_name`]).
    pub fn embedding_name(&self) -> &'static str {
        self.family.embedding_name()
    }

    /// Every tensor a model of this config has, with its shape, in checkpoint order (an untied
    /// `lm_head.weight` is not listed).
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.params().collect()
    }

    /// [`ModelConfig::param_shapes`] one at a time: asking for the first few costs nothing
    /// whatever `n_layer` a config claims.
    pub fn params(&self) -> impl Iterator<Item = (String, Vec<usize>)> + '_ {
        let [before, after] = self.outer_shapes();
        let layer = self.layer_shapes();
        let blocks = (0..self.n_layer)
            .flat_map(move |i| layer.clone().into_iter().map(move |(s, shape)| (self.block_name(i, &s), shape)));
        before.into_iter().chain(blocks).chain(after)
    }

    /// The tensors outside the blocks: before them (embeddings) and after (the final norm).
    pub fn outer_shapes(&self) -> [Vec<(String, Vec<usize>)>; 2] {
        match self.family {
            Family::Gpt2 => super::gpt2::outer_shapes(self),
            Family::Llama => super::llama::outer_shapes(self),
        }
    }

    /// The tensors of every block, by their name inside the block (e.g. `"ln_1.weight"`).
    pub fn layer_shapes(&self) -> Vec<(String, Vec<usize>)> {
        match self.family {
            Family::Gpt2 => super::gpt2::layer_shapes(self),
            Family::Llama => super::llama::layer_shapes(self),
        }
    }

    /// Splits a canonical block tensor name into its layer and its name inside the block
    /// (`"h.3.ln_1.weight"` → `(3, "ln_1.weight")`); None for other names.
    pub fn split_block_name<'n>(&self, name: &'n str) -> Option<(usize, &'n str)> {
        let rest = name.strip_prefix(self.block_name(0, "").strip_suffix("0.")?)?;
        let (layer, suffix) = rest.split_once('.')?;
        if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) || (layer.len() > 1 && layer.starts_with('0')) {
            return None;
        }
        Some((layer.parse().ok()?, suffix))
    }

    /// Sets the end-of-text id (and config.json's field), e.g. from a tokenizer.
    pub fn set_eos(&mut self, eos: u32, bos: u32) {
        (self.eos_token_id, self.eos_token_ids, self.bos_token_id) = (eos, vec![eos], bos);
        if let Some(raw) = self.raw.as_object_mut() {
            raw.insert("eos_token_id".into(), eos.into());
            raw.insert("bos_token_id".into(), bos.into());
        }
    }

    /// The config.json text to write next to saved weights.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.raw).unwrap_or_else(|_| "{}".into())
    }
}
