//! Listing containers, and limits from constraints.

mod common;

use std::net::IpAddr;

use berth_core::{InstanceId, InstanceStatus, Manager, NetworkConfig};
use berth_lxc::LxcManager;
use berth_lxc::container::Container;
use common::{TestEnv, machine, machine_with_address};

#[test]
fn list_shows_own_containers_with_state() {
    let env = TestEnv::new("list", None);
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let other = LxcManager::new(env.config("jujux")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();

    manager
        .create_container(&machine_with_address("0", "10.254.7.2/24"), "", &network)
        .unwrap();
    manager
        .create_container(&machine_with_address("1", "10.254.7.3/24"), "", &network)
        .unwrap();
    other.create_container(&machine("0"), "", &network).unwrap();
    Container::new("juju-machine-1", &env.lxc_path())
        .unwrap()
        .stop()
        .unwrap();

    let listed = manager.list_containers().unwrap();
    let names: Vec<&str> = listed.iter().map(|instance| instance.id.as_str()).collect();
    assert_eq!(
        names,
        ["juju-machine-0", "juju-machine-1"],
        "templates and other managers' containers must not be listed"
    );
    assert_eq!(listed[0].status, InstanceStatus::Running);
    assert_eq!(
        listed[0].addresses,
        ["10.254.7.2".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(listed[1].status, InstanceStatus::Stopped);
    assert!(listed[1].addresses.is_empty());
    let others = other.list_containers().unwrap();
    assert_eq!(others.len(), 1);
    assert_eq!(others[0].id.as_str(), "jujux-machine-0");

    for name in ["juju-machine-0", "juju-machine-1"] {
        manager
            .destroy_container(&InstanceId::new(name).unwrap())
            .unwrap();
    }
    other
        .destroy_container(&InstanceId::new("jujux-machine-0").unwrap())
        .unwrap();
    assert!(manager.list_containers().unwrap().is_empty());
}

/// Returns a cgroup v1 file of the container whose init is `pid`.
fn cgroup_file(pid: i32, controller: &str, file: &str) -> String {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let line = cgroups
        .lines()
        .find(|line| {
            line.split(':')
                .nth(1)
                .is_some_and(|names| names.split(',').any(|name| name == controller))
        })
        .unwrap_or_else(|| panic!("no {controller} cgroup in {cgroups}"));
    let path = line.splitn(3, ':').nth(2).unwrap();
    std::fs::read_to_string(format!("/sys/fs/cgroup/{controller}{path}/{file}"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn constraints_become_cgroup_limits() {
    let env = TestEnv::new("limits", None);
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    let mut config = machine("0");
    config.constraints.mem = Some(256);
    config.constraints.cpu_cores = Some(1);
    config.constraints.cpu_power = Some(50);

    let (_, hardware) = manager.create_container(&config, "", &network).unwrap();
    assert_eq!(hardware.mem, Some(256));
    assert_eq!(hardware.cpu_cores, Some(1));
    assert_eq!(hardware.cpu_power, Some(50));
    assert_eq!(hardware.virt_type.as_deref(), Some("lxc"));
    assert_eq!(
        hardware.to_string(),
        format!(
            "arch={} cpu-cores=1 cpu-power=50 mem=256M virt-type=lxc",
            berth_core::hardware::host_arch()
        )
    );

    // This host runs memory, cpuset and cpu on cgroup v1 hierarchies.
    let pid = Container::new("juju-machine-0", &env.lxc_path())
        .unwrap()
        .init_pid()
        .unwrap()
        .unwrap();
    assert_eq!(
        cgroup_file(pid, "memory", "memory.limit_in_bytes"),
        (256u64 << 20).to_string()
    );
    assert_eq!(cgroup_file(pid, "cpuset", "cpuset.cpus"), "0");
    assert_eq!(cgroup_file(pid, "cpu", "cpu.cfs_quota_us"), "50000");
    manager
        .destroy_container(&InstanceId::new("juju-machine-0").unwrap())
        .unwrap();
}

#[test]
fn impossible_constraints_rejected_up_front() {
    let env = TestEnv::new("badlim", None);
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    let mut config = machine("0");
    config.constraints.cpu_cores = Some(4096);
    config.constraints.arch = Some("s390x-not-here".into());
    let error = manager.create_container(&config, "", &network).unwrap_err();
    let text = error.to_string();
    assert!(error.is_invalid_input(), "{error:?}");
    assert!(text.contains("constraints.cpu-cores"), "{text}");
    assert!(text.contains("constraints.arch"), "{text}");
    assert!(
        common::entries(&env.lxc_path()).is_empty(),
        "something was made: {:?}",
        common::entries(&env.lxc_path())
    );
}

#[test]
fn bad_names_rejected_before_anything() {
    let env = TestEnv::new("names", None);
    for name in ["00340599maas", "29-test", "juju-", "Best_#1", "SWEET!"] {
        let error = LxcManager::new(env.config(name)).unwrap_err();
        assert!(error.is_invalid_input(), "{name:?}: {error:?}");
    }
    let long = format!("a{}", "b".repeat(53));
    let manager = LxcManager::new(env.config(&long)).unwrap();
    let error = manager
        .create_container(
            &machine("0"),
            "",
            &NetworkConfig::bridge(&env.bridge).unwrap(),
        )
        .unwrap_err();
    assert!(error.to_string().contains("at most 63"), "{error}");
    assert!(common::entries(&env.lxc_path()).is_empty());
    assert!(!env.dirs().containers_root().exists());
}
