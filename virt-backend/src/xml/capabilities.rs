//! The capability documents berth reads to choose a guest architecture and
//! hypervisor type (<https://libvirt.org/formatcaps.html>,
//! <https://libvirt.org/formatdomaincaps.html>). They are only parsed, never
//! written.

use serde::{Deserialize, Serialize};

use super::Document;

/// `<capabilities>`: the host and the guests its driver can run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "capabilities")]
pub struct Capabilities {
    /// The host.
    pub host: Host,
    /// One entry per OS type and architecture the driver can run.
    #[serde(rename = "guest", default)]
    pub guests: Vec<Guest>,
}

impl Document for Capabilities {
    const ROOT: &'static str = "capabilities";
}

/// `<host>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// The host CPU.
    pub cpu: HostCpu,
}

/// `<cpu>` of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCpu {
    /// Architecture in libvirt's spelling, such as `x86_64`.
    pub arch: String,
}

/// `<guest>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guest {
    /// OS type, such as `hvm`.
    pub os_type: String,
    /// The architecture and the hypervisor types that run it.
    pub arch: GuestArch,
}

/// `<arch name=...>` of a guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestArch {
    /// Architecture name.
    #[serde(rename = "@name")]
    pub name: String,
    /// Hypervisor types, such as `qemu` and `kvm`.
    #[serde(rename = "domain", default)]
    pub domains: Vec<GuestDomain>,
}

/// `<domain type=.../>` of a guest architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestDomain {
    /// Hypervisor type.
    #[serde(rename = "@type")]
    pub domain_type: String,
}

/// `<domainCapabilities>` for one emulator, architecture and hypervisor
/// type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "domainCapabilities")]
pub struct DomainCapabilities {
    /// Emulator binary.
    #[serde(default)]
    pub path: Option<String>,
    /// Hypervisor type these capabilities are for.
    pub domain: String,
    /// Default machine type.
    #[serde(default)]
    pub machine: Option<String>,
    /// Architecture.
    pub arch: String,
}

impl Document for DomainCapabilities {
    const ROOT: &'static str = "domainCapabilities";
}
