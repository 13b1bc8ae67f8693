//! Tier 3, remote: a real VM on a second libvirtd reached through
//! `qemu+tcp://127.0.0.1:PORT/system`. The test starts that daemon in its
//! own mount namespace: tmpfs over libvirt's run, state, cache and log
//! folders, a private copy of /etc/libvirt, and its own virtlogd. It
//! listens on loopback only, without authentication, and the test stops
//! both daemons by PID at the end. Needs root;
//! the system libvirtd must be running too, to prove it never sees the VM.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use berth_core::{InstanceStatus, Manager, ManagerConfig, NetworkConfig};
use berth_virt::handle::Connection;
use berth_virt::{VirtInitialiser, VirtManager};
use common::real_host::*;
use common::*;

const PREFIX: &str = "berthremote";
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// A libvirtd and virtlogd in their own mount namespace; both are stopped
/// by PID when this is dropped.
struct SecondDaemon {
    shell: Child,
    pid_files: [PathBuf; 2],
    uri: String,
}

impl SecondDaemon {
    fn start(dir: &Path) -> Self {
        let launch = private_daemon::launch(dir);
        let daemon = Self {
            shell: launch.shell,
            pid_files: [launch.libvirtd_pid_file, launch.virtlogd_pid_file],
            uri: launch.uri,
        };
        let started = Instant::now();
        loop {
            if Connection::open(&daemon.uri).is_ok() {
                return daemon;
            }
            let stderr = std::fs::read_to_string(dir.join("libvirtd.stderr")).unwrap_or_default();
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the second libvirtd did not answer at {}: {stderr}",
                daemon.uri
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for SecondDaemon {
    fn drop(&mut self) {
        // libvirtd first, so that it stops using virtlogd; the shell reaps
        // both and then exits.
        for pid_file in &self.pid_files {
            if let Ok(text) = std::fs::read_to_string(pid_file)
                && let Ok(raw) = text.trim().parse::<i32>()
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(raw),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let _ = self.shell.wait();
    }
}

#[test]
fn remote_daemon_runs_vm() {
    let system = require_real_host();
    remove_leftovers(&system, PREFIX, REAL_POOL);
    let dir = tempfile::Builder::new()
        .prefix("berth-test-remote-")
        .tempdir()
        .unwrap();
    let boot = boot_files();
    let bridge = TestBridge::create("berthtbr3", 1500);
    let daemon = SecondDaemon::start(dir.path());

    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let config = ManagerConfig::new()
        .with("name", PREFIX)
        .with("uri", daemon.uri.as_str())
        .with("pool", "berth-remote")
        .with("pool-dir", "/var/lib/libvirt/images/berth-remote")
        .with("containers-dir", path("containers"))
        .with("removed-dir", path("removed"))
        .with("lock-dir", path("locks"))
        .with("image", base_image().to_str().unwrap())
        .with("kernel", boot.kernel.to_str().unwrap())
        .with("initrd", boot.initrd.to_str().unwrap())
        .with("cmdline", "console=ttyS0 panic=-1")
        // Nested KVM is broken on the hosts this runs on.
        .with("virt-type", "qemu");
    let report = VirtInitialiser::new(config.clone())
        .unwrap()
        .initialise_with_report()
        .unwrap();
    assert!(
        report.pool_defined,
        "the new daemon starts without the pool: {report:?}"
    );
    assert!(
        report.installed_packages.is_empty(),
        "a remote URI installs nothing locally"
    );
    let manager = VirtManager::new(config).unwrap();

    let network = NetworkConfig::bridge(&bridge.name).unwrap();
    let (instance, hardware) = manager
        .create_container(&machine("0"), "bookworm", &network)
        .unwrap();
    let name = "berthremote-machine-0";
    assert_eq!(instance.id.as_str(), name);
    assert_eq!(hardware.virt_type.as_deref(), Some("qemu"));

    let log = wait_for_console(
        &dir.path().join("containers").join(name).join("console.log"),
        &format!("{MARK} ready"),
        BOOT_TIMEOUT,
    );
    assert!(
        log.contains(&format!("{MARK} instance-id: {name}")),
        "{log}"
    );

    let listed = manager.list_containers().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, InstanceStatus::Running);
    assert!(
        system.lookup_domain_by_name(name).is_err(),
        "the system daemon must not see the remote VM"
    );

    manager.destroy_container(&instance.id).unwrap();
    assert!(manager.list_containers().unwrap().is_empty());
    manager.destroy_container(&instance.id).unwrap();
    drop(manager);
    drop(daemon);
}
