//! The browser API (wasm32 + WebGPU), exported with wasm-bindgen. It mirrors the native
//! `webtune train` / `generate` / `eval` flows on bytes instead of paths:
//!
//! ```text
//! Engine.create() -> loadModel(config.json, model.safetensors) -> [loadTokenizer(..)] -> [loadAdapter(..)]
//!   -> loadDataset(name, bytes, seq) -> [loadEvalDataset(..)] -> startTraining(options JSON)
//!   -> step(control) ... (each returns the step's events: logs, eval, checkpoint due, stop)
//!   -> [checkpoint() when due] -> exportAdapter() [exportGguf()] | exportModel();   generate(..) at any point
//! resumeRun(checkpoint files) continues a run saved by checkpoint() (after a page reload).
//! ```
//!
//! This file is bindings, conversion and errors only: the run (settings, checks, the step
//! loop's rules, checkpoints, resume checks) is the library's `train::run`, as in the CLI.
//!
//! Every error becomes a JS exception carrying the engine's message (the same text the CLI
//! prints after `error:`, with option names in camelCase). Calls are meant to be made one at a
//! time (the npm package's worker queues them); a call made while another is still running is
//! refused, not corrupted.
//!
//! The model's weight files stay in JS (the `Uint8Array`s given to `loadModel`): loading reads
//! their headers and checks every tensor a piece at a time, and each upload to the GPU (a run, an
//! evaluation, generation) reads one tensor at a time from them ([`WeightFiles`]), so the wasm
//! heap never holds the model, only its largest tensor as f32 while it is uploaded.
//!
//! Generation "without the adapter" during a LoRA run uses a second `ModelGpu` that shares the
//! run's base-weight buffers and has no LoRA layers (no extra GPU memory). During a full
//! fine-tuning run the base weights are being changed, so the base model is uploaded once more
//! (from the files) the first time it is asked for, and freed when the next run starts.
//!
//! A checkpoint is the CLI's checkpoint folder as bytes (trainer_state.json, optimizer.safetensors,
//! the adapter or the full weights); the model's fingerprint is in trainer_state.json.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::Display;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use wasm_bindgen::prelude::*;

use crate::data::dataset::{hex, Fnv1a64};
use crate::data::{Batcher, Dataset, Tokenizer};
use crate::flags::Style;
use crate::generate::{sample_text_until, Generator, Prompt, SampleConfig};
use crate::gpu::Gpu;
use crate::model::{ModelGpu, Trainable};
use crate::model::weights::FileBytes;
use crate::model::{lora, LoraAdapter, WeightFiles, WeightSource};
use crate::train::checkpoint::{ModelInfo, RunOptions};
use crate::train::eval::{EvalResult, Evaluator};
use crate::train::run::{Checkpoint, Control, Files, RunData, RunInputs};
use crate::train::{Run, RunSpec, StepLog, TrainError};

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

/// The byte-level BPE tokenizer on its own (no GPU needed), so the package can tokenize
/// text and the conformance test can compare wasm32 with Python `tokenizers` case by case.
#[wasm_bindgen(js_name = Tokenizer)]
pub struct JsTokenizer(Tokenizer);

#[wasm_bindgen(js_class = Tokenizer)]
impl JsTokenizer {
    /// From a Hugging Face tokenizer.json text; `name` is used in error messages.
    #[wasm_bindgen(js_name = fromJson)]
    pub fn from_json(text: &str, name: &str) -> Result<JsTokenizer, JsError> {
        Tokenizer::from_json(text, name).map(JsTokenizer).map_err(js_err)
    }

    /// From tokenizer.json text and, when given, tokenizer_config.json text (its bos / eos /
    /// pad / unk tokens); `name` is used in error messages.
    #[wasm_bindgen(js_name = fromFiles)]
    pub fn from_files(tokenizer_json: &str, tokenizer_config_json: Option<String>, name: &str) -> Result<JsTokenizer, JsError> {
        let tok = Tokenizer::from_json(tokenizer_json, &format!("{name}/tokenizer.json")).map_err(js_err)?;
        match tokenizer_config_json {
            Some(cfg) => tok.with_config(&cfg, &format!("{name}/tokenizer_config.json")).map(JsTokenizer).map_err(js_err),
            None => Ok(JsTokenizer(tok)),
        }
    }

    /// From the older vocab.json + merges.txt pair.
    #[wasm_bindgen(js_name = fromVocabMerges)]
    pub fn from_vocab_merges(vocab_json: &str, merges_txt: &str, name: &str) -> Result<JsTokenizer, JsError> {
        Tokenizer::from_vocab_merges(vocab_json, merges_txt, name).map(JsTokenizer).map_err(js_err)
    }

    /// Ids without special tokens added (added tokens written in the text are recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, JsError> {
        self.0.try_encode(text).map_err(js_err)
    }

    /// Ids with the special tokens of `specialTokens()` around them (e.g. Llama's BOS).
    #[wasm_bindgen(js_name = encodeWithSpecialTokens)]
    pub fn encode_with_special_tokens(&self, text: &str) -> Vec<u32> {
        self.0.encode_with_special_tokens(text)
    }

    pub fn decode(&self, ids: Vec<u32>) -> String {
        self.0.decode(&ids)
    }

    #[wasm_bindgen(js_name = decodeSkipSpecial)]
    pub fn decode_skip_special(&self, ids: Vec<u32>) -> String {
        self.0.decode_skip_special(&ids)
    }

    /// `{bos, eos, pad, unk (id or null), addBos, addEos, prefix, suffix (ids)}`.
    #[wasm_bindgen(js_name = specialTokens)]
    pub fn special_tokens(&self) -> Result<JsValue, JsError> {
        let s = self.0.special_tokens();
        to_js(&serde_json::json!({
            "bos": s.bos, "eos": s.eos, "pad": s.pad, "unk": s.unk,
            "addBos": s.add_bos, "addEos": s.add_eos, "prefix": s.prefix, "suffix": s.suffix,
        }))
    }

    #[wasm_bindgen(js_name = vocabSize)]
    pub fn vocab_size(&self) -> usize {
        self.0.vocab_size()
    }
}

fn js_err(e: impl Display) -> JsError {
    JsError::new(&e.to_string())
}

/// A JSON value as a plain JS object (numbers, strings, arrays, objects).
fn to_js(v: &Value) -> Result<JsValue, JsError> {
    js_sys::JSON::parse(&v.to_string()).map_err(|_| JsError::new("internal error: could not build a JS object"))
}

/// A JS object from (key, value) pairs.
fn js_object(pairs: &[(&str, JsValue)]) -> Result<JsValue, JsError> {
    let out = js_sys::Object::new();
    for (k, v) in pairs {
        js_sys::Reflect::set(&out, &JsValue::from_str(k), v)
            .map_err(|_| JsError::new("internal error: could not build a JS object"))?;
    }
    Ok(out.into())
}

fn bytes_js(b: &[u8]) -> JsValue {
    js_sys::Uint8Array::from(b).into()
}

use crate::json::f32 as num;

/// Training options, as JSON from JS: the library's [`RunSpec`] under the JS names (camelCase;
/// unknown keys are refused so a typo is not ignored), plus what only the browser has.
#[derive(Deserialize, Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct TrainOptions {
    /// "lora" (train an adapter) or "full" (every weight).
    mode: String,
    rank: usize,
    alpha: f32,
    targets: Vec<String>,
    /// Use the adapter given to `loadAdapter` as the start (its rank, alpha and targets win).
    use_init_adapter: bool,
    lr: f32,
    /// "constant", "linear" or "cosine" (after warmup).
    schedule: String,
    warmup: u32,
    min_lr: f32,
    steps: u32,
    batch: usize,
    seq: usize,
    grad_accum: usize,
    weight_decay: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    grad_clip: f32,
    seed: u64,
    shuffle: bool,
    /// Fraction of the dataset's records held out for evaluation; 0 = none.
    eval_split: f32,
    /// Evaluate every N steps (and at the end) when there is eval data; 0 = only at the end.
    eval_every: u32,
    /// Save a checkpoint every N steps; 0 = only on pause.
    checkpoint_every: u32,
    /// Steps between loss readbacks: 1 reports every step; more keeps the GPU busier.
    readback_every: usize,
}

/// The browser reads losses back more often than the CLI (every 16 steps) so a page's chart moves.
const READBACK_EVERY: usize = 4;

impl Default for TrainOptions {
    /// The library's defaults ([`RunSpec::default`]), spelled as JS options.
    fn default() -> Self {
        TrainOptions { use_init_adapter: true, ..TrainOptions::of(&RunSpec::default(), READBACK_EVERY) }
    }
}

impl TrainOptions {
    /// The run's settings (0 = none for the split and the intervals).
    fn spec(&self) -> Result<RunSpec, JsError> {
        let full = match self.mode.as_str() {
            "lora" => false,
            "full" => true,
            m => return Err(JsError::new(&format!("mode {m:?} is invalid: it must be \"lora\" or \"full\""))),
        };
        let schedule = self.schedule.parse().map_err(|e: String| JsError::new(&format!("schedule: {e}")))?;
        if self.readback_every == 0 {
            return Err(JsError::new("readbackEvery must be at least 1"));
        }
        let spec = RunSpec {
            full,
            lora_rank: self.rank,
            lora_alpha: self.alpha,
            lora_targets: Some(self.targets.clone()),
            init_adapter: None,
            steps: self.steps,
            batch: self.batch,
            seq: self.seq,
            grad_accum: self.grad_accum,
            lr: self.lr,
            schedule,
            warmup: self.warmup,
            min_lr: self.min_lr,
            weight_decay: self.weight_decay,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            grad_clip: self.grad_clip,
            seed: self.seed,
            shuffle: self.shuffle,
            eval_split: (self.eval_split != 0.0).then_some(self.eval_split),
            eval_every: (self.eval_every > 0).then_some(self.eval_every),
            save_every: (self.checkpoint_every > 0).then_some(self.checkpoint_every),
            stop_after: None,
        };
        spec.validate(Style::Js).map_err(js_err)?;
        Ok(spec)
    }

    /// The JS options of a run's settings (to refill a form after a resume).
    fn of(s: &RunSpec, readback_every: usize) -> TrainOptions {
        TrainOptions {
            mode: if s.full { "full" } else { "lora" }.into(),
            rank: s.lora_rank,
            alpha: s.lora_alpha,
            targets: s.lora_targets.clone().unwrap_or_default(),
            use_init_adapter: s.init_adapter.is_some(),
            lr: s.lr,
            schedule: s.schedule.to_string(),
            warmup: s.warmup,
            min_lr: s.min_lr,
            steps: s.steps,
            batch: s.batch,
            seq: s.seq,
            grad_accum: s.grad_accum,
            weight_decay: s.weight_decay,
            beta1: s.beta1,
            beta2: s.beta2,
            eps: s.eps,
            grad_clip: s.grad_clip,
            seed: s.seed,
            shuffle: s.shuffle,
            eval_split: s.eval_split.unwrap_or(0.0),
            eval_every: s.eval_every.unwrap_or(0),
            checkpoint_every: s.save_every.unwrap_or(0),
            readback_every,
        }
    }
}

/// Generation options, as JSON from JS: the library's [`SampleConfig`] plus which model.
#[derive(Deserialize, Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct GenerateOptions {
    max_new_tokens: usize,
    /// 0 = greedy.
    temperature: f32,
    /// 0 = off.
    top_k: usize,
    /// 1 = off.
    top_p: f32,
    seed: u64,
    /// Use the current run's model (with its adapter or its fine-tuned weights); false = the base model.
    adapted: bool,
    stop_at_eos: bool,
    /// The prompt is a user message: formatted with the tokenizer's chat template (with its
    /// generation prompt), and generation stops at the template's end-of-turn token too.
    chat: bool,
}

impl Default for GenerateOptions {
    /// `webtune generate`'s defaults.
    fn default() -> Self {
        let s = SampleConfig::default();
        GenerateOptions {
            max_new_tokens: s.max_new_tokens,
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
            seed: s.seed,
            adapted: true,
            stop_at_eos: s.stop_at_eos,
            chat: false,
        }
    }
}

impl GenerateOptions {
    fn sample(&self) -> SampleConfig {
        SampleConfig {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            stop_at_eos: self.stop_at_eos,
        }
    }
}

/// The defaults of the options the JS API takes, as the engine has them (the npm package's
/// unit test checks its own defaults against these): `{train, generate}`.
#[wasm_bindgen(js_name = defaultOptions)]
pub fn default_options() -> Result<JsValue, JsError> {
    let v = json!({
        "train": crate::json::value(&TrainOptions::default()),
        "generate": crate::json::value(&GenerateOptions::default()),
    });
    to_js(&v)
}

/// A weight file as JS gave it: read a range at a time, never copied whole into the wasm heap.
struct JsBytes(js_sys::Uint8Array);

impl FileBytes for JsBytes {
    fn len(&self) -> usize {
        self.0.length() as usize
    }
    fn read(&self, range: Range<usize>) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.subarray(range.start as u32, range.end as u32).to_vec())
    }
}

struct Model {
    /// The weights, left in the files JS gave.
    weights: WeightFiles<JsBytes>,
    info: ModelInfo,
}

/// The base model on the GPU for generation and evaluation outside a LoRA run.
struct Infer {
    model: ModelGpu,
    generator: Option<Generator>,
}

/// A run with what the page asks of it besides steps.
struct BrowserRun {
    run: Run,
    /// LoRA runs: the base model, sharing the run's buffers.
    base: Option<ModelGpu>,
    gen_adapted: Option<Generator>,
    gen_base: Option<Generator>,
}

struct State {
    gpu: Gpu,
    model: Option<Model>,
    tokenizer: Option<(String, Tokenizer)>,
    init_adapter: Option<(String, LoraAdapter)>,
    dataset: Option<Dataset>,
    eval_dataset: Option<Dataset>,
    run: Option<BrowserRun>,
    infer: Option<Infer>,
}

/// The current run, when it trains a LoRA adapter (what the adapter exports need).
fn lora_run(run: &mut Option<BrowserRun>) -> Result<&mut BrowserRun, JsError> {
    let br = run.as_mut().ok_or_else(|| JsError::new("nothing to export: no training run yet"))?;
    if br.run.spec.full {
        return Err(JsError::new("this run fine-tunes every weight, not an adapter: use exportModel"));
    }
    Ok(br)
}

/// The bytes of the output file called `name` (empty when the run wrote none).
fn file_in<'a>(files: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    files.iter().find(|(f, _)| f == name).map(|(_, b)| b.as_slice()).unwrap_or(&[])
}

/// The engine behind one page or worker: a GPU device, the loaded model, data and run.
#[wasm_bindgen]
pub struct Engine {
    state: RefCell<State>,
}

const BUSY: &str = "the engine is busy with another call; wait for it to finish";

/// What the page learns about a run: its shape and every setting (the JS options, so a resumed
/// run can refill a form).
fn run_info(br: &BrowserRun) -> Result<JsValue, JsError> {
    let run = &br.run;
    let s = &run.spec;
    let lora = run.trainer.model.lora_config();
    let trainable: usize = run.trainer.model.trained().iter().map(|p| p.value.len()).sum();
    let readback = run.trainer.config.readback_every;
    to_js(&json!({
        "mode": if s.full { "full" } else { "lora" },
        "step": run.start_step,
        "steps": s.steps,
        "batch": s.batch,
        "seq": s.seq,
        "gradAccum": s.grad_accum,
        "windows": run.data_info.windows,
        "readbackEvery": readback,
        "evalEvery": s.eval_every.unwrap_or(0),
        "checkpointEvery": s.save_every.unwrap_or(0),
        "evalTokens": run.evaluator.as_ref().map_or(0, |e| e.tokens()),
        "evalData": run.eval_name,
        "trainableParameters": trainable,
        "adapter": lora.map(|c| json!({ "r": c.r, "alpha": num(c.alpha), "targets": c.targets })),
        "model": run.model_info.name,
        "dataset": run.data_info.path,
        "options": crate::json::value(&TrainOptions::of(s, readback)),
        "memory": memory_json(&run.plan),
    }))
}

/// The run's memory plan for JS: `{totalBytes, classes: {weights, trainable, ...}, largest: {name, class, bytes}}`.
fn memory_json(plan: &crate::train::MemoryPlan) -> Value {
    let classes: serde_json::Map<String, Value> = plan.by_class().iter().map(|(c, b)| (c.key().to_string(), json!(b))).collect();
    json!({
        "totalBytes": plan.total(),
        "classes": classes,
        "largest": plan.largest().map(|e| json!({ "name": e.name, "class": e.class.key(), "bytes": e.bytes })),
    })
}

fn eval_json(step: u32, r: &EvalResult) -> Value {
    json!({ "step": step, "loss": num(r.loss), "perplexity": num(r.perplexity), "tokens": r.tokens })
}

fn logs_json(logs: &[StepLog]) -> Value {
    Value::Array(
        logs.iter()
            .map(|l| json!({ "step": l.step, "loss": l.loss, "lr": num(l.lr), "gradNorm": num(l.grad_norm) }))
            .collect(),
    )
}

impl State {
    fn model(&self) -> Result<&Model, JsError> {
        self.model.as_ref().ok_or_else(|| JsError::new("load a model first"))
    }

    /// Parses a dataset file with the model's vocabulary and (for text) the tokenizer.
    fn parse_dataset(&self, name: &str, bytes: &[u8]) -> Result<Dataset, JsError> {
        let model = self.model.as_ref().ok_or_else(|| {
            JsError::new("load a model before the dataset (token ids are checked against its vocabulary)")
        })?;
        let tokenizer = || match &self.tokenizer {
            Some((n, t)) => Ok((n.clone(), t)),
            None => Err("give the model's tokenizer.json (or vocab.json + merges.txt) with it".to_string()),
        };
        Dataset::parse(name, name, bytes, model.weights.config.vocab_size, &tokenizer).map_err(js_err)
    }

    fn preview(&self, d: &Dataset, seq: usize) -> Result<JsValue, JsError> {
        let eos = self.model()?.weights.config.eos_token_id;
        let p = d.preview(self.tokenizer.as_ref().map(|(_, t)| t), eos, seq);
        to_js(&serde_json::to_value(p).map_err(js_err)?)
    }

    /// The streams of a run with `spec` over the loaded dataset (and eval dataset).
    fn run_data(&self, spec: &RunSpec) -> Result<RunData, JsError> {
        let model = self.model()?;
        let data = self.dataset.as_ref().ok_or_else(|| JsError::new("load a dataset first"))?;
        let eos = model.weights.config.eos_token_id;
        RunData::new(data, self.eval_dataset.as_ref(), spec, eos, Style::Js).map_err(js_err)
    }

    /// Builds a run (new, or resuming `ck`) and makes it the current one.
    fn start(&mut self, input_spec: RunSpec, init: Option<LoraAdapter>, ck: Option<&Checkpoint>, readback: usize) -> Result<JsValue, JsError> {
        let data = self.run_data(&input_spec)?;
        // free the previous run's (and the inference model's) GPU buffers before allocating new ones
        self.run = None;
        self.infer = None;
        let model = self.model.as_ref().ok_or_else(|| JsError::new("load a model first"))?;
        let ck_weights = match ck {
            Some(c) if input_spec.full => Some(c.weights().map_err(js_err)?),
            _ => None,
        };
        let weights: &dyn WeightSource = match &ck_weights {
            Some(w) => w,
            None => &model.weights,
        };
        let input = RunInputs {
            weights,
            model: model.info.clone(),
            init_adapter: init,
            data,
            spec: input_spec,
            options: RunOptions { keep_checkpoints: 1, log_every: 1, ..RunOptions::default() },
            readback_every: readback,
            style: Style::Js,
        };
        let run = Run::new(&self.gpu, input, ck, false).map_err(js_err)?;
        let base = (!run.spec.full).then(|| run.trainer.model.base_view());
        let br = BrowserRun { run, base, gen_adapted: None, gen_base: None };
        let info = run_info(&br)?;
        self.run = Some(br);
        Ok(info)
    }
}

/// Reads one file of a checkpoint given as a JS object `{name: Uint8Array}`.
fn checkpoint_file(files: &JsValue, name: &str) -> Result<Vec<u8>, TrainError> {
    let v = js_sys::Reflect::get(files, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED);
    if v.is_undefined() || v.is_null() {
        return Err(TrainError::Invalid(format!("the saved checkpoint lacks {name}")));
    }
    if !v.is_instance_of::<js_sys::Uint8Array>() {
        return Err(TrainError::Invalid(format!("checkpoint file {name}: expected a Uint8Array")));
    }
    Ok(js_sys::Uint8Array::new(&v).to_vec())
}

/// Files as a JS object `{name: Uint8Array}`.
fn files_js(files: &Files) -> Result<JsValue, JsError> {
    let obj: Vec<(&str, JsValue)> = files.iter().map(|(n, b)| (n.as_str(), bytes_js(b))).collect();
    js_object(&obj)
}

/// What the page asks of the loop, as `step(control)` takes it.
fn control_of(c: &str) -> Result<Control, JsError> {
    match c {
        "run" => Ok(Control::Run),
        "pause" => Ok(Control::Pause),
        "stop" => Ok(Control::Stop),
        _ => Err(JsError::new(&format!("control {c:?} is invalid: it must be \"run\", \"pause\" or \"stop\""))),
    }
}

/// The most a wasm32 page can address: the largest tensor (as f32) must fit.
const WASM_MEMORY: u64 = 4 << 30;

/// Refuses a model that cannot fit before anything is read: the engine holds one tensor at a time
/// as f32 (the files stay in JS), so its largest tensor against wasm32's 4 GiB (an allocation past
/// it would trap the engine). (A tensor over the GPU's storage binding limit is split into row
/// chunks if it is a vocabulary table, else refused when a run or generation plans its buffers,
/// naming the tensor.)
fn check_model_fits(cfg: &crate::model::ModelConfig, config_name: &str) -> Result<(), JsError> {
    let params = crate::model::weights::param_count(cfg);
    let [before, after] = cfg.outer_shapes();
    let head = ("lm_head.weight".to_string(), vec![cfg.vocab_size, cfg.n_embd]);
    let shapes = before.into_iter().chain(after).chain(cfg.layer_shapes()).chain([head]);
    let largest = shapes.map(|(_, s)| crate::memory::elements(&s)).try_fold(0usize, |m, n| Some(m.max(n?)));
    let what = || {
        format!(
            "{config_name}: a {} model of {} layers, width {}, vocab {} ({} parameters)",
            cfg.model_type,
            cfg.n_layer,
            cfg.n_embd,
            cfg.vocab_size,
            params.map_or("too many".to_string(), |n| n.to_string())
        )
    };
    // (None when a count passes usize: 4 Gi values on wasm32, 16 GiB as f32)
    let need = largest.and_then(crate::memory::bytes_of::<f32>);
    match need {
        Some(b) if b <= WASM_MEMORY => {}
        _ => {
            return Err(JsError::new(&format!(
                "{} has a tensor of {} as f32 (the engine reads one tensor at a time), more than the 4 GiB a browser page's WebAssembly memory holds",
                what(),
                need.map_or("more than 16 GiB".to_string(), crate::memory::human)
            )))
        }
    }
    Ok(())
}

impl Engine {
    /// Loads the model from config.json and its weight files (`(name, bytes)`, names as messages
    /// give them; the bytes stay in JS) and makes it the current one.
    fn set_model(&self, config_json: &str, name: &str, files: Vec<(String, JsBytes)>) -> Result<JsValue, JsError> {
        let mut st = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let config_name = format!("{name}/config.json");
        let cfg = crate::model::ModelConfig::from_json(config_json, &config_name).map_err(js_err)?;
        check_model_fits(&cfg, &config_name)?;
        let weights = WeightFiles::new(config_json, &config_name, files).map_err(js_err)?;
        let c = &weights.config;
        let parameters = weights.parameters();
        let files_bytes: u64 = weights.files().iter().map(|(_, b)| b.len() as u64).sum();
        let mut h = Fnv1a64::default();
        for (_, b) in weights.files() {
            b.each_chunk(&mut |piece| h.update(piece));
        }
        let fnv = hex(h.0);
        let info = ModelInfo::of(c, name, name, files_bytes, Some(fnv.clone()));
        let family = match c.family {
            crate::model::Family::Gpt2 => "gpt2",
            crate::model::Family::Llama => "llama",
        };
        let shown = json!({
            "name": name,
            "modelType": c.model_type,
            "family": family,
            "nLayer": c.n_layer,
            "nHead": c.n_head,
            "nKvHead": c.n_kv_head,
            "headDim": c.head_dim,
            "nEmbd": c.n_embd,
            "intermediate": c.intermediate,
            "vocabSize": c.vocab_size,
            "nPositions": c.n_positions,
            "eosTokenId": c.eos_token_id,
            "eosTokenIds": c.eos_token_ids,
            "bosTokenId": c.bos_token_id,
            "tiedEmbeddings": !weights.has("lm_head.weight"),
            "parameters": parameters,
            "weightsBytes": files_bytes,
            "files": weights.files().len(),
            "fingerprint": fnv,
            "loraTargets": lora::valid_targets(c.family),
        });
        st.run = None;
        st.infer = None;
        st.dataset = None;
        st.eval_dataset = None;
        st.init_adapter = None;
        st.tokenizer = None;
        st.model = Some(Model { weights, info });
        to_js(&shown)
    }
}

// Async methods hold the state's RefCell borrow across GPU awaits on purpose: every method
// takes it with `try_borrow*`, so a call that overlaps another fails with BUSY instead of panicking.
#[allow(clippy::await_holding_refcell_ref)]
#[wasm_bindgen]
impl Engine {
    /// Opens the WebGPU device (with the adapter's real limits and shader-f16 where offered).
    /// `max_binding` (bytes; testing and diagnostics) lowers the largest buffer the engine binds, so
    /// tensors over it are split into row chunks ([`Gpu::limit_binding`]).
    /// `base_weights` ("auto", "f16" or "f32"; default "auto"): how frozen base weights are
    /// stored ([`Gpu::set_base_weights`]).
    pub async fn create(max_binding: Option<f64>, base_weights: Option<String>) -> Result<Engine, JsError> {
        install_panic_hook();
        let choice: crate::gpu::BaseWeights = match base_weights.as_deref() {
            None => Default::default(),
            Some(s) => s.parse().map_err(|e: String| JsError::new(&format!("baseWeights: {e}")))?,
        };
        let gpu = Gpu::new(None).await.map_err(js_err)?;
        gpu.set_base_weights(choice).map_err(|e| JsError::new(&format!("baseWeights: {e}")))?;
        if let Some(bytes) = max_binding {
            if !(bytes.is_finite() && bytes >= 4.0 && bytes <= u64::MAX as f64 && bytes.fract() == 0.0) {
                return Err(JsError::new(&format!("maxBinding {bytes} is invalid: it must be a positive multiple of 4 bytes")));
            }
            gpu.limit_binding(bytes as u64).map_err(|e| JsError::new(&format!("maxBinding: {e}")))?;
        }
        Ok(Engine {
            state: RefCell::new(State {
                gpu,
                model: None,
                tokenizer: None,
                init_adapter: None,
                dataset: None,
                eval_dataset: None,
                run: None,
                infer: None,
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
            "maxBinding": st.gpu.max_binding(),
            "f16BaseWeights": st.gpu.half_weights(),
            "summary": r.to_string(),
        }))
    }

    /// Loads a Hugging Face model (GPT-2, Llama, Qwen2, Qwen3) from the text of config.json and
    /// the bytes of model.safetensors (f32, f16 or bf16). `name` (e.g. the folder) prefixes
    /// messages. Replaces the model, tokenizer, adapter, data and run loaded before. Returns the
    /// model's shape (see [`Engine::load_model_shards`]). The bytes stay in JS: the engine keeps
    /// the array (do not change it afterwards) and reads one tensor at a time from it.
    #[wasm_bindgen(js_name = loadModel)]
    pub fn load_model(&self, config_json: &str, safetensors: js_sys::Uint8Array, name: &str) -> Result<JsValue, JsError> {
        self.set_model(config_json, name, vec![(format!("{name}/model.safetensors"), JsBytes(safetensors))])
    }

    /// Loads a sharded checkpoint: config.json's text and the safetensors files that
    /// model.safetensors.index.json lists, `names[i]` being the file name of `shards[i]` (the
    /// package checks the list against the index). One file named model.safetensors is the
    /// unsharded case. The arrays are kept, as by `loadModel`. Returns `{name, modelType, family, nLayer, nHead, nKvHead, headDim, nEmbd,
    /// intermediate, vocabSize, nPositions, eosTokenId, eosTokenIds, bosTokenId, tiedEmbeddings,
    /// parameters, weightsBytes, files, fingerprint, loraTargets}`.
    #[wasm_bindgen(js_name = loadModelShards)]
    pub fn load_model_shards(
        &self,
        config_json: &str,
        names: Vec<String>,
        shards: Vec<js_sys::Uint8Array>,
        name: &str,
    ) -> Result<JsValue, JsError> {
        if names.len() != shards.len() {
            return Err(JsError::new(&format!(
                "loadModelShards: {} file names for {} files",
                names.len(),
                shards.len()
            )));
        }
        if shards.is_empty() {
            return Err(JsError::new(&format!("{name}: no weight files given (model.safetensors, or the shards its index lists)")));
        }
        let files = names.iter().zip(shards).map(|(n, b)| (format!("{name}/{n}"), JsBytes(b))).collect();
        self.set_model(config_json, name, files)
    }

    /// Loads the model's tokenizer (for text data and generation): tokenizer.json's text, or
    /// vocab.json + merges.txt, with tokenizer_config.json's text when given (its special tokens
    /// and chat template) and a chat template's text (chat_template.jinja, or the user's) that
    /// replaces it. Needs the model first (its vocabulary must hold every token).
    /// Returns `{name, vocabSize, chatTemplate}` (`chatTemplate`: whether chat data can be used).
    #[wasm_bindgen(js_name = loadTokenizer)]
    pub fn load_tokenizer(
        &self,
        tokenizer_json: Option<String>,
        vocab_json: Option<String>,
        merges_txt: Option<String>,
        name: &str,
        tokenizer_config_json: Option<String>,
        chat_template: Option<String>,
    ) -> Result<JsValue, JsError> {
        let mut st = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let vocab_size = st
            .model
            .as_ref()
            .ok_or_else(|| JsError::new("load a model before its tokenizer"))?
            .weights
            .config
            .vocab_size;
        let tok = match (tokenizer_json, vocab_json, merges_txt) {
            (Some(j), _, _) => Tokenizer::from_json(&j, &format!("{name}/tokenizer.json")).map_err(js_err)?,
            (None, Some(v), Some(m)) => Tokenizer::from_vocab_merges(&v, &m, name).map_err(js_err)?,
            _ => return Err(JsError::new("give tokenizer.json, or vocab.json and merges.txt")),
        };
        let tok = match tokenizer_config_json {
            Some(c) => tok.with_config(&c, &format!("{name}/tokenizer_config.json")).map_err(js_err)?,
            None => tok,
        };
        let tok = match chat_template {
            Some(t) => tok.with_chat_template(&t, &format!("{name}/chat template")).map_err(js_err)?,
            None => tok,
        };
        if tok.vocab_size() > vocab_size {
            return Err(JsError::new(&format!(
                "{name}: the tokenizer has {} tokens but the model's vocab_size is {vocab_size}: does the tokenizer belong to this model?",
                tok.vocab_size()
            )));
        }
        let info = json!({ "name": name, "vocabSize": tok.vocab_size(), "chatTemplate": tok.chat_template().is_some() });
        st.tokenizer = Some((name.to_string(), tok));
        to_js(&info)
    }

    /// Loads a PEFT LoRA adapter (adapter_config.json text, adapter_model.safetensors bytes) to
    /// start training from, instead of a fresh seeded init. Needs the model first.
    #[wasm_bindgen(js_name = loadAdapter)]
    pub fn load_adapter(&self, config_json: &str, safetensors: &[u8], name: &str) -> Result<JsValue, JsError> {
        let mut st = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let model = st.model.as_ref().ok_or_else(|| JsError::new("load a model before an adapter"))?;
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

    /// Loads the training data for the next run: `.txt` (one record) or `.jsonl` with
    /// `{"text"}`, `{"prompt", "completion"}` or `{"input_ids"[, "labels"]}` records (text needs
    /// the tokenizer). Returns a preview `{name, format, records, tokens, windows, seq,
    /// usesTokenizer, samples: [{tokens, trainedTokens, ids, text}]}`: `tokens` counts the EOS after
    /// each record; `windows` is how many sequences of `seq` tokens (plus the shifted target) it makes.
    #[wasm_bindgen(js_name = loadDataset)]
    pub fn load_dataset(&self, name: &str, bytes: &[u8], seq: usize) -> Result<JsValue, JsError> {
        let mut st = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let d = st.parse_dataset(name, bytes)?;
        let preview = st.preview(&d, seq)?;
        // A run keeps the batches it was built with; the new data is for the next run.
        st.dataset = Some(d);
        Ok(preview)
    }

    /// Loads held-out data (same formats) for the eval loss of the next run and for `evaluate`.
    #[wasm_bindgen(js_name = loadEvalDataset)]
    pub fn load_eval_dataset(&self, name: &str, bytes: &[u8], seq: usize) -> Result<JsValue, JsError> {
        let mut st = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let d = st.parse_dataset(name, bytes)?;
        let preview = st.preview(&d, seq)?;
        st.eval_dataset = Some(d);
        Ok(preview)
    }

    /// Forgets the eval dataset.
    #[wasm_bindgen(js_name = clearEvalDataset)]
    pub fn clear_eval_dataset(&self) -> Result<(), JsError> {
        let mut st = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        st.eval_dataset = None;
        Ok(())
    }

    /// Builds a run from `options` (a JSON object; see the npm package's `TrainOptions`):
    /// validates every setting as the CLI does, plans GPU memory and records the step program.
    /// Returns the run's info (`{mode, step, steps, batch, seq, windows, evalTokens,
    /// trainableParameters, adapter, options, ...}`).
    #[wasm_bindgen(js_name = startTraining)]
    pub fn start_training(&self, options_json: &str) -> Result<JsValue, JsError> {
        let mut guard = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let st = &mut *guard;
        let o: TrainOptions =
            serde_json::from_str(options_json).map_err(|e| JsError::new(&format!("training options: {e}")))?;
        let mut spec = o.spec()?;
        let init = st.init_adapter.as_ref().filter(|_| o.use_init_adapter);
        if spec.full && init.is_some() {
            return Err(JsError::new(
                "mode \"full\" trains every weight and cannot start from the adapter given to loadAdapter: clear it, or set useInitAdapter false",
            ));
        }
        spec.init_adapter = init.map(|(n, _)| n.clone());
        let init = init.map(|(_, a)| a.clone());
        st.start(spec, init, None, o.readback_every)
    }

    /// Continues a run saved by `checkpoint()`: `files` is `{name: Uint8Array}` as it gave them.
    /// The model and dataset loaded now must be the checkpoint's (checked by size and fingerprint;
    /// text data also by the tokens it gives). An eval dataset loaded now serves the eval loss.
    /// Returns the run's info, as `startTraining` does (`step` = the checkpoint's step).
    #[wasm_bindgen(js_name = resumeRun)]
    pub fn resume_run(&self, files: JsValue, readback_every: usize) -> Result<JsValue, JsError> {
        let mut guard = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let st = &mut *guard;
        let ck = Checkpoint::read("checkpoint", &|name| checkpoint_file(&files, name)).map_err(js_err)?;
        if st.model.is_none() || st.dataset.is_none() {
            return Err(JsError::new(&format!(
                "load the run's model ({}) and dataset ({}) to resume it",
                ck.state.model.name, ck.state.data.path
            )));
        }
        let spec = RunSpec::from_state(&ck.state, "checkpoint").map_err(js_err)?;
        st.start(spec, None, Some(&ck), readback_every.max(1))
    }

    /// Queues the next training step. `control` is what the page asks of the loop after it:
    /// "run", "pause" (stop and keep a checkpoint) or "stop". Resolves to the step's events:
    /// `{step, logs: [{step, loss, lr, gradNorm}], eval: {step, loss, perplexity, tokens} | null,
    /// checkpoint, stop, finished}` — `checkpoint` true means a checkpoint is due now (call
    /// `checkpoint()` and store its files); `stop` ends the loop; `finished` means every step ran.
    pub async fn step(&self, control: &str) -> Result<JsValue, JsError> {
        let control = control_of(control)?;
        let mut guard = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let st = &mut *guard;
        let br = st.run.as_mut().ok_or_else(|| JsError::new("no training run: call startTraining first"))?;
        let ev = br.run.step(&st.gpu, &|| control).await.map_err(js_err)?;
        let finished = ev.step >= br.run.spec.steps;
        to_js(&json!({
            "step": ev.step,
            "logs": logs_json(&ev.logs),
            "eval": ev.eval.map(|e| eval_json(ev.step, &e)),
            "checkpoint": ev.checkpoint,
            "stop": ev.stop,
            "finished": finished,
        }))
    }

    /// Makes the run stop (with a checkpoint) after step `n`; undefined = run to the end.
    #[wasm_bindgen(js_name = setPauseAfter)]
    pub fn set_pause_after(&self, n: Option<u32>) -> Result<(), JsError> {
        let mut st = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let br = st.run.as_mut().ok_or_else(|| JsError::new("no training run: call startTraining first"))?;
        br.run.set_stop_after(n);
        Ok(())
    }

    /// Reads back the logs of steps queued but not reported yet.
    pub async fn flush(&self) -> Result<JsValue, JsError> {
        let mut guard = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let st = &mut *guard;
        let br = st.run.as_mut().ok_or_else(|| JsError::new("no training run: call startTraining first"))?;
        let logs = br.run.trainer.flush(&st.gpu).await.map_err(js_err)?;
        st.gpu.check().map_err(js_err)?;
        to_js(&logs_json(&logs))
    }

    /// Steps taken in the current run (0 without one).
    #[wasm_bindgen(js_name = stepsDone)]
    pub fn steps_done(&self) -> u32 {
        self.state.try_borrow().ok().and_then(|st| st.run.as_ref().map(|r| r.run.steps_done())).unwrap_or(0)
    }

    /// The eval loss `{step, loss, perplexity, tokens}`: with a run, of its current weights on
    /// its held-out data (evalSplit or the eval dataset); without one, of the loaded base model on
    /// the eval dataset (else the dataset) in windows of `seq` (default min(128, n_positions)),
    /// `batch` (default 8) at a time, as `webtune eval`.
    pub async fn evaluate(&self, seq: Option<usize>, batch: Option<usize>) -> Result<JsValue, JsError> {
        let mut guard = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let st = &mut *guard;
        if let Some(br) = st.run.as_ref() {
            if br.run.evaluator.is_none() {
                return Err(JsError::new(
                    "this run has no held-out data: set evalSplit, or load an eval dataset before training",
                ));
            }
            let r = br.run.evaluate(&st.gpu).await.map_err(js_err)?;
            let r = r.ok_or_else(|| JsError::new("evaluate: no position counts in the loss"))?;
            return to_js(&eval_json(br.run.steps_done(), &r));
        }
        let model = st.model.as_ref().ok_or_else(|| JsError::new("load a model first"))?;
        let cfg = &model.weights.config;
        let data = st
            .eval_dataset
            .as_ref()
            .or(st.dataset.as_ref())
            .ok_or_else(|| JsError::new("load a dataset (or an eval dataset) to evaluate on"))?;
        let seq = seq.unwrap_or(128.min(cfg.n_positions));
        let batch = batch.unwrap_or(8);
        if seq == 0 || batch == 0 || seq > cfg.n_positions {
            return Err(JsError::new(&format!(
                "evaluate: seq {seq} must be between 1 and the model's n_positions {}, and batch at least 1",
                cfg.n_positions
            )));
        }
        let batches = Batcher::new(data.stream(cfg.eos_token_id).map_err(js_err)?, batch, seq, false, 0)
            .map_err(|e| JsError::new(&format!("{}: {e}", data.name)))?
            .eval_batches();
        let infer = match &mut st.infer {
            Some(i) => i,
            slot => slot.insert(Infer {
                model: ModelGpu::new(&st.gpu, &model.weights, None, Trainable::None).map_err(js_err)?,
                generator: None,
            }),
        };
        let ev = Evaluator::new(&st.gpu, &infer.model, batches, seq).map_err(js_err)?;
        let r = ev.run(&st.gpu, &|| false).await.map_err(js_err)?;
        let r = r.ok_or_else(|| JsError::new("evaluate: no position counts in the loss"))?;
        st.gpu.check().map_err(js_err)?;
        to_js(&eval_json(0, &r))
    }

    /// Generates text after `prompt` (KV-cached, sampled on the CPU from one seeded generator;
    /// `options`: `{maxNewTokens, temperature, topK, topP, seed, adapted, stopAtEos, chat}`, the CLI's
    /// defaults). `adapted` (default true) uses the current run's model; false the base model.
    /// Returns `{text, ids, promptTokens, adapted, endOfText}` (`text` is the new text only).
    pub async fn generate(&self, prompt: &str, options_json: &str) -> Result<JsValue, JsError> {
        let mut guard = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let st = &mut *guard;
        let o: GenerateOptions =
            serde_json::from_str(options_json).map_err(|e| JsError::new(&format!("generation options: {e}")))?;
        let sc = o.sample();
        sc.validate(Style::Js).map_err(|e| JsError::new(&e))?;
        let model = st.model.as_ref().ok_or_else(|| JsError::new("load a model first"))?;
        let cfg = &model.weights.config;
        let (_, tok) = st.tokenizer.as_ref().ok_or_else(|| {
            JsError::new("generation needs the model's tokenizer: load tokenizer.json (or vocab.json + merges.txt) with the model")
        })?;
        let (prompt, stops) = if o.chat {
            let messages = [json!({"role": "user", "content": prompt})];
            let p = Prompt::chat(tok, &messages, cfg, sc.max_new_tokens)
                .map_err(|e| JsError::new(&e.replace("--chat needs", "chat: true needs").replace("--chat-template FILE", "loadTokenizer's chatTemplate")))?;
            (p, tok.chat_end_of_turn().into_iter().collect::<Vec<u32>>())
        } else {
            (Prompt::new(tok, prompt, cfg, sc.max_new_tokens).map_err(|e| JsError::new(&e))?, Vec::new())
        };
        let gpu = &st.gpu;
        let (gpt, slot): (&ModelGpu, &mut Option<Generator>) = match (&mut st.run, o.adapted) {
            (Some(br), true) => (&br.run.trainer.model, &mut br.gen_adapted),
            (None, true) => {
                return Err(JsError::new(
                    "nothing trained yet: start a run first, or generate with the base model (adapted: false)",
                ))
            }
            (Some(BrowserRun { base: Some(base), gen_base, .. }), false) => (&*base, gen_base),
            (_, false) => {
                let infer = match &mut st.infer {
                    Some(i) => i,
                    slot => slot.insert(Infer {
                        model: ModelGpu::new(gpu, &model.weights, None, Trainable::None).map_err(js_err)?,
                        generator: None,
                    }),
                };
                (&infer.model, &mut infer.generator)
            }
        };
        let generator = match slot {
            Some(g) if g.max_len() == prompt.max_len => g,
            slot => slot.insert(Generator::new(gpu, gpt, prompt.max_len).map_err(js_err)?),
        };
        generator.stop_also_at(&stops);
        let out = generator.generate(gpu, gpt, &prompt.ids, &sc).await.map_err(js_err)?;
        gpu.check().map_err(js_err)?;
        let (text, ids, eos) = sample_text_until(tok, out, cfg, sc.stop_at_eos, &stops);
        to_js(&json!({
            "text": text,
            "ids": ids,
            "promptTokens": prompt.ids.len(),
            "adapted": o.adapted,
            "endOfText": eos,
        }))
    }

    /// The current LoRA run's adapter in PEFT's format (waits for queued steps):
    /// `{adapterConfigJson: string, adapterSafetensors: Uint8Array}`.
    #[wasm_bindgen(js_name = exportAdapter)]
    pub async fn export_adapter(&self) -> Result<JsValue, JsError> {
        let mut guard = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let st = &mut *guard;
        let br = lora_run(&mut st.run)?;
        let files = br.run.output_files(&st.gpu).await.map_err(js_err)?;
        let file = |n: &str| file_in(&files, n);
        js_object(&[
            ("adapterConfigJson", JsValue::from_str(&String::from_utf8_lossy(file("adapter_config.json")))),
            ("adapterSafetensors", bytes_js(file("adapter_model.safetensors"))),
        ])
    }

    /// The current LoRA run's adapter as the GGUF file llama.cpp loads (`llama-cli -m base.gguf
    /// --lora adapter.gguf`), as `webtune export-gguf` writes it: `outtype` "f32" (the default)
    /// or "f16". Returns the file's bytes (a Uint8Array).
    #[wasm_bindgen(js_name = exportGguf)]
    pub async fn export_gguf(&self, outtype: Option<String>) -> Result<JsValue, JsError> {
        let dtype: crate::model::gguf::GgufDtype =
            outtype.as_deref().unwrap_or("f32").parse().map_err(|e: String| JsError::new(&format!("outtype: {e}")))?;
        let mut guard = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let st = &mut *guard;
        let br = lora_run(&mut st.run)?;
        let files = br.run.output_files(&st.gpu).await.map_err(js_err)?;
        let file = |n: &str| file_in(&files, n);
        let model = st.model.as_ref().ok_or_else(|| JsError::new("load a model first"))?;
        let name = format!("{}-lora", br.run.model_info.name);
        let config = String::from_utf8_lossy(file("adapter_config.json"));
        let cfg = &model.weights.config;
        let adapter =
            LoraAdapter::from_peft_bytes(&config, file("adapter_model.safetensors"), cfg, &name).map_err(js_err)?;
        Ok(bytes_js(&adapter.to_gguf(cfg, dtype, &name).map_err(js_err)?))
    }

    /// The current full fine-tuning run's model as a Hugging Face checkpoint (f32):
    /// `{configJson: string, modelSafetensors: Uint8Array}`.
    #[wasm_bindgen(js_name = exportModel)]
    pub async fn export_model(&self) -> Result<JsValue, JsError> {
        let mut guard = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let st = &mut *guard;
        let br = st.run.as_mut().ok_or_else(|| JsError::new("nothing to export: no training run yet"))?;
        if !br.run.spec.full {
            return Err(JsError::new("this run trains a LoRA adapter: use exportAdapter"));
        }
        let files = br.run.output_files(&st.gpu).await.map_err(js_err)?;
        let file = |n: &str| file_in(&files, n);
        js_object(&[
            ("configJson", JsValue::from_str(&String::from_utf8_lossy(file("config.json")))),
            ("modelSafetensors", bytes_js(file("model.safetensors"))),
        ])
    }

    /// Saves the run's state: reads back the logs not reported yet and returns
    /// `{step, logs, files: {name: Uint8Array}}`, the files being the CLI's checkpoint folder
    /// (trainer_state.json, optimizer.safetensors, the adapter or the full weights).
    /// `resumeRun(files)` continues from it.
    pub async fn checkpoint(&self) -> Result<JsValue, JsError> {
        let mut guard = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let st = &mut *guard;
        let br = st.run.as_mut().ok_or_else(|| JsError::new("nothing to save: no training run"))?;
        let logs = br.run.trainer.flush(&st.gpu).await.map_err(js_err)?;
        let files = br.run.checkpoint_files(&st.gpu).await.map_err(js_err)?;
        js_object(&[
            ("step", JsValue::from(br.run.steps_done())),
            ("logs", to_js(&logs_json(&logs))?),
            ("files", files_js(&files)?),
        ])
    }
}
