//! The subcommands of the native CLI, one file each.

pub mod bench;
pub mod demo;
pub mod info;
pub mod pretrain;
pub mod train;
