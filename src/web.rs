//! The browser API (wasm32 + WebGPU), exported with wasm-bindgen. It mirrors the native
//! `webtune train` / `generate` / `eval` flows on bytes instead of paths:
//!
//! ```text
//! Engine.create() -> loadModel(config.json, model.safetensors) -> [loadTokenizer(..)] -> [loadAdapter(..)]
//!   -> loadDataset(name, bytes, seq) -> [loadEvalDataset(..)] -> startTraining(options JSON)
//!   -> step() ... (logs arrive every `readbackEvery` steps) -> [evaluate()] -> [checkpoint()]
//!   -> flush() -> exportAdapter() | exportModel();   generate(prompt, options) at any point
//! resumeRun(checkpoint files) continues a run saved by checkpoint() (after a page reload).
//! ```
//!
//! Every error becomes a JS exception carrying the engine's message (the same text the CLI
//! prints after `error:`, with option names in camelCase). Calls are meant to be made one at a
//! time (the npm package's worker queues them); a call made while another is still running is
//! refused, not corrupted.
//!
//! Generation "without the adapter" during a LoRA run uses a second `Gpt2Gpu` that shares the
//! run's base-weight buffers and has no LoRA layers (no extra GPU memory). During a full
//! fine-tuning run the base weights are being changed, so the base model is uploaded once more
//! (from the host copy) the first time it is asked for, and freed when the next run starts.
//!
//! A checkpoint is the CLI's checkpoint folder as bytes (trainer_state.json, optimizer.safetensors,
//! the adapter or the full weights) plus browser_state.json (the model file's fingerprint).

use std::cell::{Cell, RefCell};
use std::fmt::Display;

use serde::Deserialize;
use serde_json::{json, Value};
use wasm_bindgen::prelude::*;

use crate::data::{records, Batcher, Record, TokenStream, Tokenizer};
use crate::generate::{Generator, SampleConfig};
use crate::gpu::{Gpu, Tensor};
use crate::model::gpt2::{Block, Gpt2Gpu, LinearParams, Param, Trainable};
use crate::model::{Gpt2Weights, LoraAdapter, LoraConfig};
use crate::train::checkpoint::{
    self, DataInfo, Hyperparameters, ModelInfo, RunOptions, TrainerState, OPTIMIZER_FILE, STATE_FILE,
};
use crate::train::eval::{EvalResult, Evaluator};
use crate::train::schedule::{LrSchedule, Schedule};
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
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.0.encode(text)
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

/// An f32 as the JSON number with its shortest decimal form (0.01, not 0.009999999776); null if not finite.
fn num(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Into::into)
}

/// Training options, as JSON from JS (camelCase; unknown keys are refused so a typo is not ignored).
#[derive(Deserialize, Debug, Clone)]
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
    /// The worker's loop acts on it; the engine records it in checkpoints.
    eval_every: u32,
    /// Save a checkpoint every N steps; 0 = only on pause. Recorded like `evalEvery`.
    checkpoint_every: u32,
    /// Steps between loss readbacks: 1 reports every step; more keeps the GPU busier.
    readback_every: usize,
}

impl Default for TrainOptions {
    /// The CLI's defaults.
    fn default() -> Self {
        TrainOptions {
            mode: "lora".into(),
            rank: 8,
            alpha: 16.0,
            targets: vec!["c_attn".into(), "c_proj".into(), "c_fc".into()],
            use_init_adapter: true,
            lr: 2e-4,
            schedule: "constant".into(),
            warmup: 0,
            min_lr: 0.0,
            steps: 100,
            batch: 8,
            seq: 128,
            grad_accum: 1,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            grad_clip: 1.0,
            seed: 0,
            shuffle: true,
            eval_split: 0.0,
            eval_every: 0,
            checkpoint_every: 0,
            readback_every: 4,
        }
    }
}

/// Generation options, as JSON from JS.
#[derive(Deserialize, Debug, Clone)]
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
        }
    }
}

/// The JS spelling of a setting named the CLI's way (`weight-decay` -> `weightDecay`).
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
    /// Size and FNV-1a 64 of model.safetensors: what a checkpoint checks the model by.
    bytes: u64,
    fnv: String,
}

impl Model {
    /// The model's identity as a checkpoint records it.
    fn info(&self) -> ModelInfo {
        let c = &self.weights.config;
        ModelInfo {
            path: self.name.clone(),
            name: self.name.clone(),
            n_layer: c.n_layer,
            n_head: c.n_head,
            n_embd: c.n_embd,
            vocab_size: c.vocab_size,
            n_positions: c.n_positions,
            eos_token_id: c.eos_token_id,
            weights_bytes: self.bytes,
        }
    }
}

fn shape_of(m: &ModelInfo) -> String {
    format!(
        "{} layers, {} heads, n_embd {}, vocab {}, n_positions {}",
        m.n_layer, m.n_head, m.n_embd, m.vocab_size, m.n_positions
    )
}

struct Dataset {
    name: String,
    bytes: u64,
    fnv: String,
    records: Vec<Record>,
    /// The tokenizer's name, when the data is text.
    tokenizer: Option<String>,
    format: &'static str,
}

/// The record format of a dataset file, for the preview.
fn format_of(name: &str, bytes: &[u8]) -> &'static str {
    if name.to_ascii_lowercase().ends_with(".txt") {
        return "text";
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(1 << 16)]);
    let first = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let has = |k: &str| first.contains(&format!("\"{k}\""));
    if has("input_ids") {
        "token ids"
    } else if has("prompt") || has("completion") {
        "prompt + completion"
    } else {
        "text"
    }
}

/// A model without LoRA layers or gradients that shares `m`'s base-weight buffers.
fn base_view(m: &Gpt2Gpu) -> Gpt2Gpu {
    let shared = |t: &Tensor| Tensor {
        buffer: t.buffer.clone(),
        shape: t.shape.clone(),
        label: t.label.clone(),
    };
    let frozen = |p: &Param| Param {
        name: p.name.clone(),
        value: shared(&p.value),
        grad: None,
    };
    let linear = |l: &LinearParams| LinearParams {
        kind: l.kind,
        w: frozen(&l.w),
        b: frozen(&l.b),
        lora: None,
        fin: l.fin,
        fout: l.fout,
    };
    Gpt2Gpu {
        config: m.config.clone(),
        trainable: Trainable::None,
        lora_config: None,
        wte: frozen(&m.wte),
        wpe: frozen(&m.wpe),
        blocks: m
            .blocks
            .iter()
            .map(|b| Block {
                ln_1: (frozen(&b.ln_1.0), frozen(&b.ln_1.1)),
                c_attn: linear(&b.c_attn),
                attn_proj: linear(&b.attn_proj),
                ln_2: (frozen(&b.ln_2.0), frozen(&b.ln_2.1)),
                c_fc: linear(&b.c_fc),
                mlp_proj: linear(&b.mlp_proj),
            })
            .collect(),
        ln_f: (frozen(&m.ln_f.0), frozen(&m.ln_f.1)),
        lm_head: m.lm_head.as_ref().map(frozen),
    }
}

/// The base model on the GPU for generation and evaluation outside a LoRA run.
struct Infer {
    model: Gpt2Gpu,
    generator: Option<Generator>,
}

struct Run {
    trainer: Trainer,
    sched: LrSchedule,
    hyper: Hyperparameters,
    model_info: ModelInfo,
    data_info: DataInfo,
    eval_data: Option<String>,
    eval_every: u32,
    checkpoint_every: u32,
    windows: usize,
    evaluator: Option<Evaluator>,
    /// LoRA runs: the base model, sharing the run's buffers.
    base: Option<Gpt2Gpu>,
    gen_adapted: Option<Generator>,
    gen_base: Option<Generator>,
    /// The step the run (re)started at.
    start_step: u32,
}

struct State {
    gpu: Gpu,
    model: Option<Model>,
    tokenizer: Option<(String, Tokenizer)>,
    init_adapter: Option<(String, LoraAdapter)>,
    dataset: Option<Dataset>,
    eval_dataset: Option<Dataset>,
    run: Option<Run>,
    infer: Option<Infer>,
}

/// The engine behind one page or worker: a GPU device, the loaded model, data and run.
#[wasm_bindgen]
pub struct Engine {
    state: RefCell<State>,
}

const BUSY: &str = "the engine is busy with another call; wait for it to finish";

/// AdamW's (m, v) by trained tensor name.
type Moments = std::collections::BTreeMap<String, (crate::model::HostTensor, crate::model::HostTensor)>;

/// Everything a run is built from (new or resumed).
struct RunPlan<'a> {
    weights: &'a Gpt2Weights,
    adapter: Option<LoraAdapter>,
    hyper: Hyperparameters,
    sched: LrSchedule,
    batcher: Batcher,
    eval_stream: Option<TokenStream>,
    eval_data: Option<String>,
    model_info: ModelInfo,
    data_info: DataInfo,
    eval_every: u32,
    checkpoint_every: u32,
    readback_every: usize,
    /// Resuming: (step, data position, AdamW moments by tensor name).
    restore: Option<(u32, u64, Moments)>,
}

fn adamw_of(h: &Hyperparameters) -> AdamWConfig {
    AdamWConfig {
        lr: h.lr,
        beta1: h.beta1,
        beta2: h.beta2,
        eps: h.eps,
        weight_decay: h.weight_decay,
        grad_clip: h.grad_clip,
    }
}

fn build_run(gpu: &Gpu, p: RunPlan<'_>) -> Result<Run, JsError> {
    let h = &p.hyper;
    let trainable = if h.full { Trainable::Full } else { Trainable::Lora };
    let model = Gpt2Gpu::new(gpu, p.weights, p.adapter.as_ref(), trainable).map_err(js_err)?;
    let mut config = TrainConfig::new(h.batch, h.seq, adamw_of(h));
    config.grad_accum = h.grad_accum;
    config.readback_every = p.readback_every.min(h.steps as usize).max(1);
    let windows = p.batcher.n_windows;
    let mut trainer = Trainer::new(gpu, model, p.batcher, config).map_err(js_err)?;
    let mut start_step = 0;
    if let Some((step, position, moments)) = &p.restore {
        trainer
            .restore(gpu, *step, *position, moments, &format!("checkpoint/{OPTIMIZER_FILE}"))
            .map_err(js_err)?;
        start_step = *step;
    }
    let evaluator = match p.eval_stream {
        Some(s) => {
            let batches = Batcher::new(s, h.batch, h.seq, false, 0)
                .map_err(|e| JsError::new(&format!("eval data: {e}")))?
                .eval_batches();
            let ev = Evaluator::new(gpu, &trainer.model, batches, h.seq)
                .map_err(|e| JsError::new(&format!("eval: {e}; try a smaller batch")))?;
            Some(ev)
        }
        None => None,
    };
    let base = (!h.full).then(|| base_view(&trainer.model));
    gpu.check().map_err(js_err)?;
    Ok(Run {
        trainer,
        sched: p.sched,
        hyper: p.hyper,
        model_info: p.model_info,
        data_info: p.data_info,
        eval_data: p.eval_data,
        eval_every: p.eval_every,
        checkpoint_every: p.checkpoint_every,
        windows,
        evaluator,
        base,
        gen_adapted: None,
        gen_base: None,
        start_step,
    })
}

/// What the page learns about a run: its shape and every setting (camelCase, the options'
/// names), so a resumed run can refill a form.
fn run_info(run: &Run) -> Value {
    let h = &run.hyper;
    let lora = run.trainer.model.lora_config.as_ref();
    let trainable: usize = run.trainer.model.trained().iter().map(|p| p.value.len()).sum();
    json!({
        "mode": if h.full { "full" } else { "lora" },
        "step": run.start_step,
        "steps": h.steps,
        "batch": h.batch,
        "seq": h.seq,
        "gradAccum": h.grad_accum,
        "windows": run.windows,
        "readbackEvery": run.trainer.config.readback_every,
        "evalEvery": run.eval_every,
        "checkpointEvery": run.checkpoint_every,
        "evalTokens": run.evaluator.as_ref().map_or(0, |e| e.tokens()),
        "evalData": run.eval_data,
        "trainableParameters": trainable,
        "adapter": lora.map(|c| json!({ "r": c.r, "alpha": num(c.alpha), "targets": c.targets })),
        "model": run.model_info.name,
        "dataset": run.data_info.path,
        "options": {
            "mode": if h.full { "full" } else { "lora" },
            "rank": h.lora_rank,
            "alpha": h.lora_alpha.map(num),
            "targets": h.lora_targets,
            "lr": num(h.lr),
            "schedule": h.schedule,
            "warmup": h.warmup,
            "minLr": num(h.min_lr),
            "steps": h.steps,
            "batch": h.batch,
            "seq": h.seq,
            "gradAccum": h.grad_accum,
            "weightDecay": num(h.weight_decay),
            "beta1": num(h.beta1),
            "beta2": num(h.beta2),
            "eps": num(h.eps),
            "gradClip": num(h.grad_clip),
            "seed": h.seed,
            "shuffle": h.shuffle,
            "evalSplit": num(h.eval_split.unwrap_or(0.0)),
            "evalEvery": run.eval_every,
            "checkpointEvery": run.checkpoint_every,
        },
    })
}

fn eval_json(step: u32, r: &EvalResult) -> Value {
    json!({ "step": step, "loss": num(r.loss), "perplexity": num(r.perplexity), "tokens": r.tokens })
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
        let cfg = &model.weights.config;
        let wanted = Cell::new(false);
        let tok = self.tokenizer.as_ref();
        let encode = |text: &str| {
            wanted.set(true);
            tok.map(|(_, t)| t.encode(text)).unwrap_or_default()
        };
        let parsed = records::parse_dataset(bytes, name, cfg.vocab_size, &encode);
        if wanted.get() && tok.is_none() {
            return Err(JsError::new(&format!(
                "{name}: text data needs a tokenizer: give the model's tokenizer.json (or vocab.json + merges.txt) with it"
            )));
        }
        Ok(Dataset {
            name: name.to_string(),
            bytes: bytes.len() as u64,
            fnv: checkpoint::hex(checkpoint::fnv1a64(bytes)),
            records: parsed.map_err(js_err)?,
            tokenizer: if wanted.get() {
                tok.map(|(n, _)| n.clone())
            } else {
                None
            },
            format: format_of(name, bytes),
        })
    }

    /// `{name, format, records, tokens, windows, seq, usesTokenizer, firstTokens, samples}`.
    fn preview(&self, d: &Dataset, seq: usize) -> Result<JsValue, JsError> {
        let eos = self.model()?.weights.config.eos_token_id;
        let tokens = TokenStream::new(&d.records, eos).tokens.len();
        let tok = self.tokenizer.as_ref().map(|(_, t)| t);
        let samples: Vec<Value> = d
            .records
            .iter()
            .take(3)
            .map(|r| {
                let counted = r
                    .labels
                    .as_ref()
                    .map_or(r.input_ids.len(), |l| l.iter().filter(|&&y| y >= 0).count());
                let mut text = tok.map(|t| t.decode(&r.input_ids[..r.input_ids.len().min(96)]));
                if let Some(s) = text.as_mut() {
                    if s.chars().count() > 240 {
                        *s = s.chars().take(240).collect::<String>() + "…";
                    }
                }
                json!({
                    "tokens": r.input_ids.len(),
                    "trainedTokens": counted,
                    "ids": r.input_ids.iter().take(24).collect::<Vec<_>>(),
                    "text": text,
                })
            })
            .collect();
        to_js(&json!({
            "name": d.name,
            "format": d.format,
            "bytes": d.bytes,
            "records": d.records.len(),
            "tokens": tokens,
            "seq": seq,
            "windows": tokens / (seq + 1),
            "usesTokenizer": d.tokenizer.is_some(),
            "firstTokens": d.records.first().map(|r| r.input_ids.iter().take(32).copied().collect::<Vec<_>>()),
            "samples": samples,
        }))
    }

    /// The training records and the held-out stream of a run (split, or the eval dataset).
    fn split_data(
        &self,
        h: &Hyperparameters,
        data: &Dataset,
    ) -> Result<(TokenStream, Option<TokenStream>, Option<String>), JsError> {
        let eos = self.model()?.weights.config.eos_token_id;
        let (train, held) = match h.eval_split {
            Some(f) => {
                let (t, e) = records::split_eval(data.records.clone(), f, h.seed)
                    .map_err(|e| JsError::new(&format!("{}: evalSplit {f}: {e}", data.name)))?;
                (t, Some(e))
            }
            None => (data.records.clone(), None),
        };
        let (eval, name) = match (held, &self.eval_dataset) {
            (Some(e), _) => (
                Some(TokenStream::new(&e, eos)),
                Some(format!("{} (held out {})", data.name, num(h.eval_split.unwrap_or(0.0)))),
            ),
            (None, Some(d)) => (Some(TokenStream::new(&d.records, eos)), Some(d.name.clone())),
            (None, None) => (None, None),
        };
        Ok((TokenStream::new(&train, eos), eval, name))
    }
}

fn data_info(d: &Dataset, stream: &TokenStream, seq: usize) -> DataInfo {
    DataInfo {
        path: d.name.clone(),
        bytes: d.bytes,
        fnv1a64: d.fnv.clone(),
        tokenizer: d.tokenizer.clone(),
        tokens: stream.tokens.len(),
        windows: stream.tokens.len() / (seq + 1),
        stream_fnv1a64: checkpoint::hex(checkpoint::stream_fnv1a64(stream)),
    }
}

/// Checks the options as the CLI does (names in camelCase) and resolves the schedule.
fn check_options(o: &TrainOptions) -> Result<(AdamWConfig, Schedule), JsError> {
    let adamw = AdamWConfig {
        lr: o.lr,
        beta1: o.beta1,
        beta2: o.beta2,
        eps: o.eps,
        weight_decay: o.weight_decay,
        grad_clip: o.grad_clip,
    };
    adamw.validate(js_option_name).map_err(js_err)?;
    let schedule: Schedule = o
        .schedule
        .parse()
        .map_err(|e: String| JsError::new(&format!("schedule: {e}")))?;
    if !(o.min_lr.is_finite() && o.min_lr >= 0.0 && o.min_lr <= o.lr) {
        return Err(JsError::new(&format!(
            "minLr {} is invalid: it must be in [0, lr]",
            o.min_lr
        )));
    }
    if !(o.eval_split.is_finite() && o.eval_split >= 0.0 && o.eval_split < 1.0) {
        return Err(JsError::new(&format!(
            "evalSplit {} is invalid: it must be in [0, 1) (0 = no held-out split)",
            o.eval_split
        )));
    }
    if o.mode != "lora" && o.mode != "full" {
        return Err(JsError::new(&format!(
            "mode {:?} is invalid: it must be \"lora\" or \"full\"",
            o.mode
        )));
    }
    if o.steps == 0 || o.batch == 0 || o.seq == 0 || o.grad_accum == 0 || o.readback_every == 0 {
        return Err(JsError::new(
            "steps, batch, seq, gradAccum and readbackEvery must be at least 1",
        ));
    }
    Ok((adamw, schedule))
}

/// Reads one file of a checkpoint given as a JS object `{name: Uint8Array}`.
fn checkpoint_file(files: &JsValue, name: &str) -> Result<Vec<u8>, JsError> {
    let v = js_sys::Reflect::get(files, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED);
    if v.is_undefined() || v.is_null() {
        return Err(JsError::new(&format!("the saved checkpoint lacks {name}")));
    }
    if !v.is_instance_of::<js_sys::Uint8Array>() {
        return Err(JsError::new(&format!("checkpoint file {name}: expected a Uint8Array")));
    }
    Ok(js_sys::Uint8Array::new(&v).to_vec())
}

fn utf8(bytes: Vec<u8>, name: &str) -> Result<String, JsError> {
    String::from_utf8(bytes).map_err(|_| JsError::new(&format!("checkpoint file {name}: not valid UTF-8")))
}

const BROWSER_STATE_FILE: &str = "browser_state.json";

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
            "summary": r.to_string(),
        }))
    }

    /// Loads a Hugging Face GPT-2 model from the text of config.json and the bytes of
    /// model.safetensors (f32, f16 or bf16). `name` (e.g. the folder) prefixes messages.
    /// Replaces the model, tokenizer, adapter, data and run loaded before. Returns the model's shape.
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
        let fnv = checkpoint::hex(checkpoint::fnv1a64(safetensors));
        let info = json!({
            "name": name,
            "nLayer": c.n_layer,
            "nHead": c.n_head,
            "nEmbd": c.n_embd,
            "vocabSize": c.vocab_size,
            "nPositions": c.n_positions,
            "eosTokenId": c.eos_token_id,
            "parameters": parameters,
            "fingerprint": fnv,
        });
        st.run = None;
        st.infer = None;
        st.dataset = None;
        st.eval_dataset = None;
        st.init_adapter = None;
        st.tokenizer = None;
        st.model = Some(Model {
            name: name.to_string(),
            weights,
            bytes: safetensors.len() as u64,
            fnv,
        });
        to_js(&info)
    }

    /// Loads the model's tokenizer (for text data and generation): tokenizer.json's text, or
    /// vocab.json + merges.txt. Needs the model first (its vocabulary must hold every token).
    /// Returns `{name, vocabSize}`.
    #[wasm_bindgen(js_name = loadTokenizer)]
    pub fn load_tokenizer(
        &self,
        tokenizer_json: Option<String>,
        vocab_json: Option<String>,
        merges_txt: Option<String>,
        name: &str,
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
        if tok.vocab_size() > vocab_size {
            return Err(JsError::new(&format!(
                "{name}: the tokenizer has {} tokens but the model's vocab_size is {vocab_size}: does the tokenizer belong to this model?",
                tok.vocab_size()
            )));
        }
        let info = json!({ "name": name, "vocabSize": tok.vocab_size() });
        st.tokenizer = Some((name.to_string(), tok));
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
        let (_, schedule) = check_options(&o)?;
        let full = o.mode == "full";
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
        if o.eval_split > 0.0 && st.eval_dataset.is_some() {
            return Err(JsError::new(
                "evalSplit holds records of the dataset out, and an eval dataset is loaded too: use one (evalSplit 0, or clear the eval dataset)",
            ));
        }
        let init = st.init_adapter.as_ref().filter(|_| o.use_init_adapter);
        if full && init.is_some() {
            return Err(JsError::new(
                "mode \"full\" trains every weight and cannot start from the adapter given to loadAdapter: clear it, or set useInitAdapter false",
            ));
        }
        let adapter = match (full, init) {
            (true, _) => None,
            (false, Some((_, a))) => Some(a.clone()),
            (false, None) => {
                let lc = LoraConfig::new(o.rank, o.alpha, o.targets.clone(), 0.0).map_err(js_err)?;
                Some(LoraAdapter::init(lc, cfg, o.seed))
            }
        };
        let lc = adapter.as_ref().map(|a| &a.config);
        let hyper = Hyperparameters {
            full,
            lora_rank: lc.map(|c| c.r),
            lora_alpha: lc.map(|c| c.alpha),
            lora_targets: lc.map(|c| c.targets.clone()),
            init_adapter: init.map(|(n, _)| n.clone()),
            steps: o.steps,
            batch: o.batch,
            seq: o.seq,
            grad_accum: o.grad_accum,
            lr: o.lr,
            weight_decay: o.weight_decay,
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            grad_clip: o.grad_clip,
            schedule: schedule.to_string(),
            warmup: o.warmup,
            min_lr: o.min_lr,
            seed: o.seed,
            shuffle: o.shuffle,
            eval_split: (o.eval_split > 0.0).then_some(o.eval_split),
        };
        let (stream, eval_stream, eval_data) = st.split_data(&hyper, data)?;
        let info = data_info(data, &stream, o.seq);
        let batcher = Batcher::new(stream, o.batch, o.seq, o.shuffle, o.seed)
            .map_err(|e| JsError::new(&format!("{}: {e}", data.name)))?;
        let plan = RunPlan {
            weights: &model.weights,
            adapter,
            sched: LrSchedule {
                kind: schedule,
                lr: o.lr,
                warmup: o.warmup,
                total: o.steps,
                min_lr: o.min_lr,
            },
            hyper,
            batcher,
            eval_stream,
            eval_data,
            model_info: model.info(),
            data_info: info,
            eval_every: o.eval_every,
            checkpoint_every: o.checkpoint_every,
            readback_every: o.readback_every,
            restore: None,
        };
        // free the previous run's (and the inference model's) GPU buffers before allocating new ones
        st.run = None;
        st.infer = None;
        let run = build_run(&st.gpu, plan)?;
        let info = run_info(&run);
        st.run = Some(run);
        to_js(&info)
    }

    /// Continues a run saved by `checkpoint()`: `files` is `{name: Uint8Array}` as it gave them.
    /// The model and dataset loaded now must be the checkpoint's (checked by size and fingerprint;
    /// text data also by the tokens it gives). An eval dataset loaded now serves the eval loss.
    /// Returns the run's info, as `startTraining` does (`step` = the checkpoint's step).
    #[wasm_bindgen(js_name = resumeRun)]
    pub fn resume_run(&self, files: JsValue, readback_every: usize) -> Result<JsValue, JsError> {
        let mut guard = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let st = &mut *guard;
        let state = TrainerState::from_json(
            &utf8(checkpoint_file(&files, STATE_FILE)?, STATE_FILE)?,
            &format!("checkpoint/{STATE_FILE}"),
        )
        .map_err(js_err)?;
        let browser: Value =
            serde_json::from_str(&utf8(checkpoint_file(&files, BROWSER_STATE_FILE)?, BROWSER_STATE_FILE)?)
                .map_err(|e| JsError::new(&format!("checkpoint/{BROWSER_STATE_FILE}: {e}")))?;
        let h = state.hyperparameters.clone();
        let saved_model = &state.model;
        let saved_fnv = browser.get("model_fnv1a64").and_then(Value::as_str).unwrap_or("");
        let model = st.model.as_ref().ok_or_else(|| {
            JsError::new(&format!(
                "load the run's model ({}) and dataset ({}) to resume it",
                saved_model.name, state.data.path
            ))
        })?;
        let now = model.info();
        if shape_of(&now) != shape_of(saved_model)
            || now.weights_bytes != saved_model.weights_bytes
            || model.fnv != saved_fnv
        {
            return Err(JsError::new(&format!(
                "model {}: not the checkpoint's base model {} ({}, model.safetensors {} bytes, fingerprint {}; this one: {}, {} bytes, fingerprint {}): load that model to resume the run",
                now.name,
                saved_model.name,
                shape_of(saved_model),
                saved_model.weights_bytes,
                saved_fnv,
                shape_of(&now),
                now.weights_bytes,
                model.fnv
            )));
        }
        let saved_data = &state.data;
        let data = st
            .dataset
            .as_ref()
            .ok_or_else(|| JsError::new(&format!("load the run's dataset ({}) to resume it", saved_data.path)))?;
        if (data.bytes, &data.fnv) != (saved_data.bytes, &saved_data.fnv1a64) {
            return Err(JsError::new(&format!(
                "dataset {}: not the checkpoint's data {} ({} bytes, fingerprint {}; this file: {} bytes, fingerprint {}): load that file to resume the run",
                data.name, saved_data.path, saved_data.bytes, saved_data.fnv1a64, data.bytes, data.fnv
            )));
        }
        if state.step >= h.steps {
            return Err(JsError::new(&format!(
                "the checkpoint is at step {} of {}: nothing left to train",
                state.step, h.steps
            )));
        }
        if h.eval_split.is_some() && st.eval_dataset.is_some() {
            return Err(JsError::new(
                "the run holds records of its dataset out for evaluation (evalSplit): clear the eval dataset to resume it",
            ));
        }
        let (stream, eval_stream, eval_data) = st.split_data(&h, data)?;
        let info = data_info(data, &stream, h.seq);
        if info.stream_fnv1a64 != saved_data.stream_fnv1a64 {
            return Err(JsError::new(&format!(
                "dataset {}: the same file gives other tokens than in the checkpoint's run (another tokenizer?)",
                data.name
            )));
        }
        let kind: Schedule = h.schedule.parse().map_err(|e: String| JsError::new(&e))?;
        let batcher = Batcher::new(stream, h.batch, h.seq, h.shuffle, h.seed)
            .map_err(|e| JsError::new(&format!("{}: {e}", data.name)))?;
        let cfg = &model.weights.config;
        let (full_weights, adapter) = if h.full {
            let config = utf8(checkpoint_file(&files, "config.json")?, "config.json")?;
            let bytes = checkpoint_file(&files, "model.safetensors")?;
            let w = Gpt2Weights::from_bytes(
                &config,
                "checkpoint/config.json",
                &bytes,
                "checkpoint/model.safetensors",
            )
            .map_err(js_err)?;
            (Some(w), None)
        } else {
            let config = utf8(checkpoint_file(&files, "adapter_config.json")?, "adapter_config.json")?;
            let bytes = checkpoint_file(&files, "adapter_model.safetensors")?;
            let a = LoraAdapter::from_peft_bytes(&config, &bytes, cfg, "checkpoint").map_err(js_err)?;
            (None, Some(a))
        };
        let moments = checkpoint::optimizer_from_safetensors(
            &checkpoint_file(&files, OPTIMIZER_FILE)?,
            &format!("checkpoint/{OPTIMIZER_FILE}"),
        )
        .map_err(js_err)?;
        let sched = LrSchedule {
            kind,
            lr: h.lr,
            warmup: h.warmup,
            total: h.steps,
            min_lr: h.min_lr,
        };
        let model_info = model.info();
        let (eval_every, checkpoint_every) = (
            state.options.eval_every.unwrap_or(0),
            state.options.save_every.unwrap_or(0),
        );
        st.run = None;
        st.infer = None;
        let plan = RunPlan {
            weights: full_weights.as_ref().unwrap_or(&model.weights),
            adapter,
            hyper: h,
            sched,
            batcher,
            eval_stream,
            eval_data,
            model_info,
            data_info: info,
            eval_every,
            checkpoint_every,
            readback_every: readback_every.max(1),
            restore: Some((state.step, state.data_position, moments)),
        };
        let run = build_run(&st.gpu, plan)?;
        let info = run_info(&run);
        st.run = Some(run);
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
        let s = run.trainer.steps_done() + 1;
        if s > run.hyper.steps {
            return Err(JsError::new(&format!(
                "the run is finished ({} steps); start a new one",
                run.hyper.steps
            )));
        }
        // update s runs at lr_at(s - 1), as HF's LambdaLR and `webtune train` do
        let mut logs = run
            .trainer
            .step(&st.gpu, run.sched.lr_at(s - 1))
            .await
            .map_err(js_err)?;
        if s == run.hyper.steps {
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
            .and_then(|st| st.run.as_ref().map(|r| r.trainer.steps_done()))
            .unwrap_or(0)
    }

    /// The eval loss `{step, loss, perplexity, tokens}`: with a run, of its current weights on
    /// its held-out data (evalSplit or the eval dataset); without one, of the loaded base model on
    /// the eval dataset (else the dataset) in windows of `seq` (default min(128, n_positions)),
    /// `batch` (default 8) at a time, as `webtune eval`.
    pub async fn evaluate(&self, seq: Option<usize>, batch: Option<usize>) -> Result<JsValue, JsError> {
        let mut guard = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let st = &mut *guard;
        if let Some(run) = st.run.as_ref() {
            let ev = run.evaluator.as_ref().ok_or_else(|| {
                JsError::new("this run has no held-out data: set evalSplit, or load an eval dataset before training")
            })?;
            let r = ev.run(&st.gpu, &|| false).await.map_err(js_err)?;
            let r = r.ok_or_else(|| JsError::new("evaluate: no position counts in the loss"))?;
            st.gpu.check().map_err(js_err)?;
            return to_js(&eval_json(run.trainer.steps_done(), &r));
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
        let stream = TokenStream::new(&data.records, cfg.eos_token_id);
        let batches = Batcher::new(stream, batch, seq, false, 0)
            .map_err(|e| JsError::new(&format!("{}: {e}", data.name)))?
            .eval_batches();
        let infer = match &mut st.infer {
            Some(i) => i,
            slot => slot.insert(Infer {
                model: Gpt2Gpu::new(&st.gpu, &model.weights, None, Trainable::None).map_err(js_err)?,
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
    /// `options`: `{maxNewTokens, temperature, topK, topP, seed, adapted, stopAtEos}`, the CLI's
    /// defaults). `adapted` (default true) uses the current run's model; false the base model.
    /// Returns `{text, ids, promptTokens, adapted, endOfText}` (`text` is the new text only).
    pub async fn generate(&self, prompt: &str, options_json: &str) -> Result<JsValue, JsError> {
        let mut guard = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let st = &mut *guard;
        let o: GenerateOptions =
            serde_json::from_str(options_json).map_err(|e| JsError::new(&format!("generation options: {e}")))?;
        if !(o.temperature.is_finite() && o.temperature >= 0.0) {
            return Err(JsError::new(&format!(
                "temperature {} is invalid: it must be >= 0 (0 = greedy)",
                o.temperature
            )));
        }
        if !(o.top_p > 0.0 && o.top_p <= 1.0) {
            return Err(JsError::new(&format!(
                "topP {} is invalid: it must be in (0, 1] (1 = off)",
                o.top_p
            )));
        }
        if o.max_new_tokens == 0 {
            return Err(JsError::new("maxNewTokens must be at least 1"));
        }
        let model = st.model.as_ref().ok_or_else(|| JsError::new("load a model first"))?;
        let cfg = &model.weights.config;
        let (_, tok) = st.tokenizer.as_ref().ok_or_else(|| {
            JsError::new("generation needs the model's tokenizer: load tokenizer.json (or vocab.json + merges.txt) with the model")
        })?;
        let mut ids = tok.encode(prompt);
        if ids.is_empty() {
            ids.push(cfg.bos_token_id); // GPT-2's unconditional start
        }
        if ids.len() >= cfg.n_positions {
            return Err(JsError::new(&format!(
                "the prompt is {} tokens but the model's n_positions is {}: at most {} prompt tokens leave room for a new one",
                ids.len(),
                cfg.n_positions,
                cfg.n_positions - 1
            )));
        }
        let max_len = (ids.len() + o.max_new_tokens).min(cfg.n_positions);
        let gpu = &st.gpu;
        let (gpt, slot): (&Gpt2Gpu, &mut Option<Generator>) = match (&mut st.run, o.adapted) {
            (Some(run), true) => (&run.trainer.model, &mut run.gen_adapted),
            (None, true) => {
                return Err(JsError::new(
                    "nothing trained yet: start a run first, or generate with the base model (adapted: false)",
                ))
            }
            (
                Some(Run {
                    base: Some(base),
                    gen_base,
                    ..
                }),
                false,
            ) => (&*base, gen_base),
            (_, false) => {
                let infer = match &mut st.infer {
                    Some(i) => i,
                    slot => slot.insert(Infer {
                        model: Gpt2Gpu::new(gpu, &model.weights, None, Trainable::None).map_err(js_err)?,
                        generator: None,
                    }),
                };
                (&infer.model, &mut infer.generator)
            }
        };
        let generator = match slot {
            Some(g) if g.max_len() == max_len => g,
            slot => slot.insert(Generator::new(gpu, gpt, max_len).map_err(js_err)?),
        };
        let sc = SampleConfig {
            max_new_tokens: o.max_new_tokens,
            temperature: o.temperature,
            top_k: o.top_k,
            top_p: o.top_p,
            seed: o.seed,
            stop_at_eos: o.stop_at_eos,
        };
        let mut out = generator.generate(gpu, gpt, &ids, &sc).await.map_err(js_err)?;
        gpu.check().map_err(js_err)?;
        let eos = o.stop_at_eos && out.last() == Some(&cfg.eos_token_id);
        if eos {
            out.pop(); // the end-of-text token ends the sample; it is not part of the text
        }
        to_js(&json!({
            "text": tok.decode(&out),
            "ids": out,
            "promptTokens": ids.len(),
            "adapted": o.adapted,
            "endOfText": eos,
        }))
    }

    /// The current LoRA run's adapter in PEFT's format (waits for queued steps):
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
            .ok_or_else(|| JsError::new("this run fine-tunes every weight, not an adapter: use exportModel"))?;
        st.gpu.check().map_err(js_err)?;
        let (config, bytes) = adapter.to_peft_bytes(&run.model_info.name).map_err(js_err)?;
        js_object(&[
            ("adapterConfigJson", JsValue::from_str(&config)),
            ("adapterSafetensors", bytes_js(&bytes)),
        ])
    }

    /// The current full fine-tuning run's model as a Hugging Face checkpoint (f32):
    /// `{configJson: string, modelSafetensors: Uint8Array}`.
    #[wasm_bindgen(js_name = exportModel)]
    pub async fn export_model(&self) -> Result<JsValue, JsError> {
        let guard = self.state.try_borrow().map_err(|_| JsError::new(BUSY))?;
        let st = &*guard;
        let run = st
            .run
            .as_ref()
            .ok_or_else(|| JsError::new("nothing to export: no training run yet"))?;
        if !run.hyper.full {
            return Err(JsError::new("this run trains a LoRA adapter: use exportAdapter"));
        }
        let w = run.trainer.model.download_weights(&st.gpu).await.map_err(js_err)?;
        st.gpu.check().map_err(js_err)?;
        let bytes = w.to_safetensors().map_err(js_err)?;
        let config = w.config_json().map_err(js_err)?;
        js_object(&[
            ("configJson", JsValue::from_str(&config)),
            ("modelSafetensors", bytes_js(&bytes)),
        ])
    }

    /// Saves the run's state: reads back the logs not reported yet and returns
    /// `{step, logs, files: {name: Uint8Array}}`, the files being the CLI's checkpoint folder
    /// (trainer_state.json, optimizer.safetensors, the adapter or the full weights) plus
    /// browser_state.json. `resumeRun(files)` continues from it.
    pub async fn checkpoint(&self) -> Result<JsValue, JsError> {
        let mut guard = self.state.try_borrow_mut().map_err(|_| JsError::new(BUSY))?;
        let st = &mut *guard;
        let run = st
            .run
            .as_mut()
            .ok_or_else(|| JsError::new("nothing to save: no training run"))?;
        let logs = run.trainer.flush(&st.gpu).await.map_err(js_err)?;
        let logs_js = logs_to_js(&logs)?;
        let gpu = &st.gpu;
        let trainer = &run.trainer;
        let step = trainer.steps_done();
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        if run.hyper.full {
            let w = trainer.model.download_weights(gpu).await.map_err(js_err)?;
            files.push(("model.safetensors".into(), w.to_safetensors().map_err(js_err)?));
            files.push(("config.json".into(), w.config_json().map_err(js_err)?.into_bytes()));
        } else {
            let a = trainer
                .model
                .download_adapter(gpu)
                .await
                .map_err(js_err)?
                .ok_or_else(|| JsError::new("internal error: a LoRA run without an adapter"))?;
            let (config, bytes) = a.to_peft_bytes(&run.model_info.name).map_err(js_err)?;
            files.push(("adapter_config.json".into(), config.into_bytes()));
            files.push(("adapter_model.safetensors".into(), bytes));
        }
        let moments = trainer
            .optimizer
            .read_moments(gpu, &trainer.model)
            .await
            .map_err(js_err)?;
        gpu.check().map_err(js_err)?;
        files.push((
            OPTIMIZER_FILE.into(),
            checkpoint::optimizer_to_safetensors(&moments).map_err(js_err)?,
        ));
        let options = RunOptions {
            out: String::new(),
            eval_data: run.eval_data.clone(),
            eval_every: (run.eval_every > 0).then_some(run.eval_every),
            save_every: (run.checkpoint_every > 0).then_some(run.checkpoint_every),
            keep_checkpoints: 1,
            log_json: None,
            log_every: 1,
        };
        let state = TrainerState::of(trainer, &run.sched, run.hyper.clone(), run.model_info.clone(), run.data_info.clone(), options);
        files.push((
            STATE_FILE.into(),
            (state.to_json().map_err(js_err)? + "\n").into_bytes(),
        ));
        let model_fnv = st.model.as_ref().map(|m| m.fnv.clone()).unwrap_or_default();
        let browser = json!({ "format": 1, "model_fnv1a64": model_fnv });
        files.push((BROWSER_STATE_FILE.into(), (browser.to_string() + "\n").into_bytes()));
        let obj: Vec<(&str, JsValue)> = files.iter().map(|(n, b)| (n.as_str(), bytes_js(b))).collect();
        js_object(&[
            ("step", JsValue::from(step)),
            ("logs", logs_js),
            ("files", js_object(&obj)?),
        ])
    }
}

/// Logs as a JS array; a non-finite loss ends the call with the CLI's "diverged" error.
fn logs_to_js(logs: &[StepLog]) -> Result<JsValue, JsError> {
    let mut v = Vec::with_capacity(logs.len());
    for l in logs {
        if !l.loss.is_finite() {
            return Err(JsError::new(&format!(
                "step {}: the loss is {} (diverged); try a smaller lr",
                l.step, l.loss
            )));
        }
        v.push(json!({ "step": l.step, "loss": l.loss, "lr": num(l.lr), "gradNorm": num(l.grad_norm) }));
    }
    to_js(&Value::Array(v))
}
