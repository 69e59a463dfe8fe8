//! Training: AdamW on the GPU ([`optimizer`]) and the step loop ([`trainer`]).

pub mod checkpoint;
pub mod eval;
pub mod optimizer;
pub mod plan;
pub mod run;
pub mod schedule;
pub mod trainer;

pub use optimizer::{AdamWConfig, Optimizer};
pub use plan::{DeviceLimits, MemoryPlan, PlanContext};
pub use run::{Control, Run, RunSpec};
pub use trainer::{StepLog, TrainConfig, Trainer};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {msg}")]
    Io { path: String, msg: String },
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
}
