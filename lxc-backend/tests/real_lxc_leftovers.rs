//! Failed creates leave nothing behind, and destroy copes with whatever is
//! left of a container.

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use berth_core::progress::Step;
use berth_core::{Error, InstanceId, Manager, NetworkConfig};
use berth_lxc::LxcManager;
use berth_lxc::config::{KEY_BACKING_STORE, KEY_EXTRA_CONFIG};
use berth_lxc::container::{Container, ContainerState, lock_file_path};
use berth_lxc::template::{LOCK_DIR, TEMPLATE_PREFIX};
use common::{TestEnv, entries, machine, state};

/// Returns the entries of the lxc path that belong to containers: not
/// templates and not berth's lock directory.
fn container_entries(env: &TestEnv) -> Vec<String> {
    entries(&env.lxc_path())
        .into_iter()
        .filter(|entry| !entry.starts_with(TEMPLATE_PREFIX) && entry != LOCK_DIR)
        .collect()
}

#[test]
fn failed_start_leaves_nothing_and_retry_works() {
    let env = TestEnv::new("failst", None);
    // A pre-start hook that fails makes liblxc abort the start after the
    // clone, configure and seed steps have made their files.
    let failing = LxcManager::new(
        env.config("juju")
            .with(KEY_EXTRA_CONFIG, "lxc.hook.pre-start = /bin/false"),
    )
    .unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    let name = "juju-machine-0";

    let error = failing
        .create_container(&machine("0"), "", &network)
        .unwrap_err();
    let Error::Step {
        container, step, ..
    } = &error
    else {
        panic!("expected a start failure, got {error:?}")
    };
    assert_eq!(container, name);
    assert_eq!(*step, Step::Start);
    let text = berth_core::error::error_chain(&error);
    assert!(text.contains("liblxc start failed"), "{text}");
    assert!(text.contains("container.log"), "{text}");

    assert!(
        container_entries(&env).is_empty(),
        "lxc path holds {:?}",
        container_entries(&env)
    );
    assert!(
        !env.dirs().containers_root().join(name).exists(),
        "container directory left"
    );
    assert!(
        entries(env.dirs().removed_root()).is_empty(),
        "a failed create must delete, not move aside"
    );
    assert!(
        !lock_file_path(&env.lxc_path(), name).exists(),
        "liblxc lock file left"
    );
    assert!(
        common::bridge_ports(&env.bridge).is_empty(),
        "veth left on the bridge"
    );
    for lock in entries(&env.lxc_path().join(LOCK_DIR)) {
        let file = fs::File::open(env.lxc_path().join(LOCK_DIR).join(&lock)).unwrap();
        assert!(file.try_lock().is_ok(), "template lock {lock} still held");
    }

    let working = LxcManager::new(env.config("juju")).unwrap();
    working
        .create_container(&machine("0"), "", &network)
        .unwrap();
    assert_eq!(state(&env.lxc_path(), name), ContainerState::Running);
    working
        .destroy_container(&InstanceId::new(name).unwrap())
        .unwrap();
}

#[test]
fn existing_name_rejected_untouched() {
    let env = TestEnv::new("exists", None);
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    let name = "juju-machine-0";
    manager
        .create_container(&machine("0"), "", &network)
        .unwrap();
    let cloud_init = env.dirs().containers_root().join(name).join("cloud-init");
    let before = fs::read(&cloud_init).unwrap();
    let config_before = fs::read(env.lxc_path().join(name).join("config")).unwrap();

    let mut other = machine("0");
    other.machine_nonce = "another-nonce".into();
    let error = manager.create_container(&other, "", &network).unwrap_err();
    assert!(
        matches!(&error, Error::AlreadyExists { name: existing } if existing == name),
        "{error:?}"
    );
    assert_eq!(state(&env.lxc_path(), name), ContainerState::Running);
    assert_eq!(
        fs::read(&cloud_init).unwrap(),
        before,
        "cloud-init file changed"
    );
    assert_eq!(
        fs::read(env.lxc_path().join(name).join("config")).unwrap(),
        config_before,
        "config changed"
    );
    manager
        .destroy_container(&InstanceId::new(name).unwrap())
        .unwrap();
}

#[test]
fn destroy_missing_container_succeeds() {
    let env = TestEnv::without_bridge("nodest");
    let manager = LxcManager::new(env.config("juju")).unwrap();
    manager
        .destroy_container(&InstanceId::new("juju-machine-7").unwrap())
        .unwrap();
    manager
        .destroy_container(&InstanceId::new("juju-machine-7").unwrap())
        .unwrap();
    assert!(container_entries(&env).is_empty());
}

#[test]
fn destroy_of_other_manager_rejected() {
    let env = TestEnv::without_bridge("othmgr");
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let error = manager
        .destroy_container(&InstanceId::new("other-machine-0").unwrap())
        .unwrap_err();
    assert!(error.is_invalid_input(), "{error:?}");
    assert!(error.to_string().contains("juju-"), "{error}");
}

fn rootfs_layer(env: &TestEnv, name: &str) -> std::path::PathBuf {
    let container = Container::new(name, &env.lxc_path()).unwrap();
    berth_lxc::seed::writable_rootfs(&container, &env.lxc_path()).unwrap()
}

#[test]
fn destroy_after_rootfs_removed() {
    let env = TestEnv::new("norootfs", None);
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();

    // Stopped container whose own layer and rootfs mount point are gone.
    manager
        .create_container(&machine("0"), "", &network)
        .unwrap();
    Container::new("juju-machine-0", &env.lxc_path())
        .unwrap()
        .stop()
        .unwrap();
    let layer = rootfs_layer(&env, "juju-machine-0");
    fs::remove_dir_all(layer.parent().unwrap()).unwrap();
    fs::remove_dir_all(env.lxc_path().join("juju-machine-0/rootfs")).unwrap();
    manager
        .destroy_container(&InstanceId::new("juju-machine-0").unwrap())
        .unwrap();

    // Running container whose own layer is deleted underneath it.
    manager
        .create_container(&machine("1"), "", &network)
        .unwrap();
    let layer = rootfs_layer(&env, "juju-machine-1");
    fs::remove_dir_all(layer.parent().unwrap()).unwrap();
    manager
        .destroy_container(&InstanceId::new("juju-machine-1").unwrap())
        .unwrap();

    // Full-copy clone whose whole root file system is gone.
    let copying = LxcManager::new(env.config("juju").with(KEY_BACKING_STORE, "copy")).unwrap();
    copying
        .create_container(&machine("2"), "", &network)
        .unwrap();
    let layer = rootfs_layer(&env, "juju-machine-2");
    assert_eq!(
        layer,
        env.lxc_path().join("juju-machine-2/rootfs"),
        "a full copy is a plain directory"
    );
    assert!(
        layer.join("bin/busybox").is_file(),
        "the copy holds the image"
    );
    Container::new("juju-machine-2", &env.lxc_path())
        .unwrap()
        .stop()
        .unwrap();
    fs::remove_dir_all(&layer).unwrap();
    copying
        .destroy_container(&InstanceId::new("juju-machine-2").unwrap())
        .unwrap();

    assert!(
        container_entries(&env).is_empty(),
        "lxc path holds {:?}",
        container_entries(&env)
    );
    assert!(entries(env.dirs().containers_root()).is_empty());
    assert!(manager.list_containers().unwrap().is_empty());
}

#[test]
fn destroy_never_follows_symlinked_directory() {
    let env = TestEnv::new("symlink", None);
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    let name = "juju-machine-0";
    manager
        .create_container(&machine("0"), "", &network)
        .unwrap();

    // Replace the container directory with a link to a directory outside
    // the manager's roots that contains a file of its own.
    let outside = env.base.join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("precious"), "keep me").unwrap();
    let container_dir = env.dirs().containers_root().join(name);
    fs::rename(&container_dir, env.base.join("real-dir")).unwrap();
    symlink(&outside, &container_dir).unwrap();

    manager
        .destroy_container(&InstanceId::new(name).unwrap())
        .unwrap();
    assert_eq!(
        fs::read_to_string(outside.join("precious")).unwrap(),
        "keep me"
    );
    assert_eq!(entries(&outside), ["precious"]);
    let moved = env.dirs().removed_root().join(name);
    assert!(
        fs::symlink_metadata(&moved)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link itself must be moved"
    );
    assert_eq!(fs::read_link(&moved).unwrap(), outside);
    assert!(
        container_entries(&env).is_empty(),
        "lxc path holds {:?}",
        container_entries(&env)
    );
}
