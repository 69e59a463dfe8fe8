//! Training: AdamW on the GPU, the trainer loop and checkpoints.

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {msg}")]
    Io { path: String, msg: String },
}
