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

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use berth_core::error::BoxError;
use berth_core::progress::Progress;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

use crate::container::{Container, clone_flags};
use crate::image::ResolvedImage;

/// Prefix of template container names.
pub const TEMPLATE_PREFIX: &str = "_berth-template-";
/// Prefix of templates being built.
pub const BUILDING_PREFIX: &str = "_berth-building-";
/// Directory of template lock files inside the lxc path.
pub const LOCK_DIR: &str = ".berth-locks";

/// Returns the name of the template of the image with `slug`.
pub fn template_name(slug: &str) -> String {
    format!("{TEMPLATE_PREFIX}{slug}")
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

/// Returns the name of the template of `image` in `lxc_path`, building it
/// first when it does not exist. Returns whether this call built it.
pub fn ensure_template(
    lxc_path: &Path,
    image: &ResolvedImage,
    progress: &dyn Progress,
) -> Result<(String, bool), BoxError> {
    ensure_template_checked(lxc_path, image, progress, &|_| Ok(()))
}

/// Does what [`ensure_template`] does, and calls `before_publish` with the
/// temporary name of a template this call built, after the build and
/// before the rename that publishes it. An error from it fails the build,
/// which is then removed.
pub(crate) fn ensure_template_checked(
    lxc_path: &Path,
    image: &ResolvedImage,
    progress: &dyn Progress,
    before_publish: &dyn Fn(&str) -> Result<(), BoxError>,
) -> Result<(String, bool), BoxError> {
    let template = template_name(&image.slug);
    if template_exists(lxc_path, &template) {
        return Ok((template, false));
    }
    let _lock = lock_template(lxc_path, &template, true)?;
    if template_exists(lxc_path, &template) {
        return Ok((template, false));
    }
    remove_stale_builds(lxc_path, &image.slug)?;

    let building = format!(
        "{BUILDING_PREFIX}{}-{}-{}",
        image.slug,
        std::process::id(),
        BUILD_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let build_dir = lxc_path.join(&building);
    let result = build(lxc_path, &building, &template, image, progress)
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
    progress: &dyn Progress,
) -> Result<(), BoxError> {
    let build_dir = lxc_path.join(building);
    let rootfs = build_dir.join("rootfs");
    fs::DirBuilder::new()
        .mode(0o770)
        .create(&build_dir)
        .map_err(io_error("create template directory", &build_dir))?;
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&rootfs)
        .map_err(io_error("create template rootfs", &rootfs))?;
    image.unpack(&rootfs, progress)?;

    // The configuration already names the final directory, so the rename
    // that publishes the template leaves it correct.
    let final_rootfs = lxc_path.join(template).join("rootfs");
    let container = Container::new(building, lxc_path)?;
    container.set_config_item(
        "lxc.rootfs.path",
        &format!("dir:{}", final_rootfs.display()),
    )?;
    container.set_config_item("lxc.uts.name", template)?;
    container.save_config(None)?;
    Ok(())
}

/// Deletes template builds of `slug` that a process left behind when it
/// died, with liblxc's lock files of them. Call only while holding the template's exclusive lock, which
/// every builder of that slug holds.
fn remove_stale_builds(lxc_path: &Path, slug: &str) -> Result<(), BoxError> {
    let prefix = format!("{BUILDING_PREFIX}{slug}-");
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

/// Clones `template` into container `name` while holding the template's
/// shared lock, so no builder can be replacing it meanwhile. The lock is
/// released when the clone exists; starting it needs no lock.
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
        source.clone_to(
            name,
            lxc_path,
            flags | clone_flags::SNAPSHOT,
            Some("overlay"),
        )?
    } else {
        // NOTE: liblxc copies a directory-backed root file system with
        // rsync, so the full-copy fallback runs that tool.
        source.clone_to(name, lxc_path, flags, Some("dir"))?
    };
    Ok(clone)
}
