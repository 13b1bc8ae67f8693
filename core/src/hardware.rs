//! The hardware a new container got.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Hardware characteristics of a container, as the agent reports them to
/// its controller. Absent fields are unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardwareCharacteristics {
    /// Architecture in the agent's spelling (`amd64`, `arm64`, ...).
    pub arch: Option<String>,
    /// Memory in MiB.
    pub mem: Option<u64>,
    /// Number of CPU cores.
    pub cpu_cores: Option<u64>,
    /// CPU power in hundredths of a core.
    pub cpu_power: Option<u64>,
    /// Root disk size in MiB.
    pub root_disk: Option<u64>,
    /// Virtualisation type: `lxc`, `kvm` or `qemu`.
    pub virt_type: Option<String>,
}

/// Prints `arch=amd64 cpu-cores=1 cpu-power=100 mem=512M root-disk=8192M
/// virt-type=kvm`, leaving absent fields out.
impl fmt::Display for HardwareCharacteristics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(arch) = &self.arch {
            parts.push(format!("arch={arch}"));
        }
        if let Some(cores) = self.cpu_cores {
            parts.push(format!("cpu-cores={cores}"));
        }
        if let Some(power) = self.cpu_power {
            parts.push(format!("cpu-power={power}"));
        }
        if let Some(mem) = self.mem {
            parts.push(format!("mem={mem}M"));
        }
        if let Some(disk) = self.root_disk {
            parts.push(format!("root-disk={disk}M"));
        }
        if let Some(virt) = &self.virt_type {
            parts.push(format!("virt-type={virt}"));
        }
        f.write_str(&parts.join(" "))
    }
}

/// Returns the architecture of this host in the agent's spelling.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_agent_format() {
        let hardware = HardwareCharacteristics {
            arch: Some("amd64".into()),
            mem: Some(512),
            cpu_cores: Some(1),
            root_disk: Some(8192),
            ..Default::default()
        };
        assert_eq!(
            hardware.to_string(),
            "arch=amd64 cpu-cores=1 mem=512M root-disk=8192M"
        );
    }

    #[test]
    fn display_leaves_out_absent_fields() {
        assert_eq!(HardwareCharacteristics::default().to_string(), "");
        let hardware = HardwareCharacteristics {
            mem: Some(2048),
            virt_type: Some("lxc".into()),
            ..Default::default()
        };
        assert_eq!(hardware.to_string(), "mem=2048M virt-type=lxc");
    }
}
