//! Evaluation: the mean cross-entropy of a model over every eval window, forward only.
//!
//! Each batch runs [embedding -> L blocks -> LN -> chunked LM head + cross-entropy] with
//! no gradient scratch; the result is [`eval_loss`](crate::data::batch::eval_loss) of the
//! per-batch means, i.e. Σ losses / Σ counted positions over all windows.

use crate::data::batch::eval_loss;
use crate::data::Batch;
use crate::gpu::{Gpu, GpuError, MemoryClass, Program, Tensor};
use crate::model::{Acts, ModelGpu};

/// Bytes allowed for the chunked head's logits scratch (as training's default).
pub(crate) const HEAD_BYTES: u64 = 64 << 20;

/// The loss of a whole evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalResult {
    /// Mean cross-entropy (nats) over all counted positions.
    pub loss: f32,
    /// exp(loss).
    pub perplexity: f32,
    /// Number of counted positions (targets >= 0).
    pub tokens: usize,
}

fn invalid(msg: String) -> GpuError {
    GpuError::Invalid(msg)
}

/// Checks one batch's shape and ids; returns its number of sequences.
fn batch_rows(i: usize, batch: &Batch, seq: usize, vocab: usize) -> Result<usize, GpuError> {
    let n = batch.tokens.len();
    if n == 0 || !n.is_multiple_of(seq) || batch.targets.len() != n {
        return Err(invalid(format!(
            "evaluate: batch {i} has {n} tokens and {} targets; both must be the same non-zero multiple of seq {seq}",
            batch.targets.len()
        )));
    }
    if let Some((j, t)) = batch.tokens.iter().enumerate().find(|(_, &t)| t as usize >= vocab) {
        return Err(invalid(format!(
            "evaluate: batch {i} token {j} has id {t}, not below the model's vocab_size {vocab}"
        )));
    }
    if let Some((j, y)) = batch
        .targets
        .iter()
        .enumerate()
        .find(|(_, &y)| y >= 0 && y as usize >= vocab)
    {
        return Err(invalid(format!(
            "evaluate: batch {i} target {j} is {y}, not below the model's vocab_size {vocab}"
        )));
    }
    Ok(n / seq)
}

/// A forward-only program for (model, B, T), made once and run over a fixed list of eval
/// batches (e.g. every `--eval-every` steps). A short last batch is padded to B sequences of
/// token 0 with target -100, which count nowhere (sequences do not interact). Each batch's
/// mean loss is copied into a slot on the GPU and read back once at the end.
pub struct Evaluator {
    acts: Acts,
    prog: Program,
    batches: Vec<Batch>,
    slots: Tensor,
}

impl Evaluator {
    /// Checks the batches (see [`evaluate`] for the errors) and prepares the program for
    /// the largest batch among them.
    pub fn new(gpu: &Gpu, model: &ModelGpu, batches: Vec<Batch>, seq: usize) -> Result<Evaluator, GpuError> {
        let cfg = model.config();
        if seq == 0 || seq > cfg.n_positions {
            return Err(invalid(format!(
                "evaluate: seq {seq} must be between 1 and the model's n_positions {}",
                cfg.n_positions
            )));
        }
        if batches.is_empty() {
            return Err(invalid("evaluate: no batches to evaluate".into()));
        }
        let mut b = 0;
        for (i, batch) in batches.iter().enumerate() {
            b = b.max(batch_rows(i, batch, seq, cfg.vocab_size)?);
        }
        if batches.iter().all(|x| x.counted() == 0) {
            return Err(invalid("evaluate: no position counts in the loss (every target is -100)".into()));
        }
        let acts = gpu.in_class(MemoryClass::Eval, || model.activations(gpu, b, seq, false, HEAD_BYTES))?;
        let mut prog = Program::new();
        model.forward(gpu, &mut prog, &acts, true); // lnf [N, C], loss [1] = mean over counted positions
        let slots = gpu.in_class(MemoryClass::Eval, || gpu.zeros("eval losses", &[batches.len()]))?;
        Ok(Evaluator { acts, prog, batches, slots })
    }

    /// Counted positions over all batches.
    pub fn tokens(&self) -> usize {
        self.batches.iter().map(Batch::counted).sum()
    }

    /// Runs every batch; `stop` is asked before each one (None = stopped early).
    pub async fn run(&self, gpu: &Gpu, stop: &dyn Fn() -> bool) -> Result<Option<EvalResult>, GpuError> {
        let n = self.acts.io().b * self.acts.io().t;
        for (i, batch) in self.batches.iter().enumerate() {
            if stop() {
                return Ok(None);
            }
            let mut tokens = batch.tokens.clone();
            let mut targets = batch.targets.clone();
            tokens.resize(n, 0);
            targets.resize(n, -100);
            self.acts.io().write_batch(gpu, &tokens, &targets);
            let mut enc = gpu.encoder("eval");
            self.prog.record(&mut enc);
            enc.copy_buffer_to_buffer(&self.acts.io().loss.buffer, 0, &self.slots.buffer, 4 * i as u64, 4);
            gpu.submit(enc);
        }
        let losses = gpu.read(&self.slots).await?;
        let parts: Vec<(f32, usize)> = losses.iter().zip(&self.batches).map(|(&l, b)| (l, b.counted())).collect();
        Ok(eval_loss(&parts).map(|loss| EvalResult {
            loss,
            perplexity: (loss as f64).exp() as f32,
            tokens: self.tokens(),
        }))
    }
}

/// Mean cross-entropy over all counted positions of every eval window (batch::eval_loss semantics), forward only,
/// chunked head, no gradients. `batches` from Batcher::eval_batches (the last may be shorter).
///
/// Errors (before anything runs): no batches, seq 0 or above n_positions, a batch whose length is not a
/// multiple of seq (or whose targets differ in length), an id not below vocab_size, no counted position at
/// all; and whatever the GPU reports (a shape that does not fit, a lost device).
pub async fn evaluate(gpu: &Gpu, model: &ModelGpu, batches: &[Batch], seq: usize) -> Result<EvalResult, GpuError> {
    let ev = Evaluator::new(gpu, model, batches.to_vec(), seq)?;
    match ev.run(gpu, &|| false).await? {
        Some(r) => Ok(r),
        None => Err(invalid("evaluate: no position counts in the loss".into())),
    }
}
