//! Host-side weights under canonical names: HF names without the body's prefix
//! (`transformer.` for GPT-2, `model.` for the Llama family), e.g. `wte.weight`,
//! `h.{i}.attn.c_attn.weight` ([in, out], Conv1D) or `embed_tokens.weight`,
//! `layers.{i}.self_attn.q_proj.weight` ([out, in], nn.Linear); `lm_head.weight` only when untied.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::{Family, Linear, ModelConfig, ModelError};

#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: &[usize], data: Vec<f32>) -> HostTensor {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        HostTensor { shape: shape.to_vec(), data }
    }
    pub fn zeros(shape: &[usize]) -> HostTensor {
        HostTensor { shape: shape.to_vec(), data: vec![0.0; shape.iter().product()] }
    }

    /// Refuses NaN or infinite values, naming `path` (the file) and `name` (the tensor).
    pub fn check_finite(&self, path: &str, name: &str) -> Result<(), ModelError> {
        check_finite(&self.data, path, name)
    }
}

/// Refuses NaN or infinite values in tensor `name` of file `path`, naming the first and the count.
pub fn check_finite(data: &[f32], path: &str, name: &str) -> Result<(), ModelError> {
    let Some(index) = data.iter().position(|x| !x.is_finite()) else { return Ok(()) };
    Err(ModelError::NotFinite {
        path: path.into(),
        name: name.into(),
        value: data[index],
        index,
        count: data[index..].iter().filter(|x| !x.is_finite()).count(),
        len: data.len(),
    })
}

/// A model's weights on the host, by canonical name (see [`ModelConfig::block_name`]).
#[derive(Clone, Debug)]
pub struct Weights {
    pub config: ModelConfig,
    pub tensors: BTreeMap<String, HostTensor>,
}

/// Every tensor of a model of this config with its shape, in checkpoint order ([`ModelConfig::param_shapes`]).
pub fn param_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    cfg.param_shapes()
}

/// Values in every tensor of a model of this config (an untied head included; None when the
/// count overflows). Computed from one block's shapes, so a config of billions of layers costs
/// nothing to ask about.
pub fn param_count(cfg: &ModelConfig) -> Option<usize> {
    let count = |shapes: &[(String, Vec<usize>)]| {
        shapes.iter().try_fold(0usize, |acc, (_, s)| acc.checked_add(crate::memory::elements(s)?))
    };
    let [before, after] = cfg.outer_shapes();
    let head = if cfg.tie_word_embeddings { 0 } else { cfg.vocab_size.checked_mul(cfg.n_embd)? };
    let outer = count(&before)?.checked_add(count(&after)?)?.checked_add(head)?;
    outer.checked_add(count(&cfg.layer_shapes())?.checked_mul(cfg.n_layer)?)
}

/// Refuses a model whose f32 weights need more host memory than this machine has (`what` names
/// it the user's way, e.g. by the flags that set its shape), before anything is allocated.
pub fn check_fits(cfg: &ModelConfig, what: &dyn Fn() -> String) -> Result<(), crate::memory::MemoryError> {
    let n = param_count(cfg);
    let described = || format!("{} ({} parameters)", what(), n.map_or("too many".to_string(), |n| n.to_string()));
    crate::memory::check(&described, n.and_then(crate::memory::bytes_of::<f32>))
}

/// GPT-2's canonical name of block `layer`'s tensor `suffix` (e.g. `"ln_1.weight"`): `h.{layer}.{suffix}`.
pub fn block_name(layer: usize, suffix: &str) -> String {
    format!("h.{layer}.{suffix}")
}

impl Weights {
    /// The tensor called `name`. Names come from [`ModelConfig::param_shapes`], which loading
    /// checks, so a miss is a programming error.
    pub fn get(&self, name: &str) -> &HostTensor {
        match self.tensors.get(name) {
            Some(t) => t,
            None => panic!("weight '{name}' not present (loader guarantees every param_shapes name)"),
        }
    }

    /// Weight and bias of a block's linear layer (the bias only where the layer has one).
    pub fn linear(&self, layer: usize, lin: Linear) -> (&HostTensor, Option<&HostTensor>) {
        let name = self.config.block_name(layer, lin.hf_name());
        (self.get(&format!("{name}.weight")), self.tensors.get(&format!("{name}.bias")))
    }

    /// The LM head [vocab, C]: `lm_head.weight` if the checkpoint has an untied one, else the
    /// token embedding.
    pub fn lm_head(&self) -> &HostTensor {
        self.tensors.get("lm_head.weight").unwrap_or_else(|| self.get(self.config.embedding_name()))
    }

    /// A fresh model from a seed (for tests, benchmarks and training from scratch): GPT-2's
    /// initialisation (normal(0, 0.02) weights, zero biases, unit norms) for every family.
    pub fn random(config: &ModelConfig, seed: u64) -> Weights {
        let mut rng = crate::rng::Rng::new(seed);
        let mut tensors = BTreeMap::new();
        let mut shapes = config.param_shapes();
        if !config.tie_word_embeddings && config.family != Family::Gpt2 {
            shapes.push(("lm_head.weight".into(), vec![config.vocab_size, config.n_embd]));
        }
        for (name, shape) in shapes {
            let n: usize = shape.iter().product();
            let data = if name.ends_with(".bias") {
                vec![0.0; n]
            } else if name.contains("ln_") || name.contains("norm") {
                vec![1.0; n]
            } else {
                (0..n).map(|_| 0.02 * rng.normal()).collect()
            };
            tensors.insert(name, HostTensor { shape, data });
        }
        Weights { config: config.clone(), tensors }
    }
}

// ---------------------------------------------------------------------------------------
// Files: Hugging Face folders (config.json + model.safetensors, or the shards that
// model.safetensors.index.json lists), from disk or bytes.

/// Tensors read from one or more safetensors files, checked against a config as they come.
/// The expected shapes are kept per block, not per layer, so a config claiming billions of
/// layers costs nothing before the files show what they hold.
struct Collect<'c> {
    config: &'c ModelConfig,
    /// Tensors outside the blocks, and `lm_head.weight`.
    outer: BTreeMap<String, Vec<usize>>,
    /// Every block's tensors, by name inside the block.
    layer: BTreeMap<String, Vec<usize>>,
    tensors: BTreeMap<String, HostTensor>,
}

impl<'c> Collect<'c> {
    fn new(config: &'c ModelConfig) -> Collect<'c> {
        let [before, after] = config.outer_shapes();
        let mut outer: BTreeMap<String, Vec<usize>> = before.into_iter().chain(after).collect();
        outer.insert("lm_head.weight".into(), vec![config.vocab_size, config.n_embd]);
        let layer = config.layer_shapes().into_iter().collect();
        Collect { config, outer, layer, tensors: BTreeMap::new() }
    }

    /// The shape the config gives tensor `canon`, if it is one of the model's.
    fn expected(&self, canon: &str) -> Option<&Vec<usize>> {
        if let Some(shape) = self.outer.get(canon) {
            return Some(shape);
        }
        let (layer, suffix) = self.config.split_block_name(canon)?;
        if layer < self.config.n_layer { self.layer.get(suffix) } else { None }
    }

    /// Adds every tensor of one safetensors file (`name` for messages).
    fn add_file(&mut self, bytes: &[u8], name: &str) -> Result<(), ModelError> {
        let cfg = self.config;
        let prefix = cfg.hf_prefix();
        let st = parse_safetensors(bytes, name)?;
        // Sorted, so messages name the same tensor every time.
        let mut names: Vec<&str> = st.names();
        names.sort_unstable();
        for file_name in names {
            let canon = file_name.strip_prefix(prefix).unwrap_or(file_name);
            if is_hf_buffer(canon) {
                continue;
            }
            let want = self.expected(canon).cloned().ok_or_else(|| ModelError::Config {
                path: name.into(),
                msg: format!(
                    "unexpected tensor '{file_name}' (not a parameter of a {} model with {} layers)",
                    cfg.model_type, cfg.n_layer
                ),
            })?;
            let view = st.tensor(file_name).map_err(|e| st_error(name, e))?;
            if view.shape() != want.as_slice() {
                return Err(ModelError::Shape {
                    path: name.into(),
                    name: file_name.into(),
                    found: view.shape().to_vec(),
                    expected: want.clone(),
                });
            }
            let data = view_to_f32(&view, name, file_name)?;
            if self.tensors.insert(canon.to_string(), HostTensor { shape: want.clone(), data }).is_some() {
                return Err(ModelError::Config {
                    path: name.into(),
                    msg: format!("tensor '{canon}' appears twice (with and without the '{prefix}' prefix, or in two files)"),
                });
            }
        }
        Ok(())
    }

    /// Checks that every parameter came, and settles the LM head; `name` names the weights in messages.
    fn finish(mut self, name: &str) -> Result<Weights, ModelError> {
        let cfg = self.config;
        // the first missing tensor lies within the first (tensors read + 1) names, whatever n_layer is
        if let Some((p, _)) = cfg.params().find(|(p, _)| !self.tensors.contains_key(p)) {
            return Err(ModelError::Missing { path: name.into(), name: format!("{}{p}", cfg.hf_prefix()) });
        }
        let embedding = cfg.embedding_name();
        match cfg.family {
            // GPT-2 (as before): an untied head equal to wte bit for bit is the tied head written
            // out, so it is dropped; a different one is kept.
            Family::Gpt2 => {
                if let (Some(head), Some(wte)) = (self.tensors.get("lm_head.weight"), self.tensors.get(embedding)) {
                    if head.data.iter().zip(&wte.data).all(|(a, b)| a.to_bits() == b.to_bits()) {
                        self.tensors.remove("lm_head.weight");
                    }
                } else if !self.tensors.contains_key("lm_head.weight") && !cfg.tie_word_embeddings {
                    return Err(ModelError::Missing { path: name.into(), name: "lm_head.weight".into() });
                }
            }
            // The Llama family follows tie_word_embeddings, as transformers does: tied means the
            // head is the embedding (a stored lm_head.weight is not used).
            Family::Llama => {
                if cfg.tie_word_embeddings {
                    self.tensors.remove("lm_head.weight");
                } else if !self.tensors.contains_key("lm_head.weight") {
                    return Err(ModelError::Missing {
                        path: name.into(),
                        name: "lm_head.weight (config.json has tie_word_embeddings false)".into(),
                    });
                }
            }
        }
        Ok(Weights { config: self.config.clone(), tensors: self.tensors })
    }
}

impl Weights {
    /// A Hugging Face folder: config.json + model.safetensors, or the shards listed by
    /// model.safetensors.index.json (read one at a time).
    pub fn load_dir(dir: &Path) -> Result<Weights, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::Io {
                path: dir.display().to_string(),
                msg: "not a directory (expected a Hugging Face model folder with config.json and model.safetensors)"
                    .into(),
            });
        }
        let config_path = dir.join("config.json");
        let config = ModelConfig::from_json(&read_text(&config_path)?, &config_path.display().to_string())?;
        let mut collect = Collect::new(&config);
        let weights_path = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        if weights_path.exists() {
            collect.add_file(&read_bytes(&weights_path)?, &weights_path.display().to_string())?;
            return collect.finish(&weights_path.display().to_string());
        }
        if index_path.exists() {
            let shards = shard_files(&read_text(&index_path)?, &index_path.display().to_string())?;
            for shard in &shards {
                let path = dir.join(shard);
                collect.add_file(&read_bytes(&path)?, &path.display().to_string())?;
            }
            return collect.finish(&index_path.display().to_string());
        }
        let hint = if dir.join("pytorch_model.bin").exists() {
            "; found pytorch_model.bin: convert it to safetensors (save_pretrained in transformers does)"
        } else {
            ""
        };
        Err(ModelError::Io {
            path: weights_path.display().to_string(),
            msg: format!("file not found (nor model.safetensors.index.json){hint}"),
        })
    }

    /// The same from bytes (the browser has no file system): config.json and one
    /// model.safetensors. Names are for messages.
    pub fn from_bytes(config_json: &str, config_name: &str, safetensors: &[u8], weights_name: &str) -> Result<Weights, ModelError> {
        Weights::from_shards(config_json, config_name, &[(weights_name, safetensors)])
    }

    /// From config.json and the safetensors files of a (sharded) checkpoint, each with its name.
    pub fn from_shards(config_json: &str, config_name: &str, shards: &[(&str, &[u8])]) -> Result<Weights, ModelError> {
        let config = ModelConfig::from_json(config_json, config_name)?;
        let mut collect = Collect::new(&config);
        for (name, bytes) in shards {
            collect.add_file(bytes, name)?;
        }
        let name = match shards {
            [(one, _)] => one.to_string(),
            _ => format!("{config_name} (its {} weight files)", shards.len()),
        };
        collect.finish(&name)
    }

    /// Writes config.json + model.safetensors (f32, HF names, the tied head omitted), each file
    /// written to a temp name and renamed, so no half-written file is left.
    pub fn save_dir(&self, dir: &Path) -> Result<(), ModelError> {
        let bytes = self.to_safetensors()?;
        let config = self.config_json()?;
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        write_atomic(&dir.join("model.safetensors"), &bytes)?;
        write_atomic(&dir.join("config.json"), config.as_bytes())
    }

    /// model.safetensors bytes: f32, HF names (the body's prefix; `lm_head.weight` only when untied).
    pub fn to_safetensors(&self) -> Result<Vec<u8>, ModelError> {
        let prefix = self.config.hf_prefix();
        let named: Vec<(String, &HostTensor)> = self
            .tensors
            .iter()
            .map(|(k, t)| (if k == "lm_head.weight" { k.clone() } else { format!("{prefix}{k}") }, t))
            .collect();
        serialize_f32(named, "model.safetensors")
    }

    /// config.json for [`Weights::save_dir`]: the loaded config, marked f32 and tied iff no
    /// `lm_head.weight` is kept.
    pub fn config_json(&self) -> Result<String, ModelError> {
        let mut raw = self.config.raw.clone();
        if let Some(obj) = raw.as_object_mut() {
            for key in ["dtype", "torch_dtype"] {
                if obj.contains_key(key) {
                    obj.insert(key.into(), "float32".into());
                }
            }
            obj.insert("tie_word_embeddings".into(), (!self.tensors.contains_key("lm_head.weight")).into());
        }
        serde_json::to_string_pretty(&raw).map_err(|e| ModelError::Json { path: "config.json".into(), msg: e.to_string() })
    }
}

/// The shard files a model.safetensors.index.json lists (its `weight_map`'s values), in order
/// of first appearance; only plain file names (no folders) are accepted.
fn shard_files(text: &str, path: &str) -> Result<Vec<String>, ModelError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| ModelError::Json { path: path.into(), msg: e.to_string() })?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::Config { path: path.into(), msg: "missing object 'weight_map'".into() })?;
    let mut files: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let f = file.as_str().filter(|f| !f.is_empty() && !f.contains(['/', '\\']) && *f != ".." && *f != ".").ok_or_else(|| {
            ModelError::Config { path: path.into(), msg: format!("weight_map['{tensor}'] must be a file name in the folder, found {file}") }
        })?;
        if !files.iter().any(|x| x == f) {
            files.push(f.to_string());
        }
    }
    if files.is_empty() {
        return Err(ModelError::Config { path: path.into(), msg: "weight_map lists no files".into() });
    }
    Ok(files)
}

/// HF's non-parameter buffers: GPT-2's attention masks (`h.{i}.attn.bias`, `h.{i}.attn.masked_bias`)
/// and the rotary frequencies older Llama checkpoints saved (`layers.{i}.self_attn.rotary_emb.inv_freq`).
fn is_hf_buffer(canon: &str) -> bool {
    if canon.ends_with(".rotary_emb.inv_freq") {
        return true;
    }
    let Some(rest) = canon.strip_prefix("h.") else { return false };
    let Some((layer, tail)) = rest.split_once('.') else { return false };
    layer.parse::<usize>().is_ok() && (tail == "attn.bias" || tail == "attn.masked_bias")
}

pub(crate) fn io_error(path: &Path, e: std::io::Error) -> ModelError {
    ModelError::Io { path: path.display().to_string(), msg: e.to_string() }
}

pub(crate) fn read_text(path: &Path) -> Result<String, ModelError> {
    std::fs::read_to_string(path).map_err(|e| io_error(path, e))
}

pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|e| io_error(path, e))
}

/// Writes `bytes` to `path` through a temporary file in the same folder, flushed and renamed
/// into place: `path` is either the old file or the whole new one, never half-written.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    use std::io::Write;
    let file_name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| {
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        } // closed before the rename
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_error(path, e)
    })
}

pub(crate) fn st_error(path: &str, e: safetensors::SafeTensorError) -> ModelError {
    ModelError::Safetensors { path: path.into(), msg: e.to_string() }
}

pub(crate) fn parse_safetensors<'a>(bytes: &'a [u8], path: &str) -> Result<SafeTensors<'a>, ModelError> {
    SafeTensors::deserialize(bytes).map_err(|e| st_error(path, e))
}

/// A tensor's elements as f32 (F32, F16 and BF16 accepted; little-endian as the format says).
/// Every loader (model, adapter, checkpoint, optimizer state) comes through here, so a NaN or an
/// infinity in any loaded tensor is refused here, naming the file and the tensor.
pub(crate) fn view_to_f32(view: &TensorView<'_>, path: &str, name: &str) -> Result<Vec<f32>, ModelError> {
    let data = view.data();
    let width = match view.dtype() {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        other => return Err(ModelError::Dtype { path: path.into(), name: name.into(), dtype: format!("{other:?}") }),
    };
    let what = || format!("{path}: tensor '{name}' as f32");
    let mut out: Vec<f32> = Vec::new();
    crate::memory::reserve(&mut out, data.len() / width, &what)?;
    match view.dtype() {
        Dtype::F32 => out.extend(data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        Dtype::F16 => out.extend(data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())),
        _ => out.extend(data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())),
    }
    check_finite(&out, path, name)?;
    Ok(out)
}

/// Serializes named f32 tensors (HF's `{"format": "pt"}` metadata). `path` is for messages.
pub(crate) fn serialize_f32(named: Vec<(String, &HostTensor)>, path: &str) -> Result<Vec<u8>, ModelError> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = named
        .into_iter()
        .map(|(name, t)| (name, t.shape.clone(), t.data.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let mut views = Vec::with_capacity(bytes.len());
    for (name, shape, data) in &bytes {
        let view = TensorView::new(Dtype::F32, shape.clone(), data).map_err(|e| ModelError::Safetensors {
            path: path.into(),
            msg: format!("tensor '{name}': shape {shape:?} does not match its {} bytes: {e}", data.len()),
        })?;
        views.push((name.clone(), view));
    }
    let metadata = Some(std::collections::HashMap::from([("format".to_string(), "pt".to_string())]));
    safetensors::serialize(views, metadata).map_err(|e| st_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama_like(model_type: &str, tied: bool) -> ModelConfig {
        let text = format!(
            r#"{{"model_type": "{model_type}", "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
                "hidden_size": 32, "intermediate_size": 40, "vocab_size": 61, "max_position_embeddings": 64,
                "tie_word_embeddings": {tied}, "attention_bias": true}}"#
        );
        ModelConfig::from_json(&text, "config.json").unwrap()
    }

    #[test]
    fn param_count_is_the_sum_of_the_shapes_and_never_overflows() {
        let configs = [
            ModelConfig::gpt2(2, 3, 48, 97, 64),
            ModelConfig::gpt2(5, 4, 20, 11, 7),
            llama_like("llama", true),
            llama_like("qwen2", false),
            llama_like("qwen3", false),
        ];
        for cfg in configs {
            let mut sum: usize = param_shapes(&cfg).iter().map(|(_, s)| s.iter().product::<usize>()).sum();
            if !cfg.tie_word_embeddings {
                sum += cfg.vocab_size * cfg.n_embd;
            }
            assert_eq!(param_count(&cfg), Some(sum), "{}", cfg.model_type);
            // every block tensor's name splits back into its layer and its name in the block
            let blocks: Vec<String> = cfg.params().map(|(n, _)| n).filter(|n| cfg.split_block_name(n).is_some()).collect();
            assert_eq!(blocks.len(), cfg.n_layer * cfg.layer_shapes().len(), "{}", cfg.model_type);
            for name in blocks {
                let (layer, suffix) = cfg.split_block_name(&name).unwrap();
                assert_eq!(cfg.block_name(layer, suffix), name);
            }
        }
        let mut huge = ModelConfig::gpt2(1, 1, 4, 5, 3);
        huge.n_layer = 4_000_000_000;
        huge.n_embd = 4_000_000_000;
        assert_eq!(param_count(&huge), None);
        // a config of billions of layers against a small file: the first missing tensor is named
        let small = Weights::random(&ModelConfig::gpt2(1, 1, 4, 5, 3), 0).to_safetensors().unwrap();
        let config = r#"{"n_layer": 4000000000, "n_head": 1, "n_embd": 4, "vocab_size": 5, "n_positions": 3}"#;
        let e = Weights::from_bytes(config, "config.json", &small, "model.safetensors").unwrap_err();
        assert_eq!(e.to_string(), "model.safetensors: missing tensor 'transformer.h.1.ln_1.weight'");
        let small = Weights::random(&llama_like("qwen3", false), 0).to_safetensors().unwrap();
        let config = llama_like("qwen3", false).to_json().replace("\"num_hidden_layers\": 3", "\"num_hidden_layers\": 4000000000");
        let e = Weights::from_bytes(&config, "config.json", &small, "model.safetensors").unwrap_err();
        assert_eq!(e.to_string(), "model.safetensors: missing tensor 'model.layers.3.input_layernorm.weight'");
    }
}
