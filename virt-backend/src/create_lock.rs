//! The create lock seen from a destroy. A destroy of a VM first takes the
//! create lock of its container directory (see `berth_core::pending`). So
//! it waits while a create of the same name runs in any process, and then
//! finds either a finished VM or nothing of that create.

use std::fs::File;
use std::path::Path;

use berth_core::pending::CREATE_LOCK_FILE;
use berth_core::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::Mode;

/// The create lock of a container directory, as a destroy found it before
/// it started.
#[derive(Debug)]
pub(crate) struct CreateLock {
    /// The create lock, held until this is dropped, so that no create of
    /// this name runs meanwhile. `None` when the directory has no lock
    /// file, when a symlink or other file is in its place (never
    /// followed), or when there is no directory.
    _lock: Option<File>,
    /// Whether the directory, or something in its place, existed.
    pub(crate) directory_existed: bool,
}
/// Takes the create lock of the container directory `dir`, waiting while
/// a create of container `name` holds it.
pub(crate) fn wait_for_create(name: &str, dir: &Path) -> Result<CreateLock> {
    let directory = match open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => File::from(fd),
        Err(Errno::ENOENT) => return Ok(CreateLock::without_lock(false)),
        Err(Errno::ELOOP | Errno::ENOTDIR) => return Ok(CreateLock::without_lock(true)),
        Err(errno) => return Err(Error::io("open container directory", dir, errno.into())),
    };
    let lock_path = dir.join(CREATE_LOCK_FILE);
    let lock = match openat(
        &directory,
        CREATE_LOCK_FILE,
        OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => File::from(fd),
        Err(Errno::ENOENT | Errno::ELOOP) => return Ok(CreateLock::without_lock(true)),
        Err(errno) => return Err(Error::io("open create lock", lock_path, errno.into())),
    };
    if lock.try_lock().is_err() {
        tracing::info!(
            container = name,
            "waiting for the create of this VM to finish before destroying it"
        );
        lock.lock()
            .map_err(|error| Error::io("lock create lock", lock_path, error))?;
    }
    Ok(CreateLock {
        _lock: Some(lock),
        directory_existed: true,
    })
}

impl CreateLock {
    fn without_lock(directory_existed: bool) -> Self {
        Self {
            _lock: None,
            directory_existed,
        }
    }
}
