//! Containers on a btrfs lxc path are btrfs snapshots of a subvolume
//! template, and destroy removes their subvolumes.

#[path = "common/btrfs.rs"]
mod btrfs;
mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_core::{Error, InstanceId, Manager, NetworkConfig};
use berth_lxc::LxcManager;
use berth_lxc::config::{KEY_BACKING_STORE, KEY_LXC_PATH};
use berth_lxc::container::ContainerState;
use berth_lxc::template::{BTRFS_SUFFIX, TEMPLATE_PREFIX, is_on_btrfs};
use btrfs::{BtrfsMount, remove_leftovers, subvolume_paths, subvolume_show};
use common::{TestEnv, attach, entries, machine, state};

const TAG: &str = "btrfs";

/// Inode number of the root directory of every btrfs subvolume.
const SUBVOLUME_ROOT_INODE: u64 = 256;

/// Returns the value of `lxc.rootfs.path` in the configuration file of
/// container `name`: liblxc's `get_config_item` drops the storage type.
fn rootfs_spec(lxc_path: &Path, name: &str) -> String {
    let config = std::fs::read_to_string(lxc_path.join(name).join("config")).unwrap();
    config
        .lines()
        .find_map(|line| line.strip_prefix("lxc.rootfs.path = "))
        .unwrap_or_else(|| panic!("{name} has no lxc.rootfs.path:\n{config}"))
        .to_owned()
}

#[test]
fn btrfs_clones_are_snapshots() {
    remove_leftovers(TAG);
    let env = TestEnv::new(TAG, None);
    let mount = BtrfsMount::new(TAG);
    let lxc_path = env.lxc_path();
    assert!(is_on_btrfs(&lxc_path).unwrap());

    // The default backing store, auto, picks btrfs on this lxc path.
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    let names = ["juju-machine-0", "juju-machine-1"];
    for (id, name) in ["0", "1"].into_iter().zip(names) {
        let (instance, _) = manager
            .create_container(&machine(id), "bookworm", &network)
            .unwrap();
        assert_eq!(instance.id.as_str(), name);
    }

    let templates: Vec<String> = entries(&lxc_path)
        .into_iter()
        .filter(|entry| entry.starts_with(TEMPLATE_PREFIX))
        .collect();
    assert_eq!(templates.len(), 1, "templates: {templates:?}");
    let template = &templates[0];
    assert!(template.ends_with(BTRFS_SUFFIX), "template {template}");
    let template_rootfs = lxc_path.join(template).join("rootfs");
    assert_eq!(
        std::fs::metadata(&template_rootfs).unwrap().ino(),
        SUBVOLUME_ROOT_INODE,
        "template root file system is not a subvolume"
    );
    assert_eq!(
        rootfs_spec(&lxc_path, template),
        format!("btrfs:{}", template_rootfs.display())
    );
    let template_volume = subvolume_show(&template_rootfs);
    assert_eq!(template_volume.parent_uuid, None);

    let mut clone_uuids = Vec::new();
    for name in names {
        assert_eq!(state(&lxc_path, name), ContainerState::Running);
        assert_eq!(attach(&lxc_path, name, &["hostname"]).trim(), name);
        let rootfs = lxc_path.join(name).join("rootfs");
        assert_eq!(
            std::fs::metadata(&rootfs).unwrap().ino(),
            SUBVOLUME_ROOT_INODE,
            "{name}: root file system is not a subvolume"
        );
        assert_eq!(
            rootfs_spec(&lxc_path, name),
            format!("btrfs:{}", rootfs.display())
        );
        let volume = subvolume_show(&rootfs);
        assert_eq!(
            volume.parent_uuid.as_deref(),
            Some(template_volume.uuid.as_str()),
            "{name}: not a snapshot of the template"
        );
        // The seed went into the snapshot, not into the template.
        assert!(rootfs.join(berth_lxc::seed::SEED_DIR).is_dir());
        assert!(!template_rootfs.join(berth_lxc::seed::SEED_DIR).exists());
        clone_uuids.push(volume.uuid);
    }
    assert_ne!(clone_uuids[0], clone_uuids[1]);

    let before = subvolume_paths(&lxc_path);
    let expected_before: Vec<String> = {
        let mut paths = vec![
            format!("{template}/rootfs"),
            format!("{}/rootfs", names[0]),
            format!("{}/rootfs", names[1]),
        ];
        paths.sort();
        paths
    };
    assert_eq!(before, expected_before);

    for name in names {
        manager
            .destroy_container(&InstanceId::new(name).unwrap())
            .unwrap();
        assert!(
            std::fs::symlink_metadata(lxc_path.join(name)).is_err(),
            "{name} is still in the lxc path"
        );
    }
    assert_eq!(
        subvolume_paths(&lxc_path),
        [format!("{template}/rootfs")],
        "destroy left subvolumes behind or removed the template's"
    );
    assert!(template_rootfs.join("bin").is_dir());

    drop(manager);
    drop(mount);
    assert!(!btrfs::is_mount_point(&lxc_path));
}

#[test]
fn explicit_btrfs_off_btrfs_rejected() {
    let env = TestEnv::new("nobtrfs", None);
    let lxc_path = env.lxc_path();
    assert!(
        !is_on_btrfs(&lxc_path).unwrap(),
        "this test needs {} off btrfs",
        lxc_path.display()
    );
    let manager = LxcManager::new(
        env.config("juju")
            .with(KEY_LXC_PATH, lxc_path.to_str().unwrap())
            .with(KEY_BACKING_STORE, "btrfs"),
    )
    .unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();

    let error = manager
        .create_container(&machine("0"), "bookworm", &network)
        .unwrap_err();
    let Error::Invalid(problem) = &error else {
        panic!("expected an invalid value, got {error}");
    };
    assert_eq!(problem.field, KEY_BACKING_STORE);
    let message = error.to_string();
    assert!(
        message.contains(lxc_path.to_str().unwrap()),
        "message does not name the lxc path: {message}"
    );
    assert!(entries(&lxc_path).is_empty(), "{:?}", entries(&lxc_path));
    assert!(entries(env.dirs().containers_root()).is_empty());
}
