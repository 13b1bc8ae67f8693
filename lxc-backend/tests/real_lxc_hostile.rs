//! Hostile input on real liblxc: values with line breaks, NUL, shell or
//! XML syntax in every field that reaches a liblxc configuration item, and
//! symlinks where destroy deletes. Bad values are rejected before anything
//! is created, with the field and the rule in the message. Accepted values
//! arrive byte for byte. Destroy never deletes through a symlink.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use berth_core::machine::InterfaceInfo;
use berth_core::{InstanceId, MachineConfig, Manager, NetworkConfig};
use berth_lxc::LxcManager;
use berth_lxc::config::{
    KEY_BACKING_STORE, KEY_CONTAINERS_DIR, KEY_EXTRA_CONFIG, KEY_IMAGE, KEY_IMAGE_CACHE_DIR,
    KEY_LOG_DIR, KEY_LXC_PATH, KEY_NAME, KEY_REMOVED_DIR,
};
use berth_lxc::container::Container;
use common::{TestEnv, bridge_ports, container_entries, entries, machine, remains_of};

/// Values that must never reach a liblxc configuration line.
const LINE_INJECTIONS: [&str; 4] = [
    "x\nlxc.hook.pre-start = /bin/sh -c 'touch /tmp/berth-pwned'",
    "x\rlxc.hook.pre-start=/bin/false",
    "x\0y",
    "x\u{85}y",
];

fn assert_nothing_created(env: &TestEnv, what: &str) {
    assert_eq!(container_entries(env), Vec::<String>::new(), "{what}");
    assert_eq!(
        entries(env.dirs().containers_root()),
        Vec::<String>::new(),
        "{what}"
    );
    assert_eq!(bridge_ports(&env.bridge), Vec::<String>::new(), "{what}");
    assert!(
        !Path::new("/tmp/berth-pwned").exists(),
        "{what}: an injected hook ran"
    );
}

#[test]
fn hostile_manager_config_rejected() {
    let env = TestEnv::without_bridge("hcfg");
    let mut cases: Vec<(&str, String)> = Vec::new();
    for key in [
        KEY_LXC_PATH,
        KEY_LOG_DIR,
        KEY_CONTAINERS_DIR,
        KEY_REMOVED_DIR,
        KEY_IMAGE_CACHE_DIR,
    ] {
        for value in LINE_INJECTIONS {
            cases.push((key, format!("/tmp/berth-{value}")));
        }
        cases.push((key, "/tmp/a b".into()));
        cases.push((key, "relative/path".into()));
        cases.push((key, "/tmp/../etc".into()));
    }
    for value in LINE_INJECTIONS {
        cases.push((KEY_NAME, format!("juju{value}")));
        // A newline separates extra-config entries by design, so only the
        // other injections are hostile there.
        if !value.contains('\n') {
            cases.push((KEY_EXTRA_CONFIG, format!("lxc.environment=A{value}")));
        }
        cases.push((KEY_IMAGE, format!("/tmp/rootfs{value}.tar")));
    }
    for value in ["juju$(id)", "juju<a>", "juju;rm", "juju'", "juju`x`"] {
        cases.push((KEY_NAME, value.into()));
    }
    for value in [
        "hostname=x",
        "lxc.net.0.link br0",
        "lxc.a b=1",
        "lxc.environment",
    ] {
        cases.push((KEY_EXTRA_CONFIG, value.into()));
    }
    cases.push((KEY_BACKING_STORE, "overlay\n".into()));

    for (key, value) in &cases {
        let error = LxcManager::new(env.config("juju").with(*key, value.as_str()))
            .expect_err(&format!("{key} = {value:?} was accepted"));
        assert!(error.is_invalid_input(), "{key} = {value:?}: {error:?}");
        let text = error.to_string();
        let field = if *key == KEY_NAME {
            "manager name"
        } else {
            key
        };
        assert!(text.contains(field), "{key} = {value:?}: {text}");
    }
    println!("manager config: {} hostile values rejected", cases.len());
    assert_eq!(entries(&env.lxc_path()), Vec::<String>::new());
    assert!(!env.dirs().containers_root().exists());
}

/// Returns `machine("0")` with one interface changed by `change`.
fn with_interface(change: impl FnOnce(&mut InterfaceInfo)) -> MachineConfig {
    let mut config = common::machine_with_address("0", "10.11.12.2/24");
    change(&mut config.network_interfaces[0]);
    config
}

#[test]
fn hostile_machine_fields_rejected() {
    let env = TestEnv::new("hfields", None);
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();

    let mut cases: Vec<(&str, MachineConfig)> = Vec::new();
    for value in LINE_INJECTIONS {
        cases.push((
            "network-interfaces[0].name",
            with_interface(|nic| nic.name = format!("e{value}")),
        ));
        cases.push((
            "network-interfaces[0].mac",
            with_interface(|nic| nic.mac = Some(format!("00:16:3e:00:00:01{value}"))),
        ));
        cases.push((
            "network-interfaces[0].address",
            with_interface(|nic| nic.address = format!("10.11.12.2/24{value}")),
        ));
        cases.push((
            "network-interfaces[0].gateway",
            with_interface(|nic| nic.gateway = Some(format!("10.11.12.1{value}"))),
        ));
        let mut config = machine("0");
        config.log_dir = format!("/var/log/juju{value}").into();
        cases.push(("log-dir", config));
        let mut config = machine("0");
        config.machine_nonce = format!("nonce{value}");
        cases.push(("machine-nonce", config));
    }
    // Linux allows any printable ASCII but '/' and ':' in an interface
    // name, so shell and XML syntax is accepted there (see below).
    for name in ["../x", "eth0 x", "eth0:1", "a23456789012345678"] {
        cases.push((
            "network-interfaces[0].name",
            with_interface(|nic| nic.name = name.into()),
        ));
    }
    for mac in [
        "11:11:C0:A8:83:01",
        "FF:16:3e:00:00:01",
        "00:16:3e:00:00",
        "<mac/>",
    ] {
        cases.push((
            "network-interfaces[0].mac",
            with_interface(|nic| nic.mac = Some(mac.into())),
        ));
    }
    for mtu in [0, 67, 65_536, u32::MAX] {
        cases.push((
            "network-interfaces[0].mtu",
            with_interface(|nic| nic.mtu = Some(mtu)),
        ));
    }
    for address in ["10.11.12.2", "10.11.12.2/33", "<ip/>/24", "$(id)/24"] {
        cases.push((
            "network-interfaces[0].address",
            with_interface(|nic| nic.address = address.into()),
        ));
    }
    for log_dir in ["relative", "/var/log/a b", "/"] {
        let mut config = machine("0");
        config.log_dir = log_dir.into();
        cases.push(("log-dir", config));
    }

    for (field, config) in &cases {
        let error = manager
            .create_container(config, "", &network)
            .expect_err(&format!("{field}: accepted"));
        assert!(error.is_invalid_input(), "{field}: {error:?}");
        let text = error.to_string();
        assert!(text.contains(field), "{field}: {text}");
        assert_nothing_created(&env, field);
    }
    println!("machine fields: {} hostile values rejected", cases.len());

    // Host device names are checked when the network config is built.
    for device in [
        "br/0",
        "br\n0",
        "br\0x",
        "br 0",
        "br:0",
        "a23456789012345678",
    ] {
        let error = NetworkConfig::bridge(device).unwrap_err();
        assert!(
            error.to_string().contains("interface name"),
            "{device:?}: {error}"
        );
        assert!(NetworkConfig::physical(device).is_err(), "{device:?}");
    }
    for mtu in [0, 67, 65_536] {
        assert!(network.clone().with_mtu(mtu).is_err(), "mtu {mtu}");
    }
    for mac in [
        "11:11:C0:A8:83:01",
        "FF:16:3e:00:00:01",
        "00:16:3e:00:00:01\n",
        "<a/>",
    ] {
        assert!(network.clone().with_mac(mac).is_err(), "mac {mac:?}");
    }
    assert_nothing_created(&env, "network config");
}

#[test]
fn shell_and_xml_strings_stay_literal() {
    let env = TestEnv::new("hlit", None);
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    let hostile = [
        "$(touch /tmp/berth-pwned)",
        "`touch /tmp/berth-pwned`",
        "'; touch /tmp/berth-pwned; '",
        "\"; touch /tmp/berth-pwned; \"",
        "<!-- --><x a='1'>&amp;</x>]]>",
        "lxc.hook.pre-start = /bin/false",
        "# not a comment",
    ];
    let nic_name = "<e>;$(id)#";
    let mut config = common::machine_with_address("0", "10.11.13.2/24");
    config.network_interfaces[0].name = nic_name.into();
    for (index, value) in hostile.iter().enumerate() {
        config
            .agent_environment
            .insert(format!("HOSTILE_{index}"), (*value).into());
    }
    config
        .authorized_keys
        .push(format!("ssh-ed25519 AAAAC3Nz {}", hostile[4]));
    config.api_info.password = hostile[2].into();
    config.proxy.http = "http://proxy.example:3128/$HOME'\"".into();

    manager.create_container(&config, "", &network).unwrap();
    let name = "juju-machine-0";
    let cloud_init =
        fs::read_to_string(env.dirs().containers_root().join(name).join("cloud-init")).unwrap();
    let strings = user_data_strings(&cloud_init);
    for value in hostile {
        assert!(
            strings.iter().any(|text| text.contains(value)),
            "{value:?} not in the user data as one literal value"
        );
    }
    let lxc_config = fs::read_to_string(env.lxc_path().join(name).join("config")).unwrap();
    assert!(
        !lxc_config.contains("lxc.hook"),
        "a hook reached the container config:\n{lxc_config}"
    );
    let nic_lines: Vec<&str> = lxc_config
        .lines()
        .filter(|line| line.starts_with("lxc.net.0.name"))
        .collect();
    assert_eq!(nic_lines, [format!("lxc.net.0.name = {nic_name}")]);
    let inside = common::attach(&env.lxc_path(), name, &["cat", "/proc/net/dev"]);
    assert!(
        inside.contains(&format!("{nic_name}:")),
        "NIC {nic_name:?} not in the container:\n{inside}"
    );
    assert!(
        !Path::new("/tmp/berth-pwned").exists(),
        "a value ran as shell"
    );
    manager
        .destroy_container(&InstanceId::new(name).unwrap())
        .unwrap();
    assert_eq!(remains_of(&env, name), Vec::<String>::new());
}

/// Returns every string of a `#cloud-config` document, and every string
/// of the YAML documents that it writes as file content.
fn user_data_strings(document: &str) -> Vec<String> {
    fn collect(value: &serde_json::Value, out: &mut Vec<String>, nested: bool) {
        match value {
            serde_json::Value::String(text) => {
                out.push(text.clone());
                if !nested && let Ok(inner) = serde_saphyr::from_str::<serde_json::Value>(text) {
                    collect(&inner, out, true);
                }
            }
            serde_json::Value::Array(items) => {
                items.iter().for_each(|item| collect(item, out, nested))
            }
            serde_json::Value::Object(map) => {
                for (key, item) in map {
                    out.push(key.clone());
                    collect(item, out, nested);
                }
            }
            _ => {}
        }
    }
    let body = document
        .strip_prefix("#cloud-config\n")
        .expect("user data starts with #cloud-config");
    let parsed: serde_json::Value = serde_saphyr::from_str(body).expect("user data is YAML");
    let mut strings = Vec::new();
    collect(&parsed, &mut strings, false);
    strings
}

/// Makes a directory outside every berth directory holding one file, and
/// returns it.
fn outside_dir(env: &TestEnv, name: &str) -> std::path::PathBuf {
    let outside = env.base.join("outside").join(name);
    fs::create_dir_all(outside.join("bin")).unwrap();
    fs::write(outside.join("precious"), "keep me").unwrap();
    fs::write(outside.join("bin/busybox"), "keep me too").unwrap();
    outside
}

fn assert_outside_intact(outside: &Path, case: &str) {
    assert_eq!(
        fs::read_to_string(outside.join("precious")).ok().as_deref(),
        Some("keep me"),
        "{case}: destroy deleted through a symlink"
    );
    assert_eq!(
        fs::read_to_string(outside.join("bin/busybox"))
            .ok()
            .as_deref(),
        Some("keep me too"),
        "{case}: destroy deleted through a symlink"
    );
}

#[test]
fn destroy_never_follows_symlinks_in_lxc_path() {
    let env = TestEnv::new("hsym", None);
    let manager = LxcManager::new(env.config("juju")).unwrap();
    let copying = LxcManager::new(env.config("juju").with(KEY_BACKING_STORE, "copy")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();

    // Each case makes a container, swaps one path that destroy deletes for
    // a symlink to a directory outside, and destroys it.
    type Swap = fn(&TestEnv, &str, &Path);
    let cases: [(&str, bool, Swap); 4] = [
        ("lxc path entry", false, |env, name, outside| {
            let entry = env.lxc_path().join(name);
            // The outside copy is a whole container, config included.
            for item in entries(&entry) {
                if item == "config" {
                    fs::copy(entry.join(&item), outside.join(&item)).unwrap();
                }
            }
            fs::rename(&entry, env.base.join("moved-entry")).unwrap();
            symlink(outside, &entry).unwrap();
        }),
        ("overlay upper layer", false, |env, name, outside| {
            let container = Container::new(name, &env.lxc_path()).unwrap();
            let upper = berth_lxc::seed::writable_rootfs(&container, &env.lxc_path()).unwrap();
            fs::rename(&upper, env.base.join("moved-upper")).unwrap();
            symlink(outside, &upper).unwrap();
        }),
        ("full copy rootfs", true, |env, name, outside| {
            let rootfs = env.lxc_path().join(name).join("rootfs");
            fs::rename(&rootfs, env.base.join("moved-rootfs")).unwrap();
            symlink(outside, &rootfs).unwrap();
        }),
        ("overlay rootfs mount point", false, |env, name, outside| {
            let rootfs = env.lxc_path().join(name).join("rootfs");
            fs::remove_dir(&rootfs).unwrap();
            symlink(outside, &rootfs).unwrap();
        }),
    ];
    for (index, (case, copy, swap)) in cases.into_iter().enumerate() {
        let manager = if copy { &copying } else { &manager };
        let machine_id = index.to_string();
        let name = format!("juju-machine-{index}");
        manager
            .create_container(&machine(&machine_id), "", &network)
            .unwrap();
        Container::new(&name, &env.lxc_path())
            .unwrap()
            .stop()
            .unwrap();
        let outside = outside_dir(&env, &name);
        swap(&env, &name, &outside);

        let result = manager.destroy_container(&InstanceId::new(name.as_str()).unwrap());
        assert_outside_intact(&outside, case);
        result.unwrap_or_else(|error| panic!("{case}: destroy failed: {error:?}"));
        assert_eq!(remains_of(&env, &name), Vec::<String>::new(), "{case}");
    }
}
