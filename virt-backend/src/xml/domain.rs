//! The domain XML berth defines, and the parts of libvirt's domain XML it
//! reads back.
//!
//! Element and attribute names follow libvirt's domain XML format
//! (<https://libvirt.org/formatdomain.html>).

use serde::{Deserialize, Serialize};

use super::{Document, Empty};

/// A `<domain>` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "domain")]
pub struct Domain {
    /// Hypervisor type: `kvm`, `qemu`, or `test` for libvirt's test driver.
    #[serde(rename = "@type")]
    pub virt_type: String,
    /// Domain id while it runs, as libvirt reports it; never written.
    #[serde(rename = "@id", default, skip_serializing)]
    pub id: Option<i64>,
    /// Domain name.
    pub name: String,
    /// UUID; libvirt generates one when it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Maximum memory.
    pub memory: Memory,
    /// Number of virtual CPUs.
    pub vcpu: Vcpu,
    /// Boot settings.
    pub os: Os,
    /// Hypervisor features.
    #[serde(default)]
    pub features: Features,
    /// Action when the guest powers off: `destroy` or `restart`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_poweroff: Option<String>,
    /// Action when the guest reboots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_reboot: Option<String>,
    /// Action when the guest crashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_crash: Option<String>,
    /// Devices.
    #[serde(default)]
    pub devices: Devices,
}

impl Document for Domain {
    const ROOT: &'static str = "domain";
}

/// `<memory unit='KiB'>N</memory>`. berth always writes KiB, the unit
/// libvirt reports back, so a written and a read document compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// Unit of `value`, such as `KiB`.
    #[serde(rename = "@unit")]
    pub unit: String,
    /// Amount in `unit`.
    #[serde(rename = "$text")]
    pub value: u64,
}

impl Memory {
    /// Creates an amount of `mib` MiB, written in KiB.
    pub fn from_mib(mib: u64) -> Self {
        Self {
            unit: "KiB".into(),
            value: mib * 1024,
        }
    }

    /// Returns the amount in bytes, or `None` for a unit berth does not
    /// know. Units follow libvirt: `b`/`bytes`, `KiB`/`k`, `MiB`/`M`,
    /// `GiB`/`G` are powers of 1024; `KB`, `MB`, `GB` are powers of 1000.
    pub fn bytes(&self) -> Option<u64> {
        let factor: u64 = match self.unit.as_str() {
            "b" | "bytes" => 1,
            "KB" => 1000,
            "k" | "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "M" | "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "G" | "GiB" => 1 << 30,
            _ => return None,
        };
        self.value.checked_mul(factor)
    }
}

/// `<vcpu>N</vcpu>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vcpu {
    /// Number of virtual CPUs.
    #[serde(rename = "$text")]
    pub count: u64,
}

/// `<os>`: how the guest boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Os {
    /// `<type arch=... machine=...>hvm</type>`.
    #[serde(rename = "type")]
    pub os_type: OsType,
    /// Kernel for direct kernel boot, a path on the libvirt host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Initial RAM disk for direct kernel boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// Kernel command line for direct kernel boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Boot devices in order, when booting from a disk's boot loader.
    #[serde(rename = "boot", default, skip_serializing_if = "Vec::is_empty")]
    pub boot: Vec<Boot>,
}

/// `<type arch='x86_64' machine='q35'>hvm</type>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsType {
    /// Guest architecture in libvirt's spelling, such as `x86_64`.
    #[serde(rename = "@arch", default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Machine type; libvirt fills in its default (and expands aliases
    /// such as `q35`) when it is absent.
    #[serde(rename = "@machine", default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// OS type, `hvm` for a fully virtualised guest.
    #[serde(rename = "$text")]
    pub kind: String,
}

/// `<boot dev='hd'/>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Boot {
    /// Device class: `hd`, `cdrom`, `network` or `fd`.
    #[serde(rename = "@dev")]
    pub dev: String,
}

/// `<features>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    /// ACPI. QEMU 10 with libvirt 9.0 refuses to start a domain without
    /// it (`-no-acpi: invalid option`), and x86 guests want it anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acpi: Option<Empty>,
    /// The local APIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apic: Option<Empty>,
}

/// `<devices>`. Repeated elements may be interleaved with others in
/// libvirt's output; the `overlapped-lists` feature of quick-xml collects
/// them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Devices {
    /// Disks, in order.
    #[serde(rename = "disk", default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    /// Network interfaces, in order.
    #[serde(rename = "interface", default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Serial ports.
    #[serde(rename = "serial", default, skip_serializing_if = "Vec::is_empty")]
    pub serials: Vec<Serial>,
    /// Consoles.
    #[serde(rename = "console", default, skip_serializing_if = "Vec::is_empty")]
    pub consoles: Vec<Console>,
}

/// Source type of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskType {
    /// A volume of a libvirt storage pool, named by pool and volume.
    Volume,
    /// A file on the libvirt host.
    File,
    /// A block device on the libvirt host.
    Block,
    /// Any other source type.
    #[serde(other)]
    Other,
}

/// `<disk type=... device='disk'>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Source type.
    #[serde(rename = "@type")]
    pub disk_type: DiskType,
    /// Guest device class: `disk`, `cdrom` or `floppy`.
    #[serde(rename = "@device")]
    pub device: String,
    /// `<driver name='qemu' type='qcow2'/>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<DiskDriver>,
    /// The disk's data.
    pub source: DiskSource,
    /// The guest's view of the disk.
    pub target: DiskTarget,
    /// Present when the guest may not write to the disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<Empty>,
}

/// `<driver name='qemu' type='qcow2'/>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskDriver {
    /// Driver name, `qemu`.
    #[serde(rename = "@name")]
    pub name: String,
    /// Image format: `qcow2` or `raw`.
    #[serde(rename = "@type")]
    pub format: String,
}

/// `<source pool=... volume=.../>` or `<source file=.../>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSource {
    /// Storage pool of a `volume` disk.
    #[serde(rename = "@pool", default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Volume name of a `volume` disk.
    #[serde(rename = "@volume", default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// Path of a `file` disk.
    #[serde(rename = "@file", default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// `<target dev='vda' bus='virtio'/>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskTarget {
    /// Device name hint inside the guest, such as `vda`.
    #[serde(rename = "@dev")]
    pub dev: String,
    /// Bus: `virtio`, `sata`, `scsi`, ...
    #[serde(rename = "@bus", default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
}

/// Host side of a network interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceType {
    /// A tap device joined to a host bridge.
    Bridge,
    /// A macvtap device on a host NIC.
    Direct,
    /// A libvirt virtual network.
    Network,
    /// Any other type.
    #[serde(other)]
    Other,
}

/// `<interface type=...>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Host side of the interface.
    #[serde(rename = "@type")]
    pub interface_type: InterfaceType,
    /// `<mac address='52:54:00:...'/>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacElement>,
    /// The bridge or host device.
    pub source: InterfaceSource,
    /// Host-side device libvirt created, such as `vnet0`; read only.
    #[serde(default, skip_serializing)]
    pub target: Option<InterfaceTarget>,
    /// Guest NIC model, such as `virtio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Model>,
    /// MTU of the guest NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<Mtu>,
}

/// `<mac address=.../>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacElement {
    /// Lowercase MAC address.
    #[serde(rename = "@address")]
    pub address: String,
}

/// `<source bridge=.../>` or `<source dev=... mode=.../>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceSource {
    /// Host bridge of a `bridge` interface.
    #[serde(rename = "@bridge", default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// Host NIC of a `direct` interface.
    #[serde(rename = "@dev", default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// macvtap mode of a `direct` interface, such as `passthrough`.
    #[serde(rename = "@mode", default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Virtual network of a `network` interface.
    #[serde(rename = "@network", default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// `<target dev='vnet0'/>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceTarget {
    /// Host device name.
    #[serde(rename = "@dev")]
    pub dev: String,
}

/// `<model type='virtio'/>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    /// Model name.
    #[serde(rename = "@type")]
    pub model_type: String,
}

/// `<mtu size='9000'/>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mtu {
    /// MTU in bytes.
    #[serde(rename = "@size")]
    pub size: u32,
}

/// `<serial type='pty'>` or `<serial type='file'>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Serial {
    /// Host side: `pty` or `file`.
    #[serde(rename = "@type")]
    pub serial_type: String,
    /// Host path: the output file of a `file` serial, or the pty libvirt
    /// allocated for a running `pty` serial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<CharSource>,
    /// File that receives a copy of everything the guest writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<CharLog>,
    /// Guest side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<CharTarget>,
}

/// `<console type='pty'>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Console {
    /// Host side, such as `pty`.
    #[serde(rename = "@type")]
    pub console_type: String,
    /// Guest side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<CharTarget>,
}

/// `<source path=.../>` of a character device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CharSource {
    /// Host path.
    #[serde(rename = "@path")]
    pub path: String,
}

/// `<log file=... append='off'/>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CharLog {
    /// Log file on the libvirt host.
    #[serde(rename = "@file")]
    pub file: String,
    /// `on` to keep earlier content across starts, `off` to truncate.
    #[serde(rename = "@append", default, skip_serializing_if = "Option::is_none")]
    pub append: Option<String>,
}

/// `<target type='serial' port='0'/>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CharTarget {
    /// Target type, such as `serial` for a console or `isa-serial` for a
    /// serial port (libvirt fills it in for serial ports).
    #[serde(rename = "@type", default, skip_serializing_if = "Option::is_none")]
    pub target_type: Option<String>,
    /// Port number.
    #[serde(rename = "@port", default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

impl Domain {
    /// Returns a copy without the values libvirt fills in or changes when
    /// it defines or starts a domain. These are the id, UUID, machine type,
    /// a running pty's path, NIC host devices, the serial target type, and
    /// a lone `<boot dev='hd'/>`, which libvirt adds when no boot device is
    /// named. Two documents that berth and libvirt agree on compare
    /// equal after this.
    pub fn without_libvirt_defaults(&self) -> Self {
        let mut copy = self.clone();
        copy.id = None;
        copy.uuid = None;
        copy.os.os_type.machine = None;
        if copy.os.boot.len() == 1 && copy.os.boot[0].dev == "hd" {
            copy.os.boot.clear();
        }
        for interface in &mut copy.devices.interfaces {
            interface.target = None;
        }
        for serial in &mut copy.devices.serials {
            if serial.serial_type == "pty" {
                serial.source = None;
            }
            if let Some(target) = &mut serial.target {
                target.target_type = None;
            }
        }
        copy
    }

    /// Returns the names of the pool volumes this domain's disks use, as
    /// `(pool, volume)` pairs.
    pub fn volumes(&self) -> Vec<(String, String)> {
        self.devices
            .disks
            .iter()
            .filter(|disk| disk.disk_type == DiskType::Volume)
            .filter_map(|disk| Some((disk.source.pool.clone()?, disk.source.volume.clone()?)))
            .collect()
    }
}
