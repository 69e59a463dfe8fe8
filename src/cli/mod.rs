//! The subcommands of the native CLI, one file each.

pub mod bench;
pub mod info;
pub mod train;
