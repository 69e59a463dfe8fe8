//! Host-side weights under canonical names (HF names without the `transformer.`
//! prefix): `wte.weight`, `wpe.weight`, `h.{i}.ln_1.weight`, `h.{i}.attn.c_attn.weight`
//! ([in, out], Conv1D layout), ..., `ln_f.bias`, and `lm_head.weight` only when untied.

use std::collections::BTreeMap;

use super::{Gpt2Config, Linear};

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
        let p = |s: &str| format!("h.{i}.{s}");
        v.push((p("ln_1.weight"), vec![c]));
        v.push((p("ln_1.bias"), vec![c]));
        for lin in Linear::ALL {
            let (fi, fo) = lin.dims(c);
            v.push((p(&format!("{}.weight", lin.hf_name())), vec![fi, fo]));
            v.push((p(&format!("{}.bias", lin.hf_name())), vec![fo]));
            if lin == Linear::AttnProj {
                v.push((p("ln_2.weight"), vec![c]));
                v.push((p("ln_2.bias"), vec![c]));
            }
        }
    }
    v.push(("ln_f.weight".to_string(), vec![c]));
    v.push(("ln_f.bias".to_string(), vec![c]));
    v
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
