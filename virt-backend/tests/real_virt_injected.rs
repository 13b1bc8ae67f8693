//! Tier 3, through the system libvirtd at `qemu:///system` (software
//! emulation): a failure injected at every fault point of a create leaves
//! nothing of that create behind, and the same create then succeeds. An
//! undo that fails too is reported beside the original failure. A destroy
//! racing a create of the same name ends with a running VM or with
//! nothing, never with a half-made one.
//!
//! The fault points exist with the cargo feature `fault-injection`, which
//! the crate's dev-dependency on itself turns on. A create here ends once
//! the domain runs; the guest need not finish booting.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use berth_core::{Error, InstanceId, InstanceStatus, Manager, ManagerConfig, NetworkConfig, Step};
use berth_virt::fault::{FaultHook, FaultPoint};
use berth_virt::handle::{Connection, DomainHandle, PoolHandle};
use berth_virt::{VirtInitialiser, VirtManager};
use common::machine;
use common::real_host::{BootFiles, TestBridge, boot_files, remove_leftovers, require_real_host};

/// Prefix of the manager, domains, pool and bridge of this file.
const PREFIX: &str = "berthinj";
/// Storage pool of this file: every volume in it belongs to these tests.
const POOL: &str = "berthinj";
const POOL_DIR: &str = "/var/lib/libvirt/images/berthinj";

/// The tests share the pool and the bridge, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A test environment. A temporary directory holds the manager's
/// directories and a base image of this run only, so every run imports it
/// afresh. Beside it: the boot files and a bridge without uplink.
struct Env {
    dir: tempfile::TempDir,
    boot: BootFiles,
    image: PathBuf,
    connection: Connection,
    bridge: TestBridge,
}

impl Env {
    fn new(bridge: &str) -> Self {
        let connection = require_real_host();
        remove_leftovers(&connection, PREFIX, POOL);
        empty_pool(&connection);
        let dir = tempfile::Builder::new()
            .prefix("berth-test-inject-")
            .tempdir()
            .unwrap();
        let image = dir.path().join("base.img");
        // The first bytes differ per run, so no earlier base volume fits.
        let mut data = vec![0u8; 1 << 20];
        let stamp = format!("{:?} {}", Instant::now(), std::process::id());
        data[..stamp.len()].copy_from_slice(stamp.as_bytes());
        std::fs::write(&image, data).unwrap();
        Self {
            dir,
            boot: boot_files(),
            image,
            connection,
            bridge: TestBridge::create(bridge, 1500),
        }
    }

    fn config(&self) -> ManagerConfig {
        let path = |name: &str| self.dir.path().join(name).to_str().unwrap().to_owned();
        ManagerConfig::new()
            .with("name", PREFIX)
            .with("uri", "qemu:///system")
            .with("pool", POOL)
            .with("pool-dir", POOL_DIR)
            .with("containers-dir", path("containers"))
            .with("removed-dir", path("removed"))
            .with("lock-dir", path("locks"))
            .with("image", self.image.to_str().unwrap())
            .with("kernel", self.boot.kernel.to_str().unwrap())
            .with("initrd", self.boot.initrd.to_str().unwrap())
            .with("cmdline", "console=ttyS0 panic=-1")
            .with("virt-type", "qemu")
    }

    fn manager(&self) -> VirtManager {
        VirtInitialiser::new(self.config())
            .unwrap()
            .initialise_with_report()
            .unwrap();
        VirtManager::new(self.config()).unwrap()
    }

    fn network(&self) -> NetworkConfig {
        NetworkConfig::bridge(&self.bridge.name).unwrap()
    }

    fn containers_root(&self) -> PathBuf {
        self.dir.path().join("containers")
    }

    /// Lists what exists of VM `name`: its domain, its volumes, its
    /// container directory (with its create lock).
    fn remains_of(&self, name: &str) -> Vec<String> {
        let mut remains = Vec::new();
        if self.connection.lookup_domain_by_name(name).is_ok() {
            remains.push(format!("domain {name}"));
        }
        for volume in volumes(&self.connection) {
            if volume.starts_with(name) {
                remains.push(format!("volume {volume}"));
            }
        }
        let dir = self.containers_root().join(name);
        if dir.symlink_metadata().is_ok() {
            remains.push(format!("directory {}", dir.display()));
        }
        remains
    }

    fn entries(&self, dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
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
    DomainHandle::new(connection.lookup_domain_by_name(name).unwrap())
        .is_active()
        .unwrap()
}

fn id(name: &str) -> InstanceId {
    InstanceId::new(name).unwrap()
}

/// Returns every fault point in the order a create passes them. The
/// import point is reached only while the base image is not imported.
fn fault_points() -> Vec<FaultPoint> {
    let mut points = Vec::new();
    for step in FaultPoint::CREATE_STEPS {
        if step == Step::Image {
            points.push(FaultPoint::ImageUploaded);
        }
        points.push(FaultPoint::After(step));
    }
    points
}

fn fail_at(target: FaultPoint) -> Arc<FaultHook> {
    Arc::new(move |_name: &str, point: FaultPoint| {
        if point == target {
            Err("test failure".into())
        } else {
            Ok(())
        }
    })
}

#[test]
fn failure_at_every_point_undone() {
    let _serial = serial();
    let env = Env::new("berthinjbr0");
    let manager = env.manager();
    let network = env.network();
    let name = "berthinj-machine-0";

    let points = fault_points();
    assert_eq!(points.len(), 10);
    let mut base_before: Option<Vec<String>> = None;
    for point in points {
        manager.set_fault_hook(Some(fail_at(point)));
        let error = manager
            .create_container(&machine("0"), "bookworm", &network)
            .unwrap_err();
        let Error::Step {
            container, step, ..
        } = &error
        else {
            panic!("{point}: expected a step failure, got {error:?}");
        };
        assert_eq!(container, name, "{point}");
        assert_eq!(*step, point.step(), "{point}");
        let text = berth_core::error::error_chain(&error);
        assert!(text.contains("fault injected"), "{point}: {text}");

        assert_eq!(env.remains_of(name), Vec::<String>::new(), "{point}");
        assert_eq!(
            env.entries(&env.containers_root()),
            Vec::<String>::new(),
            "{point}: container directories or create locks left"
        );
        assert_eq!(
            env.entries(&env.dir.path().join("removed")),
            Vec::<String>::new(),
            "{point}: a failed create must delete, not move aside"
        );
        assert!(
            manager.list_containers().unwrap().is_empty(),
            "{point}: listed"
        );
        let partial: Vec<String> = volumes(&env.connection)
            .into_iter()
            .filter(|volume| volume.ends_with(".partial"))
            .collect();
        assert_eq!(
            partial,
            Vec::<String>::new(),
            "{point}: partial import left"
        );

        let base = base_volumes(&env.connection);
        match point {
            FaultPoint::After(Step::Directory | Step::UserData) | FaultPoint::ImageUploaded => {
                assert_eq!(base, Vec::<String>::new(), "{point}: image published");
            }
            FaultPoint::After(Step::Image) => {
                assert_eq!(base.len(), 1, "{point}: image not kept: {base:?}");
                base_before = Some(base);
            }
            _ => assert_eq!(Some(&base), base_before.as_ref(), "{point}: image changed"),
        }
    }

    manager.set_fault_hook(None);
    let (instance, _) = manager
        .create_container(&machine("0"), "bookworm", &network)
        .unwrap();
    assert_eq!(instance.status, InstanceStatus::Running);
    assert!(running(&env.connection, name));
    assert_eq!(
        env.remains_of(name).len(),
        4,
        "domain, two volumes, directory: {:?}",
        env.remains_of(name)
    );
    manager.destroy_container(&id(name)).unwrap();
    assert_eq!(env.remains_of(name), Vec::<String>::new());
}

/// Mounts a tmpfs at the new directory `directory`. Removing the directory
/// that contains it then fails with EBUSY until it is unmounted.
fn pin_directory(directory: &Path) {
    std::fs::create_dir_all(directory).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        directory,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap_or_else(|error| panic!("mount tmpfs at {}: {error}", directory.display()));
}

/// Bind-mounts a file of the test over `file`. Unlinking `file` then fails
/// with EBUSY until it is unmounted.
fn pin_file(file: &Path, over: &Path) {
    std::fs::write(over, b"pin").unwrap();
    nix::mount::mount(
        Some(over),
        file,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap_or_else(|error| panic!("bind mount over {}: {error}", file.display()));
}

/// Unmounts a pin when dropped, so a failed assert leaves no mount.
struct Pinned(PathBuf);

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = nix::mount::umount(&self.0);
    }
}

#[test]
fn undo_failure_reported_beside_cause() {
    let _serial = serial();
    let env = Env::new("berthinjbr1");
    let manager = env.manager();
    let network = env.network();
    let name = "berthinj-machine-1";
    let seed = Path::new(POOL_DIR).join(format!("{name}-seed.img"));

    // Each case pins something that one undo step removes, at a point
    // after that thing exists, then fails the create there.
    let cases = [
        (
            FaultPoint::After(Step::Seed),
            env.containers_root().join(name).join("pinned"),
            "remove the container directory",
        ),
        (
            FaultPoint::After(Step::Define),
            seed.clone(),
            "delete volume berthinj-machine-1-seed.img",
        ),
    ];
    for (target, pinned, undo_message) in cases {
        let pin_path = pinned.clone();
        let over = env.dir.path().join("pin-source");
        manager.set_fault_hook(Some(Arc::new(move |_name: &str, point: FaultPoint| {
            if point == target {
                if pin_path.starts_with(POOL_DIR) {
                    pin_file(&pin_path, &over);
                } else {
                    pin_directory(&pin_path);
                }
                Err("test failure with a pinned path".into())
            } else {
                Ok(())
            }
        })));
        let guard = Pinned(pinned.clone());
        let error = manager
            .create_container(&machine("1"), "bookworm", &network)
            .unwrap_err();
        let Error::UndoFailed { cause, undo } = &error else {
            panic!("{target}: expected an undo failure, got {error:?}");
        };
        assert!(
            matches!(cause.as_ref(), Error::Step { step, .. } if *step == target.step()),
            "{target}: cause {cause:?}"
        );
        let text = berth_core::error::error_chain(&error);
        assert!(
            text.contains("fault injected"),
            "{target}: cause missing: {text}"
        );
        assert!(
            text.contains("undo also failed"),
            "{target}: undo missing: {text}"
        );
        assert_eq!(undo.len(), 1, "{target}: {undo:?}");
        assert!(undo[0].contains(undo_message), "{target}: {undo:?}");
        // Every other undo step ran.
        assert!(
            env.connection.lookup_domain_by_name(name).is_err(),
            "{target}: domain left"
        );

        // What the failed undo left is found and removed once the pin is
        // gone, and the same create then succeeds.
        nix::mount::umount(&pinned).unwrap();
        drop(guard);
        manager.set_fault_hook(None);
        let removed = manager.collect_garbage().unwrap();
        match target {
            // The undo of the directory failed after its lock file was
            // deleted, so the directory is left unmarked and unlocked,
            // which garbage collection finds.
            FaultPoint::After(Step::Seed) => {
                assert_eq!(removed, [id(name)], "{target}: garbage")
            }
            // The seed volume stayed, but the directory went, so only a
            // destroy of the name finds it.
            _ => {
                assert_eq!(removed, Vec::<InstanceId>::new(), "{target}: garbage");
                assert_eq!(env.remains_of(name), [format!("volume {name}-seed.img")]);
                manager.destroy_container(&id(name)).unwrap();
            }
        }
        assert_eq!(env.remains_of(name), Vec::<String>::new(), "{target}");
        manager
            .create_container(&machine("1"), "bookworm", &network)
            .unwrap();
        assert!(running(&env.connection, name), "{target}");
        manager.destroy_container(&id(name)).unwrap();
        assert_eq!(env.remains_of(name), Vec::<String>::new(), "{target}");
    }
    assert_eq!(env.entries(&env.containers_root()), Vec::<String>::new());
}

#[test]
fn destroy_racing_create_never_half_made() {
    let _serial = serial();
    let env = Env::new("berthinjbr2");
    let manager = Arc::new(env.manager());
    let network = env.network();
    let name = "berthinj-machine-5";

    let (mut running_rounds, mut gone_rounds) = (0, 0);
    let mut check = |round: &str| {
        let remains = env.remains_of(name);
        if remains.is_empty() {
            gone_rounds += 1;
        } else {
            assert!(
                env.connection.lookup_domain_by_name(name).is_ok()
                    && running(&env.connection, name),
                "{round}: VM left but not running: {remains:?}"
            );
            assert_eq!(remains.len(), 4, "{round}: VM left incomplete: {remains:?}");
            assert!(
                env.containers_root().join(name).join(".created").exists(),
                "{round}: VM left without its created marker: {remains:?}"
            );
            running_rounds += 1;
            manager.destroy_container(&id(name)).unwrap();
        }
        assert_eq!(env.remains_of(name), Vec::<String>::new(), "{round}");
        assert_eq!(
            env.entries(&env.containers_root()),
            Vec::<String>::new(),
            "{round}"
        );
    };

    // A destroy started at each fault point of the create, given 50 ms to
    // act (or to wait) before the create goes on. The first create imports
    // the base image.
    for point in fault_points() {
        let destroyer = Arc::new(Mutex::new(None));
        let hook_destroyer = destroyer.clone();
        let hook_manager = Arc::downgrade(&manager);
        manager.set_fault_hook(Some(Arc::new(move |_name: &str, at: FaultPoint| {
            if at == point {
                let manager = hook_manager.upgrade().unwrap();
                let thread = std::thread::spawn(move || {
                    manager.destroy_container(&id("berthinj-machine-5"))
                });
                *hook_destroyer.lock().unwrap() = Some(thread);
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        })));
        let created = manager.create_container(&machine("5"), "bookworm", &network);
        manager.set_fault_hook(None);
        let Some(thread) = destroyer.lock().unwrap().take() else {
            // The import point is reached only by the first create.
            assert_eq!(point, FaultPoint::ImageUploaded, "{point} not reached");
            if created.is_ok() {
                manager.destroy_container(&id(name)).unwrap();
            }
            continue;
        };
        let destroyed = thread.join().unwrap();
        if let Err(error) = &created {
            panic!("{point}: create failed: {error:?}");
        }
        destroyed.unwrap_or_else(|error| panic!("{point}: destroy failed: {error:?}"));
        check(&point.to_string());
    }

    // Destroys spread over the time a create takes, without a hook.
    let started = Instant::now();
    manager
        .create_container(&machine("5"), "bookworm", &network)
        .unwrap();
    let create_time = started.elapsed();
    manager.destroy_container(&id(name)).unwrap();
    let rounds = 8u32;
    for round in 0..rounds {
        let barrier = Arc::new(Barrier::new(2));
        let creator = {
            let (manager, network, barrier) = (manager.clone(), network.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                manager.create_container(&machine("5"), "bookworm", &network)
            })
        };
        let destroyer = {
            let (manager, barrier) = (manager.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                std::thread::sleep(create_time * round / rounds);
                manager.destroy_container(&id("berthinj-machine-5"))
            })
        };
        let created = creator.join().unwrap();
        let destroyed = destroyer.join().unwrap();
        if let Err(error) = &created {
            panic!("round {round}: create failed: {error:?}");
        }
        destroyed.unwrap_or_else(|error| panic!("round {round}: destroy failed: {error:?}"));
        check(&format!("round {round}"));
    }
    println!(
        "destroy racing create: {running_rounds} rounds left it running, {gone_rounds} removed it \
         (create takes {} ms)",
        create_time.as_millis()
    );
}
