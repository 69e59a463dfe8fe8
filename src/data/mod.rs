//! Datasets: records of token ids -> one token stream -> windows of T+1 -> batches.

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {msg}")]
    Io { path: String, msg: String },
    #[error("{path}:{line}: {msg}")]
    Line { path: String, line: usize, msg: String },
    #[error("{0}")]
    Invalid(String),
}
