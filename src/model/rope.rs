//! Rotary position embeddings on the host: the frequencies a Hugging Face config asks for
//! (the `rope_theta`/`rope_scaling` keys of hub checkpoints, or transformers 5's
//! `rope_parameters`), and the cos/sin table the rope kernel (src/kernels/rope.rs) reads.
//!
//! The numbers follow transformers' f32 arithmetic: inv_freq is computed with f32 operations in
//! transformers' order (`1 / theta ** (arange(0, hd, 2) / hd)`, then the llama3 adjustment),
//! each angle is the f32 product position · inv_freq, and only cos/sin are taken in f64 (then
//! rounded), which is at least as accurate as torch's f32 cos/sin and never depends on a GPU's
//! sin/cos. One difference remains: the power here is correctly rounded, while torch's
//! vectorised f32 pow (SLEEF, 1 ulp) may land one ulp away on some entries, so inv_freq agrees
//! to 1 ulp (a few ulps after llama3's interpolation), not always bit for bit — torch itself
//! gives different bits for a tensor of one element than for one of 32.
//!
//! Supported `rope_type`s: "default" (or none) and "llama3" (Llama 3.1/3.2). Any other type,
//! per-layer RoPE parameters, and a `partial_rotary_factor` other than 1 are refused with an
//! error naming them.

use serde_json::{Map, Value};

use super::ModelError;

/// transformers' `default_theta`, used when a config names no `rope_theta`.
pub const DEFAULT_THETA: f64 = 10_000.0;

/// How the base frequencies are rescaled.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// rope_type "default", or no scaling at all.
    None,
    /// rope_type "llama3": long wavelengths divided by `factor`, short ones kept, the band
    /// between interpolated (transformers' `_compute_llama3_parameters`).
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: f64 },
}

/// The rotary embedding of one model: per-head width, base and scaling.
#[derive(Clone, Debug, PartialEq)]
pub struct Rope {
    /// Values per head (even); `head_dim` of the config, else hidden_size / num_attention_heads.
    pub head_dim: usize,
    pub theta: f64,
    pub scaling: RopeScaling,
}

impl Rope {
    /// Reads the RoPE settings of a parsed config.json; `path` names the file in errors.
    pub fn from_config(config: &Value, path: &str) -> Result<Rope, ModelError> {
        let err = |msg: String| ModelError::Config { path: path.into(), msg };
        let obj = config.as_object().ok_or_else(|| err("not a JSON object".into()))?;
        let head_dim = head_dim(obj, &err)?;

        // transformers: `rope_parameters = rope_scaling or rope_parameters` (an empty or null
        // rope_scaling falls through), then the top-level keys fill what the dict lacks.
        let mut params = (Map::new(), "rope_scaling");
        for name in ["rope_scaling", "rope_parameters"] {
            match obj.get(name) {
                None | Some(Value::Null) => {}
                Some(Value::Object(m)) if m.is_empty() => {}
                Some(Value::Object(m)) => {
                    params = (m.clone(), name);
                    break;
                }
                Some(v) => return Err(err(format!("field '{name}' must be an object or null, found {v}"))),
            }
        }
        let (params, field) = params;
        if let Some((k, _)) = params.iter().find(|(_, v)| v.is_object()) {
            return Err(err(format!(
                "'{field}' holds RoPE parameters per layer type ('{k}'); webtune supports one set for all layers"
            )));
        }
        let num = |map: &Map<String, Value>, key: &str, what: &str| -> Result<Option<f64>, ModelError> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite() && *x > 0.0)
                    .map(Some)
                    .ok_or_else(|| err(format!("field '{what}' must be a positive number, found {v}"))),
            }
        };
        let theta = match num(&params, "rope_theta", &format!("{field}.rope_theta"))? {
            Some(t) => t,
            None => num(obj, "rope_theta", "rope_theta")?.unwrap_or(DEFAULT_THETA),
        };
        let partial = match num(&params, "partial_rotary_factor", &format!("{field}.partial_rotary_factor"))? {
            Some(f) => Some(f),
            None => num(obj, "partial_rotary_factor", "partial_rotary_factor")?,
        };
        if let Some(f) = partial.filter(|f| *f != 1.0) {
            return Err(err(format!(
                "partial_rotary_factor {f} is not supported (webtune rotates every value of a head)"
            )));
        }
        let rope_type = match params.get("rope_type").or_else(|| params.get("type")) {
            None | Some(Value::Null) => "default",
            Some(Value::String(s)) => s.as_str(),
            Some(v) => return Err(err(format!("field '{field}.rope_type' must be a string, found {v}"))),
        };
        let scaling = match rope_type {
            "default" => RopeScaling::None,
            "llama3" => {
                let need = |key: &str| -> Result<f64, ModelError> {
                    num(&params, key, &format!("{field}.{key}"))?
                        .ok_or_else(|| err(format!("rope_type 'llama3' needs '{field}.{key}'")))
                };
                let (factor, low_freq_factor, high_freq_factor) =
                    (need("factor")?, need("low_freq_factor")?, need("high_freq_factor")?);
                if high_freq_factor <= low_freq_factor {
                    return Err(err(format!(
                        "'{field}': high_freq_factor {high_freq_factor} must be greater than low_freq_factor {low_freq_factor}"
                    )));
                }
                // transformers: a top-level original_max_position_embeddings wins, then the
                // dict's, then max_position_embeddings.
                let original = match num(obj, "original_max_position_embeddings", "original_max_position_embeddings")? {
                    Some(v) => Some(v),
                    None => num(
                        &params,
                        "original_max_position_embeddings",
                        &format!("{field}.original_max_position_embeddings"),
                    )?,
                };
                let original = match original {
                    Some(v) => v,
                    None => num(obj, "max_position_embeddings", "max_position_embeddings")?.ok_or_else(|| {
                        err(format!("rope_type 'llama3' needs '{field}.original_max_position_embeddings'"))
                    })?,
                };
                RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings: original }
            }
            other => {
                return Err(err(format!(
                    "'{field}': rope_type '{other}' is not supported (webtune implements 'default' and 'llama3')"
                )))
            }
        };
        Ok(Rope { head_dim, theta, scaling })
    }

    /// The inverse frequencies [head_dim / 2] of the pairs (k, k + head_dim/2), as transformers
    /// computes them (f32 operations in its order).
    pub fn inv_freq(&self) -> Vec<f32> {
        let dim = self.head_dim as f32;
        let base = self.theta as f32;
        let default: Vec<f32> = (0..self.head_dim / 2)
            .map(|k| {
                let e = (2 * k) as f32 / dim;
                1.0 / ((base as f64).powf(e as f64) as f32)
            })
            .collect();
        match self.scaling {
            RopeScaling::None => default,
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings: old } => {
                // f64 scalars as transformers has them in Python, f32 where it has tensors.
                let low_wavelen = (old / low_freq_factor) as f32;
                let high_wavelen = (old / high_freq_factor) as f32;
                let (factor, low) = (factor as f32, low_freq_factor as f32);
                let band = (high_freq_factor - low_freq_factor) as f32;
                let two_pi = (2.0 * std::f64::consts::PI) as f32;
                default
                    .into_iter()
                    .map(|inv| {
                        // `2π / inv` on a tensor is reciprocal(inv) · 2π in torch
                        let wavelen = (1.0 / inv) * two_pi;
                        let scaled = if wavelen > low_wavelen { inv / factor } else { inv };
                        if wavelen < high_wavelen || wavelen > low_wavelen {
                            return scaled;
                        }
                        let smooth = ((1.0 / wavelen) * old as f32 - low) / band;
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    })
                    .collect()
            }
        }
    }

    /// The factor transformers multiplies cos and sin by (`attention_scaling`): 1 for
    /// "default" and "llama3".
    pub fn attention_factor(&self) -> f32 {
        1.0
    }

    /// The table the rope kernel reads for this model: [`cos_sin_table`] of
    /// [`inv_freq`](Self::inv_freq) and [`attention_factor`](Self::attention_factor).
    pub fn table(&self, positions: usize) -> Result<Vec<f32>, ModelError> {
        cos_sin_table(&self.inv_freq(), self.attention_factor(), positions)
    }
}

/// The table the rope kernel reads, [positions, hd] with hd = 2 · inv_freq.len(): row p holds
/// cos(p · inv_freq[k]) in column k and sin(p · inv_freq[k]) in column hd/2 + k, times
/// `attention_factor`. The angle is the f32 product, as transformers forms it; cos and sin are
/// taken in f64 and rounded. Size it to the longest sequence a program runs (training T, or
/// generation's max length), not to max_position_embeddings.
pub fn cos_sin_table(inv_freq: &[f32], attention_factor: f32, positions: usize) -> Result<Vec<f32>, ModelError> {
    let (half, hd) = (inv_freq.len(), 2 * inv_freq.len());
    if positions.checked_mul(hd).is_none_or(|n| n > u32::MAX as usize) {
        return Err(ModelError::Config {
            path: "RoPE table".into(),
            msg: format!("{positions} positions of head_dim {hd} exceed the 2^32 entries a GPU table can index"),
        });
    }
    let mut t = vec![0.0f32; positions * hd];
    for (p, row) in t.chunks_exact_mut(hd.max(1)).enumerate() {
        let (cos, sin) = row.split_at_mut(half);
        for (k, &f) in inv_freq.iter().enumerate() {
            let angle = (p as f32 * f) as f64;
            cos[k] = angle.cos() as f32 * attention_factor;
            sin[k] = angle.sin() as f32 * attention_factor;
        }
    }
    Ok(t)
}

/// `head_dim` when the config has one (transformers: `getattr(config, "head_dim", None) or
/// hidden_size // num_attention_heads`), else hidden_size / num_attention_heads; even.
fn head_dim(obj: &Map<String, Value>, err: &dyn Fn(String) -> ModelError) -> Result<usize, ModelError> {
    let uint = |name: &str| -> Result<Option<usize>, ModelError> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|x| *x > 0 && *x <= u32::MAX as u64)
                .map(|x| Some(x as usize))
                .ok_or_else(|| err(format!("field '{name}' must be a positive integer, found {v}"))),
        }
    };
    let hd = match uint("head_dim")? {
        Some(hd) => hd,
        None => {
            let missing = |name: &str| err(format!("missing field '{name}'"));
            let hidden = uint("hidden_size")?.ok_or_else(|| missing("hidden_size"))?;
            let heads = uint("num_attention_heads")?.ok_or_else(|| missing("num_attention_heads"))?;
            if hidden % heads != 0 {
                return Err(err(format!(
                    "hidden_size {hidden} is not a multiple of num_attention_heads {heads} (and there is no head_dim)"
                )));
            }
            hidden / heads
        }
    };
    if hd % 2 != 0 {
        return Err(err(format!("head_dim {hd} must be even for rotary embeddings")));
    }
    Ok(hd)
}
