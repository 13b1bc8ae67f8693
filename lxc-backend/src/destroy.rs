//! Destroying a container: stop, destroy, move the directory aside.
//!
//! Destroy is idempotent. A container that does not exist is a success. A
//! container whose root file system is already gone is still removed,
//! because liblxc 5.0's destroy skips missing overlay layers and
//! directories. The per-container directory is moved with a rename that
//! never follows a symlink.
//!
//! A destroy first takes the create lock of the container directory (see
//! `berth_core::pending`). So it waits while a create of the same name runs
//! in any process, and then finds either a finished container or nothing.

use std::fs::{self, File};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_core::error::BoxError;
use berth_core::pending::CREATE_LOCK_FILE;
use berth_core::progress::Step;
use berth_core::{Error, InstanceId, InvalidValue, Result};
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

use crate::container::{Container, ContainerState};
use crate::create::remove_own_directory;
use crate::manager::LxcManager;

pub(crate) fn destroy(manager: &LxcManager, id: &InstanceId) -> Result<()> {
    let settings = &manager.settings;
    let name = id.as_str();
    if !berth_core::is_container_of(&settings.name, name) {
        return Err(InvalidValue::new(
            "container name",
            name,
            format!(
                "does not belong to manager {:?}: its containers are named {}-machine-<machine id with '/' as '-'>",
                settings.name, settings.name
            ),
        )
        .into());
    }
    let container_dir = settings.dirs.container_dir(name)?;
    let _create_lock = wait_for_create(name, &container_dir)?;
    destroy_locked(manager, name)
}

/// Destroys container `name`, whose create lock the caller holds or which
/// has no create lock.
pub(crate) fn destroy_locked(manager: &LxcManager, name: &str) -> Result<()> {
    let settings = &manager.settings;
    let started = Instant::now();
    let step = |step: Step| move |source: BoxError| Error::step(name, step, source);

    // liblxc opens the container's log file in the container directory
    // whenever it loads the configuration, and creates missing parent
    // directories on the way. A container directory that is a symlink is
    // moved aside first, so liblxc cannot write through it. A directory
    // that liblxc makes in its place is moved aside at the end.
    let container_dir = settings.dirs.container_dir(name)?;
    if fs::symlink_metadata(&container_dir).is_ok_and(|meta| !meta.is_dir()) {
        let moved = settings.dirs.remove_directory(name)?;
        tracing::warn!(container = name, moved_to = ?moved, "container directory is not a directory; moved it aside first");
    }

    let container = Container::new(name, &settings.lxc_path)
        .map_err(|error| Error::step(name, Step::Destroy, error))?;
    if container
        .is_defined()
        .map_err(|error| Error::step(name, Step::Destroy, error))?
    {
        stop(manager, &container).map_err(step(Step::Stop))?;
        let entry = settings.lxc_path.join(name);
        if fs::symlink_metadata(&entry).is_ok_and(|meta| !meta.is_dir()) {
            // liblxc would delete the target of the link: remove the link.
            tracing::warn!(container = name, path = %entry.display(), "container entry in the lxc path is not a directory; removing only the entry");
            fs::remove_file(&entry).map_err(|error| {
                Error::step(
                    name,
                    Step::Destroy,
                    Error::io("remove container entry", &entry, error),
                )
            })?;
        } else {
            unlink_storage_symlinks(&container, &settings.lxc_path).map_err(step(Step::Destroy))?;
            container
                .destroy()
                .map_err(|error| Error::step(name, Step::Destroy, error))?;
        }
    } else {
        // A directory without a configuration is what a crash in the middle
        // of liblxc's clone or destroy leaves.
        let leftover = settings.lxc_path.join(name);
        remove_own_directory(&leftover).map_err(|error| {
            Error::step(
                name,
                Step::Destroy,
                Error::io("remove leftover container directory", leftover, error),
            )
        })?;
    }
    drop(container);
    crate::container::remove_lock_file(&settings.lxc_path, name);

    let moved = settings.dirs.remove_directory(name)?;
    tracing::info!(
        container = name,
        moved_to = ?moved,
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        "container destroyed"
    );
    Ok(())
}

/// Removes each symlink found where liblxc's destroy deletes a
/// directory of the container (the root file system, the overlay
/// directories and the writable layer), so liblxc never deletes through
/// one. Fails, leaving everything, when the configured writable layer lies
/// outside the container's own directory in the lxc path.
fn unlink_storage_symlinks(container: &Container, lxc_path: &Path) -> Result<(), BoxError> {
    let own = lxc_path.join(container.name());
    let mut paths = vec![
        own.join("rootfs"),
        own.join("overlay"),
        own.join("overlay").join("delta"),
    ];
    let spec = container.get_config_item("lxc.rootfs.path")?;
    if spec.as_deref().is_some_and(|spec| spec.contains('/')) {
        let layer = crate::seed::writable_rootfs(container, lxc_path).map_err(|error| {
            format!("not destroying it, because liblxc would delete its root file system: {error}")
        })?;
        let mut path = own.clone();
        for part in layer
            .strip_prefix(&own)
            .unwrap_or(Path::new(""))
            .components()
        {
            path.push(part);
            paths.push(path.clone());
        }
    }
    for path in paths {
        if fs::symlink_metadata(&path).is_ok_and(|meta| meta.file_type().is_symlink()) {
            tracing::warn!(container = container.name(), path = %path.display(), "removing a symlink where the container's storage belongs");
            fs::remove_file(&path).map_err(|error| Error::io("remove symlink", &path, error))?;
        }
    }
    Ok(())
}

/// Takes the create lock of the container directory `dir`, waiting while a
/// create of the same name runs in any process, so that a destroy never
/// removes parts of a container under a running create. Returns `None`
/// when there is no lock to take: no directory, a symlink in its place
/// (never followed), or a directory without a lock file.
fn wait_for_create(name: &str, dir: &Path) -> Result<Option<File>> {
    let directory = match File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
    {
        Ok(directory) => directory,
        Err(error)
            if matches!(
                error.raw_os_error(),
                Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR)
            ) =>
        {
            return Ok(None);
        }
        Err(error) => return Err(Error::io("open container directory", dir, error)),
    };
    let lock_path = dir.join(CREATE_LOCK_FILE);
    let lock = match openat(
        &directory,
        CREATE_LOCK_FILE,
        OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => File::from(fd),
        Err(Errno::ENOENT | Errno::ELOOP) => return Ok(None),
        Err(errno) => {
            return Err(Error::io("open create lock", lock_path, errno.into()));
        }
    };
    if lock.try_lock().is_err() {
        tracing::info!(
            container = name,
            "waiting for the create of this container to finish before destroying it"
        );
        lock.lock()
            .map_err(|error| Error::io("lock create lock", lock_path, error))?;
    }
    Ok(Some(lock))
}

/// Interval at which the halt signal is sent again while a destroy waits
/// for a clean shutdown. The kernel drops a signal to the init of a PID
/// namespace that has no handler for it. A container counts as running as
/// soon as its init is executed, so a destroy right after a create can
/// send the first signal before init has installed its handler.
const HALT_SIGNAL_INTERVAL: Duration = Duration::from_millis(100);

/// Maximum pause between two state reads while waiting for a shutdown.
const MAX_POLL_PAUSE: Duration = Duration::from_millis(20);

/// Way in which [`stop`] stopped a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopOutcome {
    /// It was not running.
    NotRunning,
    /// Its init exited on the halt signal, sent `signals` times.
    Shutdown { signals: u32 },
    /// It was killed, after `signals` halt signals: the shutdown timeout
    /// is zero or passed, or the halt signal could not be sent.
    Killed { signals: u32 },
}

impl StopOutcome {
    /// Returns the value of the `stop` field of the "container stopped"
    /// event.
    fn field(self) -> &'static str {
        match self {
            Self::NotRunning => "not-running",
            Self::Shutdown { .. } => "shutdown",
            Self::Killed { .. } => "killed",
        }
    }
}

/// Stops the container and logs the way it stopped in the debug event
/// "container stopped" (field `stop`: `not-running`, `shutdown` or
/// `killed`).
fn stop(manager: &LxcManager, container: &Container) -> std::result::Result<(), BoxError> {
    let stopped = stop_container(manager, container)?;
    let signals = match stopped {
        StopOutcome::Shutdown { signals } | StopOutcome::Killed { signals } => signals,
        StopOutcome::NotRunning => 0,
    };
    tracing::debug!(
        container = container.name(),
        stop = stopped.field(),
        halt_signals = signals,
        "container stopped"
    );
    Ok(())
}

/// Sends the container's halt signal to its init, again every
/// [`HALT_SIGNAL_INTERVAL`], until the container stops or the shutdown
/// timeout passes, then kills it if it still runs.
fn stop_container(
    manager: &LxcManager,
    container: &Container,
) -> std::result::Result<StopOutcome, BoxError> {
    if container.state()? == ContainerState::Stopped {
        return Ok(StopOutcome::NotRunning);
    }
    let timeout = manager.settings.shutdown_timeout;
    let mut signals = 0;
    if !timeout.is_zero() {
        let deadline = Instant::now() + timeout;
        let mut last_signal = None::<Instant>;
        let mut pause = Duration::from_millis(1);
        loop {
            if last_signal.is_none_or(|sent| sent.elapsed() >= HALT_SIGNAL_INTERVAL) {
                // liblxc's shutdown with timeout 0 sends the halt signal
                // (lxc.signal.halt, SIGPWR by default) to init and returns.
                // Once init is gone it succeeds without sending anything.
                match container.request_shutdown() {
                    Ok(()) => signals += 1,
                    Err(error) if signals == 0 => {
                        tracing::debug!(container = container.name(), %error, "shutdown request failed, killing");
                        break;
                    }
                    Err(error) => {
                        tracing::debug!(container = container.name(), %error, "sending the halt signal again failed");
                    }
                }
                last_signal = Some(Instant::now());
            }
            if container.state()? == ContainerState::Stopped {
                return Ok(StopOutcome::Shutdown { signals });
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::debug!(
                    container = container.name(),
                    halt_signals = signals,
                    "clean shutdown timed out, killing"
                );
                break;
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(MAX_POLL_PAUSE);
        }
    }
    if container.state()? == ContainerState::Stopped {
        // It stopped after the last state read, so the halt signal or
        // something inside the container ended it, not a kill.
        return Ok(if signals > 0 {
            StopOutcome::Shutdown { signals }
        } else {
            StopOutcome::NotRunning
        });
    }
    container.stop()?;
    Ok(StopOutcome::Killed { signals })
}
