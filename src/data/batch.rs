//! Windows and batches. The stream is cut into non-overlapping windows of T+1 tokens
//! (the remainder is dropped); a window gives inputs w[..T] and targets w[1..]. Batch s
//! takes windows s·B .. s·B+B of an endless sequence of epochs: in file order with
//! `shuffle` off, else each epoch is a permutation drawn from (seed, epoch).

use super::{DataError, TokenStream};
use crate::rng::Rng;

/// One batch: `tokens` [B·T] and `targets` [B·T] (-100 = not counted).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub tokens: Vec<u32>,
    pub targets: Vec<i32>,
}

impl Batch {
    /// Number of positions that count in the loss.
    pub fn counted(&self) -> usize {
        self.targets.iter().filter(|&&y| y >= 0).count()
    }
}

#[derive(Clone, Debug)]
pub struct Batcher {
    stream: TokenStream,
    pub b: usize,
    pub t: usize,
    pub n_windows: usize,
    shuffle: bool,
    seed: u64,
    /// Windows handed out so far (the data position a checkpoint stores).
    pub position: u64,
    order: Vec<usize>,
    order_epoch: u64,
}

impl Batcher {
    pub fn new(stream: TokenStream, b: usize, t: usize, shuffle: bool, seed: u64) -> Result<Batcher, DataError> {
        if b == 0 || t == 0 {
            return Err(DataError::Invalid("batch size and sequence length must be at least 1".into()));
        }
        let n_windows = stream.tokens.len() / (t + 1);
        if n_windows == 0 {
            return Err(DataError::Invalid(format!(
                "the dataset has {} tokens (with EOS after each record) but one window needs seq + 1 = {}; use a smaller --seq or more data",
                stream.tokens.len(),
                t + 1
            )));
        }
        let mut bt = Batcher { stream, b, t, n_windows, shuffle, seed, position: 0, order: Vec::new(), order_epoch: u64::MAX };
        bt.order_for(0);
        Ok(bt)
    }

    fn order_for(&mut self, epoch: u64) {
        if self.order_epoch == epoch {
            return;
        }
        self.order = (0..self.n_windows).collect();
        if self.shuffle {
            let mut rng = Rng::new(self.seed.wrapping_mul(0x100000001B3).wrapping_add(epoch));
            rng.shuffle(&mut self.order);
        }
        self.order_epoch = epoch;
    }

    /// The next batch; wraps around at the end of the data.
    pub fn next_batch(&mut self) -> Batch {
        let (b, t) = (self.b, self.t);
        let mut batch = Batch { tokens: Vec::with_capacity(b * t), targets: Vec::with_capacity(b * t) };
        for _ in 0..b {
            let epoch = self.position / self.n_windows as u64;
            self.order_for(epoch);
            let w = self.order[(self.position % self.n_windows as u64) as usize];
            let start = w * (t + 1);
            batch.tokens.extend_from_slice(&self.stream.tokens[start..start + t]);
            batch.targets.extend_from_slice(&self.stream.labels[start + 1..start + t + 1]);
            self.position += 1;
        }
        batch
    }

    /// Continue from a saved data position.
    pub fn seek(&mut self, position: u64) {
        self.position = position;
    }

    /// Every window exactly once, in file order (never shuffled), grouped B at a time: batch k
    /// holds windows k·B .. min(k·B + B, n_windows). The last batch is short when B does not
    /// divide the window count: it then holds B' = n_windows − k·B windows, i.e. `tokens` and
    /// `targets` have B'·T entries (evaluate it with activations for B' sequences). The tokens
    /// after the last whole window are not evaluated. Does not move the training position.
    /// The eval loss is the mean over all counted positions of all windows, see [`eval_loss`].
    pub fn eval_batches(&self) -> Vec<Batch> {
        let (b, t) = (self.b, self.t);
        (0..self.n_windows)
            .step_by(b)
            .map(|w0| {
                let w1 = (w0 + b).min(self.n_windows);
                let (start, end) = (w0 * (t + 1), w1 * (t + 1));
                let mut batch =
                    Batch { tokens: Vec::with_capacity((w1 - w0) * t), targets: Vec::with_capacity((w1 - w0) * t) };
                for s in (start..end).step_by(t + 1) {
                    batch.tokens.extend_from_slice(&self.stream.tokens[s..s + t]);
                    batch.targets.extend_from_slice(&self.stream.labels[s + 1..s + t + 1]);
                }
                batch
            })
            .collect()
    }
}

/// The loss of a whole evaluation from per-batch results `(mean loss of the batch,
/// batch.counted())`: Σ loss·counted / Σ counted, i.e. the mean cross-entropy over all counted
/// positions of all windows (a batch's weight is its number of counted positions, not 1).
/// None when no position counts.
pub fn eval_loss(parts: &[(f32, usize)]) -> Option<f32> {
    let counted: usize = parts.iter().map(|p| p.1).sum();
    if counted == 0 {
        return None;
    }
    let sum: f64 = parts.iter().map(|&(loss, n)| loss as f64 * n as f64).sum();
    Some((sum / counted as f64) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Record;

    fn stream(lens: &[usize]) -> TokenStream {
        let recs: Vec<Record> =
            lens.iter().enumerate().map(|(i, &n)| Record { input_ids: vec![i as u32; n], labels: None }).collect();
        TokenStream::new(&recs, 99)
    }

    #[test]
    fn windows_are_consecutive_and_wrap_in_file_order() {
        // stream: 0 0 0 99 1 1 99 2 2 2 2 99 -> 12 tokens, T=2 -> windows [0 0 0] [99 1 1] [99 2 2] [2 2 99]
        let mut bt = Batcher::new(stream(&[3, 2, 4]), 3, 2, false, 0).unwrap();
        assert_eq!(bt.n_windows, 4);
        let b0 = bt.next_batch();
        assert_eq!(b0.tokens, vec![0, 0, 99, 1, 99, 2]);
        assert_eq!(b0.targets, vec![0, 0, 1, 1, 2, 2]);
        let b1 = bt.next_batch(); // window 3, then wrap to windows 0, 1
        assert_eq!(b1.tokens, vec![2, 2, 0, 0, 99, 1]);
        assert_eq!(b1.targets, vec![2, 99, 0, 0, 1, 1]);
    }

    #[test]
    fn shuffle_is_a_seeded_permutation_per_epoch() {
        let mut a = Batcher::new(stream(&[50, 50, 50]), 1, 4, true, 7).unwrap();
        let mut b = Batcher::new(stream(&[50, 50, 50]), 1, 4, true, 7).unwrap();
        let n = a.n_windows;
        let epoch_a: Vec<Vec<u32>> = (0..n).map(|_| a.next_batch().tokens).collect();
        let epoch_b: Vec<Vec<u32>> = (0..n).map(|_| b.next_batch().tokens).collect();
        assert_eq!(epoch_a, epoch_b);
        let mut plain = Batcher::new(stream(&[50, 50, 50]), 1, 4, false, 7).unwrap();
        let in_order: Vec<Vec<u32>> = (0..n).map(|_| plain.next_batch().tokens).collect();
        assert_ne!(epoch_a, in_order);
        let (mut x, mut y) = (epoch_a.clone(), in_order.clone());
        x.sort();
        y.sort();
        assert_eq!(x, y, "an epoch visits every window once");
    }

    #[test]
    fn masked_labels_and_too_little_data() {
        let recs = vec![Record { input_ids: vec![5, 6, 7], labels: Some(vec![-100, -100, 7]) }];
        let s = TokenStream::new(&recs, 9);
        assert_eq!(s.labels, vec![-100, -100, 7, 9]);
        let mut bt = Batcher::new(s.clone(), 1, 3, false, 0).unwrap();
        let b = bt.next_batch();
        assert_eq!(b.targets, vec![-100, 7, 9]);
        assert_eq!(b.counted(), 2);
        let err = Batcher::new(s, 1, 4, false, 0).unwrap_err().to_string();
        assert!(err.contains("4 tokens") && err.contains("seq + 1 = 5"), "{err}");
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        use crate::data::records::parse_jsonl;
        let e = parse_jsonl("{\"input_ids\": [1]}\n{\"input_ids\": [1, 200]}\n", "d.jsonl", 97).unwrap_err().to_string();
        assert!(e.starts_with("d.jsonl:2:") && e.contains("200") && e.contains("vocab_size is 97"), "{e}");
        let e = parse_jsonl("{\"input_ids\": [1]}\n{oops\n", "d.jsonl", 97).unwrap_err().to_string();
        assert!(e.starts_with("d.jsonl:2: invalid JSON"), "{e}");
        let e = parse_jsonl("{\"text\": \"hi\"}\n", "d.jsonl", 97).unwrap_err().to_string();
        assert!(e.contains("missing field \"input_ids\""), "{e}");
        let e = parse_jsonl("\n\n", "d.jsonl", 97).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = parse_jsonl("{\"input_ids\": [1, -3]}", "d.jsonl", 97).unwrap_err().to_string();
        assert!(e.contains("input_ids[1] = -3"), "{e}");
    }
}
