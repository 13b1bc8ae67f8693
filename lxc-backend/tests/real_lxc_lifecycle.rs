//! Create, inspect and destroy real containers on a test bridge.

mod common;

use std::fs;

use berth_core::progress::Step;
use berth_core::{InstanceId, InstanceStatus, Manager, NetworkConfig};
use berth_lxc::container::ContainerState;
use berth_lxc::seed::SEED_DIR;
use berth_lxc::template::{LOCK_DIR, TEMPLATE_PREFIX};
use berth_lxc::{CONSOLE_LOG, CONTAINER_LOG, LxcManager};
use common::{Recorder, TestEnv, attach, entries, machine, state};

#[test]
fn create_runs_and_destroy_cleans_up() {
    let env = TestEnv::new("life", None);
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    let recorder = Recorder::default();

    let (instance, hardware) = manager
        .create_container_with_progress(&machine("1/lxc/0"), "bookworm", &network, &recorder)
        .unwrap();
    let name = "juju-machine-1-lxc-0";
    assert_eq!(instance.id.as_str(), name);
    assert_eq!(instance.status, InstanceStatus::Running);
    assert_eq!(state(&env.lxc_path(), name), ContainerState::Running);
    assert_eq!(hardware.virt_type.as_deref(), Some("lxc"));
    assert_eq!(
        hardware.arch.as_deref(),
        Some(berth_core::hardware::host_arch())
    );
    assert!(hardware.mem.is_some_and(|mem| mem > 0));
    assert!(hardware.cpu_cores.is_some_and(|cores| cores > 0));
    let steps = recorder.steps.lock().unwrap().clone();
    assert_eq!(
        steps,
        [
            Step::Validate,
            Step::Directory,
            Step::UserData,
            Step::Image,
            Step::Template,
            Step::Clone,
            Step::Configure,
            Step::Seed,
            Step::Start,
            Step::Wait
        ]
    );

    // A command inside the container reads its hostname and the seed.
    assert_eq!(attach(&env.lxc_path(), name, &["hostname"]).trim(), name);
    let container_dir = env.dirs().containers_root().join(name);
    let user_data = fs::read(container_dir.join("cloud-init")).unwrap();
    assert!(user_data.starts_with(b"#cloud-config\n"));
    let inside = attach(
        &env.lxc_path(),
        name,
        &["cat", &format!("/{SEED_DIR}/user-data")],
    );
    assert_eq!(
        inside.as_bytes(),
        user_data.as_slice(),
        "seed user-data differs from the container directory's cloud-init"
    );
    let meta = attach(
        &env.lxc_path(),
        name,
        &["cat", &format!("/{SEED_DIR}/meta-data")],
    );
    assert_eq!(
        meta,
        format!("instance-id: \"{name}\"\nlocal-hostname: \"{name}\"\n")
    );
    // The host log directory is bind-mounted at the machine's log directory.
    fs::write(env.log_dir().join("probe.log"), "from host").unwrap();
    assert_eq!(
        attach(&env.lxc_path(), name, &["cat", "/var/log/juju/probe.log"]),
        "from host"
    );
    assert!(
        container_dir.join(CONSOLE_LOG).exists(),
        "no console log in {}",
        container_dir.display()
    );
    assert!(
        container_dir.join(CONTAINER_LOG).exists(),
        "no container log in {}",
        container_dir.display()
    );
    let ports = common::bridge_ports(&env.bridge);
    assert_eq!(ports.len(), 1, "bridge ports {ports:?}");

    manager
        .destroy_container(&InstanceId::new(name).unwrap())
        .unwrap();
    let left: Vec<String> = entries(&env.lxc_path())
        .into_iter()
        .filter(|entry| !entry.starts_with(TEMPLATE_PREFIX))
        .collect();
    assert_eq!(left, [LOCK_DIR], "the lxc path still holds container files");
    assert!(!container_dir.exists());
    assert!(
        env.dirs()
            .removed_root()
            .join(name)
            .join("cloud-init")
            .exists(),
        "directory not moved aside"
    );
    assert!(
        common::bridge_ports(&env.bridge).is_empty(),
        "veth left on the bridge"
    );
    for lock in entries(&env.lxc_path().join(LOCK_DIR)) {
        let file = fs::File::open(env.lxc_path().join(LOCK_DIR).join(&lock)).unwrap();
        assert!(
            file.try_lock().is_ok(),
            "template lock {lock} is still held"
        );
    }
    let liblxc_lock = berth_lxc::container::lock_file_path(&env.lxc_path(), name);
    assert!(
        !liblxc_lock.exists(),
        "liblxc lock file {} left",
        liblxc_lock.display()
    );
    assert!(manager.list_containers().unwrap().is_empty());

    // A second destroy of the same container is a success.
    manager
        .destroy_container(&InstanceId::new(name).unwrap())
        .unwrap();
}
