//! The subcommands of the native CLI, one file each.

pub mod bench;
pub mod eval;
pub mod generate;
pub mod info;
pub mod merge;
pub mod train;
