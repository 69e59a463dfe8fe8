//! webtune: fine-tune GPT-2-family models on the user's own device with WGSL kernels
//! on wgpu (Vulkan, Metal, DX12) and WebGPU (wasm32).
//!
//! Layers: [`gpu`] (device, tensors, programs) -> [`kernels`] (one file per shader) ->
//! [`model`] (config, weights, GPT-2 forward/backward, LoRA) -> [`train`] (AdamW,
//! trainer). [`data`] turns files into batches; [`reference`] is the plain-Rust CPU
//! oracle that tests compare the GPU against.

#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod data;
pub mod flags;
pub mod generate;
pub mod gpu;
pub mod json;
pub mod kernels;
pub mod memory;
pub mod model;
pub mod reference;
pub mod rng;
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod web;

/// Any error webtune reports to a user; each layer has its own type underneath.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Gpu(#[from] gpu::GpuError),
    #[error(transparent)]
    Model(#[from] model::ModelError),
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Train(#[from] train::TrainError),
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
}
