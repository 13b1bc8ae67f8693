//! The guest architecture and hypervisor type a manager uses, chosen once
//! from the driver's capabilities.

use berth_core::{Error, Result};
use tracing::info;

use crate::config::VirtTypeChoice;
use crate::handle::Connection;
use crate::xml::capabilities::{Capabilities, DomainCapabilities};
use crate::xml::from_xml;

/// What a manager's domains run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPlatform {
    /// Guest architecture in libvirt's spelling, such as `x86_64`.
    pub arch: String,
    /// Hypervisor type: `kvm`, `qemu`, or `test` under the test driver.
    pub virt_type: String,
    /// Why this hypervisor type was chosen, for logs.
    pub reason: String,
}

impl GuestPlatform {
    /// Returns the architecture in the agent's spelling (`amd64`, ...).
    pub fn agent_arch(&self) -> String {
        agent_arch(&self.arch)
    }
}

/// Maps a libvirt architecture name to the agent's spelling.
pub fn agent_arch(libvirt_arch: &str) -> String {
    match libvirt_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "i686" => "i386",
        "ppc64le" => "ppc64el",
        other => other,
    }
    .to_owned()
}

/// Chooses the guest platform of `connection`.
///
/// The architecture is the host CPU's when the driver runs fully
/// virtualised (`hvm`) guests of it, else the first `hvm` architecture the
/// driver offers. With [`VirtTypeChoice::Auto`] the hypervisor type is
/// `kvm` when the capabilities list it and the domain capabilities for
/// `kvm` can be read (libvirt reads them only when it can open
/// `/dev/kvm`), else `qemu`, else the first type the driver offers (the
/// test driver offers only `test`).
///
/// NOTE: capabilities cannot see every broken KVM. Under nested
/// virtualisation KVM may be offered and then fail inside the guest
/// ("KVM internal error ... emulation failure"); set `virt-type=qemu` on
/// such hosts.
pub fn choose_platform(connection: &Connection, choice: VirtTypeChoice) -> Result<GuestPlatform> {
    let text = connection
        .capabilities()
        .map_err(|error| backend("read the driver's capabilities", error))?;
    let capabilities: Capabilities =
        from_xml(&text).map_err(|error| backend("parse the driver's capabilities", error))?;
    let host_arch = capabilities.host.cpu.arch.clone();
    let hvm: Vec<_> = capabilities
        .guests
        .iter()
        .filter(|guest| guest.os_type == "hvm")
        .collect();
    let guest = hvm
        .iter()
        .find(|guest| guest.arch.name == host_arch)
        .or_else(|| hvm.first())
        .ok_or_else(|| Error::Host {
            message: "the libvirt driver offers no fully virtualised (hvm) guest architecture"
                .into(),
            source: None,
        })?;
    let arch = guest.arch.name.clone();
    let offered: Vec<&str> = guest
        .arch
        .domains
        .iter()
        .map(|d| d.domain_type.as_str())
        .collect();

    let (virt_type, reason) = match choice {
        VirtTypeChoice::Kvm | VirtTypeChoice::Qemu => {
            let wanted = if choice == VirtTypeChoice::Kvm {
                "kvm"
            } else {
                "qemu"
            };
            if !offered.contains(&wanted) {
                return Err(Error::Host {
                    message: format!(
                        "virt-type {wanted} was requested, but the libvirt driver offers only {offered:?} for {arch}"
                    ),
                    source: None,
                });
            }
            (
                wanted.to_owned(),
                "set by the virt-type configuration key".to_owned(),
            )
        }
        VirtTypeChoice::Auto => auto_virt_type(connection, &arch, &offered)?,
    };
    info!(
        arch = arch.as_str(),
        virt_type = virt_type.as_str(),
        reason = reason.as_str(),
        "chose the guest platform"
    );
    Ok(GuestPlatform {
        arch,
        virt_type,
        reason,
    })
}

fn auto_virt_type(
    connection: &Connection,
    arch: &str,
    offered: &[&str],
) -> Result<(String, String)> {
    let mut kvm_problem = format!("the driver offers no kvm guests for {arch}");
    if offered.contains(&"kvm") {
        match connection.domain_capabilities(None, Some(arch), None, Some("kvm"), 0) {
            Ok(text) => match from_xml::<DomainCapabilities>(&text) {
                Ok(caps) if caps.domain == "kvm" => {
                    return Ok((
                        "kvm".into(),
                        format!("the domain capabilities offer kvm for {arch}"),
                    ));
                }
                Ok(caps) => {
                    kvm_problem =
                        format!("the domain capabilities are for {:?}, not kvm", caps.domain)
                }
                Err(error) => {
                    kvm_problem = format!("the domain capabilities could not be parsed: {error}")
                }
            },
            Err(error) => {
                kvm_problem = format!("reading the kvm domain capabilities failed: {error}")
            }
        }
    }
    if offered.contains(&"qemu") {
        return Ok((
            "qemu".into(),
            format!("software emulation, because {kvm_problem}"),
        ));
    }
    match offered.first() {
        Some(first) => Ok((
            (*first).to_owned(),
            format!("the only hypervisor type the driver offers for {arch}"),
        )),
        None => Err(Error::Host {
            message: format!("the libvirt driver offers no hypervisor type for {arch}"),
            source: None,
        }),
    }
}

/// Wraps a libvirt or parse error with what was being done.
pub(crate) fn backend(
    context: impl Into<String>,
    error: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::Backend {
        context: context.into(),
        source: Box::new(error),
    }
}
