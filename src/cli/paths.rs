//! Where a command writes, checked against what it reads. A user's files are sacred:
//! - no command writes onto or into one of its inputs (model, tokenizer, data, eval data,
//!   starting adapter, resumed checkpoint): paths are compared canonically (links resolved) and
//!   by file identity (device and inode, so hard links and bind mounts are seen through);
//! - an output folder must be new or empty, or hold the run's own earlier results when it
//!   resumes; anything else is refused unless `--overwrite` is given, which first clears
//!   webtune's results there — checkpoints included, so a later `--resume` cannot pick up
//!   another run's state — and never an input;
//! - a log file must be new, or the resumed run's own log, unless `--overwrite`;
//! - the temporary files and folders a killed run left behind (`.NAME.tmp<pid>`,
//!   `.checkpoint-N.tmp<pid>`, ...) are removed when the next command starts.

use std::path::{Component, Path, PathBuf};

/// A path as the file system knows it.
#[derive(Clone, Debug, PartialEq)]
struct Id {
    /// Absolute, links resolved as far as the path exists, `.` and `..` applied.
    canon: PathBuf,
    /// (device, inode) when it exists (unix).
    node: Option<(u64, u64)>,
}

fn node(p: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = p;
        None
    }
}

/// `p` absolute with every existing prefix canonicalized (so `out/../model` and a link to the
/// model folder both become the model folder), the part that does not exist yet appended.
fn canon(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut cur = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                cur.pop();
            }
            other => {
                cur.push(other);
                if let Ok(real) = cur.canonicalize() {
                    cur = real;
                }
            }
        }
    }
    cur
}

fn id(p: &Path) -> Id {
    let canon = canon(p);
    Id { node: node(&canon), canon }
}

impl Id {
    fn same(&self, other: &Id) -> bool {
        self.canon == other.canon || (self.node.is_some() && self.node == other.node)
    }

    /// Whether this path is `dir` or lies under it (a folder reached through a bind mount too).
    fn within(&self, dir: &Id) -> bool {
        self.canon.starts_with(&dir.canon)
            || (dir.node.is_some() && self.canon.ancestors().any(|a| node(a) == dir.node))
    }
}

/// One thing a command reads.
struct Input {
    /// How the user named it: a flag (`--model`), or a flag and a file in it.
    what: String,
    shown: String,
    id: Id,
    is_dir: bool,
}

/// Everything a command reads, by the flag that named it.
#[derive(Default)]
pub struct Inputs(Vec<Input>);

impl Inputs {
    /// Adds an input file or folder (`what` is how messages name it, e.g. "--model folder").
    pub fn add(&mut self, what: &str, path: &Path) {
        self.0.push(Input {
            what: what.to_string(),
            shown: path.display().to_string(),
            id: id(path),
            is_dir: path.is_dir(),
        });
    }

    /// The input that is `p` or holds it, if any.
    fn holding(&self, p: &Id) -> Option<&Input> {
        self.0.iter().find(|i| p.same(&i.id) || (i.is_dir && p.within(&i.id)))
    }
}

/// Refuses `out`, a folder the command writes the files `names` into (named by `flag`), when it
/// is an input, lies inside an input folder, or when one of those files would replace an input.
pub fn check_out_dir(flag: &str, out: &Path, inputs: &Inputs, names: &[&str]) -> Result<(), String> {
    if out.is_file() {
        return Err(format!("{flag} {}: is a file, not a folder", out.display()));
    }
    let o = id(out);
    for i in &inputs.0 {
        if o.same(&i.id) {
            return Err(format!(
                "{flag} {} is the {} {}: webtune never writes into its inputs; give another folder",
                out.display(),
                i.what,
                i.shown
            ));
        }
        if i.is_dir && o.within(&i.id) {
            return Err(format!(
                "{flag} {} is inside the {} {}: webtune never writes into its inputs; give a folder outside it",
                out.display(),
                i.what,
                i.shown
            ));
        }
        if let Some(n) = names.iter().find(|n| id(&o.canon.join(n)).same(&i.id)) {
            return Err(format!(
                "{flag} {}: writing {n} there would replace the {} {}; give another folder",
                out.display(),
                i.what,
                i.shown
            ));
        }
    }
    Ok(())
}

/// Refuses `file`, a file the command writes (named by `flag`), when it is an input (a link or a
/// hard link to one included) or lies inside an input folder, or is a folder.
pub fn check_out_file(flag: &str, file: &Path, inputs: &Inputs) -> Result<(), String> {
    if file.is_dir() {
        return Err(format!("{flag} {}: is a folder, not a file", file.display()));
    }
    let f = id(file);
    match inputs.holding(&f) {
        Some(i) if f.same(&i.id) => Err(format!(
            "{flag} {} is the {} {}: webtune never writes onto its inputs; give another file",
            file.display(),
            i.what,
            i.shown
        )),
        Some(i) => Err(format!(
            "{flag} {} is inside the {} {}: webtune never writes into its inputs; give a file outside it",
            file.display(),
            i.what,
            i.shown
        )),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// What earlier commands left: temporary files of killed ones, results of finished ones.

/// The process id in the name of a temporary file or folder webtune writes
/// (`.NAME.tmp<pid>`, `.checkpoint-N.old<pid>`, `.NAME.merge-tmp<pid>`), if `name` is one.
fn temp_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    ["merge-tmp", "tmp", "old"].iter().find_map(|tag| {
        let (stem, pid) = rest.rsplit_once(&format!(".{tag}"))?;
        (!stem.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then(|| pid.parse().ok())?
    })
}

/// Whether process `pid` is gone (so its temporary files are leftovers, not work in progress).
fn gone(pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    #[cfg(unix)]
    {
        // SAFETY: kill with signal 0 only checks that the process exists.
        let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
        r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// Removes, in `dir`, the temporary files and folders of webtune processes that are gone
/// (`only` limits it to names with that stem, e.g. a log file's); returns how many.
pub fn clean_leftovers(dir: &Path, only: Option<&str>) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_pid(&name) else { continue };
        if only.is_some_and(|stem| !name.starts_with(&format!(".{stem}."))) || !gone(pid) {
            continue;
        }
        let p = e.path();
        let removed = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        n += removed.is_ok() as usize;
    }
    n
}

/// The checkpoint folders (`checkpoint-<step>` holding trainer_state.json) in `out`.
fn checkpoints(out: &Path) -> Vec<PathBuf> {
    webtune::train::checkpoint::list_checkpoints(out).into_iter().map(|(_, p)| p).collect()
}

/// What `out` holds, temporary files of running webtune processes left out (sorted names).
fn contents(out: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(out)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| temp_pid(n).is_none())
        .collect();
    names.sort();
    names
}

/// How an output folder may be used.
pub struct OutRules<'a> {
    /// The flag that named it (`--out`).
    pub flag: &'a str,
    /// The results the command writes there (file names); checkpoint folders besides.
    pub results: &'a [&'a str],
    /// It holds this run's own results (a resumed run's folder): nothing to refuse or clear.
    pub own: bool,
    /// --overwrite: clear webtune's results there instead of refusing.
    pub overwrite: bool,
}

/// Plans the use of the output folder `out` (after [`check_out_dir`]): removes what killed runs
/// left, then requires it to be new or empty, or the run's own; with `overwrite`, webtune's
/// results there (the files `results` and every checkpoint folder) are to be removed — returned,
/// for [`clear`] to remove once the run is about to write — refusing if that would remove an input.
pub fn plan_out(out: &Path, rules: &OutRules<'_>, inputs: &Inputs) -> Result<Vec<PathBuf>, String> {
    if !out.exists() {
        return Ok(Vec::new());
    }
    clean_leftovers(out, None);
    let held = contents(out);
    if held.is_empty() || rules.own {
        return Ok(Vec::new());
    }
    if !rules.overwrite {
        let shown: Vec<&str> = held.iter().take(3).map(String::as_str).collect();
        let more = if held.len() > 3 { format!(" and {} more", held.len() - 3) } else { String::new() };
        return Err(format!(
            "{} {} is not empty (it holds {}{more}): a run writes into a new or empty folder (or, resuming, its own); \
             give another folder, or add --overwrite to replace webtune's results there (checkpoints included)",
            rules.flag,
            out.display(),
            shown.join(", ")
        ));
    }
    let mut doomed: Vec<PathBuf> = rules.results.iter().map(|n| out.join(n)).filter(|p| p.is_file()).collect();
    doomed.extend(checkpoints(out));
    for p in &doomed {
        if let Some(i) = inputs.0.iter().find(|i| i.id.within(&id(p))) {
            return Err(format!(
                "--overwrite would delete {}, which holds the {} {}: give another {}",
                p.display(),
                i.what,
                i.shown,
                rules.flag
            ));
        }
    }
    Ok(doomed)
}

/// Removes what [`plan_out`] planned; returns the names removed.
pub fn clear(doomed: &[PathBuf]) -> Result<Vec<String>, String> {
    let mut removed = Vec::new();
    for p in doomed {
        let r = if p.is_dir() { std::fs::remove_dir_all(p) } else { std::fs::remove_file(p) };
        r.map_err(|e| format!("--overwrite: cannot remove {}: {e}", p.display()))?;
        removed.push(p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    }
    Ok(removed)
}

/// Prepares a log file the command writes (after [`check_out_file`]): removes a killed run's
/// temporary copy of it, and refuses an existing file unless it is the run's own (`own`, a
/// resumed run's log) or `overwrite`.
pub fn prepare_log(flag: &str, file: &Path, own: bool, overwrite: bool) -> Result<(), String> {
    if let (Some(dir), Some(name)) = (file.parent(), file.file_name()) {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        clean_leftovers(dir, Some(&name.to_string_lossy()));
    }
    match std::fs::metadata(file) {
        Ok(m) if !own && !overwrite => Err(format!(
            "{flag} {} exists ({} bytes): give a new file (a run's log is never written over another file), \
             or add --overwrite to replace it",
            file.display(),
            m.len()
        )),
        _ => Ok(()),
    }
}

/// Whether `a` and `b` name the same place (canonical paths, file identity).
pub fn same_place(a: &Path, b: &Path) -> bool {
    id(a).same(&id(b))
}

/// Whether `p` is the folder `dir` or lies under it.
pub fn within(p: &Path, dir: &Path) -> bool {
    id(p).within(&id(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_and_their_processes() {
        assert_eq!(temp_pid(".adapter_model.safetensors.tmp4242"), Some(4242));
        assert_eq!(temp_pid(".checkpoint-8.old17"), Some(17));
        assert_eq!(temp_pid(".out.merge-tmp99"), Some(99));
        for not_ours in ["adapter_model.safetensors", ".tmp12", ".notes.tmp", ".x.tmp12a", "checkpoint-4", ".bashrc"] {
            assert_eq!(temp_pid(not_ours), None, "{not_ours}");
        }
        assert!(!gone(std::process::id()));
    }

    #[test]
    fn links_and_dot_dots_are_the_same_place() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path().join("model");
        std::fs::create_dir(&m).unwrap();
        std::fs::write(m.join("config.json"), "{}").unwrap();
        assert!(same_place(&m, &t.path().join("x/../model")));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&m, t.path().join("link")).unwrap();
            assert!(same_place(&m, &t.path().join("link")));
            std::fs::hard_link(m.join("config.json"), t.path().join("hard.json")).unwrap();
            assert!(same_place(&m.join("config.json"), &t.path().join("hard.json")));
        }
        let mut inputs = Inputs::default();
        inputs.add("--model folder", &m);
        let e = check_out_dir("--out", &t.path().join("x/../model/sub"), &inputs, &[]).unwrap_err();
        assert!(e.contains("is inside the --model folder"), "{e}");
        assert!(check_out_dir("--out", &t.path().join("elsewhere"), &inputs, &[]).is_ok());
    }
}
