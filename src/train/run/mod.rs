//! One training run, the same for `webtune train`, `pretrain`, `demo` and the browser engine:
//! its settings ([`RunSpec`]), its data ([`RunData`]), the model on the GPU with its trainer,
//! evaluator and schedule ([`Run`]), what is due after each step ([`StepPolicy`]), and its
//! checkpoints as files ([`Run::checkpoint_files`], [`Checkpoint::read`]) — the CLI writes them
//! into a folder, the browser hands them to its storage. The checks that a resumed run is the
//! checkpoint's (model, data, settings) live here, once.
//!
//! ```text
//! RunSpec (flags / JS options) ─┐
//! Dataset(s) ──────── RunData ──┼─> Run::new(gpu, ..) ─> loop { Run::step -> StepEvents
//! weights + adapter ────────────┘        ^                    (logs, eval, checkpoint?, stop?) }
//!            Checkpoint::read(files) ────┘ (resume)      Run::output_files / checkpoint_files
//! ```

pub mod policy;
pub mod spec;

use std::collections::BTreeMap;

pub use policy::{Control, Due, StepPolicy};
pub use spec::RunSpec;

use super::checkpoint::{self, DataInfo, ModelInfo, RunOptions, TrainerState, OPTIMIZER_FILE, STATE_FILE};
use super::eval::{EvalResult, Evaluator};
use super::schedule::LrSchedule;
use super::{StepLog, TrainConfig, TrainError, Trainer};
use crate::data::{records, Batcher, Dataset, TokenStream};
use crate::flags::Style;
use crate::gpu::Gpu;
use crate::model::{HostTensor, LoraAdapter, LoraConfig, ModelConfig, ModelGpu, Trainable, WeightSource, Weights};
use crate::train::plan::{self, DeviceLimits, MemoryPlan, PlanContext};

/// Named files: a checkpoint or a result, as the CLI writes them into a folder.
pub type Files = Vec<(String, Vec<u8>)>;

/// AdamW's (m, v) by trained tensor name.
pub type Moments = BTreeMap<String, (HostTensor, HostTensor)>;

fn invalid(msg: impl Into<String>) -> TrainError {
    TrainError::Invalid(msg.into())
}

/// The token streams a run trains and evaluates on.
pub struct RunData {
    pub train: TokenStream,
    pub eval: Option<TokenStream>,
    /// What the eval data is, for messages and the run's record (a file, or a held-out split).
    pub eval_name: Option<String>,
    /// The training data's identity, as a checkpoint records it.
    pub info: DataInfo,
    /// The training file as the user named it now.
    pub name: String,
}

impl RunData {
    /// The training stream of `data` and the held-out one: `spec.eval_split` of its records, or
    /// `eval` (another file), or none. Each record is followed by `eos`.
    pub fn new(data: &Dataset, eval: Option<&Dataset>, spec: &RunSpec, eos: u32, style: Style) -> Result<RunData, TrainError> {
        let (train, eval, eval_name) = match (spec.eval_split, eval) {
            (Some(_), Some(e)) => {
                return Err(invalid(format!(
                    "{} holds records of {} out for evaluation, and {} {} is given too: use one or the other",
                    style.name("eval-split"),
                    data.name,
                    style.name("eval-data"),
                    e.name
                )))
            }
            (Some(f), None) => {
                let copy = || format!("{}: a copy of its records to hold some out", data.name);
                crate::memory::check(&copy, crate::memory::bytes_of::<u64>(data.stream_len()))?;
                let (t, e) = records::split_eval(data.records.clone(), f, spec.seed)
                    .map_err(|e| invalid(format!("{}: {} {f}: {e}", data.name, style.name("eval-split"))))?;
                let name = format!("{} (held out {})", data.name, crate::json::f32(f));
                let held = format!("{} (held out)", data.name);
                (TokenStream::try_new(&t, eos, &data.name)?, Some(TokenStream::try_new(&e, eos, &held)?), Some(name))
            }
            (None, Some(e)) => (data.stream(eos).map_err(data_err)?, Some(e.stream(eos).map_err(data_err)?), Some(e.name.clone())),
            (None, None) => (data.stream(eos).map_err(data_err)?, None, None),
        };
        let info = DataInfo::of(data, &train, spec.seq);
        Ok(RunData { train, eval, eval_name, info, name: data.name.clone() })
    }
}

/// A checkpoint read back: the run's state, AdamW's moments, and the trained parameters' files.
pub struct Checkpoint {
    pub state: TrainerState,
    pub moments: Moments,
    /// The adapter's files (LoRA) or the model's (full fine-tuning), parsed on demand.
    pub params: Files,
    /// Names the checkpoint in messages (its folder).
    pub what: String,
}

impl Checkpoint {
    /// Reads a checkpoint through `file` (a file's bytes by name: from a folder, or the
    /// browser's storage); `what` names it in messages.
    pub fn read(what: &str, file: &dyn Fn(&str) -> Result<Vec<u8>, TrainError>) -> Result<Checkpoint, TrainError> {
        let text = String::from_utf8(file(STATE_FILE)?)
            .map_err(|_| invalid(format!("{what}/{STATE_FILE}: not valid UTF-8")))?;
        let state = TrainerState::from_json(&text, &format!("{what}/{STATE_FILE}"))?;
        let moments =
            checkpoint::optimizer_from_safetensors(&file(OPTIMIZER_FILE)?, &format!("{what}/{OPTIMIZER_FILE}"))?;
        let names: [&str; 2] = if state.hyperparameters.full {
            ["config.json", "model.safetensors"]
        } else {
            ["adapter_config.json", "adapter_model.safetensors"]
        };
        let mut params = Vec::new();
        for n in names {
            params.push((n.to_string(), file(n)?));
        }
        Ok(Checkpoint { state, moments, params, what: what.to_string() })
    }

    fn param(&self, name: &str) -> &[u8] {
        self.params.iter().find(|(n, _)| n == name).map_or(&[], |(_, b)| b)
    }

    fn text(&self, name: &str) -> Result<String, TrainError> {
        String::from_utf8(self.param(name).to_vec()).map_err(|_| invalid(format!("{}/{name}: not valid UTF-8", self.what)))
    }

    /// The adapter of a LoRA run's checkpoint, for the base model `cfg`.
    pub fn adapter(&self, cfg: &ModelConfig) -> Result<LoraAdapter, TrainError> {
        let config = self.text("adapter_config.json")?;
        LoraAdapter::from_peft_bytes(&config, self.param("adapter_model.safetensors"), cfg, &self.what)
            .map_err(|e| invalid(e.to_string()))
    }

    /// The weights of a full fine-tuning run's checkpoint.
    pub fn weights(&self) -> Result<Weights, TrainError> {
        let config = self.text("config.json")?;
        let (c, m) = (format!("{}/config.json", self.what), format!("{}/model.safetensors", self.what));
        Weights::from_bytes(&config, &c, self.param("model.safetensors"), &m).map_err(|e| invalid(e.to_string()))
    }
}

/// What one step reports.
#[derive(Clone, Debug, Default)]
pub struct StepEvents {
    /// The step that ran (1-based).
    pub step: u32,
    /// The losses read back by this step, in step order (often none between readbacks).
    pub logs: Vec<StepLog>,
    /// The held-out loss after this step, when one was due (and not cut short).
    pub eval: Option<EvalResult>,
    /// A checkpoint is due now: save [`Run::checkpoint_files`].
    pub checkpoint: bool,
    /// The loop ends after this step.
    pub stop: bool,
}

/// Everything a run is made from besides the GPU and the checkpoint it resumes.
pub struct RunInputs<'a> {
    /// The base weights (for a resumed full run: the checkpoint's): host [`Weights`], or files
    /// read one tensor at a time when the model is uploaded (the browser).
    pub weights: &'a dyn WeightSource,
    /// The base model's identity (name, path, file size/fingerprint).
    pub model: ModelInfo,
    /// The adapter to start from (`--init-adapter`, `loadAdapter`); None = a fresh seeded one.
    pub init_adapter: Option<LoraAdapter>,
    pub data: RunData,
    pub spec: RunSpec,
    /// The settings a checkpoint keeps besides the math (paths of the CLI's outputs).
    pub options: RunOptions,
    /// Steps between loss readbacks.
    pub readback_every: usize,
    /// Whose names messages use.
    pub style: Style,
}

/// A run checked and planned, before anything is on the GPU ([`Run::prepare`]).
pub struct Prepared<'a> {
    weights: &'a dyn WeightSource,
    model: ModelInfo,
    /// The adapter the run trains (None: full fine-tuning).
    pub adapter: Option<LoraAdapter>,
    batcher: Batcher,
    eval_batches: Option<Vec<crate::data::Batch>>,
    data_info: DataInfo,
    eval_name: Option<String>,
    /// The settings, with the adapter's shape when it comes from one.
    pub spec: RunSpec,
    options: RunOptions,
    readback_every: usize,
    style: Style,
    /// What the run will allocate on the GPU.
    pub plan: MemoryPlan,
    /// What the plan was computed from (to search for a batch or seq that fits).
    pub plan_context: PlanContext,
}

impl Prepared<'_> {
    /// The model's config.
    pub fn config(&self) -> &ModelConfig {
        self.weights.config()
    }

    /// Plans for the device of `limits` (its binding limit decides which vocabulary tables are
    /// split into row chunks), then refuses the run when the plan does not fit (see [`plan::check`]).
    pub fn check_fits(&mut self, limits: &DeviceLimits) -> Result<(), TrainError> {
        self.plan_context.max_binding = Some(limits.max_binding);
        self.plan_context.half_weights = limits.half_weights;
        self.plan = MemoryPlan::of(self.weights.config(), &self.spec, &self.plan_context)?;
        plan::check(&self.plan, self.weights.config(), &self.spec, &self.plan_context, limits, self.style)
    }
}

/// A training run on the GPU.
pub struct Run {
    pub spec: RunSpec,
    pub schedule: LrSchedule,
    pub trainer: Trainer,
    pub evaluator: Option<Evaluator>,
    pub model_info: ModelInfo,
    pub data_info: DataInfo,
    /// The eval data's name (a file, or the held-out split), when there is one.
    pub eval_name: Option<String>,
    pub options: RunOptions,
    /// The step the run (re)started at.
    pub start_step: u32,
    /// What the run allocated on the GPU, as planned before it did.
    pub plan: MemoryPlan,
    policy: StepPolicy,
    style: Style,
    /// The trained parameters' files, read back at that step (a checkpoint and the output at
    /// the same step read the GPU once).
    files: Option<(u32, Files)>,
}

impl Run {
    /// Checks the inputs (and, resuming, that they are the checkpoint's), plans memory, refuses a
    /// run that does not fit the GPU, uploads the model and records the step program.
    /// `save_at_end`: whether a periodic checkpoint is written at the last step too.
    pub fn new(gpu: &Gpu, input: RunInputs<'_>, resume: Option<&Checkpoint>, save_at_end: bool) -> Result<Run, TrainError> {
        let mut prepared = Run::prepare(input, resume)?;
        prepared.check_fits(&DeviceLimits::of(gpu))?;
        Run::start(gpu, prepared, resume, save_at_end)
    }

    /// Everything a run does before the GPU: checks the inputs (and, resuming, that they are the
    /// checkpoint's), makes the adapter, cuts the data into windows and plans the GPU memory.
    /// `webtune train --dry-run` stops here.
    pub fn prepare<'a>(input: RunInputs<'a>, resume: Option<&Checkpoint>) -> Result<Prepared<'a>, TrainError> {
        let RunInputs { weights, model, init_adapter, data, mut spec, options, readback_every, style } = input;
        spec.validate(style)?;
        let cfg = weights.config();
        if spec.seq > cfg.n_positions {
            return Err(invalid(format!(
                "{} {} is longer than the model's n_positions {}",
                style.name("seq"),
                spec.seq,
                cfg.n_positions
            )));
        }
        if let Some(ck) = resume {
            let s = &ck.state;
            model.check_same(&s.model, spec.full, style)?;
            data.info.check_same(&s.data, &data.name, style)?;
            if s.step >= spec.steps {
                return Err(invalid(format!(
                    "{}: the checkpoint is at step {} and the run has {} steps: nothing left to train",
                    ck.what, s.step, spec.steps
                )));
            }
        }
        if spec.eval_every.is_some() && data.eval.is_none() {
            return Err(invalid(format!(
                "{} needs held-out data: {} or {}",
                style.name("eval-every"),
                style.name("eval-data"),
                style.name("eval-split")
            )));
        }
        if spec.stop_after.is_some_and(|n| n <= resume.map_or(0, |c| c.state.step)) {
            return Err(invalid(format!(
                "{} {}: the run is already at step {}",
                style.name("stop-after"),
                spec.stop_after.unwrap_or(0),
                resume.map_or(0, |c| c.state.step)
            )));
        }

        // The adapter: the checkpoint's, the one given, or a fresh seeded one; its shape is the run's.
        let adapter = if spec.full {
            None
        } else {
            let a = match (resume, init_adapter) {
                (Some(ck), _) => ck.adapter(cfg)?,
                (None, Some(a)) => a,
                (None, None) => {
                    let targets = spec.lora_targets.clone().unwrap_or_else(|| LoraConfig::default_targets(cfg.family));
                    let lc = LoraConfig::new(spec.lora_rank, spec.lora_alpha, targets, 0.0, cfg.family)
                        .map_err(|e| invalid(e.to_string()))?;
                    let n = lc.param_count(cfg);
                    let what = || {
                        let values = n.map_or("too many".to_string(), |n| n.to_string());
                        format!("{} {}: the adapter ({values} values)", style.name("lora-rank"), spec.lora_rank)
                    };
                    crate::memory::check(&what, n.and_then(crate::memory::bytes_of::<f32>))?;
                    LoraAdapter::init(lc, cfg, spec.seed)
                }
            };
            (spec.lora_rank, spec.lora_alpha, spec.lora_targets) = (a.config.r, a.config.alpha, Some(a.config.targets.clone()));
            Some(a)
        };

        let batcher = Batcher::new(data.train, spec.batch, spec.seq, spec.shuffle, spec.seed)
            .map_err(|e| invalid(format!("{}: {e}", data.name)))?;
        let mut plan_context = PlanContext::new(weights, readback_every);
        plan_context.eval_tokens = data.eval.as_ref().map(|s| s.tokens.len());
        let eval_batches = match data.eval {
            Some(s) => Some(
                Batcher::new(s, spec.batch, spec.seq, false, 0)
                    .map_err(|e| invalid(format!("eval data {}: {e}", data.eval_name.as_deref().unwrap_or(""))))?
                    .eval_batches(),
            ),
            None => None,
        };
        if let Some(a) = &adapter {
            plan_context = plan_context.with_adapter(a);
        }
        let plan = MemoryPlan::of(weights.config(), &spec, &plan_context)?;
        Ok(Prepared {
            weights,
            model,
            adapter,
            batcher,
            eval_batches,
            data_info: data.info,
            eval_name: data.eval_name,
            spec,
            options,
            readback_every,
            style,
            plan,
            plan_context,
        })
    }

    /// Uploads the model of a prepared run, allocates its buffers and records the step program.
    pub fn start(gpu: &Gpu, p: Prepared<'_>, resume: Option<&Checkpoint>, save_at_end: bool) -> Result<Run, TrainError> {
        let Prepared { weights, model, adapter, batcher, eval_batches, data_info, eval_name, spec, options, readback_every, style, plan, .. } = p;
        let trainable = if spec.full { Trainable::Full } else { Trainable::Lora };
        let gpt = ModelGpu::new(gpu, weights, adapter.as_ref(), trainable).map_err(|e| invalid(e.to_string()))?;
        let mut config = TrainConfig::new(spec.batch, spec.seq, spec.adamw());
        config.grad_accum = spec.grad_accum;
        config.readback_every = readback_every.clamp(1, spec.steps as usize);
        let mut trainer = Trainer::new(gpu, gpt, batcher, config)?;
        let mut start_step = 0;
        if let Some(ck) = resume {
            let what = format!("{}/{OPTIMIZER_FILE}", ck.what);
            trainer.restore(gpu, ck.state.step, ck.state.data_position, &ck.moments, &what)?;
            start_step = ck.state.step;
        }
        let evaluator = match eval_batches {
            Some(batches) => {
                let ev = Evaluator::new(gpu, &trainer.model, batches, spec.seq)
                    .map_err(|e| invalid(format!("eval: {e}; try a smaller {}", style.name("batch"))))?;
                Some(ev)
            }
            None => None,
        };
        gpu.check().map_err(|e| invalid(e.to_string()))?;
        let policy = StepPolicy {
            steps: spec.steps,
            last: spec.stop_after.map_or(spec.steps, |n| n.min(spec.steps)),
            has_eval: evaluator.is_some(),
            eval_every: spec.eval_every,
            save_every: spec.save_every,
            save_at_end,
        };
        Ok(Run {
            schedule: spec.lr_schedule(),
            spec,
            trainer,
            evaluator,
            model_info: model,
            data_info,
            eval_name,
            options,
            start_step,
            plan,
            policy,
            style,
            files: None,
        })
    }

    /// Optimizer steps taken so far.
    pub fn steps_done(&self) -> u32 {
        self.trainer.steps_done()
    }

    /// The step this run stops after.
    pub fn last_step(&self) -> u32 {
        self.policy.last
    }

    /// Stops after step `n` (or at the end with None), from the next step on.
    pub fn set_stop_after(&mut self, n: Option<u32>) {
        self.spec.stop_after = n;
        self.policy.last = n.map_or(self.spec.steps, |n| n.min(self.spec.steps));
    }

    /// One line that says what the run trains, where and how.
    pub fn summary(&self, gpu: &Gpu) -> String {
        let s = &self.spec;
        let accum = if s.grad_accum > 1 { format!(" x {} accumulated", s.grad_accum) } else { String::new() };
        let warm = if s.warmup > 0 { format!(", {} warmup", s.warmup) } else { String::new() };
        let resumed = if self.start_step > 0 { format!("; resuming at step {}", self.start_step) } else { String::new() };
        let half = if gpu.half_weights() && !s.full { "; frozen base weights in f16" } else { "" };
        format!(
            "training {} on {} ({} steps, batch {} x {} tokens{accum}; lr {} {}{warm}{half}){resumed}",
            if s.full { "all weights" } else { "a LoRA adapter" },
            gpu.report.name,
            s.steps,
            s.batch,
            s.seq,
            s.lr,
            s.schedule
        )
    }

    /// Runs the next step. `control` is asked after the step (and again after an evaluation,
    /// which it can cut short): what the user wants of the loop. Losses that are not finite end
    /// the run with an error.
    pub async fn step(&mut self, gpu: &Gpu, control: &dyn Fn() -> Control) -> Result<StepEvents, TrainError> {
        let s = self.steps_done() + 1;
        if s > self.spec.steps {
            return Err(invalid(format!("the run is finished ({} steps); start a new one", self.spec.steps)));
        }
        // update s runs at lr_at(s - 1), as HF's LambdaLR does
        let mut logs = self.trainer.step(gpu, self.schedule.lr_at(s - 1)).await.map_err(gpu_err)?;
        let mut due = self.policy.after_step(s, control());
        if due.readback {
            logs.extend(self.trainer.flush(gpu).await.map_err(gpu_err)?);
        }
        if let Some(bad) = logs.iter().find(|l| !l.loss.is_finite()) {
            return Err(invalid(format!(
                "step {}: the loss is {} (diverged); try a smaller {}",
                bad.step,
                bad.loss,
                self.style.name("lr")
            )));
        }
        let mut eval = None;
        if let (true, Some(ev)) = (due.eval, &self.evaluator) {
            eval = ev.run(gpu, &|| control() != Control::Run).await.map_err(gpu_err)?;
            if let Some(bad) = eval.as_ref().filter(|e| !e.loss.is_finite()) {
                return Err(invalid(format!(
                    "step {s}: the eval loss is {} (diverged); try a smaller {}",
                    bad.loss,
                    self.style.name("lr")
                )));
            }
            // a pause asked for during the evaluation takes effect now
            let after = self.policy.after_step(s, control());
            due.stop |= after.stop;
            due.checkpoint |= after.checkpoint;
        }
        gpu.check().map_err(gpu_err)?;
        Ok(StepEvents { step: s, logs, eval, checkpoint: due.checkpoint, stop: due.stop })
    }

    /// The held-out loss of the current weights (None without eval data).
    pub async fn evaluate(&self, gpu: &Gpu) -> Result<Option<EvalResult>, TrainError> {
        match &self.evaluator {
            Some(ev) => ev.run(gpu, &|| false).await.map_err(gpu_err),
            None => Ok(None),
        }
    }

    /// The result of the run so far: a PEFT adapter (adapter_config.json,
    /// adapter_model.safetensors) or, for full fine-tuning, a Hugging Face model (config.json,
    /// model.safetensors). Read from the GPU once per step.
    pub async fn output_files(&mut self, gpu: &Gpu) -> Result<Files, TrainError> {
        let step = self.steps_done();
        if let Some((at, files)) = &self.files {
            if *at == step {
                return Ok(files.clone());
            }
        }
        let model = &self.trainer.model;
        // A weight that is no longer finite means the run diverged (a finite loss is computed
        // before its step's update): such a result is never handed out to be saved.
        let diverged = |name: &str, t: &HostTensor| {
            t.check_finite("", name).map_err(|e| match e {
                crate::model::ModelError::NotFinite { value, count, len, .. } => invalid(format!(
                    "step {step}: the trained tensor '{name}' holds {value} ({count} of {len} values are NaN or infinite): \
                     the run diverged; try a smaller {}",
                    self.style.name("lr")
                )),
                e => invalid(e.to_string()),
            })
        };
        let files = if self.spec.full {
            let w = model.download_weights(gpu).await.map_err(gpu_err)?;
            w.tensors.iter().try_for_each(|(name, t)| diverged(name, t))?;
            let bytes = w.to_safetensors().map_err(|e| invalid(e.to_string()))?;
            let config = w.config_json().map_err(|e| invalid(e.to_string()))?;
            vec![("config.json".to_string(), config.into_bytes()), ("model.safetensors".to_string(), bytes)]
        } else {
            let a = model
                .download_adapter(gpu)
                .await
                .map_err(gpu_err)?
                .ok_or_else(|| invalid("internal error: a LoRA run without an adapter"))?;
            for m in &a.modules {
                diverged(&format!("{}.lora_A", m.name()), &m.a)?;
                diverged(&format!("{}.lora_B", m.name()), &m.b)?;
            }
            let (config, bytes) = a.to_peft_bytes(&self.model_info.name).map_err(|e| invalid(e.to_string()))?;
            vec![
                ("adapter_config.json".to_string(), config.into_bytes()),
                ("adapter_model.safetensors".to_string(), bytes),
            ]
        };
        gpu.check().map_err(gpu_err)?;
        self.files = Some((step, files.clone()));
        Ok(files)
    }

    /// What [`output_files`](Self::output_files) holds, for messages.
    pub fn output_what(&self) -> &'static str {
        if self.spec.full {
            "the fine-tuned model (config.json, model.safetensors)"
        } else {
            "the LoRA adapter (adapter_config.json, adapter_model.safetensors)"
        }
    }

    /// The run's checkpoint now: the output files, AdamW's moments (optimizer.safetensors) and
    /// trainer_state.json ([`Checkpoint::read`] reads them back).
    pub async fn checkpoint_files(&mut self, gpu: &Gpu) -> Result<Files, TrainError> {
        let mut files = self.output_files(gpu).await?;
        let moments = self.trainer.optimizer.read_moments(gpu, &self.trainer.model).await.map_err(gpu_err)?;
        gpu.check().map_err(gpu_err)?;
        files.push((OPTIMIZER_FILE.to_string(), checkpoint::optimizer_to_safetensors(&moments)?));
        let mut options = self.options.clone();
        (options.eval_every, options.save_every) = (self.spec.eval_every, self.spec.save_every);
        let state = TrainerState::of(
            &self.trainer,
            &self.schedule,
            self.spec.hyperparameters(),
            self.model_info.clone(),
            self.data_info.clone(),
            options,
        );
        files.push((STATE_FILE.to_string(), (state.to_json()? + "\n").into_bytes()));
        Ok(files)
    }
}

fn data_err(e: crate::data::DataError) -> TrainError {
    match e {
        crate::data::DataError::Memory(m) => TrainError::Memory(m),
        e => invalid(e.to_string()),
    }
}

fn gpu_err(e: crate::gpu::GpuError) -> TrainError {
    invalid(e.to_string())
}
