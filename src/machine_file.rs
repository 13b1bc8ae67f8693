//! Machine configurations read from files, and generated ones for the demo.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_core::machine::{AgentTools, ControllerInfo, MachineJob, ProxySettings};
use berth_core::{Constraints, MachineConfig};

/// Failure to read or parse a machine configuration file.
#[derive(Debug, thiserror::Error)]
pub enum MachineFileError {
    /// The file could not be read.
    #[error("cannot read machine config {path}", path = .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON of a machine configuration.
    #[error("invalid JSON machine config {path}", path = .path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The file is not valid YAML of a machine configuration.
    #[error("invalid YAML machine config {path}", path = .path.display())]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: Box<serde_saphyr::Error>,
    },
}

/// Parses a machine configuration from `text`: JSON when its first
/// non-blank character is `{`, YAML otherwise. `path` only names the source
/// in errors. The result is parsed, not validated: managers validate it.
pub fn parse_machine_config(text: &str, path: &Path) -> Result<MachineConfig, MachineFileError> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|source| MachineFileError::Json {
            path: path.to_owned(),
            source,
        })
    } else {
        serde_saphyr::from_str(text).map_err(|source| MachineFileError::Yaml {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }
}

/// Reads and parses the machine configuration file at `path` (YAML or JSON).
pub fn read_machine_config(path: &Path) -> Result<MachineConfig, MachineFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| MachineFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_machine_config(&text, path)
}

/// Returns a complete, valid configuration for machine `machine_id`, as a
/// controller would send it, for demonstrations and tests. Its controller
/// addresses are on loopback and its tools checksum matches no real file,
/// so a guest that runs it reaches nothing and starts no agent.
pub fn sample_machine_config(machine_id: &str, series: &str) -> MachineConfig {
    let tag = format!("machine-{}", machine_id.replace('/', "-"));
    MachineConfig {
        machine_id: machine_id.to_owned(),
        machine_nonce: format!("berth-sample:{tag}"),
        series: series.to_owned(),
        data_dir: PathBuf::from(berth_core::machine::DEFAULT_DATA_DIR),
        log_dir: PathBuf::from(berth_core::machine::DEFAULT_LOG_DIR),
        jobs: vec![MachineJob::JobHostUnits],
        tools: AgentTools {
            version: "3.5.1-ubuntu-amd64".into(),
            url: "http://127.0.0.1:17070/tools/3.5.1-ubuntu-amd64.tgz".into(),
            sha256: "0".repeat(64),
            size: 1,
        },
        api_info: ControllerInfo {
            addrs: vec!["127.0.0.1:17070".into()],
            ca_cert: SAMPLE_CA_CERT.into(),
            tag,
            password: "sample-password".into(),
            model_tag: None,
        },
        state_info: None,
        authorized_keys: Vec::new(),
        proxy: ProxySettings::default(),
        apt_proxy: ProxySettings::default(),
        disable_package_commands: true,
        agent_environment: BTreeMap::new(),
        constraints: Constraints::default(),
        network_interfaces: Vec::new(),
        cloud_init_output_log: PathBuf::from(berth_core::machine::DEFAULT_CLOUD_INIT_OUTPUT_LOG),
    }
}

/// A PEM block standing in for a controller's CA certificate in samples.
const SAMPLE_CA_CERT: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBsample0nly0not0a0real0certificate0for0berth0demos0AAAA\n\
-----END CERTIFICATE-----\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_config_is_valid() {
        for id in ["0", "1/lxc/0", "2/kvm/3"] {
            let config = sample_machine_config(id, "bookworm");
            config
                .validate()
                .unwrap_or_else(|error| panic!("sample {id} invalid: {error}"));
        }
    }

    #[test]
    fn yaml_and_json_parse_alike() {
        let config = sample_machine_config("1/lxc/0", "bookworm");
        let json = serde_json::to_string(&config).unwrap();
        let yaml = serde_saphyr::to_string(&config).unwrap();
        assert_eq!(
            parse_machine_config(&json, Path::new("m.json")).unwrap(),
            config
        );
        assert_eq!(
            parse_machine_config(&yaml, Path::new("m.yaml")).unwrap(),
            config
        );
    }

    #[test]
    fn example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/machine.yaml");
        let config = read_machine_config(&path).unwrap();
        config.validate().unwrap();
        assert_eq!(config.constraints.mem, Some(512));
        assert_eq!(config.network_interfaces.len(), 1);
    }

    #[test]
    fn unknown_key_rejected_with_path() {
        let text = "machine-id: '0'\nmachine-nonce: n\nseries: bookworm\nbogus: 1\n";
        let error = parse_machine_config(text, Path::new("bad.yaml")).unwrap_err();
        assert!(error.to_string().contains("bad.yaml"), "{error}");
        let chain = berth_core::error::error_chain(&error);
        assert!(chain.contains("bogus"), "{chain}");
    }
}
