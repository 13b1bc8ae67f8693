//! Per-container directories: creation, removal into the removed root
//! under names that never clash, and symlinks that are never followed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use berth_core::{ContainerDirs, Error};

const NAME: &str = "berthtest-machine-0";

#[test]
fn new_directory_creates() {
    let base = tempfile::tempdir().unwrap();
    let dirs = ContainerDirs::under(base.path());
    let dir = dirs.new_directory(NAME).unwrap();
    assert_eq!(dir, base.path().join("containers").join(NAME));
    let metadata = std::fs::metadata(&dir).unwrap();
    assert!(metadata.is_dir());
    assert_eq!(
        metadata.permissions().mode() & 0o777,
        0o700 & !current_umask()
    );
}

#[test]
fn create_directory_is_private() {
    let base = tempfile::tempdir().unwrap();
    let dirs = ContainerDirs::under(base.path());
    let guard = dirs.new_directory_for_create(NAME).unwrap();
    let mode = std::fs::metadata(guard.dir()).unwrap().permissions().mode() & 0o777;
    // The cloud-init file inside holds the agent's password.
    assert_eq!(mode & 0o077, 0, "mode {mode:o} lets other users in");
}

/// Reads the umask from `/proc/self/status`, which, unlike `umask(2)`,
/// does not change it while other tests run.
fn current_umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("Umask:"))
        .expect("Umask line");
    u32::from_str_radix(line.trim(), 8).unwrap()
}

#[test]
fn second_create_already_exists() {
    let base = tempfile::tempdir().unwrap();
    let dirs = ContainerDirs::under(base.path());
    let dir = dirs.new_directory(NAME).unwrap();
    std::fs::write(dir.join("marker"), "first").unwrap();
    match dirs.new_directory(NAME) {
        Err(Error::AlreadyExists { name }) => assert_eq!(name, NAME),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("marker")).unwrap(),
        "first"
    );
}

#[test]
fn removals_get_numbered_names() {
    let base = tempfile::tempdir().unwrap();
    let dirs = ContainerDirs::under(base.path());
    let removed = base.path().join("removed-containers");
    let expected = [NAME.to_owned(), format!("{NAME}.1"), format!("{NAME}.2")];
    for (round, name) in expected.iter().enumerate() {
        let dir = dirs.new_directory(NAME).unwrap();
        std::fs::write(dir.join("round"), round.to_string()).unwrap();
        let target = dirs
            .remove_directory(NAME)
            .unwrap()
            .expect("directory moved");
        assert_eq!(target, removed.join(name));
        assert!(!dir.exists());
    }
    for (round, name) in expected.iter().enumerate() {
        assert_eq!(
            std::fs::read_to_string(removed.join(name).join("round")).unwrap(),
            round.to_string()
        );
    }
}

#[test]
fn missing_directory_returns_none() {
    let base = tempfile::tempdir().unwrap();
    let dirs = ContainerDirs::under(base.path());
    assert_eq!(dirs.remove_directory(NAME).unwrap(), None);
    assert!(!base.path().join("removed-containers").join(NAME).exists());
}

#[test]
fn racing_removals_lose_nothing() {
    const THREADS: usize = 16;
    let base = tempfile::tempdir().unwrap();
    let removed = base.path().join("removed");
    // Each thread has its own containers root holding a directory of the
    // same name, and all share one removed root, so every move competes
    // for the same target names.
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|thread| {
            let dirs =
                ContainerDirs::new(base.path().join(format!("containers-{thread}")), &removed);
            let dir = dirs.new_directory(NAME).unwrap();
            std::fs::write(dir.join("owner"), thread.to_string()).unwrap();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                dirs.remove_directory(NAME)
                    .unwrap()
                    .expect("directory moved")
            })
        })
        .collect();
    let mut targets: Vec<PathBuf> = handles
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .collect();
    targets.sort();
    targets.dedup();
    assert_eq!(targets.len(), THREADS, "two removals got the same target");

    let mut owners: Vec<usize> = targets
        .iter()
        .map(|target| {
            std::fs::read_to_string(target.join("owner"))
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    owners.sort();
    assert_eq!(
        owners,
        (0..THREADS).collect::<Vec<_>>(),
        "a directory was lost or overwritten"
    );
    assert_eq!(std::fs::read_dir(&removed).unwrap().count(), THREADS);
}

#[test]
fn symlinked_directory_moved_as_link() {
    let base = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("precious"), "keep me").unwrap();
    std::fs::create_dir(outside.path().join("sub")).unwrap();
    std::fs::write(outside.path().join("sub/also"), "keep me too").unwrap();

    let dirs = ContainerDirs::under(base.path());
    std::fs::create_dir_all(dirs.containers_root()).unwrap();
    let link = dirs.containers_root().join(NAME);
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();

    let target = dirs.remove_directory(NAME).unwrap().expect("link moved");
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "link still in the containers root"
    );
    let metadata = std::fs::symlink_metadata(&target).unwrap();
    assert!(
        metadata.file_type().is_symlink(),
        "the link's target was moved instead of the link"
    );
    assert_eq!(std::fs::read_link(&target).unwrap(), outside.path());

    assert_eq!(
        std::fs::read_to_string(outside.path().join("precious")).unwrap(),
        "keep me"
    );
    assert_eq!(
        std::fs::read_to_string(outside.path().join("sub/also")).unwrap(),
        "keep me too"
    );
    assert_eq!(entries(outside.path()), ["precious", "sub"]);
}

#[test]
fn hostile_names_rejected() {
    let base = tempfile::tempdir().unwrap();
    let dirs = ContainerDirs::under(base.path());
    for name in [
        "",
        ".",
        "..",
        "../escape",
        "a/b",
        "/etc",
        "Best_#1",
        "SWEET!",
        "almost_lions?",
        "x\n",
        "x\0",
        "-x",
        "x-",
    ] {
        let error = dirs.new_directory(name).unwrap_err();
        assert!(error.is_invalid_input(), "{name:?}: {error}");
        assert!(
            error.to_string().contains("container name"),
            "{name:?}: {error}"
        );
        let error = dirs.remove_directory(name).unwrap_err();
        assert!(error.is_invalid_input(), "{name:?}: {error}");
    }
    assert_eq!(
        entries(base.path()),
        Vec::<String>::new(),
        "something was created"
    );
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
