//! Tier 3, through the system libvirtd at `qemu:///system` (software
//! emulation). A create whose process is killed at any fault point leaves
//! a half-made VM that garbage collection removes. It removes nothing
//! else: not a finished VM of the same manager, not another manager's VM,
//! not a create still running in another process. A base image import killed before it
//! is published is never used, and garbage collection deletes its partial
//! volume.
//!
//! The creates run in child processes: this test binary run again with
//! `CHILD_ENV` set, which makes `crash_child` create one VM and block
//! forever at the chosen fault point after writing a ready file. The
//! parent kills the child with SIGKILL by its PID.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_core::{InstanceId, Manager, ManagerConfig, NetworkConfig, Step};
use berth_virt::fault::FaultPoint;
use berth_virt::handle::{Connection, DomainHandle, PoolHandle};
use berth_virt::{VirtInitialiser, VirtManager};
use common::machine;
use common::real_host::{TestBridge, boot_files, remove_leftovers, require_real_host};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Prefix of the managers, domains, pool and bridge of this file.
const PREFIX: &str = "berthcrash";
/// Name of the second manager, whose VM must survive the first one's
/// garbage collection.
const OTHER: &str = "berthcrashb";
/// Storage pool of this file: every volume in it belongs to these tests.
const POOL: &str = "berthcrash";
const POOL_DIR: &str = "/var/lib/libvirt/images/berthcrash";
const CHILD_ENV: &str = "BERTH_VIRT_CRASH_CHILD";

/// The tests share the pool, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Returns the configuration of manager `name` whose directories are under
/// `base`, with the base image `base/base.img`. The parent and its
/// children build the same one.
fn config_under(base: &Path, name: &str, kernel: &str, initrd: &str) -> ManagerConfig {
    let path = |entry: &str| base.join(entry).to_str().unwrap().to_owned();
    ManagerConfig::new()
        .with("name", name)
        .with("uri", "qemu:///system")
        .with("pool", POOL)
        .with("pool-dir", POOL_DIR)
        .with("containers-dir", path("containers"))
        .with("removed-dir", path("removed"))
        .with("lock-dir", path("locks"))
        .with("image", path("base.img"))
        .with("kernel", kernel)
        .with("initrd", initrd)
        .with("cmdline", "console=ttyS0 panic=-1")
        .with("virt-type", "qemu")
}

/// A test environment. A temporary directory holds the managers'
/// directories and a base image of this run only, so every run imports it
/// afresh. Beside it: the boot files and a bridge without uplink.
struct Env {
    base: tempfile::TempDir,
    kernel: String,
    initrd: String,
    connection: Connection,
    bridge: TestBridge,
}

impl Env {
    fn new(bridge: &str) -> Self {
        let connection = require_real_host();
        remove_leftovers(&connection, PREFIX, POOL);
        empty_pool(&connection);
        let base = tempfile::Builder::new()
            .prefix("berth-test-crash-")
            .tempdir()
            .unwrap();
        // The first bytes differ per run, so no earlier base volume fits.
        let mut data = vec![0u8; 1 << 20];
        let stamp = format!("{:?} {}", Instant::now(), std::process::id());
        data[..stamp.len()].copy_from_slice(stamp.as_bytes());
        std::fs::write(base.path().join("base.img"), data).unwrap();
        let boot = boot_files();
        Self {
            base,
            kernel: boot.kernel.to_str().unwrap().to_owned(),
            initrd: boot.initrd.to_str().unwrap().to_owned(),
            connection,
            bridge: TestBridge::create(bridge, 1500),
        }
    }

    fn config(&self, name: &str) -> ManagerConfig {
        config_under(self.base.path(), name, &self.kernel, &self.initrd)
    }

    fn manager(&self, name: &str) -> VirtManager {
        VirtInitialiser::new(self.config(name))
            .unwrap()
            .initialise_with_report()
            .unwrap();
        VirtManager::new(self.config(name)).unwrap()
    }

    fn network(&self) -> NetworkConfig {
        NetworkConfig::bridge(&self.bridge.name).unwrap()
    }

    fn container_dir(&self, name: &str) -> PathBuf {
        self.base.path().join("containers").join(name)
    }

    /// Lists what exists of VM `name`: its domain, its volumes, its
    /// container directory.
    fn remains_of(&self, name: &str) -> Vec<String> {
        let mut remains = Vec::new();
        if self.connection.lookup_domain_by_name(name).is_ok() {
            remains.push(format!("domain {name}"));
        }
        for volume in volumes(&self.connection) {
            if volume.starts_with(&format!("{name}-")) {
                remains.push(format!("volume {volume}"));
            }
        }
        let dir = self.container_dir(name);
        if dir.symlink_metadata().is_ok() {
            remains.push(format!("directory {}", dir.display()));
        }
        remains
    }

    /// Returns the entries of the containers directory, sorted.
    fn container_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.base.path().join("containers"))
            .map(|entries| {
                entries
                    .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// Deletes every volume of this file's pool, left by an earlier run.
fn empty_pool(connection: &Connection) {
    let Ok(pool) = connection.lookup_storage_pool_by_name(POOL) else {
        return;
    };
    let pool = PoolHandle::new(pool);
    let _ = pool.refresh(0);
    for name in pool.list_volumes().unwrap_or_default() {
        if let Ok(volume) = pool.lookup_storage_vol_by_name(&name) {
            let _ = berth_virt::handle::VolumeHandle::new(volume).delete(0);
        }
    }
}

/// Returns the volume names of this file's pool, sorted.
fn volumes(connection: &Connection) -> Vec<String> {
    let pool = PoolHandle::new(connection.lookup_storage_pool_by_name(POOL).unwrap());
    pool.refresh(0).unwrap();
    let mut names = pool.list_volumes().unwrap();
    names.sort();
    names
}

fn base_volumes(connection: &Connection) -> Vec<String> {
    volumes(connection)
        .into_iter()
        .filter(|name| name.starts_with("base-"))
        .collect()
}

fn running(connection: &Connection, name: &str) -> bool {
    connection
        .lookup_domain_by_name(name)
        .map(DomainHandle::new)
        .is_ok_and(|domain| domain.is_active().unwrap())
}

fn id(name: &str) -> InstanceId {
    InstanceId::new(name).unwrap()
}

/// Returns the name of a fault point in the child's environment.
fn point_name(point: FaultPoint) -> String {
    match point {
        FaultPoint::After(step) => step.as_str().replace(' ', "-"),
        FaultPoint::ImageUploaded => "image-uploaded".into(),
    }
}

fn point_from_name(name: &str) -> FaultPoint {
    if name == "image-uploaded" {
        return FaultPoint::ImageUploaded;
    }
    let step = FaultPoint::CREATE_STEPS
        .into_iter()
        .find(|step| step.as_str().replace(' ', "-") == name)
        .unwrap_or_else(|| panic!("unknown fault point {name:?}"));
    FaultPoint::After(step)
}

/// The child's side: creates machine `BERTH_CRASH_MACHINE` with the
/// manager configuration under the directory in `BERTH_VIRT_CRASH_CHILD`,
/// and blocks at the fault point `BERTH_CRASH_POINT` after writing the
/// file `BERTH_CRASH_READY`. Does nothing unless started as a child.
#[test]
fn crash_child() {
    let Ok(base) = std::env::var(CHILD_ENV) else {
        return;
    };
    let var = |key: &str| std::env::var(key).unwrap_or_else(|_| panic!("{key} not set"));
    let target = point_from_name(&var("BERTH_CRASH_POINT"));
    let ready = PathBuf::from(var("BERTH_CRASH_READY"));
    let config = config_under(
        Path::new(&base),
        PREFIX,
        &var("BERTH_CRASH_KERNEL"),
        &var("BERTH_CRASH_INITRD"),
    );
    let manager = VirtManager::new(config).unwrap();
    manager.set_fault_hook(Some(Arc::new(move |_name: &str, point: FaultPoint| {
        if point == target {
            std::fs::write(&ready, std::process::id().to_string()).unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        Ok(())
    })));
    let network = NetworkConfig::bridge(&var("BERTH_CRASH_BRIDGE")).unwrap();
    let result =
        manager.create_container(&machine(&var("BERTH_CRASH_MACHINE")), "bookworm", &network);
    panic!("the create passed its fault point {target}: {result:?}");
}

/// A child process blocked at a fault point of a create.
struct Paused {
    child: Child,
    point: FaultPoint,
}

impl Paused {
    /// Starts a child that creates machine `machine_id` and waits until it
    /// has reached `point`.
    fn start(env: &Env, machine_id: &str, point: FaultPoint) -> Self {
        let ready = env
            .base
            .path()
            .join(format!("ready-{}-{}", machine_id, point_name(point)));
        let _ = std::fs::remove_file(&ready);
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, env.base.path())
            .env("BERTH_CRASH_POINT", point_name(point))
            .env("BERTH_CRASH_READY", &ready)
            .env("BERTH_CRASH_BRIDGE", &env.bridge.name)
            .env("BERTH_CRASH_MACHINE", machine_id)
            .env("BERTH_CRASH_KERNEL", &env.kernel)
            .env("BERTH_CRASH_INITRD", &env.initrd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut paused = Self { child, point };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            if let Some(status) = paused.child.try_wait().unwrap() {
                panic!("child for {point} exited with {status} before its fault point");
            }
            assert!(
                Instant::now() < deadline,
                "child for {point} did not reach it in 60 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        paused
    }

    /// Kills the child with SIGKILL and reaps it.
    fn kill(mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        kill(pid, Signal::SIGKILL).unwrap();
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "{}: {status}", self.point);
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn killed_import_never_used() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let _serial = serial();
    let env = Env::new("berthcrashbr0");
    let manager = env.manager(PREFIX);
    let name = "berthcrash-machine-0";

    Paused::start(&env, "0", FaultPoint::ImageUploaded).kill();
    let partial: Vec<String> = volumes(&env.connection)
        .into_iter()
        .filter(|volume| volume.ends_with(".partial"))
        .collect();
    assert_eq!(
        partial.len(),
        1,
        "the killed import left no partial volume to test"
    );
    assert_eq!(
        base_volumes(&env.connection),
        partial,
        "published while half done"
    );

    // Garbage collection removes the VM and the partial import, which no
    // live process holds.
    assert_eq!(manager.collect_garbage().unwrap(), [id(name)]);
    assert_eq!(env.remains_of(name), Vec::<String>::new());
    assert_eq!(volumes(&env.connection), Vec::<String>::new());

    // The next create imports the whole image.
    manager
        .create_container(&machine("0"), "bookworm", &env.network())
        .unwrap();
    let base = base_volumes(&env.connection);
    assert_eq!(base.len(), 1, "{base:?}");
    assert!(!base[0].ends_with(".partial"), "{base:?}");
    assert!(running(&env.connection, name));
    manager.destroy_container(&id(name)).unwrap();
    assert_eq!(env.remains_of(name), Vec::<String>::new());
}

#[test]
fn killed_create_collected_at_every_point() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let _serial = serial();
    let env = Env::new("berthcrashbr1");
    let manager = env.manager(PREFIX);
    let other = env.manager(OTHER);
    let network = env.network();

    // Bystanders: a finished VM of this manager, one of another manager,
    // and a create of this manager paused in a live process.
    manager
        .create_container(&machine("100"), "bookworm", &network)
        .unwrap();
    other
        .create_container(&machine("0"), "bookworm", &network)
        .unwrap();
    let live = Paused::start(&env, "200", FaultPoint::After(Step::Seed));
    let bystanders = |point: &str| {
        for name in ["berthcrash-machine-100", "berthcrashb-machine-0"] {
            assert!(
                running(&env.connection, name),
                "{point}: {name} not running"
            );
            assert_eq!(
                env.remains_of(name).len(),
                4,
                "{point}: {name}: {:?}",
                env.remains_of(name)
            );
            assert!(
                env.container_dir(name).join(".created").exists(),
                "{point}: {name} lost its created marker"
            );
        }
        assert_eq!(
            env.remains_of("berthcrash-machine-200").len(),
            3,
            "{point}: the live create was touched: {:?}",
            env.remains_of("berthcrash-machine-200")
        );
    };
    bystanders("before");

    let name = "berthcrash-machine-1";
    for step in FaultPoint::CREATE_STEPS {
        let point = FaultPoint::After(step);
        Paused::start(&env, "1", point).kill();
        assert!(
            !env.remains_of(name).is_empty(),
            "{point}: the killed create left nothing to collect"
        );
        if matches!(step, Step::Start | Step::Wait) {
            assert!(
                running(&env.connection, name),
                "{point}: the domain should outlive its create's process"
            );
        }

        let removed = manager.collect_garbage().unwrap();
        assert_eq!(removed, [id(name)], "{point}");
        assert_eq!(env.remains_of(name), Vec::<String>::new(), "{point}");
        bystanders(&point.to_string());
        assert!(
            other.collect_garbage().unwrap().is_empty(),
            "{point}: the other manager found garbage"
        );

        manager
            .create_container(&machine("1"), "bookworm", &network)
            .unwrap_or_else(|error| panic!("{point}: create after collection: {error:?}"));
        assert!(running(&env.connection, name), "{point}");
        manager.destroy_container(&id(name)).unwrap();
        assert_eq!(env.remains_of(name), Vec::<String>::new(), "{point}");
    }

    // Once its process dies, the paused create is garbage too.
    live.kill();
    assert_eq!(
        manager.collect_garbage().unwrap(),
        [id("berthcrash-machine-200")]
    );
    assert_eq!(
        env.remains_of("berthcrash-machine-200"),
        Vec::<String>::new()
    );
    manager
        .destroy_container(&id("berthcrash-machine-100"))
        .unwrap();
    other
        .destroy_container(&id("berthcrashb-machine-0"))
        .unwrap();
    assert_eq!(env.container_entries(), Vec::<String>::new());
    assert_eq!(
        base_volumes(&env.connection).len(),
        1,
        "only the base image is left: {:?}",
        volumes(&env.connection)
    );
    assert_eq!(volumes(&env.connection).len(), 1);
}
