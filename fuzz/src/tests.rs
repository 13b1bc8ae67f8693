//! Replays the checked-in corpus through the same checks on a stable
//! compiler, and reads every user data it renders with PyYAML, the YAML
//! reader of cloud-init.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::*;

/// Environment variable naming a further corpus root with one folder per
/// target, such as the corpus a fuzz run just grew.
const EXTRA_CORPUS_VAR: &str = "BERTH_FUZZ_EXTRA_CORPUS";

/// Returns the files of the checked-in corpus of `target`, and of the
/// extra corpus when [`EXTRA_CORPUS_VAR`] is set.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files = list_files(&dir);
    assert!(!files.is_empty(), "{} is empty", dir.display());
    if let Some(extra) = std::env::var_os(EXTRA_CORPUS_VAR) {
        let extra = Path::new(&extra).join(target);
        if extra.is_dir() {
            files.extend(list_files(&extra));
        }
    }
    files
        .into_iter()
        .map(|path| {
            let data = std::fs::read(&path).unwrap();
            (path, data)
        })
        .collect()
}

fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn machine_config_corpus_passes() {
    let mut valid = 0;
    for (_, data) in corpus("machine_config") {
        check_machine_config(&data);
        let parsed = std::str::from_utf8(&data)
            .ok()
            .and_then(|text| parse_machine_config(text, Path::new("seed")).ok());
        if parsed.is_some_and(|config| config.validate().is_ok()) {
            valid += 1;
        }
    }
    assert!(valid > 0, "no seed is a valid configuration");
}

#[test]
fn network_corpus_passes() {
    let mut accepted = 0;
    for (_, data) in corpus("network") {
        check_network(&data);
        if std::str::from_utf8(&data).is_ok_and(|text| text.parse::<NetworkConfig>().is_ok()) {
            accepted += 1;
        }
    }
    assert!(accepted > 0, "no seed is an accepted network option");
}

#[test]
fn base_machine_renders() {
    let rendered = check_user_data(user_data_input(&[]).unwrap()).expect("base renders");
    assert_eq!(rendered.hostname, "berth-machine-1-lxc-0");
}

/// Python program that reads a JSON list of user data documents from
/// standard input and prints, for each, what PyYAML's `safe_load` (as
/// cloud-init calls it) reads for the compared values.
const PYYAML_READER: &str = r#"
import json, sys, yaml
out = []
for item in json.load(sys.stdin):
    doc = yaml.safe_load(item["text"])
    conf = next(f for f in doc["write_files"] if f["path"] == item["agent_conf_path"])
    header, body = conf["content"].split("\n", 1)
    agent = yaml.safe_load(body)
    out.append({
        "hostname": doc["hostname"],
        "keys": doc.get("ssh_authorized_keys"),
        "nonce": agent["nonce"],
        "values": agent["values"],
    })
json.dump(out, sys.stdout, default=repr)
"#;

#[test]
fn user_data_corpus_reads_back_with_pyyaml() {
    let mut rendered = Vec::new();
    for (_, data) in corpus("user_data") {
        if let Some(output) = user_data_input(&data).and_then(check_user_data) {
            rendered.push(output);
        }
    }
    assert!(!rendered.is_empty(), "no seed renders user data");

    let documents: Vec<serde_json::Value> = rendered
        .iter()
        .map(|output| {
            serde_json::json!({"text": output.text, "agent_conf_path": output.agent_conf_path})
        })
        .collect();
    let mut child = Command::new("python3")
        .args(["-c", PYYAML_READER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run python3; install python3-yaml");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&documents).unwrap().as_bytes())
        .unwrap();
    let result = child.wait_with_output().unwrap();
    assert!(
        result.status.success(),
        "PyYAML could not read the user data: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let read: Vec<serde_json::Value> = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(read.len(), rendered.len());

    for (output, read) in rendered.iter().zip(&read) {
        let machine = &output.machine;
        let context = &output.text;
        assert_eq!(read["hostname"], output.hostname.as_str(), "{context}");
        let keys = match &read["keys"] {
            serde_json::Value::Null => serde_json::json!([]),
            keys => keys.clone(),
        };
        assert_eq!(
            keys,
            serde_json::json!(machine.authorized_keys),
            "{context}"
        );
        assert_eq!(read["nonce"], machine.machine_nonce.as_str(), "{context}");
        let values = match &read["values"] {
            serde_json::Value::Null => serde_json::json!({}),
            values => values.clone(),
        };
        assert_eq!(
            values,
            serde_json::json!(machine.agent_environment),
            "{context}"
        );
    }
    eprintln!("PyYAML read back {} user data documents", rendered.len());
}
