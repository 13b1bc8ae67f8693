//! `write_cloud_init_file`: mode, content and atomic replacement.
//!
//! The umask is process-wide, so these tests live in their own test binary
//! and each sets the restrictive umask 077 first.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use berth_core::write_cloud_init_file;
use nix::sys::stat::{Mode, umask};

fn restrictive_umask() {
    umask(Mode::from_bits_truncate(0o077));
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn mode_0644_despite_umask() {
    restrictive_umask();
    let dir = tempfile::tempdir().unwrap();
    let path = write_cloud_init_file(dir.path(), b"#cloud-config\n").unwrap();
    assert_eq!(path, dir.path().join("cloud-init"));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o644
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"#cloud-config\n");
    assert_eq!(
        entries(dir.path()),
        ["cloud-init"],
        "a temporary file was left"
    );
}

#[test]
fn replaces_existing_file() {
    restrictive_umask();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloud-init");
    std::fs::write(&path, "old").unwrap();
    std::fs::set_permissions(&path, PermissionsExt::from_mode(0o600)).unwrap();
    let old_inode = std::fs::metadata(&path).unwrap().ino();

    write_cloud_init_file(dir.path(), b"new content").unwrap();
    let metadata = std::fs::metadata(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new content");
    assert_eq!(metadata.permissions().mode() & 0o7777, 0o644);
    // A new inode shows the file was renamed into place, not rewritten.
    assert_ne!(metadata.ino(), old_inode);
    assert_eq!(entries(dir.path()), ["cloud-init"]);
}

#[test]
fn reader_never_sees_partial_file() {
    restrictive_umask();
    let dir = tempfile::tempdir().unwrap();
    let old = vec![b'a'; 1 << 20];
    let new = vec![b'b'; 1 << 20];
    write_cloud_init_file(dir.path(), &old).unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let done = Arc::clone(&done);
        let path = dir.path().join("cloud-init");
        let (old, new) = (old.clone(), new.clone());
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !done.load(Ordering::Relaxed) || reads == 0 {
                let data = std::fs::read(&path).unwrap();
                assert!(
                    data == old || data == new,
                    "read {} bytes of a partial file",
                    data.len()
                );
                reads += 1;
            }
        })
    };
    for round in 0..20 {
        write_cloud_init_file(dir.path(), if round % 2 == 0 { &new } else { &old }).unwrap();
    }
    done.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert_eq!(entries(dir.path()), ["cloud-init"]);
}

#[test]
fn concurrent_writes_all_succeed() {
    restrictive_umask();
    let dir = tempfile::tempdir().unwrap();
    let contents: Vec<Vec<u8>> = (0..8)
        .map(|i| format!("writer {i}\n").into_bytes())
        .collect();
    std::thread::scope(|scope| {
        for content in &contents {
            let dir = dir.path();
            scope.spawn(move || write_cloud_init_file(dir, content).unwrap());
        }
    });
    let data = std::fs::read(dir.path().join("cloud-init")).unwrap();
    assert!(
        contents.contains(&data),
        "{}",
        String::from_utf8_lossy(&data)
    );
    assert_eq!(entries(dir.path()), ["cloud-init"]);
}

#[test]
fn missing_directory_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent");
    let error = write_cloud_init_file(&missing, b"x").unwrap_err();
    assert!(
        error.to_string().contains("write cloud-init file"),
        "{error}"
    );
    assert!(error.to_string().contains("absent/cloud-init"), "{error}");
    assert!(!missing.exists());
}
