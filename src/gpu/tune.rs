//! The autotuner's memory: for this adapter, which kernel variant won for each (kernel, shape
//! class) key. The kernels decide what to measure and how (e.g. src/kernels/matmul/tune.rs);
//! this keeps their choices for the life of the [`Gpu`] and, natively, in a small JSON file under
//! the user's cache directory, one section per adapter + driver + webtune version. The file is
//! read once (ignored when missing, unreadable or malformed) and rewritten atomically (a temporary
//! file renamed over it) when a choice is added, so a crash never leaves half a file behind.
//! A choice never changes results (every variant of a kernel computes bit-identical values), so
//! nothing depends on the file being there.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::Gpu;

/// How kernels with several variants pick one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tuning {
    /// Time a few candidates on the device at first use (native GPUs).
    Measure,
    /// A fixed table per adapter class: CPU adapters such as lavapipe (where compiling every
    /// candidate costs seconds) and browsers (where the CPU cannot wait for the GPU).
    Table,
}

pub(crate) struct TuneCache {
    /// "adapter | driver | webtune version": the file's section for this device.
    section: String,
    file: RefCell<Option<PathBuf>>,
    map: RefCell<BTreeMap<String, String>>,
    tuning: std::cell::Cell<Tuning>,
}

type FileMap = BTreeMap<String, BTreeMap<String, String>>;

impl TuneCache {
    pub(crate) fn new(report: &super::AdapterReport) -> TuneCache {
        let section = format!("{} | {} | webtune {}", report.name, report.driver, env!("CARGO_PKG_VERSION"));
        let tuning = default_tuning(report);
        let cache = TuneCache {
            section,
            file: RefCell::new(None),
            map: RefCell::new(BTreeMap::new()),
            tuning: std::cell::Cell::new(tuning),
        };
        cache.set_file(default_file());
        cache
    }

    fn set_file(&self, file: Option<PathBuf>) {
        let saved = file.as_ref().and_then(|f| read_file(f)).and_then(|mut m| m.remove(&self.section));
        *self.map.borrow_mut() = saved.unwrap_or_default();
        *self.file.borrow_mut() = file;
    }

    fn save(&self) {
        let Some(path) = self.file.borrow().clone() else { return };
        let mut all = read_file(&path).unwrap_or_default();
        all.insert(self.section.clone(), self.map.borrow().clone());
        let _ = write_atomically(&path, &all); // a cache: failing to write it only costs a re-tune
    }
}

impl Gpu {
    /// Whether kernels measure their variants on this device or use a fixed table.
    pub fn tuning(&self) -> Tuning {
        self.tune.tuning.get()
    }

    /// Overrides how kernels pick variants from now on (choices already made stay).
    pub fn set_tuning(&self, tuning: Tuning) {
        self.tune.tuning.set(tuning);
    }

    /// The variant chosen earlier for `key` (in this process or, natively, a previous one).
    pub fn tuned(&self, key: &str) -> Option<String> {
        self.tune.map.borrow().get(key).cloned()
    }

    /// Remembers the variant chosen for `key` (and saves the cache file natively).
    pub fn remember_tuned(&self, key: &str, value: &str) {
        self.tune.map.borrow_mut().insert(key.to_string(), value.to_string());
        self.tune.save();
    }

    /// Uses `file` (None: no file) as the tuning cache from now on, replacing what is in memory
    /// with that file's choices for this adapter. The default is `WEBTUNE_CACHE_DIR/tune.json`,
    /// else `tune.json` in webtune's folder of the user's cache directory; `WEBTUNE_CACHE_DIR=off`
    /// keeps choices in memory only.
    pub fn set_tune_file(&self, file: Option<PathBuf>) {
        self.tune.set_file(file);
    }
}

/// `WEBTUNE_TUNE=measure|table` overrides the default: measure on native GPUs, a table on CPU
/// adapters and in browsers.
fn default_tuning(report: &super::AdapterReport) -> Tuning {
    #[cfg(not(target_arch = "wasm32"))]
    {
        match std::env::var("WEBTUNE_TUNE").as_deref() {
            Ok("measure") => Tuning::Measure,
            Ok("table") => Tuning::Table,
            _ if report.device_type == "Cpu" => Tuning::Table,
            _ => Tuning::Measure,
        }
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = report;
        Tuning::Table
    }
}

fn default_file() -> Option<PathBuf> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let dir = match std::env::var_os("WEBTUNE_CACHE_DIR") {
            Some(d) if d == "off" => return None,
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => dirs::cache_dir()?.join("webtune"),
        };
        Some(dir.join("tune.json"))
    }
    #[cfg(target_arch = "wasm32")]
    {
        None
    }
}

fn read_file(path: &std::path::Path) -> Option<FileMap> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok()
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = path;
        None
    }
}

fn write_atomically(path: &std::path::Path, all: &FileMap) -> std::io::Result<()> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let dir = path.parent().ok_or_else(|| std::io::Error::other("no parent folder"))?;
        std::fs::create_dir_all(dir)?;
        let text = serde_json::to_string_pretty(all).map_err(std::io::Error::other)?;
        let tmp = dir.join(format!(".tune.{}.tmp", std::process::id()));
        std::fs::write(&tmp, text + "\n")?;
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = (path, all);
        Ok(())
    }
}
