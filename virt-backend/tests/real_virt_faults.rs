//! Tier 3, daemon faults: a VirtManager whose libvirtd is killed with
//! SIGKILL while a VM runs, and started again.
//!
//! The test runs its own libvirtd and virtlogd in a private mount namespace
//! (tmpfs over libvirt's run, state, cache and log folders, a private copy
//! of /etc/libvirt), listening on `qemu+tcp://127.0.0.1:PORT/system`
//! without authentication. It kills and restarts only that libvirtd, by
//! PID, never the system daemon. While the daemon is down, list, create and
//! destroy must fail with errors that name the URI. After the restart the
//! same manager reconnects by itself: list shows the VM, which QEMU kept
//! running, and destroy and create work. Needs root.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_core::error::error_chain;
use berth_core::{InstanceStatus, Manager, ManagerConfig, NetworkConfig};
use berth_virt::handle::{Connection, DomainHandle};
use berth_virt::{VirtInitialiser, VirtManager};
use common::real_host::*;
use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const PREFIX: &str = "berthfault";
const BRIDGE: &str = "berthtbr6";
const DAEMON_TIMEOUT: Duration = Duration::from_secs(30);

/// A libvirtd and virtlogd in their own mount namespace. The namespace
/// lives as long as the shell that made it, which waits for virtlogd, so
/// libvirtd can be killed and started again inside it. Every process is
/// stopped by PID when this is dropped.
struct PrivateDaemon {
    dir: PathBuf,
    shell: Child,
    conf: PathBuf,
    virtlogd_pid_file: PathBuf,
    /// The first libvirtd, a child of the shell.
    first_libvirtd_pid_file: PathBuf,
    /// A libvirtd started again by the test, inside the namespace.
    restarted: Option<Child>,
    uri: String,
}

impl PrivateDaemon {
    fn start(dir: &Path) -> Self {
        let launch = private_daemon::launch(dir);
        let daemon = Self {
            dir: dir.to_owned(),
            shell: launch.shell,
            conf: launch.conf,
            virtlogd_pid_file: launch.virtlogd_pid_file,
            first_libvirtd_pid_file: launch.libvirtd_pid_file,
            restarted: None,
            uri: launch.uri,
        };
        daemon.wait_until_answering();
        daemon
    }

    fn wait_until_answering(&self) {
        let started = Instant::now();
        while Connection::open(&self.uri).is_err() {
            let stderr =
                std::fs::read_to_string(self.dir.join("libvirtd.stderr")).unwrap_or_default();
            assert!(
                started.elapsed() < DAEMON_TIMEOUT,
                "the private libvirtd did not answer at {}: {stderr}",
                self.uri
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Returns the PID of the running libvirtd.
    fn libvirtd_pid(&self) -> Pid {
        match &self.restarted {
            Some(child) => Pid::from_raw(child.id() as i32),
            None => read_pid(&self.first_libvirtd_pid_file).expect("the shell wrote the PID"),
        }
    }

    /// Kills libvirtd with SIGKILL and waits until its port refuses
    /// connections.
    fn kill_libvirtd(&mut self) {
        let pid = self.libvirtd_pid();
        kill(pid, Signal::SIGKILL).unwrap();
        if let Some(mut child) = self.restarted.take() {
            child.wait().unwrap();
        }
        let started = Instant::now();
        while Connection::open(&self.uri).is_ok() {
            assert!(
                started.elapsed() < DAEMON_TIMEOUT,
                "{} still answers after SIGKILL to libvirtd {pid}",
                self.uri
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts libvirtd again inside the shell's mount namespace, where the
    /// state of the killed one (running domains, pools) still is.
    fn restart_libvirtd(&mut self) {
        assert!(self.restarted.is_none(), "libvirtd runs already");
        let child = Command::new("nsenter")
            .arg("-t")
            .arg(self.shell.id().to_string())
            .arg("-m")
            .arg("--")
            .args(["libvirtd", "--listen", "-f"])
            .arg(&self.conf)
            .args(["-p", "/run/libvirt/libvirtd.pid"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.join("libvirtd-restarted.stderr")).unwrap(),
            ))
            .spawn()
            .expect("cannot run nsenter (util-linux)");
        self.restarted = Some(child);
        self.wait_until_answering();
    }
}

fn read_pid(path: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse::<i32>().ok().map(Pid::from_raw)
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        // A failed test can leave a VM running; its QEMU process would
        // outlive the daemon, so destroy every test domain first.
        if let Ok(connection) = Connection::open(&self.uri)
            && let Ok(domains) = connection.list_all_domains(0)
        {
            for domain in domains.into_iter().map(DomainHandle::new) {
                if domain.name().is_ok_and(|name| name.starts_with(PREFIX)) {
                    let _ = domain.destroy();
                }
            }
        }
        // libvirtd first, so that it stops using virtlogd; the shell reaps
        // its children and then exits.
        if let Some(mut child) = self.restarted.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let _ = child.wait();
        } else if let Some(pid) = read_pid(&self.first_libvirtd_pid_file) {
            let _ = kill(pid, Signal::SIGTERM);
        }
        if let Some(pid) = read_pid(&self.virtlogd_pid_file) {
            let _ = kill(pid, Signal::SIGTERM);
        }
        let _ = self.shell.wait();
    }
}

/// Asserts that `result` failed with an error whose chain names `uri`.
fn assert_names_uri<T: std::fmt::Debug>(what: &str, result: berth_core::Result<T>, uri: &str) {
    let error = result.expect_err(&format!("{what} succeeded while libvirtd was down"));
    let chain = error_chain(&error);
    assert!(
        chain.contains(uri),
        "the error of {what} does not name {uri}: {chain}"
    );
}

#[test]
fn manager_survives_libvirtd_restart() {
    let _system = require_real_host();
    let dir = tempfile::Builder::new()
        .prefix("berth-test-faults-")
        .tempdir()
        .unwrap();
    let boot = boot_files();
    let bridge = TestBridge::create(BRIDGE, 1500);
    // The daemon's state is on tmpfs, so nothing of an earlier run is left
    // in it; the container directories are in this run's temporary folder.
    let mut daemon = PrivateDaemon::start(dir.path());
    let uri = daemon.uri.clone();

    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let config = ManagerConfig::new()
        .with("name", PREFIX)
        .with("uri", uri.as_str())
        .with("pool", "berth-fault")
        .with("pool-dir", "/var/lib/libvirt/images/berth-fault")
        .with("containers-dir", path("containers"))
        .with("removed-dir", path("removed"))
        .with("lock-dir", path("locks"))
        .with("image", base_image().to_str().unwrap())
        .with("kernel", boot.kernel.to_str().unwrap())
        .with("initrd", boot.initrd.to_str().unwrap())
        .with("cmdline", "console=ttyS0 panic=-1")
        // Nested KVM is broken on the hosts this runs on.
        .with("virt-type", "qemu");
    VirtInitialiser::new(config.clone())
        .unwrap()
        .initialise_with_report()
        .unwrap();
    let manager = VirtManager::new(config).unwrap();
    let network = NetworkConfig::bridge(&bridge.name).unwrap();

    let (first, _) = manager
        .create_container(&machine("0"), "bookworm", &network)
        .unwrap();
    let listed = manager.list_containers().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, InstanceStatus::Running);

    daemon.kill_libvirtd();

    // The first call finds the connection lost; the later ones find it
    // closed and fail to reopen it. Every error names the URI.
    assert_names_uri("list", manager.list_containers(), &uri);
    assert_names_uri("list again", manager.list_containers(), &uri);
    assert_names_uri(
        "create",
        manager.create_container(&machine("1"), "bookworm", &network),
        &uri,
    );
    assert_names_uri("destroy", manager.destroy_container(&first.id), &uri);

    daemon.restart_libvirtd();

    // The same manager reopens its connection. QEMU kept the VM running
    // while libvirtd was gone, and the new libvirtd found it again.
    let listed = manager.list_containers().unwrap();
    let ids: Vec<&str> = listed.iter().map(|instance| instance.id.as_str()).collect();
    assert_eq!(ids, [first.id.as_str()]);
    assert_eq!(listed[0].status, InstanceStatus::Running);

    let (second, _) = manager
        .create_container(&machine("1"), "bookworm", &network)
        .unwrap();
    assert_eq!(manager.list_containers().unwrap().len(), 2);

    manager.destroy_container(&first.id).unwrap();
    let listed = manager.list_containers().unwrap();
    let ids: Vec<&str> = listed.iter().map(|instance| instance.id.as_str()).collect();
    assert_eq!(ids, [second.id.as_str()]);
    manager.destroy_container(&second.id).unwrap();
    assert!(manager.list_containers().unwrap().is_empty());

    drop(manager);
    drop(daemon);
}
