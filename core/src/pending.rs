//! Creates in progress, and the half-made containers a crash leaves.
//!
//! A create holds an exclusive `flock` on `<container dir>/.create.lock`
//! from the moment its directory appears until it returns, and writes
//! `<container dir>/.created` just before it returns successfully. A
//! container directory without `.created` whose lock nobody holds therefore
//! belongs to a create whose process died: that is what garbage collection
//! removes, and nothing else. The kernel drops a `flock` when its holder
//! dies, so no stale lock can keep a half-made container alive.
//!
//! The directory is made under a temporary name with the lock already held
//! and then renamed into place without replacing anything, so no other
//! process can ever see the directory unlocked while its create runs.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

use crate::dirs::ContainerDirs;
use crate::error::{Error, Result};

/// Lock file held by a create for as long as it runs.
pub const CREATE_LOCK_FILE: &str = ".create.lock";
/// Marker written when a create succeeded.
pub const CREATED_MARKER_FILE: &str = ".created";
/// Suffix of the temporary names that container directories are made under.
const TEMP_SUFFIX: &str = ".new";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The directory of a create in progress, with the create's lock held.
/// Dropping it releases the lock.
#[derive(Debug)]
pub struct CreateGuard {
    name: String,
    dir: PathBuf,
    _lock: File,
}

impl CreateGuard {
    /// Returns the container name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the container directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Marks the create as complete. Call it as the last step of a
    /// successful create, while the guard still holds the lock.
    pub fn mark_created(&self) -> Result<()> {
        let marker = self.dir.join(CREATED_MARKER_FILE);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&marker)
            .map_err(|error| Error::io("write created marker", &marker, error))?;
        file.sync_all()
            .map_err(|error| Error::io("sync created marker", &marker, error))
    }
}

/// A container directory left by a create whose process died, with its
/// lock held so that no create can start on it while it is removed.
#[derive(Debug)]
pub struct HalfMade {
    /// Container name.
    pub name: String,
    _lock: Option<File>,
}

fn open_lock(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .mode(0o600)
        .open(path)
}

/// Takes the lock at `path` without waiting. Returns `Ok(None)` when another
/// process or thread holds it.
fn try_lock(path: &Path) -> io::Result<Option<File>> {
    let file = open_lock(path, false)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(error)) => Err(error),
    }
}

impl ContainerDirs {
    /// Creates the directory of container `name` for a create, with the
    /// create lock held, and returns the guard. Fails with
    /// [`Error::AlreadyExists`] when the directory exists.
    pub fn new_directory_for_create(&self, name: &str) -> Result<CreateGuard> {
        let dir = self.container_dir(name)?;
        let root = self.containers_root();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(root)
            .map_err(|error| Error::io("create directory", root, error))?;

        let counter = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = root.join(format!(
            ".{name}.{}.{counter}{TEMP_SUFFIX}",
            std::process::id()
        ));
        // Private, because the cloud-init file it will hold contains the
        // agent's password.
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&temp)
            .map_err(|error| Error::io("create directory", &temp, error))?;
        let lock_path = temp.join(CREATE_LOCK_FILE);
        let lock = open_lock(&lock_path, true).and_then(|file| file.lock().map(|()| file));
        let lock = match lock {
            Ok(lock) => lock,
            Err(error) => {
                let _ = fs::remove_file(&lock_path);
                let _ = fs::remove_dir(&temp);
                return Err(Error::io("lock container directory", lock_path, error));
            }
        };
        match renameat2(
            AT_FDCWD,
            &temp,
            AT_FDCWD,
            &dir,
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => Ok(CreateGuard {
                name: name.to_owned(),
                dir,
                _lock: lock,
            }),
            Err(errno) => {
                let _ = fs::remove_file(&lock_path);
                let _ = fs::remove_dir(&temp);
                if matches!(errno, Errno::EEXIST | Errno::ENOTEMPTY) {
                    Err(Error::AlreadyExists {
                        name: name.to_owned(),
                    })
                } else {
                    Err(Error::io(
                        "move container directory into place",
                        dir,
                        errno.into(),
                    ))
                }
            }
        }
    }

    /// Returns true when container `name` has a directory marked as
    /// created.
    pub fn is_created(&self, name: &str) -> bool {
        self.container_dir(name)
            .is_ok_and(|dir| dir.join(CREATED_MARKER_FILE).exists())
    }

    /// Finds the container directories whose name starts with `prefix`
    /// that no running create holds and that were never marked created,
    /// and returns them with their locks held. Temporary directories of
    /// creates that died before their directory was renamed into place are
    /// removed on the way (they hold nothing but the lock file).
    ///
    /// Directories that are not locked at all (made by
    /// [`ContainerDirs::new_directory`]) count as half made when unmarked.
    pub fn half_made(&self, prefix: &str) -> Result<Vec<HalfMade>> {
        let root = self.containers_root();
        let entries = match fs::read_dir(root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(Error::io("read directory", root, error)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| Error::io("read directory", root, error))?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            let path = entry.path();
            if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
                remove_dead_temp(&path);
                continue;
            }
            if !name.starts_with(prefix) || crate::names::validate_container_name(name).is_err() {
                continue;
            }
            // A symlink is never followed: it is not a directory this
            // manager made, so garbage collection leaves it alone.
            let is_dir = entry.file_type().map(|kind| kind.is_dir()).unwrap_or(false);
            if !is_dir || path.join(CREATED_MARKER_FILE).exists() {
                continue;
            }
            let lock = match try_lock(&path.join(CREATE_LOCK_FILE)) {
                Ok(Some(lock)) => Some(lock),
                Ok(None) => continue,
                Err(error) if error.kind() == io::ErrorKind::NotFound => None,
                Err(error) => {
                    return Err(Error::io(
                        "lock container directory",
                        path.join(CREATE_LOCK_FILE),
                        error,
                    ));
                }
            };
            // The create may have finished between the first look and the lock.
            if path.join(CREATED_MARKER_FILE).exists() {
                continue;
            }
            found.push(HalfMade {
                name: name.to_owned(),
                _lock: lock,
            });
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }
}

fn remove_dead_temp(path: &Path) {
    let lock_path = path.join(CREATE_LOCK_FILE);
    match try_lock(&lock_path) {
        Ok(Some(_lock)) => {
            let _ = fs::remove_file(&lock_path);
            if let Err(error) = fs::remove_dir(path) {
                tracing::warn!(path = %path.display(), %error, "failed to remove temporary container directory");
            }
        }
        Ok(None) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let _ = fs::remove_dir(path);
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "failed to lock temporary container directory")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs() -> (tempfile::TempDir, ContainerDirs) {
        let base = tempfile::tempdir().unwrap();
        let dirs = ContainerDirs::under(base.path());
        (base, dirs)
    }

    /// Returns `half_made(prefix)` once it finds `expected` directories,
    /// or after one second. A child that another test forks keeps a copy
    /// of a lock's descriptor until it execs, so a lock can stay taken for
    /// a moment after its guard is dropped.
    fn settled_half_made(dirs: &ContainerDirs, prefix: &str, expected: usize) -> Vec<HalfMade> {
        let mut found = dirs.half_made(prefix).unwrap();
        for _ in 0..100 {
            if found.len() == expected {
                break;
            }
            drop(found);
            std::thread::sleep(std::time::Duration::from_millis(10));
            found = dirs.half_made(prefix).unwrap();
        }
        found
    }

    #[test]
    fn create_guard_makes_locked_directory() {
        let (_base, dirs) = dirs();
        let guard = dirs.new_directory_for_create("juju-machine-0").unwrap();
        assert!(guard.dir().is_dir());
        assert!(guard.dir().join(CREATE_LOCK_FILE).is_file());
        // Held by this guard, so a second open file description cannot take it.
        assert!(
            try_lock(&guard.dir().join(CREATE_LOCK_FILE))
                .unwrap()
                .is_none()
        );
        let leftovers: Vec<_> = fs::read_dir(dirs.containers_root())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec!["juju-machine-0"]);
    }

    #[test]
    fn create_guard_existing_is_already_exists() {
        let (_base, dirs) = dirs();
        let _guard = dirs.new_directory_for_create("juju-machine-0").unwrap();
        let error = dirs.new_directory_for_create("juju-machine-0").unwrap_err();
        assert!(
            matches!(error, Error::AlreadyExists { ref name } if name == "juju-machine-0"),
            "{error}"
        );
        let entries = fs::read_dir(dirs.containers_root()).unwrap().count();
        assert_eq!(entries, 1, "the losing create left a temporary directory");
    }

    #[test]
    fn running_create_is_not_half_made() {
        let (_base, dirs) = dirs();
        let guard = dirs.new_directory_for_create("juju-machine-0").unwrap();
        assert!(dirs.half_made("juju-").unwrap().is_empty());
        drop(guard);
        let found = settled_half_made(&dirs, "juju-", 1);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "juju-machine-0");
    }

    #[test]
    fn created_container_is_not_half_made() {
        let (_base, dirs) = dirs();
        let guard = dirs.new_directory_for_create("juju-machine-0").unwrap();
        guard.mark_created().unwrap();
        drop(guard);
        assert!(dirs.is_created("juju-machine-0"));
        assert!(dirs.half_made("juju-").unwrap().is_empty());
    }

    #[test]
    fn half_made_keeps_to_prefix_and_skips_symlinks() {
        let (base, dirs) = dirs();
        drop(dirs.new_directory_for_create("juju-machine-0").unwrap());
        drop(dirs.new_directory_for_create("other-machine-0").unwrap());
        let outside = base.path().join("outside");
        fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, dirs.containers_root().join("juju-machine-9"))
            .unwrap();
        let names: Vec<String> = settled_half_made(&dirs, "juju-", 1)
            .into_iter()
            .map(|h| h.name)
            .collect();
        assert_eq!(names, vec!["juju-machine-0"]);
    }

    #[test]
    fn half_made_holds_lock_against_creates() {
        let (_base, dirs) = dirs();
        drop(dirs.new_directory_for_create("juju-machine-0").unwrap());
        let found = settled_half_made(&dirs, "juju-", 1);
        assert_eq!(found.len(), 1);
        let lock = dirs
            .containers_root()
            .join("juju-machine-0")
            .join(CREATE_LOCK_FILE);
        assert!(
            try_lock(&lock).unwrap().is_none(),
            "half_made returned without holding the lock"
        );
    }

    #[test]
    fn dead_temp_directory_removed() {
        let (_base, dirs) = dirs();
        fs::create_dir_all(dirs.containers_root()).unwrap();
        let temp = dirs.containers_root().join(".juju-machine-0.999999.0.new");
        fs::create_dir(&temp).unwrap();
        File::create(temp.join(CREATE_LOCK_FILE)).unwrap();
        assert!(dirs.half_made("juju-").unwrap().is_empty());
        assert!(!temp.exists());
    }
}
