//! Tier 3: real VMs through the system libvirtd at `qemu:///system`, in
//! software emulation, on bridges the tests create. Needs root and a
//! running libvirtd (`mkdir -p /var/log/libvirt /var/run/libvirt;
//! virtlogd -d; libvirtd -d`); the tests fail, never skip, without them.
//!
//! Each VM boots Debian's cloud kernel with a busybox initramfs that mounts
//! the NoCloud seed disk and prints its instance-id on the serial console,
//! which berth logs into the container directory.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use berth_core::{InstanceStatus, Manager, ManagerConfig, NetworkConfig};
use berth_virt::handle::{Connection, PoolHandle, VolumeHandle};
use berth_virt::xml::from_xml;
use berth_virt::xml::storage::StorageVolume;
use berth_virt::{VirtInitialiser, VirtManager};
use common::real_host::*;
use common::*;

/// Prefix of every domain, volume and bridge these tests make.
const PREFIX: &str = "berthtest";
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// The tests share the system daemon and the test pool, so they run one
/// at a time and the clean-up of one never meets the VMs of another.
static SERIAL: Mutex<()> = Mutex::new(());

struct RealHost {
    dir: tempfile::TempDir,
    boot: BootFiles,
    image: std::path::PathBuf,
}

impl RealHost {
    fn prepare(connection: &Connection) -> Self {
        remove_leftovers(connection, PREFIX, REAL_POOL);
        let dir = tempfile::Builder::new()
            .prefix("berth-test-real-")
            .tempdir()
            .unwrap();
        Self {
            dir,
            boot: boot_files(),
            image: base_image(),
        }
    }

    fn config(&self) -> ManagerConfig {
        let path = |name: &str| self.dir.path().join(name).to_str().unwrap().to_owned();
        ManagerConfig::new()
            .with("name", PREFIX)
            .with("uri", "qemu:///system")
            .with("pool", REAL_POOL)
            .with("pool-dir", "/var/lib/libvirt/images/berth-test")
            .with("containers-dir", path("containers"))
            .with("removed-dir", path("removed"))
            .with("lock-dir", path("locks"))
            .with("image", self.image.to_str().unwrap())
            .with("kernel", self.boot.kernel.to_str().unwrap())
            .with("initrd", self.boot.initrd.to_str().unwrap())
            .with("cmdline", "console=ttyS0 panic=-1")
            // Nested KVM is broken on the hosts this runs on: the domain
            // capabilities offer kvm, but a guest kernel then stalls.
            .with("virt-type", "qemu")
    }

    fn manager(&self, config: ManagerConfig) -> VirtManager {
        VirtInitialiser::new(config.clone())
            .unwrap()
            .initialise_with_report()
            .unwrap();
        VirtManager::new(config).unwrap()
    }

    fn console_log(&self, name: &str) -> std::path::PathBuf {
        self.dir
            .path()
            .join("containers")
            .join(name)
            .join("console.log")
    }
}

fn read_volume(connection: &Connection, name: &str) -> StorageVolume {
    let pool = PoolHandle::new(connection.lookup_storage_pool_by_name(REAL_POOL).unwrap());
    let volume = VolumeHandle::new(pool.lookup_storage_vol_by_name(name).unwrap());
    from_xml(&volume.xml_desc(0).unwrap()).unwrap()
}

fn own_volumes(connection: &Connection, name: &str) -> Vec<String> {
    let pool = PoolHandle::new(connection.lookup_storage_pool_by_name(REAL_POOL).unwrap());
    pool.refresh(0).unwrap();
    pool.list_volumes()
        .unwrap()
        .into_iter()
        .filter(|volume| volume.starts_with(name))
        .collect()
}

#[test]
fn vm_boots_and_reads_its_seed() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let connection = require_real_host();
    let host = RealHost::prepare(&connection);
    let bridge = TestBridge::create("berthtbr0", 9000);
    let manager = host.manager(host.config());
    assert_eq!(manager.platform().virt_type, "qemu");

    let network = NetworkConfig::bridge(&bridge.name)
        .unwrap()
        .with_mtu(9000)
        .unwrap()
        .with_mac("02:16:3e:aa:bb:01")
        .unwrap();
    let (instance, hardware) = manager
        .create_container(&machine("0"), "bookworm", &network)
        .unwrap();
    let name = "berthtest-machine-0";
    assert_eq!(instance.id.as_str(), name);
    assert_eq!(instance.status, InstanceStatus::Running);
    assert_eq!(
        hardware.to_string(),
        "arch=amd64 cpu-cores=1 mem=512M root-disk=8192M virt-type=qemu"
    );

    let log = wait_for_console(
        &host.console_log(name),
        &format!("{MARK} ready"),
        BOOT_TIMEOUT,
    );
    assert!(
        log.contains(&format!("{MARK} instance-id: {name}")),
        "{log}"
    );
    // The guest kernel's vfat driver mounted the seed and listed the long
    // file names; the label sits in the boot sector.
    assert!(log.contains(&format!("{MARK} seed label cidata")), "{log}");
    assert!(
        log.contains(&format!("{MARK} files meta-data network-config user-data")),
        "{log}"
    );
    assert!(
        log.contains(&format!("{MARK} nic 02:16:3e:aa:bb:01 mtu 9000")),
        "{log}"
    );
    // The init script marks its own failures; the kernel's messages may
    // hold the word (such as "Fast TSC calibration failed") harmlessly.
    let init_failures: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(MARK) && line.contains("failed"))
        .collect();
    assert!(init_failures.is_empty(), "{init_failures:?}\n{log}");
    assert_eq!(bridge.mtu(), 9000);

    // The running domain as libvirt reports it matches what berth wrote.
    let name_root = format!("{name}-root.qcow2");
    let name_seed = format!("{name}-seed.img");
    let expected = berth_virt::spec::domain_document(&berth_virt::spec::DomainSpec {
        name,
        platform: manager.platform(),
        resources: berth_virt::spec::Resources {
            mem_mib: 512,
            cpu_cores: 1,
            root_disk_mib: 8192,
        },
        pool: REAL_POOL,
        root_volume: &name_root,
        seed_volume: &name_seed,
        kernel_boot: manager.config().kernel_boot.as_ref(),
        network: &network,
        mac: network.mac().unwrap(),
        console_log: &host.console_log(name),
    });
    let read = domain_xml(&connection, name);
    assert_eq!(
        read.without_libvirt_defaults(),
        expected.without_libvirt_defaults()
    );
    assert!(read.id.is_some(), "a running domain has an id");
    let root = read_volume(&connection, &name_root);
    assert_eq!(root.capacity.value, 8192 << 20);
    assert_eq!(root.format(), Some("qcow2"));
    assert_eq!(
        root.backing_store
            .as_ref()
            .unwrap()
            .format
            .as_ref()
            .unwrap()
            .format_type,
        "raw"
    );

    let listed = manager.list_containers().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].status, InstanceStatus::Running);

    manager.destroy_container(&instance.id).unwrap();
    manager.destroy_container(&instance.id).unwrap();
    assert!(manager.list_containers().unwrap().is_empty());
    assert!(connection.lookup_domain_by_name(name).is_err());
    assert_eq!(own_volumes(&connection, name), Vec::<String>::new());
    assert!(
        host.dir
            .path()
            .join("removed")
            .join(name)
            .join("console.log")
            .exists()
    );
}

#[test]
fn missing_bridge_leaves_nothing_then_works() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let connection = require_real_host();
    let host = RealHost::prepare(&connection);
    delete_link("berthtbr1");
    let manager = host.manager(host.config());
    let network = NetworkConfig::bridge("berthtbr1").unwrap();
    let name = "berthtest-machine-1";

    let error = manager
        .create_container(&machine("1"), "bookworm", &network)
        .unwrap_err();
    let chain = berth_core::error::error_chain(&error);
    assert!(
        chain.contains("berthtbr1"),
        "the error names the bridge: {chain}"
    );
    assert!(
        matches!(
            error,
            berth_core::Error::Step {
                step: berth_core::Step::Start,
                ..
            }
        ),
        "{chain}"
    );
    assert!(
        connection.lookup_domain_by_name(name).is_err(),
        "domain left behind"
    );
    assert_eq!(own_volumes(&connection, name), Vec::<String>::new());
    assert!(!host.dir.path().join("containers").join(name).exists());

    let _bridge = TestBridge::create("berthtbr1", 1500);
    let (instance, _) = manager
        .create_container(&machine("1"), "bookworm", &network)
        .unwrap();
    let log = wait_for_console(
        &host.console_log(name),
        &format!("{MARK} ready"),
        BOOT_TIMEOUT,
    );
    assert!(
        log.contains(&format!("{MARK} instance-id: {name}")),
        "{log}"
    );
    manager.destroy_container(&instance.id).unwrap();
}

#[test]
fn url_qcow2_image_backs_a_vm() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let connection = require_real_host();
    let host = RealHost::prepare(&connection);
    let bridge = TestBridge::create("berthtbr2", 1500);
    // A fresh qcow2 each run (so a fresh base volume), removed afterwards.
    let qcow2 = host.dir.path().join("base.qcow2");
    let output = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&qcow2)
        .arg("1G")
        .output()
        .expect("qemu-img (package qemu-utils) is needed to make the test image");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let body = std::fs::read(&qcow2).unwrap();
    let server = ImageServer::start(body.clone(), 2);
    let config = host
        .config()
        .with("image", server.url.as_str())
        .with("image-sha256", sha256_hex(&body).as_str());
    let manager = host.manager(config);

    let network = NetworkConfig::bridge(&bridge.name).unwrap();
    let (instance, _) = manager
        .create_container(&machine("2"), "bookworm", &network)
        .unwrap();
    let root = read_volume(&connection, "berthtest-machine-2-root.qcow2");
    let backing = root.backing_store.unwrap();
    assert_eq!(backing.format.unwrap().format_type, "qcow2");
    let base_name = std::path::Path::new(&backing.path)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let base = read_volume(&connection, &base_name);
    assert_eq!(base.format(), Some("qcow2"));
    assert_eq!(base.capacity.value, 1 << 30);
    let log = wait_for_console(
        &host.console_log(instance.id.as_str()),
        &format!("{MARK} ready"),
        BOOT_TIMEOUT,
    );
    assert!(log.contains("instance-id: berthtest-machine-2"), "{log}");
    manager.destroy_container(&instance.id).unwrap();

    // This base volume belongs to this run's image only.
    let pool = PoolHandle::new(connection.lookup_storage_pool_by_name(REAL_POOL).unwrap());
    VolumeHandle::new(pool.lookup_storage_vol_by_name(&base_name).unwrap())
        .delete(0)
        .unwrap();
}

#[test]
fn initialiser_is_idempotent_on_real_daemon() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let connection = require_real_host();
    let host = RealHost::prepare(&connection);
    let initialiser = VirtInitialiser::new(host.config()).unwrap();
    initialiser.initialise_with_report().unwrap();
    let second = initialiser.initialise_with_report().unwrap();
    assert!(second.installed_packages.is_empty(), "{second:?}");
    assert!(!second.pool_defined, "{second:?}");
    assert!(!second.pool_built, "{second:?}");
    assert!(!second.pool_started, "{second:?}");
    assert!(!second.pool_autostart_set, "{second:?}");
    let pool = PoolHandle::new(connection.lookup_storage_pool_by_name(REAL_POOL).unwrap());
    assert!(pool.is_active().unwrap());
    assert!(pool.autostart().unwrap());

    // Left to choose, the backend names kvm or qemu with a reason.
    let auto = VirtManager::new(host.config().with("virt-type", "auto")).unwrap();
    assert!(
        ["kvm", "qemu"].contains(&auto.platform().virt_type.as_str()),
        "{:?}",
        auto.platform()
    );
    assert!(!auto.platform().reason.is_empty());
    assert_eq!(auto.platform().arch, "x86_64");
}
