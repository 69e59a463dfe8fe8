//! GPU context: adapter selection, device with the adapter's real limits, tensors
//! (storage buffers with a shape), a pipeline cache, and [`Program`]: a list of
//! prepared dispatches recorded into one command encoder and submitted once.
//!
//! Nothing here blocks or spawns threads, so the same code runs on wasm32 (WebGPU)
//! and natively (Vulkan, Metal, DX12). Native callers drive the futures with
//! `pollster::block_on`.

mod program;
pub mod shaders;
mod tensor;
mod tune;

pub use program::{Dispatch, Kernel, Program};
pub use tensor::{tensor_bytes, tensor_bytes_of, Tensor};
pub use tune::Tuning;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

/// Errors from the GPU layer. Messages say what failed and, where it helps, what to try.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter found{0}")]
    NoAdapter(String),
    #[error("could not open the GPU device: {0}")]
    RequestDevice(String),
    #[error("{what} needs {bytes} bytes but this GPU allows at most {limit} bytes per {kind}")]
    TooLarge { what: String, bytes: u64, limit: u64, kind: &'static str },
    #[error("reading back {0} from the GPU failed: {1}")]
    Readback(String, String),
    #[error("GPU error: {0}")]
    Device(String),
    /// A request the GPU layer refuses before running anything (bad shape, id, length).
    #[error("{0}")]
    Invalid(String),
}

/// What the chosen adapter is and what it allows; `webtune info` prints this.
#[derive(Debug, Clone)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub shader_f16: bool,
}

impl std::fmt::Display for AdapterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}, {}, driver {}); max storage binding {} MiB, max buffer {} MiB, \
             workgroup storage {} KiB, shader-f16 {}",
            self.name,
            self.backend,
            self.device_type,
            self.driver,
            self.max_storage_buffer_binding_size >> 20,
            self.max_buffer_size >> 20,
            self.max_compute_workgroup_storage_size >> 10,
            if self.shader_f16 { "yes" } else { "no" }
        )
    }
}

/// What a tensor is for, as the memory plan (`webtune::train::plan`) names it. The code that
/// allocates says so with [`Gpu::in_class`]; every tensor is recorded with its class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemoryClass {
    /// Base weights that are not trained (and constant tables such as RoPE's).
    Weights,
    /// Parameters that are trained (the LoRA pairs, or every weight in full fine-tuning).
    Trainable,
    /// Their gradients.
    Gradients,
    /// AdamW's m and v, its step scalars and the gradient-norm scratch.
    Optimizer,
    /// The training step's buffers of one (B, T) shape: activations kept for backward, the
    /// backward scratch, the LM head's logits chunk, the batch and the loss history.
    Activations,
    /// The evaluation forward's buffers.
    Eval,
    /// Anything else (generation, benchmarks).
    Other,
}

impl MemoryClass {
    pub const ALL: [MemoryClass; 7] = [
        MemoryClass::Weights,
        MemoryClass::Trainable,
        MemoryClass::Gradients,
        MemoryClass::Optimizer,
        MemoryClass::Activations,
        MemoryClass::Eval,
        MemoryClass::Other,
    ];

    /// The class as a user reads it.
    pub fn name(self) -> &'static str {
        match self {
            MemoryClass::Weights => "frozen weights",
            MemoryClass::Trainable => "trained parameters",
            MemoryClass::Gradients => "gradients",
            MemoryClass::Optimizer => "optimizer state",
            MemoryClass::Activations => "activations",
            MemoryClass::Eval => "eval buffers",
            MemoryClass::Other => "other",
        }
    }

    /// The class as JSON names it.
    pub fn key(self) -> &'static str {
        match self {
            MemoryClass::Weights => "weights",
            MemoryClass::Trainable => "trainable",
            MemoryClass::Gradients => "gradients",
            MemoryClass::Optimizer => "optimizer",
            MemoryClass::Activations => "activations",
            MemoryClass::Eval => "eval",
            MemoryClass::Other => "other",
        }
    }
}

/// How frozen base weights are stored (`--base-weights`, `baseWeights`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaseWeights {
    /// f16 where the GPU has `shader-f16` (CPU adapters keep f32), else f32.
    #[default]
    Auto,
    /// f16; refused on a GPU without `shader-f16`.
    F16,
    /// f32, as the checkpoint's values (numerically as PyTorch fp32).
    F32,
}

impl std::str::FromStr for BaseWeights {
    type Err = String;
    fn from_str(s: &str) -> Result<BaseWeights, String> {
        match s {
            "auto" => Ok(BaseWeights::Auto),
            "f16" => Ok(BaseWeights::F16),
            "f32" => Ok(BaseWeights::F32),
            _ => Err(format!("base weights '{s}' is not one of auto, f16, f32")),
        }
    }
}

/// One tensor created on a device: its label, bytes and class ([`Gpu::allocations`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub label: String,
    pub bytes: u64,
    pub class: MemoryClass,
}

/// A compiled shader variant and naga's validated module of it (for binding reflection;
/// None if naga rejects it, in which case wgpu reports the error when the pipeline is made).
struct Module(wgpu::ShaderModule, Option<(naga::Module, naga::valid::ModuleInfo)>);

/// Device, queue and the caches every kernel shares.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub report: AdapterReport,
    pub limits: wgpu::Limits,
    modules: RefCell<HashMap<String, Rc<Module>>>,
    kernels: RefCell<HashMap<String, Kernel>>,
    first_error: Arc<Mutex<Option<String>>>,
    /// Bytes of every tensor created on this device so far (see [`Gpu::allocated_bytes`]).
    allocated: std::cell::Cell<u64>,
    /// Every tensor created so far, with its class ([`Gpu::allocations`]).
    ledger: RefCell<Vec<Allocation>>,
    /// The class new tensors are recorded under ([`Gpu::in_class`]).
    class: std::cell::Cell<MemoryClass>,
    /// The GPU memory webtune may use, when the user says (`--gpu-memory`); wgpu does not tell.
    budget: std::cell::Cell<Option<u64>>,
    /// A lower binding limit than the device's, set by [`Gpu::limit_binding`] (tests, diagnostics).
    binding_cap: std::cell::Cell<Option<u64>>,
    /// Frozen base weights (linear layers, vocabulary tables) are stored in f16 ([`Gpu::set_half_weights`]).
    half_weights: std::cell::Cell<bool>,
    /// Whether [`Gpu::kernel_trusted`] drops wgpu's runtime checks (native only).
    trusted: bool,
    /// Kernel variants chosen by measuring or by table (src/gpu/tune.rs).
    tune: tune::TuneCache,
}

#[cfg(not(target_arch = "wasm32"))]
fn device_type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

impl Gpu {
    /// Opens a device. `adapter_filter` (e.g. from `WEBTUNE_ADAPTER`) picks the first
    /// adapter whose name contains it (case-insensitive); otherwise a discrete GPU is
    /// preferred over an integrated one, over a software one.
    pub async fn new(adapter_filter: Option<&str>) -> Result<Gpu, GpuError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = Self::pick_adapter(&instance, adapter_filter).await?;
        let info = adapter.get_info();
        let adapter_limits = adapter.limits();
        let features = adapter.features() & wgpu::Features::SHADER_F16;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("webtune"),
                required_features: features,
                required_limits: adapter_limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| GpuError::RequestDevice(e.to_string()))?;
        let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let sink = first_error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = sink.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }));
        let limits = device.limits();
        let report = AdapterReport {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            shader_f16: device.features().contains(wgpu::Features::SHADER_F16),
        };
        Ok(Gpu {
            device,
            queue,
            limits,
            modules: RefCell::new(HashMap::new()),
            kernels: RefCell::new(HashMap::new()),
            first_error,
            allocated: std::cell::Cell::new(0),
            ledger: RefCell::new(Vec::new()),
            class: std::cell::Cell::new(MemoryClass::Other),
            budget: std::cell::Cell::new(None),
            binding_cap: std::cell::Cell::new(None),
            half_weights: std::cell::Cell::new(false),
            trusted: trusted_modules(),
            tune: tune::TuneCache::new(&report),
            report,
        })
    }

    /// Total bytes of the tensors (storage buffers made by `zeros`/`upload`) created on
    /// this device so far. It only grows (dropped tensors are not subtracted), so the
    /// difference across a setup is what that setup holds; uniform buffers, kernel
    /// scratch and the driver's own memory are not included.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.get()
    }

    /// Every tensor created on this device so far, in order: label, bytes, class.
    pub fn allocations(&self) -> Vec<Allocation> {
        self.ledger.borrow().clone()
    }

    /// Runs `f` with the tensors it creates recorded under `class` (the previous class is
    /// restored after, so calls nest).
    pub fn in_class<R>(&self, class: MemoryClass, f: impl FnOnce() -> R) -> R {
        let before = self.class.replace(class);
        let r = f();
        self.class.set(before);
        r
    }

    /// Whether models made from now on store their frozen base weights (the linear layers'
    /// weights and the vocabulary tables that are not trained) in f16: half their memory, the
    /// values rounded to f16 as PyTorch's `.half()` does. LoRA pairs, trained weights, norms,
    /// biases, gradients and optimizer state stay f32, and every product accumulates in f32.
    pub fn half_weights(&self) -> bool {
        self.half_weights.get()
    }

    /// Sets [`half_weights`](Self::half_weights) from the user's choice (`--base-weights`):
    /// `Auto` takes f16 where the device has `shader-f16`; `F16` fails without it.
    pub fn set_base_weights(&self, choice: BaseWeights) -> Result<(), GpuError> {
        let on = match choice {
            BaseWeights::F32 => false,
            // A CPU adapter (lavapipe) keeps f32: its "GPU memory" is the host's, rarely the
            // limit; converting can cost it time (LoRA steps up to 27% slower on lavapipe);
            // and f32 keeps a run's numbers those of PyTorch fp32. `F16` still saves the memory.
            BaseWeights::Auto => self.report.shader_f16 && self.report.device_type != "Cpu",
            BaseWeights::F16 if self.report.shader_f16 => true,
            BaseWeights::F16 => {
                return Err(GpuError::Invalid(format!(
                    "f16 base weights need a GPU with shader-f16, and {} has none: use f32 or auto",
                    self.report.name
                )))
            }
        };
        self.half_weights.set(on);
        Ok(())
    }

    /// The GPU memory webtune may use on this device, when known (see [`Gpu::set_memory_budget`]).
    pub fn memory_budget(&self) -> Option<u64> {
        self.budget.get()
    }

    /// Sets how much GPU memory a run may plan for (`--gpu-memory`, `WEBTUNE_GPU_MEMORY`); wgpu
    /// does not report a GPU's memory, so without it only the per-buffer limits are checked.
    pub fn set_memory_budget(&self, bytes: Option<u64>) {
        self.budget.set(bytes);
    }

    /// Opens a device, honouring `WEBTUNE_ADAPTER` where the platform has an environment, and
    /// `WEBTUNE_MAX_BINDING` (bytes; a testing and diagnostic knob): a binding limit below the
    /// device's, so tensors are split into row chunks as on a GPU that binds that little.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(adapter_filter: Option<&str>) -> Result<Gpu, GpuError> {
        let env = std::env::var("WEBTUNE_ADAPTER").ok();
        let filter = adapter_filter.or(env.as_deref()).filter(|s| !s.is_empty());
        let cap = match std::env::var("WEBTUNE_MAX_BINDING") {
            Ok(s) if !s.trim().is_empty() => Some(s.trim().parse::<u64>().map_err(|_| {
                GpuError::Invalid(format!("WEBTUNE_MAX_BINDING '{s}' is not a number of bytes"))
            })?),
            _ => None,
        };
        let gpu = pollster::block_on(Gpu::new(filter))?;
        if let Some(bytes) = cap {
            gpu.limit_binding(bytes)?;
        }
        Ok(gpu)
    }

    /// Lowers the largest buffer this engine binds to `bytes` (never above the device's own
    /// limit): tensors larger than it are split into row chunks, as on a GPU that binds only
    /// that much. For tests and diagnostics; `bytes` must be a positive multiple of 4.
    pub fn limit_binding(&self, bytes: u64) -> Result<(), GpuError> {
        if bytes < 4 || !bytes.is_multiple_of(4) {
            return Err(GpuError::Invalid(format!(
                "a binding limit of {bytes} bytes is invalid: it must be a positive multiple of 4"
            )));
        }
        self.binding_cap.set(Some(bytes));
        Ok(())
    }

    /// The most bytes one storage buffer may hold here: the device's storage-binding and buffer
    /// limits, and a lower limit set with [`Gpu::limit_binding`].
    pub fn max_binding(&self) -> u64 {
        let device = self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size);
        self.binding_cap.get().map_or(device, |cap| cap.min(device))
    }

    /// Whether the binding limit was lowered below the device's with [`Gpu::limit_binding`].
    pub fn binding_limited(&self) -> bool {
        self.binding_cap.get().is_some_and(|cap| {
            cap < self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
        })
    }

    /// Rows per chunk when a [rows, cols] tensor `what` of `elem_bytes`-byte elements (4, or 2
    /// for f16) is stored as row chunks of at most [`max_binding`](Self::max_binding) bytes each
    /// (all `rows` when it fits one buffer). Fails, naming `what`, when not even one row fits.
    pub fn rows_per_binding(&self, what: &str, rows: usize, cols: usize, elem_bytes: u64) -> Result<usize, GpuError> {
        let limit = self.max_binding();
        let row_bytes = elem_bytes * cols.max(1) as u64;
        if row_bytes > limit {
            return Err(GpuError::TooLarge {
                what: format!("one row of {what} ({cols} values)"),
                bytes: row_bytes,
                limit,
                kind: "storage binding",
            });
        }
        Ok(((limit / row_bytes).min(usize::MAX as u64) as usize).clamp(1, rows.max(1)))
    }

    /// Every adapter the platform offers, as reports (for `webtune info`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn list_adapters() -> Vec<String> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type)
            })
            .collect()
    }

    async fn pick_adapter(instance: &wgpu::Instance, filter: Option<&str>) -> Result<wgpu::Adapter, GpuError> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let mut adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
            if adapters.is_empty() {
                return Err(GpuError::NoAdapter(
                    " (install a Vulkan driver, e.g. `apt-get install mesa-vulkan-drivers`)".into(),
                ));
            }
            if let Some(f) = filter {
                let needle = f.to_lowercase();
                let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
                return match adapters.into_iter().find(|a| a.get_info().name.to_lowercase().contains(&needle)) {
                    Some(a) => Ok(a),
                    None => Err(GpuError::NoAdapter(format!(
                        " matching WEBTUNE_ADAPTER/--gpu '{f}'; available: {}",
                        names.join(", ")
                    ))),
                };
            }
            adapters.sort_by_key(|a| {
                let i = a.get_info();
                let backend = if i.backend == wgpu::Backend::Gl { 1 } else { 0 };
                (device_type_rank(i.device_type), backend)
            });
            Ok(adapters.remove(0))
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = filter;
            instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    ..Default::default()
                })
                .await
                .map_err(|e| GpuError::NoAdapter(format!(": {e} (does this browser support WebGPU?)")))
        }
    }

    /// The first error the device reported since it was opened (validation, out of
    /// memory, lost device), if any. Checked after each submitted step.
    pub fn check(&self) -> Result<(), GpuError> {
        let slot = self.first_error.lock().map_err(|_| GpuError::Device("error sink poisoned".into()))?;
        match slot.as_ref() {
            Some(e) => Err(GpuError::Device(e.clone())),
            None => Ok(()),
        }
    }

    /// The kernel `entry` of a WGSL source: its pipeline and the bindings naga finds it
    /// uses, made once per (`key`, entry, constants) and cached, so `source` is rendered and
    /// reflected only the first time. `key` names the shader variant (file name plus any
    /// template parameters, e.g. "matmul:nt"); `constants` set `override`s.
    pub fn kernel(&self, key: &str, source: &dyn Fn() -> String, entry: &str, constants: &[(&str, f64)]) -> Kernel {
        self.kernel_with(key, source, entry, constants, false)
    }

    /// [`kernel`](Self::kernel) for a shader whose every buffer index, loop and division the
    /// host has checked before each dispatch it prepares: natively its module is created
    /// without wgpu's runtime checks (bounds checks, loop bounding, division guards), which
    /// otherwise keep drivers from unrolling and keeping accumulators in registers. Browsers
    /// keep their checks (WebGPU has no trusted modules); `WEBTUNE_SHADER_CHECKS=on` keeps
    /// them natively too.
    pub fn kernel_trusted(&self, key: &str, source: &dyn Fn() -> String, entry: &str, constants: &[(&str, f64)]) -> Kernel {
        self.kernel_with(key, source, entry, constants, self.trusted)
    }

    /// Records an error found while preparing work (a bug in webtune, such as a shape that
    /// reaches past a tensor): [`check`](Self::check) reports it, like the device's own errors.
    pub fn report_error(&self, msg: String) {
        if let Ok(mut slot) = self.first_error.lock() {
            slot.get_or_insert(msg);
        }
    }

    fn kernel_with(&self, key: &str, source: &dyn Fn() -> String, entry: &str, constants: &[(&str, f64)], trusted: bool) -> Kernel {
        let mut kkey = format!("{key}::{entry}");
        for (k, v) in constants {
            kkey.push_str(&format!(":{k}={v}"));
        }
        if let Some(k) = self.kernels.borrow().get(&kkey) {
            return k.clone();
        }
        let (module, used) = self.module(key, source, entry, trusted);
        let writable = module.1.as_ref().map(shaders::writable_bindings).unwrap_or_default();
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&kkey),
            layout: None,
            module: &module.0,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions { constants, zero_initialize_workgroup_memory: true },
            cache: None,
        });
        let kernel = Kernel { pipeline: Rc::new(pipeline), used_bindings: Rc::new(used), writable_bindings: Rc::new(writable) };
        self.kernels.borrow_mut().insert(kkey, kernel.clone());
        kernel
    }

    /// The module of shader variant `key` (compiled once) and the group-0 bindings `entry` uses.
    fn module(&self, key: &str, source: &dyn Fn() -> String, entry: &str, trusted: bool) -> (Rc<Module>, Vec<u32>) {
        let module = match self.modules.borrow().get(key) {
            Some(m) => m.clone(),
            None => {
                let text = source();
                let naga = shaders::parse(&text);
                let desc = wgpu::ShaderModuleDescriptor { label: Some(key), source: wgpu::ShaderSource::Wgsl(text.into()) };
                let module = if trusted {
                    // SAFETY: only kernels whose every index, loop bound and divisor the host checks
                    // before preparing a dispatch ask for this (see `kernel_trusted`).
                    unsafe { self.device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
                } else {
                    self.device.create_shader_module(desc)
                };
                Rc::new(Module(module, naga))
            }
        };
        self.modules.borrow_mut().entry(key.to_string()).or_insert_with(|| module.clone());
        let used = module.1.as_ref().map(|m| shaders::used_bindings(m, entry)).unwrap_or_default();
        (module, used)
    }

    /// Fails with a clear message if one buffer of `bytes` cannot be bound on this GPU.
    pub fn check_binding(&self, what: &str, bytes: u64) -> Result<(), GpuError> {
        let limit = self.max_binding();
        if bytes > limit {
            return Err(GpuError::TooLarge { what: what.into(), bytes, limit, kind: "storage binding" });
        }
        Ok(())
    }

    /// Submits a finished encoder and returns at once (the GPU works on).
    pub fn submit(&self, encoder: wgpu::CommandEncoder) {
        self.queue.submit(Some(encoder.finish()));
    }

    pub fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// Waits for the queue natively; a no-op in the browser, where the event loop drives it.
    pub fn poll_wait(&self) {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        }
    }
}

/// Natively, trusted modules unless `WEBTUNE_SHADER_CHECKS=on`; never in a browser.
fn trusted_modules() -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    {
        !matches!(std::env::var("WEBTUNE_SHADER_CHECKS").as_deref(), Ok("on") | Ok("1"))
    }
    #[cfg(target_arch = "wasm32")]
    {
        false
    }
}

/// Workgroup grid for `n` workgroups laid out in 2D, since one dimension stops at
/// 65535. Shaders rebuild the linear id as `wid.x + wid.y * num_workgroups.x`.
pub fn grid(n: u32) -> (u32, u32, u32) {
    let n = n.max(1);
    if n <= 65535 {
        (n, 1, 1)
    } else {
        let y = n.div_ceil(65535);
        (n.div_ceil(y), y, 1)
    }
}

/// Workgroups needed to cover `n` items with `per_group` items each.
pub fn groups(n: usize, per_group: usize) -> u32 {
    n.div_ceil(per_group).max(1) as u32
}
