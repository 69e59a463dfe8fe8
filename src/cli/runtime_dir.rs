//! Keeps the graphics stack's stray lines out of webtune's output. When wgpu enumerates the
//! Vulkan (and GL) adapters, Mesa's device-selection layer and EGL try to reach a Wayland
//! display, and libwayland prints "error: XDG_RUNTIME_DIR is invalid or not set in the
//! environment." for every try when that variable is missing (a server, a container, a CI job,
//! `sudo`, cron: a new user's first sight of the tool). A compute program needs no display, so
//! when the variable is unset webtune points it at a private, empty folder of its own before
//! the first adapter is probed: the lookup then finds no display socket and stays quiet.

/// Sets XDG_RUNTIME_DIR to a private folder when it is unset or not absolute. Called first thing
/// in `main`, before any thread exists (changing the environment is only safe then).
pub fn ensure() {
    #[cfg(all(unix, not(target_os = "macos")))]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let set = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|v| std::path::Path::new(&v).is_absolute());
        if set {
            return;
        }
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        let dir = std::env::temp_dir().join(format!("webtune-runtime-{uid}"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        // only a folder that is ours alone (not a link, not someone else's, not open to others)
        let private = std::fs::symlink_metadata(&dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0);
        if private {
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        }
    }
}
