//! The NoCloud seed in the container's root file system.
//!
//! cloud-init's NoCloud data source reads `user-data`, `meta-data` and,
//! when present, `network-config` from
//! `/var/lib/cloud/seed/nocloud-net/`. The files are written into the
//! clone's own layer before it starts: for an overlay clone that is the
//! upper directory, which overlayfs merges over the template in the
//! running container.

use std::path::{Path, PathBuf};

use berth_core::error::BoxError;
use berth_core::machine::InterfaceInfo;

use crate::container::Container;
use crate::create::{create_dirs, write_new_file};

/// Seed directory, relative to the root file system.
pub const SEED_DIR: &str = "var/lib/cloud/seed/nocloud-net";

/// Returns the meta-data of container `name`. Container names are hostname
/// labels, so they need no escaping, but they are quoted anyway so that no
/// name can read as a YAML boolean or number.
pub fn meta_data(name: &str) -> String {
    format!("instance-id: \"{name}\"\nlocal-hostname: \"{name}\"\n")
}

/// Returns a network-config (version 2) that gives the first NIC the
/// machine's static address. The values were validated before, and each is
/// written as a JSON string, which YAML reads as the same string.
pub fn network_config(interface: &InterfaceInfo, mac: Option<&str>) -> String {
    let quote = |text: &str| serde_json::to_string(text).expect("a string serialises");
    let mut text = format!("version: 2\nethernets:\n  {}:\n", quote(&interface.name));
    if let Some(mac) = mac {
        text.push_str(&format!("    match:\n      macaddress: {}\n", quote(mac)));
        text.push_str(&format!("    set-name: {}\n", quote(&interface.name)));
    }
    text.push_str(&format!("    addresses: [{}]\n", quote(&interface.address)));
    if let Some(gateway) = &interface.gateway {
        text.push_str(&format!(
            "    routes:\n      - to: default\n        via: {}\n",
            quote(gateway)
        ));
    }
    if !interface.dns_servers.is_empty() {
        let servers: Vec<String> = interface
            .dns_servers
            .iter()
            .map(|server| quote(server))
            .collect();
        text.push_str(&format!(
            "    nameservers:\n      addresses: [{}]\n",
            servers.join(", ")
        ));
    }
    if let Some(mtu) = interface.mtu {
        text.push_str(&format!("    mtu: {mtu}\n"));
    }
    text
}

/// Returns the directory that contains the container's own files: the upper
/// directory of an overlay root file system, or the root file system
/// itself. It must lie inside the container's directory in `lxc_path`, so
/// a seed never lands in the template or elsewhere.
pub fn writable_rootfs(container: &Container, lxc_path: &Path) -> Result<PathBuf, BoxError> {
    let spec = container
        .get_config_item("lxc.rootfs.path")?
        .ok_or_else(|| format!("container {} has no lxc.rootfs.path", container.name()))?;
    // liblxc returns `overlay:LOWER:UPPER` from a handle whose clone set
    // it, and `LOWER:UPPER` (type stripped) from one that loaded the file.
    let bare = ["overlay:", "overlayfs:", "dir:", "btrfs:"]
        .iter()
        .find_map(|prefix| spec.strip_prefix(prefix))
        .unwrap_or(&spec);
    if !bare.starts_with('/') {
        return Err(
            format!("root file system {spec:?} cannot be written without mounting it").into(),
        );
    }
    let path = bare.rsplit_once(':').map_or(bare, |(_, upper)| upper);
    let path = PathBuf::from(path);
    let own = lxc_path.join(container.name());
    if !path.starts_with(&own)
        || path
            .components()
            .any(|part| part == std::path::Component::ParentDir)
    {
        return Err(format!(
            "root file system layer {} is outside {}",
            path.display(),
            own.display()
        )
        .into());
    }
    Ok(path)
}

/// Writes the seed files into the container's root file system. user-data
/// is mode 0600 because it contains the agent's password.
pub fn write_seed(
    container: &Container,
    lxc_path: &Path,
    user_data: &[u8],
    meta_data: &str,
    network_config: Option<&str>,
) -> Result<(), BoxError> {
    let rootfs = writable_rootfs(container, lxc_path)?;
    let directory = rootfs.join(SEED_DIR);
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| -> BoxError { Box::new(berth_core::Error::io(action, path, source)) }
    };
    create_dirs(&directory).map_err(io("create seed directory", &directory))?;
    let user_data_path = directory.join("user-data");
    write_new_file(&user_data_path, user_data, 0o600).map_err(io("write seed", &user_data_path))?;
    let meta_data_path = directory.join("meta-data");
    write_new_file(&meta_data_path, meta_data.as_bytes(), 0o644)
        .map_err(io("write seed", &meta_data_path))?;
    if let Some(network_config) = network_config {
        let path = directory.join("network-config");
        write_new_file(&path, network_config.as_bytes(), 0o644).map_err(io("write seed", &path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_data_quotes_name() {
        assert_eq!(
            meta_data("juju-machine-0"),
            "instance-id: \"juju-machine-0\"\nlocal-hostname: \"juju-machine-0\"\n"
        );
    }

    #[test]
    fn network_config_has_static_address() {
        let interface = InterfaceInfo {
            name: "eth0".into(),
            mac: None,
            address: "10.0.3.5/24".into(),
            gateway: Some("10.0.3.1".into()),
            dns_servers: vec!["10.0.3.2".into()],
            mtu: Some(9000),
        };
        let text = network_config(&interface, Some("00:16:3e:aa:bb:01"));
        assert!(
            text.starts_with("version: 2\nethernets:\n  \"eth0\":\n"),
            "{text}"
        );
        assert!(text.contains("macaddress: \"00:16:3e:aa:bb:01\""), "{text}");
        assert!(text.contains("addresses: [\"10.0.3.5/24\"]"), "{text}");
        assert!(text.contains("via: \"10.0.3.1\""), "{text}");
        assert!(text.contains("mtu: 9000"), "{text}");
    }
}
