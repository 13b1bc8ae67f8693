//! The configuration a new machine needs to join its controller.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, InvalidValue};

/// Default data directory of the machine agent inside the machine.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/juju";
/// Default log directory of the machine agent inside the machine.
pub const DEFAULT_LOG_DIR: &str = "/var/log/juju";
/// Default file that cloud-init's output is appended to inside the machine.
pub const DEFAULT_CLOUD_INIT_OUTPUT_LOG: &str = "/var/log/cloud-init-output.log";

/// A job the machine agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MachineJob {
    /// Runs units of applications.
    JobHostUnits,
    /// Runs the controller.
    JobManageModel,
}

/// The agent binaries the machine downloads and checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AgentTools {
    /// Agent version, such as `3.5.1-ubuntu-amd64`.
    pub version: String,
    /// URL of the gzip tarball of the agent binaries.
    pub url: String,
    /// Hex SHA-256 of the tarball; anything else is rejected.
    pub sha256: String,
    /// Size of the tarball in bytes.
    pub size: u64,
}

/// Address and credentials of a controller endpoint for the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ControllerInfo {
    /// Addresses as `host:port`.
    pub addrs: Vec<String>,
    /// PEM CA certificate of the controller.
    pub ca_cert: String,
    /// The agent's entity tag, such as `machine-1-lxc-0`.
    pub tag: String,
    /// The agent's password.
    pub password: String,
    /// The model's tag, such as `model-<uuid>`, where the endpoint is
    /// model-scoped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_tag: Option<String>,
}

/// Proxy settings, each empty when unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ProxySettings {
    /// Proxy for HTTP.
    pub http: String,
    /// Proxy for HTTPS.
    pub https: String,
    /// Proxy for FTP.
    pub ftp: String,
    /// Comma-separated hosts reached without a proxy.
    pub no_proxy: String,
}

impl ProxySettings {
    /// Returns true when no proxy is set.
    pub fn is_empty(&self) -> bool {
        self.http.is_empty() && self.https.is_empty() && self.ftp.is_empty()
    }
}

/// Hardware limits requested for a machine. Absent values take the
/// backend's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Constraints {
    /// Architecture, such as `amd64`.
    pub arch: Option<String>,
    /// Memory in MiB.
    pub mem: Option<u64>,
    /// Number of CPU cores.
    pub cpu_cores: Option<u64>,
    /// CPU power in hundredths of a core.
    pub cpu_power: Option<u64>,
    /// Root disk in MiB.
    pub root_disk: Option<u64>,
}

/// A static address for one of the machine's network interfaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct InterfaceInfo {
    /// Interface name inside the machine, such as `eth0`.
    pub name: String,
    /// MAC address, where fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Address with prefix length, such as `10.0.3.5/24`.
    pub address: String,
    /// Default gateway, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// DNS servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_servers: Vec<String>,
    /// MTU, where set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// Everything a new machine needs to join its controller, as an agent
/// hands it to a manager. Read it from YAML or JSON with serde; call
/// [`MachineConfig::validate`] before use (managers do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MachineConfig {
    /// Machine id, such as `1/lxc/0`.
    pub machine_id: String,
    /// Nonce the controller uses to recognise this provisioning.
    pub machine_nonce: String,
    /// OS series, such as `bookworm` or `noble`.
    pub series: String,
    /// Agent data directory inside the machine.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Agent log directory inside the machine.
    #[serde(default = "default_log_dir")]
    pub log_dir: PathBuf,
    /// Jobs of the machine agent.
    #[serde(default = "default_jobs")]
    pub jobs: Vec<MachineJob>,
    /// Agent binaries to fetch.
    pub tools: AgentTools,
    /// The controller's API endpoint.
    pub api_info: ControllerInfo,
    /// The controller's state endpoint, for controller machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_info: Option<ControllerInfo>,
    /// SSH public keys, one per entry, each a single line.
    #[serde(default)]
    pub authorized_keys: Vec<String>,
    /// Proxies for the agent and its processes.
    #[serde(default)]
    pub proxy: ProxySettings,
    /// Proxies for apt.
    #[serde(default)]
    pub apt_proxy: ProxySettings,
    /// When true, cloud-init neither updates nor installs packages.
    #[serde(default)]
    pub disable_package_commands: bool,
    /// Extra environment variables of the machine agent.
    #[serde(default)]
    pub agent_environment: BTreeMap<String, String>,
    /// Hardware limits.
    #[serde(default)]
    pub constraints: Constraints,
    /// Static interface addresses; empty means DHCP on the first NIC.
    #[serde(default)]
    pub network_interfaces: Vec<InterfaceInfo>,
    /// File inside the machine that cloud-init's output is appended to.
    #[serde(default = "default_cloud_init_output_log")]
    pub cloud_init_output_log: PathBuf,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}

fn default_log_dir() -> PathBuf {
    PathBuf::from(DEFAULT_LOG_DIR)
}

fn default_jobs() -> Vec<MachineJob> {
    vec![MachineJob::JobHostUnits]
}

fn default_cloud_init_output_log() -> PathBuf {
    PathBuf::from(DEFAULT_CLOUD_INIT_OUTPUT_LOG)
}

impl MachineConfig {
    /// Returns the machine's tag, such as `machine-1-lxc-0`.
    pub fn tag(&self) -> Result<String, InvalidValue> {
        crate::names::machine_tag(&self.machine_id)
    }

    /// Checks the whole configuration and returns one error that lists
    /// every problem ([`Error::InvalidMany`]), or [`Error::Invalid`] when
    /// there is exactly one.
    pub fn validate(&self) -> Result<(), Error> {
        let problems = crate::machine_validation::problems(self);
        match problems.len() {
            0 => Ok(()),
            1 => Err(Error::Invalid(
                problems.into_iter().next().expect("one problem"),
            )),
            _ => Err(Error::InvalidMany(problems)),
        }
    }
}
