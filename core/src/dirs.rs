//! Per-container directories on the host.
//!
//! Each container gets `<containers>/<name>`, holding its cloud-init file and
//! logs. Removal moves the directory into `<removed>` and never deletes it,
//! so an operator can still read a destroyed container's logs.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

use crate::error::{Error, Result};
use crate::names::validate_container_name;

/// Default root of the per-container directories.
pub const DEFAULT_CONTAINERS_DIR: &str = "/var/lib/juju/containers";
/// Default root that removed container directories are moved into.
pub const DEFAULT_REMOVED_CONTAINERS_DIR: &str = "/var/lib/juju/removed-containers";
/// Name of the user data file in a container directory.
pub const CLOUD_INIT_FILE: &str = "cloud-init";

/// The two roots of per-container directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDirs {
    containers: PathBuf,
    removed: PathBuf,
}

impl Default for ContainerDirs {
    fn default() -> Self {
        Self::new(DEFAULT_CONTAINERS_DIR, DEFAULT_REMOVED_CONTAINERS_DIR)
    }
}

impl ContainerDirs {
    /// Creates the roots `containers` and `removed`. Nothing is created on
    /// disk until a directory is made.
    pub fn new(containers: impl Into<PathBuf>, removed: impl Into<PathBuf>) -> Self {
        Self {
            containers: containers.into(),
            removed: removed.into(),
        }
    }

    /// Creates both roots under `base`, as `base/containers` and
    /// `base/removed-containers`.
    pub fn under(base: impl AsRef<Path>) -> Self {
        let base = base.as_ref();
        Self::new(base.join("containers"), base.join("removed-containers"))
    }

    /// Returns the root of the per-container directories.
    pub fn containers_root(&self) -> &Path {
        &self.containers
    }

    /// Returns the root that removed directories are moved into.
    pub fn removed_root(&self) -> &Path {
        &self.removed
    }

    /// Returns the directory of container `name`, after checking the name.
    pub fn container_dir(&self, name: &str) -> Result<PathBuf> {
        validate_container_name(name)?;
        Ok(self.containers.join(name))
    }

    /// Creates `<containers>/<name>` (mode 0700, because its cloud-init file
    /// holds the agent's password) and its root if needed.
    /// Fails with [`Error::AlreadyExists`] when the directory exists, so a
    /// create never reuses another container's directory.
    pub fn new_directory(&self, name: &str) -> Result<PathBuf> {
        let dir = self.container_dir(name)?;
        create_root(&self.containers)?;
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => Ok(dir),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                Err(Error::AlreadyExists {
                    name: name.to_owned(),
                })
            }
            Err(error) => Err(Error::io("create container directory", dir, error)),
        }
    }

    /// Moves `<containers>/<name>` into `<removed>`, as `name`, or `name.1`,
    /// `name.2`, ... when earlier removals took those names, and returns
    /// where it went. Returns `Ok(None)` when there is nothing to move.
    ///
    /// Each attempt is a single `renameat2(RENAME_NOREPLACE)`, so the clash
    /// check and the move are one atomic step: removals of the same name
    /// racing each other never overwrite one another. A symlink is moved as
    /// the link itself; its target is never touched.
    pub fn remove_directory(&self, name: &str) -> Result<Option<PathBuf>> {
        let dir = self.container_dir(name)?;
        if fs::symlink_metadata(&dir).is_err() {
            return Ok(None);
        }
        create_root(&self.removed)?;
        for suffix in 0u64.. {
            let target = if suffix == 0 {
                self.removed.join(name)
            } else {
                self.removed.join(format!("{name}.{suffix}"))
            };
            match renameat2(
                AT_FDCWD,
                &dir,
                AT_FDCWD,
                &target,
                RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) => {
                    tracing::debug!(container = name, to = %target.display(), "moved container directory aside");
                    return Ok(Some(target));
                }
                Err(Errno::EEXIST | Errno::ENOTEMPTY) => continue,
                Err(Errno::ENOENT) => return Ok(None),
                Err(errno) => return Err(Error::io("move container directory", dir, errno.into())),
            }
        }
        unreachable!("the suffix counter is unbounded")
    }
}

fn create_root(root: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(root)
        .map_err(|error| Error::io("create directory", root, error))
}

/// Writes `data` to `<dir>/cloud-init` with mode 0644 and returns its path.
///
/// The data goes to a temporary file in `dir` that is synced and then
/// renamed over the target, so a reader sees the old file or the whole new
/// one, never a part.
pub fn write_cloud_init_file(dir: &Path, data: &[u8]) -> Result<PathBuf> {
    let target = dir.join(CLOUD_INIT_FILE);
    // The counter keeps concurrent writes into one directory from the same
    // process apart; the process id keeps processes apart.
    static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);
    let serial = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!(
        ".{CLOUD_INIT_FILE}.{}.{serial}.tmp",
        std::process::id()
    ));
    let write = || -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp)?;
        file.write_all(data)?;
        // The mode given to open is reduced by the umask; set it exactly.
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        file.sync_all()?;
        fs::rename(&temp, &target)?;
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(|error| {
        let _ = fs::remove_file(&temp);
        Error::io("write cloud-init file", &target, error)
    })?;
    Ok(target)
}
