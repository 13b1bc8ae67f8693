//! A btrfs file system on a loop file, mounted as a test's lxc path.
//!
//! The image file lives beside the test's base directory
//! (`berth-lxc-test-<tag>.btrfs.img` in the temporary directory), so it
//! carries the test prefix and survives the removal of the base directory.
//! [`remove_leftovers`] must run before `TestEnv::new`, because that
//! removes the base directory and would recurse into a mount left there.

#![allow(dead_code)]

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_lxc::container::{Container, ContainerState, ListKind, list_containers};

/// Size of the loop file: above mkfs.btrfs's minimum of about 114 MiB.
const IMAGE_SIZE: u64 = 320 << 20;

/// Returns the loop file of the test with `tag`.
pub fn image_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("berth-lxc-test-{tag}.btrfs.img"))
}

/// Returns the mount point of the test with `tag`: the lxc path of its
/// `TestEnv`.
pub fn mount_point(tag: &str) -> PathBuf {
    std::env::temp_dir()
        .join(format!("berth-lxc-test-{tag}"))
        .join("lxc")
}

/// Runs `program` with `args` and returns its standard output. Panics with
/// its error output when it fails, and names `package` when it is missing.
fn run(program: &str, args: &[&str], package: &str) -> String {
    let output = match Command::new(program).args(args).output() {
        Ok(output) => output,
        Err(error) if error.kind() == ErrorKind::NotFound => {
            panic!("{program} is missing: apt-get install {package}")
        }
        Err(error) => panic!("run {program}: {error}"),
    };
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Returns whether `path` is a mount point, from /proc/self/mountinfo.
pub fn is_mount_point(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let expected = path.to_str().unwrap();
    mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| mount_point == expected)
}

/// Returns the loop devices whose backing file is `image`.
fn loop_devices_of(image: &Path) -> Vec<String> {
    let listing = run(
        "losetup",
        &[
            "--noheadings",
            "--output",
            "NAME",
            "-j",
            image.to_str().unwrap(),
        ],
        "mount",
    );
    listing
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Stops and destroys every container in `lxc_path`, clones before
/// templates, so that liblxc removes their subvolumes.
fn destroy_containers(lxc_path: &Path) {
    let names = list_containers(lxc_path, ListKind::All).unwrap_or_default();
    let (templates, clones): (Vec<String>, Vec<String>) =
        names.into_iter().partition(|name| name.starts_with('_'));
    for name in clones.into_iter().chain(templates) {
        if let Ok(container) = Container::new(&name, lxc_path) {
            if container
                .state()
                .is_ok_and(|state| state != ContainerState::Stopped)
            {
                let _ = container.stop();
            }
            let _ = container.destroy();
        }
    }
}

/// Removes what a crashed run of the test with `tag` left: its containers
/// on the btrfs mount, the mount, the loop devices and the image file.
pub fn remove_leftovers(tag: &str) {
    let mount_point = mount_point(tag);
    if is_mount_point(&mount_point) {
        destroy_containers(&mount_point);
        run("umount", &[mount_point.to_str().unwrap()], "mount");
    }
    let image = image_path(tag);
    if image.exists() {
        for device in loop_devices_of(&image) {
            run("losetup", &["-d", &device], "mount");
        }
        std::fs::remove_file(&image).unwrap();
    }
}

/// A btrfs file system on a loop device, mounted at a test's lxc path.
/// Dropping it unmounts it and removes the loop device and image file.
pub struct BtrfsMount {
    /// The loop file.
    pub image: PathBuf,
    /// The loop device (`/dev/loopN`).
    pub device: String,
    /// Where the file system is mounted.
    pub mount_point: PathBuf,
}

impl BtrfsMount {
    /// Makes a btrfs file system on a new loop file and mounts it at the
    /// lxc path of the test with `tag`, which must exist and be empty.
    pub fn new(tag: &str) -> Self {
        let image = image_path(tag);
        let mount_point = mount_point(tag);
        assert!(
            mount_point.is_dir(),
            "mount point {} must exist",
            mount_point.display()
        );
        let file = std::fs::File::create_new(&image)
            .unwrap_or_else(|error| panic!("create {}: {error}", image.display()));
        file.set_len(IMAGE_SIZE).unwrap();
        drop(file);

        run(
            "mkfs.btrfs",
            &["--quiet", image.to_str().unwrap()],
            "btrfs-progs",
        );
        let device = run(
            "losetup",
            &["--find", "--show", image.to_str().unwrap()],
            "mount",
        )
        .trim()
        .to_owned();

        let mount = Self {
            image,
            device,
            mount_point,
        };
        run(
            "mount",
            &[
                "-t",
                "btrfs",
                &mount.device,
                mount.mount_point.to_str().unwrap(),
            ],
            "mount",
        );
        mount
    }
}

impl Drop for BtrfsMount {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Left for the next run's remove_leftovers, like the rest of a
            // failed test's objects.
            return;
        }
        run("umount", &[self.mount_point.to_str().unwrap()], "mount");
        run("losetup", &["-d", &self.device], "mount");
        std::fs::remove_file(&self.image).unwrap();
    }
}

/// The fields of `btrfs subvolume show PATH` that identify a subvolume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubvolumeInfo {
    /// The subvolume's UUID.
    pub uuid: String,
    /// The UUID of the subvolume it is a snapshot of, if any.
    pub parent_uuid: Option<String>,
}

/// Returns the identity of the subvolume at `path`. Panics when `path` is
/// not a subvolume.
pub fn subvolume_show(path: &Path) -> SubvolumeInfo {
    let text = run(
        "btrfs",
        &["subvolume", "show", path.to_str().unwrap()],
        "btrfs-progs",
    );
    let field = |name: &str| {
        text.lines()
            .filter_map(|line| line.trim().split_once(':'))
            .find(|(key, _)| key.trim() == name)
            .map(|(_, value)| value.trim().to_owned())
    };
    let uuid = field("UUID").unwrap_or_else(|| panic!("no UUID in:\n{text}"));
    let parent_uuid = field("Parent UUID").filter(|value| value != "-");
    SubvolumeInfo { uuid, parent_uuid }
}

/// Returns the paths, relative to the top of the file system at
/// `mount_point`, of every subvolume in it, sorted.
pub fn subvolume_paths(mount_point: &Path) -> Vec<String> {
    let text = run(
        "btrfs",
        &["subvolume", "list", mount_point.to_str().unwrap()],
        "btrfs-progs",
    );
    let mut paths: Vec<String> = text
        .lines()
        .filter_map(|line| line.split(" path ").nth(1))
        .map(str::to_owned)
        .collect();
    paths.sort();
    paths
}
