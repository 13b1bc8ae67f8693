//! Fixtures of the real-container tests: each test gets its own lxc path,
//! container directories, log directory and bridge, named after the test,
//! and removes what a crashed earlier run of the same test left.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use berth_core::machine::{AgentTools, ControllerInfo, InterfaceInfo, MachineJob, ProxySettings};
use berth_core::progress::{ProgressEvent, Step};
use berth_core::{Constraints, ContainerDirs, MachineConfig, ManagerConfig, Progress};
use berth_lxc::bridge;
use berth_lxc::config::{
    KEY_CONTAINERS_DIR, KEY_LOG_DIR, KEY_LXC_PATH, KEY_NAME, KEY_REMOVED_DIR, KEY_SHUTDOWN_TIMEOUT,
};
use berth_lxc::container::{Container, ContainerState, ListKind, list_containers};

/// Prefix of every bridge, veth and directory the tests make.
pub const TEST_PREFIX: &str = "bt";

const CA_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGUgZm9yIHRlc3Rz\nMAoGCCqGSM49BAMCMBQxEjAQBgNVBAMMCWp1anUtdGVzdA==\n-----END CERTIFICATE-----\n";

/// Fails the test, with the fix, unless it runs as root with liblxc.
pub fn require_root() {
    let uid = nix::unistd::geteuid();
    assert!(
        uid.is_root(),
        "the LXC tests create real containers and bridges and must run as root (uid is {uid}); run them with sudo"
    );
    let version = berth_lxc::container::liblxc_version();
    assert!(
        version.starts_with(|c: char| c.is_ascii_digit()),
        "liblxc reports version {version:?}"
    );
    assert!(
        Path::new(berth_lxc::image::busybox::DEFAULT_BUSYBOX).exists(),
        "the busybox image needs /bin/busybox: apt-get install busybox-static"
    );
}

/// Installs a log subscriber once, so that failures show berth's logs.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The directories and bridge of one test.
pub struct TestEnv {
    /// Short test name, at most 10 characters, used in every object name.
    pub tag: String,
    /// Root of everything on disk.
    pub base: PathBuf,
    /// The bridge this test created (`bt<tag>`).
    pub bridge: String,
}

impl TestEnv {
    /// Prepares an environment with a bridge at MTU `bridge_mtu`, after
    /// removing leftovers of an earlier run of the same test.
    pub fn new(tag: &str, bridge_mtu: Option<u32>) -> Self {
        let env = Self::without_bridge(tag);
        bridge::ensure_bridge(&env.bridge, bridge_mtu).expect("create test bridge");
        env
    }

    /// Prepares an environment whose bridge is not created.
    pub fn without_bridge(tag: &str) -> Self {
        require_root();
        init_logs();
        assert!(
            tag.len() <= 10,
            "test tag {tag:?} is too long for an interface name"
        );
        let base = std::env::temp_dir().join(format!("berth-lxc-test-{tag}"));
        let env = Self {
            tag: tag.to_owned(),
            base,
            bridge: format!("{TEST_PREFIX}{tag}"),
        };
        env.cleanup();
        std::fs::create_dir_all(env.lxc_path()).unwrap();
        std::fs::create_dir_all(env.log_dir()).unwrap();
        env
    }

    /// Returns the lxc path.
    pub fn lxc_path(&self) -> PathBuf {
        self.base.join("lxc")
    }

    /// Returns the host log directory.
    pub fn log_dir(&self) -> PathBuf {
        self.base.join("log")
    }

    /// Returns the per-container directories.
    pub fn dirs(&self) -> ContainerDirs {
        ContainerDirs::under(self.base.join("juju"))
    }

    /// Returns a manager configuration with manager name `name`.
    pub fn config(&self, name: &str) -> ManagerConfig {
        config_under(&self.base, name)
    }

    /// Stops and destroys every container in the lxc path, deletes the
    /// bridge and veths of this test and removes the directories.
    pub fn cleanup(&self) {
        let lxc_path = self.lxc_path();
        if lxc_path.is_dir() {
            let names = list_containers(&lxc_path, ListKind::All).unwrap_or_default();
            // Clones first, templates last: liblxc refuses to destroy a
            // template that still has overlay clones.
            let (templates, clones): (Vec<String>, Vec<String>) =
                names.into_iter().partition(|name| name.starts_with('_'));
            for name in clones.into_iter().chain(templates) {
                if let Ok(container) = Container::new(&name, &lxc_path) {
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
        for device in [
            self.bridge.clone(),
            format!("{}a", self.bridge),
            format!("{}b", self.bridge),
        ] {
            let _ = bridge::delete_link(&device);
        }
        // liblxc's lock files of every lxc path under the base directory.
        let locks = berth_lxc::container::lock_file_path(&self.base, "x");
        if let Some(directory) = locks.parent()
            && directory.exists()
        {
            std::fs::remove_dir_all(directory)
                .unwrap_or_else(|error| panic!("remove {}: {error}", directory.display()));
        }
        if self.base.exists() {
            std::fs::remove_dir_all(&self.base)
                .unwrap_or_else(|error| panic!("remove {}: {error}", self.base.display()));
        }
    }
}

/// Returns the manager configuration of [`TestEnv::config`] for the test
/// environment at `base`, for a child process that must not clean it up.
pub fn config_under(base: &Path, name: &str) -> ManagerConfig {
    let dirs = ContainerDirs::under(base.join("juju"));
    ManagerConfig::new()
        .with(KEY_NAME, name)
        .with(KEY_LXC_PATH, base.join("lxc").to_str().unwrap())
        .with(KEY_LOG_DIR, base.join("log").to_str().unwrap())
        .with(KEY_CONTAINERS_DIR, dirs.containers_root().to_str().unwrap())
        .with(KEY_REMOVED_DIR, dirs.removed_root().to_str().unwrap())
        .with(KEY_SHUTDOWN_TIMEOUT, "2")
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.cleanup();
        }
    }
}

/// Returns a valid machine configuration for machine `id`.
pub fn machine(id: &str) -> MachineConfig {
    let tag = berth_core::machine_tag(id).unwrap();
    MachineConfig {
        machine_id: id.into(),
        machine_nonce: format!("{tag}:f1e2d3c4-aaaa-bbbb-cccc-0123456789ab"),
        series: "bookworm".into(),
        data_dir: PathBuf::from("/var/lib/juju"),
        log_dir: PathBuf::from("/var/log/juju"),
        jobs: vec![MachineJob::JobHostUnits],
        tools: AgentTools {
            version: "3.5.1-ubuntu-amd64".into(),
            url: "https://controller.example:17070/tools/3.5.1-ubuntu-amd64".into(),
            sha256: "a".repeat(64),
            size: 1234,
        },
        api_info: ControllerInfo {
            addrs: vec!["10.0.0.1:17070".into()],
            ca_cert: CA_CERT.into(),
            tag,
            password: "s3cret".into(),
            model_tag: None,
        },
        state_info: None,
        authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBerthTestKey user@host".into()],
        proxy: ProxySettings::default(),
        apt_proxy: ProxySettings::default(),
        disable_package_commands: false,
        agent_environment: BTreeMap::new(),
        constraints: Constraints::default(),
        network_interfaces: Vec::new(),
        cloud_init_output_log: PathBuf::from("/var/log/cloud-init-output.log"),
    }
}

/// Returns `machine(id)` with a static address on eth0.
pub fn machine_with_address(id: &str, address: &str) -> MachineConfig {
    let mut config = machine(id);
    config.network_interfaces.push(InterfaceInfo {
        name: "eth0".into(),
        mac: None,
        address: address.into(),
        gateway: None,
        dns_servers: Vec::new(),
        mtu: None,
    });
    config
}

/// Runs `command` inside container `name` with lxc-attach and returns its
/// standard output. Panics with its error output when it fails.
pub fn attach(lxc_path: &Path, name: &str, command: &[&str]) -> String {
    let output = Command::new("lxc-attach")
        .arg("-P")
        .arg(lxc_path)
        .args(["-n", name, "--clear-env", "--"])
        .args(command)
        .output()
        .expect("run lxc-attach (apt-get install lxc)");
    assert!(
        output.status.success(),
        "lxc-attach {command:?} in {name} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Returns the liblxc state of container `name`.
pub fn state(lxc_path: &Path, name: &str) -> ContainerState {
    Container::new(name, lxc_path).unwrap().state().unwrap()
}

/// Returns the host-side ports of `bridge`, from sysfs.
pub fn bridge_ports(bridge_name: &str) -> Vec<String> {
    let mut ports: Vec<String> = std::fs::read_dir(format!("/sys/class/net/{bridge_name}/brif"))
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ports.sort();
    ports
}

/// Returns the names of the entries of `directory`, sorted.
pub fn entries(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// One byte report: what is transferred, bytes so far, total.
pub type ByteReport = (String, u64, Option<u64>);

/// Records every progress report.
#[derive(Default, Clone)]
pub struct Recorder {
    /// Steps finished, in order.
    pub steps: Arc<Mutex<Vec<Step>>>,
    /// Byte reports as (what, done, total).
    pub bytes: Arc<Mutex<Vec<ByteReport>>>,
}

impl Progress for Recorder {
    fn report(&self, event: &ProgressEvent<'_>) {
        match event {
            ProgressEvent::StepFinished { step, .. } => self.steps.lock().unwrap().push(*step),
            ProgressEvent::Bytes { what, done, total } => {
                self.bytes
                    .lock()
                    .unwrap()
                    .push(((*what).to_owned(), *done, *total))
            }
            ProgressEvent::StepStarted { .. } => {}
        }
    }
}

/// Returns what is left on the host of container `name`: its entry in the
/// lxc path, its container directory, temporary container directories of
/// any create, and liblxc's lock file. Empty when nothing is left.
pub fn remains_of(env: &TestEnv, name: &str) -> Vec<String> {
    let mut remains = Vec::new();
    let in_lxc_path = env.lxc_path().join(name);
    if std::fs::symlink_metadata(&in_lxc_path).is_ok() {
        remains.push(format!("lxc path entry {}", in_lxc_path.display()));
    }
    let dir = env.dirs().containers_root().join(name);
    if std::fs::symlink_metadata(&dir).is_ok() {
        remains.push(format!("container directory {}", dir.display()));
    }
    for entry in entries(env.dirs().containers_root()) {
        if entry.starts_with('.') && entry.ends_with(".new") {
            remains.push(format!("temporary container directory {entry}"));
        }
    }
    let lock = berth_lxc::container::lock_file_path(&env.lxc_path(), name);
    if lock.exists() {
        remains.push(format!("liblxc lock file {}", lock.display()));
    }
    remains
}

/// Returns the entries of the lxc path that are neither templates nor
/// berth's template lock directory.
pub fn container_entries(env: &TestEnv) -> Vec<String> {
    entries(&env.lxc_path())
        .into_iter()
        .filter(|entry| {
            !entry.starts_with(berth_lxc::template::TEMPLATE_PREFIX)
                && entry != berth_lxc::template::LOCK_DIR
        })
        .collect()
}

/// Returns the templates in the lxc path, with a listing of each one's
/// root file system (relative paths and sizes), to show that nothing
/// changed them.
pub fn template_fingerprint(env: &TestEnv) -> Vec<(String, Vec<(String, u64)>)> {
    let mut templates = Vec::new();
    for entry in entries(&env.lxc_path()) {
        if !entry.starts_with(berth_lxc::template::TEMPLATE_PREFIX) {
            continue;
        }
        let rootfs = env.lxc_path().join(&entry).join("rootfs");
        let mut files = Vec::new();
        let mut stack = vec![rootfs.clone()];
        while let Some(directory) = stack.pop() {
            for item in std::fs::read_dir(&directory).unwrap().flatten() {
                let meta = std::fs::symlink_metadata(item.path()).unwrap();
                let relative = item
                    .path()
                    .strip_prefix(&rootfs)
                    .unwrap()
                    .display()
                    .to_string();
                if meta.is_dir() {
                    stack.push(item.path());
                }
                files.push((relative, meta.len()));
            }
        }
        files.sort();
        templates.push((entry, files));
    }
    templates
}

/// Returns whether every template lock in the lxc path is free.
pub fn template_locks_free(env: &TestEnv) -> bool {
    let directory = env.lxc_path().join(berth_lxc::template::LOCK_DIR);
    entries(&directory).iter().all(|lock| {
        std::fs::File::open(directory.join(lock))
            .unwrap()
            .try_lock()
            .is_ok()
    })
}
