//! A failure injected at every fault point of a create leaves nothing of
//! that create behind, and the same create then succeeds. An undo that
//! fails too is reported beside the original failure.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_core::progress::Step;
use berth_core::{Error, InstanceId, Manager, NetworkConfig};
use berth_lxc::LxcManager;
use berth_lxc::container::ContainerState;
use berth_lxc::fault::FaultPoint;
use berth_lxc::template::BUILDING_PREFIX;
use common::{
    TestEnv, bridge_ports, container_entries, entries, machine, remains_of, state,
    template_fingerprint, template_locks_free,
};

/// Returns every fault point in the order a create passes them. The
/// template build point is reached only while the template does not exist.
fn fault_points() -> Vec<FaultPoint> {
    let mut points = Vec::new();
    for step in FaultPoint::CREATE_STEPS {
        if step == Step::Template {
            points.push(FaultPoint::TemplateBuilt);
        }
        points.push(FaultPoint::After(step));
    }
    points
}

fn fail_at(target: FaultPoint) -> Arc<berth_lxc::fault::FaultHook> {
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
    let env = TestEnv::new("inject", None);
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    let name = "juju-machine-0";
    let mut template_before = None;

    let points = fault_points();
    assert_eq!(points.len(), 10);
    for point in points {
        manager.set_fault_hook(Some(fail_at(point)));
        let error = manager
            .create_container(&machine("0"), "", &network)
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

        assert_eq!(remains_of(&env, name), Vec::<String>::new(), "{point}");
        assert_eq!(
            container_entries(&env),
            Vec::<String>::new(),
            "{point}: lxc path"
        );
        assert_eq!(
            entries(env.dirs().removed_root()),
            Vec::<String>::new(),
            "{point}: a failed create must delete, not move aside"
        );
        assert_eq!(bridge_ports(&env.bridge), Vec::<String>::new(), "{point}");
        assert!(template_locks_free(&env), "{point}: template lock held");

        let templates = template_fingerprint(&env);
        match point {
            FaultPoint::After(Step::Directory | Step::UserData | Step::Image)
            | FaultPoint::TemplateBuilt => {
                assert!(templates.is_empty(), "{point}: template published");
            }
            FaultPoint::After(Step::Template) => {
                assert_eq!(templates.len(), 1, "{point}: template not kept");
                assert!(
                    templates[0].1.iter().any(|(path, _)| path == "bin/busybox"),
                    "{point}: template has no busybox"
                );
                template_before = Some(templates);
            }
            _ => assert_eq!(
                Some(&templates),
                template_before.as_ref(),
                "{point}: template changed"
            ),
        }
        let builds: Vec<String> = entries(&env.lxc_path())
            .into_iter()
            .filter(|entry| entry.starts_with(BUILDING_PREFIX))
            .collect();
        assert_eq!(builds, Vec::<String>::new(), "{point}: template build left");
        let build_locks: Vec<String> = entries(
            berth_lxc::container::lock_file_path(&env.lxc_path(), "x")
                .parent()
                .unwrap(),
        )
        .into_iter()
        .filter(|entry| entry.contains(BUILDING_PREFIX))
        .collect();
        assert_eq!(
            build_locks,
            Vec::<String>::new(),
            "{point}: liblxc lock file of the template build left"
        );
    }

    manager.set_fault_hook(None);
    manager
        .create_container(&machine("0"), "", &network)
        .unwrap();
    assert_eq!(state(&env.lxc_path(), name), ContainerState::Running);
    assert_eq!(bridge_ports(&env.bridge).len(), 1);
    manager
        .destroy_container(&InstanceId::new(name).unwrap())
        .unwrap();
    assert_eq!(remains_of(&env, name), Vec::<String>::new());
}

/// Mounts a tmpfs at `directory`, creating it first. Removing the
/// directory that contains it then fails with EBUSY until it is unmounted.
fn pin(directory: &Path) {
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

fn unpin(directory: &Path) {
    nix::mount::umount(directory)
        .unwrap_or_else(|error| panic!("unmount {}: {error}", directory.display()));
}

/// Unmounts the pin when dropped, so a failed assert leaves no mount.
struct Pinned(PathBuf);

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = nix::mount::umount(&self.0);
    }
}

#[test]
fn undo_failure_reported_beside_cause() {
    let env = TestEnv::new("undofail", None);
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    let name = "juju-machine-1";

    // Each case pins a directory that one undo step removes, at a point
    // after that step's thing exists, then fails the create there.
    let cases = [
        (
            FaultPoint::After(Step::Seed),
            env.dirs().containers_root().join(name).join("pinned"),
            "remove ",
        ),
        (
            FaultPoint::After(Step::Start),
            env.lxc_path().join(name).join("pinned"),
            "destroy clone",
        ),
    ];
    for (target, pinned, undo_message) in cases {
        let pin_path = pinned.clone();
        manager.set_fault_hook(Some(Arc::new(move |_name: &str, point: FaultPoint| {
            if point == target {
                pin(&pin_path);
                Err("test failure with a pinned directory".into())
            } else {
                Ok(())
            }
        })));
        let guard = Pinned(pinned.clone());
        let error = manager
            .create_container(&machine("1"), "", &network)
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
        assert!(
            undo.iter().any(|failure| failure.contains(undo_message)),
            "{target}: {undo:?}"
        );

        // What the failed undo left is found and removed once the pin is
        // gone, and the same create then succeeds.
        unpin(&pinned);
        drop(guard);
        manager.set_fault_hook(None);
        let removed = manager.collect_garbage().unwrap();
        match target {
            // The undo of the directory failed after its lock file was
            // deleted, so the directory is left unmarked and unlocked, which
            // garbage collection finds.
            FaultPoint::After(Step::Seed) => assert_eq!(
                removed,
                [InstanceId::new(name).unwrap()],
                "{target}: garbage"
            ),
            // The clone could not be destroyed, but its directory was
            // removed, so only a destroy of the name finds it.
            _ => manager
                .destroy_container(&InstanceId::new(name).unwrap())
                .unwrap(),
        }
        assert_eq!(remains_of(&env, name), Vec::<String>::new(), "{target}");
        manager
            .create_container(&machine("1"), "", &network)
            .unwrap();
        assert_eq!(state(&env.lxc_path(), name), ContainerState::Running);
        manager
            .destroy_container(&InstanceId::new(name).unwrap())
            .unwrap();
        assert_eq!(remains_of(&env, name), Vec::<String>::new(), "{target}");
    }
    assert_eq!(container_entries(&env), Vec::<String>::new());
}
