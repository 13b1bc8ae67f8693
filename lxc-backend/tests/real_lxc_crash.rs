//! A create whose process is killed at any point leaves a half-made
//! container that garbage collection removes, and nothing else: not a
//! finished container, not another manager's, not a create still running
//! in another process. A template half built when its process died is
//! never used.
//!
//! The creates run in child processes: this test binary run again with
//! `CHILD_ENV` set, which makes `crash_child` create one container and
//! block forever at the chosen fault point after writing a ready file.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::progress::Step;
use berth_core::{InstanceId, Manager, NetworkConfig};
use berth_lxc::LxcManager;
use berth_lxc::container::ContainerState;
use berth_lxc::fault::FaultPoint;
use berth_lxc::template::{BUILDING_PREFIX, TEMPLATE_PREFIX};
use common::{TestEnv, bridge_ports, config_under, entries, machine, remains_of, state};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const CHILD_ENV: &str = "BERTH_CRASH_CHILD";

/// Returns the name of a fault point in the child's environment.
fn point_name(point: FaultPoint) -> String {
    match point {
        FaultPoint::After(step) => step.as_str().replace(' ', "-"),
        FaultPoint::TemplateBuilt => "template-built".into(),
    }
}

fn point_from_name(name: &str) -> FaultPoint {
    if name == "template-built" {
        return FaultPoint::TemplateBuilt;
    }
    let step = FaultPoint::CREATE_STEPS
        .into_iter()
        .find(|step| step.as_str().replace(' ', "-") == name)
        .unwrap_or_else(|| panic!("unknown fault point {name:?}"));
    FaultPoint::After(step)
}

/// The child's side: creates machine `BERTH_CRASH_MACHINE` in the test
/// environment whose base directory is in `BERTH_CRASH_CHILD`, and blocks
/// at the fault point `BERTH_CRASH_POINT` after writing the file
/// `BERTH_CRASH_READY`. Does nothing unless started as a child.
#[test]
fn crash_child() {
    let Ok(base) = std::env::var(CHILD_ENV) else {
        return;
    };
    let var = |key: &str| std::env::var(key).unwrap_or_else(|_| panic!("{key} not set"));
    let target = point_from_name(&var("BERTH_CRASH_POINT"));
    let ready = PathBuf::from(var("BERTH_CRASH_READY"));
    let bridge = var("BERTH_CRASH_BRIDGE");
    let manager = LxcManager::new(config_under(Path::new(&base), "juju")).unwrap();
    manager.set_fault_hook(Some(Arc::new(move |_name: &str, point: FaultPoint| {
        if point == target {
            std::fs::write(&ready, std::process::id().to_string()).unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        Ok(())
    })));
    let network = NetworkConfig::bridge(&bridge).unwrap();
    let result = manager.create_container(&machine(&var("BERTH_CRASH_MACHINE")), "", &network);
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
    fn start(env: &TestEnv, machine_id: &str, point: FaultPoint) -> Self {
        let ready = env
            .base
            .join(format!("ready-{}-{}", machine_id, point_name(point)));
        let _ = std::fs::remove_file(&ready);
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &env.base)
            .env("BERTH_CRASH_POINT", point_name(point))
            .env("BERTH_CRASH_READY", &ready)
            .env("BERTH_CRASH_BRIDGE", &env.bridge)
            .env("BERTH_CRASH_MACHINE", machine_id)
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

fn builds(env: &TestEnv) -> Vec<String> {
    entries(&env.lxc_path())
        .into_iter()
        .filter(|entry| entry.starts_with(BUILDING_PREFIX))
        .collect()
}

fn templates(env: &TestEnv) -> Vec<String> {
    entries(&env.lxc_path())
        .into_iter()
        .filter(|entry| entry.starts_with(TEMPLATE_PREFIX))
        .collect()
}

fn id(name: &str) -> InstanceId {
    InstanceId::new(name).unwrap()
}

#[test]
fn killed_template_build_never_used() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let env = TestEnv::new("crashtpl", None);
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();

    Paused::start(&env, "0", FaultPoint::TemplateBuilt).kill();
    let stale = builds(&env);
    assert_eq!(stale.len(), 1, "the killed build left no directory to test");
    assert!(
        env.lxc_path()
            .join(&stale[0])
            .join("rootfs/bin/busybox")
            .exists(),
        "the killed build had no root file system"
    );
    assert_eq!(
        templates(&env),
        Vec::<String>::new(),
        "published while half built"
    );
    assert!(
        manager.list_containers().unwrap().is_empty(),
        "a template build is listed"
    );

    assert_eq!(manager.collect_garbage().unwrap(), [id("juju-machine-0")]);
    assert_eq!(remains_of(&env, "juju-machine-0"), Vec::<String>::new());

    // The next create removes the stale build, with liblxc's lock file of
    // it, and builds a whole template.
    manager
        .create_container(&machine("0"), "", &network)
        .unwrap();
    assert_eq!(builds(&env), Vec::<String>::new(), "stale build kept");
    let lock = berth_lxc::container::lock_file_path(&env.lxc_path(), &stale[0]);
    assert!(!lock.exists(), "liblxc lock file of the stale build kept");
    assert_eq!(templates(&env).len(), 1);
    assert_eq!(
        state(&env.lxc_path(), "juju-machine-0"),
        ContainerState::Running
    );
    manager.destroy_container(&id("juju-machine-0")).unwrap();
}

#[test]
fn killed_create_collected_at_every_point() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let env = TestEnv::new("crash", None);
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let other = LxcManager::new(env.config("other")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();

    // Bystanders: a finished container of this manager, one of another
    // manager, and a create of this manager paused in a live process.
    manager
        .create_container(&machine("100"), "", &network)
        .unwrap();
    other.create_container(&machine("0"), "", &network).unwrap();
    let live = Paused::start(&env, "200", FaultPoint::After(Step::Seed));
    let bystanders = || {
        assert_eq!(
            state(&env.lxc_path(), "juju-machine-100"),
            ContainerState::Running
        );
        assert!(env.dirs().is_created("juju-machine-100"));
        assert_eq!(
            state(&env.lxc_path(), "other-machine-0"),
            ContainerState::Running
        );
        assert!(env.dirs().is_created("other-machine-0"));
        assert!(
            env.dirs()
                .containers_root()
                .join("juju-machine-200/cloud-init")
                .exists(),
            "the live create's directory was touched"
        );
        assert!(
            env.lxc_path().join("juju-machine-200/config").exists(),
            "the live create's clone was touched"
        );
    };

    let name = "juju-machine-1";
    for step in FaultPoint::CREATE_STEPS {
        let point = FaultPoint::After(step);
        Paused::start(&env, "1", point).kill();
        assert!(
            !remains_of(&env, name).is_empty(),
            "{point}: the killed create left nothing to collect"
        );

        let removed = manager.collect_garbage().unwrap();
        assert_eq!(removed, [id(name)], "{point}");
        assert_eq!(remains_of(&env, name), Vec::<String>::new(), "{point}");
        bystanders();
        assert_eq!(
            bridge_ports(&env.bridge).len(),
            2,
            "{point}: veths other than the bystanders'"
        );
        assert!(other.collect_garbage().unwrap().is_empty(), "{point}");

        manager
            .create_container(&machine("1"), "", &network)
            .unwrap_or_else(|error| panic!("{point}: create after collection: {error:?}"));
        assert_eq!(state(&env.lxc_path(), name), ContainerState::Running);
        manager.destroy_container(&id(name)).unwrap();
    }

    // Once its process dies, the paused create is garbage too.
    live.kill();
    assert_eq!(manager.collect_garbage().unwrap(), [id("juju-machine-200")]);
    assert_eq!(remains_of(&env, "juju-machine-200"), Vec::<String>::new());
    manager.destroy_container(&id("juju-machine-100")).unwrap();
    other.destroy_container(&id("other-machine-0")).unwrap();
    assert_eq!(common::container_entries(&env), Vec::<String>::new());
    assert_eq!(bridge_ports(&env.bridge), Vec::<String>::new());
}
