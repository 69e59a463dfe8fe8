//! The subcommands of the native CLI, one file each.

pub mod bench;
pub mod demo;
pub mod eval;
pub mod export_gguf;
pub mod generate;
pub mod info;
pub mod merge;
pub mod paths;
pub mod pretrain;
pub mod runtime_dir;
pub mod signals;
pub mod train;

/// A line on stderr that never panics (eprintln! does when stderr is gone, e.g. after SIGHUP
/// closed the terminal: a run must still save its work then).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
