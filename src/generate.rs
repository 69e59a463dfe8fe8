//! KV-cached generation for one sequence, and sampling from a logits row.
//!
//! [`Generator::new`] makes, once per (model, max_len), a K and a V cache [max_len, Hkv·D] per
//! layer and the program of one decoding step (N = 1 row), which the model's family builds with
//! its own block sequence (`decode_program` in gpt2.rs / llama.rs: the block for one row, with
//! the attention of q against cache rows 0..=pos after storing the row's k, v at pos) ->
//! final norm -> logits [V] = h · headᵀ. The token and its position travel in two small u32
//! storage buffers written before each step, so nothing is created per token except the
//! staging buffer that reads the logits back.
//!
//! [`Generator::generate`] prefills the prompt with the batched forward (B = 1, T = prompt
//! length; the prompt's K/V rows are copied out of its activations into the caches),
//! samples the first new token from the prompt's last logits row, then runs one decoding
//! step per further token. Sampling is on the CPU ([`sample`]), from one seeded
//! [`Rng`](crate::rng::Rng) per call, so a seed fixes the output on a given device.

use crate::data::Tokenizer;
use crate::flags::Style;
use crate::gpu::{Gpu, GpuError, Program, Tensor};
use crate::kernels::attention::{Attention, AttentionDecode};
use crate::model::head::head_logits;
use crate::model::{ModelConfig, ModelGpu};
use crate::rng::Rng;

/// How new tokens are chosen.
#[derive(Clone, Debug)]
pub struct SampleConfig {
    pub max_new_tokens: usize,
    /// 0 (or below) = greedy.
    pub temperature: f32,
    /// Keep only the k most likely tokens; 0 = off.
    pub top_k: usize,
    /// Nucleus: keep the smallest set of most likely tokens whose mass reaches top_p; 1 = off.
    pub top_p: f32,
    pub seed: u64,
    /// Stop after the model's `eos_token_id` (which is returned as the last token).
    pub stop_at_eos: bool,
}

impl Default for SampleConfig {
    fn default() -> SampleConfig {
        SampleConfig {
            max_new_tokens: 64,
            temperature: 0.8,
            top_k: 50,
            top_p: 0.95,
            seed: 0,
            stop_at_eos: true,
        }
    }
}

impl SampleConfig {
    /// Checks the options (`webtune generate` and the browser's generate both call this),
    /// naming them the caller's way.
    pub fn validate(&self, style: Style) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!(
                "{} {} is invalid: it must be >= 0 (0 = greedy)",
                style.name("temperature"),
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("{} {} is invalid: it must be in (0, 1] (1 = off)", style.name("top-p"), self.top_p));
        }
        if self.max_new_tokens == 0 {
            return Err(format!("{} must be at least 1", style.name("max-new-tokens")));
        }
        Ok(())
    }
}

/// A prompt ready for [`Generator`]: its token ids and the cache length it needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Prompt {
    pub ids: Vec<u32>,
    /// Prompt + new tokens, at most the model's n_positions: the [`Generator`]'s `max_len`.
    pub max_len: usize,
    /// Set when n_positions cut the new tokens below what was asked: a note for the user.
    pub cut: Option<String>,
}

impl Prompt {
    /// Encodes `text` for generation with at most `max_new_tokens` new tokens (after the
    /// tokenizer's prefix, e.g. Llama's BOS): an empty prompt without one starts from the model's
    /// `bos_token_id` (GPT-2's unconditional start); a prompt that leaves
    /// no room for one new token within `n_positions` is refused.
    pub fn new(tok: &Tokenizer, text: &str, cfg: &ModelConfig, max_new_tokens: usize) -> Result<Prompt, String> {
        // as `tokenizer(text)` in transformers: the tokenizer's prefix (Llama's BOS), then the text
        let body = tok.try_encode(text).map_err(|e| format!("the prompt: {e}"))?;
        if body.is_empty() && !text.is_empty() {
            return Err(format!(
                "the prompt is {} bytes of text but the tokenizer encodes it to no tokens (does its vocabulary cover this text?)",
                text.len()
            ));
        }
        let mut ids = tok.special_tokens().prefix.clone();
        ids.extend(body);
        Prompt::from_ids(ids, cfg, max_new_tokens)
    }

    /// A conversation (`[{"role", "content"}, ...]`) rendered by the tokenizer's chat template
    /// with `add_generation_prompt`, encoded without special tokens added (the template writes
    /// them), as `apply_chat_template(messages, add_generation_prompt=True, tokenize=True)`.
    pub fn chat(tok: &Tokenizer, messages: &[serde_json::Value], cfg: &ModelConfig, max_new_tokens: usize) -> Result<Prompt, String> {
        let t = tok.chat_template().ok_or(
            "--chat needs a chat template: the tokenizer has none (tokenizer_config.json's chat_template or \
             chat_template.jinja); give one with --chat-template FILE",
        )?;
        let text = t.render(messages, true).map_err(|e| e.to_string())?;
        let ids = tok.try_encode(&text).map_err(|e| format!("the chat prompt: {e}"))?;
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(format!("the chat prompt has token {bad}, not below the model's vocab_size {}", cfg.vocab_size));
        }
        Prompt::from_ids(ids, cfg, max_new_tokens)
    }

    fn from_ids(mut ids: Vec<u32>, cfg: &ModelConfig, max_new_tokens: usize) -> Result<Prompt, String> {
        if ids.is_empty() {
            ids.push(cfg.bos_token_id);
        }
        let n = cfg.n_positions;
        if ids.len() >= n {
            return Err(format!(
                "the prompt is {} tokens but the model's n_positions is {n}: at most {} prompt tokens leave room for a new one",
                ids.len(),
                n - 1
            ));
        }
        let max_len = ids.len().saturating_add(max_new_tokens).min(n);
        let cut = (max_len - ids.len() < max_new_tokens).then(|| {
            format!(
                "the prompt is {} tokens and the model's n_positions is {n}: at most {} new tokens per sample",
                ids.len(),
                max_len - ids.len()
            )
        });
        Ok(Prompt { ids, max_len, cut })
    }
}

/// The new tokens of a sample as text: the end-of-text token that stopped it (when `stop_at_eos`)
/// is dropped. Returns (text, the ids kept, whether the sample ended at end of text).
pub fn sample_text(tok: &Tokenizer, new: Vec<u32>, cfg: &ModelConfig, stop_at_eos: bool) -> (String, Vec<u32>, bool) {
    sample_text_until(tok, new, cfg, stop_at_eos, &[])
}

/// [`sample_text`] where `stops` (a chat template's end-of-turn token) end a sample too.
pub fn sample_text_until(tok: &Tokenizer, mut new: Vec<u32>, cfg: &ModelConfig, stop_at_eos: bool, stops: &[u32]) -> (String, Vec<u32>, bool) {
    let eos = stop_at_eos && new.last().is_some_and(|t| cfg.eos_token_ids.contains(t) || stops.contains(t));
    if eos {
        new.pop();
    }
    (tok.decode(&new), new, eos)
}

fn invalid(msg: String) -> GpuError {
    GpuError::Invalid(msg)
}

/// KV-cached decoding for one sequence: caches and the per-token program made once per
/// (model, max_len). The model's family builds its own decoding step (`ModelGpu::decode_program`,
/// the block sequence for one row) and stores a prompt's keys and values (`ModelGpu::store_prompt`).
pub struct Generator {
    max_len: usize,
    /// The model's head buffer: identifies the model the step program binds.
    model_id: wgpu::Buffer,
    dims: AttentionDecode,
    /// Per layer: (K, V) caches [max_len, Hkv·D].
    caches: Vec<(Tensor, Tensor)>,
    /// u32 [1]: the token a step feeds.
    token: Tensor,
    /// u32 [1]: the position of that token (0 while prefilling: the first row of the prompt).
    pos: Tensor,
    /// [V]: logits of the last position run.
    logits: Tensor,
    step: Program,
    /// The decoding step's own buffers, kept with the program that binds them.
    _bufs: Vec<Tensor>,
    /// Ids that end a sample like the model's eos ids (a chat template's end-of-turn token).
    stops: Vec<u32>,
}

impl Generator {
    /// max_len <= n_positions (error otherwise, naming both).
    pub fn new(gpu: &Gpu, model: &ModelGpu, max_len: usize) -> Result<Generator, GpuError> {
        let cfg = model.config();
        if max_len == 0 || max_len > cfg.n_positions {
            return Err(invalid(format!(
                "generation max_len {max_len} must be between 1 and the model's n_positions {}",
                cfg.n_positions
            )));
        }
        Attention::check_heads(cfg.n_head, cfg.n_kv_head, cfg.head_dim)
            .map_err(|e| invalid(format!("generation: {e}")))?;
        let scale = Attention::gqa(1, 1, cfg.n_head, cfg.n_kv_head, cfg.head_dim).scale;
        let dims = AttentionDecode { nh: cfg.n_head, nkv: cfg.n_kv_head, hd: cfg.head_dim, max_len, scale };
        let mut caches = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            caches.push((
                gpu.zeros(&format!("layer {l} k_cache"), &[max_len, dims.kv_width()])?,
                gpu.zeros(&format!("layer {l} v_cache"), &[max_len, dims.kv_width()])?,
            ));
        }
        let token = gpu.zeros("decode token", &[1])?;
        let pos = gpu.zeros("decode pos", &[1])?;
        let logits = gpu.zeros("decode logits", &[cfg.vocab_size])?;
        let (step, bufs) = model.decode_program(gpu, &dims, &caches, &token, &pos, &logits)?;
        Ok(Generator {
            max_len,
            model_id: model.head().parts[0].value.buffer.clone(),
            dims,
            caches,
            token,
            pos,
            logits,
            step,
            _bufs: bufs,
            stops: Vec::new(),
        })
    }

    /// Also stops (when `stop_at_eos`) at these ids, e.g. a chat template's end-of-turn token.
    pub fn stop_also_at(&mut self, ids: &[u32]) {
        self.stops = ids.to_vec();
    }

    /// The most tokens (prompt and new ones together) one sequence may hold.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Logits [V] of the last position run by [`generate`](Self::generate): the
    /// distribution the last returned token was drawn from.
    pub fn logits(&self) -> &Tensor {
        &self.logits
    }

    /// Prompt ids (non-empty; prompt.len() + max_new_tokens is clipped to max_len) -> new token
    /// ids (without the prompt), stopping at an end-of-text id if asked (it is the last one returned).
    /// Async (readback of each step's logits), no blocking: works on wasm too.
    pub async fn generate(
        &mut self,
        gpu: &Gpu,
        model: &ModelGpu,
        prompt: &[u32],
        cfg: &SampleConfig,
    ) -> Result<Vec<u32>, GpuError> {
        let mc = model.config();
        if model.head().parts[0].value.buffer != self.model_id {
            return Err(invalid("generate: the model is not the one this Generator was made for".into()));
        }
        if prompt.is_empty() {
            return Err(invalid("generate: the prompt is empty (give at least one token)".into()));
        }
        if prompt.len() > self.max_len {
            return Err(invalid(format!(
                "generate: the prompt has {} tokens but this Generator holds at most max_len {}",
                prompt.len(),
                self.max_len
            )));
        }
        if let Some((i, &t)) = prompt.iter().enumerate().find(|(_, &t)| t as usize >= mc.vocab_size) {
            return Err(invalid(format!(
                "generate: prompt token {i} has id {t}, not below the model's vocab_size {}",
                mc.vocab_size
            )));
        }
        let new_tokens = cfg.max_new_tokens.min(self.max_len - prompt.len());
        let mut out = Vec::with_capacity(new_tokens);
        if new_tokens == 0 {
            return Ok(out);
        }
        let mut rng = Rng::new(cfg.seed);

        // Prefill: the batched forward over the prompt; its k, v rows go to cache rows 0..len.
        let len = prompt.len();
        let (c, v) = (mc.n_embd, mc.vocab_size);
        let mut logits = {
            let a = model.activations(gpu, 1, len, false, 0)?;
            gpu.write_u32(&a.io().tokens, prompt);
            gpu.write_u32(&self.pos, &[0]);
            let mut prog = Program::new();
            model.forward(gpu, &mut prog, &a, false);
            model.store_prompt(gpu, &mut prog, &a, &self.dims, &self.caches, &self.pos, len);
            head_logits(gpu, &mut prog, &a.io().lnf, len - 1, model.head(), &self.logits, 1, v, c);
            prog.run(gpu);
            gpu.read(&self.logits).await?
        };

        // Decode: sample, then feed the new token at the next position.
        for i in 0..new_tokens {
            if logits.iter().all(|x| x.is_nan()) {
                // finite weights (checked at load) whose arithmetic still overflows f32: no text
                // is made up from such logits
                return Err(invalid(format!(
                    "generate: every logit of new token {} is NaN: the model's arithmetic overflows f32 (its weights are \
                     finite but too large)",
                    i + 1
                )));
            }
            let tok = sample(&logits, cfg, &mut rng);
            out.push(tok);
            if (cfg.stop_at_eos && (mc.eos_token_ids.contains(&tok) || self.stops.contains(&tok))) || i + 1 == new_tokens {
                break;
            }
            gpu.write_u32(&self.token, &[tok]);
            gpu.write_u32(&self.pos, &[(len + i) as u32]);
            self.step.run(gpu);
            logits = gpu.read(&self.logits).await?;
        }
        Ok(out)
    }
}

/// Sampling from one logits row on the CPU: greedy when temperature == 0, else softmax(logits/temperature)
/// restricted to top_k then top_p (nucleus, keep the smallest prefix with mass >= top_p), drawn with `rng`.
/// Pure function, unit-tested.
///
/// Ties rank by lower token id (so greedy and top_k = 1 agree); NaN logits are never chosen
/// unless every logit is NaN (then 0). An empty row gives 0. One draw from `rng` per call
/// when sampling, none when greedy.
pub fn sample(logits: &[f32], cfg: &SampleConfig, rng: &mut Rng) -> u32 {
    let key = |x: f32| if x.is_nan() { f32::NEG_INFINITY } else { x };
    let better = |a: usize, b: usize| key(logits[b]).total_cmp(&key(logits[a])).then(a.cmp(&b));
    let argmax = || (0..logits.len()).min_by(|&a, &b| better(a, b)).unwrap_or(0) as u32;
    if cfg.temperature.is_nan() || cfg.temperature <= 0.0 || logits.is_empty() {
        return argmax();
    }
    // Candidates in rank order, cut to top_k.
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    let k = if cfg.top_k == 0 {
        idx.len()
    } else {
        cfg.top_k.min(idx.len())
    };
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, |&a, &b| better(a, b));
        idx.truncate(k);
    }
    idx.sort_unstable_by(|&a, &b| better(a, b));
    let max = key(logits[idx[0]]);
    if max == f32::NEG_INFINITY || max.is_nan() {
        return argmax();
    }
    // Softmax of logits / temperature over the candidates (f64, unnormalised).
    let t = cfg.temperature as f64;
    let mut w: Vec<f64> = idx
        .iter()
        .map(|&i| ((key(logits[i]) as f64 - max as f64) / t).exp())
        .collect();
    let total: f64 = w.iter().sum();
    // Nucleus: the smallest prefix whose mass reaches top_p (at least one token).
    if cfg.top_p < 1.0 {
        let target = cfg.top_p.max(0.0) as f64 * total;
        let mut acc = 0.0;
        let mut keep = w.len();
        for (j, &wj) in w.iter().enumerate() {
            acc += wj;
            if acc >= target {
                keep = j + 1;
                break;
            }
        }
        w.truncate(keep);
    }
    let mass: f64 = w.iter().sum();
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * mass;
    let mut acc = 0.0;
    for (j, &wj) in w.iter().enumerate() {
        acc += wj;
        if u < acc {
            return idx[j] as u32;
        }
    }
    idx[0] as u32
}
