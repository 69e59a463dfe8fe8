//! Host-side weights under canonical names: HF names without the body's prefix
//! (`transformer.` for GPT-2, `model.` for the Llama family), e.g. `wte.weight`,
//! `h.{i}.attn.c_attn.weight` ([in, out], Conv1D) or `embed_tokens.weight`,
//! `layers.{i}.self_attn.q_proj.weight` ([out, in], nn.Linear); `lm_head.weight` only when untied.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use safetensors::tensor::{Dtype, Metadata, SafeTensors, TensorView};
use safetensors::SafeTensorError;

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
    let mut seen = NonFinite::default();
    seen.scan(data);
    seen.result(path, name)
}

/// The NaN and infinite values of a tensor seen a piece at a time: the first (index, value) and
/// how many, over the `len` values scanned.
#[derive(Default)]
struct NonFinite {
    first: Option<(usize, f32)>,
    count: usize,
    len: usize,
}

impl NonFinite {
    /// The tensor's next values.
    fn scan(&mut self, data: &[f32]) {
        let from = match self.first {
            Some(_) => 0,
            None => match data.iter().position(|x| !x.is_finite()) {
                Some(i) => {
                    self.first = Some((self.len + i, data[i]));
                    i
                }
                None => data.len(),
            },
        };
        self.count += data[from..].iter().filter(|x| !x.is_finite()).count();
        self.len += data.len();
    }

    fn result(self, path: &str, name: &str) -> Result<(), ModelError> {
        let Some((index, value)) = self.first else { return Ok(()) };
        Err(ModelError::NotFinite { path: path.into(), name: name.into(), value, index, count: self.count, len: self.len })
    }
}

/// A model's weights on the host, by canonical name (see [`ModelConfig::block_name`]).
#[derive(Clone, Debug)]
pub struct Weights {
    pub config: ModelConfig,
    pub tensors: BTreeMap<String, HostTensor>,
}

/// Where [`ModelGpu::new`](super::ModelGpu::new) takes a model's tensors from, by canonical name:
/// host [`Weights`] (native), or [`WeightFiles`], which reads each tensor from its file when it is
/// asked for (the browser, so the wasm heap never holds the model).
pub trait WeightSource {
    fn config(&self) -> &ModelConfig;
    /// Whether the model has tensor `name` (e.g. an untied `lm_head.weight`).
    fn has(&self, name: &str) -> bool;
    /// Tensor `name` as f32: borrowed from the host copy, or read and converted now.
    fn tensor(&self, name: &str) -> Result<Cow<'_, HostTensor>, ModelError>;
    /// The shape of tensor `name`, without reading it.
    fn shape(&self, name: &str) -> Option<&[usize]>;
    /// Rows `rows` of the 2-D tensor `name` as f32 (a row chunk of a vocabulary table, read
    /// without the rest of it).
    fn rows(&self, name: &str, rows: Range<usize>) -> Result<Cow<'_, [f32]>, ModelError>;
}

/// The element range of rows `rows` of a [rows, cols] tensor `name` of shape `shape`.
fn row_range(shape: &[usize], name: &str, rows: &Range<usize>) -> Result<Range<usize>, ModelError> {
    match shape {
        [n, cols] if rows.start <= rows.end && rows.end <= *n => Ok(rows.start * cols..rows.end * cols),
        _ => Err(ModelError::Config { path: "the model's weights".into(), msg: format!("tensor '{name}' of shape {shape:?} has no rows {rows:?}") }),
    }
}

/// Tensor `name` of `w` for an upload (a file that cannot be read is a GPU-layer refusal).
pub(crate) fn upload_tensor<'w>(w: &'w dyn WeightSource, name: &str) -> Result<Cow<'w, HostTensor>, crate::gpu::GpuError> {
    w.tensor(name).map_err(source_error)
}

/// A weight source's error during an upload, as the GPU layer reports it (its message unchanged).
pub(crate) fn source_error(e: ModelError) -> crate::gpu::GpuError {
    crate::gpu::GpuError::Invalid(e.to_string())
}

impl WeightSource for Weights {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
    fn tensor(&self, name: &str) -> Result<Cow<'_, HostTensor>, ModelError> {
        Ok(Cow::Borrowed(self.get(name)))
    }
    fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }
    fn rows(&self, name: &str, rows: Range<usize>) -> Result<Cow<'_, [f32]>, ModelError> {
        let t = self.get(name);
        Ok(Cow::Borrowed(&t.data[row_range(&t.shape, name, &rows)?]))
    }
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

/// Tensors read from one or more safetensors files, checked against a config as they come, each
/// kept as a `T`: its f32 values ([`Weights`]) or where it lies ([`WeightFiles`]).
/// The expected shapes are kept per block, not per layer, so a config claiming billions of
/// layers costs nothing before the files show what they hold.
struct Collect<'c, T> {
    config: &'c ModelConfig,
    /// Tensors outside the blocks, and `lm_head.weight`.
    outer: BTreeMap<String, Vec<usize>>,
    /// Every block's tensors, by name inside the block.
    layer: BTreeMap<String, Vec<usize>>,
    tensors: BTreeMap<String, T>,
}

impl<'c, T> Collect<'c, T> {
    fn new(config: &'c ModelConfig) -> Collect<'c, T> {
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

    /// Adds every tensor of one safetensors file (`name` for messages), reading only its header
    /// here: `keep` makes each tensor's `T` from where it lies and its name in the file, once its
    /// name and shape are checked (and checks its dtype and values).
    fn add_file(
        &mut self,
        file: &dyn FileBytes,
        name: &str,
        keep: &mut dyn FnMut(&TensorAt, &str) -> Result<T, ModelError>,
    ) -> Result<(), ModelError> {
        let cfg = self.config;
        let prefix = cfg.hf_prefix();
        let header = read_header(file, name)?;
        // Sorted, so messages name the same tensor every time.
        let mut infos: Vec<(String, &safetensors::tensor::TensorInfo)> = header.metadata.tensors().into_iter().collect();
        infos.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (file_name, info) in infos {
            let canon = file_name.strip_prefix(prefix).unwrap_or(&file_name);
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
            if info.shape != want {
                return Err(ModelError::Shape {
                    path: name.into(),
                    name: file_name.clone(),
                    found: info.shape.clone(),
                    expected: want.clone(),
                });
            }
            let (start, end) = info.data_offsets;
            let at = TensorAt { dtype: info.dtype, shape: want, bytes: header.data_start + start..header.data_start + end };
            let t = keep(&at, &file_name)?;
            if self.tensors.insert(canon.to_string(), t).is_some() {
                return Err(ModelError::Config {
                    path: name.into(),
                    msg: format!("tensor '{canon}' appears twice (with and without the '{prefix}' prefix, or in two files)"),
                });
            }
        }
        Ok(())
    }

    /// Checks that every parameter came, and settles the LM head; `name` names the weights in
    /// messages; `same` tells whether two tensors hold the same f32 bits.
    fn finish(mut self, name: &str, same: &dyn Fn(&T, &T) -> Result<bool, ModelError>) -> Result<BTreeMap<String, T>, ModelError> {
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
                    if same(head, wte)? {
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
        Ok(self.tensors)
    }
}

/// Collects the tensors of one file as host f32 tensors.
fn add_host_file(collect: &mut Collect<'_, HostTensor>, bytes: &[u8], name: &str) -> Result<(), ModelError> {
    collect.add_file(&bytes, name, &mut |at, file_name| {
        Ok(HostTensor { shape: at.shape.clone(), data: read_f32(&bytes, at, name, file_name)? })
    })
}

/// Host tensors with the same f32 bits.
fn same_bits(a: &HostTensor, b: &HostTensor) -> Result<bool, ModelError> {
    Ok(a.data.len() == b.data.len() && a.data.iter().zip(&b.data).all(|(x, y)| x.to_bits() == y.to_bits()))
}

/// The name messages give a checkpoint's weights: its one file, or its config and the file count.
fn weights_name(config_name: &str, files: &[&str]) -> String {
    match files {
        [one] => one.to_string(),
        _ => format!("{config_name} (its {} weight files)", files.len()),
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
        let done = |collect: Collect<'_, HostTensor>, name: &Path| {
            let tensors = collect.finish(&name.display().to_string(), &same_bits)?;
            Ok(Weights { config: config.clone(), tensors })
        };
        if weights_path.exists() {
            add_host_file(&mut collect, &read_bytes(&weights_path)?, &weights_path.display().to_string())?;
            return done(collect, &weights_path);
        }
        if index_path.exists() {
            let shards = shard_files(&read_text(&index_path)?, &index_path.display().to_string())?;
            for shard in &shards {
                let path = dir.join(shard);
                add_host_file(&mut collect, &read_bytes(&path)?, &path.display().to_string())?;
            }
            return done(collect, &index_path);
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
            add_host_file(&mut collect, bytes, name)?;
        }
        let names: Vec<&str> = shards.iter().map(|(n, _)| *n).collect();
        let tensors = collect.finish(&weights_name(config_name, &names), &same_bits)?;
        Ok(Weights { config, tensors })
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

// ---------------------------------------------------------------------------------------
// Reading safetensors files a piece at a time.

/// The bytes of a safetensors file, read a range at a time: bytes in memory (nothing is
/// copied), or (the browser) a JS `Uint8Array` that the wasm heap never holds whole.
pub trait FileBytes {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes `range` of the file (within `len`).
    fn read(&self, range: Range<usize>) -> Cow<'_, [u8]>;

    /// The whole file, [`CHUNK_BYTES`] at a time, in order (e.g. for a fingerprint).
    fn each_chunk(&self, each: &mut dyn FnMut(&[u8])) {
        let len = self.len();
        for start in (0..len).step_by(CHUNK_BYTES) {
            each(&self.read(start..(start + CHUNK_BYTES).min(len)));
        }
    }
}

impl FileBytes for &[u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    fn read(&self, range: Range<usize>) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self[range])
    }
}

impl FileBytes for Vec<u8> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    fn read(&self, range: Range<usize>) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self[range])
    }
}

/// Bytes read (and converted) at a time when a tensor or a file is read in pieces.
pub const CHUNK_BYTES: usize = 1 << 20;

/// The largest header the safetensors crate reads (its `MAX_HEADER_SIZE`): a file claiming a
/// larger one is refused from its first 8 bytes, so no more is read.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Where one tensor lies in its safetensors file: dtype, shape and byte range in the file.
#[derive(Clone, Debug)]
pub struct TensorAt {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Range<usize>,
}

/// A safetensors file's header and where its data starts.
struct Header {
    metadata: Metadata,
    data_start: usize,
}

/// Reads and checks a safetensors file's header from its first bytes only, with the checks and
/// messages of `SafeTensors::deserialize` on the whole file (`path` for messages): sizes, JSON,
/// offsets, and that the tensors cover the rest of the file exactly.
fn read_header(file: &dyn FileBytes, path: &str) -> Result<Header, ModelError> {
    let len = file.len();
    let n = file.read(0..len.min(8)).get(..8).map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
    // A header over the crate's limit is refused from the 8 bytes alone (and a short file as short).
    let take = match n {
        Some(n) if n <= MAX_HEADER_BYTES => (8 + n as usize).min(len),
        _ => len.min(8),
    };
    let head = file.read(0..take);
    // The crate checks the header as if it were the whole file: when the header is valid it then
    // finds the tensors' bytes missing, which are checked against the file's length here instead.
    let metadata = match SafeTensors::read_metadata(&head) {
        Ok((_, metadata)) => metadata,
        Err(SafeTensorError::MetadataIncompleteBuffer) => serde_json::from_slice::<Metadata>(&head[8..])
            .map_err(|e| st_error(path, SafeTensorError::InvalidHeaderDeserialization(e)))?,
        Err(e) => return Err(st_error(path, e)),
    };
    if take.checked_add(metadata.data_len()) != Some(len) {
        return Err(st_error(path, SafeTensorError::MetadataIncompleteBuffer));
    }
    Ok(Header { metadata, data_start: take })
}

/// Bytes per element of a dtype webtune reads (F32, F16, BF16), else the dtype error.
fn dtype_width(dtype: Dtype, path: &str, name: &str) -> Result<usize, ModelError> {
    match dtype {
        Dtype::F32 => Ok(4),
        Dtype::F16 | Dtype::BF16 => Ok(2),
        other => Err(ModelError::Dtype { path: path.into(), name: name.into(), dtype: format!("{other:?}") }),
    }
}

/// Appends `bytes` of elements of `dtype` (F32, F16 or BF16; little-endian) to `out` as f32.
fn extend_f32(dtype: Dtype, bytes: &[u8], out: &mut Vec<f32>) {
    match dtype {
        Dtype::F32 => out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        Dtype::F16 => out.extend(bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())),
        _ => out.extend(bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())),
    }
}

/// Elements `elems` of tensor `at` of `file` as f32, appended to `out` (the dtype is one
/// [`dtype_width`] accepts; values are not checked).
fn read_elems(file: &dyn FileBytes, at: &TensorAt, width: usize, elems: Range<usize>, out: &mut Vec<f32>) {
    let bytes = file.read(at.bytes.start + elems.start * width..at.bytes.start + elems.end * width);
    extend_f32(at.dtype, &bytes, out);
}

/// Tensor `at` of `file` as f32, [`CHUNK_BYTES`] of the file at a time: appended to `out`, or
/// (None) only checked, a piece at a time. Refuses a dtype webtune does not read and NaN or
/// infinite values, naming `path` (the file) and `name` (the tensor in it).
fn read_checked(file: &dyn FileBytes, at: &TensorAt, path: &str, name: &str, out: Option<&mut Vec<f32>>) -> Result<(), ModelError> {
    let width = dtype_width(at.dtype, path, name)?;
    let n = at.bytes.len() / width;
    let per = CHUNK_BYTES / width;
    let keep = out.is_some();
    let mut scratch = Vec::new();
    let out = out.unwrap_or(&mut scratch);
    let mut seen = NonFinite::default();
    for e0 in (0..n).step_by(per) {
        let from = out.len();
        read_elems(file, at, width, e0..(e0 + per).min(n), out);
        seen.scan(&out[from..]);
        if !keep {
            out.clear();
        }
    }
    seen.result(path, name)
}

/// Tensor `at` of `file` as f32 (checked as [`read_checked`] checks it).
fn read_f32(file: &dyn FileBytes, at: &TensorAt, path: &str, name: &str) -> Result<Vec<f32>, ModelError> {
    let width = dtype_width(at.dtype, path, name)?;
    let what = || format!("{path}: tensor '{name}' as f32");
    let mut out: Vec<f32> = Vec::new();
    crate::memory::reserve(&mut out, at.bytes.len() / width, &what)?;
    read_checked(file, at, path, name, Some(&mut out))?;
    Ok(out)
}

/// A tensor of one of the files of a [`WeightFiles`].
#[derive(Clone, Debug)]
struct Located {
    /// Index in the files.
    file: usize,
    /// Its name in the file (for messages).
    name: String,
    at: TensorAt,
}

/// A model's weights left in their safetensors files (`F`: the browser's JS arrays; bytes in
/// memory in tests). Loading reads each file's header and checks every tensor as [`Weights`]
/// loading does (names, shapes, dtypes, finite values: the same errors), reading the values a
/// piece at a time; afterwards [`WeightSource::tensor`] reads and converts one tensor when it is
/// asked for. So the host holds at most one tensor as f32, never the model or its files.
pub struct WeightFiles<F> {
    pub config: ModelConfig,
    files: Vec<(String, F)>,
    tensors: BTreeMap<String, Located>,
}

impl<F: FileBytes> WeightFiles<F> {
    /// From config.json and the safetensors files of a (sharded) checkpoint, each with its name
    /// (for messages), as [`Weights::from_shards`] reads them.
    pub fn new(config_json: &str, config_name: &str, files: Vec<(String, F)>) -> Result<WeightFiles<F>, ModelError> {
        let config = ModelConfig::from_json(config_json, config_name)?;
        let mut collect = Collect::new(&config);
        for (i, (name, bytes)) in files.iter().enumerate() {
            collect.add_file(bytes, name, &mut |at, file_name| {
                read_checked(bytes, at, name, file_name, None)?;
                Ok(Located { file: i, name: file_name.to_string(), at: at.clone() })
            })?;
        }
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        let same = |a: &Located, b: &Located| same_values(&files, a, b);
        let tensors = collect.finish(&weights_name(config_name, &names), &same)?;
        Ok(WeightFiles { config, files, tensors })
    }

    /// The files, as given.
    pub fn files(&self) -> &[(String, F)] {
        &self.files
    }

    /// Values in the model's tensors (those it uses: a tied head's copy is not counted).
    pub fn parameters(&self) -> usize {
        self.tensors.values().map(|t| t.at.shape.iter().product::<usize>()).sum()
    }
}

/// Whether two tensors of `files` hold the same f32 values bit for bit, compared a piece at a time.
fn same_values<F: FileBytes>(files: &[(String, F)], a: &Located, b: &Located) -> Result<bool, ModelError> {
    let (fa, fb) = (&files[a.file], &files[b.file]);
    let (wa, wb) = (dtype_width(a.at.dtype, &fa.0, &a.name)?, dtype_width(b.at.dtype, &fb.0, &b.name)?);
    let n = a.at.bytes.len() / wa;
    if n != b.at.bytes.len() / wb {
        return Ok(false);
    }
    let per = CHUNK_BYTES / 4;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for e0 in (0..n).step_by(per) {
        let e = e0..(e0 + per).min(n);
        x.clear();
        y.clear();
        read_elems(&fa.1, &a.at, wa, e.clone(), &mut x);
        read_elems(&fb.1, &b.at, wb, e, &mut y);
        if !x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()) {
            return Ok(false);
        }
    }
    Ok(true)
}

impl<F: FileBytes> WeightSource for WeightFiles<F> {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
    fn tensor(&self, name: &str) -> Result<Cow<'_, HostTensor>, ModelError> {
        let t = self.tensors.get(name).ok_or_else(|| ModelError::Missing { path: "the model's weights".into(), name: name.into() })?;
        let (path, file) = &self.files[t.file];
        let data = read_f32(file, &t.at, path, &t.name)?;
        Ok(Cow::Owned(HostTensor { shape: t.at.shape.clone(), data }))
    }
    fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.at.shape.as_slice())
    }
    fn rows(&self, name: &str, rows: Range<usize>) -> Result<Cow<'_, [f32]>, ModelError> {
        let t = self.tensors.get(name).ok_or_else(|| ModelError::Missing { path: "the model's weights".into(), name: name.into() })?;
        let (path, file) = &self.files[t.file];
        let elems = row_range(&t.at.shape, name, &rows)?;
        let width = dtype_width(t.at.dtype, path, &t.name)?;
        let start = t.at.bytes.start + elems.start * width;
        let at = TensorAt { dtype: t.at.dtype, shape: vec![rows.len(), t.at.shape[1]], bytes: start..start + elems.len() * width };
        Ok(Cow::Owned(read_f32(file, &at, path, &t.name)?))
    }
}

/// A tensor's elements as f32 (F32, F16 and BF16 accepted; little-endian as the format says).
/// Every loader (model, adapter, checkpoint, optimizer state) comes through [`read_checked`] (this
/// for a tensor in memory), so a NaN or an infinity in any loaded tensor is refused there, naming
/// the file and the tensor.
pub(crate) fn view_to_f32(view: &TensorView<'_>, path: &str, name: &str) -> Result<Vec<f32>, ModelError> {
    let at = TensorAt { dtype: view.dtype(), shape: view.shape().to_vec(), bytes: 0..view.data().len() };
    read_f32(&view.data(), &at, path, name)
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

    /// Bytes in memory that remember the largest range read at once.
    struct Watched {
        bytes: Vec<u8>,
        largest: std::cell::Cell<usize>,
    }

    impl FileBytes for Watched {
        fn len(&self) -> usize {
            self.bytes.len()
        }
        fn read(&self, range: Range<usize>) -> Cow<'_, [u8]> {
            self.largest.set(self.largest.get().max(range.len()));
            Cow::Borrowed(&self.bytes[range])
        }
    }

    /// safetensors bytes of `w`'s tensors (HF names) in `dtype` (F32, F16 or BF16), with `extra` tensors.
    fn file_of(w: &Weights, dtype: Dtype, extra: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
        let prefix = w.config.hf_prefix();
        let mut named: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = w
            .tensors
            .iter()
            .map(|(k, t)| {
                let name = if k == "lm_head.weight" { k.clone() } else { format!("{prefix}{k}") };
                let data: Vec<u8> = match dtype {
                    Dtype::F16 => t.data.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
                    Dtype::BF16 => t.data.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
                    _ => t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                };
                (name, dtype, t.shape.clone(), data)
            })
            .collect();
        named.extend(extra.iter().map(|(n, d, s, b)| (n.to_string(), *d, s.clone(), b.clone())));
        let views: Vec<(String, TensorView<'_>)> =
            named.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
        safetensors::serialize(views, None).unwrap()
    }

    /// Loads `files` both ways: the same tensors, or the same error.
    fn both(config: &str, files: &[(&str, Vec<u8>)]) -> Result<Weights, String> {
        let shards: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        let host = Weights::from_shards(config, "config.json", &shards);
        let watched = files.iter().map(|(n, b)| (n.to_string(), Watched { bytes: b.clone(), largest: 0.into() })).collect();
        let streamed = WeightFiles::new(config, "config.json", watched);
        match (host, streamed) {
            (Ok(w), Ok(s)) => {
                let read = |s: &WeightFiles<Watched>| s.files().iter().map(|(_, f)| f.largest.get()).max().unwrap_or(0);
                assert!(read(&s) <= CHUNK_BYTES, "loading read {} bytes at once", read(&s));
                assert_eq!(s.tensors.keys().collect::<Vec<_>>(), w.tensors.keys().collect::<Vec<_>>());
                assert_eq!(s.parameters(), w.tensors.values().map(|t| t.data.len()).sum::<usize>());
                for (name, t) in &w.tensors {
                    assert!(s.has(name));
                    let got = s.tensor(name).unwrap();
                    assert_eq!(got.shape, t.shape, "{name}");
                    assert!(got.data.iter().zip(&t.data).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}");
                    assert!(read(&s) <= CHUNK_BYTES, "reading {name} read {} bytes at once", read(&s));
                    assert_eq!(s.shape(name), Some(t.shape.as_slice()));
                    if let [n, cols] = t.shape[..] {
                        // row chunks read alone: a middle one, the last row, none
                        for r in [n / 3..n / 3 + n / 2, n - 1..n, n..n] {
                            let want = &t.data[r.start * cols..r.end * cols];
                            let (got, host) = (s.rows(name, r.clone()).unwrap(), w.rows(name, r.clone()).unwrap());
                            assert!(got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()) && got.len() == want.len(), "{name} rows {r:?}");
                            assert_eq!(&*host, want);
                        }
                        let e = s.rows(name, 0..n + 1).unwrap_err().to_string();
                        assert_eq!(e, w.rows(name, 0..n + 1).unwrap_err().to_string());
                        assert!(e.contains(&format!("has no rows 0..{}", n + 1)), "{e}");
                    }
                }
                Ok(w)
            }
            (Err(a), Err(b)) => {
                assert_eq!(a.to_string(), b.to_string());
                Err(a.to_string())
            }
            (a, b) => panic!("the loaders disagree: {:?} vs {:?}", a.map(|_| ()), b.map(|_| ())),
        }
    }

    #[test]
    fn weight_files_read_what_weights_read_a_piece_at_a_time() {
        // GPT-2 in each dtype the loaders read
        let cfg = ModelConfig::gpt2(2, 3, 48, 97, 64);
        let config = cfg.to_json();
        let w = Weights::random(&cfg, 1);
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            both(&config, &[("model.safetensors", file_of(&w, dtype, &[]))]).unwrap();
        }
        // the tied head written out is dropped; a different one is kept
        let wte: Vec<u8> = w.get("wte.weight").data.iter().flat_map(|x| x.to_le_bytes()).collect();
        let tied = both(&config, &[("model.safetensors", file_of(&w, Dtype::F32, &[("lm_head.weight", Dtype::F32, vec![97, 48], wte.clone())]))]);
        assert!(!tied.unwrap().tensors.contains_key("lm_head.weight"));
        let mut other = wte.clone();
        other[5] ^= 1;
        let untied = both(&config, &[("model.safetensors", file_of(&w, Dtype::F32, &[("lm_head.weight", Dtype::F32, vec![97, 48], other)]))]);
        assert!(untied.unwrap().tensors.contains_key("lm_head.weight"));
        // a Llama-family model in two shards, untied
        let llama = llama_like("qwen3", false);
        let lw = Weights::random(&llama, 2);
        let (mut a, mut b) = (lw.clone(), lw.clone());
        a.tensors.retain(|k, _| k.starts_with("layers.0."));
        b.tensors.retain(|k, _| !k.starts_with("layers.0."));
        let shards = [("a.safetensors", file_of(&a, Dtype::BF16, &[])), ("b.safetensors", file_of(&b, Dtype::F32, &[]))];
        assert!(both(&llama.to_json(), &shards).unwrap().tensors.contains_key("lm_head.weight"));
        // a tensor of several pieces: 600 x 2048 f32 = 4.7 MiB
        let big = ModelConfig::gpt2(1, 1, 2048, 600, 4);
        let bw = Weights::random(&big, 3);
        both(&big.to_json(), &[("model.safetensors", file_of(&bw, Dtype::F32, &[]))]).unwrap();
    }

    #[test]
    fn weight_files_refuse_what_weights_refuse_with_the_same_message() {
        let cfg = ModelConfig::gpt2(2, 3, 48, 97, 64);
        let config = cfg.to_json();
        let w = Weights::random(&cfg, 1);
        let good = file_of(&w, Dtype::F32, &[]);
        let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&good[8..8 + n]).unwrap();
        let at = |name: &str| 8 + n + header[name]["data_offsets"][0].as_u64().unwrap() as usize;
        let poke = |name: &str, index: usize, v: f32| {
            let mut b = good.clone();
            b[at(name) + 4 * index..][..4].copy_from_slice(&v.to_le_bytes());
            b
        };
        let mut nan_late = poke("transformer.wte.weight", 4000, f32::NAN);
        nan_late[at("transformer.wte.weight") + 4 * 4001..][..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
        let mut huge_header = good.clone();
        huge_header[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        let mut past_the_file = good.clone();
        past_the_file[..8].copy_from_slice(&((good.len() as u64) + 10).to_le_bytes());
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0; 12]);
        let mut no_wpe = w.clone();
        no_wpe.tensors.remove("wpe.weight");
        let mut misshapen = w.clone();
        misshapen.tensors.insert("wpe.weight".into(), HostTensor::zeros(&[63, 48]));
        let int = vec![0u8; 4 * 64 * 48];
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("NaN", poke("transformer.h.1.mlp.c_fc.weight", 17, f32::NAN), "holds NaN (element 17; 1 of its 9216 values"),
            ("NaN and an infinity", nan_late, "holds NaN (element 4000; 2 of its 4656 values"),
            ("cut short", good[..4000].to_vec(), "not a valid safetensors file"),
            ("garbage", b"this is not a safetensors file at all".to_vec(), "not a valid safetensors file"),
            ("tiny", b"abc".to_vec(), "not a valid safetensors file"),
            ("header too large", huge_header, "header too large"),
            ("header past the file", past_the_file, "not a valid safetensors file"),
            ("trailing bytes", trailing, "not a valid safetensors file"),
            ("missing", file_of(&no_wpe, Dtype::F32, &[]), "missing tensor 'transformer.wpe.weight'"),
            ("shape", file_of(&misshapen, Dtype::F32, &[]), "has shape [63, 48]"),
            ("unexpected", file_of(&w, Dtype::F32, &[("transformer.h.9.ln_1.weight", Dtype::F32, vec![1], vec![0; 4])]), "unexpected tensor"),
            ("dtype", file_of(&no_wpe, Dtype::F32, &[("transformer.wpe.weight", Dtype::I32, vec![64, 48], int)]), "has dtype I32"),
        ];
        for (what, bytes, expect) in cases {
            let e = both(&config, &[("model.safetensors", bytes)]).map(|_| ()).unwrap_err();
            assert!(e.starts_with("model.safetensors: ") && e.contains(expect), "{what}: {e}");
        }
    }

    #[test]
    fn each_chunk_covers_the_file_in_order() {
        let bytes: Vec<u8> = (0..CHUNK_BYTES * 2 + 5).map(|i| (i % 251) as u8).collect();
        let mut seen = Vec::new();
        bytes.each_chunk(&mut |piece| {
            assert!(piece.len() <= CHUNK_BYTES);
            seen.extend_from_slice(piece)
        });
        assert!(seen == bytes);
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
