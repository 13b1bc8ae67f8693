//! What a new VM gets: resources from the constraints, volume names, a MAC
//! address, and the domain document that ties them together.

use std::io::Read;
use std::path::Path;

use berth_core::{Constraints, Error, InvalidValue, MacAddress, NetworkConfig, NetworkKind};

use crate::config::KernelBoot;
use crate::platform::GuestPlatform;
use crate::xml::Empty;
use crate::xml::domain::{
    Boot, CharLog, CharTarget, Console, Devices, Disk, DiskDriver, DiskSource, DiskTarget,
    DiskType, Domain, Features, Interface, InterfaceSource, InterfaceType, MacElement, Memory,
    Model, Mtu, Os, OsType, Serial, Vcpu,
};

/// Memory of a VM whose constraints give none, in MiB.
pub const DEFAULT_MEM_MIB: u64 = 512;
/// Smallest memory accepted, in MiB.
pub const MIN_MEM_MIB: u64 = 512;
/// CPU cores of a VM whose constraints give none.
pub const DEFAULT_CPU_CORES: u64 = 1;
/// Fewest CPU cores accepted.
pub const MIN_CPU_CORES: u64 = 1;
/// Most CPU cores accepted: the largest vCPU count QEMU's x86 machines
/// take without extra interrupt remapping setup.
pub const MAX_CPU_CORES: u64 = 255;
/// Root disk of a VM whose constraints give none, in MiB.
pub const DEFAULT_ROOT_DISK_MIB: u64 = 8192;
/// Smallest root disk accepted, in MiB.
pub const MIN_ROOT_DISK_MIB: u64 = 2048;
/// Largest memory or disk size accepted, in MiB (1 PiB); it keeps byte
/// counts far from overflow.
pub const MAX_SIZE_MIB: u64 = 1 << 30;
/// Name of the console log in the container directory.
pub const CONSOLE_LOG: &str = "console.log";

/// The resources a VM gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// Memory in MiB.
    pub mem_mib: u64,
    /// Virtual CPUs.
    pub cpu_cores: u64,
    /// Root disk in MiB.
    pub root_disk_mib: u64,
}

/// Applies the defaults and checks the minimums of the libvirt backend.
/// Every broken rule is reported in one error. An `arch` constraint must
/// name `agent_arch`, the architecture this manager's guests run;
/// `cpu-power` is accepted and not enforced (libvirt has no equivalent).
pub fn resources(constraints: &Constraints, agent_arch: &str) -> Result<Resources, Error> {
    let mut problems = Vec::new();
    let mut check = |field: &str, value: u64, min: u64, max: u64, unit: &str| {
        if value < min || value > max {
            problems.push(InvalidValue::new(
                format!("constraint {field}"),
                value.to_string(),
                format!("must be between {min} and {max}{unit} for a VM"),
            ));
        }
        value
    };
    let mem_mib = check(
        "mem",
        constraints.mem.unwrap_or(DEFAULT_MEM_MIB),
        MIN_MEM_MIB,
        MAX_SIZE_MIB,
        " MiB",
    );
    let cpu_cores = check(
        "cpu-cores",
        constraints.cpu_cores.unwrap_or(DEFAULT_CPU_CORES),
        MIN_CPU_CORES,
        MAX_CPU_CORES,
        "",
    );
    let root_disk_mib = check(
        "root-disk",
        constraints.root_disk.unwrap_or(DEFAULT_ROOT_DISK_MIB),
        MIN_ROOT_DISK_MIB,
        MAX_SIZE_MIB,
        " MiB",
    );
    if let Some(arch) = &constraints.arch
        && arch != agent_arch
    {
        problems.push(InvalidValue::new(
            "constraint arch",
            arch.as_str(),
            format!("must be {agent_arch}, the architecture this host's VMs run"),
        ));
    }
    match problems.len() {
        0 => Ok(Resources {
            mem_mib,
            cpu_cores,
            root_disk_mib,
        }),
        1 => Err(Error::Invalid(problems.remove(0))),
        _ => Err(Error::InvalidMany(problems)),
    }
}

/// Volume name of a VM's root disk overlay.
pub fn root_volume_name(container: &str) -> String {
    format!("{container}-root.qcow2")
}

/// Volume name of a VM's NoCloud seed disk.
pub fn seed_volume_name(container: &str) -> String {
    format!("{container}-seed.img")
}

/// Returns a random locally administered unicast MAC address.
pub fn random_mac() -> std::io::Result<MacAddress> {
    let mut bytes = [0u8; 6];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    // Clear the multicast bit, set the locally administered bit.
    bytes[0] = (bytes[0] & 0xFC) | 0x02;
    if bytes[1..] == [0; 5] {
        bytes[5] = 1;
    }
    MacAddress::from_bytes(bytes).map_err(std::io::Error::other)
}

/// Everything the domain document of a new VM is made from.
#[derive(Debug, Clone)]
pub struct DomainSpec<'a> {
    /// Domain name.
    pub name: &'a str,
    /// Architecture and hypervisor type.
    pub platform: &'a GuestPlatform,
    /// Memory and CPUs.
    pub resources: Resources,
    /// Storage pool of both volumes.
    pub pool: &'a str,
    /// Root disk volume.
    pub root_volume: &'a str,
    /// Seed disk volume.
    pub seed_volume: &'a str,
    /// Direct kernel boot, when configured.
    pub kernel_boot: Option<&'a KernelBoot>,
    /// The NIC's host side.
    pub network: &'a NetworkConfig,
    /// The NIC's MAC address.
    pub mac: MacAddress,
    /// File that receives the serial console's output.
    pub console_log: &'a Path,
}

/// Builds the domain document of a new VM: a virtio root disk (`vda`) and
/// read-only virtio seed disk (`vdb`), one virtio NIC, a serial console
/// logged to a file, ACPI and APIC.
pub fn domain_document(spec: &DomainSpec<'_>) -> Domain {
    let (kernel, initrd, cmdline) = match spec.kernel_boot {
        Some(boot) => (
            Some(boot.kernel.clone()),
            boot.initrd.clone(),
            boot.cmdline.clone(),
        ),
        None => (None, None, None),
    };
    let boot = if kernel.is_none() {
        vec![Boot { dev: "hd".into() }]
    } else {
        Vec::new()
    };
    let volume_disk = |volume: &str, format: &str, dev: &str, readonly: bool| Disk {
        disk_type: DiskType::Volume,
        device: "disk".into(),
        driver: Some(DiskDriver {
            name: "qemu".into(),
            format: format.into(),
        }),
        source: DiskSource {
            pool: Some(spec.pool.into()),
            volume: Some(volume.into()),
            file: None,
        },
        target: DiskTarget {
            dev: dev.into(),
            bus: Some("virtio".into()),
        },
        readonly: readonly.then_some(Empty {}),
    };
    let (interface_type, source) = match spec.network.kind() {
        NetworkKind::Bridge => (
            InterfaceType::Bridge,
            InterfaceSource {
                bridge: Some(spec.network.device().into()),
                ..Default::default()
            },
        ),
        NetworkKind::Physical => (
            InterfaceType::Direct,
            InterfaceSource {
                dev: Some(spec.network.device().into()),
                mode: Some("passthrough".into()),
                ..Default::default()
            },
        ),
    };
    Domain {
        virt_type: spec.platform.virt_type.clone(),
        id: None,
        name: spec.name.into(),
        uuid: None,
        memory: Memory::from_mib(spec.resources.mem_mib),
        vcpu: Vcpu {
            count: spec.resources.cpu_cores,
        },
        os: Os {
            os_type: OsType {
                arch: Some(spec.platform.arch.clone()),
                machine: None,
                kind: "hvm".into(),
            },
            kernel,
            initrd,
            cmdline,
            boot,
        },
        features: Features {
            acpi: Some(Empty {}),
            apic: Some(Empty {}),
        },
        on_poweroff: Some("destroy".into()),
        on_reboot: Some("restart".into()),
        on_crash: Some("destroy".into()),
        devices: Devices {
            disks: vec![
                volume_disk(spec.root_volume, "qcow2", "vda", false),
                volume_disk(spec.seed_volume, "raw", "vdb", true),
            ],
            interfaces: vec![Interface {
                interface_type,
                mac: Some(MacElement {
                    address: spec.mac.to_string(),
                }),
                source,
                target: None,
                model: Some(Model {
                    model_type: "virtio".into(),
                }),
                mtu: spec.network.mtu().map(|size| Mtu { size }),
            }],
            serials: vec![Serial {
                serial_type: "pty".into(),
                source: None,
                log: Some(CharLog {
                    file: spec.console_log.to_string_lossy().into_owned(),
                    append: Some("off".into()),
                }),
                target: Some(CharTarget {
                    target_type: None,
                    port: Some(0),
                }),
            }],
            consoles: vec![Console {
                console_type: "pty".into(),
                target: Some(CharTarget {
                    target_type: Some("serial".into()),
                    port: Some(0),
                }),
            }],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_missing_constraints() {
        let got = resources(&Constraints::default(), "amd64").unwrap();
        assert_eq!(
            got,
            Resources {
                mem_mib: 512,
                cpu_cores: 1,
                root_disk_mib: 8192
            }
        );
    }

    #[test]
    fn minimums_enforced() {
        let below = Constraints {
            mem: Some(511),
            cpu_cores: Some(0),
            root_disk: Some(2047),
            ..Default::default()
        };
        let Err(Error::InvalidMany(problems)) = resources(&below, "amd64") else {
            panic!("expected three problems")
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "constraint mem",
                "constraint cpu-cores",
                "constraint root-disk"
            ]
        );
        assert!(
            problems[0].rule.contains("between 512 and"),
            "{}",
            problems[0]
        );
        let at = Constraints {
            mem: Some(512),
            cpu_cores: Some(1),
            root_disk: Some(2048),
            ..Default::default()
        };
        assert_eq!(
            resources(&at, "amd64").unwrap(),
            Resources {
                mem_mib: 512,
                cpu_cores: 1,
                root_disk_mib: 2048
            }
        );
    }

    #[test]
    fn arch_must_match_host() {
        let arm = Constraints {
            arch: Some("arm64".into()),
            ..Default::default()
        };
        let error = resources(&arm, "amd64").unwrap_err();
        assert!(error.to_string().contains("must be amd64"), "{error}");
    }

    #[test]
    fn random_macs_are_local_unicast() {
        for _ in 0..64 {
            let mac = random_mac().unwrap();
            assert!(mac.is_local(), "{mac}");
            assert_eq!(mac.octets()[0] & 1, 0, "{mac}");
        }
    }
}
