//! Every setting of a training run, with its one default and its one set of checks. The CLI
//! maps its flags onto a [`RunSpec`], the browser engine its JS options; both call
//! [`RunSpec::validate`], whose messages name settings the caller's way ([`Style`]).
//!
//! Settings that change the math (all but `eval_every`, `save_every`, `stop_after`) are
//! recorded in every checkpoint; a resumed run takes them from there, and a setting given
//! again must be equal ([`RunSpec::give`]), except `steps` under the constant schedule, whose
//! learning rates do not depend on the total, so such a run can be extended.

use crate::flags::Style;
use crate::train::checkpoint::{Hyperparameters, TrainerState};
use crate::train::schedule::{LrSchedule, Schedule};
use crate::train::{AdamWConfig, TrainError};

#[derive(Clone, Debug, PartialEq)]
pub struct RunSpec {
    /// Train every tensor instead of a LoRA adapter.
    pub full: bool,
    /// LoRA rank r and alpha (the update is scaled by alpha / r).
    pub lora_rank: usize,
    pub lora_alpha: f32,
    /// PEFT target module names, suffix-matched; None = the model's default (every linear layer).
    pub lora_targets: Option<Vec<String>>,
    /// The adapter the run starts from (its rank, alpha and targets are the run's), as given.
    pub init_adapter: Option<String>,
    /// Optimizer steps of the whole run (the schedule's total).
    pub steps: u32,
    /// Sequences per micro-batch, tokens per sequence, micro-batches per optimizer step.
    pub batch: usize,
    pub seq: usize,
    pub grad_accum: usize,
    /// Peak learning rate, the schedule after `warmup` steps, and the decay's floor.
    pub lr: f32,
    pub schedule: Schedule,
    pub warmup: u32,
    pub min_lr: f32,
    /// AdamW (PyTorch's semantics) and global-norm clipping (0 = off).
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub grad_clip: f32,
    /// Fixes the LoRA init, the shuffling and the held-out split.
    pub seed: u64,
    /// Visit the windows in a seeded random order per epoch (else in file order).
    pub shuffle: bool,
    /// Hold this fraction of the training records out for the eval loss.
    pub eval_split: Option<f32>,
    /// Evaluate every N steps (and after the last); None = after the last only.
    pub eval_every: Option<u32>,
    /// Save a checkpoint every N steps.
    pub save_every: Option<u32>,
    /// Stop (saving a checkpoint) after this step, to continue later.
    pub stop_after: Option<u32>,
}

impl Default for RunSpec {
    /// The defaults of `webtune train` and of the npm package.
    fn default() -> RunSpec {
        let adamw = AdamWConfig::default();
        RunSpec {
            full: false,
            lora_rank: 8,
            lora_alpha: 16.0,
            lora_targets: None,
            init_adapter: None,
            steps: 100,
            batch: 8,
            seq: 128,
            grad_accum: 1,
            lr: 2e-4,
            schedule: Schedule::Constant,
            warmup: 0,
            min_lr: 0.0,
            weight_decay: adamw.weight_decay,
            beta1: adamw.beta1,
            beta2: adamw.beta2,
            eps: adamw.eps,
            grad_clip: adamw.grad_clip,
            seed: 0,
            shuffle: true,
            eval_split: None,
            eval_every: None,
            save_every: None,
            stop_after: None,
        }
    }
}

impl RunSpec {
    /// Checks every setting; the first bad one is named the caller's way.
    pub fn validate(&self, style: Style) -> Result<(), TrainError> {
        let bad = |key: &str, v: &dyn std::fmt::Display, want: &str| {
            Err(TrainError::Invalid(format!("{} {v} is invalid: it must be {want}", style.name(key))))
        };
        self.adamw().validate(|k| style.name(k))?;
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0 && self.min_lr <= self.lr) {
            return bad("min-lr", &self.min_lr, &format!("in [0, {}]", style.name("lr")));
        }
        if let Some(f) = self.eval_split {
            if !(f.is_finite() && f > 0.0 && f < 1.0) {
                return bad("eval-split", &f, "between 0 and 1 (exclusive)");
            }
        }
        if self.steps == 0 || self.batch == 0 || self.seq == 0 || self.grad_accum == 0 {
            let n = |k| style.name(k);
            return Err(TrainError::Invalid(format!(
                "{}, {}, {} and {} must be at least 1",
                n("steps"),
                n("batch"),
                n("seq"),
                n("grad-accum")
            )));
        }
        for (key, v) in [("eval-every", self.eval_every), ("save-every", self.save_every), ("stop-after", self.stop_after)] {
            if v == Some(0) {
                return Err(TrainError::Invalid(format!("{} must be at least 1", style.name(key))));
            }
        }
        if !self.full {
            if self.lora_rank == 0 {
                return bad("lora-rank", &self.lora_rank, "at least 1");
            }
            if !(self.lora_alpha.is_finite() && self.lora_alpha > 0.0) {
                return bad("lora-alpha", &self.lora_alpha, "> 0");
            }
        }
        Ok(())
    }

    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
        }
    }

    pub fn lr_schedule(&self) -> LrSchedule {
        LrSchedule { kind: self.schedule, lr: self.lr, warmup: self.warmup, total: self.steps, min_lr: self.min_lr }
    }

    /// The settings that change the math, as trainer_state.json records them.
    pub fn hyperparameters(&self) -> Hyperparameters {
        let lora = !self.full;
        Hyperparameters {
            full: self.full,
            lora_rank: lora.then_some(self.lora_rank),
            lora_alpha: lora.then_some(self.lora_alpha),
            lora_targets: if lora { self.lora_targets.clone() } else { None },
            init_adapter: self.init_adapter.clone(),
            steps: self.steps,
            batch: self.batch,
            seq: self.seq,
            grad_accum: self.grad_accum,
            lr: self.lr,
            weight_decay: self.weight_decay,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            grad_clip: self.grad_clip,
            schedule: self.schedule.to_string(),
            warmup: self.warmup,
            min_lr: self.min_lr,
            seed: self.seed,
            shuffle: self.shuffle,
            eval_split: self.eval_split,
        }
    }

    /// The settings of a checkpoint's run (`stop_after` is not one of them).
    pub fn from_state(state: &TrainerState, what: &str) -> Result<RunSpec, TrainError> {
        let h = &state.hyperparameters;
        let d = RunSpec::default();
        let schedule = h.schedule.parse().map_err(|e: String| TrainError::Invalid(format!("{what}: {e}")))?;
        Ok(RunSpec {
            full: h.full,
            lora_rank: h.lora_rank.unwrap_or(d.lora_rank),
            lora_alpha: h.lora_alpha.unwrap_or(d.lora_alpha),
            lora_targets: h.lora_targets.clone(),
            init_adapter: h.init_adapter.clone(),
            steps: h.steps,
            batch: h.batch,
            seq: h.seq,
            grad_accum: h.grad_accum,
            lr: h.lr,
            schedule,
            warmup: h.warmup,
            min_lr: h.min_lr,
            weight_decay: h.weight_decay,
            beta1: h.beta1,
            beta2: h.beta2,
            eps: h.eps,
            grad_clip: h.grad_clip,
            seed: h.seed,
            shuffle: h.shuffle,
            eval_split: h.eval_split,
            eval_every: state.options.eval_every,
            save_every: state.options.save_every,
            stop_after: None,
        })
    }

    /// Sets a setting the user gave (`key` names it). On a resumed run (`resuming`), a
    /// setting that changes the math must equal the checkpoint's value, which `field` holds.
    pub fn give<T: PartialEq + std::fmt::Debug>(
        field: &mut T,
        key: &str,
        given: Option<T>,
        resuming: bool,
        style: Style,
    ) -> Result<(), TrainError> {
        let Some(g) = given else { return Ok(()) };
        if resuming && g != *field {
            let name = style.name(key);
            return Err(TrainError::Invalid(format!(
                "{name} {} differs from the checkpoint's {}: a resumed run keeps every setting that changes the math \
                 (omit {name}, or start a new run)",
                show(&g),
                show(field)
            )));
        }
        *field = g;
        Ok(())
    }
}

/// A setting's value for a message: Debug without `Some(..)`; `None` as "none".
fn show<T: std::fmt::Debug>(v: &T) -> String {
    let d = format!("{v:?}");
    match d.strip_prefix("Some(").and_then(|x| x.strip_suffix(')')) {
        Some(inner) => inner.to_string(),
        None if d == "None" => "none".into(),
        None => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named_in_the_callers_style() {
        RunSpec::default().validate(Style::Cli).unwrap();
        let bad = RunSpec { weight_decay: -1.0, ..RunSpec::default() };
        assert_eq!(bad.validate(Style::Cli).unwrap_err().to_string(), "--weight-decay -1 is invalid: it must be >= 0");
        assert_eq!(bad.validate(Style::Js).unwrap_err().to_string(), "weightDecay -1 is invalid: it must be >= 0");
        let bad = RunSpec { min_lr: 1.0, ..RunSpec::default() };
        assert_eq!(bad.validate(Style::Js).unwrap_err().to_string(), "minLr 1 is invalid: it must be in [0, lr]");
        let bad = RunSpec { lora_rank: 0, ..RunSpec::default() };
        assert_eq!(bad.validate(Style::Js).unwrap_err().to_string(), "rank 0 is invalid: it must be at least 1");
        // rank does not matter for full fine-tuning
        RunSpec { lora_rank: 0, full: true, ..RunSpec::default() }.validate(Style::Cli).unwrap();
        let bad = RunSpec { save_every: Some(0), ..RunSpec::default() };
        assert_eq!(bad.validate(Style::Js).unwrap_err().to_string(), "checkpointEvery must be at least 1");
        let bad = RunSpec { eval_split: Some(1.0), ..RunSpec::default() };
        assert_eq!(
            bad.validate(Style::Cli).unwrap_err().to_string(),
            "--eval-split 1 is invalid: it must be between 0 and 1 (exclusive)"
        );
    }

    #[test]
    fn a_resumed_run_refuses_a_different_math_setting() {
        let mut lr = 2e-4f32;
        RunSpec::give(&mut lr, "lr", Some(2e-4), true, Style::Cli).unwrap();
        RunSpec::give(&mut lr, "lr", None, true, Style::Cli).unwrap();
        let e = RunSpec::give(&mut lr, "lr", Some(1e-3), true, Style::Cli).unwrap_err().to_string();
        assert!(e.starts_with("--lr 0.001 differs from the checkpoint's 0.0002"), "{e}");
        RunSpec::give(&mut lr, "lr", Some(1e-3), false, Style::Cli).unwrap();
        assert_eq!(lr, 1e-3);
    }

    #[test]
    fn settings_round_trip_through_a_checkpoint_state() {
        let spec = RunSpec {
            lora_rank: 5,
            lora_alpha: 3.0,
            lora_targets: Some(vec!["attn.c_proj".into(), "c_fc".into()]),
            schedule: Schedule::Cosine,
            warmup: 3,
            min_lr: 1e-5,
            weight_decay: 0.5,
            eval_split: Some(0.25),
            eval_every: Some(5),
            save_every: Some(2),
            ..RunSpec::default()
        };
        let state = serde_json::json!({
            "format": crate::train::checkpoint::FORMAT, "webtune_version": "x", "step": 1, "data_position": 2, "epoch": 0,
            "hyperparameters": spec.hyperparameters(),
            "schedule": {"kind": "cosine", "lr": 2e-4, "warmup": 3, "total": 100, "min_lr": 1e-5, "next_lr": 0.0},
            "model": {"path": "m", "name": "m", "n_layer": 1, "n_head": 1, "n_embd": 4, "vocab_size": 9,
                      "n_positions": 8, "eos_token_id": 0, "weights_bytes": 10},
            "data": {"path": "d", "bytes": 1, "fnv1a64": "0", "tokenizer": null, "tokens": 3, "windows": 1, "stream_fnv1a64": "0"},
            "options": {"out": "o", "eval_data": null, "eval_every": 5, "save_every": 2, "keep_checkpoints": 2,
                        "log_json": null, "log_every": 10},
        });
        let state = TrainerState::from_json(&state.to_string(), "t.json").unwrap();
        assert_eq!(RunSpec::from_state(&state, "t").unwrap(), spec);
        // full fine-tuning records no LoRA shape
        let full = RunSpec { full: true, ..RunSpec::default() }.hyperparameters();
        assert_eq!((full.lora_rank, full.lora_alpha, full.lora_targets), (None, None, None));
    }
}
