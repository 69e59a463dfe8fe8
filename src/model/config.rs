//! The model's shape, read from a Hugging Face GPT-2 `config.json`.

use super::ModelError;

#[derive(Clone, Debug, PartialEq)]
pub struct Gpt2Config {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub vocab_size: usize,
    pub n_positions: usize,
    pub layer_norm_epsilon: f32,
    pub eos_token_id: u32,
    pub bos_token_id: u32,
    /// The original config.json, kept so `--full` output and merges write it back unchanged
    /// apart from what we know.
    pub raw: serde_json::Value,
}

impl Gpt2Config {
    /// Parses config.json text. `path` is used in error messages only.
    pub fn from_json(text: &str, path: &str) -> Result<Gpt2Config, ModelError> {
        let raw: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ModelError::Json { path: path.into(), msg: e.to_string() })?;
        let obj = raw.as_object().ok_or_else(|| ModelError::Config { path: path.into(), msg: "not a JSON object".into() })?;
        let field = |names: &[&str]| -> Result<usize, ModelError> {
            for n in names {
                if let Some(v) = obj.get(*n) {
                    return v.as_u64().filter(|x| *x > 0).map(|x| x as usize).ok_or_else(|| ModelError::Config {
                        path: path.into(),
                        msg: format!("field '{n}' must be a positive integer, found {v}"),
                    });
                }
            }
            Err(ModelError::Config { path: path.into(), msg: format!("missing field '{}'", names[0]) })
        };
        let n_layer = field(&["n_layer", "num_hidden_layers"])?;
        let n_head = field(&["n_head", "num_attention_heads"])?;
        let n_embd = field(&["n_embd", "hidden_size"])?;
        let vocab_size = field(&["vocab_size"])?;
        let n_positions = field(&["n_positions", "max_position_embeddings"])?;
        if n_embd % n_head != 0 {
            return Err(ModelError::Config {
                path: path.into(),
                msg: format!("n_embd {n_embd} is not a multiple of n_head {n_head}"),
            });
        }
        let eps = obj.get("layer_norm_epsilon").and_then(|v| v.as_f64()).unwrap_or(1e-5) as f32;
        let token = |name: &str| -> Result<u32, ModelError> {
            match obj.get(name) {
                None | Some(serde_json::Value::Null) => Ok((vocab_size - 1) as u32),
                Some(v) => v
                    .as_u64()
                    .filter(|x| (*x as usize) < vocab_size)
                    .map(|x| x as u32)
                    .ok_or_else(|| ModelError::Config {
                        path: path.into(),
                        msg: format!("'{name}' must be a token id below vocab_size {vocab_size}, found {v}"),
                    }),
            }
        };
        let eos_token_id = token("eos_token_id")?;
        let bos_token_id = token("bos_token_id")?;
        if let Some(act) = obj.get("activation_function").and_then(|v| v.as_str()) {
            if !matches!(act, "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast") {
                return Err(ModelError::Config {
                    path: path.into(),
                    msg: format!("activation_function '{act}' is not supported (webtune implements the tanh GELU, 'gelu_new')"),
                });
            }
        }
        Ok(Gpt2Config {
            n_layer,
            n_head,
            n_embd,
            vocab_size,
            n_positions,
            layer_norm_epsilon: eps,
            eos_token_id,
            bos_token_id,
            raw,
        })
    }

    /// A config for tests and from-scratch models.
    pub fn new(n_layer: usize, n_head: usize, n_embd: usize, vocab_size: usize, n_positions: usize) -> Gpt2Config {
        let raw = serde_json::json!({
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "n_layer": n_layer, "n_head": n_head, "n_embd": n_embd,
            "vocab_size": vocab_size, "n_positions": n_positions, "n_ctx": n_positions,
            "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
            "bos_token_id": vocab_size - 1, "eos_token_id": vocab_size - 1,
            "tie_word_embeddings": true,
        });
        Gpt2Config {
            n_layer,
            n_head,
            n_embd,
            vocab_size,
            n_positions,
            layer_norm_epsilon: 1e-5,
            eos_token_id: (vocab_size - 1) as u32,
            bos_token_id: (vocab_size - 1) as u32,
            raw,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// The config.json text to write next to saved weights.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.raw).unwrap_or_else(|_| "{}".into())
    }
}
