//! The rendered user data, read back by PyYAML (cloud-init's YAML reader)
//! and, where values reach a shell, by `/bin/sh`.

mod common;

use std::process::Command;

use berth_core::userdata::{APT_PROXY_PATH, PROXY_PROFILE_PATH};
use berth_core::{Error, render_user_data, render_user_data_for_host, write_user_data_for_host};
use common::{machine, pyyaml_load, render_and_load, written_content, written_file};

const HOSTNAME: &str = "juju-machine-1-lxc-0";
const AGENT_CONF: &str = "/var/lib/juju/agents/machine-1-lxc-0/agent.conf";
const UNIT: &str = "/etc/systemd/system/jujud-machine-1-lxc-0.service";
const SCRIPT: &str = "/var/lib/juju/install-machine-1-lxc-0.sh";

/// Strings that a YAML 1.1 reader turns into booleans, numbers, dates,
/// nulls or other structure unless they are quoted.
const YAML_TRAPS: &[&str] = &[
    "no",
    "on",
    "yes",
    "off",
    "No",
    "ON",
    "y",
    "n",
    "Y",
    "N",
    "true",
    "False",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "1_000",
    "0x1F",
    "~",
    "null",
    "Null",
    "NULL",
    "1e3",
    "1.5",
    ".inf",
    "-.Inf",
    ".nan",
    "0o17",
    "012",
    "0b101",
    "190:20:30",
    "+1",
    "-1",
    ":",
    "- x",
    "-",
    "#x",
    "x #y",
    "a: b",
    "[a]",
    "{a: b}",
    "&anchor",
    "*alias",
    "!tag",
    "%x",
    "@x",
    "`x",
    "|",
    ">",
    "?",
    "?x",
    "'",
    "\"",
    "\\",
    " leading",
    "trailing ",
    " both ",
    "",
    " ",
    "=",
    "<<",
    "---",
    "...",
    "\t",
    "x\ty",
];

#[test]
fn document_structure() {
    let document = render_and_load(&machine(), HOSTNAME);
    assert_eq!(document["hostname"], HOSTNAME);
    assert_eq!(document["manage_etc_hosts"], true);
    assert_eq!(document["locale"], "C.UTF-8");
    assert_eq!(document["package_update"], true);
    assert_eq!(document["package_upgrade"], false);
    assert_eq!(
        document["packages"],
        serde_json::json!(["curl", "ca-certificates"])
    );
    assert_eq!(document["runcmd"], serde_json::json!([["/bin/sh", SCRIPT]]));
    assert_eq!(
        document["output"]["all"],
        "| tee -a '/var/log/cloud-init-output.log'"
    );
    assert_eq!(
        written_content(&document, "/var/lib/juju/nonce.txt"),
        machine().machine_nonce
    );

    let permissions = [
        ("/var/lib/juju/nonce.txt", "0644"),
        (AGENT_CONF, "0600"),
        (UNIT, "0644"),
        (SCRIPT, "0700"),
    ];
    for (path, mode) in permissions {
        assert_eq!(written_file(&document, path)["permissions"], mode, "{path}");
    }
    // Without proxies, no proxy files are written.
    let paths: Vec<&str> = document["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(!paths.contains(&PROXY_PROFILE_PATH), "{paths:?}");
    assert!(!paths.contains(&APT_PROXY_PATH), "{paths:?}");
}

#[test]
fn tag_is_default_hostname() {
    let data = render_user_data(&machine()).unwrap();
    assert_eq!(pyyaml_load(&data)["hostname"], "machine-1-lxc-0");
}

#[test]
fn package_commands_can_be_disabled() {
    let mut config = machine();
    config.disable_package_commands = true;
    let document = render_and_load(&config, HOSTNAME);
    assert!(document.get("package_update").is_none(), "{document:#}");
    assert!(document.get("packages").is_none(), "{document:#}");
    assert_eq!(document["package_upgrade"], false);
}

#[test]
fn agent_conf_values() {
    let mut config = machine();
    config.state_info = Some(config.api_info.clone());
    let document = render_and_load(&config, HOSTNAME);
    let content = written_content(&document, AGENT_CONF);
    assert!(content.starts_with("# format 2.0\n"), "{content}");
    let conf = pyyaml_load(content.as_bytes());
    assert_eq!(conf["tag"], "machine-1-lxc-0");
    assert_eq!(conf["nonce"], config.machine_nonce);
    assert_eq!(conf["datadir"], "/var/lib/juju");
    assert_eq!(conf["logdir"], "/var/log/juju");
    assert_eq!(conf["jobs"], serde_json::json!(["JobHostUnits"]));
    assert_eq!(conf["upgradedToVersion"], "3.5.1");
    assert_eq!(conf["cacert"], common::CA_CERT);
    assert_eq!(
        conf["apiaddresses"],
        serde_json::json!(config.api_info.addrs)
    );
    assert_eq!(conf["apipassword"], "s3cret");
    assert_eq!(conf["model"], "model-0b4e7a3c-1111-2222-3333-444455556666");
    assert_eq!(
        conf["stateaddresses"],
        serde_json::json!(config.api_info.addrs)
    );
    assert_eq!(conf["statepassword"], "s3cret");
    assert_eq!(conf["values"], serde_json::json!({}));
}

#[test]
fn yaml_traps_read_back_as_strings() {
    let mut config = machine();
    for (index, value) in YAML_TRAPS.iter().enumerate() {
        config
            .agent_environment
            .insert(format!("TRAP_{index}"), (*value).to_owned());
    }
    config.machine_nonce = "2001-12-14".into();
    config.api_info.password = "no".into();
    config.api_info.model_tag = Some("model-1e3".into());
    let document = render_and_load(&config, HOSTNAME);

    assert_eq!(
        written_content(&document, "/var/lib/juju/nonce.txt"),
        "2001-12-14"
    );
    let conf = pyyaml_load(written_content(&document, AGENT_CONF).as_bytes());
    assert_eq!(conf["nonce"], "2001-12-14");
    assert_eq!(conf["apipassword"], "no");
    assert_eq!(conf["model"], "model-1e3");
    for (index, value) in YAML_TRAPS.iter().enumerate() {
        let read = &conf["values"][format!("TRAP_{index}")];
        assert_eq!(
            read,
            &serde_json::Value::String((*value).to_owned()),
            "value {value:?} read back as {read}"
        );
    }
}

#[test]
fn yaml_trap_hostnames_stay_strings() {
    for hostname in [
        "no", "on", "yes", "off", "y", "n", "null", "true", "False", "e3", "inf", "nan",
    ] {
        let document = render_and_load(&machine(), hostname);
        assert_eq!(document["hostname"], hostname, "{hostname:?}");
    }
}

#[test]
fn yaml_traps_in_paths_and_keys() {
    let mut config = machine();
    config.data_dir = "/srv/on: yes #x".into();
    config.cloud_init_output_log = "/var/log/no".into();
    config.authorized_keys = vec!["yes".into(), "2001-12-14".into(), "- x".into()];
    let document = render_and_load(&config, HOSTNAME);
    assert_eq!(
        document["ssh_authorized_keys"],
        serde_json::json!(["yes", "2001-12-14", "- x"])
    );
    assert_eq!(
        document["runcmd"],
        serde_json::json!([["/bin/sh", "/srv/on: yes #x/install-machine-1-lxc-0.sh"]])
    );
    assert_eq!(
        written_content(&document, "/srv/on: yes #x/nonce.txt"),
        config.machine_nonce
    );
    assert_eq!(document["output"]["all"], "| tee -a '/var/log/no'");
}

#[test]
fn ssh_key_comment_preserved_byte_for_byte() {
    let keys = [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBerthTestKey #1: Jürgen Ærøskøbing-Łódź 東京 # x: y",
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDBerth: #only-comment  two  spaces ",
        "command=\"echo 'hi'\",no-pty ssh-ed25519 AAAAC3Nz zoë@höst",
    ];
    let mut config = machine();
    config.authorized_keys = keys.iter().map(|key| (*key).to_owned()).collect();
    let document = render_and_load(&config, HOSTNAME);
    let read = document["ssh_authorized_keys"].as_array().unwrap();
    assert_eq!(read.len(), keys.len());
    for (key, read) in keys.iter().zip(read) {
        assert_eq!(read.as_str().unwrap().as_bytes(), key.as_bytes());
    }
}

/// Sources `profile` in `/bin/sh` and returns the value of `variable`.
fn shell_variable_after_sourcing(profile: &str, variable: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.sh");
    std::fs::write(&path, profile).unwrap();
    let output = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(". \"$1\"; printf %s \"${variable}\""))
        .arg("sh")
        .arg(&path)
        .env_clear()
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn proxy_is_one_literal_shell_value() {
    let hostile = "http://us'er:p\"a$HOME w`id`@proxy.example:3128/$(id)";
    let mut config = machine();
    config.proxy.http = hostile.into();
    config.proxy.https = format!("{hostile}/s");
    config.proxy.ftp = "ftp://'".into();
    config.proxy.no_proxy = "localhost, 127.0.0.1,'$x'".into();
    let document = render_and_load(&config, HOSTNAME);

    let profile = written_content(&document, PROXY_PROFILE_PATH);
    let expected = [
        ("http_proxy", hostile.to_owned()),
        ("HTTP_PROXY", hostile.to_owned()),
        ("https_proxy", format!("{hostile}/s")),
        ("HTTPS_PROXY", format!("{hostile}/s")),
        ("ftp_proxy", "ftp://'".to_owned()),
        ("FTP_PROXY", "ftp://'".to_owned()),
        ("no_proxy", "localhost, 127.0.0.1,'$x'".to_owned()),
        ("NO_PROXY", "localhost, 127.0.0.1,'$x'".to_owned()),
    ];
    for (variable, value) in &expected {
        assert_eq!(
            &shell_variable_after_sourcing(&profile, variable),
            value,
            "{variable} from the profile"
        );
    }

    // The install script sets the same variables before it runs curl.
    let script = written_content(&document, SCRIPT);
    let (head, _) = script.split_once("\nsay() {").expect("script has a body");
    for (variable, value) in &expected {
        assert_eq!(
            &shell_variable_after_sourcing(head, variable),
            value,
            "{variable} from the script"
        );
    }

    // The unit passes them to the agent, quoted for systemd.
    let unit = written_content(&document, UNIT);
    let line = "Environment=\"http_proxy=http://us'er:p\\\"a$HOME w`id`@proxy.example:3128/$(id)\"";
    assert!(unit.lines().any(|l| l == line), "no line {line} in\n{unit}");
}

#[test]
fn apt_proxy_file() {
    let mut config = machine();
    config.apt_proxy.http = "http://apt proxy:3142".into();
    config.apt_proxy.https = "http://u'$x@apt:3142".into();
    let document = render_and_load(&config, HOSTNAME);
    assert_eq!(
        written_content(&document, APT_PROXY_PATH),
        "Acquire::http::Proxy \"http://apt proxy:3142\";\nAcquire::https::Proxy \"http://u'$x@apt:3142\";\n"
    );
    assert_eq!(
        written_file(&document, APT_PROXY_PATH)["permissions"],
        "0644"
    );
}

#[test]
fn unit_runs_agent_with_environment() {
    let mut config = machine();
    config.data_dir = "/srv/juju data".into();
    config
        .agent_environment
        .insert("JUJU_A".into(), "no".into());
    config
        .agent_environment
        .insert("JUJU_B".into(), "50% of \"$x\" \\ y".into());
    let document = render_and_load(&config, HOSTNAME);
    let unit = written_content(&document, UNIT);
    let lines: Vec<&str> = unit.lines().collect();
    assert!(lines.contains(&"Environment=\"JUJU_A=no\""), "{unit}");
    assert!(
        lines.contains(&"Environment=\"JUJU_B=50%% of \\\"$x\\\" \\\\ y\""),
        "{unit}"
    );
    let exec = "ExecStart=\"/srv/juju data/tools/machine-1-lxc-0/jujud\" \"machine\" \"--data-dir\" \"/srv/juju data\" \"--machine-id\" \"1/lxc/0\"";
    assert!(lines.contains(&exec), "{unit}");
    assert!(lines.contains(&"WantedBy=multi-user.target"), "{unit}");
}

/// Checks the unit with systemd's own parser: `systemd-analyze verify`
/// fails on unbalanced quotes and bad escapes.
#[test]
fn unit_parses_with_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = machine();
    config.data_dir = dir.path().join("data dir");
    config
        .agent_environment
        .insert("JUJU_B".into(), "50% of \"$x\" \\ y 'z'".into());
    config.proxy.http = "http://us'er:p\"a$HOME w@proxy:3128".into();
    let document = render_and_load(&config, HOSTNAME);
    let unit = written_content(&document, UNIT);

    // verify checks that the binary exists and is executable.
    let binary = config.data_dir.join("tools/machine-1-lxc-0/jujud");
    std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
    std::fs::write(&binary, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let unit_path = dir.path().join("jujud-machine-1-lxc-0.service");
    std::fs::write(&unit_path, &unit).unwrap();

    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit_path)
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run systemd-analyze ({error}); install the systemd package")
        });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "systemd-analyze rejected the unit: {stderr}\n{unit}"
    );
    assert!(
        !stderr.contains(unit_path.to_str().unwrap()),
        "systemd-analyze warned: {stderr}\n{unit}"
    );
}

#[test]
fn output_log_path_quoted_for_shell() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("it's a $log `x`.txt");
    let mut config = machine();
    config.cloud_init_output_log = log.clone();
    let document = render_and_load(&config, HOSTNAME);
    let all = document["output"]["all"].as_str().unwrap();
    let command = all.strip_prefix("| ").expect("output starts with a pipe");

    // cloud-init runs the command through a shell and writes to its stdin.
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"cloud-init says hi\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "cloud-init says hi\n"
    );
}

#[test]
fn hostname_with_newline_or_nul_rejected() {
    for hostname in [
        "juju\nmachine",
        "juju\0",
        "juju machine",
        "",
        "-x",
        "juju\r",
    ] {
        let error = render_user_data_for_host(&machine(), hostname).unwrap_err();
        match &error {
            Error::Invalid(problem) => {
                assert_eq!(problem.field, "hostname", "{hostname:?}");
                assert_eq!(problem.value, hostname);
            }
            other => panic!("{hostname:?}: expected one invalid value, got {other:?}"),
        }
    }
}

#[test]
fn config_value_with_newline_or_nul_rejected() {
    type Change = fn(&mut berth_core::MachineConfig);
    let cases: [(Change, &str); 6] = [
        (
            |c| c.machine_nonce = "n\nruncmd: [reboot]".into(),
            "machine-nonce",
        ),
        (
            |c| c.authorized_keys = vec!["ssh-ed25519 AAAA a\nssh-rsa evil".into()],
            "authorized-keys[0]",
        ),
        (
            |c| c.proxy.http = "http://p:1\nexport X=1".into(),
            "proxy.http",
        ),
        (|c| c.tools.url = "https://x/\0".into(), "tools.url"),
        (
            |c| {
                c.agent_environment
                    .insert("A".into(), "x\nExecStartPre=/bin/evil".into());
            },
            "agent-environment.A",
        ),
        (|c| c.api_info.password = "p\0w".into(), "api-info.password"),
    ];
    for (change, field) in cases {
        let mut config = machine();
        change(&mut config);
        let dir = tempfile::tempdir().unwrap();
        let error = write_user_data_for_host(&config, HOSTNAME, dir.path()).unwrap_err();
        assert!(error.is_invalid_input(), "{field}: {error}");
        assert!(
            error.to_string().contains(&format!("invalid {field} ")),
            "{field}: {error}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{field}: a file was written"
        );
    }
}

#[test]
fn write_user_data_for_host_writes_cloud_init() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_user_data_for_host(&machine(), HOSTNAME, dir.path()).unwrap();
    assert_eq!(path, dir.path().join("cloud-init"));
    let data = std::fs::read(&path).unwrap();
    assert_eq!(
        data,
        render_user_data_for_host(&machine(), HOSTNAME).unwrap()
    );
    assert_eq!(pyyaml_load(&data)["hostname"], HOSTNAME);
}
