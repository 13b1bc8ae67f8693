//! The initialiser and the bridge helpers on the real host.

mod common;

use berth_core::{Initialiser, ManagerConfig};
use berth_lxc::LxcInitialiser;
use berth_lxc::bridge;
use berth_lxc::config::{KEY_LOG_DIR, KEY_LXC_PATH};
use berth_lxc::initialiser::{KEY_BRIDGE, KEY_BRIDGE_MTU};
use common::TestEnv;
use nix::errno::Errno;

#[test]
fn initialiser_is_idempotent() {
    let env = TestEnv::without_bridge("init");
    let log_dir = env.base.join("var-log-juju");
    let config = ManagerConfig::new()
        .with(KEY_BRIDGE, env.bridge.as_str())
        .with(KEY_BRIDGE_MTU, "1600")
        .with(
            KEY_LXC_PATH,
            env.base.join("new-lxc-path").to_str().unwrap(),
        )
        .with(KEY_LOG_DIR, log_dir.to_str().unwrap());
    let initialiser = LxcInitialiser::new(&config).unwrap();
    assert!(
        initialiser.missing_packages().unwrap().is_empty(),
        "this host should have liblxc and busybox-static"
    );

    initialiser.initialise().unwrap();
    let first = bridge::link(&env.bridge).unwrap().expect("bridge created");
    assert!(first.is_bridge());
    assert!(first.up);
    assert_eq!(first.mtu, 1600);
    assert!(log_dir.is_dir());
    assert!(env.base.join("new-lxc-path").is_dir());

    initialiser.initialise().unwrap();
    let second = bridge::link(&env.bridge).unwrap().expect("bridge kept");
    assert_eq!(second, first, "a second run changed the bridge");
}

#[test]
fn initialiser_rejects_bad_bridge_settings() {
    common::require_root();
    for (key, value) in [
        (KEY_BRIDGE, "name/with/slash"),
        (KEY_BRIDGE, "sixteen-chars-xx"),
        (KEY_BRIDGE_MTU, "big"),
        (KEY_BRIDGE_MTU, "10"),
    ] {
        let config = ManagerConfig::new()
            .with(KEY_BRIDGE, "btok")
            .with(key, value);
        let error = LxcInitialiser::new(&config).unwrap_err();
        assert!(error.is_invalid_input(), "{key}={value}: {error:?}");
    }
}

#[test]
fn bridge_helpers_round_trip() {
    let env = TestEnv::without_bridge("brhelp");
    assert!(bridge::link(&env.bridge).unwrap().is_none());
    assert!(
        bridge::ensure_bridge(&env.bridge, Some(9000)).unwrap(),
        "first call creates"
    );
    assert!(
        !bridge::ensure_bridge(&env.bridge, Some(1500)).unwrap(),
        "second call leaves it"
    );
    assert_eq!(bridge::link(&env.bridge).unwrap().unwrap().mtu, 9000);
    bridge::set_mtu(&env.bridge, 4000).unwrap();
    assert_eq!(bridge::link(&env.bridge).unwrap().unwrap().mtu, 4000);

    let (a, b) = (format!("{}a", env.bridge), format!("{}b", env.bridge));
    bridge::create_veth_pair(&a, &b).unwrap();
    assert_eq!(
        bridge::link(&a).unwrap().unwrap().kind.as_deref(),
        Some("veth")
    );
    let error = bridge::ensure_bridge(&a, None).unwrap_err();
    assert_eq!(
        error.errno,
        Errno::EEXIST,
        "a veth of that name is not a bridge"
    );
    let error = bridge::delete_bridge(&a).unwrap_err();
    assert_eq!(
        error.errno,
        Errno::EINVAL,
        "delete_bridge must not delete a veth"
    );
    assert!(bridge::delete_link(&a).unwrap());
    assert!(
        bridge::link(&b).unwrap().is_none(),
        "deleting one end deletes the pair"
    );

    assert!(bridge::delete_bridge(&env.bridge).unwrap());
    assert!(
        !bridge::delete_bridge(&env.bridge).unwrap(),
        "deleting a missing bridge reports false"
    );
    assert!(bridge::link(&env.bridge).unwrap().is_none());
}
