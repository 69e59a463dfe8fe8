//! LoRA adapters: config, PEFT-style target matching and init, and PEFT's on-disk format
//! (adapter_config.json + adapter_model.safetensors, tensors
//! `base_model.model.transformer.h.{i}.{module}.lora_A.weight` (GPT-2) or
//! `base_model.model.model.layers.{i}.{module}.lora_A.weight` (the Llama family), [r, in], and
//! `lora_B.weight` [out, r]). The forward adds `scale * (x · Aᵀ) · Bᵀ` to the base layer's output,
//! scale = alpha / r.

use std::collections::BTreeMap;
use std::path::Path;

use super::weights::{
    io_error, parse_safetensors, read_bytes, read_text, serialize_f32, st_error, view_to_f32, write_atomic,
};
use super::{Family, HostTensor, Linear, ModelConfig, ModelError, Weights};

#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f32,
    /// PEFT target names (`c_attn`, `attn.c_proj`, `q_proj`, `mlp.down_proj`, ...), sorted.
    pub targets: Vec<String>,
    pub dropout: f32,
    /// The family whose module names the targets are.
    pub family: Family,
}

impl LoraConfig {
    pub fn scale(&self) -> f32 {
        self.alpha / self.r as f32
    }
}

/// One adapted linear layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraModule {
    pub layer: usize,
    pub linear: Linear,
    /// [r, in]
    pub a: HostTensor,
    /// [out, r]
    pub b: HostTensor,
}

impl LoraModule {
    /// Canonical module name, e.g. `h.0.attn.c_attn` or `layers.0.self_attn.q_proj`.
    pub fn name(&self) -> String {
        let block = if self.linear.conv1d() { "h" } else { "layers" };
        format!("{block}.{}.{}", self.layer, self.linear.hf_name())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LoraAdapter {
    pub config: LoraConfig,
    /// Sorted by (layer, linear).
    pub modules: Vec<LoraModule>,
}

impl LoraAdapter {
    pub fn scale(&self) -> f32 {
        self.config.scale()
    }

    pub fn get(&self, layer: usize, linear: Linear) -> Option<&LoraModule> {
        self.modules.iter().find(|m| m.layer == layer && m.linear == linear)
    }
}

// ---------------------------------------------------------------------------------------
// Config validation, PEFT-style target matching, init, and PEFT's on-disk format.

/// PEFT's shorthand for every linear layer of the model but the output head.
pub const ALL_LINEAR: &str = "all-linear";

/// Target names that match a family's linear layers under PEFT's rule, whatever the layer: each
/// module's path in a block (`attn.c_attn`, `self_attn.q_proj`) and its last part (`c_attn`,
/// `q_proj`); plus [`ALL_LINEAR`].
pub fn valid_targets(family: Family) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = Vec::new();
    for lin in Linear::of(family) {
        let full = lin.hf_name();
        let leaf = full.rsplit('.').next().unwrap_or(full);
        for name in [leaf, full] {
            if !v.contains(&name) {
                v.push(name);
            }
        }
    }
    v.push(ALL_LINEAR);
    v
}

/// GPT-2's valid targets (see [`valid_targets`]).
pub const VALID_TARGETS: [&str; 7] = ["c_attn", "c_proj", "c_fc", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"];

/// The PEFT version whose adapter_config.json key set we write (and whose format we read).
pub const PEFT_FORMAT_VERSION: &str = "0.21.2";

/// PEFT's prefix for tensors of a `PeftModelForCausalLM` (then the model's own names).
const PEFT_PREFIX: &str = "base_model.model.";

/// PEFT's rule: a module is targeted if its full name equals the target or ends with "." + target.
fn peft_match(full_name: &str, target: &str) -> bool {
    full_name == target
        || (full_name.len() > target.len() && full_name.ends_with(target) && {
            let cut = full_name.len() - target.len() - 1;
            full_name.as_bytes()[cut] == b'.'
        })
}

impl LoraConfig {
    /// The targets when none are given: every linear layer of a block (GPT-2: `c_attn`, `c_proj`
    /// of the attention and the MLP, `c_fc`; the Llama family: the seven projections).
    pub fn default_targets(family: Family) -> Vec<String> {
        let mut v: Vec<String> = Linear::of(family)
            .iter()
            .map(|l| l.hf_name().rsplit('.').next().unwrap_or_default().to_string())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Validates r > 0, alpha finite > 0, dropout in [0,1), and that every target matches at least one
    /// linear layer of the `family` (PEFT rule on the full module name, e.g.
    /// `transformer.h.{i}.attn.c_attn` or `model.layers.{i}.self_attn.q_proj`: name == target or name
    /// ends with "." + target), whatever the layer; `all-linear` stands for every one. Targets are kept
    /// sorted and deduplicated (PEFT stores a set).
    pub fn new(r: usize, alpha: f32, targets: Vec<String>, dropout: f32, family: Family) -> Result<LoraConfig, ModelError> {
        if r == 0 {
            return Err(ModelError::Lora("LoRA rank r must be at least 1, found 0".into()));
        }
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(ModelError::Lora(format!("LoRA alpha must be a finite number above 0, found {alpha}")));
        }
        if !(0.0..1.0).contains(&dropout) {
            return Err(ModelError::Lora(format!("LoRA dropout must lie in [0, 1), found {dropout}")));
        }
        let valid = valid_targets(family);
        if targets.is_empty() {
            return Err(ModelError::Lora(format!("no LoRA target modules given; valid targets are {}", valid.join(", "))));
        }
        let kind = match family {
            Family::Gpt2 => "GPT-2",
            Family::Llama => "Llama-family",
        };
        let mut out = Vec::new();
        for t in &targets {
            if t == ALL_LINEAR {
                out.extend(LoraConfig::default_targets(family));
                continue;
            }
            let hits = Linear::of(family).iter().any(|lin| peft_match(&format!("x.0.{}", lin.hf_name()), t));
            if !hits || !valid.contains(&t.as_str()) {
                return Err(ModelError::Lora(format!(
                    "LoRA target '{t}' matches no {kind} linear layer; valid targets are {}",
                    valid.join(", ")
                )));
            }
            out.push(t.clone());
        }
        out.sort();
        out.dedup();
        Ok(LoraConfig { r, alpha, targets: out, dropout, family })
    }

    /// Values in an adapter of this config for `model` (A and B of every adapted layer); None
    /// when the count overflows.
    pub fn param_count(&self, model: &ModelConfig) -> Option<usize> {
        let per_layer = Linear::of(self.family).iter().filter(|l| self.matches(**l)).try_fold(0usize, |acc, l| {
            let (fan_in, fan_out) = l.dims(model);
            acc.checked_add(self.r.checked_mul(fan_in.checked_add(fan_out)?)?)
        })?;
        per_layer.checked_mul(model.n_layer)
    }

    /// Whether the adapter covers this linear layer (in every block).
    pub fn matches(&self, linear: Linear) -> bool {
        let full = format!("x.0.{}", linear.hf_name());
        Linear::of(self.family).contains(&linear) && self.targets.iter().any(|t| peft_match(&full, t))
    }
}

/// PEFT's on-disk name of a module's `lora_A` / `lora_B` weight.
fn peft_tensor_name(family: Family, layer: usize, linear: Linear, ab: &str) -> String {
    format!("{PEFT_PREFIX}{}{}.{ab}.weight", family.hf_prefix(), family.block_name(layer, linear.hf_name()))
}

/// Like [`crate::json::f32`], but an integer when the value is one (PEFT writes `lora_alpha: 8`).
fn json_number(x: f32) -> serde_json::Value {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        serde_json::Value::from(x as i64)
    } else {
        crate::json::f32(x)
    }
}

impl LoraAdapter {
    /// PEFT's init: A ~ kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)) from crate::rng::Rng(seed);
    /// B = 0. Modules sorted by (layer, linear); A filled row-major, module by module, from one stream.
    pub fn init(config: LoraConfig, model: &ModelConfig, seed: u64) -> LoraAdapter {
        let mut rng = crate::rng::Rng::new(seed);
        let mut modules = Vec::new();
        for layer in 0..model.n_layer {
            for &linear in Linear::of(model.family) {
                if !config.matches(linear) {
                    continue;
                }
                let (fan_in, fan_out) = linear.dims(model);
                let bound = 1.0 / (fan_in as f32).sqrt();
                let a = (0..config.r * fan_in).map(|_| rng.uniform_in(-bound, bound)).collect();
                modules.push(LoraModule {
                    layer,
                    linear,
                    a: HostTensor { shape: vec![config.r, fan_in], data: a },
                    b: HostTensor::zeros(&[fan_out, config.r]),
                });
            }
        }
        LoraAdapter { config, modules }
    }

    /// PEFT on-disk format in `dir` (created if missing): adapter_config.json and adapter_model.safetensors,
    /// each written to a temp name and renamed.
    pub fn save_peft(&self, dir: &Path, base_model_name_or_path: &str) -> Result<(), ModelError> {
        let (config, bytes) = self.to_peft_bytes(base_model_name_or_path)?;
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        write_atomic(&dir.join("adapter_model.safetensors"), &bytes)?;
        write_atomic(&dir.join("adapter_config.json"), config.as_bytes())
    }

    /// (adapter_config.json text, adapter_model.safetensors bytes), as PEFT 0.21 writes them.
    pub fn to_peft_bytes(&self, base_model_name_or_path: &str) -> Result<(String, Vec<u8>), ModelError> {
        let c = &self.config;
        let mut named = Vec::with_capacity(2 * self.modules.len());
        for m in &self.modules {
            let ok = m.a.shape.len() == 2
                && m.b.shape.len() == 2
                && m.a.shape[0] == c.r
                && m.b.shape[1] == c.r
                && m.a.data.len() == m.a.shape.iter().product::<usize>()
                && m.b.data.len() == m.b.shape.iter().product::<usize>();
            if !ok {
                return Err(ModelError::Lora(format!(
                    "LoRA module {}: A {:?} / B {:?} do not fit rank {}",
                    m.name(),
                    m.a.shape,
                    m.b.shape,
                    c.r
                )));
            }
            named.push((peft_tensor_name(c.family, m.layer, m.linear, "lora_A"), &m.a));
            named.push((peft_tensor_name(c.family, m.layer, m.linear, "lora_B"), &m.b));
        }
        let bytes = serialize_f32(named, "adapter_model.safetensors")?;
        let base = if base_model_name_or_path.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::Value::from(base_model_name_or_path)
        };
        let null = serde_json::Value::Null;
        let empty = || serde_json::Value::Object(serde_json::Map::new());
        // The key set PEFT 0.21 writes (see tests/fixtures/tiny/adapter_init), defaults for what we do not use.
        let json: serde_json::Map<String, serde_json::Value> = [
            ("alora_invocation_tokens", null.clone()),
            ("alpha_pattern", empty()),
            ("arrow_config", null.clone()),
            ("auto_mapping", null.clone()),
            ("base_model_name_or_path", base),
            ("bias", "none".into()),
            ("corda_config", null.clone()),
            ("ensure_weight_tying", false.into()),
            ("eva_config", null.clone()),
            ("exclude_modules", null.clone()),
            ("fan_in_fan_out", c.family.fan_in_fan_out().into()),
            ("inference_mode", true.into()),
            ("init_lora_weights", true.into()),
            ("kasa_config", null.clone()),
            ("layer_replication", null.clone()),
            ("layers_pattern", null.clone()),
            ("layers_to_transform", null.clone()),
            ("loftq_config", empty()),
            ("lora_alpha", json_number(c.alpha)),
            ("lora_bias", false.into()),
            ("lora_dropout", crate::json::f32(c.dropout)),
            ("lora_ga_config", null.clone()),
            ("megatron_config", null.clone()),
            ("megatron_core", "megatron.core".into()),
            ("modules_to_save", null.clone()),
            ("monteclora_config", null.clone()),
            ("peft_type", "LORA".into()),
            ("peft_version", PEFT_FORMAT_VERSION.into()),
            ("qalora_group_size", 16.into()),
            ("r", c.r.into()),
            ("rank_pattern", empty()),
            ("revision", null.clone()),
            ("target_modules", c.targets.clone().into()),
            ("target_parameters", null.clone()),
            ("task_type", "CAUSAL_LM".into()),
            ("trainable_token_indices", null.clone()),
            ("use_bdlora", null.clone()),
            ("use_dora", false.into()),
            ("use_qalora", false.into()),
            ("use_rslora", false.into()),
            ("velora_config", null),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(json))
            .map_err(|e| ModelError::Json { path: "adapter_config.json".into(), msg: e.to_string() })?;
        Ok((text, bytes))
    }

    /// Reads a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) for `model`.
    pub fn load_peft(dir: &Path, model: &ModelConfig) -> Result<LoraAdapter, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::Io {
                path: dir.display().to_string(),
                msg: "not a directory (expected a PEFT adapter folder with adapter_config.json and \
                      adapter_model.safetensors)"
                    .into(),
            });
        }
        let config_path = dir.join("adapter_config.json");
        let weights_path = dir.join("adapter_model.safetensors");
        let config = read_text(&config_path)?;
        if !weights_path.exists() && dir.join("adapter_model.bin").exists() {
            return Err(ModelError::Io {
                path: weights_path.display().to_string(),
                msg: "file not found; found adapter_model.bin: save the adapter with safetensors".into(),
            });
        }
        let bytes = read_bytes(&weights_path)?;
        from_peft(&config, &config_path.display().to_string(), &bytes, &weights_path.display().to_string(), model)
    }

    /// The same from bytes; `name` (e.g. the adapter's folder) prefixes the file names in messages.
    pub fn from_peft_bytes(
        config_json: &str,
        safetensors: &[u8],
        model: &ModelConfig,
        name: &str,
    ) -> Result<LoraAdapter, ModelError> {
        from_peft(
            config_json,
            &format!("{name}/adapter_config.json"),
            safetensors,
            &format!("{name}/adapter_model.safetensors"),
            model,
        )
    }
}

impl LoraAdapter {
    /// Folds the adapter into the base weights, as PEFT's `merge_and_unload` does: for each module,
    /// W += scale · B·A as the weight is stored — GPT-2's Conv1D W [in, out] += scale · (B · A)ᵀ
    /// (fan_in_fan_out), an nn.Linear W [out, in] += scale · B · A — summed in f64 and rounded
    /// once. Biases are unchanged. Every module is checked against `weights` (layer, A [r, in],
    /// B [out, r]) before anything changes, so on error `weights` is untouched.
    pub fn merge_into(&self, weights: &mut Weights) -> Result<(), ModelError> {
        let cfg = &weights.config;
        let r = self.config.r;
        for m in &self.modules {
            let (fin, fout) = m.linear.dims(cfg);
            let name = cfg.block_name(m.layer, &format!("{}.weight", m.linear.hf_name()));
            let ok = m.layer < cfg.n_layer
                && Linear::of(cfg.family).contains(&m.linear)
                && weights.tensors.get(&name).is_some_and(|w| w.shape == m.linear.weight_shape(cfg) && w.data.len() == fin * fout)
                && m.a.shape == [r, fin]
                && m.b.shape == [fout, r]
                && m.a.data.len() == r * fin
                && m.b.data.len() == fout * r;
            if !ok {
                return Err(ModelError::Lora(format!(
                    "cannot merge LoRA module {}: A {:?} / B {:?} do not fit rank {r} of a {} model with n_layer {} and \
                     hidden size {} (A must be [{r}, {fin}], B [{fout}, {r}])",
                    m.name(),
                    m.a.shape,
                    m.b.shape,
                    cfg.model_type,
                    cfg.n_layer,
                    cfg.n_embd
                )));
            }
        }
        let scale = self.scale() as f64;
        for m in &self.modules {
            let cfg = &weights.config;
            let (fin, fout) = m.linear.dims(cfg);
            let conv1d = m.linear.conv1d();
            let name = cfg.block_name(m.layer, &format!("{}.weight", m.linear.hf_name()));
            let Some(w) = weights.tensors.get_mut(&name) else { continue }; // checked above
            let (a, b) = (&m.a.data, &m.b.data);
            for i in 0..fin {
                for o in 0..fout {
                    let dot: f64 = (0..r).map(|k| b[o * r + k] as f64 * a[k * fin + i] as f64).sum();
                    let x = if conv1d { &mut w.data[i * fout + o] } else { &mut w.data[o * fin + i] };
                    *x = (*x as f64 + scale * dot) as f32;
                }
            }
        }
        Ok(())
    }
}

/// Parses adapter_config.json into a [`LoraConfig`], refusing settings webtune does not implement.
fn parse_peft_config(text: &str, path: &str, family: Family) -> Result<LoraConfig, ModelError> {
    let raw: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ModelError::Json { path: path.into(), msg: e.to_string() })?;
    let obj =
        raw.as_object().ok_or_else(|| ModelError::Config { path: path.into(), msg: "not a JSON object".into() })?;
    let bad = |msg: String| ModelError::Config { path: path.into(), msg };
    match obj.get("peft_type").and_then(|v| v.as_str()) {
        Some("LORA") => {}
        Some(other) => return Err(bad(format!("peft_type is '{other}'; webtune reads LoRA adapters (\"LORA\")"))),
        None => return Err(bad("missing field 'peft_type' (must be \"LORA\")".into())),
    }
    let r = match obj.get("r") {
        None => return Err(bad("missing field 'r'".into())),
        Some(v) => v
            .as_u64()
            .filter(|x| *x > 0)
            .ok_or_else(|| bad(format!("field 'r' must be a positive integer, found {v}")))?,
    };
    let alpha = match obj.get("lora_alpha") {
        None => return Err(bad("missing field 'lora_alpha'".into())),
        Some(v) => v.as_f64().ok_or_else(|| bad(format!("field 'lora_alpha' must be a number, found {v}")))? as f32,
    };
    let dropout = match obj.get("lora_dropout") {
        None | Some(serde_json::Value::Null) => 0.0,
        Some(v) => v.as_f64().ok_or_else(|| bad(format!("field 'lora_dropout' must be a number, found {v}")))? as f32,
    };
    let targets = match obj.get("target_modules") {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad(format!("target_modules holds {v}, not a name"))))
            .collect::<Result<Vec<_>, _>>()?,
        Some(serde_json::Value::String(s)) if s == ALL_LINEAR => vec![s.clone()],
        Some(serde_json::Value::String(s)) => {
            return Err(bad(format!(
                "target_modules is the string '{s}', which PEFT treats as a regular expression; webtune needs \
                 a list of module names (valid: {})",
                valid_targets(family).join(", ")
            )))
        }
        Some(v) => return Err(bad(format!("target_modules must be a list of module names, found {v}"))),
        None => return Err(bad("missing field 'target_modules'".into())),
    };
    match obj.get("bias").and_then(|v| v.as_str()) {
        None | Some("none") => {}
        Some(other) => return Err(bad(format!("bias is '{other}'; webtune implements only bias \"none\""))),
    }
    // Settings that change the forward or the tensors: refuse anything but PEFT's default, naming the field.
    for field in [
        "use_dora",
        "use_rslora",
        "lora_bias",
        "use_qalora",
        "use_bdlora",
        "alpha_pattern",
        "rank_pattern",
        "layers_to_transform",
        "layer_replication",
        "modules_to_save",
        "exclude_modules",
        "target_parameters",
        "trainable_token_indices",
        "alora_invocation_tokens",
    ] {
        let v = obj.get(field).unwrap_or(&serde_json::Value::Null);
        let default = match v {
            serde_json::Value::Null | serde_json::Value::Bool(false) => true,
            serde_json::Value::Object(m) => m.is_empty(),
            serde_json::Value::Array(a) => a.is_empty(),
            _ => false,
        };
        if !default {
            return Err(bad(format!("'{field}' is {v}; webtune does not implement it (needs {field} unset/false)")));
        }
    }
    LoraConfig::new(r as usize, alpha, targets, dropout, family).map_err(|e| match e {
        ModelError::Lora(msg) => bad(msg),
        e => e,
    })
}

fn from_peft(
    config_json: &str,
    config_path: &str,
    safetensors: &[u8],
    weights_path: &str,
    model: &ModelConfig,
) -> Result<LoraAdapter, ModelError> {
    let config = parse_peft_config(config_json, config_path, model.family)?;
    let st = parse_safetensors(safetensors, weights_path)?;
    let r = config.r;
    // Every (layer, linear) the config targets, with its A/B file names and shapes.
    let mut wanted: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut order = Vec::new();
    for layer in 0..model.n_layer {
        for &linear in Linear::of(model.family).iter().filter(|l| config.matches(**l)) {
            let (fan_in, fan_out) = linear.dims(model);
            let module = model.block_name(layer, linear.hf_name());
            wanted.insert(format!("{module}.lora_A.weight"), vec![r, fan_in]);
            wanted.insert(format!("{module}.lora_B.weight"), vec![fan_out, r]);
            order.push((layer, linear));
        }
    }
    let mut found: BTreeMap<String, HostTensor> = BTreeMap::new();
    let mut names = st.names();
    names.sort_unstable();
    for file_name in names {
        let rest = file_name.strip_prefix(PEFT_PREFIX).unwrap_or(file_name);
        let canon = rest.strip_prefix(model.hf_prefix()).unwrap_or(rest);
        let Some(want) = wanted.get(canon) else {
            return Err(ModelError::Lora(format!(
                "{weights_path}: unexpected tensor '{file_name}' (the config targets {} of a {}-layer {} model)",
                config.targets.join(", "),
                model.n_layer,
                model.model_type
            )));
        };
        let view = st.tensor(file_name).map_err(|e| st_error(weights_path, e))?;
        if view.shape() != want.as_slice() {
            return Err(ModelError::Shape {
                path: weights_path.into(),
                name: file_name.into(),
                found: view.shape().to_vec(),
                expected: want.clone(),
            });
        }
        let data = view_to_f32(&view, weights_path, file_name)?;
        if found.insert(canon.to_string(), HostTensor { shape: want.clone(), data }).is_some() {
            return Err(ModelError::Lora(format!("{weights_path}: tensor '{canon}' appears twice")));
        }
    }
    let mut modules = Vec::with_capacity(order.len());
    for (layer, linear) in order {
        let mut take = |ab: &str| {
            found.remove(&format!("{}.{ab}.weight", model.block_name(layer, linear.hf_name()))).ok_or_else(|| ModelError::Missing {
                path: weights_path.into(),
                name: peft_tensor_name(model.family, layer, linear, ab),
            })
        };
        let a = take("lora_A")?;
        let b = take("lora_B")?;
        modules.push(LoraModule { layer, linear, a, b });
    }
    Ok(LoraAdapter { config, modules })
}
