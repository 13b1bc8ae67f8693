//! Storage pool and volume XML
//! (<https://libvirt.org/formatstorage.html>).

use serde::{Deserialize, Serialize};

use super::Document;

/// A `<pool>` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "pool")]
pub struct StoragePool {
    /// Pool type; berth uses `dir`, a directory of image files.
    #[serde(rename = "@type")]
    pub pool_type: String,
    /// Pool name.
    pub name: String,
    /// UUID; libvirt generates one when it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The pool's volume location.
    pub target: PoolTarget,
}

impl Document for StoragePool {
    const ROOT: &'static str = "pool";
}

/// `<target><path>...</path></target>` of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolTarget {
    /// Directory on the libvirt host.
    pub path: String,
}

impl StoragePool {
    /// Returns a copy without the UUID, which libvirt generates.
    pub fn without_libvirt_defaults(&self) -> Self {
        Self {
            uuid: None,
            ..self.clone()
        }
    }
}

/// A `<volume>` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "volume")]
pub struct StorageVolume {
    /// Volume type, such as `file`; libvirt fills it in.
    #[serde(rename = "@type", default, skip_serializing)]
    pub volume_type: Option<String>,
    /// Volume name, unique within its pool.
    pub name: String,
    /// Key that names the volume across pools (its path for `dir` pools);
    /// read only.
    #[serde(default, skip_serializing)]
    pub key: Option<String>,
    /// Size as the guest reads it.
    pub capacity: Capacity,
    /// Space allocated on the host. berth writes 0 so that files are
    /// sparse; libvirt reports the real figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<Capacity>,
    /// The volume's storage location and format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<VolumeTarget>,
    /// The image a copy-on-write volume reads unchanged blocks from.
    #[serde(
        rename = "backingStore",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backing_store: Option<BackingStore>,
}

impl Document for StorageVolume {
    const ROOT: &'static str = "volume";
}

impl StorageVolume {
    /// Returns a copy without the values libvirt fills in: type, key,
    /// allocation and target path.
    pub fn without_libvirt_defaults(&self) -> Self {
        let mut copy = self.clone();
        copy.volume_type = None;
        copy.key = None;
        copy.allocation = None;
        if let Some(target) = &mut copy.target {
            target.path = None;
        }
        copy
    }

    /// Returns the volume's format, such as `qcow2`, when it has one.
    pub fn format(&self) -> Option<&str> {
        Some(self.target.as_ref()?.format.as_ref()?.format_type.as_str())
    }
}

/// A size in bytes: `<capacity unit='bytes'>N</capacity>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Unit of `value`; berth writes `bytes`, as libvirt reports.
    #[serde(rename = "@unit", default = "bytes_unit")]
    pub unit: String,
    /// Amount in `unit`.
    #[serde(rename = "$text")]
    pub value: u64,
}

fn bytes_unit() -> String {
    "bytes".into()
}

impl Capacity {
    /// Creates a size of `bytes` bytes.
    pub fn bytes(bytes: u64) -> Self {
        Self {
            unit: bytes_unit(),
            value: bytes,
        }
    }
}

/// `<target>` of a volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeTarget {
    /// Path on the libvirt host; libvirt chooses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Image format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
}

/// `<format type='qcow2'/>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Format {
    /// Format name: `qcow2` or `raw`.
    #[serde(rename = "@type")]
    pub format_type: String,
}

impl Format {
    /// Creates a format element for `name`.
    pub fn new(name: &str) -> Self {
        Self {
            format_type: name.to_owned(),
        }
    }
}

/// `<backingStore>` of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackingStore {
    /// Path of the backing image on the libvirt host.
    pub path: String,
    /// Format of the backing image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
}
