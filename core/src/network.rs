//! The network a new container is attached to.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::InvalidValue;

/// Maximum length of a Linux network interface name (IFNAMSIZ less the NUL).
pub const MAX_INTERFACE_NAME_LEN: usize = 15;
/// Smallest MTU accepted: the minimum an IPv4 host must handle (RFC 791).
pub const MIN_MTU: u32 = 68;
/// Largest MTU accepted: the largest the kernel stores for a device.
pub const MAX_MTU: u32 = 65535;

/// The way the container's NIC reaches the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkKind {
    /// A virtual NIC whose host end joins a bridge.
    Bridge,
    /// A host NIC handed to the container (LXC moves it into the
    /// container; libvirt attaches a macvtap in passthrough mode).
    Physical,
}

impl NetworkKind {
    /// Returns `bridge` or `physical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bridge => "bridge",
            Self::Physical => "physical",
        }
    }
}

impl fmt::Display for NetworkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A unicast, non-zero Ethernet MAC address, printed lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddress([u8; 6]);

impl MacAddress {
    /// Creates an address from its bytes, rejecting multicast, broadcast and
    /// all-zero addresses.
    pub fn from_bytes(bytes: [u8; 6]) -> Result<Self, InvalidValue> {
        let text = format_mac(&bytes);
        if bytes == [0; 6] {
            return Err(InvalidValue::new(
                "MAC address",
                text,
                "must not be all zeros",
            ));
        }
        if bytes[0] & 0x01 != 0 {
            return Err(InvalidValue::new(
                "MAC address",
                text,
                "has the multicast bit (lowest bit of the first octet) set; a NIC needs a unicast address",
            ));
        }
        Ok(Self(bytes))
    }

    /// Returns the six bytes.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Returns true when the locally administered bit is set.
    pub fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

fn format_mac(bytes: &[u8; 6]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_mac(&self.0))
    }
}

impl FromStr for MacAddress {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rule =
            "must be six two-digit hexadecimal octets separated by ':', such as 00:16:3e:aa:bb:01";
        let parts: Vec<&str> = text.split(':').collect();
        if parts.len() != 6 {
            return Err(InvalidValue::new("MAC address", text, rule));
        }
        let mut bytes = [0u8; 6];
        for (byte, part) in bytes.iter_mut().zip(&parts) {
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(InvalidValue::new("MAC address", text, rule));
            }
            *byte = u8::from_str_radix(part, 16)
                .map_err(|_| InvalidValue::new("MAC address", text, rule))?;
        }
        Self::from_bytes(bytes).map_err(|error| InvalidValue {
            value: text.to_owned(),
            ..error
        })
    }
}

impl Serialize for MacAddress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks a Linux network interface name: 1 to 15 characters, printable
/// ASCII, no whitespace, `/` or `:`, and not `.` or `..`.
pub fn validate_interface_name(name: &str) -> Result<(), InvalidValue> {
    let reject = |rule: String| Err(InvalidValue::new("interface name", name, rule));
    if name.is_empty() {
        return reject("must not be empty".into());
    }
    if name.len() > MAX_INTERFACE_NAME_LEN {
        return reject(format!(
            "is {} bytes long, but Linux interface names hold at most {MAX_INTERFACE_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '/' | ':'))
    {
        return reject(format!(
            "contains {bad:?}; only printable ASCII other than '/', ':' and spaces is allowed"
        ));
    }
    if name == "." || name == ".." {
        return reject("must not be '.' or '..'".into());
    }
    Ok(())
}

/// Checks an MTU against [`MIN_MTU`] and [`MAX_MTU`].
pub fn validate_mtu(mtu: u32) -> Result<(), InvalidValue> {
    if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
        return Err(InvalidValue::new(
            "MTU",
            mtu.to_string(),
            format!("must be between {MIN_MTU} and {MAX_MTU}"),
        ));
    }
    Ok(())
}

/// The network of a new container: a bridge to join or a host NIC to take,
/// with an optional MTU and MAC address. Every value is checked when the
/// configuration is built, so a backend never receives an invalid one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    kind: NetworkKind,
    device: String,
    mtu: Option<u32>,
    mac: Option<MacAddress>,
}

impl NetworkConfig {
    /// Creates a configuration that joins the container's NIC to `bridge`.
    pub fn bridge(bridge: &str) -> Result<Self, InvalidValue> {
        Self::new(NetworkKind::Bridge, bridge)
    }

    /// Creates a configuration that hands host NIC `device` to the container.
    pub fn physical(device: &str) -> Result<Self, InvalidValue> {
        Self::new(NetworkKind::Physical, device)
    }

    /// Creates a configuration of `kind` on host device `device`.
    pub fn new(kind: NetworkKind, device: &str) -> Result<Self, InvalidValue> {
        validate_interface_name(device)?;
        Ok(Self {
            kind,
            device: device.to_owned(),
            mtu: None,
            mac: None,
        })
    }

    /// Sets the MTU of the container's NIC.
    pub fn with_mtu(mut self, mtu: u32) -> Result<Self, InvalidValue> {
        validate_mtu(mtu)?;
        self.mtu = Some(mtu);
        Ok(self)
    }

    /// Sets the MAC address of the container's NIC, parsed from `mac`.
    pub fn with_mac(mut self, mac: &str) -> Result<Self, InvalidValue> {
        self.mac = Some(mac.parse()?);
        Ok(self)
    }

    /// Sets the MAC address of the container's NIC.
    pub fn with_mac_address(mut self, mac: MacAddress) -> Self {
        self.mac = Some(mac);
        self
    }

    /// Returns how the NIC reaches the host.
    pub fn kind(&self) -> NetworkKind {
        self.kind
    }

    /// Returns the bridge or host NIC name.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Returns the MTU, when one was set.
    pub fn mtu(&self) -> Option<u32> {
        self.mtu
    }

    /// Returns the MAC address, when one was set.
    pub fn mac(&self) -> Option<MacAddress> {
        self.mac
    }
}

/// Prints the form [`NetworkConfig::from_str`] reads, such as
/// `bridge:br0,mtu=9000,mac=00:16:3e:aa:bb:01`.
impl fmt::Display for NetworkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.device)?;
        if let Some(mtu) = self.mtu {
            write!(f, ",mtu={mtu}")?;
        }
        if let Some(mac) = self.mac {
            write!(f, ",mac={mac}")?;
        }
        Ok(())
    }
}

/// Reads `bridge:DEV` or `physical:DEV`, followed by any of `,mtu=N` and
/// `,mac=M`, each at most once.
impl FromStr for NetworkConfig {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let form =
            "must be bridge:DEVICE or physical:DEVICE, optionally followed by ,mtu=N and ,mac=M";
        let mut parts = text.split(',');
        let head = parts.next().unwrap_or_default();
        let Some((kind, device)) = head.split_once(':') else {
            return Err(InvalidValue::new("network", text, form));
        };
        let kind = match kind {
            "bridge" => NetworkKind::Bridge,
            "physical" => NetworkKind::Physical,
            _ => return Err(InvalidValue::new("network", text, form)),
        };
        let mut config = Self::new(kind, device)?;
        let (mut seen_mtu, mut seen_mac) = (false, false);
        for option in parts {
            match option.split_once('=') {
                Some(("mtu", value)) if !seen_mtu => {
                    seen_mtu = true;
                    let mtu = value.parse::<u32>().map_err(|_| {
                        InvalidValue::new(
                            "MTU",
                            value,
                            format!("must be a number between {MIN_MTU} and {MAX_MTU}"),
                        )
                    })?;
                    config = config.with_mtu(mtu)?;
                }
                Some(("mac", value)) if !seen_mac => {
                    seen_mac = true;
                    config = config.with_mac(value)?;
                }
                _ => {
                    return Err(InvalidValue::new(
                        "network option",
                        option,
                        "must be mtu=N or mac=M, each given at most once",
                    ));
                }
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_print_lowercase() {
        assert_eq!(NetworkKind::Bridge.to_string(), "bridge");
        assert_eq!(NetworkKind::Physical.to_string(), "physical");
    }

    #[test]
    fn mac_with_multicast_bit_rejected() {
        for mac in [
            "11:11:C0:A8:83:01",
            "FF:16:3e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
            "01:00:5e:00:00:01",
        ] {
            let error = NetworkConfig::bridge("br0")
                .unwrap()
                .with_mac(mac)
                .unwrap_err();
            assert_eq!(error.value, mac);
            assert!(error.rule.contains("multicast"), "{error}");
        }
    }

    #[test]
    fn mac_all_zero_rejected() {
        let error = "00:00:00:00:00:00".parse::<MacAddress>().unwrap_err();
        assert!(error.rule.contains("all zeros"));
    }

    #[test]
    fn mac_written_lowercase() {
        let config = NetworkConfig::bridge("br0")
            .unwrap()
            .with_mac("00:16:3E:AA:bb:01")
            .unwrap();
        assert_eq!(config.mac().unwrap().to_string(), "00:16:3e:aa:bb:01");
    }

    #[test]
    fn mac_malformed_rejected() {
        for mac in [
            "",
            "00:16:3e:aa:bb",
            "00:16:3e:aa:bb:01:02",
            "0:16:3e:aa:bb:01",
            "00-16-3e-aa-bb-01",
            "zz:16:3e:aa:bb:01",
            "00:16:3e:aa:bb:+1",
            "00:16:3e:aa:bb:01\n",
        ] {
            let error = mac.parse::<MacAddress>().unwrap_err();
            assert!(error.rule.contains("hexadecimal"), "{mac:?}: {error}");
        }
    }

    #[test]
    fn interface_names_checked() {
        for name in ["br0", "eth0.100", "a", "abcdefghijklmno", "veth-x_1"] {
            NetworkConfig::physical(name).unwrap();
        }
        let cases = [
            ("", "empty"),
            ("abcdefghijklmnop", "at most 15"),
            ("br 0", "only printable"),
            ("br/0", "only printable"),
            ("br:0", "only printable"),
            ("br\n0", "only printable"),
            ("br\x000", "only printable"),
            (".", "'.' or '..'"),
            ("..", "'.' or '..'"),
            ("brü", "only printable"),
        ];
        for (name, rule) in cases {
            let error = NetworkConfig::bridge(name).unwrap_err();
            assert_eq!(error.field, "interface name");
            assert!(error.rule.contains(rule), "{name:?}: {error}");
        }
    }

    #[test]
    fn mtu_range_checked() {
        for mtu in [68, 1500, 9000, 65535] {
            assert_eq!(
                NetworkConfig::bridge("br0")
                    .unwrap()
                    .with_mtu(mtu)
                    .unwrap()
                    .mtu(),
                Some(mtu)
            );
        }
        for mtu in [0, 67, 65536, u32::MAX] {
            let error = NetworkConfig::bridge("br0")
                .unwrap()
                .with_mtu(mtu)
                .unwrap_err();
            assert!(error.rule.contains("between 68 and 65535"), "{error}");
        }
    }

    #[test]
    fn option_string_round_trips() {
        let text = "bridge:br0,mtu=9000,mac=00:16:3e:aa:bb:01";
        let config: NetworkConfig = text.parse().unwrap();
        assert_eq!(config.kind(), NetworkKind::Bridge);
        assert_eq!(config.device(), "br0");
        assert_eq!(config.mtu(), Some(9000));
        assert_eq!(config.to_string(), text);
        let physical: NetworkConfig = "physical:eth1".parse().unwrap();
        assert_eq!(physical.kind(), NetworkKind::Physical);
        assert_eq!(physical.mtu(), None);
    }

    #[test]
    fn option_string_errors() {
        for text in [
            "br0",
            "nat:br0",
            "bridge:",
            "bridge:br0,mtu=x",
            "bridge:br0,mtu=9000,mtu=1500",
            "bridge:br0,speed=10",
            "bridge:br0,",
        ] {
            assert!(text.parse::<NetworkConfig>().is_err(), "{text:?} accepted");
        }
    }
}
