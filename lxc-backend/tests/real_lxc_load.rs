//! Load and races: many threads creating and destroying at once, two
//! processes sharing one manager name, and destroys racing creates of the
//! same name. Each ends with nothing left on the host.
//!
//! `BERTH_LOAD_SECONDS` sets how long the thread load runs (default 60).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use berth_core::{Error, InstanceId, InstanceStatus, Manager, NetworkConfig};
use berth_lxc::LxcManager;
use berth_lxc::container::ContainerState;
use berth_lxc::fault::FaultPoint;
use common::{
    TestEnv, bridge_ports, config_under, container_entries, entries, machine, remains_of, state,
};

const CHILD_ENV: &str = "BERTH_LOAD_CHILD";
const THREADS: usize = 32;

/// Taken by every test of this file, so that the load test counts only its
/// own file descriptors.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Returns the names of the host's veth devices that are not ports of any
/// bridge, from `ip link`. A veth that liblxc failed to delete ends up
/// here. Other programs' veths on their bridges are left out.
fn loose_veths() -> Vec<String> {
    let output = Command::new("ip")
        .args(["-o", "link", "show", "type", "veth"])
        .output()
        .expect("run ip (apt-get install iproute2)");
    assert!(output.status.success(), "ip link failed");
    let mut names: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.contains(" master "))
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect();
    names.sort();
    names
}

fn id(name: &str) -> InstanceId {
    InstanceId::new(name).unwrap()
}

#[test]
fn threads_create_and_destroy_under_load() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let _serial = serial();
    let seconds: u64 = std::env::var("BERTH_LOAD_SECONDS")
        .ok()
        .map(|text| text.parse().expect("BERTH_LOAD_SECONDS is whole seconds"))
        .unwrap_or(60);
    let env = TestEnv::new("load32", None);
    let manager = Arc::new(LxcManager::new(env.config("juju")).unwrap());
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    // Build the template first, so its one-time cost is not in the load.
    manager
        .create_container(&machine("999"), "", &network)
        .unwrap();
    manager.destroy_container(&id("juju-machine-999")).unwrap();
    let fds_before = open_fds();
    let veths_before = loose_veths();

    let cycles = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..THREADS)
        .map(|index| {
            let (manager, network, cycles) = (manager.clone(), network.clone(), cycles.clone());
            std::thread::spawn(move || -> Result<u64, String> {
                let machine_id = index.to_string();
                let name = format!("juju-machine-{index}");
                let mut own = 0;
                while Instant::now() < deadline {
                    let (instance, _) = manager
                        .create_container(&machine(&machine_id), "", &network)
                        .map_err(|error| format!("create {name}: {error:?}"))?;
                    if instance.status != InstanceStatus::Running {
                        return Err(format!("{name} is {:?} after create", instance.status));
                    }
                    manager
                        .destroy_container(&instance.id)
                        .map_err(|error| format!("destroy {name}: {error:?}"))?;
                    own += 1;
                    cycles.fetch_add(1, Ordering::Relaxed);
                }
                Ok(own)
            })
        })
        .collect();
    let mut per_thread = Vec::new();
    for (index, thread) in threads.into_iter().enumerate() {
        let result = thread
            .join()
            .unwrap_or_else(|_| panic!("thread {index} panicked"));
        per_thread.push(result.unwrap_or_else(|error| panic!("thread {index}: {error}")));
    }
    let total = cycles.load(Ordering::Relaxed);
    println!(
        "load: {THREADS} threads x {seconds} s: {total} create+destroy cycles \
         ({:.1}/s), fewest per thread {}",
        total as f64 / seconds as f64,
        per_thread.iter().min().unwrap()
    );
    assert!(
        per_thread.iter().all(|&count| count > 0),
        "a thread never finished a cycle: {per_thread:?}"
    );

    assert!(manager.list_containers().unwrap().is_empty());
    assert_eq!(container_entries(&env), Vec::<String>::new());
    assert_eq!(entries(env.dirs().containers_root()), Vec::<String>::new());
    for index in 0..THREADS {
        let name = format!("juju-machine-{index}");
        assert_eq!(remains_of(&env, &name), Vec::<String>::new());
    }
    assert_eq!(bridge_ports(&env.bridge), Vec::<String>::new());
    assert_eq!(loose_veths(), veths_before, "veth devices left");
    assert!(common::template_locks_free(&env));
    let fds_after = open_fds();
    assert!(
        fds_after <= fds_before,
        "open file descriptors grew from {fds_before} to {fds_after}"
    );
}

/// The child's side of `two_processes_share_manager_name`: creates the
/// machines listed in `BERTH_LOAD_MACHINES` in the environment whose base
/// directory is in `BERTH_LOAD_CHILD`, then writes the names the manager
/// lists to `BERTH_LOAD_OUTPUT`, one a line.
#[test]
fn load_child() {
    let Ok(base) = std::env::var(CHILD_ENV) else {
        return;
    };
    let var = |key: &str| std::env::var(key).unwrap_or_else(|_| panic!("{key} not set"));
    let manager = LxcManager::new(config_under(Path::new(&base), "juju")).unwrap();
    let network = NetworkConfig::bridge(&var("BERTH_LOAD_BRIDGE")).unwrap();
    for machine_id in var("BERTH_LOAD_MACHINES").split(',') {
        manager
            .create_container(&machine(machine_id), "", &network)
            .unwrap();
        // List while the other process creates, too.
        manager.list_containers().unwrap();
    }
    let listed: Vec<String> = manager
        .list_containers()
        .unwrap()
        .into_iter()
        .map(|instance| instance.id.as_str().to_owned())
        .collect();
    std::fs::write(var("BERTH_LOAD_OUTPUT"), listed.join("\n")).unwrap();
}

#[test]
fn two_processes_share_manager_name() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let _serial = serial();
    let env = TestEnv::new("twoproc", None);
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    // A template both processes find: which process builds it is tested
    // elsewhere.
    manager
        .create_container(&machine("99"), "", &network)
        .unwrap();

    let groups = [["10", "11", "12", "13"], ["20", "21", "22", "23"]];
    let children: Vec<_> = groups
        .iter()
        .enumerate()
        .map(|(index, machines)| {
            let output = env.base.join(format!("listed-{index}"));
            let child = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "load_child", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, &env.base)
                .env("BERTH_LOAD_BRIDGE", &env.bridge)
                .env("BERTH_LOAD_MACHINES", machines.join(","))
                .env("BERTH_LOAD_OUTPUT", &output)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            (child, output)
        })
        .collect();
    for (index, (mut child, output)) in children.into_iter().enumerate() {
        let status = child.wait().unwrap();
        assert!(status.success(), "child {index}: {status}");
        let listed = std::fs::read_to_string(&output).unwrap();
        let listed: Vec<&str> = listed.lines().collect();
        for machine_id in groups[index] {
            let name = format!("juju-machine-{machine_id}");
            assert!(
                listed.contains(&name.as_str()),
                "child {index} does not list {name}: {listed:?}"
            );
        }
        assert!(
            listed.contains(&"juju-machine-99"),
            "child {index} does not list the parent's container: {listed:?}"
        );
    }

    let mut listed: Vec<String> = manager
        .list_containers()
        .unwrap()
        .into_iter()
        .map(|instance| {
            assert_eq!(instance.status, InstanceStatus::Running, "{instance:?}");
            instance.id.as_str().to_owned()
        })
        .collect();
    listed.sort();
    let mut expected: Vec<String> = groups
        .iter()
        .flatten()
        .chain(["99"].iter())
        .map(|machine_id| format!("juju-machine-{machine_id}"))
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
    assert!(manager.collect_garbage().unwrap().is_empty());
    for name in &listed {
        manager.destroy_container(&id(name)).unwrap();
        assert_eq!(remains_of(&env, name), Vec::<String>::new());
    }
    assert_eq!(bridge_ports(&env.bridge), Vec::<String>::new());
}

#[test]
fn destroy_racing_create_never_half_made() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let _serial = serial();
    let env = TestEnv::new("dracec", None);
    let manager = Arc::new(LxcManager::new(env.config("juju")).unwrap());
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    manager
        .create_container(&machine("99"), "", &network)
        .unwrap();
    manager.destroy_container(&id("juju-machine-99")).unwrap();
    let name = "juju-machine-5";

    let (mut running, mut gone) = (0, 0);
    let mut check = |round: &str| {
        if remains_of(&env, name).is_empty() {
            gone += 1;
        } else {
            assert_eq!(
                state(&env.lxc_path(), name),
                ContainerState::Running,
                "{round}: container left but not running: {:?}",
                remains_of(&env, name)
            );
            assert!(
                env.dirs().is_created(name),
                "{round}: container left without its created marker: {:?}",
                remains_of(&env, name)
            );
            running += 1;
            manager.destroy_container(&id(name)).unwrap();
        }
        assert_eq!(remains_of(&env, name), Vec::<String>::new(), "{round}");
        assert_eq!(bridge_ports(&env.bridge), Vec::<String>::new(), "{round}");
    };

    // A destroy started at each fault point of the create, given 50 ms to
    // act (or to wait) before the create goes on.
    for step in FaultPoint::CREATE_STEPS {
        let point = FaultPoint::After(step);
        let destroyer = Arc::new(Mutex::new(None));
        let hook_destroyer = destroyer.clone();
        let hook_manager = Arc::downgrade(&manager);
        manager.set_fault_hook(Some(Arc::new(move |_name: &str, at: FaultPoint| {
            if at == point {
                let manager = hook_manager.upgrade().unwrap();
                let thread =
                    std::thread::spawn(move || manager.destroy_container(&id("juju-machine-5")));
                *hook_destroyer.lock().unwrap() = Some(thread);
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        })));
        let created = manager.create_container(&machine("5"), "", &network);
        manager.set_fault_hook(None);
        let destroyed = destroyer.lock().unwrap().take().unwrap().join().unwrap();
        if let Err(error) = &created {
            assert!(
                matches!(error, Error::AlreadyExists { .. }),
                "{point}: create failed: {error:?}"
            );
        }
        destroyed.unwrap_or_else(|error| panic!("{point}: destroy failed: {error:?}"));
        check(&point.to_string());
    }

    // Destroys spread over the time a create takes, without a hook.
    let started = Instant::now();
    manager
        .create_container(&machine("5"), "", &network)
        .unwrap();
    let create_time = started.elapsed();
    manager.destroy_container(&id(name)).unwrap();
    for round in 0..24u32 {
        let barrier = Arc::new(Barrier::new(2));
        let creator = {
            let (manager, network, barrier) = (manager.clone(), network.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                manager.create_container(&machine("5"), "", &network)
            })
        };
        let destroyer = {
            let (manager, barrier) = (manager.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                std::thread::sleep(create_time * round / 20);
                manager.destroy_container(&id("juju-machine-5"))
            })
        };
        let created = creator.join().unwrap();
        let destroyed = destroyer.join().unwrap();
        if let Err(error) = &created {
            assert!(
                matches!(error, Error::AlreadyExists { .. }),
                "round {round}: create failed: {error:?}"
            );
        }
        destroyed.unwrap_or_else(|error| panic!("round {round}: destroy failed: {error:?}"));

        check(&format!("round {round}"));
    }
    println!("destroy racing create: {running} rounds left it running, {gone} removed it");
    assert_eq!(container_entries(&env), Vec::<String>::new());
}
