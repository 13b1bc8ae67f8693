//! Many creates at once from many threads.

mod common;

use std::sync::{Arc, Barrier};

use berth_core::{Error, InstanceId, InstanceStatus, Manager, NetworkConfig};
use berth_lxc::LxcManager;
use berth_lxc::config::KEY_IMAGE;
use berth_lxc::container::ContainerState;
use berth_lxc::template::{BUILDING_PREFIX, TEMPLATE_PREFIX};
use common::{Recorder, TestEnv, entries, machine, state};

/// Packs the busybox image into `<directory>/rootfs.tar.xz` and returns
/// its path.
fn busybox_tarball(directory: &std::path::Path) -> std::path::PathBuf {
    let rootfs = directory.join("busybox-rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    berth_lxc::image::busybox::build_rootfs(std::path::Path::new("/bin/busybox"), &rootfs).unwrap();
    let archive = directory.join("rootfs.tar.xz");
    let file = std::fs::File::create(&archive).unwrap();
    let mut builder = tar::Builder::new(xz2::write::XzEncoder::new(file, 1));
    builder.follow_symlinks(false);
    builder.append_dir_all(".", &rootfs).unwrap();
    builder.into_inner().unwrap().finish().unwrap();
    archive
}

#[test]
fn eight_creates_build_template_once() {
    let env = TestEnv::new("tmpl8", None);
    let archive = busybox_tarball(&env.base);
    let manager = Arc::new(
        LxcManager::new(
            env.config("juju")
                .with(KEY_IMAGE, archive.to_str().unwrap()),
        )
        .unwrap(),
    );
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    let recorder = Recorder::default();
    let barrier = Arc::new(Barrier::new(8));

    let threads: Vec<_> = (0..8)
        .map(|index| {
            let (manager, network, recorder, barrier) = (
                manager.clone(),
                network.clone(),
                recorder.clone(),
                barrier.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                manager.create_container_with_progress(
                    &machine(&index.to_string()),
                    "",
                    &network,
                    &recorder,
                )
            })
        })
        .collect();
    for (index, thread) in threads.into_iter().enumerate() {
        let (instance, _) = thread
            .join()
            .unwrap()
            .unwrap_or_else(|error| panic!("create {index}: {error:?}"));
        assert_eq!(instance.status, InstanceStatus::Running);
    }

    // Unpacking reports the archive's bytes; one unpack means one build.
    let archive_text = archive.display().to_string();
    let size = std::fs::metadata(&archive).unwrap().len();
    let unpacks = recorder
        .bytes
        .lock()
        .unwrap()
        .iter()
        .filter(|(what, done, _)| *what == archive_text && *done == size)
        .count();
    assert_eq!(unpacks, 1, "the template was unpacked {unpacks} times");
    let lxc_entries = entries(&env.lxc_path());
    let templates: Vec<&String> = lxc_entries
        .iter()
        .filter(|name| name.starts_with(TEMPLATE_PREFIX))
        .collect();
    assert_eq!(templates.len(), 1, "templates {templates:?}");
    assert!(
        !lxc_entries
            .iter()
            .any(|name| name.starts_with(BUILDING_PREFIX)),
        "unfinished build left: {lxc_entries:?}"
    );
    assert_eq!(manager.list_containers().unwrap().len(), 8);
    for index in 0..8 {
        assert_eq!(
            state(&env.lxc_path(), &format!("juju-machine-{index}")),
            ContainerState::Running
        );
        manager
            .destroy_container(&InstanceId::new(format!("juju-machine-{index}")).unwrap())
            .unwrap();
    }
}

#[test]
fn sixteen_threads_create_and_destroy() {
    let env = TestEnv::new("many16", None);
    let manager = Arc::new(LxcManager::new(env.config("juju")).unwrap());
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    let barrier = Arc::new(Barrier::new(16));

    let threads: Vec<_> = (0..16)
        .map(|index| {
            let (manager, network, barrier) = (manager.clone(), network.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                manager.create_container(&machine(&format!("{index}/lxc/{index}")), "", &network)
            })
        })
        .collect();
    for (index, thread) in threads.into_iter().enumerate() {
        thread
            .join()
            .unwrap()
            .unwrap_or_else(|error| panic!("create {index}: {error:?}"));
    }
    let listed = manager.list_containers().unwrap();
    assert_eq!(listed.len(), 16);
    assert!(
        listed
            .iter()
            .all(|instance| instance.status == InstanceStatus::Running),
        "{listed:?}"
    );
    assert_eq!(common::bridge_ports(&env.bridge).len(), 16);

    let barrier = Arc::new(Barrier::new(16));
    let threads: Vec<_> = listed
        .into_iter()
        .map(|instance| {
            let (manager, barrier) = (manager.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                manager.destroy_container(&instance.id)
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap().unwrap();
    }
    assert!(manager.list_containers().unwrap().is_empty());
    assert!(common::bridge_ports(&env.bridge).is_empty());
}

#[test]
fn same_name_race_has_one_winner() {
    let env = TestEnv::new("race", None);
    let manager = Arc::new(LxcManager::new(env.config("juju")).unwrap());
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    let barrier = Arc::new(Barrier::new(2));

    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (manager, network, barrier) = (manager.clone(), network.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                manager.create_container(&machine("3"), "", &network)
            })
        })
        .collect();
    let results: Vec<_> = threads
        .into_iter()
        .map(|thread| thread.join().unwrap())
        .collect();
    let winners = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(winners, 1, "{results:?}");
    let loser = results.into_iter().find_map(Result::err).unwrap();
    assert!(
        matches!(&loser, Error::AlreadyExists { name } if name == "juju-machine-3"),
        "{loser:?}"
    );
    assert_eq!(
        state(&env.lxc_path(), "juju-machine-3"),
        ContainerState::Running
    );
    assert!(
        env.dirs()
            .containers_root()
            .join("juju-machine-3/cloud-init")
            .exists()
    );
    manager
        .destroy_container(&InstanceId::new("juju-machine-3").unwrap())
        .unwrap();
}
