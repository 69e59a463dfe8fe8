//! Host-side weights under canonical names (HF names without the `transformer.`
//! prefix): `wte.weight`, `wpe.weight`, `h.{i}.ln_1.weight`, `h.{i}.attn.c_attn.weight`
//! ([in, out], Conv1D layout), ..., `ln_f.bias`, and `lm_head.weight` only when untied.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::{Gpt2Config, Linear, ModelError};

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

#[derive(Clone, Debug)]
pub struct Gpt2Weights {
    pub config: Gpt2Config,
    pub tensors: BTreeMap<String, HostTensor>,
}

/// Every tensor a GPT-2 of this config has, with its shape, in checkpoint order
/// (the untied `lm_head.weight` is not listed; see [`Gpt2Weights::lm_head`]).
pub fn param_shapes(cfg: &Gpt2Config) -> Vec<(String, Vec<usize>)> {
    let c = cfg.n_embd;
    let mut v = vec![("wte.weight".to_string(), vec![cfg.vocab_size, c]), ("wpe.weight".to_string(), vec![cfg.n_positions, c])];
    for i in 0..cfg.n_layer {
        v.extend(layer_shapes(cfg, i));
    }
    v.push(("ln_f.weight".to_string(), vec![c]));
    v.push(("ln_f.bias".to_string(), vec![c]));
    v
}

/// The 12 tensors of block `i`, in checkpoint order.
fn layer_shapes(cfg: &Gpt2Config, i: usize) -> Vec<(String, Vec<usize>)> {
    let c = cfg.n_embd;
    let p = |s: &str| format!("h.{i}.{s}");
    let mut v = vec![(p("ln_1.weight"), vec![c]), (p("ln_1.bias"), vec![c])];
    for lin in Linear::ALL {
        let (fi, fo) = lin.dims(c);
        v.push((p(&format!("{}.weight", lin.hf_name())), vec![fi, fo]));
        v.push((p(&format!("{}.bias", lin.hf_name())), vec![fo]));
        if lin == Linear::AttnProj {
            v.push((p("ln_2.weight"), vec![c]));
            v.push((p("ln_2.bias"), vec![c]));
        }
    }
    v
}

/// Values in every tensor of a GPT-2 of this config (None when the count overflows). Computed
/// from one block's shapes, so a config of billions of layers costs nothing to ask about.
pub fn param_count(cfg: &Gpt2Config) -> Option<usize> {
    let count = |shapes: &[(String, Vec<usize>)]| {
        shapes.iter().try_fold(0usize, |acc, (_, s)| acc.checked_add(crate::memory::elements(s)?))
    };
    let c = cfg.n_embd;
    let outer = [
        (String::new(), vec![cfg.vocab_size, c]),
        (String::new(), vec![cfg.n_positions, c]),
        (String::new(), vec![2, c]),
    ];
    count(&outer)?.checked_add(count(&layer_shapes(cfg, 0))?.checked_mul(cfg.n_layer)?)
}

/// Refuses a model whose f32 weights need more host memory than this machine has (`what` names
/// it the user's way, e.g. by the flags that set its shape), before anything is allocated.
pub fn check_fits(cfg: &Gpt2Config, what: &dyn Fn() -> String) -> Result<(), crate::memory::MemoryError> {
    let n = param_count(cfg);
    let described = || format!("{} ({} parameters)", what(), n.map_or("too many".to_string(), |n| n.to_string()));
    crate::memory::check(&described, n.and_then(crate::memory::bytes_of::<f32>))
}

/// Canonical name of block `layer`'s tensor `suffix` (e.g. `"ln_1.weight"`).
pub fn block_name(layer: usize, suffix: &str) -> String {
    format!("h.{layer}.{suffix}")
}

impl Gpt2Weights {
    /// The tensor called `name`. Names come from [`param_shapes`], which loading checks,
    /// so a miss is a programming error.
    pub fn get(&self, name: &str) -> &HostTensor {
        match self.tensors.get(name) {
            Some(t) => t,
            None => panic!("weight '{name}' not present (loader guarantees every param_shapes name)"),
        }
    }

    /// Weight [in, out] and bias [out] of a block's linear layer.
    pub fn linear(&self, layer: usize, lin: Linear) -> (&HostTensor, &HostTensor) {
        (
            self.get(&block_name(layer, &format!("{}.weight", lin.hf_name()))),
            self.get(&block_name(layer, &format!("{}.bias", lin.hf_name()))),
        )
    }

    /// The LM head [vocab, C]: `lm_head.weight` if the checkpoint has an untied one, else `wte.weight`.
    pub fn lm_head(&self) -> &HostTensor {
        self.tensors.get("lm_head.weight").unwrap_or_else(|| self.get("wte.weight"))
    }

    /// GPT-2's initialisation (normal(0, 0.02) weights, zero biases, unit LayerNorm),
    /// from a seed; for tests and training from scratch.
    pub fn random(config: &Gpt2Config, seed: u64) -> Gpt2Weights {
        let mut rng = crate::rng::Rng::new(seed);
        let mut tensors = BTreeMap::new();
        for (name, shape) in param_shapes(config) {
            let n: usize = shape.iter().product();
            let data = if name.ends_with(".bias") {
                vec![0.0; n]
            } else if name.contains("ln_") {
                vec![1.0; n]
            } else {
                (0..n).map(|_| 0.02 * rng.normal()).collect()
            };
            tensors.insert(name, HostTensor { shape, data });
        }
        Gpt2Weights { config: config.clone(), tensors }
    }
}

// ---------------------------------------------------------------------------------------
// Files: Hugging Face GPT-2 folders (config.json + model.safetensors), from disk or bytes.

/// HF's name prefix for the transformer body inside `GPT2LMHeadModel`.
const HF_PREFIX: &str = "transformer.";

impl Gpt2Weights {
    /// A Hugging Face GPT-2 folder: config.json + model.safetensors.
    pub fn load_dir(dir: &Path) -> Result<Gpt2Weights, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::Io {
                path: dir.display().to_string(),
                msg: "not a directory (expected a Hugging Face GPT-2 folder with config.json and model.safetensors)"
                    .into(),
            });
        }
        let config_path = dir.join("config.json");
        let weights_path = dir.join("model.safetensors");
        let config_text = read_text(&config_path)?;
        if !weights_path.exists() {
            let hint = if dir.join("model.safetensors.index.json").exists() {
                "; sharded checkpoints (model.safetensors.index.json) are not supported, save the model as one file"
            } else if dir.join("pytorch_model.bin").exists() {
                "; found pytorch_model.bin: convert it to safetensors (save_pretrained in transformers does)"
            } else {
                ""
            };
            return Err(ModelError::Io {
                path: weights_path.display().to_string(),
                msg: format!("file not found{hint}"),
            });
        }
        let bytes = read_bytes(&weights_path)?;
        Gpt2Weights::from_bytes(
            &config_text,
            &config_path.display().to_string(),
            &bytes,
            &weights_path.display().to_string(),
        )
    }

    /// The same from bytes (the browser has no file system). Names are for messages.
    pub fn from_bytes(
        config_json: &str,
        config_name: &str,
        safetensors: &[u8],
        weights_name: &str,
    ) -> Result<Gpt2Weights, ModelError> {
        let config = Gpt2Config::from_json(config_json, config_name)?;
        let st = parse_safetensors(safetensors, weights_name)?;
        // A file with fewer tensors than the config's layers need: name the first one missing,
        // without listing the names of every layer the config claims (n_layer comes from the user)
        if config.n_layer.saturating_mul(12).saturating_add(4) > st.len() {
            let present: std::collections::HashSet<&str> =
                st.names().into_iter().map(|n| n.strip_prefix(HF_PREFIX).unwrap_or(n)).collect();
            let outer = [("wte.weight".to_string(), vec![]), ("wpe.weight".to_string(), vec![])];
            let tail = [("ln_f.weight".to_string(), vec![]), ("ln_f.bias".to_string(), vec![])];
            let mut names = outer.into_iter().chain((0..config.n_layer).flat_map(|i| layer_shapes(&config, i))).chain(tail);
            if let Some((name, _)) = names.find(|(n, _)| !present.contains(n.as_str())) {
                return Err(ModelError::Missing { path: weights_name.into(), name: format!("{HF_PREFIX}{name}") });
            }
        }
        let expected: BTreeMap<String, Vec<usize>> = param_shapes(&config).into_iter().collect();
        let head_shape = vec![config.vocab_size, config.n_embd];
        let mut tensors: BTreeMap<String, HostTensor> = BTreeMap::new();
        // Sorted, so messages name the same tensor every time.
        let mut names: Vec<&str> = st.names();
        names.sort_unstable();
        for file_name in names {
            let canon = file_name.strip_prefix(HF_PREFIX).unwrap_or(file_name);
            if is_hf_buffer(canon) {
                continue;
            }
            let want = if canon == "lm_head.weight" {
                &head_shape
            } else {
                expected.get(canon).ok_or_else(|| ModelError::Config {
                    path: weights_name.into(),
                    msg: format!(
                        "unexpected tensor '{file_name}' (not a parameter of a GPT-2 with n_layer {})",
                        config.n_layer
                    ),
                })?
            };
            let view = st.tensor(file_name).map_err(|e| st_error(weights_name, e))?;
            if view.shape() != want.as_slice() {
                return Err(ModelError::Shape {
                    path: weights_name.into(),
                    name: file_name.into(),
                    found: view.shape().to_vec(),
                    expected: want.clone(),
                });
            }
            let data = view_to_f32(&view, weights_name, file_name)?;
            if tensors.insert(canon.to_string(), HostTensor { shape: want.clone(), data }).is_some() {
                return Err(ModelError::Config {
                    path: weights_name.into(),
                    msg: format!("tensor '{canon}' appears twice (with and without the '{HF_PREFIX}' prefix)"),
                });
            }
        }
        for (name, _) in param_shapes(&config) {
            if !tensors.contains_key(&name) {
                return Err(ModelError::Missing { path: weights_name.into(), name: format!("{HF_PREFIX}{name}") });
            }
        }
        // An untied head equal to wte bit for bit is the tied head written out: drop it.
        if let (Some(head), Some(wte)) = (tensors.get("lm_head.weight"), tensors.get("wte.weight")) {
            if head.data.iter().zip(&wte.data).all(|(a, b)| a.to_bits() == b.to_bits()) {
                tensors.remove("lm_head.weight");
            }
        } else if !tensors.contains_key("lm_head.weight")
            && config.raw.get("tie_word_embeddings").and_then(|v| v.as_bool()) == Some(false)
        {
            return Err(ModelError::Missing { path: weights_name.into(), name: "lm_head.weight".into() });
        }
        Ok(Gpt2Weights { config, tensors })
    }

    /// Writes config.json + model.safetensors (f32, HF names with the `transformer.` prefix, tied head
    /// omitted), each file written to a temp name and renamed, so no half-written file is left.
    pub fn save_dir(&self, dir: &Path) -> Result<(), ModelError> {
        let bytes = self.to_safetensors()?;
        let config = self.config_json()?;
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        write_atomic(&dir.join("model.safetensors"), &bytes)?;
        write_atomic(&dir.join("config.json"), config.as_bytes())
    }

    /// model.safetensors bytes: f32, HF names (`transformer.` prefix, `lm_head.weight` only when untied).
    pub fn to_safetensors(&self) -> Result<Vec<u8>, ModelError> {
        let named: Vec<(String, &HostTensor)> = self
            .tensors
            .iter()
            .map(|(k, t)| (if k == "lm_head.weight" { k.clone() } else { format!("{HF_PREFIX}{k}") }, t))
            .collect();
        serialize_f32(named, "model.safetensors")
    }

    /// config.json for [`Gpt2Weights::save_dir`]: the loaded config, marked f32 and tied iff no
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
        serde_json::to_string_pretty(&raw)
            .map_err(|e| ModelError::Json { path: "config.json".into(), msg: e.to_string() })
    }
}

/// HF's non-parameter attention buffers (`h.{i}.attn.bias`, `h.{i}.attn.masked_bias`).
fn is_hf_buffer(canon: &str) -> bool {
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

    #[test]
    fn param_count_is_the_sum_of_the_shapes_and_never_overflows() {
        for cfg in [Gpt2Config::new(2, 3, 48, 97, 64), Gpt2Config::new(5, 4, 20, 11, 7)] {
            let sum: usize = param_shapes(&cfg).iter().map(|(_, s)| s.iter().product::<usize>()).sum();
            assert_eq!(param_count(&cfg), Some(sum));
        }
        let mut huge = Gpt2Config::new(1, 1, 4, 5, 3);
        huge.n_layer = 4_000_000_000;
        huge.n_embd = 4_000_000_000;
        assert_eq!(param_count(&huge), None);
        // a config of billions of layers against a small file: the first missing tensor is named
        let small = Gpt2Weights::random(&Gpt2Config::new(1, 1, 4, 5, 3), 0).to_safetensors().unwrap();
        let config = r#"{"n_layer": 4000000000, "n_head": 1, "n_embd": 4, "vocab_size": 5, "n_positions": 3}"#;
        let e = Gpt2Weights::from_bytes(config, "config.json", &small, "model.safetensors").unwrap_err();
        assert_eq!(e.to_string(), "model.safetensors: missing tensor 'transformer.h.1.ln_1.weight'");
    }
}
