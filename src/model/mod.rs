//! The models: config, weights (safetensors <-> named tensors), each family's GPU forward and
//! backward as an explicit layer sequence (`gpt2.rs`, `llama.rs`), the pieces they share
//! (`linear.rs`: a linear layer with its LoRA adapter), the one interface the rest of webtune
//! sees a model through ([`ModelGpu`]), and LoRA adapters in PEFT's format (and in llama.cpp's
//! GGUF, `gguf.rs`).

pub mod causal_lm;
pub mod config;
pub mod gguf;
pub mod gpt2;
pub mod head;
pub mod linear;
pub mod llama;
pub mod lora;
pub mod rope;
pub mod weights;

pub use causal_lm::{Acts, ModelGpu};
pub use config::{Family, ModelConfig};
pub use linear::{Param, Trainable};
pub use lora::{LoraAdapter, LoraConfig};
pub use weights::{HostTensor, WeightFiles, WeightSource, Weights};

/// Errors about model and adapter files. Each names the file, tensor or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {msg}")]
    Io { path: String, msg: String },
    #[error("{path}: invalid JSON: {msg}")]
    Json { path: String, msg: String },
    #[error("{path}: {msg}")]
    Config { path: String, msg: String },
    #[error("{path}: not a valid safetensors file: {msg}")]
    Safetensors { path: String, msg: String },
    #[error("{path}: tensor '{name}' has shape {found:?} but the config needs {expected:?}")]
    Shape { path: String, name: String, found: Vec<usize>, expected: Vec<usize> },
    #[error("{path}: missing tensor '{name}'")]
    Missing { path: String, name: String },
    #[error("{path}: tensor '{name}' has dtype {dtype}; webtune reads F32, F16 and BF16")]
    Dtype { path: String, name: String, dtype: String },
    #[error(
        "{path}: tensor '{name}' holds {value} (element {index}; {count} of its {len} values are NaN or infinite): \
         webtune refuses weights that are not finite (a corrupt file, or one saved from a run that diverged)"
    )]
    NotFinite { path: String, name: String, value: f32, index: usize, count: usize, len: usize },
    #[error("{0}")]
    Lora(String),
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
}

/// The linear layers of a block, in the order the forward pass meets them: GPT-2's four HF
/// Conv1D layers (weight [in, out]) and the Llama family's seven nn.Linear layers (weight
/// [out, in]). `hf_name` is the module path inside a block (`h.{i}` / `layers.{i}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Linear {
    AttnQkv,
    AttnProj,
    MlpFc,
    MlpProj,
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Linear {
    pub const GPT2: [Linear; 4] = [Linear::AttnQkv, Linear::AttnProj, Linear::MlpFc, Linear::MlpProj];
    pub const LLAMA: [Linear; 7] = [Linear::Q, Linear::K, Linear::V, Linear::O, Linear::Gate, Linear::Up, Linear::Down];

    /// The linear layers of a family's block.
    pub fn of(family: Family) -> &'static [Linear] {
        match family {
            Family::Gpt2 => &Linear::GPT2,
            Family::Llama => &Linear::LLAMA,
        }
    }

    pub fn hf_name(self) -> &'static str {
        match self {
            Linear::AttnQkv => "attn.c_attn",
            Linear::AttnProj => "attn.c_proj",
            Linear::MlpFc => "mlp.c_fc",
            Linear::MlpProj => "mlp.c_proj",
            Linear::Q => "self_attn.q_proj",
            Linear::K => "self_attn.k_proj",
            Linear::V => "self_attn.v_proj",
            Linear::O => "self_attn.o_proj",
            Linear::Gate => "mlp.gate_proj",
            Linear::Up => "mlp.up_proj",
            Linear::Down => "mlp.down_proj",
        }
    }

    /// (in, out) features in a model of this config.
    pub fn dims(self, cfg: &ModelConfig) -> (usize, usize) {
        let (c, i) = (cfg.n_embd, cfg.intermediate);
        let (q, kv) = (cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim);
        match self {
            Linear::AttnQkv => (c, 3 * c),
            Linear::AttnProj => (c, c),
            Linear::MlpFc => (c, i),
            Linear::MlpProj => (i, c),
            Linear::Q => (c, q),
            Linear::K | Linear::V => (c, kv),
            Linear::O => (q, c),
            Linear::Gate | Linear::Up => (c, i),
            Linear::Down => (i, c),
        }
    }

    /// The weight's shape as the checkpoint stores it: [in, out] for a Conv1D (GPT-2), [out, in]
    /// for an nn.Linear.
    pub fn weight_shape(self, cfg: &ModelConfig) -> Vec<usize> {
        let (fin, fout) = self.dims(cfg);
        if self.conv1d() {
            vec![fin, fout]
        } else {
            vec![fout, fin]
        }
    }

    /// Whether the weight is stored [in, out] (HF's Conv1D, PEFT's fan_in_fan_out).
    pub fn conv1d(self) -> bool {
        matches!(self, Linear::AttnQkv | Linear::AttnProj | Linear::MlpFc | Linear::MlpProj)
    }

    /// Whether the layer has a bias in a model of this config.
    pub fn has_bias(self, cfg: &ModelConfig) -> bool {
        match self {
            Linear::AttnQkv | Linear::AttnProj | Linear::MlpFc | Linear::MlpProj => true,
            Linear::Q | Linear::K | Linear::V => cfg.qkv_bias,
            Linear::O => cfg.o_bias,
            Linear::Gate | Linear::Up | Linear::Down => cfg.mlp_bias,
        }
    }
}
