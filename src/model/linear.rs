//! What every family shares on the GPU: parameters (a tensor and, when trained, its gradient)
//! and a linear layer with its LoRA adapter, forward and backward side by side.
//!
//! A linear layer is y [N, out] = x [N, in] · W (+ bias) (+ s · (x · Aᵀ) · Bᵀ), s = alpha / r,
//! with W stored as the checkpoint stores it: [in, out] for GPT-2's Conv1D, [out, in] for an
//! nn.Linear (the Llama family). A is [r, in], B [out, r] either way (PEFT's layout).

use std::ops::Range;

use super::lora::LoraModule;
use super::weights::{source_error, upload_tensor};
use super::{HostTensor, Linear, WeightSource};
use crate::gpu::{Gpu, GpuError, MemoryClass, Program, Tensor};
use crate::kernels::matmul::{matmul, Matmul};
use crate::kernels::{reduce, RowChunk};

/// What is trained: nothing (inference), the LoRA adapter, or every tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trainable {
    None,
    Lora,
    Full,
}

/// A parameter on the GPU; `grad` exists only when it is trained.
pub struct Param {
    pub name: String,
    pub value: Tensor,
    pub grad: Option<Tensor>,
}

impl Param {
    /// An f32 parameter (norms, biases, positions, LoRA pairs, and any trained tensor).
    pub fn new(gpu: &Gpu, name: &str, t: &HostTensor, trainable: bool) -> Result<Param, GpuError> {
        Param::upload(gpu, name, name, &t.shape, &t.data, trainable, false)
    }

    /// A base weight matrix that kernels read only as a matmul operand or an embedding table:
    /// stored in f16 when frozen and the GPU stores frozen weights so ([`Gpu::half_weights`]).
    pub fn matrix(gpu: &Gpu, name: &str, t: &HostTensor, trainable: bool) -> Result<Param, GpuError> {
        Param::upload(gpu, name, name, &t.shape, &t.data, trainable, stores_half(gpu, trainable))
    }

    /// Uploads `data` as the value (f16 when `half`) under `label`, with an f32 gradient when trained.
    fn upload(gpu: &Gpu, name: &str, label: &str, shape: &[usize], data: &[f32], trainable: bool, half: bool) -> Result<Param, GpuError> {
        Param::make(gpu, name, label, shape, trainable, half, |value| {
            gpu.write_at(value, 0, data);
            Ok(())
        })
    }

    /// Rows `rows` of the [_, cols] tensor `name` of `w` as a parameter (f16 when `half`) labelled
    /// `label`, read and uploaded a piece of rows at a time ([`PIECE_BYTES`] of f32), so the host
    /// holds one piece, not the table, when `w` reads from files.
    #[allow(clippy::too_many_arguments)]
    fn upload_rows(gpu: &Gpu, w: &dyn WeightSource, name: &str, label: &str, rows: Range<usize>, cols: usize, trainable: bool, half: bool) -> Result<Param, GpuError> {
        Param::make(gpu, name, label, &[rows.len(), cols], trainable, half, |value| {
            // an even number of rows a piece, so f16 pieces start on whole 4-byte words
            let step = ((PIECE_BYTES / (4 * cols.max(1))).max(2) / 2) * 2;
            for p0 in (0..rows.len()).step_by(step) {
                let p1 = (p0 + step).min(rows.len());
                let data = w.rows(name, rows.start + p0..rows.start + p1).map_err(source_error)?;
                gpu.write_at(value, p0 * cols, &data);
            }
            Ok(())
        })
    }

    /// A zero value (f16 when `half`) under `label`, filled by `fill`, and an f32 gradient when trained.
    fn make(
        gpu: &Gpu,
        name: &str,
        label: &str,
        shape: &[usize],
        trainable: bool,
        half: bool,
        fill: impl FnOnce(&Tensor) -> Result<(), GpuError>,
    ) -> Result<Param, GpuError> {
        let class = if trainable { MemoryClass::Trainable } else { MemoryClass::Weights };
        let value = gpu.in_class(class, || if half { gpu.zeros_half(label, shape) } else { gpu.zeros(label, shape) })?;
        fill(&value)?;
        let grad = match trainable {
            true => Some(gpu.in_class(MemoryClass::Gradients, || gpu.zeros(&format!("grad {label}"), shape))?),
            false => None,
        };
        Ok(Param { name: name.to_string(), value, grad })
    }

    /// The same tensor without a gradient (the buffers are shared, nothing is copied).
    pub fn frozen(&self) -> Param {
        Param { name: self.name.clone(), value: self.value.shared(), grad: None }
    }
}

/// Bytes of f32 a table is read in when it is uploaded ([`Param::upload_rows`]).
const PIECE_BYTES: usize = 4 << 20;

/// Whether a base weight matrix is stored in f16: frozen, on a GPU set to ([`Gpu::half_weights`]).
fn stores_half(gpu: &Gpu, trainable: bool) -> bool {
    !trainable && gpu.half_weights()
}

/// A [rows, cols] parameter that may be larger than one storage binding (a vocabulary's embedding
/// or LM head): stored as row chunks of at most [`Gpu::max_binding`] bytes each, one part when it
/// fits. Each part is a [`Param`] of its own named like the whole (with its own gradient), so
/// AdamW, the gradient norm and the gradient clears treat the chunks as parameters; everything
/// that writes a file joins them back ([`join_parts`]), so files keep the whole tensor.
pub struct RowParam {
    pub name: String,
    /// [rows, cols] of the whole tensor.
    pub shape: Vec<usize>,
    /// Consecutive row chunks from row 0, each [rows_j, cols].
    pub parts: Vec<Param>,
}

impl RowParam {
    /// Uploads tensor `name` ([rows, cols]) of `w` as row chunks of at most the GPU's binding
    /// limit each, reading one chunk at a time (so the host never holds more than a chunk as f32
    /// when `w` reads from files); fails, naming the tensor, when not even one row fits a binding.
    pub fn new(gpu: &Gpu, w: &dyn WeightSource, name: &str, trainable: bool) -> Result<RowParam, GpuError> {
        let shape = w.shape(name).ok_or_else(|| GpuError::Invalid(format!("the model's weights: missing tensor '{name}'")))?.to_vec();
        let (rows, cols) = match shape[..] {
            [rows, cols] => (rows, cols),
            _ => return Err(GpuError::Invalid(format!("{name}: shape {shape:?} is not a [rows, cols] matrix"))),
        };
        let half = stores_half(gpu, trainable);
        let per = gpu.rows_per_binding(name, rows, cols, if half { 2 } else { 4 })?;
        let mut parts = Vec::with_capacity(rows.div_ceil(per));
        for r0 in (0..rows.max(1)).step_by(per) {
            let r1 = (r0 + per).min(rows);
            let label = if per >= rows { name.to_string() } else { format!("{name} rows {r0}..{r1}") };
            parts.push(Param::upload_rows(gpu, w, name, &label, r0..r1, cols, trainable, half)?);
        }
        Ok(RowParam { name: name.to_string(), shape, parts })
    }

    /// The same tensor without gradients (the buffers are shared, nothing is copied).
    pub fn frozen(&self) -> RowParam {
        RowParam { name: self.name.clone(), shape: self.shape.clone(), parts: self.parts.iter().map(Param::frozen).collect() }
    }

    pub fn cols(&self) -> usize {
        self.shape.get(1).copied().unwrap_or(1)
    }

    /// The value's chunks, for the kernels.
    pub fn values(&self) -> Vec<RowChunk<'_>> {
        RowChunk::list(&self.parts.iter().map(|p| &p.value).collect::<Vec<_>>(), self.cols())
    }

    /// The gradient's chunks (the values' rows), when trained.
    pub fn grads(&self) -> Option<Vec<RowChunk<'_>>> {
        let grads: Option<Vec<&Tensor>> = self.parts.iter().map(|p| p.grad.as_ref()).collect();
        grads.map(|g| RowChunk::list(&g, self.cols()))
    }

    pub fn is_trained(&self) -> bool {
        self.parts.iter().all(|p| p.grad.is_some())
    }

    /// Whether the tensor is split over more than one buffer.
    pub fn is_chunked(&self) -> bool {
        self.parts.len() > 1
    }
}

/// Joins consecutive entries of the same name (the row chunks of one [`RowParam`], in order)
/// into one tensor, concatenating their rows; other entries pass through unchanged.
pub fn join_parts(list: Vec<(String, HostTensor)>) -> Vec<(String, HostTensor)> {
    let mut out: Vec<(String, HostTensor)> = Vec::with_capacity(list.len());
    for (name, t) in list {
        match out.last_mut() {
            Some((last, whole)) if *last == name && !t.shape.is_empty() && whole.shape.len() == t.shape.len() && whole.shape[1..] == t.shape[1..] => {
                whole.shape[0] += t.shape[0];
                whole.data.extend_from_slice(&t.data);
            }
            _ => out.push((name, t)),
        }
    }
    out
}

/// The LoRA pair of one linear layer: A [r, in], B [out, r].
pub struct LoraParams {
    pub a: Param,
    pub b: Param,
    pub r: usize,
}

/// A linear layer of a block: weight, optional bias, optional LoRA pair.
pub struct LinearParams {
    pub kind: Linear,
    pub w: Param,
    pub b: Option<Param>,
    pub lora: Option<LoraParams>,
    pub fin: usize,
    pub fout: usize,
    /// LoRA's alpha / r (0 without an adapter).
    pub scale: f32,
}

impl LinearParams {
    /// Uploads block `layer`'s `kind` layer from `w`, with its LoRA pair from `adapter` when it has
    /// one. `full`: the base weight and bias are trained; `lora`: the LoRA pair is.
    pub fn new(
        gpu: &Gpu,
        w: &dyn WeightSource,
        layer: usize,
        kind: Linear,
        adapter: Option<(&LoraModule, f32)>,
        full: bool,
        lora: bool,
    ) -> Result<LinearParams, GpuError> {
        let cfg = w.config();
        let (fin, fout) = kind.dims(cfg);
        let name = cfg.block_name(layer, kind.hf_name());
        let weight = Param::matrix(gpu, &format!("{name}.weight"), &*upload_tensor(w, &format!("{name}.weight"))?, full)?;
        let bias = match kind.has_bias(cfg) {
            true => Some(Param::new(gpu, &format!("{name}.bias"), &*upload_tensor(w, &format!("{name}.bias"))?, full)?),
            false => None,
        };
        let (lora_params, scale) = match adapter {
            Some((m, scale)) => (
                Some(LoraParams {
                    a: Param::new(gpu, &format!("{name}.lora_A"), &m.a, lora)?,
                    b: Param::new(gpu, &format!("{name}.lora_B"), &m.b, lora)?,
                    r: m.a.shape[0],
                }),
                scale,
            ),
            None => (None, 0.0),
        };
        Ok(LinearParams { kind, w: weight, b: bias, lora: lora_params, fin, fout, scale })
    }

    /// The layer without its adapter or gradients, sharing its buffers.
    pub fn frozen(&self) -> LinearParams {
        LinearParams {
            kind: self.kind,
            w: self.w.frozen(),
            b: self.b.as_ref().map(Param::frozen),
            lora: None,
            fin: self.fin,
            fout: self.fout,
            scale: 0.0,
        }
    }

    /// Its parameters: weight, bias (base first), then the LoRA pair.
    pub fn base_params(&self) -> impl Iterator<Item = &Param> {
        std::iter::once(&self.w).chain(self.b.as_ref())
    }

    pub fn lora_params(&self) -> impl Iterator<Item = &Param> {
        self.lora.iter().flat_map(|l| [&l.a, &l.b])
    }

    /// x · Wᵀ-or-W as the weight is stored.
    fn weight_product(&self, n: usize) -> Matmul {
        if self.kind.conv1d() {
            Matmul::new(n, self.fout, self.fin)
        } else {
            Matmul::new(n, self.fout, self.fin).tb()
        }
    }

    /// y [N, out] = x [N, in] · W + bias, plus s · (x · Aᵀ) · Bᵀ when adapted (xa = x · Aᵀ [N, r] is kept).
    pub fn forward(&self, gpu: &Gpu, prog: &mut Program, x: &Tensor, y: &Tensor, xa: Option<&Tensor>, n: usize) {
        matmul(gpu, prog, &self.weight_product(n), x, &self.w.value, y, self.b.as_ref().map(|b| &b.value));
        if let (Some(lo), Some(xa)) = (&self.lora, xa) {
            matmul(gpu, prog, &Matmul::new(n, lo.r, self.fin).tb(), x, &lo.a.value, xa, None);
            matmul(gpu, prog, &Matmul::new(n, self.fout, lo.r).tb().alpha(self.scale).accumulate(), xa, &lo.b.value, y, None);
        }
    }

    /// From dy [N, out]: dx [N, in] (overwritten, or added to with `accumulate`), and the layer's
    /// trained gradients accumulated: dW += xᵀ·dy (or dyᵀ·x for [out, in]), dbias += Σrows dy;
    /// LoRA: dxa = s·dy·B, dB += s·dyᵀ·xa, dA += dxaᵀ·x, dx += dxa·A. `dxa` is [N, ≥ r] scratch.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        gpu: &Gpu,
        prog: &mut Program,
        dy: &Tensor,
        x: &Tensor,
        xa: Option<&Tensor>,
        dx: &Tensor,
        accumulate: bool,
        dxa: &Tensor,
        n: usize,
    ) {
        let (fin, fout) = (self.fin, self.fout);
        let dx_product = if self.kind.conv1d() { Matmul::new(n, fin, fout).tb() } else { Matmul::new(n, fin, fout) };
        let dx_product = if accumulate { dx_product.accumulate() } else { dx_product };
        matmul(gpu, prog, &dx_product, dy, &self.w.value, dx, None);
        if let Some(gw) = &self.w.grad {
            if self.kind.conv1d() {
                matmul(gpu, prog, &Matmul::new(fin, fout, n).ta().accumulate(), x, dy, gw, None);
            } else {
                matmul(gpu, prog, &Matmul::new(fout, fin, n).ta().accumulate(), dy, x, gw, None);
            }
        }
        if let Some(gb) = self.b.as_ref().and_then(|b| b.grad.as_ref()) {
            reduce::sum_rows(gpu, prog, dy, gb, n, fout, true);
        }
        if let (Some(lo), Some(xa)) = (&self.lora, xa) {
            let (s, r) = (self.scale, lo.r);
            matmul(gpu, prog, &Matmul::new(n, r, fout).alpha(s), dy, &lo.b.value, dxa, None);
            if let (Some(ga), Some(gb)) = (&lo.a.grad, &lo.b.grad) {
                matmul(gpu, prog, &Matmul::new(fout, r, n).ta().alpha(s).accumulate(), dy, xa, gb, None);
                matmul(gpu, prog, &Matmul::new(r, fin, n).ta().accumulate(), dxa, x, ga, None);
            }
            matmul(gpu, prog, &Matmul::new(n, fin, r).accumulate(), dxa, &lo.a.value, dx, None);
        }
    }

    /// The adapter module of this layer read back (layer `layer`), if it has one.
    pub async fn download_lora(&self, gpu: &Gpu, layer: usize) -> Result<Option<LoraModule>, GpuError> {
        let Some(lo) = &self.lora else { return Ok(None) };
        Ok(Some(LoraModule {
            layer,
            linear: self.kind,
            a: HostTensor::new(&lo.a.value.shape, gpu.read(&lo.a.value).await?),
            b: HostTensor::new(&lo.b.value.shape, gpu.read(&lo.b.value).await?),
        }))
    }
}

/// x · Aᵀ [N, r] scratch for a layer, when it is adapted (kept from forward for backward).
pub fn lora_scratch(gpu: &Gpu, lin: &LinearParams, label: &str, n: usize) -> Result<Option<Tensor>, GpuError> {
    match &lin.lora {
        Some(lo) => Ok(Some(gpu.zeros(&format!("{label}.lora_xa"), &[n, lo.r])?)),
        None => Ok(None),
    }
}
