//! LoRA adapters: config, PEFT-style target matching and init, and PEFT's on-disk format
//! (adapter_config.json + adapter_model.safetensors, tensors
//! `base_model.model.transformer.h.{i}.{module}.lora_A.weight` [r, in] and `lora_B.weight` [out, r]).
//! The forward adds `scale * (x · Aᵀ) · Bᵀ` to the base layer's output, scale = alpha / r.

use super::{Gpt2Config, HostTensor, Linear, ModelError};

#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f32,
    /// PEFT target names as the user gave them (`c_attn`, `c_proj`, `attn.c_proj`, ...).
    pub targets: Vec<String>,
    pub dropout: f32,
}

impl LoraConfig {
    pub fn scale(&self) -> f32 {
        self.alpha / self.r as f32
    }
}

/// One adapted linear layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraModule {
    pub layer: usize,
    pub linear: Linear,
    /// [r, in]
    pub a: HostTensor,
    /// [out, r]
    pub b: HostTensor,
}

impl LoraModule {
    /// Canonical module name, e.g. `h.0.attn.c_attn`.
    pub fn name(&self) -> String {
        format!("h.{}.{}", self.layer, self.linear.hf_name())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LoraAdapter {
    pub config: LoraConfig,
    /// Sorted by (layer, linear).
    pub modules: Vec<LoraModule>,
}

impl LoraAdapter {
    pub fn scale(&self) -> f32 {
        self.config.scale()
    }

    pub fn get(&self, layer: usize, linear: Linear) -> Option<&LoraModule> {
        self.modules.iter().find(|m| m.layer == layer && m.linear == linear)
    }
}
