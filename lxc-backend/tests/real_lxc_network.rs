//! NIC configuration on real containers: bridge MTUs, a missing bridge and
//! a host NIC handed to the container.

mod common;

use berth_core::{Error, InstanceId, Manager, NetworkConfig};
use berth_lxc::LxcManager;
use berth_lxc::bridge;
use berth_lxc::container::ContainerState;
use berth_lxc::template::TEMPLATE_PREFIX;
use common::{TestEnv, attach, bridge_ports, entries, machine, state};

fn host_mtu(device: &str) -> u32 {
    bridge::link(device)
        .unwrap()
        .unwrap_or_else(|| panic!("no device {device}"))
        .mtu
}

fn container_mtu(env: &TestEnv, name: &str) -> u32 {
    attach(&env.lxc_path(), name, &["cat", "/sys/class/net/eth0/mtu"])
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn jumbo_bridge_and_jumbo_nic() {
    let env = TestEnv::new("mtu9k", Some(9000));
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge)
        .unwrap()
        .with_mtu(9000)
        .unwrap();
    manager
        .create_container(&machine("0"), "", &network)
        .unwrap();

    let ports = bridge_ports(&env.bridge);
    assert_eq!(ports.len(), 1, "bridge ports {ports:?}");
    assert_eq!(host_mtu(&ports[0]), 9000, "host end of the veth");
    assert_eq!(
        container_mtu(&env, "juju-machine-0"),
        9000,
        "container end of the veth"
    );
    assert_eq!(host_mtu(&env.bridge), 9000, "bridge");
    manager
        .destroy_container(&InstanceId::new("juju-machine-0").unwrap())
        .unwrap();
}

#[test]
fn jumbo_bridge_keeps_mtu_with_small_nic() {
    let env = TestEnv::new("mtu15", Some(9000));
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge)
        .unwrap()
        .with_mtu(1500)
        .unwrap();
    manager
        .create_container(&machine("0"), "", &network)
        .unwrap();

    assert_eq!(
        container_mtu(&env, "juju-machine-0"),
        1500,
        "container end of the veth"
    );
    let ports = bridge_ports(&env.bridge);
    assert_eq!(ports.len(), 1, "bridge ports {ports:?}");
    assert_eq!(host_mtu(&ports[0]), 1500, "host end of the veth");
    assert_eq!(
        host_mtu(&env.bridge),
        9000,
        "the bridge must keep its MTU when a 1500 port joins"
    );
    manager
        .destroy_container(&InstanceId::new("juju-machine-0").unwrap())
        .unwrap();
}

#[test]
fn nic_mac_address_applied() {
    let env = TestEnv::new("mac", None);
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge)
        .unwrap()
        .with_mac("00:16:3E:AA:bb:01")
        .unwrap();
    manager
        .create_container(&machine("0"), "", &network)
        .unwrap();
    let mac = attach(
        &env.lxc_path(),
        "juju-machine-0",
        &["cat", "/sys/class/net/eth0/address"],
    );
    assert_eq!(mac.trim(), "00:16:3e:aa:bb:01");
    manager
        .destroy_container(&InstanceId::new("juju-machine-0").unwrap())
        .unwrap();
}

#[test]
fn missing_bridge_rejected_then_works() {
    let env = TestEnv::without_bridge("nobr");
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();

    let error = manager
        .create_container(&machine("0"), "", &network)
        .unwrap_err();
    assert!(error.is_invalid_input(), "{error:?}");
    let Error::Invalid(problem) = &error else {
        panic!("expected one invalid value, got {error:?}")
    };
    assert_eq!(problem.field, "bridge");
    assert_eq!(problem.value, env.bridge);
    assert!(error.to_string().contains(&env.bridge), "{error}");
    assert!(error.to_string().contains("does not exist"), "{error}");
    assert!(
        entries(&env.lxc_path()).is_empty(),
        "lxc path holds {:?}",
        entries(&env.lxc_path())
    );
    assert!(!env.dirs().containers_root().join("juju-machine-0").exists());

    bridge::ensure_bridge(&env.bridge, None).unwrap();
    manager
        .create_container(&machine("0"), "", &network)
        .unwrap();
    assert_eq!(
        state(&env.lxc_path(), "juju-machine-0"),
        ContainerState::Running
    );
    manager
        .destroy_container(&InstanceId::new("juju-machine-0").unwrap())
        .unwrap();
}

#[test]
fn physical_nic_moved_in_and_back() {
    let env = TestEnv::without_bridge("phys");
    let (host_end, peer) = (format!("{}a", env.bridge), format!("{}b", env.bridge));
    bridge::create_veth_pair(&host_end, &peer).unwrap();
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let network = NetworkConfig::physical(&host_end)
        .unwrap()
        .with_mtu(1400)
        .unwrap();

    manager
        .create_container(&machine("0"), "", &network)
        .unwrap();
    let name = "juju-machine-0";
    assert!(
        bridge::link(&host_end).unwrap().is_none(),
        "{host_end} is still in the host's namespace"
    );
    assert_eq!(container_mtu(&env, name), 1400);
    let operstate = attach(
        &env.lxc_path(),
        name,
        &["cat", "/sys/class/net/eth0/operstate"],
    );
    assert_ne!(operstate.trim(), "", "eth0 has no state");

    manager
        .destroy_container(&InstanceId::new(name).unwrap())
        .unwrap();
    // liblxc hands the device back when the container stops; the kernel
    // may take a moment to finish the move.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while bridge::link(&host_end).unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        bridge::link(&host_end).unwrap().is_some(),
        "{host_end} did not come back to the host"
    );
    let left: Vec<String> = entries(&env.lxc_path())
        .into_iter()
        .filter(|entry| !entry.starts_with(TEMPLATE_PREFIX) && !entry.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "lxc path holds {left:?}");
}

#[test]
fn physical_nic_missing_rejected() {
    let env = TestEnv::without_bridge("physno");
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let network = NetworkConfig::physical(&format!("{}a", env.bridge)).unwrap();
    let error = manager
        .create_container(&machine("0"), "", &network)
        .unwrap_err();
    assert!(error.is_invalid_input(), "{error:?}");
    assert!(error.to_string().contains("btphysnoa"), "{error}");
}
