//! LoRA adapters for llama.cpp: the GGUF file llama.cpp's `convert_lora_to_gguf.py` writes for a
//! PEFT adapter, made from a [`LoraAdapter`] and its base [`ModelConfig`], and the small GGUF v3
//! writer it needs. llama.cpp loads it with `llama-cli -m base.gguf --lora adapter.gguf`.
//!
//! What the converter does (read in, and checked against, the copy vendored by llama-cpp-python
//! 0.3.36: llama.cpp 0c1e57098, gguf-py 0.19.0; `tools/check_gguf.py`), and so what this does:
//! - Metadata, in this order: `general.architecture` (the base model's llama.cpp architecture:
//!   `llama`, `qwen2`, `qwen3`, `gpt2`), `general.type` "adapter", `adapter.type` "lora",
//!   `general.name`, `adapter.lora.alpha` (f32), `general.quantization_version` 2 (u32). No
//!   `general.alignment`: GGUF's default, 32, applies. (The converter also copies descriptive
//!   keys it guesses from the adapter folder's README.md — `general.tags`, `general.base_model.*`
//!   — and title-cases the folder name for `general.name`; llama.cpp reads none of them.)
//! - Tensors `blk.{i}.{attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down}.weight.lora_a`
//!   = PEFT's `lora_A` [r, in] as stored (GGUF dims, fastest first: [in, r]) and `.lora_b` =
//!   `lora_B` [out, r] (dims [r, out]). llama.cpp adds `alpha / r · B·(A·x)` to `W·x`, W having
//!   dims [in, out], and refuses a pair whose `lora_a` dims do not start with `in`.
//! - Llama (`model_type` "llama": `LlamaModel` in the converter): the q_proj and k_proj weights go
//!   from Hugging Face's rotary layout (each head's two halves) to llama.cpp's (interleaved pairs):
//!   in each head of d rows, row j·d/2 + i moves to 2i + j. For an adapter the converter permutes
//!   the rows of `lora_B` (`LoraTorchTensor` reshapes and swaps B only); `lora_A` is unchanged.
//!   q uses `num_attention_heads`, k `num_key_value_heads`. Qwen2 and Qwen3 are not permuted.
//! - GPT-2 (c_attn -> `attn_qkv`, attn.c_proj -> `attn_output`, c_fc -> `ffn_up`, mlp.c_proj ->
//!   `ffn_down`): llama.cpp stores these weights transposed from HF's Conv1D [in, out] to dims
//!   [in, out] like every other family, so the right pair is again `lora_A`, `lora_B` as stored.
//!   The converter applies its Conv1D transpose to the pair as if it were the weight and writes
//!   `lora_a` = Bᵀ, `lora_b` = Aᵀ, which llama.cpp's loader rejects ("has incorrect shape") where
//!   in != out and applies transposed where in == out. We write the pair llama.cpp computes with;
//!   `tools/check_gguf.py` checks it equals the converter's with that swap undone.
//! - Tensor order: by PEFT tensor name (the converter's order: it reads the safetensors file's
//!   sorted names). Data f32, or every tensor f16 (`--outtype f16`, rounded to nearest even).
//!
//! The GGUF v3 container (little-endian): magic `GGUF`, version u32 3, tensor count u64, metadata
//! count u64; each metadata entry a string key (u64 length + UTF-8), a u32 value type and the
//! value; each tensor's info: name, u32 dims count, u64 dims (fastest first), u32 ggml type, u64
//! data offset (from the data section, a multiple of 32); zero padding to 32; then each tensor's
//! data, padded to 32.

use std::fmt;
use std::str::FromStr;

use super::{Family, Linear, LoraAdapter, ModelConfig, ModelError};

/// GGUF's default data alignment (no `general.alignment` key).
pub const ALIGNMENT: usize = 32;
const MAGIC: &[u8; 4] = b"GGUF";
const VERSION: u32 = 3;
/// gguf-py's `GGML_QUANT_VERSION`, which the converter writes as `general.quantization_version`.
const QUANT_VERSION: u32 = 2;

/// The tensors' data type in the file (`--outtype`; the converter's default is f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GgufDtype {
    #[default]
    F32,
    F16,
}

impl GgufDtype {
    /// ggml's type id (`GGML_TYPE_F32` 0, `GGML_TYPE_F16` 1).
    pub fn ggml_type(self) -> u32 {
        match self {
            GgufDtype::F32 => 0,
            GgufDtype::F16 => 1,
        }
    }

    pub fn size(self) -> usize {
        match self {
            GgufDtype::F32 => 4,
            GgufDtype::F16 => 2,
        }
    }
}

impl FromStr for GgufDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<GgufDtype, String> {
        match s {
            "f32" => Ok(GgufDtype::F32),
            "f16" => Ok(GgufDtype::F16),
            _ => Err(format!("'{s}' is not an output type: use f32 or f16")),
        }
    }
}

impl fmt::Display for GgufDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GgufDtype::F32 => "f32",
            GgufDtype::F16 => "f16",
        })
    }
}

/// A metadata value of the types the adapter needs (GGUF type ids 4, 6, 8).
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U32(u32),
    F32(f32),
    Str(String),
}

/// One tensor: its name, dims fastest first (GGUF's order: a row-major [rows, cols] array has
/// dims [cols, rows]) and its data, already in `dtype`.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub dtype: GgufDtype,
    pub data: Vec<u8>,
}

/// A whole GGUF v3 file (see the module's documentation).
pub fn write_gguf(metadata: &[(&str, GgufValue)], tensors: &[GgufTensor]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    fn pad(out: &mut Vec<u8>) {
        out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
    }
    let mut out = Vec::new();
    out.extend(MAGIC);
    out.extend(VERSION.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        string(&mut out, key);
        match value {
            GgufValue::U32(x) => {
                out.extend(4u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            GgufValue::F32(x) => {
                out.extend(6u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            GgufValue::Str(s) => {
                out.extend(8u32.to_le_bytes());
                string(&mut out, s);
            }
        }
    }
    let mut offset = 0usize;
    for t in tensors {
        string(&mut out, &t.name);
        out.extend((t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(t.dtype.ggml_type().to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offset += t.data.len().next_multiple_of(ALIGNMENT);
    }
    pad(&mut out);
    out.reserve(offset);
    for t in tensors {
        out.extend(&t.data);
        pad(&mut out);
    }
    out
}

// ---------------------------------------------------------------------------------------
// A LoRA adapter as llama.cpp's converter writes it.

/// llama.cpp's architecture name for a base model (`general.architecture`).
pub fn architecture(model: &ModelConfig) -> Result<&'static str, ModelError> {
    match model.model_type.as_str() {
        "llama" => Ok("llama"),
        "qwen2" => Ok("qwen2"),
        "qwen3" => Ok("qwen3"),
        "gpt2" => Ok("gpt2"),
        t => Err(ModelError::Lora(format!("no llama.cpp architecture is known for model_type '{t}'"))),
    }
}

/// llama.cpp's name of a block's linear layer (without `blk.{i}.` and `.weight`).
pub fn llama_cpp_name(linear: Linear) -> &'static str {
    match linear {
        Linear::AttnQkv => "attn_qkv",
        Linear::AttnProj | Linear::O => "attn_output",
        Linear::MlpFc | Linear::Up => "ffn_up",
        Linear::MlpProj | Linear::Down => "ffn_down",
        Linear::Q => "attn_q",
        Linear::K => "attn_k",
        Linear::V => "attn_v",
        Linear::Gate => "ffn_gate",
    }
}

/// The heads whose rows the converter permutes from HF's rotary layout to llama.cpp's for this
/// layer (`LlamaModel.permute`): Some(heads) for a Llama model's q_proj (query heads) and k_proj
/// (key/value heads), else None.
fn rope_permute_heads(model: &ModelConfig, linear: Linear) -> Option<usize> {
    if model.model_type != "llama" {
        return None;
    }
    match linear {
        Linear::Q => Some(model.n_head),
        Linear::K => Some(model.n_kv_head),
        _ => None,
    }
}

/// `rows` (each `cols` long, row-major) in llama.cpp's rotary order: the rows form `heads` heads
/// of 2·half rows, and in each head row j·half + i moves to 2i + j.
fn permute_rows(data: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let half = rows / heads / 2;
    let mut out = vec![0.0; data.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                let (from, to) = (h * 2 * half + j * half + i, h * 2 * half + 2 * i + j);
                out[to * cols..(to + 1) * cols].copy_from_slice(&data[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

/// Refuses a value that is not finite, or not in `dtype`; `what` names the tensor.
fn check_values(values: &[f32], dtype: GgufDtype, what: &str) -> Result<(), ModelError> {
    let bad = values.iter().position(|x| !x.is_finite() || (dtype == GgufDtype::F16 && !half::f16::from_f32(*x).is_finite()));
    match bad {
        None => Ok(()),
        Some(i) => {
            let why = if values[i].is_finite() { "is beyond f16's range (65504): write f32" } else { "is not finite" };
            Err(ModelError::Lora(format!("{what}: value {} at index {i} {why}", values[i])))
        }
    }
}

/// The bytes of `values` in `dtype` (f16: rounded to nearest even).
fn encode(values: &[f32], dtype: GgufDtype) -> Vec<u8> {
    match dtype {
        GgufDtype::F32 => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        GgufDtype::F16 => values.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
    }
}

impl LoraAdapter {
    /// The GGUF file llama.cpp's `convert_lora_to_gguf.py` writes for this adapter of `model`
    /// (see the module's documentation); `name` becomes `general.name`. Every module is checked
    /// against `model` first.
    pub fn to_gguf(&self, model: &ModelConfig, dtype: GgufDtype, name: &str) -> Result<Vec<u8>, ModelError> {
        let arch = architecture(model)?;
        let c = &self.config;
        if c.family != model.family {
            return Err(ModelError::Lora(format!(
                "the adapter is for a {} model but the base model is {}",
                if c.family == Family::Gpt2 { "GPT-2" } else { "Llama-family" },
                model.model_type
            )));
        }
        let r = c.r;
        let mut modules: Vec<_> = self.modules.iter().collect();
        for m in &modules {
            let (fin, fout) = m.linear.dims(model);
            let ok = m.layer < model.n_layer
                && Linear::of(model.family).contains(&m.linear)
                && m.a.shape == [r, fin]
                && m.b.shape == [fout, r]
                && m.a.data.len() == r * fin
                && m.b.data.len() == fout * r;
            if !ok {
                return Err(ModelError::Lora(format!(
                    "LoRA module {}: A {:?} / B {:?} do not fit rank {r} of a {} model with n_layer {} (A must be \
                     [{r}, {fin}], B [{fout}, {r}])",
                    m.name(),
                    m.a.shape,
                    m.b.shape,
                    model.model_type,
                    model.n_layer,
                )));
            }
            check_values(&m.a.data, dtype, &format!("LoRA module {} lora_A", m.name()))?;
            check_values(&m.b.data, dtype, &format!("LoRA module {} lora_B", m.name()))?;
            if let Some(heads) = rope_permute_heads(model, m.linear) {
                if heads == 0 || fout % (2 * heads) != 0 {
                    return Err(ModelError::Lora(format!(
                        "LoRA module {}: its {fout} output rows are not {heads} heads of an even size, which \
                         llama.cpp's rotary layout needs",
                        m.name()
                    )));
                }
            }
        }
        // The converter's order: PEFT's tensor names, sorted (their common prefix aside).
        modules.sort_by_cached_key(|m| model.block_name(m.layer, m.linear.hf_name()));
        if let Some(w) = modules.windows(2).find(|w| (w[0].layer, w[0].linear) == (w[1].layer, w[1].linear)) {
            return Err(ModelError::Lora(format!("LoRA module {} appears twice", w[0].name())));
        }
        let mut tensors = Vec::with_capacity(2 * modules.len());
        for m in modules {
            let (fin, fout) = m.linear.dims(model);
            let base = format!("blk.{}.{}.weight", m.layer, llama_cpp_name(m.linear));
            let b = match rope_permute_heads(model, m.linear) {
                Some(heads) => permute_rows(&m.b.data, fout, r, heads),
                None => m.b.data.clone(),
            };
            for (suffix, dims, values) in [("lora_a", [fin, r], &m.a.data), ("lora_b", [r, fout], &b)] {
                let dims = dims.iter().map(|&d| d as u64).collect();
                tensors.push(GgufTensor { name: format!("{base}.{suffix}"), dims, dtype, data: encode(values, dtype) });
            }
        }
        let metadata = [
            ("general.architecture", GgufValue::Str(arch.into())),
            ("general.type", GgufValue::Str("adapter".into())),
            ("adapter.type", GgufValue::Str("lora".into())),
            ("general.name", GgufValue::Str(name.into())),
            ("adapter.lora.alpha", GgufValue::F32(c.alpha)),
            ("general.quantization_version", GgufValue::U32(QUANT_VERSION)),
        ];
        Ok(write_gguf(&metadata, &tensors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_rows_interleaves_each_heads_halves() {
        // 2 heads of 4 rows, 1 column: head rows [a0 a1 b0 b1] -> [a0 b0 a1 b1].
        let data: Vec<f32> = (0..8).map(|x| x as f32).collect();
        assert_eq!(permute_rows(&data, 8, 1, 2), [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        // 1 head of 6 rows, 2 columns: rows [0 1 2 | 3 4 5] -> [0 3 1 4 2 5].
        let data: Vec<f32> = (0..12).map(|x| x as f32).collect();
        let want = [0.0, 1.0, 6.0, 7.0, 2.0, 3.0, 8.0, 9.0, 4.0, 5.0, 10.0, 11.0];
        assert_eq!(permute_rows(&data, 6, 2, 1), want);
    }

    #[test]
    fn outtype_parses_and_names_the_bad_one() {
        assert_eq!("f16".parse::<GgufDtype>(), Ok(GgufDtype::F16));
        assert_eq!("f32".parse::<GgufDtype>(), Ok(GgufDtype::F32));
        assert_eq!("bf16".parse::<GgufDtype>().unwrap_err(), "'bf16' is not an output type: use f32 or f16");
    }
}
