//! The GPT-2 model: config, weights (safetensors <-> named tensors), the GPU forward and
//! backward as an explicit layer sequence, and LoRA adapters.

pub mod config;
pub mod gpt2;
pub mod lora;
pub mod rope;
pub mod weights;

pub use config::Gpt2Config;
pub use lora::{LoraAdapter, LoraConfig};
pub use weights::{Gpt2Weights, HostTensor};

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

/// The four linear (HF Conv1D, weight [in, out]) layers of a GPT-2 block, in the order
/// the forward pass meets them. `hf_name` is the module path inside `h.{i}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Linear {
    AttnQkv,
    AttnProj,
    MlpFc,
    MlpProj,
}

impl Linear {
    pub const ALL: [Linear; 4] = [Linear::AttnQkv, Linear::AttnProj, Linear::MlpFc, Linear::MlpProj];

    pub fn hf_name(self) -> &'static str {
        match self {
            Linear::AttnQkv => "attn.c_attn",
            Linear::AttnProj => "attn.c_proj",
            Linear::MlpFc => "mlp.c_fc",
            Linear::MlpProj => "mlp.c_proj",
        }
    }

    /// (in, out) features for a model of width `c`.
    pub fn dims(self, c: usize) -> (usize, usize) {
        match self {
            Linear::AttnQkv => (c, 3 * c),
            Linear::AttnProj => (c, c),
            Linear::MlpFc => (c, 4 * c),
            Linear::MlpProj => (4 * c, c),
        }
    }
}
