//! The guest architecture and hypervisor type a manager uses, chosen once
//! from the driver's capabilities and, for `kvm`, a functional test of KVM
//! on this host ([`kvm_probe`]).

pub mod kvm_probe;

use std::net::IpAddr;
use std::sync::OnceLock;

use berth_core::{Error, Result};
use tracing::{debug, info};

use self::kvm_probe::KvmProbeError;

use crate::config::VirtTypeChoice;
use crate::handle::Connection;
use crate::xml::capabilities::{Capabilities, DomainCapabilities};
use crate::xml::from_xml;

/// The guest platform of a manager's domains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPlatform {
    /// Guest architecture in libvirt's spelling, such as `x86_64`.
    pub arch: String,
    /// Hypervisor type: `kvm`, `qemu`, or `test` under the test driver.
    pub virt_type: String,
    /// The reason this hypervisor type was chosen, for logs.
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
/// `kvm` when three checks pass: the capabilities list it, the domain
/// capabilities for `kvm` can be read (libvirt reads them only when it can
/// open `/dev/kvm`), and [`kvm_probe::run_probe`] passes. Otherwise it is
/// `qemu`, else the first type the driver offers (the test driver offers
/// only `test`). The probe runs at most once per process.
///
/// The probe tests this machine's `/dev/kvm`. When the URI names another
/// host, `auto` trusts the domain capabilities alone and its reason says
/// that KVM there is untested. A `kvm` or `qemu` choice skips the probe.
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
        VirtTypeChoice::Auto => {
            let kvm_capabilities = read_kvm_capabilities(connection, &arch, &offered);
            let uri = connection
                .uri()
                .map_err(|error| backend("read the connection URI", error))?;
            decide_auto_virt_type(&arch, &offered, &kvm_capabilities, || {
                match remote_host(&uri) {
                    Some(host) => ProbeResult::NotLocal { host },
                    None => match cached_probe() {
                        Ok(()) => ProbeResult::Passed,
                        Err(error) => ProbeResult::Failed(error),
                    },
                }
            })?
        }
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

/// Returns `Ok` when the domain capabilities offer `kvm` for `arch`, else
/// why not.
fn read_kvm_capabilities(
    connection: &Connection,
    arch: &str,
    offered: &[&str],
) -> std::result::Result<(), String> {
    if !offered.contains(&"kvm") {
        return Err(format!("the driver offers no kvm guests for {arch}"));
    }
    match connection.domain_capabilities(None, Some(arch), None, Some("kvm"), 0) {
        Ok(text) => match from_xml::<DomainCapabilities>(&text) {
            Ok(caps) if caps.domain == "kvm" => Ok(()),
            Ok(caps) => Err(format!(
                "the domain capabilities are for {:?}, not kvm",
                caps.domain
            )),
            Err(error) => Err(format!(
                "the domain capabilities could not be parsed: {error}"
            )),
        },
        Err(error) => Err(format!(
            "reading the kvm domain capabilities failed: {error}"
        )),
    }
}

/// The functional KVM test's part in the `auto` choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// The test guest ran on this host's KVM and halted as expected.
    Passed,
    /// The test guest failed on this host's KVM.
    Failed(KvmProbeError),
    /// The libvirt host is `host`, not this machine, so the probe cannot
    /// test its KVM.
    NotLocal {
        /// The host part of the connection URI.
        host: String,
    },
}

/// Chooses the hypervisor type for [`VirtTypeChoice::Auto`] and returns it
/// with the reason.
///
/// `kvm_capabilities` is `Ok` when libvirt's domain capabilities offer
/// `kvm` for `arch`, else the reason they do not. `probe` runs only in that
/// `Ok` case. KVM is chosen when the probe passes, or when the host is
/// remote and the probe cannot run. Otherwise the type is `qemu` when
/// offered, else the first offered type.
pub fn decide_auto_virt_type(
    arch: &str,
    offered: &[&str],
    kvm_capabilities: &std::result::Result<(), String>,
    probe: impl FnOnce() -> ProbeResult,
) -> Result<(String, String)> {
    let kvm_problem = match kvm_capabilities {
        Err(problem) => problem.clone(),
        Ok(()) => match probe() {
            ProbeResult::Passed => {
                return Ok((
                    "kvm".into(),
                    format!(
                        "the domain capabilities offer kvm for {arch} and a test guest ran on KVM"
                    ),
                ));
            }
            ProbeResult::NotLocal { host } => {
                return Ok((
                    "kvm".into(),
                    format!(
                        "the domain capabilities of {host} offer kvm for {arch}; KVM there is untested, because the KVM probe runs only on the local host"
                    ),
                ));
            }
            ProbeResult::Failed(error) => {
                format!("the domain capabilities offer kvm, but the KVM probe failed: {error}")
            }
        },
    };
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

/// Runs [`kvm_probe::run_probe`] on the first call and returns its result
/// on every call.
fn cached_probe() -> std::result::Result<(), KvmProbeError> {
    static RESULT: OnceLock<std::result::Result<(), KvmProbeError>> = OnceLock::new();
    RESULT
        .get_or_init(|| {
            let result = kvm_probe::run_probe();
            match &result {
                Ok(()) => debug!("the KVM probe passed"),
                Err(error) => debug!(%error, "the KVM probe failed"),
            }
            result
        })
        .clone()
}

/// Returns the host of a libvirt URI such as `qemu+ssh://user@host/system`,
/// or `None` when the URI names no host, `localhost` or a loopback address,
/// which all reach the daemon on this machine.
pub fn remote_host(uri: &str) -> Option<String> {
    let (_, rest) = uri.split_once("://")?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if host.is_empty() || host.eq_ignore_ascii_case("localhost") {
        return None;
    }
    match host.parse::<IpAddr>() {
        Ok(address) if address.is_loopback() => None,
        _ => Some(host.to_owned()),
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn emulation_failure() -> KvmProbeError {
        KvmProbeError::Emulation {
            rip: 0x4004,
            instruction: vec![0xf0, 0x48, 0x0f, 0xc7, 0x0f],
        }
    }

    #[test]
    fn auto_kvm_when_probe_passes() {
        let (virt_type, reason) =
            decide_auto_virt_type("x86_64", &["qemu", "kvm"], &Ok(()), || ProbeResult::Passed)
                .unwrap();
        assert_eq!(virt_type, "kvm");
        assert!(reason.contains("a test guest ran on KVM"), "{reason}");
    }

    #[test]
    fn auto_qemu_when_probe_fails() {
        let (virt_type, reason) =
            decide_auto_virt_type("x86_64", &["qemu", "kvm"], &Ok(()), || {
                ProbeResult::Failed(emulation_failure())
            })
            .unwrap();
        assert_eq!(virt_type, "qemu");
        assert!(
            reason.starts_with("software emulation, because"),
            "{reason}"
        );
        assert!(reason.contains("the KVM probe failed"), "{reason}");
        assert!(reason.contains("f0 48 0f c7 0f"), "{reason}");
    }

    #[test]
    fn auto_qemu_when_kvm_device_unusable() {
        let failure = KvmProbeError::Setup {
            step: "open /dev/kvm",
            message: "Permission denied (os error 13)".into(),
        };
        let (virt_type, reason) =
            decide_auto_virt_type("x86_64", &["qemu", "kvm"], &Ok(()), || {
                ProbeResult::Failed(failure)
            })
            .unwrap();
        assert_eq!(virt_type, "qemu");
        assert!(
            reason.contains("open /dev/kvm failed: Permission denied"),
            "{reason}"
        );
    }

    #[test]
    fn auto_skips_probe_without_kvm_capabilities() {
        let probed = Cell::new(false);
        let problem = Err("the driver offers no kvm guests for x86_64".to_owned());
        let (virt_type, reason) = decide_auto_virt_type("x86_64", &["qemu"], &problem, || {
            probed.set(true);
            ProbeResult::Passed
        })
        .unwrap();
        assert_eq!(virt_type, "qemu");
        assert_eq!(
            reason,
            "software emulation, because the driver offers no kvm guests for x86_64"
        );
        assert!(!probed.get());
    }

    #[test]
    fn auto_trusts_capabilities_on_remote_host() {
        let (virt_type, reason) =
            decide_auto_virt_type("x86_64", &["qemu", "kvm"], &Ok(()), || {
                ProbeResult::NotLocal {
                    host: "node7".into(),
                }
            })
            .unwrap();
        assert_eq!(virt_type, "kvm");
        assert!(reason.contains("of node7"), "{reason}");
        assert!(reason.contains("untested"), "{reason}");
    }

    #[test]
    fn auto_falls_back_to_first_offered_type() {
        let problem = Err("the driver offers no kvm guests for x86_64".to_owned());
        let (virt_type, reason) =
            decide_auto_virt_type("x86_64", &["test"], &problem, || ProbeResult::Passed).unwrap();
        assert_eq!(virt_type, "test");
        assert_eq!(
            reason,
            "the only hypervisor type the driver offers for x86_64"
        );
    }

    #[test]
    fn auto_fails_without_offered_types() {
        let problem = Err("the driver offers no kvm guests for x86_64".to_owned());
        let error =
            decide_auto_virt_type("x86_64", &[], &problem, || ProbeResult::Passed).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("offers no hypervisor type for x86_64"),
            "{error}"
        );
    }

    #[test]
    fn probe_failure_without_qemu_uses_offered_type() {
        let (virt_type, _) = decide_auto_virt_type("x86_64", &["kvm"], &Ok(()), || {
            ProbeResult::Failed(emulation_failure())
        })
        .unwrap();
        assert_eq!(virt_type, "kvm");
    }

    #[test]
    fn remote_host_of_local_uris() {
        for uri in [
            "qemu:///system",
            "qemu:///session",
            "test:///default",
            "qemu+tcp://127.0.0.1:16599/system",
            "qemu+tcp://localhost/system",
            "qemu+ssh://root@[::1]:22/system",
            "qemu+unix:///system?socket=/run/libvirt/libvirt-sock",
        ] {
            assert_eq!(remote_host(uri), None, "{uri}");
        }
    }

    #[test]
    fn remote_host_of_remote_uris() {
        let cases = [
            ("qemu+ssh://root@node7/system", "node7"),
            ("qemu+tcp://10.0.0.5:16509/system", "10.0.0.5"),
            ("qemu+tls://[fd00::5]/system", "fd00::5"),
            ("qemu://node7.example/system?no_verify=1", "node7.example"),
        ];
        for (uri, host) in cases {
            assert_eq!(remote_host(uri).as_deref(), Some(host), "{uri}");
        }
    }
}
