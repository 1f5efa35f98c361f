//! Private runtime directories: one per session program, for its shell integration,
//! its hook socket and its agent CLI's hook settings, under a per-user root that nobody
//! else can enter.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The directory that holds every session's runtime directory: `$XDG_RUNTIME_DIR/architect`
/// when that variable names a directory, else `/tmp/architect-<uid>`. Created 0700; an
/// existing one must be a real directory owned by this user and closed to others.
///
/// # Errors
/// When it cannot be created, or exists with the wrong owner, type or mode.
pub fn runtime_root() -> std::io::Result<PathBuf> {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let root = match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(d) if d.is_dir() => d.join("architect"),
        _ => PathBuf::from(format!("/tmp/architect-{uid}")),
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(annotate(e, "creating", &root)),
    }
    let meta = std::fs::symlink_metadata(&root).map_err(|e| annotate(e, "reading", &root))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} must be a directory owned by uid {uid} with mode 0700 (it holds hook sockets); \
                 remove it or fix it",
                root.display()
            ),
        ));
    }
    Ok(root)
}

fn annotate(e: std::io::Error, what: &str, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// A session program's private runtime directory, removed on drop.
#[derive(Debug)]
pub struct RuntimeDir {
    path: PathBuf,
}

impl RuntimeDir {
    /// Creates `<runtime root>/<name>` fresh (an old one is removed first).
    ///
    /// # Errors
    /// When the root is unusable or the directory cannot be created.
    pub fn create(name: &str) -> std::io::Result<Self> {
        let path = runtime_root()?.join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| annotate(e, "creating", &path))?;
        Ok(Self { path })
    }

    /// Its path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `name` in it, mode 0600.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write(&self, name: &str, text: &str) -> std::io::Result<PathBuf> {
        let path = self.path.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| annotate(e, "creating", &path))?;
        f.write_all(text.as_bytes())
            .map_err(|e| annotate(e, "writing", &path))?;
        Ok(path)
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
