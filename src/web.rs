//! The browser API (wasm32 + WebGPU), exported with wasm-bindgen. It mirrors the native
//! `webtune train` flow step by step, on bytes instead of paths:
//!
//! ```text
//! Engine.create() -> loadModel(config.json, model.safetensors) -> [loadAdapter(..)]
//!   -> loadDataset(name, bytes, seq) -> startTraining(options JSON)
//!   -> step() ... (logs arrive every `readbackEvery` steps) -> flush() -> exportAdapter()
//! ```
//!
//! Every error becomes a JS exception carrying the engine's message (the same text the CLI
//! prints after `error:`). Calls are meant to be made one at a time (the npm package's worker
//! queues them); a call made while another is still running is refused, not corrupted.

use std::cell::RefCell;
use std::fmt::Display;

use serde::Deserialize;
use serde_json::{json, Value};
use wasm_bindgen::prelude::*;

use crate::data::{records, Batcher, Record, TokenStream};
use crate::gpu::Gpu;
use crate::model::gpt2::{Gpt2Gpu, Trainable};
use crate::model::{Gpt2Weights, LoraAdapter, LoraConfig};
use crate::train::{AdamWConfig, StepLog, TrainConfig, Trainer};

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs the panic hook once: panics go to the console (console_error_panic_hook) and are
/// kept for [`last_panic`], so the worker can report the message after the trap.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            console_error_panic_hook::hook(info);
        }));
    });
}

/// The message of the last Rust panic (a bug in webtune, not a user error), if any. After a
/// panic the wasm instance is unusable; the npm package's worker starts a fresh one.
#[wasm_bindgen(js_name = lastPanic)]
pub fn last_panic() -> Option<String> {
    LAST_PANIC.with(|p| p.borrow_mut().take())
}

/// The crate version, so the page can show what it runs.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

fn js_err(e: impl Display) -> JsError {
    JsError::new(&e.to_string())
}

/// A JSON value as a plain JS object (numbers, strings, arrays, objects).
fn to_js(v: &Value) -> Result<JsValue, JsError> {
    js_sys::JSON::parse(&v.to_string()).map_err(|_| JsError::new("internal error: could not build a JS object"))
}

/// Training options, as JSON from JS (camelCase; unknown keys are refused so a typo is not ignored).
#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct TrainOptions {
    rank: usize,
    alpha: f32,
    targets: Vec<String>,
    /// Use the adapter given to `loadAdapter` as the start (its rank, alpha and targets win).
    use_init_adapter: bool,
    lr: f32,
    steps: u32,
    batch: usize,
    seq: usize,
    weight_decay: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    grad_clip: f32,
    seed: u64,
    shuffle: bool,
    /// Steps between loss readbacks: 1 reports every step; more keeps the GPU busier.
    readback_every: usize,
}

impl Default for TrainOptions {
    /// The CLI's defaults.
    fn default() -> Self {
        TrainOptions {
            rank: 8,
            alpha: 16.0,
            targets: vec!["c_attn".into(), "c_proj".into(), "c_fc".into()],
            use_init_adapter: true,
            lr: 2e-4,
            steps: 100,
            batch: 8,
            seq: 128,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            grad_clip: 1.0,
            seed: 0,
            shuffle: true,
            readback_every: 4,
        }
    }
}

/// The JS spelling of an AdamW setting named the CLI's way (`weight-decay` -> `weightDecay`).
fn js_option_name(cli: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in cli.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

struct Model {
    name: String,
    weights: Gpt2Weights,
}

struct Dataset {
    name: String,
    records: Vec<Record>,
}

struct Run {
    trainer: Trainer,
    steps: u32,
    lr: f32,
    done: u32,
}

struct State {
    gpu: Gpu,
    model: Option<Model>,
    init_adapter: Option<(String, LoraAdapter)>,
    dataset: Option<Dataset>,
    run: Option<Run>,
}

/// The engine behind one page or worker: a GPU device, the loaded model, dataset and run.
#[wasm_bindgen]
pub struct Engine {
    state: RefCell<State>,
}

const BUSY: &str = "the engine is busy with another call; wait for it to finish";

// Async methods hold the state's RefCell borrow across GPU awaits on purpose: every method
// takes it with `try_borrow*`, so a call that overlaps another fails with BUSY instead of panicking.
#[allow(clippy::await_holding_refcell_ref)]
#[wasm_bindgen]
impl Engine {
    /// Opens the WebGPU device (with the adapter's real limits and shader-f16 where offered).
    pub async fn create() -> Result<Engine, JsError> {
        install_panic_hook();
        let gpu = Gpu::new(None).await.map_err(js_err)?;
        Ok(Engine {
            state: RefCell::new(State {
                gpu,
                model: None,
                init_adapter: None,
                dataset: None,
                run: None,
            }),
        })
    }

    /// What the GPU is: `{name, backend, deviceType, driver, shaderF16, limits: {...}}`.
    #[wasm_bindgen(js_name = adapterInfo)]
    pub fn adapter_info(&self) -> Result<JsValue, JsError> {
        let st = self.state.try_borrow().map_err(|_| JsError::new(BUSY))?;
        let r = &st.gpu.report;
        to_js(&json!({
            "name": r.name,
            "backend": r.backend,
            "deviceType": r.device_type,
            "driver": r.driver,
            "shaderF16": r.shader_f16,
            "limits": {
                "maxStorageBufferBindingSize": r.max_storage_buffer_binding_size,
                "maxBufferSize": r.max_buffer_size,
                "maxComputeWorkgroupStorageSize": r.max_compute_workgroup_storage_size,
                "maxComputeInvocationsPerWorkgroup": r.max_compute_invocations_per_workgroup,
            },
            "summary": r.to_string(),
        }))
    }

    /// Loads a Hugging Face GPT-2 model from the text of config.json and the bytes of
    /// model.safetensors (f32, f16 or bf16). `name` (e.g. the folder) prefixes messages.
    /// Replaces any model, dataset and run loaded before. Returns the model's shape.
    #[wasm_bindgen(js_name = loadModel)]
    pub fn load_model(&self, config_json: &str, safetensors: &[u8], name: &str) -> Result<JsValue, JsError> {
        let mut st = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let weights = Gpt2Weights::from_bytes(
            config_json,
            &format!("{name}/config.json"),
            safetensors,
            &format!("{name}/model.safetensors"),
        )
        .map_err(js_err)?;
        let c = &weights.config;
        let parameters: usize = weights.tensors.values().map(|t| t.data.len()).sum();
        let info = json!({
            "name": name,
            "nLayer": c.n_layer,
            "nHead": c.n_head,
            "nEmbd": c.n_embd,
            "vocabSize": c.vocab_size,
            "nPositions": c.n_positions,
            "eosTokenId": c.eos_token_id,
            "parameters": parameters,
        });
        st.run = None;
        st.dataset = None;
        st.init_adapter = None;
        st.model = Some(Model {
            name: name.to_string(),
            weights,
        });
        to_js(&info)
    }

    /// Loads a PEFT LoRA adapter (adapter_config.json text, adapter_model.safetensors bytes) to
    /// start training from, instead of a fresh seeded init. Needs the model first.
    #[wasm_bindgen(js_name = loadAdapter)]
    pub fn load_adapter(&self, config_json: &str, safetensors: &[u8], name: &str) -> Result<JsValue, JsError> {
        let mut st = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let model = st
            .model
            .as_ref()
            .ok_or_else(|| JsError::new("load a model before an adapter"))?;
        let adapter =
            LoraAdapter::from_peft_bytes(config_json, safetensors, &model.weights.config, name).map_err(js_err)?;
        let c = &adapter.config;
        let info =
            json!({ "name": name, "r": c.r, "alpha": c.alpha, "targets": c.targets, "modules": adapter.modules.len() });
        st.init_adapter = Some((name.to_string(), adapter));
        to_js(&info)
    }

    /// Forgets the adapter given to `loadAdapter` (the next run starts from a seeded init).
    #[wasm_bindgen(js_name = clearAdapter)]
    pub fn clear_adapter(&self) -> Result<(), JsError> {
        let mut st = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        st.init_adapter = None;
        Ok(())
    }

    /// Loads a dataset for the next run: JSONL with one `{"input_ids": [...]}` (optionally
    /// `"labels"`) per line, checked against the model's vocab. Returns a preview `{name, records, tokens, windows, seq}`:
    /// `tokens` counts the EOS after each record; `windows` is how many sequences of `seq` tokens
    /// (plus the shifted target) the data makes.
    #[wasm_bindgen(js_name = loadDataset)]
    pub fn load_dataset(&self, name: &str, bytes: &[u8], seq: usize) -> Result<JsValue, JsError> {
        let mut st = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let model = st.model.as_ref().ok_or_else(|| {
            JsError::new("load a model before the dataset (token ids are checked against its vocabulary)")
        })?;
        let text = std::str::from_utf8(bytes)
            .map_err(|e| JsError::new(&format!("{name}: not valid UTF-8 (byte {})", e.valid_up_to())))?;
        let cfg = &model.weights.config;
        let recs = records::parse_jsonl(text, name, cfg.vocab_size).map_err(js_err)?;
        let tokens = TokenStream::new(&recs, cfg.eos_token_id).tokens.len();
        let first: Vec<u32> = recs[0].input_ids.iter().take(32).copied().collect();
        let info = json!({
            "name": name,
            "records": recs.len(),
            "tokens": tokens,
            "seq": seq,
            "windows": tokens / (seq + 1),
            "firstTokens": first,
        });
        // A run keeps the batches it was built with; the new data is for the next run.
        st.dataset = Some(Dataset {
            name: name.to_string(),
            records: recs,
        });
        to_js(&info)
    }

    /// Builds a run from `options` (a JSON object; see the npm package's `TrainOptions`):
    /// validates every setting as the CLI does, plans GPU memory and records the step program.
    /// Returns `{steps, batch, seq, windows, trainableParameters, adapter: {r, alpha, targets}}`.
    #[wasm_bindgen(js_name = startTraining)]
    pub fn start_training(&self, options_json: &str) -> Result<JsValue, JsError> {
        let mut guard = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let st = &mut *guard;
        let o: TrainOptions =
            serde_json::from_str(options_json).map_err(|e| JsError::new(&format!("training options: {e}")))?;
        let adamw = AdamWConfig {
            lr: o.lr,
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            weight_decay: o.weight_decay,
            grad_clip: o.grad_clip,
        };
        adamw.validate(js_option_name).map_err(js_err)?;
        if o.steps == 0 || o.batch == 0 || o.seq == 0 || o.readback_every == 0 {
            return Err(JsError::new("steps, batch, seq and readbackEvery must be at least 1"));
        }
        let model = st.model.as_ref().ok_or_else(|| JsError::new("load a model first"))?;
        let data = st
            .dataset
            .as_ref()
            .ok_or_else(|| JsError::new("load a dataset first"))?;
        let cfg = &model.weights.config;
        if o.seq > cfg.n_positions {
            return Err(JsError::new(&format!(
                "seq {} is longer than the model's n_positions {}",
                o.seq, cfg.n_positions
            )));
        }
        let adapter = match (&st.init_adapter, o.use_init_adapter) {
            (Some((_, a)), true) => a.clone(),
            _ => {
                let lc = LoraConfig::new(o.rank, o.alpha, o.targets.clone(), 0.0).map_err(js_err)?;
                LoraAdapter::init(lc, cfg, o.seed)
            }
        };
        let stream = TokenStream::new(&data.records, cfg.eos_token_id);
        let batcher = Batcher::new(stream, o.batch, o.seq, o.shuffle, o.seed)
            .map_err(|e| JsError::new(&format!("{}: {e}", data.name)))?;
        let windows = batcher.n_windows;
        st.run = None; // free the previous run's GPU buffers before allocating new ones
        let gpt = Gpt2Gpu::new(&st.gpu, &model.weights, Some(&adapter), Trainable::Lora).map_err(js_err)?;
        let trainable: usize = gpt.trained().iter().map(|p| p.value.len()).sum();
        let mut config = TrainConfig::new(o.batch, o.seq, adamw);
        config.readback_every = o.readback_every.min(o.steps as usize);
        let trainer = Trainer::new(&st.gpu, gpt, batcher, config).map_err(js_err)?;
        st.gpu.check().map_err(js_err)?;
        let c = &adapter.config;
        let info = json!({
            "steps": o.steps,
            "batch": o.batch,
            "seq": o.seq,
            "windows": windows,
            "readbackEvery": trainer.config.readback_every,
            "trainableParameters": trainable,
            "adapter": { "r": c.r, "alpha": c.alpha, "targets": c.targets },
            "model": model.name,
            "dataset": data.name,
        });
        st.run = Some(Run {
            trainer,
            steps: o.steps,
            lr: o.lr,
            done: 0,
        });
        to_js(&info)
    }

    /// Queues one training step. Resolves to the logs read back by this call (an array of
    /// `{step, loss, lr, gradNorm}`, empty between readbacks; the last step always reads back).
    pub async fn step(&self) -> Result<JsValue, JsError> {
        let mut guard = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let st = &mut *guard;
        let run = st
            .run
            .as_mut()
            .ok_or_else(|| JsError::new("no training run: call startTraining first"))?;
        if run.done >= run.steps {
            return Err(JsError::new(&format!(
                "the run is finished ({} steps); start a new one",
                run.steps
            )));
        }
        let mut logs = run.trainer.step(&st.gpu, run.lr).await.map_err(js_err)?;
        run.done += 1;
        if run.done == run.steps {
            logs.extend(run.trainer.flush(&st.gpu).await.map_err(js_err)?);
        }
        st.gpu.check().map_err(js_err)?;
        logs_to_js(&logs)
    }

    /// Reads back the logs of steps queued but not reported yet.
    pub async fn flush(&self) -> Result<JsValue, JsError> {
        let mut guard = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let st = &mut *guard;
        let run = st
            .run
            .as_mut()
            .ok_or_else(|| JsError::new("no training run: call startTraining first"))?;
        let logs = run.trainer.flush(&st.gpu).await.map_err(js_err)?;
        st.gpu.check().map_err(js_err)?;
        logs_to_js(&logs)
    }

    /// Steps taken in the current run (0 without one).
    #[wasm_bindgen(js_name = stepsDone)]
    pub fn steps_done(&self) -> u32 {
        self.state
            .try_borrow()
            .ok()
            .and_then(|st| st.run.as_ref().map(|r| r.done))
            .unwrap_or(0)
    }

    /// The current run's adapter in PEFT's format (waits for queued steps):
    /// `{adapterConfigJson: string, adapterSafetensors: Uint8Array}`.
    #[wasm_bindgen(js_name = exportAdapter)]
    pub async fn export_adapter(&self) -> Result<JsValue, JsError> {
        let guard = self.state.try_borrow().map_err(|_| JsError::new(BUSY))?;
        let st = &*guard;
        let run = st
            .run
            .as_ref()
            .ok_or_else(|| JsError::new("nothing to export: no training run yet"))?;
        let adapter = run
            .trainer
            .model
            .download_adapter(&st.gpu)
            .await
            .map_err(js_err)?
            .ok_or_else(|| JsError::new("this run trains no adapter"))?;
        st.gpu.check().map_err(js_err)?;
        let base = st.model.as_ref().map(|m| m.name.as_str()).unwrap_or("");
        let (config, bytes) = adapter.to_peft_bytes(base).map_err(js_err)?;
        let out = js_sys::Object::new();
        let set = |k: &str, v: &JsValue| js_sys::Reflect::set(&out, &JsValue::from_str(k), v);
        set("adapterConfigJson", &JsValue::from_str(&config))
            .and_then(|_| set("adapterSafetensors", &js_sys::Uint8Array::from(bytes.as_slice()).into()))
            .map_err(|_| JsError::new("internal error: could not build the export object"))?;
        Ok(out.into())
    }
}

/// Logs as a JS array; a non-finite loss ends the call with the CLI's "diverged" error.
fn logs_to_js(logs: &[StepLog]) -> Result<JsValue, JsError> {
    let f = |x: f32| if x.is_finite() { json!(x) } else { Value::Null };
    let mut v = Vec::with_capacity(logs.len());
    for l in logs {
        if !l.loss.is_finite() {
            return Err(JsError::new(&format!(
                "step {}: the loss is {} (diverged); try a smaller lr",
                l.step, l.loss
            )));
        }
        v.push(json!({ "step": l.step, "loss": f(l.loss), "lr": f(l.lr), "gradNorm": f(l.grad_norm) }));
    }
    to_js(&Value::Array(v))
}
