//! Shared fixtures of the integration tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use berth_core::machine::{AgentTools, ControllerInfo, MachineJob, ProxySettings};
use berth_core::{Constraints, MachineConfig};

/// A self-signed PEM certificate shape; its base64 body is not checked.
pub const CA_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGUgZm9yIHRlc3Rz\nMAoGCCqGSM49BAMCMBQxEjAQBgNVBAMMCWp1anUtdGVzdA==\n-----END CERTIFICATE-----\n";

/// Returns a valid configuration of machine `1/lxc/0`.
pub fn machine() -> MachineConfig {
    MachineConfig {
        machine_id: "1/lxc/0".into(),
        machine_nonce: "machine-0:f1e2d3c4-aaaa-bbbb-cccc-0123456789ab".into(),
        series: "bookworm".into(),
        data_dir: PathBuf::from("/var/lib/juju"),
        log_dir: PathBuf::from("/var/log/juju"),
        jobs: vec![MachineJob::JobHostUnits],
        tools: AgentTools {
            version: "3.5.1-ubuntu-amd64".into(),
            url: "https://controller.example:17070/tools/3.5.1-ubuntu-amd64".into(),
            sha256: "a".repeat(64),
            size: 1234,
        },
        api_info: ControllerInfo {
            addrs: vec!["10.0.0.1:17070".into(), "[fd00::1]:17070".into()],
            ca_cert: CA_CERT.into(),
            tag: "machine-1-lxc-0".into(),
            password: "s3cret".into(),
            model_tag: Some("model-0b4e7a3c-1111-2222-3333-444455556666".into()),
        },
        state_info: None,
        authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBerthTestKey user@host".into()],
        proxy: ProxySettings::default(),
        apt_proxy: ProxySettings::default(),
        disable_package_commands: false,
        agent_environment: BTreeMap::new(),
        constraints: Constraints::default(),
        network_interfaces: Vec::new(),
        cloud_init_output_log: PathBuf::from("/var/log/cloud-init-output.log"),
    }
}

/// The interpreter cloud-init runs on Debian; its `yaml` module is the
/// YAML 1.1 reader (PyYAML) that reads user data in the machine.
pub const PYTHON: &str = "/usr/bin/python3";

/// Reads `yaml` with PyYAML's `safe_load` and returns the result as JSON.
/// Panics with the fix when Debian's python3 or its yaml module is missing,
/// because a skipped check would hide exactly the bug it exists for.
pub fn pyyaml_load(yaml: &[u8]) -> serde_json::Value {
    use std::io::Write;

    let script = "import json, sys, yaml\n\
                  data = yaml.safe_load(sys.stdin.buffer.read().decode('utf-8'))\n\
                  sys.stdout.write(json.dumps(data, ensure_ascii=False, default=str))\n";
    let mut child = match Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => panic!(
            "cannot run {PYTHON} ({error}); install python3-yaml (apt-get install python3-yaml)"
        ),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml)
        .expect("write to python3");
    let output = child.wait_with_output().expect("wait for python3");
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No module named 'yaml'") {
        panic!("{PYTHON} has no yaml module; install python3-yaml (apt-get install python3-yaml)");
    }
    assert!(
        output.status.success(),
        "PyYAML rejected the document: {stderr}\n{}",
        String::from_utf8_lossy(yaml)
    );
    serde_json::from_slice(&output.stdout).expect("python3 printed JSON")
}

/// Returns the `write_files` entry of `document` (user data read by
/// PyYAML) whose path is `path`.
pub fn written_file<'a>(document: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    let files = document["write_files"]
        .as_array()
        .expect("write_files is a list");
    files
        .iter()
        .find(|file| file["path"] == path)
        .unwrap_or_else(|| panic!("no write_files entry for {path}; entries: {files:#?}"))
}

/// Returns the content of the `write_files` entry for `path`.
pub fn written_content(document: &serde_json::Value, path: &str) -> String {
    written_file(document, path)["content"]
        .as_str()
        .expect("content is a string")
        .to_owned()
}

/// Renders the user data of `machine` with `hostname` and reads it back
/// with PyYAML, after checking the `#cloud-config` first line.
pub fn render_and_load(machine: &MachineConfig, hostname: &str) -> serde_json::Value {
    let data = berth_core::render_user_data_for_host(machine, hostname).expect("render user data");
    assert!(
        data.starts_with(b"#cloud-config\n"),
        "first line is not #cloud-config"
    );
    pyyaml_load(&data)
}
