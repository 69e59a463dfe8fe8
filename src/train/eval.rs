//! Evaluation: the mean cross-entropy of a model over every eval window, forward only.
//!
//! Each batch runs [embedding -> L blocks -> LN -> chunked LM head + cross-entropy] with
//! no gradient scratch; the per-position losses (0 where a target is -100) are read back
//! and summed in f64, so the result is Σ losses / Σ counted positions over all windows,
//! the same number as [`eval_loss`](crate::data::batch::eval_loss) of the per-batch means.
//! Activations are made once per batch size: the full one and, if the last batch of
//! [`Batcher::eval_batches`](crate::data::Batcher::eval_batches) is shorter, that one.

use crate::data::Batch;
use crate::gpu::{Gpu, GpuError, Program};
use crate::model::gpt2::{Activations, Gpt2Gpu};

/// Bytes allowed for the chunked head's logits scratch (as training's default).
const HEAD_BYTES: u64 = 64 << 20;

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

/// Mean cross-entropy over all counted positions of every eval window (batch::eval_loss semantics), forward only,
/// chunked head, no gradients. `batches` from Batcher::eval_batches (the last may be shorter: handle it).
///
/// Errors (before anything runs): no batches, seq 0 or above n_positions, a batch whose length is not a
/// multiple of seq (or whose targets differ in length), an id not below vocab_size, no counted position at
/// all; and whatever the GPU reports (a shape that does not fit, a lost device).
pub async fn evaluate(gpu: &Gpu, model: &Gpt2Gpu, batches: &[Batch], seq: usize) -> Result<EvalResult, GpuError> {
    let cfg = &model.config;
    if seq == 0 || seq > cfg.n_positions {
        return Err(invalid(format!(
            "evaluate: seq {seq} must be between 1 and the model's n_positions {}",
            cfg.n_positions
        )));
    }
    if batches.is_empty() {
        return Err(invalid("evaluate: no batches to evaluate".into()));
    }
    let rows: Vec<usize> = batches
        .iter()
        .enumerate()
        .map(|(i, b)| batch_rows(i, b, seq, cfg.vocab_size))
        .collect::<Result<_, _>>()?;
    let tokens: usize = batches.iter().map(Batch::counted).sum();
    if tokens == 0 {
        return Err(invalid(
            "evaluate: no position counts in the loss (every target is -100)".into(),
        ));
    }

    // One (activations, program) per distinct batch size, made when first needed.
    let mut shapes: Vec<(usize, Activations, Program)> = Vec::new();
    let mut sum = 0.0f64;
    for (batch, &b) in batches.iter().zip(&rows) {
        if batch.counted() == 0 {
            continue;
        }
        let k = match shapes.iter().position(|s| s.0 == b) {
            Some(k) => k,
            None => {
                let a = Activations::new(gpu, model, b, seq, false, HEAD_BYTES)?;
                let mut prog = Program::new();
                model.forward(gpu, &mut prog, &a); // lnf [N, C]
                model.head_loss(gpu, &mut prog, &a); // losses [N], 0 where not counted
                shapes.push((b, a, prog));
                shapes.len() - 1
            }
        };
        let (_, a, prog) = &shapes[k];
        a.write_batch(gpu, &batch.tokens, &batch.targets);
        prog.run(gpu);
        let losses = gpu.read(&a.losses).await?;
        sum += losses
            .iter()
            .zip(&batch.targets)
            .filter(|(_, &y)| y >= 0)
            .map(|(&l, _)| l as f64)
            .sum::<f64>();
    }
    gpu.check()?;
    let loss = sum / tokens as f64;
    Ok(EvalResult {
        loss: loss as f32,
        perplexity: loss.exp() as f32,
        tokens,
    })
}
