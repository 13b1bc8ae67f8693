//! Tier 2: the libvirt manager against libvirt's test driver. Each test
//! has its own driver state (a `test:///` node file in a temporary
//! directory), so no daemon and no root is needed.

mod common;

use std::sync::Mutex;

use berth_core::{
    Constraints, Error, InstanceId, InstanceStatus, Manager, NetworkConfig, ProgressEvent, Step,
    container_name,
};
use berth_virt::VirtManager;
use berth_virt::xml::domain::{DiskType, InterfaceType};
use berth_virt::xml::storage::{StoragePool, StorageVolume};
use berth_virt::xml::{from_xml, to_xml};
use common::*;

fn bridge() -> NetworkConfig {
    NetworkConfig::bridge("br-test0").unwrap()
}

#[test]
fn create_list_destroy() {
    let driver = TestDriver::new();
    let manager = driver.manager("juju");
    let (instance, hardware) = manager
        .create_container(&machine("1/lxc/0"), "bookworm", &bridge())
        .unwrap();
    let name = "juju-machine-1-lxc-0";
    assert_eq!(instance.id.as_str(), name);
    assert_eq!(instance.status, InstanceStatus::Running);
    assert_eq!(hardware.mem, Some(512));
    assert_eq!(hardware.cpu_cores, Some(1));
    assert_eq!(hardware.root_disk, Some(8192));
    assert_eq!(hardware.virt_type.as_deref(), Some("test"));
    // The test driver runs only i686 guests.
    assert_eq!(hardware.arch.as_deref(), Some("i386"));

    let connection = manager.connection();
    let volumes = volume_names(connection);
    assert_eq!(volumes.len(), 3, "{volumes:?}");
    assert!(volumes[0].starts_with("base-bookworm-"), "{volumes:?}");
    assert_eq!(
        volumes[1..],
        [format!("{name}-root.qcow2"), format!("{name}-seed.img")]
    );

    let dir = driver.path("containers").join(name);
    let user_data = std::fs::read_to_string(dir.join("cloud-init")).unwrap();
    assert!(user_data.starts_with("#cloud-config\n"), "{user_data}");

    let domain = domain_xml(connection, name);
    assert_eq!(domain.name, name);
    assert!(domain.features.acpi.is_some());
    assert_eq!(domain.memory.bytes(), Some(512 << 20));
    assert_eq!(domain.vcpu.count, 1);
    assert_eq!(domain.devices.disks.len(), 2);
    assert_eq!(
        domain.devices.disks[1].target.bus.as_deref(),
        Some("virtio"),
        "the seed must be a virtio disk"
    );
    assert_eq!(
        domain.volumes(),
        vec![
            (TEST_POOL.to_string(), format!("{name}-root.qcow2")),
            (TEST_POOL.to_string(), format!("{name}-seed.img"))
        ]
    );
    let serial = &domain.devices.serials[0];
    assert_eq!(
        serial.log.as_ref().unwrap().file,
        dir.join("console.log").to_str().unwrap()
    );

    let root: StorageVolume = read_volume(connection, &format!("{name}-root.qcow2"));
    assert_eq!(root.capacity.value, 8192 << 20);
    assert_eq!(root.format(), Some("qcow2"));
    let backing = root.backing_store.unwrap();
    assert!(backing.path.ends_with(&volumes[0]), "{}", backing.path);
    assert_eq!(backing.format.unwrap().format_type, "raw");

    let listed = manager.list_containers().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, instance.id);
    assert_eq!(listed[0].status, InstanceStatus::Running);

    manager.destroy_container(&instance.id).unwrap();
    assert!(manager.list_containers().unwrap().is_empty());
    assert!(domain_names(connection).is_empty());
    assert_eq!(
        volume_names(connection),
        volumes[..1],
        "the base image stays for the next VM"
    );
    assert!(!dir.exists());
    assert!(
        driver
            .path("removed")
            .join(name)
            .join("cloud-init")
            .exists()
    );
}

fn read_volume(connection: &berth_virt::handle::Connection, name: &str) -> StorageVolume {
    let pool = berth_virt::handle::PoolHandle::new(
        connection.lookup_storage_pool_by_name(TEST_POOL).unwrap(),
    );
    let volume =
        berth_virt::handle::VolumeHandle::new(pool.lookup_storage_vol_by_name(name).unwrap());
    from_xml(&volume.xml_desc(0).unwrap()).unwrap()
}

#[test]
fn list_shows_stopped_and_ignores_others() {
    let driver = TestDriver::new();
    let config = driver.config("juju");
    let connection = driver.connection(&config);
    let other = VirtManager::with_connection(
        driver.config("other"),
        berth_virt::handle::Connection::new((*connection).clone()),
    )
    .unwrap();
    let manager = VirtManager::with_connection(config, connection).unwrap();
    let (first, _) = manager
        .create_container(&machine("0"), "bookworm", &bridge())
        .unwrap();
    manager
        .create_container(&machine("1"), "bookworm", &bridge())
        .unwrap();
    other
        .create_container(&machine("0"), "bookworm", &bridge())
        .unwrap();

    let domain = berth_virt::handle::DomainHandle::new(
        manager
            .connection()
            .lookup_domain_by_name(first.id.as_str())
            .unwrap(),
    );
    domain.destroy().unwrap();

    let listed = manager.list_containers().unwrap();
    let summary: Vec<(&str, InstanceStatus)> =
        listed.iter().map(|i| (i.id.as_str(), i.status)).collect();
    assert_eq!(
        summary,
        [
            ("juju-machine-0", InstanceStatus::Stopped),
            ("juju-machine-1", InstanceStatus::Running)
        ]
    );
    assert_eq!(other.list_containers().unwrap().len(), 1);
}

#[test]
fn constraints_applied() {
    let driver = TestDriver::new();
    let manager = driver.manager("juju");
    let mut wanted = machine("3");
    wanted.constraints = Constraints {
        mem: Some(1024),
        cpu_cores: Some(2),
        root_disk: Some(4096),
        ..Default::default()
    };
    let (instance, hardware) = manager
        .create_container(&wanted, "bookworm", &bridge())
        .unwrap();
    assert_eq!(
        (hardware.mem, hardware.cpu_cores, hardware.root_disk),
        (Some(1024), Some(2), Some(4096))
    );
    let domain = domain_xml(manager.connection(), instance.id.as_str());
    assert_eq!(domain.memory.bytes(), Some(1024 << 20));
    assert_eq!(domain.vcpu.count, 2);
    let root = read_volume(manager.connection(), "juju-machine-3-root.qcow2");
    assert_eq!(root.capacity.value, 4096 << 20);
}

#[test]
fn constraints_below_minimum_create_nothing() {
    let driver = TestDriver::new();
    let manager = driver.manager("juju");
    let cases = [
        (
            Constraints {
                mem: Some(256),
                ..Default::default()
            },
            "constraint mem",
        ),
        (
            Constraints {
                cpu_cores: Some(0),
                ..Default::default()
            },
            "constraint cpu-cores",
        ),
        (
            Constraints {
                root_disk: Some(1024),
                ..Default::default()
            },
            "constraint root-disk",
        ),
        (
            Constraints {
                arch: Some("s390x".into()),
                ..Default::default()
            },
            "constraint arch",
        ),
    ];
    for (constraints, field) in cases {
        let mut wanted = machine("4");
        wanted.constraints = constraints;
        let error = manager
            .create_container(&wanted, "bookworm", &bridge())
            .unwrap_err();
        assert!(error.is_invalid_input(), "{error}");
        assert!(error.to_string().contains(field), "{error}");
    }
    assert!(domain_names(manager.connection()).is_empty());
    assert!(
        volume_names(manager.connection()).is_empty(),
        "not even the base image is imported"
    );
    assert!(!driver.path("containers").join("juju-machine-4").exists());
}

#[test]
fn root_disk_smaller_than_image_undone() {
    let driver = TestDriver::new();
    write_qcow2_header(&driver.path("big.qcow2"), 4 << 30);
    let manager = driver.manager_with(
        driver
            .config("juju")
            .with("image", driver.path("big.qcow2").to_str().unwrap()),
    );
    let mut wanted = machine("5");
    wanted.constraints.root_disk = Some(2048);
    let error = manager
        .create_container(&wanted, "bookworm", &bridge())
        .unwrap_err();
    assert!(
        error.to_string().contains("smaller than the 4096 MiB disk"),
        "{error}"
    );
    let volumes = volume_names(manager.connection());
    assert_eq!(
        volumes.len(),
        1,
        "only the shared base image remains: {volumes:?}"
    );
    assert!(!driver.path("containers").join("juju-machine-5").exists());

    wanted.constraints.root_disk = Some(4096);
    manager
        .create_container(&wanted, "bookworm", &bridge())
        .unwrap();
    let root = read_volume(manager.connection(), "juju-machine-5-root.qcow2");
    assert_eq!(
        root.backing_store.unwrap().format.unwrap().format_type,
        "qcow2"
    );
}

#[test]
fn existing_domain_rejected() {
    let driver = TestDriver::new();
    let manager = driver.manager("juju");
    manager
        .create_container(&machine("0"), "bookworm", &bridge())
        .unwrap();
    let error = manager
        .create_container(&machine("0"), "bookworm", &bridge())
        .unwrap_err();
    assert!(
        matches!(error, Error::AlreadyExists { ref name } if name == "juju-machine-0"),
        "{error}"
    );
    assert_eq!(
        manager.list_containers().unwrap().len(),
        1,
        "the first VM is untouched"
    );
}

#[test]
fn destroy_is_idempotent() {
    let driver = TestDriver::new();
    let manager = driver.manager("juju");
    let missing = InstanceId::new("juju-machine-9").unwrap();
    manager.destroy_container(&missing).unwrap();

    let (instance, _) = manager
        .create_container(&machine("0"), "bookworm", &bridge())
        .unwrap();
    manager.destroy_container(&instance.id).unwrap();
    manager.destroy_container(&instance.id).unwrap();
    assert!(domain_names(manager.connection()).is_empty());
}

#[test]
fn destroy_with_volumes_already_gone() {
    let driver = TestDriver::new();
    let manager = driver.manager("juju");
    let (instance, _) = manager
        .create_container(&machine("0"), "bookworm", &bridge())
        .unwrap();
    let pool = berth_virt::handle::PoolHandle::new(
        manager
            .connection()
            .lookup_storage_pool_by_name(TEST_POOL)
            .unwrap(),
    );
    let root = berth_virt::handle::VolumeHandle::new(
        pool.lookup_storage_vol_by_name("juju-machine-0-root.qcow2")
            .unwrap(),
    );
    root.delete(0).unwrap();
    std::fs::remove_dir_all(driver.path("containers").join("juju-machine-0")).unwrap();
    manager.destroy_container(&instance.id).unwrap();
    assert!(domain_names(manager.connection()).is_empty());
    assert!(
        !volume_names(manager.connection())
            .iter()
            .any(|v| v.starts_with("juju-machine-0"))
    );
}

#[test]
fn destroy_never_follows_directory_symlink() {
    let driver = TestDriver::new();
    let manager = driver.manager("juju");
    let outside = driver.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious"), b"keep").unwrap();
    std::fs::create_dir_all(driver.path("containers")).unwrap();
    std::os::unix::fs::symlink(&outside, driver.path("containers").join("juju-machine-7")).unwrap();

    manager
        .destroy_container(&InstanceId::new("juju-machine-7").unwrap())
        .unwrap();
    assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep");
    let moved = driver.path("removed").join("juju-machine-7");
    assert!(
        std::fs::symlink_metadata(&moved)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn hostile_manager_names_rejected() {
    let driver = TestDriver::new();
    for name in [
        "Best_#1",
        "SWEET!",
        "almost_lions?",
        "00340599maas",
        "29-test",
        "juju-",
        "a<b",
        "a&b",
    ] {
        let error = VirtManager::new(driver.config(name)).unwrap_err();
        assert!(error.is_invalid_input(), "{name:?}: {error}");
        assert!(
            error.to_string().contains("manager name"),
            "{name:?}: {error}"
        );
    }
    for name in ["Best_#1", "SWEET!", "almost_lions?", "x<y", "x\"y"] {
        assert!(InstanceId::new(name).is_err(), "{name:?}");
    }
}

#[test]
fn long_derived_name_rejected_before_create() {
    let driver = TestDriver::new();
    let long = format!("a{}", "b".repeat(53));
    let manager = driver.manager(&long);
    let error = manager
        .create_container(&machine("0"), "bookworm", &bridge())
        .unwrap_err();
    assert!(error.is_invalid_input(), "{error}");
    assert!(error.to_string().contains("at most 63"), "{error}");
    assert!(!driver.path("containers").exists());
    assert!(volume_names(manager.connection()).is_empty());

    let fits = format!("a{}", "b".repeat(52));
    let manager = driver.manager(&fits);
    let (instance, _) = manager
        .create_container(&machine("0"), "bookworm", &bridge())
        .unwrap();
    assert_eq!(instance.id.as_str().len(), 63);
}

#[test]
fn hostile_series_rejected() {
    let driver = TestDriver::new();
    let manager = driver.manager("juju");
    for series in ["../etc", "a<b", "Bookworm", "x]]>"] {
        let error = manager
            .create_container(&machine("0"), series, &bridge())
            .unwrap_err();
        assert!(error.is_invalid_input(), "{series:?}: {error}");
    }
    assert!(!driver.path("containers").exists());
}

#[test]
fn hostile_config_values_escaped() {
    let driver = TestDriver::new();
    let cmdline = "console=ttyS0 note=\"<b>&amp;</b>\" q='x' cdata=]]> end";
    let kernel = "/boot/vm<linuz&\"'";
    let config = driver
        .config("juju")
        .with("kernel", kernel)
        .with("cmdline", cmdline);
    let manager = driver.manager_with(config);
    let (instance, _) = manager
        .create_container(&machine("0"), "bookworm", &bridge())
        .unwrap();
    let domain = domain_xml(manager.connection(), instance.id.as_str());
    assert_eq!(domain.os.kernel.as_deref(), Some(kernel));
    assert_eq!(domain.os.cmdline.as_deref(), Some(cmdline));

    let error = VirtManager::new(
        driver
            .config("juju")
            .with("kernel", "/k")
            .with("cmdline", "a\u{1}b"),
    )
    .unwrap_err();
    assert!(error.to_string().contains("control characters"), "{error}");
}

#[test]
fn network_settings_reach_domain() {
    let driver = TestDriver::new();
    let manager = driver.manager("juju");
    let network = NetworkConfig::bridge("br-test0")
        .unwrap()
        .with_mtu(9000)
        .unwrap()
        .with_mac("00:16:3E:AA:bb:01")
        .unwrap();
    let (bridged, _) = manager
        .create_container(&machine("0"), "bookworm", &network)
        .unwrap();
    let interface = &domain_xml(manager.connection(), bridged.id.as_str())
        .devices
        .interfaces[0];
    assert_eq!(interface.interface_type, InterfaceType::Bridge);
    assert_eq!(interface.source.bridge.as_deref(), Some("br-test0"));
    assert_eq!(interface.mac.as_ref().unwrap().address, "00:16:3e:aa:bb:01");
    assert_eq!(interface.mtu.unwrap().size, 9000);

    let physical = NetworkConfig::physical("veth-test1").unwrap();
    let (direct, _) = manager
        .create_container(&machine("1"), "bookworm", &physical)
        .unwrap();
    let interface = &domain_xml(manager.connection(), direct.id.as_str())
        .devices
        .interfaces[0];
    assert_eq!(interface.interface_type, InterfaceType::Direct);
    assert_eq!(interface.source.dev.as_deref(), Some("veth-test1"));
    assert_eq!(interface.source.mode.as_deref(), Some("passthrough"));
    assert_eq!(interface.mtu, None);
    let mac: berth_core::MacAddress = interface.mac.as_ref().unwrap().address.parse().unwrap();
    assert!(
        mac.is_local(),
        "generated MACs are locally administered: {mac}"
    );
}

#[test]
fn concurrent_creates_import_image_once() {
    let driver = TestDriver::new();
    let manager = driver.manager("juju");
    std::thread::scope(|scope| {
        for index in 0..8 {
            let manager = &manager;
            scope.spawn(move || {
                manager
                    .create_container(&machine(&index.to_string()), "bookworm", &bridge())
                    .unwrap();
            });
        }
    });
    assert_eq!(manager.list_containers().unwrap().len(), 8);
    let volumes = volume_names(manager.connection());
    let bases: Vec<&String> = volumes.iter().filter(|v| v.starts_with("base-")).collect();
    assert_eq!(bases.len(), 1, "{volumes:?}");
    assert!(
        !volumes.iter().any(|v| v.ends_with(".partial")),
        "{volumes:?}"
    );
    assert_eq!(volumes.len(), 1 + 8 * 2);
}

#[test]
fn url_image_downloaded_with_progress() {
    let driver = TestDriver::new();
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    let server = ImageServer::start(body.clone(), 4);
    let config = driver
        .config("juju")
        .with("image", server.url.as_str())
        .with("image-sha256", sha256_hex(&body).as_str());
    let manager = driver.manager_with(config);
    let events = Mutex::new(Vec::new());
    let progress = |event: &ProgressEvent<'_>| {
        if let ProgressEvent::Bytes { what, done, total } = event {
            events
                .lock()
                .unwrap()
                .push((what.to_string(), *done, *total));
        }
    };
    manager
        .create_container_with_progress(&machine("0"), "bookworm", &bridge(), &progress)
        .unwrap();
    manager
        .create_container_with_progress(&machine("1"), "bookworm", &bridge(), &progress)
        .unwrap();
    assert_eq!(
        server.requests.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "downloaded once"
    );
    let events = events.into_inner().unwrap();
    assert!(events.len() >= 3, "{events:?}");
    assert!(
        events.iter().all(|(what, _, _)| what == &server.url),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .all(|(_, _, total)| *total == Some(body.len() as u64)),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap().1, body.len() as u64);
    assert!(
        events.windows(2).all(|pair| pair[0].1 <= pair[1].1),
        "{events:?}"
    );
    let base = read_volume(
        manager.connection(),
        volume_names(manager.connection())
            .iter()
            .find(|v| v.starts_with("base-"))
            .unwrap(),
    );
    assert_eq!(base.capacity.value, body.len() as u64);
}

#[test]
fn url_image_with_wrong_digest_discarded() {
    let driver = TestDriver::new();
    let body = vec![7u8; 100_000];
    let server = ImageServer::start(body, 2);
    let config = driver
        .config("juju")
        .with("image", server.url.as_str())
        .with("image-sha256", "00".repeat(32).as_str());
    let manager = driver.manager_with(config);
    let error = manager
        .create_container(&machine("0"), "bookworm", &bridge())
        .unwrap_err();
    let chain = berth_core::error::error_chain(&error);
    assert!(chain.contains("SHA-256"), "{chain}");
    assert!(chain.contains(&"00".repeat(32)), "{chain}");
    assert!(
        matches!(
            error,
            Error::Step {
                step: Step::Image,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        volume_names(manager.connection()).is_empty(),
        "no base and no partial volume"
    );
    assert!(!driver.path("containers").join("juju-machine-0").exists());
}

#[test]
fn missing_image_file_leaves_nothing() {
    let driver = TestDriver::new();
    let manager = driver.manager_with(
        driver
            .config("juju")
            .with("image", "/nonexistent/berth-test.img"),
    );
    let error = manager
        .create_container(&machine("0"), "bookworm", &bridge())
        .unwrap_err();
    let chain = berth_core::error::error_chain(&error);
    assert!(chain.contains("/nonexistent/berth-test.img"), "{chain}");
    assert!(volume_names(manager.connection()).is_empty());
    assert!(!driver.path("containers").join("juju-machine-0").exists());
    assert!(domain_names(manager.connection()).is_empty());
}

#[test]
fn missing_pool_reported() {
    let driver = TestDriver::new();
    let manager = VirtManager::new(driver.config("juju")).unwrap();
    let error = manager
        .create_container(&machine("0"), "bookworm", &bridge())
        .unwrap_err();
    assert!(error.to_string().contains("initialiser"), "{error}");
    assert!(!driver.path("containers").join("juju-machine-0").exists());
}

#[test]
fn initialiser_is_idempotent() {
    let driver = TestDriver::new();
    let initialiser = berth_virt::VirtInitialiser::new(driver.config("juju")).unwrap();
    let connection = berth_virt::handle::Connection::open(&driver.uri).unwrap();
    let first = initialiser.initialise_with(&connection).unwrap();
    assert!(first.pool_defined, "{first:?}");
    assert!(first.pool_built, "{first:?}");
    assert!(first.pool_started, "{first:?}");
    assert!(first.pool_autostart_set, "{first:?}");
    assert_eq!(first.platform.virt_type, "test");
    let second = initialiser.initialise_with(&connection).unwrap();
    assert!(!second.pool_defined, "{second:?}");
    assert!(!second.pool_built, "{second:?}");
    assert!(!second.pool_started, "{second:?}");
    assert!(!second.pool_autostart_set, "{second:?}");
    let pool = berth_virt::handle::PoolHandle::new(
        connection.lookup_storage_pool_by_name(TEST_POOL).unwrap(),
    );
    assert!(pool.is_active().unwrap());
    assert!(pool.autostart().unwrap());
}

#[test]
fn daemon_unreachable_reported() {
    let error = VirtManager::new(
        berth_core::ManagerConfig::new()
            .with("name", "juju")
            .with("uri", "qemu+unix:///system?socket=/nonexistent/berth.sock"),
    )
    .unwrap_err();
    assert!(error.to_string().contains("libvirtd -d"), "{error}");
}

#[test]
fn domain_xml_round_trips_through_driver() {
    let driver = TestDriver::new();
    let manager = driver.manager_with(
        driver
            .config("juju")
            .with("kernel", "/boot/k")
            .with("initrd", "/boot/i")
            .with("cmdline", "console=ttyS0"),
    );
    let network = NetworkConfig::bridge("br-test0")
        .unwrap()
        .with_mtu(1400)
        .unwrap()
        .with_mac("02:00:00:00:00:05")
        .unwrap();
    let (instance, _) = manager
        .create_container(&machine("0"), "bookworm", &network)
        .unwrap();
    let name = instance.id.as_str();
    let console = driver.path("containers").join(name).join("console.log");
    let expected = berth_virt::spec::domain_document(&berth_virt::spec::DomainSpec {
        name,
        platform: manager.platform(),
        resources: berth_virt::spec::Resources {
            mem_mib: 512,
            cpu_cores: 1,
            root_disk_mib: 8192,
        },
        pool: TEST_POOL,
        root_volume: &format!("{name}-root.qcow2"),
        seed_volume: &format!("{name}-seed.img"),
        kernel_boot: manager.config().kernel_boot.as_ref(),
        network: &network,
        mac: network.mac().unwrap(),
        console_log: &console,
    });
    let read = domain_xml(manager.connection(), name);
    assert_eq!(
        read.without_libvirt_defaults(),
        expected.without_libvirt_defaults()
    );
    assert!(read.uuid.is_some(), "libvirt assigned a UUID");
    assert_eq!(read.devices.disks[0].disk_type, DiskType::Volume);
}

#[test]
fn pool_and_volume_xml_round_trip_through_driver() {
    let driver = TestDriver::new();
    let hostile_dir = driver.path("pool <&\"'>]]>");
    let config = driver
        .config("juju")
        .with("pool-dir", hostile_dir.to_str().unwrap());
    let connection = driver.connection(&config);
    let pool = berth_virt::handle::PoolHandle::new(
        connection.lookup_storage_pool_by_name(TEST_POOL).unwrap(),
    );
    let read: StoragePool = from_xml(&pool.xml_desc(0).unwrap()).unwrap();
    let expected = StoragePool {
        pool_type: "dir".into(),
        name: TEST_POOL.into(),
        uuid: None,
        target: berth_virt::xml::storage::PoolTarget {
            path: hostile_dir.to_str().unwrap().into(),
        },
    };
    assert_eq!(read.without_libvirt_defaults(), expected);

    let volume = StorageVolume {
        volume_type: None,
        name: "berth-test-vol<&>.qcow2".into(),
        key: None,
        capacity: berth_virt::xml::storage::Capacity::bytes(3 << 30),
        allocation: Some(berth_virt::xml::storage::Capacity::bytes(0)),
        target: Some(berth_virt::xml::storage::VolumeTarget {
            path: None,
            format: Some(berth_virt::xml::storage::Format::new("qcow2")),
        }),
        backing_store: Some(berth_virt::xml::storage::BackingStore {
            path: "/images/base \"quoted\".img".into(),
            format: Some(berth_virt::xml::storage::Format::new("raw")),
        }),
    };
    let handle = berth_virt::volumes::create_volume(&pool, &volume).unwrap();
    let read: StorageVolume = from_xml(&handle.xml_desc(0).unwrap()).unwrap();
    assert_eq!(
        read.without_libvirt_defaults(),
        volume.without_libvirt_defaults()
    );
    assert!(read.key.is_some());
    let text = to_xml(&volume).unwrap();
    assert!(
        text.contains("&lt;&amp;&gt;") || text.contains("&lt;&amp;>"),
        "{text}"
    );
}

#[test]
fn seed_volume_holds_a_cidata_image() {
    let driver = TestDriver::new();
    let manager = driver.manager("juju");
    let (instance, _) = manager
        .create_container(&machine("0"), "bookworm", &bridge())
        .unwrap();
    let seed = read_volume(manager.connection(), &format!("{}-seed.img", instance.id));
    assert_eq!(seed.format(), Some("raw"));
    // The capacity is the size of the FAT image, a whole number of sectors.
    assert_eq!(seed.capacity.value % 512, 0);
    assert!(seed.capacity.value >= 64 * 512);
    let name = container_name("juju", "0").unwrap();
    assert_eq!(instance.id.as_str(), name);
}
