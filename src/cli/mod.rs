//! The subcommands of the native CLI, one file each.

pub mod bench;
pub mod demo;
pub mod eval;
pub mod export_gguf;
pub mod generate;
pub mod info;
pub mod merge;
pub mod pretrain;
pub mod train;
