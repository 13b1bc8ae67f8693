//! Template containers: one per image, built once, cloned by every create.
//!
//! A template is built under an exclusive `flock` on its lock file, in a
//! directory with a temporary name, and renamed to its final name only when
//! its root file system and configuration are complete. The rename is
//! atomic and never replaces, so a reader sees either no template or a
//! whole one, and a template half-built by a process that died is never
//! used: the next builder, holding the lock, deletes it and starts over.
//! The kernel drops the lock of a process that dies.
//!
//! Template names start with `_`, which no container name can, so they
//! never collide with a manager's containers or show up in its list.
//!
//! A template's root file system is a plain directory, which overlay
//! snapshots and full copies start from, or a btrfs subvolume, which btrfs
//! snapshots start from. liblxc 5.0 can snapshot neither kind into the
//! other, so an image on a btrfs lxc path can have one template of each
//! kind, and the subvolume template's name ends in [`BTRFS_SUFFIX`].

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use berth_core::InvalidValue;
use berth_core::error::BoxError;
use berth_core::progress::Progress;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use nix::sys::statfs::{BTRFS_SUPER_MAGIC, statfs};

use crate::config::{BackingStore, KEY_BACKING_STORE};
use crate::container::{Container, clone_flags};
use crate::image::ResolvedImage;

/// Prefix of template container names.
pub const TEMPLATE_PREFIX: &str = "_berth-template-";
/// Prefix of templates being built.
pub const BUILDING_PREFIX: &str = "_berth-building-";
/// Directory of template lock files inside the lxc path.
pub const LOCK_DIR: &str = ".berth-locks";
/// Ending of the names of templates whose root file system is a btrfs
/// subvolume. Image slugs contain no `.`, so no slug ends in it.
pub const BTRFS_SUFFIX: &str = ".btrfs";

/// Kind of clone: the way a container's root file system is made from its
/// template's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneKind {
    /// An overlay snapshot of a directory template.
    Overlay,
    /// A btrfs snapshot of a subvolume template.
    Btrfs,
    /// A full copy of a directory template.
    Copy,
}

impl CloneKind {
    /// Returns whether the template of this kind of clone is a btrfs
    /// subvolume.
    pub fn needs_subvolume(self) -> bool {
        self == CloneKind::Btrfs
    }
}

/// Chooses the clone kind of the configured `requested` backing store for
/// an lxc path that is on btrfs or not. Rejects `btrfs` off btrfs.
pub fn choose_clone_kind(
    requested: BackingStore,
    lxc_path: &Path,
    on_btrfs: bool,
) -> Result<CloneKind, InvalidValue> {
    match (requested, on_btrfs) {
        (BackingStore::Auto, true) | (BackingStore::Btrfs, true) => Ok(CloneKind::Btrfs),
        (BackingStore::Auto, false) | (BackingStore::Overlay, _) => Ok(CloneKind::Overlay),
        (BackingStore::Copy, _) => Ok(CloneKind::Copy),
        (BackingStore::Btrfs, false) => Err(InvalidValue::new(
            KEY_BACKING_STORE,
            "btrfs",
            format!(
                "needs the lxc path on a btrfs file system, and {} is not on one; use 'auto', 'overlay' or 'copy'",
                lxc_path.display()
            ),
        )),
    }
}

/// Returns whether `path` is on a btrfs file system. A path that does not
/// exist yet is judged by its nearest existing ancestor, where it will be
/// created.
pub fn is_on_btrfs(path: &Path) -> io::Result<bool> {
    let mut candidate = path;
    loop {
        match statfs(candidate) {
            Ok(stats) => return Ok(stats.filesystem_type() == BTRFS_SUPER_MAGIC),
            Err(nix::errno::Errno::ENOENT) => match candidate.parent() {
                Some(parent) => candidate = parent,
                None => return Err(io::Error::from(nix::errno::Errno::ENOENT)),
            },
            Err(errno) => return Err(io::Error::from(errno)),
        }
    }
}

/// Chooses the clone kind of `requested` for `lxc_path`, looking up the
/// file system of the lxc path.
pub fn resolve_clone_kind(
    requested: BackingStore,
    lxc_path: &Path,
) -> berth_core::Result<CloneKind> {
    let on_btrfs = match requested {
        BackingStore::Auto | BackingStore::Btrfs => is_on_btrfs(lxc_path).map_err(|error| {
            berth_core::Error::io("look up the file system of", lxc_path, error)
        })?,
        BackingStore::Overlay | BackingStore::Copy => false,
    };
    Ok(choose_clone_kind(requested, lxc_path, on_btrfs)?)
}

/// Returns the name of the directory template of the image with `slug`.
pub fn template_name(slug: &str) -> String {
    format!("{TEMPLATE_PREFIX}{slug}")
}

/// Returns the name of the template of the image with `slug` that clones
/// of `kind` are made from.
pub fn template_name_for(slug: &str, kind: CloneKind) -> String {
    if kind.needs_subvolume() {
        format!("{TEMPLATE_PREFIX}{slug}{BTRFS_SUFFIX}")
    } else {
        template_name(slug)
    }
}

/// Returns true when `name` is a template's or a template in the making.
pub fn is_template_name(name: &str) -> bool {
    name.starts_with(TEMPLATE_PREFIX) || name.starts_with(BUILDING_PREFIX)
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BoxError {
    let path = path.to_owned();
    move |source| Box::new(berth_core::Error::io(action, path, source))
}

/// A held `flock` on a template's lock file, released on drop.
#[derive(Debug)]
pub struct TemplateLock {
    file: File,
}

impl Drop for TemplateLock {
    fn drop(&mut self) {
        // Unlock explicitly: a child that liblxc forked meanwhile may share
        // the open file description, and closing this descriptor alone would
        // leave the lock held until that child closes its copy.
        if let Err(error) = self.file.unlock() {
            tracing::warn!(%error, "could not release template lock");
        }
    }
}

/// Returns the lock file path of `template` in `lxc_path`.
pub fn lock_path(lxc_path: &Path, template: &str) -> PathBuf {
    lxc_path.join(LOCK_DIR).join(format!("{template}.lock"))
}

/// Takes the lock of `template`: exclusive to build it, shared to clone it.
pub fn lock_template(
    lxc_path: &Path,
    template: &str,
    exclusive: bool,
) -> Result<TemplateLock, BoxError> {
    let directory = lxc_path.join(LOCK_DIR);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&directory)
        .map_err(io_error("create lock directory", &directory))?;
    let path = lock_path(lxc_path, template);
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error("open template lock", &path))?;
    let locked = if exclusive {
        file.lock()
    } else {
        file.lock_shared()
    };
    locked.map_err(io_error("lock template", &path))?;
    Ok(TemplateLock { file })
}

fn template_exists(lxc_path: &Path, template: &str) -> bool {
    lxc_path.join(template).join("config").is_file()
}

static BUILD_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Returns the name of the template of `image` in `lxc_path` that clones
/// of `kind` are made from, building it first when it does not exist.
/// Returns whether this call built it.
pub fn ensure_template(
    lxc_path: &Path,
    image: &ResolvedImage,
    kind: CloneKind,
    progress: &dyn Progress,
) -> Result<(String, bool), BoxError> {
    ensure_template_checked(lxc_path, image, kind, progress, &|_| Ok(()))
}

/// Does what [`ensure_template`] does, and calls `before_publish` with the
/// temporary name of a template this call built, after the build and
/// before the rename that publishes it. An error from it fails the build,
/// which is then removed.
pub(crate) fn ensure_template_checked(
    lxc_path: &Path,
    image: &ResolvedImage,
    kind: CloneKind,
    progress: &dyn Progress,
    before_publish: &dyn Fn(&str) -> Result<(), BoxError>,
) -> Result<(String, bool), BoxError> {
    let template = template_name_for(&image.slug, kind);
    // The slug, with the ending of a subvolume template.
    let key = &template[TEMPLATE_PREFIX.len()..];
    if template_exists(lxc_path, &template) {
        return Ok((template, false));
    }
    let _lock = lock_template(lxc_path, &template, true)?;
    if template_exists(lxc_path, &template) {
        return Ok((template, false));
    }
    remove_stale_builds(lxc_path, key)?;

    let building = format!(
        "{BUILDING_PREFIX}{key}-{}-{}",
        std::process::id(),
        BUILD_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let build_dir = lxc_path.join(&building);
    let subvolume = kind.needs_subvolume();
    let result = build(lxc_path, &building, &template, image, subvolume, progress)
        .and_then(|()| before_publish(&building));
    crate::container::remove_lock_file(lxc_path, &building);
    if let Err(error) = result {
        if let Err(cleanup) = fs::remove_dir_all(&build_dir) {
            tracing::warn!(path = %build_dir.display(), error = %cleanup, "could not remove failed template build");
        }
        return Err(error);
    }
    let final_dir = lxc_path.join(&template);
    renameat2(
        AT_FDCWD,
        &build_dir,
        AT_FDCWD,
        &final_dir,
        RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(|errno| {
        let _ = fs::remove_dir_all(&build_dir);
        io_error("rename finished template to", &final_dir)(io::Error::from(errno))
    })?;
    tracing::info!(template = template.as_str(), lxc_path = %lxc_path.display(), "built template");
    Ok((template, true))
}

fn build(
    lxc_path: &Path,
    building: &str,
    template: &str,
    image: &ResolvedImage,
    subvolume: bool,
    progress: &dyn Progress,
) -> Result<(), BoxError> {
    let build_dir = lxc_path.join(building);
    let rootfs = build_dir.join("rootfs");
    fs::DirBuilder::new()
        .mode(0o770)
        .create(&build_dir)
        .map_err(io_error("create template directory", &build_dir))?;
    if subvolume {
        btrfs::create_subvolume(&build_dir, "rootfs")
            .map_err(io_error("create btrfs subvolume", &rootfs))?;
        fs::set_permissions(&rootfs, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(io_error("set the mode of", &rootfs))?;
    } else {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&rootfs)
            .map_err(io_error("create template rootfs", &rootfs))?;
    }
    image.unpack(&rootfs, progress)?;

    // The configuration already names the final directory, so the rename
    // that publishes the template leaves it correct. With the `btrfs`
    // storage type, liblxc snapshots the subvolume with btrfs ioctls.
    let final_rootfs = lxc_path.join(template).join("rootfs");
    let storage = if subvolume { "btrfs" } else { "dir" };
    let container = Container::new(building, lxc_path)?;
    container.set_config_item(
        "lxc.rootfs.path",
        &format!("{storage}:{}", final_rootfs.display()),
    )?;
    container.set_config_item("lxc.uts.name", template)?;
    container.save_config(None)?;
    Ok(())
}

/// Deletes builds of the template with `key` (its name without
/// [`TEMPLATE_PREFIX`]) that a process left behind when it died, with
/// liblxc's lock files of them. Call only while holding the template's
/// exclusive lock, which every builder of that template holds. A subvolume
/// in a build goes with the rest, because the kernel (4.18 and later) lets
/// root remove an empty subvolume with rmdir.
fn remove_stale_builds(lxc_path: &Path, key: &str) -> Result<(), BoxError> {
    let prefix = format!("{BUILDING_PREFIX}{key}-");
    let entries = match fs::read_dir(lxc_path) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(lxc_path).map_err(io_error("create lxc path", lxc_path))?;
            return Ok(());
        }
        Err(error) => return Err(io_error("read lxc path", lxc_path)(error)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_directory = entry.file_type().is_ok_and(|kind| kind.is_dir());
        if name.starts_with(&prefix) && is_directory {
            tracing::warn!(path = %entry.path().display(), "removing template build left by a process that died");
            fs::remove_dir_all(entry.path())
                .map_err(io_error("remove stale template build", &entry.path()))?;
            // The dead builder could not remove liblxc's lock file of it.
            crate::container::remove_lock_file(lxc_path, name);
        }
    }
    Ok(())
}

/// Deletes every template build in `lxc_path` whose builder died, of any
/// image, and returns the names of the templates whose builds went. A build
/// whose template lock is held belongs to a live builder and is left alone.
pub fn remove_dead_builds(lxc_path: &Path) -> Result<Vec<String>, BoxError> {
    let entries = match fs::read_dir(lxc_path) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error("read lxc path", lxc_path)(error)),
    };
    let mut keys: Vec<String> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_owned();
            // A build is named <prefix><key>-<pid>-<counter>.
            let rest = name.strip_prefix(BUILDING_PREFIX)?;
            let mut parts = rest.rsplitn(3, '-');
            let (_counter, _pid, key) = (parts.next()?, parts.next()?, parts.next()?);
            Some(key.to_owned())
        })
        .collect();
    keys.sort();
    keys.dedup();

    let mut removed = Vec::new();
    for key in keys {
        let template = format!("{TEMPLATE_PREFIX}{key}");
        let path = lock_path(lxc_path, &template);
        let Ok(file) = File::options().read(true).write(true).open(&path) else {
            // No lock file: no builder ever locked it, so none is alive.
            remove_stale_builds(lxc_path, &key)?;
            removed.push(template);
            continue;
        };
        match file.try_lock() {
            Ok(()) => {
                remove_stale_builds(lxc_path, &key)?;
                removed.push(template);
            }
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(error)) => {
                return Err(io_error("lock template", &path)(error));
            }
        }
    }
    Ok(removed)
}

/// Clones `template` into container `name` while holding the template's
/// shared lock, so no builder can be replacing it meanwhile. The lock is
/// released when the clone exists; starting it needs no lock.
///
/// With `snapshot`, the clone is a btrfs snapshot of a template whose root
/// file system is a btrfs subvolume, and an overlay snapshot of any other.
/// Without it, the clone is a full copy in a directory.
pub fn clone_template(
    lxc_path: &Path,
    template: &str,
    name: &str,
    snapshot: bool,
) -> Result<Container, BoxError> {
    let _lock = lock_template(lxc_path, template, false)?;
    let source = Container::new(template, lxc_path)?;
    let flags = clone_flags::KEEP_NAME | clone_flags::KEEP_MAC_ADDRESS;
    let clone = if snapshot {
        // liblxc returns lxc.rootfs.path without its storage type from a
        // loaded configuration, so the clone takes the template's kind from
        // its name.
        let store = if template.ends_with(BTRFS_SUFFIX) {
            "btrfs"
        } else {
            "overlay"
        };
        tracing::debug!(
            container = name,
            template,
            store,
            "cloning template as a snapshot"
        );
        source.clone_to(name, lxc_path, flags | clone_flags::SNAPSHOT, Some(store))?
    } else {
        // NOTE: liblxc copies a directory-backed root file system with
        // rsync, so the full-copy fallback runs that tool.
        source.clone_to(name, lxc_path, flags, Some("dir"))?
    };
    Ok(clone)
}

/// The one btrfs ioctl berth makes itself: creating a subvolume.
mod btrfs {
    use std::ffi::CString;
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;
    use std::path::Path;

    /// `BTRFS_PATH_NAME_MAX` of the kernel's btrfs ioctl interface.
    const PATH_NAME_MAX: usize = 4087;

    /// `struct btrfs_ioctl_vol_args` of `linux/btrfs.h`.
    #[repr(C)]
    struct VolumeArgs {
        fd: i64,
        name: [u8; PATH_NAME_MAX + 1],
    }

    /// `BTRFS_IOC_SUBVOL_CREATE`: `_IOW(0x94, 14, struct btrfs_ioctl_vol_args)`.
    const IOC_SUBVOL_CREATE: u64 =
        (1 << 30) | ((std::mem::size_of::<VolumeArgs>() as u64) << 16) | (0x94 << 8) | 14;

    /// Creates the subvolume `name` in `parent`, an existing directory on
    /// btrfs. Fails when `parent` is not on btrfs or `name` exists.
    pub(super) fn create_subvolume(parent: &Path, name: &str) -> io::Result<()> {
        let name = CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
        let bytes = name.as_bytes_with_nul();
        if bytes.len() > PATH_NAME_MAX || bytes.contains(&b'/') {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let directory = File::open(parent)?;
        let mut args = VolumeArgs {
            fd: 0,
            name: [0; PATH_NAME_MAX + 1],
        };
        args.name[..bytes.len()].copy_from_slice(bytes);
        // SAFETY: the descriptor is open for the whole call, and `args` is a
        // live, initialised `btrfs_ioctl_vol_args` whose name is
        // NUL-terminated within its array, which is all the kernel reads.
        let result = unsafe {
            libc::ioctl(
                directory.as_raw_fd(),
                IOC_SUBVOL_CREATE as libc::Ioctl,
                &mut args as *mut VolumeArgs,
            )
        };
        if result < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LXC_PATH: &str = "/srv/lxc";

    fn choose(requested: BackingStore, on_btrfs: bool) -> Result<CloneKind, InvalidValue> {
        choose_clone_kind(requested, Path::new(LXC_PATH), on_btrfs)
    }

    #[test]
    fn auto_picks_btrfs_on_btrfs() {
        assert_eq!(choose(BackingStore::Auto, true).unwrap(), CloneKind::Btrfs);
    }

    #[test]
    fn auto_picks_overlay_elsewhere() {
        assert_eq!(
            choose(BackingStore::Auto, false).unwrap(),
            CloneKind::Overlay
        );
    }

    #[test]
    fn explicit_stores_kept() {
        for on_btrfs in [false, true] {
            assert_eq!(
                choose(BackingStore::Overlay, on_btrfs).unwrap(),
                CloneKind::Overlay
            );
            assert_eq!(
                choose(BackingStore::Copy, on_btrfs).unwrap(),
                CloneKind::Copy
            );
        }
        assert_eq!(choose(BackingStore::Btrfs, true).unwrap(), CloneKind::Btrfs);
    }

    #[test]
    fn btrfs_off_btrfs_rejected() {
        let problem = choose(BackingStore::Btrfs, false).unwrap_err();
        assert_eq!(problem.field, KEY_BACKING_STORE);
        let message = problem.to_string();
        assert!(message.contains(LXC_PATH), "{message}");
        assert!(message.contains("not on one"), "{message}");
    }

    #[test]
    fn missing_path_judged_by_ancestor() {
        let root = Path::new("/");
        let below = Path::new("/berth-no-such-directory/lxc");
        assert_eq!(is_on_btrfs(below).unwrap(), is_on_btrfs(root).unwrap());
    }

    #[test]
    fn subvolume_template_named_apart() {
        let slug = "busybox-0123abcd";
        assert_eq!(
            template_name_for(slug, CloneKind::Overlay),
            template_name(slug)
        );
        assert_eq!(
            template_name_for(slug, CloneKind::Copy),
            template_name(slug)
        );
        let btrfs = template_name_for(slug, CloneKind::Btrfs);
        assert_eq!(btrfs, format!("{TEMPLATE_PREFIX}{slug}{BTRFS_SUFFIX}"));
        assert!(is_template_name(&btrfs));
    }
}
