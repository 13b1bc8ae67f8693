//! NoCloud seed disks.
//!
//! cloud-init's NoCloud data source reads `user-data`, `meta-data` and
//! `network-config` from a file system labelled `cidata`. berth writes them
//! into a FAT12 image built in memory ([`crate::fat`]); the manager uploads
//! it into a volume attached to the VM as a virtio disk. (A SATA CD-ROM on
//! a q35 machine would be invisible to kernels without AHCI, such as
//! Debian's cloud kernel, and cloud-init would then do nothing.)

use std::collections::BTreeMap;

use berth_core::machine::InterfaceInfo;
use berth_core::{InvalidValue, MacAddress, NetworkConfig};
use serde::Serialize;

use crate::fat::{FatFile, build_image};

/// Volume label cloud-init looks for.
pub const SEED_LABEL: &str = "cidata";
/// Name of the guest NIC when the machine configuration names none.
pub const DEFAULT_GUEST_NIC: &str = "eth0";

/// The instance's identity in `meta-data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MetaData {
    /// Changes whenever cloud-init should treat the machine as new.
    pub instance_id: String,
    /// Host name of the guest.
    pub local_hostname: String,
}

/// `network-config` in cloud-init's version 2 format (the netplan
/// format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkConfigV2 {
    /// Always 2.
    pub version: u8,
    /// Ethernet devices by configuration id.
    pub ethernets: BTreeMap<String, Ethernet>,
}

/// One Ethernet device of [`NetworkConfigV2`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Ethernet {
    /// Selects the device by MAC address.
    #[serde(rename = "match")]
    pub match_mac: MatchMac,
    /// Name the device gets.
    pub set_name: String,
    /// DHCP for IPv4.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dhcp4: Option<bool>,
    /// Static addresses with prefix length.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Routes, such as the default route.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS servers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nameservers: Option<Nameservers>,
    /// MTU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// `match: {macaddress: ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchMac {
    /// Lowercase MAC address.
    pub macaddress: String,
}

/// A route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Destination, `default` for the default route.
    pub to: String,
    /// Gateway.
    pub via: String,
}

/// `nameservers: {addresses: [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nameservers {
    /// DNS server addresses.
    pub addresses: Vec<String>,
}

/// Builds the network configuration of a VM whose single NIC has `mac`.
///
/// With no static interfaces the NIC is named `eth0` and uses DHCP. With
/// static interfaces, each becomes one device: matched by its own MAC
/// when it has one, the first one by `mac` otherwise. A NIC without any
/// network-config would make cloud-init wait about a minute for DHCP.
pub fn network_config(
    interfaces: &[InterfaceInfo],
    network: &NetworkConfig,
    mac: MacAddress,
) -> Result<NetworkConfigV2, InvalidValue> {
    let mut ethernets = BTreeMap::new();
    if interfaces.is_empty() {
        ethernets.insert(
            DEFAULT_GUEST_NIC.to_owned(),
            Ethernet {
                match_mac: MatchMac {
                    macaddress: mac.to_string(),
                },
                set_name: DEFAULT_GUEST_NIC.to_owned(),
                dhcp4: Some(true),
                addresses: Vec::new(),
                routes: Vec::new(),
                nameservers: None,
                mtu: network.mtu(),
            },
        );
    }
    for (index, interface) in interfaces.iter().enumerate() {
        let interface_mac = match &interface.mac {
            Some(text) => text.parse::<MacAddress>()?,
            None if index == 0 => mac,
            None => {
                return Err(InvalidValue::new(
                    "network interface",
                    interface.name.as_str(),
                    "needs a MAC address: only the first interface takes the VM's NIC address",
                ));
            }
        };
        let routes = interface
            .gateway
            .iter()
            .map(|gateway| Route {
                to: "default".into(),
                via: gateway.clone(),
            })
            .collect();
        let nameservers = (!interface.dns_servers.is_empty()).then(|| Nameservers {
            addresses: interface.dns_servers.clone(),
        });
        ethernets.insert(
            interface.name.clone(),
            Ethernet {
                match_mac: MatchMac {
                    macaddress: interface_mac.to_string(),
                },
                set_name: interface.name.clone(),
                dhcp4: None,
                addresses: vec![interface.address.clone()],
                routes,
                nameservers,
                mtu: interface.mtu.or(network.mtu()),
            },
        );
    }
    Ok(NetworkConfigV2 {
        version: 2,
        ethernets,
    })
}

/// The three files of a NoCloud seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// `user-data`: the rendered cloud-config.
    pub user_data: Vec<u8>,
    /// `meta-data`.
    pub meta_data: MetaData,
    /// `network-config`.
    pub network_config: NetworkConfigV2,
}

/// A failure to build a seed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// Serialising meta-data or network-config failed.
    #[error("serialise {file}")]
    Yaml {
        /// The file.
        file: &'static str,
        /// The serialiser's error.
        #[source]
        source: serde_saphyr::SerializeError,
    },
    /// The FAT image could not be built.
    #[error("build the seed image")]
    Image(#[from] crate::fat::FatError),
}

impl Seed {
    /// Returns the seed's files with their names.
    pub fn files(&self) -> Result<Vec<FatFile>, SeedError> {
        let meta = serde_saphyr::to_string(&self.meta_data).map_err(|source| SeedError::Yaml {
            file: "meta-data",
            source,
        })?;
        let network =
            serde_saphyr::to_string(&self.network_config).map_err(|source| SeedError::Yaml {
                file: "network-config",
                source,
            })?;
        Ok(vec![
            FatFile {
                name: "user-data".into(),
                data: self.user_data.clone(),
            },
            FatFile {
                name: "meta-data".into(),
                data: meta.into_bytes(),
            },
            FatFile {
                name: "network-config".into(),
                data: network.into_bytes(),
            },
        ])
    }

    /// Builds the seed disk image: a FAT12 file system labelled
    /// [`SEED_LABEL`].
    pub fn build_image(&self) -> Result<Vec<u8>, SeedError> {
        Ok(build_image(SEED_LABEL, &self.files()?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac() -> MacAddress {
        "02:16:3e:aa:bb:01".parse().unwrap()
    }

    #[test]
    fn dhcp_when_no_static_interfaces() {
        let network = NetworkConfig::bridge("br0")
            .unwrap()
            .with_mtu(9000)
            .unwrap();
        let config = network_config(&[], &network, mac()).unwrap();
        let eth0 = &config.ethernets["eth0"];
        assert_eq!(eth0.match_mac.macaddress, "02:16:3e:aa:bb:01");
        assert_eq!(eth0.dhcp4, Some(true));
        assert_eq!(eth0.mtu, Some(9000));
        let yaml = serde_saphyr::to_string(&config).unwrap();
        assert!(yaml.contains("version: 2"), "{yaml}");
        assert!(yaml.contains("set-name: eth0"), "{yaml}");
    }

    #[test]
    fn static_interfaces_mapped() {
        let interfaces = vec![
            InterfaceInfo {
                name: "ens3".into(),
                mac: None,
                address: "10.0.3.5/24".into(),
                gateway: Some("10.0.3.1".into()),
                dns_servers: vec!["10.0.3.1".into()],
                mtu: Some(1400),
            },
            InterfaceInfo {
                name: "ens4".into(),
                mac: Some("02:00:00:00:00:02".into()),
                address: "10.0.4.5/24".into(),
                gateway: None,
                dns_servers: vec![],
                mtu: None,
            },
        ];
        let network = NetworkConfig::bridge("br0").unwrap();
        let config = network_config(&interfaces, &network, mac()).unwrap();
        let first = &config.ethernets["ens3"];
        assert_eq!(first.match_mac.macaddress, mac().to_string());
        assert_eq!(first.addresses, vec!["10.0.3.5/24".to_string()]);
        assert_eq!(
            first.routes,
            vec![Route {
                to: "default".into(),
                via: "10.0.3.1".into()
            }]
        );
        assert_eq!(first.mtu, Some(1400));
        assert_eq!(
            config.ethernets["ens4"].match_mac.macaddress,
            "02:00:00:00:00:02"
        );

        let mut without_mac = interfaces.clone();
        without_mac[1].mac = None;
        let error = network_config(&without_mac, &network, mac()).unwrap_err();
        assert_eq!(error.value, "ens4");
    }

    #[test]
    fn meta_data_quotes_values() {
        let seed = Seed {
            user_data: b"#cloud-config\n".to_vec(),
            meta_data: MetaData {
                instance_id: "yes".into(),
                local_hostname: "juju-machine-0".into(),
            },
            network_config: network_config(&[], &NetworkConfig::bridge("br0").unwrap(), mac())
                .unwrap(),
        };
        let files = seed.files().unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["user-data", "meta-data", "network-config"]);
        let meta = String::from_utf8(files[1].data.clone()).unwrap();
        // A bare yes would read back as a boolean under YAML 1.1.
        assert!(
            meta.contains("instance-id: \"yes\"") || meta.contains("instance-id: 'yes'"),
            "{meta}"
        );
        assert!(meta.contains("local-hostname: juju-machine-0"), "{meta}");
        let image = seed.build_image().unwrap();
        assert_eq!(&image[43..54], b"cidata     ");
    }
}
