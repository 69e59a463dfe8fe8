//! Training checkpoints: what a run needs to continue bit for bit where it stopped.
//!
//! A checkpoint is a folder `OUT/checkpoint-<step>/` holding
//! - the parameters: a PEFT adapter (`adapter_config.json`, `adapter_model.safetensors`) or,
//!   for full fine-tuning, a Hugging Face checkpoint (`config.json`, `model.safetensors`), f32;
//! - `optimizer.safetensors`: AdamW's first and second moments of every trained tensor, f32,
//!   keyed `<name>.exp_avg` and `<name>.exp_avg_sq` (names as `Gpt2Gpu::trained` gives them, e.g.
//!   `h.0.attn.c_attn.lora_A` or `h.0.mlp.c_fc.weight`);
//! - `trainer_state.json` ([`TrainerState`]): the step, the data position, the resolved
//!   hyperparameters and schedule, the seed, the model and data with fingerprints, and the
//!   webtune version.
//!
//! A checkpoint is written into a temporary sibling folder and renamed into place, so a crash
//! or a kill never leaves a half-written `checkpoint-<step>`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::TrainError;
use crate::data::TokenStream;
use crate::flags::Style;
use crate::train::schedule::LrSchedule;
use crate::model::HostTensor;

/// The checkpoint layout version this build writes and reads.
pub const FORMAT: u32 = 1;
pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// The settings that decide the math of a run: a resumed run must have the same.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    /// Full fine-tuning (every tensor) instead of a LoRA adapter.
    pub full: bool,
    /// LoRA rank, alpha and PEFT target names (None for full fine-tuning).
    pub lora_rank: Option<usize>,
    pub lora_alpha: Option<f32>,
    pub lora_targets: Option<Vec<String>>,
    /// The adapter the run started from, if any.
    pub init_adapter: Option<String>,
    /// Optimizer steps of the whole run (the schedule's total).
    pub steps: u32,
    pub batch: usize,
    pub seq: usize,
    pub grad_accum: usize,
    pub lr: f32,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub grad_clip: f32,
    /// `constant`, `linear` or `cosine`.
    pub schedule: String,
    pub warmup: u32,
    pub min_lr: f32,
    pub seed: u64,
    pub shuffle: bool,
    /// Fraction of the records held out for evaluation (changes the training data).
    pub eval_split: Option<f32>,
}

/// The schedule as resolved: optimizer update s (1-based) runs at `lr_at(s - 1)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    pub kind: String,
    pub lr: f32,
    pub warmup: u32,
    pub total: u32,
    pub min_lr: f32,
    /// The learning rate of the next update.
    pub next_lr: f32,
}

/// The base model: where it was and its shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The folder, absolute.
    pub path: String,
    /// `--model` as given (a saved adapter's base_model_name_or_path).
    pub name: String,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub vocab_size: usize,
    pub n_positions: usize,
    pub eos_token_id: u32,
    /// Size of model.safetensors in bytes.
    pub weights_bytes: u64,
    /// FNV-1a 64 of model.safetensors, when it was computed (the browser does; the CLI goes by
    /// the size, so as not to read a large file twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_fnv1a64: Option<String>,
    /// config.json's model_type and the shape GPT-2 does not have (absent in checkpoints of
    /// GPT-2 runs written before the Llama family came).
    #[serde(default = "gpt2_type")]
    pub model_type: String,
    #[serde(default)]
    pub n_kv_head: usize,
    #[serde(default)]
    pub head_dim: usize,
    #[serde(default)]
    pub intermediate: usize,
}

fn gpt2_type() -> String {
    "gpt2".into()
}

impl ModelInfo {
    /// A model's identity: `name` as the user gave it, `path` where it is (absolute for a
    /// folder on disk).
    pub fn of(cfg: &crate::model::ModelConfig, name: &str, path: &str, weights_bytes: u64, fnv: Option<String>) -> ModelInfo {
        let gpt2 = cfg.family == crate::model::Family::Gpt2;
        ModelInfo {
            path: path.to_string(),
            name: name.to_string(),
            n_layer: cfg.n_layer,
            n_head: cfg.n_head,
            n_embd: cfg.n_embd,
            vocab_size: cfg.vocab_size,
            n_positions: cfg.n_positions,
            eos_token_id: cfg.eos_token_id,
            weights_bytes,
            weights_fnv1a64: fnv,
            model_type: cfg.model_type.clone(),
            // GPT-2's are implied by the rest (0, as in checkpoints written before these fields)
            n_kv_head: if gpt2 { 0 } else { cfg.n_kv_head },
            head_dim: if gpt2 { 0 } else { cfg.head_dim },
            intermediate: if gpt2 { 0 } else { cfg.intermediate },
        }
    }

    /// The shape, for messages.
    pub fn shape(&self) -> String {
        let llama = if self.model_type == "gpt2" {
            String::new()
        } else {
            format!(", {} kv heads, head_dim {}, intermediate {}", self.n_kv_head, self.head_dim, self.intermediate)
        };
        format!(
            "{} {} layers, {} heads{llama}, n_embd {}, vocab {}, n_positions {}, eos {}",
            self.model_type, self.n_layer, self.n_head, self.n_embd, self.vocab_size, self.n_positions, self.eos_token_id
        )
    }

    /// "model.safetensors N bytes[, fingerprint F]", for messages.
    fn file(&self) -> String {
        match &self.weights_fnv1a64 {
            Some(f) => format!("model.safetensors {} bytes, fingerprint {f}", self.weights_bytes),
            None => format!("model.safetensors {} bytes", self.weights_bytes),
        }
    }

    /// Refuses another base model than the checkpoint's (`saved`): the shape (and eos) must be
    /// equal, and for a LoRA run (whose base weights are not in the checkpoint) the weights file
    /// too, by size and, where both have one, fingerprint.
    pub fn check_same(&self, saved: &ModelInfo, full: bool, style: Style) -> Result<(), TrainError> {
        let fnv_differs = matches!((&self.weights_fnv1a64, &saved.weights_fnv1a64), (Some(a), Some(b)) if a != b);
        let file_differs = self.weights_bytes != saved.weights_bytes || fnv_differs;
        if self.shape() != saved.shape() || (!full && file_differs) {
            return Err(TrainError::Invalid(format!(
                "{} {}: not the checkpoint's base model {} ({}, {}; this one: {}, {}): load that model to resume the run",
                style.name("model"),
                self.name,
                saved.name,
                saved.shape(),
                saved.file(),
                self.shape(),
                self.file()
            )));
        }
        Ok(())
    }
}

/// The training data: the file, its fingerprint, and a fingerprint of the token stream it gave
/// (which also covers the tokenizer and the held-out split).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataInfo {
    pub path: String,
    pub bytes: u64,
    /// FNV-1a 64 of the file's bytes, 16 hex digits.
    pub fnv1a64: String,
    /// The tokenizer folder used for text data (None for token-id data).
    pub tokenizer: Option<String>,
    /// Training tokens (with the EOS after each record) and windows of seq + 1 tokens.
    pub tokens: usize,
    pub windows: usize,
    /// FNV-1a 64 of the training stream's tokens and labels (little-endian u32 / i32), 16 hex digits.
    pub stream_fnv1a64: String,
}

impl DataInfo {
    /// The identity of `data` and of the training stream it gave with windows of `seq` + 1.
    pub fn of(data: &crate::data::Dataset, stream: &TokenStream, seq: usize) -> DataInfo {
        DataInfo {
            path: data.path.clone(),
            bytes: data.bytes,
            fnv1a64: data.fnv1a64.clone(),
            tokenizer: data.tokenizer.clone(),
            tokens: stream.tokens.len(),
            windows: stream.tokens.len() / (seq + 1),
            stream_fnv1a64: hex(stream_fnv1a64(stream)),
        }
    }

    /// Refuses other data than the checkpoint's (`saved`): the same file (size and fingerprint)
    /// giving the same tokens. `name` is the file as the user named it now.
    pub fn check_same(&self, saved: &DataInfo, name: &str, style: Style) -> Result<(), TrainError> {
        let flag = style.name("data");
        if (self.bytes, &self.fnv1a64) != (saved.bytes, &saved.fnv1a64) {
            return Err(TrainError::Invalid(format!(
                "{flag} {name}: not the checkpoint's data {} ({} bytes, fingerprint {}; this file: {} bytes, fingerprint {}): \
                 load that file to resume the run",
                saved.path, saved.bytes, saved.fnv1a64, self.bytes, self.fnv1a64
            )));
        }
        if self.stream_fnv1a64 != saved.stream_fnv1a64 {
            return Err(TrainError::Invalid(format!(
                "{flag} {name}: the same file gives other tokens than in the checkpoint's run (another tokenizer?)"
            )));
        }
        Ok(())
    }
}

/// Settings that do not change the math (a resumed run takes them unless given again).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunOptions {
    pub out: String,
    pub eval_data: Option<String>,
    pub eval_every: Option<u32>,
    pub save_every: Option<u32>,
    pub keep_checkpoints: usize,
    pub log_json: Option<String>,
    pub log_every: u32,
}

/// `trainer_state.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub format: u32,
    pub webtune_version: String,
    /// Optimizer steps taken.
    pub step: u32,
    /// Windows handed out so far (`Batcher::position`); the shuffle order of each epoch follows
    /// from `hyperparameters.seed` and the epoch = position / windows.
    pub data_position: u64,
    pub epoch: u64,
    pub hyperparameters: Hyperparameters,
    pub schedule: ScheduleState,
    pub model: ModelInfo,
    pub data: DataInfo,
    pub options: RunOptions,
}

impl TrainerState {
    /// The state of `trainer` now: its step and data position, with the run's settings.
    pub fn of(
        trainer: &crate::train::Trainer,
        schedule: &LrSchedule,
        hyperparameters: Hyperparameters,
        model: ModelInfo,
        data: DataInfo,
        options: RunOptions,
    ) -> TrainerState {
        let step = trainer.steps_done();
        let windows = trainer.batcher.n_windows.max(1) as u64;
        TrainerState {
            format: FORMAT,
            webtune_version: env!("CARGO_PKG_VERSION").to_string(),
            step,
            data_position: trainer.batcher.position,
            epoch: trainer.batcher.position / windows,
            hyperparameters,
            schedule: ScheduleState {
                kind: schedule.kind.to_string(),
                lr: schedule.lr,
                warmup: schedule.warmup,
                total: schedule.total,
                min_lr: schedule.min_lr,
                next_lr: schedule.lr_at(step),
            },
            model,
            data,
            options,
        }
    }

    pub fn to_json(&self) -> Result<String, TrainError> {
        serde_json::to_string_pretty(self).map_err(|e| TrainError::Invalid(format!("{STATE_FILE}: {e}")))
    }

    /// Parses `trainer_state.json`; `path` names it in messages.
    pub fn from_json(text: &str, path: &str) -> Result<TrainerState, TrainError> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| TrainError::Io {
            path: path.into(),
            msg: format!("invalid JSON: {e}"),
        })?;
        let format = v.get("format").and_then(|f| f.as_u64());
        if format != Some(FORMAT as u64) {
            return Err(TrainError::Io {
                path: path.into(),
                msg: format!(
                    "checkpoint format {} is not the one this webtune ({}) reads ({FORMAT})",
                    format.map_or("missing".to_string(), |f| f.to_string()),
                    env!("CARGO_PKG_VERSION")
                ),
            });
        }
        serde_json::from_value(v).map_err(|e| TrainError::Io {
            path: path.into(),
            msg: e.to_string(),
        })
    }
}

pub use crate::data::dataset::{fnv1a64, hex};

/// FNV-1a 64 of a token stream: every token (u32 LE), then every label (i32 LE).
pub fn stream_fnv1a64(s: &TokenStream) -> u64 {
    let mut h = crate::data::dataset::Fnv1a64::default();
    s.tokens.iter().for_each(|t| h.update(&t.to_le_bytes()));
    s.labels.iter().for_each(|t| h.update(&t.to_le_bytes()));
    h.0
}

/// `optimizer.safetensors` bytes from (name, m, v) triples.
pub fn optimizer_to_safetensors(moments: &[(String, HostTensor, HostTensor)]) -> Result<Vec<u8>, TrainError> {
    let mut named = Vec::with_capacity(2 * moments.len());
    for (name, m, v) in moments {
        named.push((format!("{name}.exp_avg"), m));
        named.push((format!("{name}.exp_avg_sq"), v));
    }
    crate::model::weights::serialize_f32(named, OPTIMIZER_FILE).map_err(|e| TrainError::Invalid(e.to_string()))
}

/// (m, v) by tensor name from `optimizer.safetensors` bytes; `path` names the file in messages.
pub fn optimizer_from_safetensors(
    bytes: &[u8],
    path: &str,
) -> Result<BTreeMap<String, (HostTensor, HostTensor)>, TrainError> {
    let st = crate::model::weights::parse_safetensors(bytes, path).map_err(|e| TrainError::Invalid(e.to_string()))?;
    let mut m = BTreeMap::new();
    let mut v = BTreeMap::new();
    for (key, view) in st.tensors() {
        let data =
            crate::model::weights::view_to_f32(&view, path, &key).map_err(|e| TrainError::Invalid(e.to_string()))?;
        let t = HostTensor::new(view.shape(), data);
        if let Some(name) = key.strip_suffix(".exp_avg_sq") {
            v.insert(name.to_string(), t);
        } else if let Some(name) = key.strip_suffix(".exp_avg") {
            m.insert(name.to_string(), t);
        } else {
            return Err(TrainError::Io {
                path: path.into(),
                msg: format!("tensor '{key}' is neither <name>.exp_avg nor <name>.exp_avg_sq"),
            });
        }
    }
    let mut out = BTreeMap::new();
    for (name, mt) in m {
        let vt = v.remove(&name).ok_or_else(|| TrainError::Io {
            path: path.into(),
            msg: format!("'{name}.exp_avg' has no '{name}.exp_avg_sq'"),
        })?;
        out.insert(name, (mt, vt));
    }
    if let Some(name) = v.keys().next() {
        return Err(TrainError::Io {
            path: path.into(),
            msg: format!("'{name}.exp_avg_sq' has no '{name}.exp_avg'"),
        });
    }
    Ok(out)
}

/// The folder name of the checkpoint after `step` updates.
pub fn checkpoint_name(step: u32) -> String {
    format!("checkpoint-{step}")
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::*;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use super::{checkpoint_name, optimizer_from_safetensors, TrainerState, OPTIMIZER_FILE, STATE_FILE};
    use crate::model::HostTensor;
    use crate::train::TrainError;

    fn io(path: &Path, e: impl std::fmt::Display) -> TrainError {
        TrainError::Io {
            path: path.display().to_string(),
            msg: e.to_string(),
        }
    }

    /// The checkpoints in `out`: (step, folder), by step.
    pub fn list_checkpoints(out: &Path) -> Vec<(u32, PathBuf)> {
        let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(out)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let step = name.strip_prefix("checkpoint-")?.parse::<u32>().ok()?;
                (e.path().join(STATE_FILE).is_file()).then(|| (step, e.path()))
            })
            .collect();
        v.sort();
        v
    }

    /// `dir` itself when it is a checkpoint (has trainer_state.json), else its latest checkpoint.
    pub fn locate(dir: &Path) -> Result<PathBuf, TrainError> {
        if dir.join(STATE_FILE).is_file() {
            return Ok(dir.to_path_buf());
        }
        if !dir.is_dir() {
            return Err(io(
                dir,
                "not a directory (expected a checkpoint folder, e.g. OUT/checkpoint-100)",
            ));
        }
        list_checkpoints(dir).pop().map(|(_, p)| p).ok_or_else(|| {
            io(
                dir,
                format!("not a checkpoint: no {STATE_FILE}, and no checkpoint-<step> folder inside"),
            )
        })
    }

    /// Reads `trainer_state.json` of checkpoint folder `dir`.
    pub fn read_state(dir: &Path) -> Result<TrainerState, TrainError> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
        TrainerState::from_json(&text, &path.display().to_string())
    }

    /// Reads `optimizer.safetensors` of checkpoint folder `dir`.
    pub fn read_moments(dir: &Path) -> Result<BTreeMap<String, (HostTensor, HostTensor)>, TrainError> {
        let path = dir.join(OPTIMIZER_FILE);
        let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
        optimizer_from_safetensors(&bytes, &path.display().to_string())
    }

    /// Writes `bytes` to `path` and flushes it to disk.
    pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
        use std::io::Write;
        let mut f = std::fs::File::create(path).map_err(|e| io(path, e))?;
        f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| io(path, e))
    }

    fn sync_dir(dir: &Path) {
        // Makes renames durable where the platform allows opening a folder (Unix); best effort.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }

    /// Writes `out/checkpoint-<step>/`: `fill` writes the files into a temporary folder
    /// `out/.checkpoint-<step>.tmp<pid>`, which is then renamed into place (replacing an existing
    /// checkpoint of that step), so the folder is either whole or absent. Afterwards only the
    /// `keep` newest checkpoints up to `step` are kept (0 = keep all; checkpoints of later steps,
    /// left by another continuation, are not touched). Leftover temporary folders of earlier
    /// interrupted saves are removed first. Returns the checkpoint folder.
    pub fn write_checkpoint(
        out: &Path,
        step: u32,
        keep: usize,
        fill: impl FnOnce(&Path) -> Result<(), TrainError>,
    ) -> Result<PathBuf, TrainError> {
        for e in std::fs::read_dir(out).map_err(|e| io(out, e))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".checkpoint-") && (name.contains(".tmp") || name.contains(".old")) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let name = checkpoint_name(step);
        let pid = std::process::id();
        let tmp = out.join(format!(".{name}.tmp{pid}"));
        let fin = out.join(&name);
        // errors name the checkpoint's own path, not the temporary one the user never typed
        let named = |e: TrainError| match e {
            TrainError::Io { path, msg } => {
                let tmp_s = tmp.display().to_string();
                let path = path.strip_prefix(&tmp_s).map_or(path.clone(), |rest| format!("{}{rest}", fin.display()));
                TrainError::Io { path, msg }
            }
            e => e,
        };
        std::fs::create_dir(&tmp).map_err(|e| io(&fin, e))?;
        let written = fill(&tmp).map(|_| sync_dir(&tmp));
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(named(e));
        }
        let old = out.join(format!(".{name}.old{pid}"));
        let had_old = fin.exists();
        if had_old {
            std::fs::rename(&fin, &old).map_err(|e| io(&fin, e))?;
        }
        if let Err(e) = std::fs::rename(&tmp, &fin) {
            let _ = std::fs::remove_dir_all(&tmp);
            if had_old {
                let _ = std::fs::rename(&old, &fin);
            }
            return Err(io(&fin, e));
        }
        sync_dir(out);
        if had_old {
            let _ = std::fs::remove_dir_all(&old);
        }
        if keep > 0 {
            let older: Vec<PathBuf> = list_checkpoints(out)
                .into_iter()
                .filter(|c| c.0 <= step)
                .map(|c| c.1)
                .collect();
            for p in older.iter().take(older.len().saturating_sub(keep)) {
                let _ = std::fs::remove_dir_all(p);
            }
        }
        Ok(fin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_known_values() {
        // Reference values of FNV-1a 64.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn optimizer_state_round_trips_and_names_mismatches() {
        let t = |x: f32| HostTensor::new(&[2, 1], vec![x, -x]);
        let moments = vec![
            ("h.0.attn.c_attn.lora_A".to_string(), t(1.5), t(2.5)),
            ("wte.weight".to_string(), t(3.0), t(1e-30)),
        ];
        let bytes = optimizer_to_safetensors(&moments).unwrap();
        let back = optimizer_from_safetensors(&bytes, "o.safetensors").unwrap();
        assert_eq!(back.len(), 2);
        for (name, m, v) in &moments {
            assert_eq!(&back[name], &(m.clone(), v.clone()));
        }
        let only_m = optimizer_to_safetensors(&[]).unwrap();
        assert!(optimizer_from_safetensors(&only_m, "o").unwrap().is_empty());
        let named = vec![("x.exp_avg".to_string(), &moments[0].1)];
        let bytes = crate::model::weights::serialize_f32(named, "o").unwrap();
        let e = optimizer_from_safetensors(&bytes, "o.safetensors")
            .unwrap_err()
            .to_string();
        assert!(e.contains("o.safetensors") && e.contains("x.exp_avg_sq"), "{e}");
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn checkpoints_are_renamed_into_place_and_pruned() {
        let dir = std::env::temp_dir().join(format!("webtune-ckpt-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fill = |tag: &'static str| {
            move |p: &std::path::Path| -> Result<(), TrainError> {
                write_synced(&p.join(STATE_FILE), tag.as_bytes())?;
                Ok(())
            }
        };
        for step in [2, 4, 6] {
            write_checkpoint(&dir, step, 2, fill("a")).unwrap();
        }
        let steps: Vec<u32> = list_checkpoints(&dir).iter().map(|c| c.0).collect();
        assert_eq!(steps, [4, 6]);
        // a failing save leaves nothing behind, and the existing checkpoints are untouched
        let e = write_checkpoint(&dir, 8, 2, |_| Err(TrainError::Invalid("boom".into()))).unwrap_err();
        assert_eq!(e.to_string(), "boom");
        // a failed write names the checkpoint's path, never the temporary folder it was built in
        let e = write_checkpoint(&dir, 8, 2, |d| write_synced(&d.join("no-such-folder").join(STATE_FILE), b"x")).unwrap_err();
        let want = dir.join("checkpoint-8").join("no-such-folder").join(STATE_FILE);
        assert_eq!(e.to_string(), format!("{}: No such file or directory (os error 2)", want.display()));
        // replacing a checkpoint of the same step; later steps are kept when saving an earlier one
        write_checkpoint(&dir, 4, 1, fill("b")).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("checkpoint-4").join(STATE_FILE)).unwrap(),
            "b"
        );
        let steps: Vec<u32> = list_checkpoints(&dir).iter().map(|c| c.0).collect();
        assert_eq!(steps, [4, 6]);
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| n.starts_with("checkpoint-")), "{names:?}");
        assert_eq!(locate(&dir).unwrap(), dir.join("checkpoint-6"));
        assert_eq!(locate(&dir.join("checkpoint-4")).unwrap(), dir.join("checkpoint-4"));
        assert!(locate(&dir.join("nope")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
