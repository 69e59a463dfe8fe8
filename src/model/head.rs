//! What every family's activations share: the batch on the GPU (tokens, targets, the loss
//! scale, the embedding backward's token index) and the chunked LM head + cross-entropy over
//! the final norm's output (the B×T×vocab logits never exist).

use super::linear::RowParam;
use crate::gpu::{Gpu, GpuError, Program, Tensor};
use crate::kernels::cross_entropy::{self, LmHeadLoss};
use crate::kernels::embedding::{self, TokenIndexBuffers};
use crate::kernels::matmul::{matmul, Matmul};

/// The batch in, the loss out.
pub struct Io {
    pub b: usize,
    pub t: usize,
    pub tokens: Tensor,  // u32 [N]
    pub targets: Tensor, // i32 bits [N]
    pub scale: Tensor,   // [1] = 1 / counted targets
    pub lnf: Tensor,     // [N, C] the final norm's output, the head's input
    pub head: LmHeadLoss,
    pub logits: Tensor, // [chunk, V] scratch of the chunked head
    pub losses: Tensor, // [N]
    pub loss: Tensor,   // [1]
    /// The batch's positions grouped by token, for a trained embedding's backward.
    pub token_index: Option<TokenIndexBuffers>,
}

impl Io {
    /// For B sequences of T tokens, width `c`, vocabulary `v`; `backward` makes the head produce
    /// d lnf too, `token_index` keeps the index a trained embedding needs. `head_bytes` bounds
    /// the head's logits scratch.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        b: usize,
        t: usize,
        c: usize,
        v: usize,
        backward: bool,
        token_index: bool,
        head_bytes: u64,
    ) -> Result<Io, GpuError> {
        let n = b * t;
        // the [chunk, V] logits block is one buffer: it must fit a binding too
        gpu.check_binding("one row of the LM head's logits", 4 * v as u64)?;
        let chunk = cross_entropy::chunk_rows(n, v, head_bytes.min(gpu.max_binding()));
        let z = |name: &str, shape: &[usize]| gpu.zeros(name, shape);
        Ok(Io {
            b,
            t,
            tokens: z("tokens", &[n])?,
            targets: z("targets", &[n])?,
            scale: z("loss scale", &[1])?,
            lnf: z("lnf", &[n, c])?,
            head: LmHeadLoss { n, c, v, chunk, backward },
            logits: z("head logits chunk", &[chunk, v])?,
            losses: z("losses", &[n])?,
            loss: z("loss", &[1])?,
            token_index: if token_index { Some(TokenIndexBuffers::new(gpu, n)?) } else { None },
        })
    }

    /// Uploads one batch: tokens [N], targets [N] (-100 = ignored) and, for a trained embedding,
    /// the token index its backward scatters with.
    pub fn write_batch(&self, gpu: &Gpu, tokens: &[u32], targets: &[i32]) {
        self.write_micro_batch(gpu, tokens, targets, 1);
    }

    /// As `write_batch`, for one of `micro_batches` accumulated into one step: the loss scale is
    /// 1 / (counted · micro_batches), so `loss` is this batch's mean loss / micro_batches.
    pub fn write_micro_batch(&self, gpu: &Gpu, tokens: &[u32], targets: &[i32], micro_batches: usize) {
        gpu.write_u32(&self.tokens, tokens);
        gpu.write_u32(&self.targets, bytemuck::cast_slice(targets));
        let counted = targets.iter().filter(|&&y| y >= 0).count() * micro_batches;
        gpu.write(&self.scale, &[if counted == 0 { 0.0 } else { 1.0 / counted as f32 }]);
        if let Some(ix) = &self.token_index {
            ix.write(gpu, &embedding::TokenIndex::build(tokens));
        }
    }

    /// LM head + cross-entropy over `lnf`: loss [1], losses [N]; with `dlnf`, d lnf [N, C] is
    /// written there and the head's weight gradient accumulated.
    pub fn head_loss(&self, gpu: &Gpu, prog: &mut Program, head: &RowParam, dlnf: Option<&Tensor>) {
        let dh = if self.head.backward { dlnf } else { None };
        let dhead = head.grads().filter(|_| dh.is_some());
        cross_entropy::lm_head_loss_chunked(
            gpu,
            prog,
            &self.head,
            &self.lnf,
            &head.values(),
            &self.targets,
            &self.scale,
            &self.logits,
            &self.losses,
            &self.loss,
            dh,
            dhead.as_deref(),
        );
    }
}

/// logits [n, V] = x[x_row0.., C] (n rows) · headᵀ, one matmul per row chunk of the head (each
/// fills its columns of the logits). Inference: generation's last row and `logits`.
#[allow(clippy::too_many_arguments)]
pub fn head_logits(gpu: &Gpu, prog: &mut Program, x: &Tensor, x_row0: usize, head: &RowParam, logits: &Tensor, n: usize, v: usize, c: usize) {
    for w in head.values() {
        let mut mm = Matmul::new(n, w.rows, c).tb();
        mm.a_offset = x_row0 * c;
        mm.c_offset = w.row0;
        mm.ldc = v;
        matmul(gpu, prog, &mm, x, w.t, logits, None);
    }
}
