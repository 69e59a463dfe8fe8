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

/// The GPU memory a run may use: `--gpu-memory SIZE`, else `WEBTUNE_GPU_MEMORY`, else unknown.
pub fn gpu_memory(flag: Option<&str>) -> Result<Option<u64>, String> {
    let (source, text) = match (flag, std::env::var("WEBTUNE_GPU_MEMORY").ok().filter(|v| !v.trim().is_empty())) {
        (Some(f), _) => ("--gpu-memory", f.to_string()),
        (None, Some(v)) => ("WEBTUNE_GPU_MEMORY", v),
        (None, None) => return Ok(None),
    };
    match webtune::memory::parse_size(&text) {
        Some(b) if b > 0 => Ok(Some(b)),
        _ => Err(format!("{source} {text:?} is not a size: give bytes or a number with K, M, G or T (e.g. 6G, 512M)")),
    }
}

/// A line on stderr that never panics (eprintln! does when stderr is gone, e.g. after SIGHUP
/// closed the terminal: a run must still save its work then).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
