//! Datasets: records of token ids -> one token stream (each record followed by EOS) ->
//! non-overlapping windows of T+1 tokens -> batches of B windows.

pub mod batch;
pub mod chat;
pub mod dataset;
pub mod records;
pub mod tokenizer;

pub use batch::{Batch, Batcher};
pub use dataset::Dataset;
pub use records::{Record, TokenStream};
pub use tokenizer::{SpecialTokens, Tokenizer};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {msg}")]
    Io { path: String, msg: String },
    #[error("{path}:{line}: {msg}")]
    Line { path: String, line: usize, msg: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
}
