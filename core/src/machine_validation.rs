//! The rules a [`MachineConfig`] must meet before a machine is created.
//!
//! Every value of the configuration ends up in the machine's cloud-config,
//! in its agent configuration, in a shell script or in a systemd unit. The
//! rules here reject what any of those cannot carry, and what is plainly
//! wrong, before anything is created. Each problem names the field as it is
//! spelled in the serialized configuration (such as `tools.sha256`), the
//! value and the rule.

use std::net::Ipv6Addr;
use std::path::{Component, Path};

use crate::error::InvalidValue;
use crate::machine::{ControllerInfo, MachineConfig, ProxySettings};
use crate::names::validate_machine_id;
use crate::network::{MacAddress, validate_interface_name, validate_mtu};

/// Characters that YAML (PyYAML), systemd or a shell line treat as the end
/// of a line. A value holding one could start a new line of a unit file or
/// a script, so no value except a PEM certificate may hold them.
const LINE_BREAKS: [char; 5] = ['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'];

/// Returns every rule `config` breaks: first NUL and line-break problems of
/// any string, then the field rules in field order.
pub(crate) fn problems(config: &MachineConfig) -> Vec<InvalidValue> {
    let mut problems = Problems::default();
    problems.check_strings(config);

    if let Err(error) = validate_machine_id(&config.machine_id) {
        problems.push(InvalidValue {
            field: "machine-id".into(),
            ..error
        });
    }
    problems.non_empty("machine-nonce", &config.machine_nonce);
    problems.series(&config.series);
    problems.absolute_path("data-dir", &config.data_dir);
    problems.absolute_path("log-dir", &config.log_dir);
    if config.jobs.is_empty() {
        problems.reject("jobs", "[]", "must name at least one job");
    }
    problems.tools(config);

    let tag = config.tag().ok();
    problems.controller("api-info", &config.api_info, tag.as_deref());
    if let Some(state_info) = &config.state_info {
        problems.controller("state-info", state_info, tag.as_deref());
    }

    for (index, key) in config.authorized_keys.iter().enumerate() {
        problems.authorized_key(&format!("authorized-keys[{index}]"), key);
    }
    problems.proxy("proxy", &config.proxy, false);
    problems.proxy("apt-proxy", &config.apt_proxy, true);
    for name in config.agent_environment.keys() {
        problems.environment_name(name);
    }
    for (index, interface) in config.network_interfaces.iter().enumerate() {
        problems.interface(index, interface);
    }
    problems.absolute_path("cloud-init-output-log", &config.cloud_init_output_log);
    problems.0
}

#[derive(Default)]
struct Problems(Vec<InvalidValue>);

impl Problems {
    fn push(&mut self, problem: InvalidValue) {
        self.0.push(problem);
    }

    fn reject(&mut self, field: &str, value: &str, rule: impl Into<String>) {
        self.0.push(InvalidValue::new(field, value, rule));
    }

    fn non_empty(&mut self, field: &str, value: &str) -> bool {
        if value.is_empty() {
            self.reject(field, value, "must not be empty");
            return false;
        }
        true
    }

    /// Checks every string of the configuration, wherever it sits, for NUL
    /// and line breaks. The walk goes over the serialized form, so a field
    /// added later is checked without changes here.
    fn check_strings(&mut self, config: &MachineConfig) {
        match serde_json::to_value(config) {
            Ok(value) => self.check_value(String::new(), &value),
            Err(error) => self.reject(
                "machine config",
                "",
                format!("cannot be serialized: {error}; paths must be valid UTF-8"),
            ),
        }
    }

    fn check_value(&mut self, field: String, value: &serde_json::Value) {
        match value {
            serde_json::Value::String(text) => self.check_string(&field, text),
            serde_json::Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    self.check_value(format!("{field}[{index}]"), item);
                }
            }
            serde_json::Value::Object(map) => {
                for (key, item) in map {
                    let child = if field.is_empty() {
                        key.clone()
                    } else {
                        format!("{field}.{key}")
                    };
                    // A map key is a string too (agent environment names).
                    self.check_string(&format!("{child} (key)"), key);
                    self.check_value(child, item);
                }
            }
            _ => {}
        }
    }

    fn check_string(&mut self, field: &str, text: &str) {
        if text.contains('\0') {
            self.reject(field, text, "must not contain a NUL character");
        }
        let pem = field.ends_with("ca-cert");
        if !pem && let Some(found) = text.chars().find(|c| LINE_BREAKS.contains(c)) {
            self.reject(
                field,
                text,
                format!("must be a single line, but contains line break {found:?}"),
            );
        }
    }

    fn series(&mut self, series: &str) {
        if let Err(error) = crate::names::validate_series(series) {
            self.push(error);
        }
    }

    fn absolute_path(&mut self, field: &str, path: &Path) {
        let shown = path.to_string_lossy();
        if !path.is_absolute() {
            self.reject(field, &shown, "must be an absolute path");
        } else if path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            self.reject(field, &shown, "must not contain '.' or '..' components");
        } else if path.parent().is_none() {
            self.reject(field, &shown, "must not be the root directory");
        }
    }

    fn tools(&mut self, config: &MachineConfig) {
        let tools = &config.tools;
        if tools_version_number(&tools.version).is_none() {
            self.reject(
                "tools.version",
                &tools.version,
                "must be <version>-<os>-<arch> of letters, digits, '.', '+' and '_', starting with a digit, such as 3.5.1-ubuntu-amd64",
            );
        }
        if let Err(rule) = check_http_url(&tools.url) {
            self.reject("tools.url", &tools.url, rule);
        }
        if tools.sha256.len() != 64 || !tools.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            self.reject(
                "tools.sha256",
                &tools.sha256,
                "must be a SHA-256 digest of 64 hexadecimal digits",
            );
        }
        if tools.size == 0 {
            self.reject(
                "tools.size",
                "0",
                "must be the tarball size in bytes, greater than 0",
            );
        }
    }

    fn controller(&mut self, field: &str, info: &ControllerInfo, machine_tag: Option<&str>) {
        if info.addrs.is_empty() {
            self.reject(
                &format!("{field}.addrs"),
                "[]",
                "must hold at least one host:port address",
            );
        }
        for (index, address) in info.addrs.iter().enumerate() {
            if let Err(rule) = check_host_port(address) {
                self.reject(&format!("{field}.addrs[{index}]"), address, rule);
            }
        }
        let ca_cert = info.ca_cert.trim();
        if !(ca_cert.starts_with("-----BEGIN CERTIFICATE-----")
            && ca_cert.ends_with("-----END CERTIFICATE-----"))
        {
            self.reject(
                &format!("{field}.ca-cert"),
                &info.ca_cert,
                "must be a PEM certificate from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----",
            );
        }
        if let Some(machine_tag) = machine_tag
            && info.tag != machine_tag
        {
            self.reject(
                &format!("{field}.tag"),
                &info.tag,
                format!("must be the machine's tag {machine_tag:?}"),
            );
        }
        self.non_empty(&format!("{field}.password"), &info.password);
        if let Some(model_tag) = &info.model_tag
            && model_tag.strip_prefix("model-").is_none_or(str::is_empty)
        {
            self.reject(
                &format!("{field}.model-tag"),
                model_tag,
                "must be model-<uuid>",
            );
        }
    }

    fn authorized_key(&mut self, field: &str, key: &str) {
        if key.trim().is_empty() {
            self.reject(field, key, "must be an SSH public key, not empty");
        }
        // Line breaks are rejected for every string; a key is one line of
        // authorized_keys, so the rule is stated here for the reader.
    }

    fn proxy(&mut self, field: &str, proxy: &ProxySettings, apt: bool) {
        let values = [
            ("http", &proxy.http),
            ("https", &proxy.https),
            ("ftp", &proxy.ftp),
            ("no-proxy", &proxy.no_proxy),
        ];
        for (name, value) in values {
            let field = format!("{field}.{name}");
            if let Some(bad) = value
                .chars()
                .find(|c| c.is_control() && !LINE_BREAKS.contains(c) && *c != '\0')
            {
                self.reject(
                    &field,
                    value,
                    format!("must not contain control character {bad:?}"),
                );
            }
            if apt && value.contains('"') {
                self.reject(
                    &field,
                    value,
                    "must not contain '\"', because apt.conf strings have no escape for it; write it as %22",
                );
            }
            if name != "no-proxy" && value.starts_with('-') {
                self.reject(&field, value, "must be a proxy URL, not start with '-'");
            }
        }
    }

    fn environment_name(&mut self, name: &str) {
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            self.reject(
                "agent-environment",
                name,
                "must be an environment variable name: ASCII letters, digits and '_', not starting with a digit",
            );
        }
    }

    fn interface(&mut self, index: usize, interface: &crate::machine::InterfaceInfo) {
        let field = format!("network-interfaces[{index}]");
        if let Err(error) = validate_interface_name(&interface.name) {
            self.push(InvalidValue {
                field: format!("{field}.name"),
                ..error
            });
        }
        if let Some(mac) = &interface.mac
            && let Err(error) = mac.parse::<MacAddress>()
        {
            self.push(InvalidValue {
                field: format!("{field}.mac"),
                ..error
            });
        }
        if let Err(rule) = check_cidr(&interface.address) {
            self.reject(&format!("{field}.address"), &interface.address, rule);
        }
        if let Some(gateway) = &interface.gateway
            && gateway.parse::<std::net::IpAddr>().is_err()
        {
            self.reject(
                &format!("{field}.gateway"),
                gateway,
                "must be an IP address",
            );
        }
        for (server_index, server) in interface.dns_servers.iter().enumerate() {
            if server.parse::<std::net::IpAddr>().is_err() {
                self.reject(
                    &format!("{field}.dns-servers[{server_index}]"),
                    server,
                    "must be an IP address",
                );
            }
        }
        if let Some(mtu) = interface.mtu
            && let Err(error) = validate_mtu(mtu)
        {
            self.push(InvalidValue {
                field: format!("{field}.mtu"),
                ..error
            });
        }
    }
}

/// Returns the version number of an agent version `<number>-<os>-<arch>`,
/// such as `3.5.1` of `3.5.1-ubuntu-amd64` or `2.9-beta1` of
/// `2.9-beta1-ubuntu-amd64`, or `None` when `version` is not of that form.
pub(crate) fn tools_version_number(version: &str) -> Option<&str> {
    let allowed = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'_' | b'-'))
    };
    let mut parts = version.rsplitn(3, '-');
    let (arch, os, number) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = [arch, os, number].into_iter().all(allowed)
        && !arch.contains('-')
        && !os.contains('-')
        && number.starts_with(|c: char| c.is_ascii_digit());
    valid.then_some(number)
}

fn check_http_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| "must be an http:// or https:// URL".to_owned())?;
    if let Some(bad) = url.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("must not contain {bad:?}; percent-encode it"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err("must name a host after the scheme".into());
    }
    Ok(())
}

fn check_host_port(address: &str) -> Result<(), String> {
    let rule =
        "must be host:port with a port from 1 to 65535, such as 10.0.0.1:17070 or [fd00::1]:17070";
    let (host, port) = address.rsplit_once(':').ok_or(rule)?;
    if !matches!(port.parse::<u16>(), Ok(1..)) || port.starts_with('+') {
        return Err(rule.into());
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(rule)?;
        return inner.parse::<Ipv6Addr>().map(drop).map_err(|_| rule.into());
    }
    let valid_host = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if valid_host { Ok(()) } else { Err(rule.into()) }
}

fn check_cidr(address: &str) -> Result<(), String> {
    let rule = "must be an IP address with a prefix length, such as 10.0.3.5/24";
    let (ip, prefix) = address.split_once('/').ok_or(rule)?;
    let ip: std::net::IpAddr = ip.parse().map_err(|_| rule)?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match prefix.parse::<u8>() {
        Ok(length) if length <= max && !prefix.starts_with('+') => Ok(()),
        _ => Err(rule.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::machine::{AgentTools, Constraints, InterfaceInfo, MachineJob};

    const CA_CERT: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";

    fn machine() -> MachineConfig {
        MachineConfig {
            machine_id: "1/lxc/0".into(),
            machine_nonce: "nonce-1".into(),
            series: "bookworm".into(),
            data_dir: PathBuf::from("/var/lib/juju"),
            log_dir: PathBuf::from("/var/log/juju"),
            jobs: vec![MachineJob::JobHostUnits],
            tools: AgentTools {
                version: "3.5.1-ubuntu-amd64".into(),
                url: "https://10.0.0.1:17070/tools".into(),
                sha256: "0123456789abcdef".repeat(4),
                size: 10,
            },
            api_info: ControllerInfo {
                addrs: vec!["10.0.0.1:17070".into()],
                ca_cert: CA_CERT.into(),
                tag: "machine-1-lxc-0".into(),
                password: "secret".into(),
                model_tag: None,
            },
            state_info: None,
            authorized_keys: vec!["ssh-ed25519 AAAA user@host".into()],
            proxy: ProxySettings::default(),
            apt_proxy: ProxySettings::default(),
            disable_package_commands: false,
            agent_environment: BTreeMap::new(),
            constraints: Constraints::default(),
            network_interfaces: Vec::new(),
            cloud_init_output_log: PathBuf::from("/var/log/cloud-init-output.log"),
        }
    }

    /// Applies `change` to a valid machine and asserts that validation
    /// reports exactly one problem, on `field`, whose rule contains `rule`.
    #[track_caller]
    fn assert_rejected(change: impl FnOnce(&mut MachineConfig), field: &str, rule: &str) {
        let mut config = machine();
        change(&mut config);
        let found = problems(&config);
        assert_eq!(
            found.len(),
            1,
            "expected one problem on {field}, got {found:#?}"
        );
        assert_eq!(found[0].field, field, "{found:#?}");
        assert!(
            found[0].rule.contains(rule),
            "rule {:?} lacks {rule:?}",
            found[0].rule
        );
    }

    #[test]
    fn valid_machine_has_no_problems() {
        assert_eq!(problems(&machine()), vec![]);
        let mut config = machine();
        config.state_info = Some(config.api_info.clone());
        config.api_info.model_tag = Some("model-0b4e7a3c".into());
        config.api_info.addrs.push("[fd00::1]:17070".into());
        config
            .api_info
            .addrs
            .push("controller.example.com:443".into());
        config.tools.url = "http://controller:17070/tools?x=1".into();
        config.tools.version = "2.9-beta1-ubuntu-arm64".into();
        config.proxy.http = "http://u'x\"y$z w@proxy:3128".into();
        config.proxy.no_proxy = "localhost, 10.0.0.0/8".into();
        config
            .agent_environment
            .insert("_LANG2".into(), "no".into());
        config.network_interfaces.push(InterfaceInfo {
            name: "eth0".into(),
            mac: Some("00:16:3e:aa:bb:01".into()),
            address: "10.0.3.5/24".into(),
            gateway: Some("10.0.3.1".into()),
            dns_servers: vec!["10.0.3.1".into(), "fd00::53".into()],
            mtu: Some(9000),
        });
        assert_eq!(problems(&config), vec![]);
    }

    #[test]
    fn machine_id_checked() {
        assert_rejected(
            |c| c.machine_id = "1/lxc".into(),
            "machine-id",
            "number followed by",
        );
    }

    #[test]
    fn nonce_must_not_be_empty() {
        assert_rejected(
            |c| c.machine_nonce.clear(),
            "machine-nonce",
            "must not be empty",
        );
    }

    #[test]
    fn series_must_be_plausible() {
        for series in ["", "Bookworm", "book worm", "bookworm/", "-noble", "../x"] {
            assert_rejected(
                |c| c.series = series.into(),
                "series",
                "lowercase ASCII letters",
            );
        }
        assert_rejected(|c| c.series = "a".repeat(33), "series", "1 to 32");
        for series in ["noble", "bookworm", "centos7", "a", "24.04"] {
            let mut config = machine();
            config.series = series.into();
            assert_eq!(problems(&config), vec![], "{series}");
        }
    }

    #[test]
    fn directories_must_be_absolute() {
        assert_rejected(
            |c| c.data_dir = "var/lib/juju".into(),
            "data-dir",
            "absolute",
        );
        assert_rejected(|c| c.log_dir = "".into(), "log-dir", "absolute");
        assert_rejected(
            |c| c.data_dir = "/var/lib/../juju".into(),
            "data-dir",
            "'..'",
        );
        assert_rejected(|c| c.data_dir = "/".into(), "data-dir", "root directory");
        assert_rejected(
            |c| c.cloud_init_output_log = "out.log".into(),
            "cloud-init-output-log",
            "absolute",
        );
    }

    #[test]
    fn jobs_must_not_be_empty() {
        assert_rejected(|c| c.jobs.clear(), "jobs", "at least one job");
    }

    #[test]
    fn tools_version_checked() {
        for version in [
            "",
            "3.5.1",
            "3.5.1-ubuntu",
            "v3.5.1-ubuntu-amd64",
            "3.5.1-ubuntu-amd64/x",
            "3.5.1-ubu ntu-amd64",
            "3.5.1--amd64",
        ] {
            assert_rejected(
                |c| c.tools.version = version.into(),
                "tools.version",
                "<version>-<os>-<arch>",
            );
        }
        assert_eq!(tools_version_number("3.5.1-ubuntu-amd64"), Some("3.5.1"));
        assert_eq!(
            tools_version_number("2.9-beta1-ubuntu-amd64"),
            Some("2.9-beta1")
        );
    }

    #[test]
    fn tools_url_must_be_http() {
        for url in [
            "",
            "ftp://x/tools",
            "file:///tmp/tools",
            "https://",
            "http:///tools",
            "-https://x",
            "tools.tgz",
        ] {
            assert_rejected(|c| c.tools.url = url.into(), "tools.url", "");
        }
        assert_rejected(
            |c| c.tools.url = "ftp://x/t".into(),
            "tools.url",
            "http:// or https://",
        );
        assert_rejected(
            |c| c.tools.url = "https://x/a b".into(),
            "tools.url",
            "percent-encode",
        );
        assert_rejected(
            |c| c.tools.url = "https://x/a\tb".into(),
            "tools.url",
            "percent-encode",
        );
    }

    #[test]
    fn tools_sha256_must_be_64_hex() {
        for sha in [
            "",
            "abc",
            &"a".repeat(63),
            &"a".repeat(65),
            &"g".repeat(64),
            &format!("{} ", "a".repeat(63)),
        ] {
            assert_rejected(
                |c| c.tools.sha256 = sha.into(),
                "tools.sha256",
                "64 hexadecimal digits",
            );
        }
        let mut config = machine();
        config.tools.sha256 = "ABCDEF0123456789".repeat(4);
        assert_eq!(problems(&config), vec![]);
    }

    #[test]
    fn tools_size_must_be_positive() {
        assert_rejected(|c| c.tools.size = 0, "tools.size", "greater than 0");
    }

    #[test]
    fn api_addresses_checked() {
        assert_rejected(
            |c| c.api_info.addrs.clear(),
            "api-info.addrs",
            "at least one",
        );
        for address in [
            "10.0.0.1",
            "10.0.0.1:",
            "10.0.0.1:0",
            "10.0.0.1:65536",
            "10.0.0.1:+80",
            ":17070",
            "fd00::1:17070",
            "[fd00::1:17070",
            "[zz::1]:17070",
            "a b:17070",
            "host-:17070",
            "a..b:1",
        ] {
            assert_rejected(
                |c| c.api_info.addrs = vec![address.into()],
                "api-info.addrs[0]",
                "host:port",
            );
        }
    }

    #[test]
    fn ca_cert_must_be_pem() {
        assert_rejected(
            |c| c.api_info.ca_cert = "not a cert".into(),
            "api-info.ca-cert",
            "PEM certificate",
        );
        assert_rejected(
            |c| c.api_info.ca_cert.clear(),
            "api-info.ca-cert",
            "PEM certificate",
        );
    }

    #[test]
    fn tag_must_match_machine() {
        assert_rejected(
            |c| c.api_info.tag = "machine-2".into(),
            "api-info.tag",
            "\"machine-1-lxc-0\"",
        );
    }

    #[test]
    fn password_must_not_be_empty() {
        assert_rejected(
            |c| c.api_info.password.clear(),
            "api-info.password",
            "must not be empty",
        );
    }

    #[test]
    fn model_tag_checked() {
        assert_rejected(
            |c| c.api_info.model_tag = Some("0b4e7a3c".into()),
            "api-info.model-tag",
            "model-<uuid>",
        );
        assert_rejected(
            |c| c.api_info.model_tag = Some("model-".into()),
            "api-info.model-tag",
            "model-<uuid>",
        );
    }

    #[test]
    fn state_info_checked_like_api_info() {
        let mut config = machine();
        let mut state = config.api_info.clone();
        state.tag = "machine-9".into();
        state.password.clear();
        state.addrs = vec!["nope".into()];
        config.state_info = Some(state);
        let fields: Vec<String> = problems(&config).into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "state-info.addrs[0]",
                "state-info.tag",
                "state-info.password"
            ]
        );
    }

    #[test]
    fn authorized_key_must_be_one_line() {
        assert_rejected(
            |c| {
                c.authorized_keys
                    .push("ssh-ed25519 AAAA a\nssh-rsa BBBB evil".into())
            },
            "authorized-keys[1]",
            "single line",
        );
        assert_rejected(
            |c| c.authorized_keys.push("ssh-ed25519 AAAA a\r".into()),
            "authorized-keys[1]",
            "single line",
        );
        assert_rejected(
            |c| c.authorized_keys.push("  ".into()),
            "authorized-keys[1]",
            "not empty",
        );
    }

    #[test]
    fn proxy_values_checked() {
        assert_rejected(
            |c| c.proxy.http = "http://proxy\u{1b}:3128".into(),
            "proxy.http",
            "control character",
        );
        assert_rejected(
            |c| c.proxy.https = "--config=/etc/passwd".into(),
            "proxy.https",
            "not start with '-'",
        );
        assert_rejected(
            |c| c.apt_proxy.http = "http://a\"b:3128".into(),
            "apt-proxy.http",
            "%22",
        );
        assert_rejected(
            |c| c.apt_proxy.ftp = "ftp://x\u{7f}".into(),
            "apt-proxy.ftp",
            "control character",
        );
        // The agent proxy is only ever shell-quoted or systemd-quoted, so a
        // double quote is fine there.
        let mut config = machine();
        config.proxy.http = "http://a\"b:3128".into();
        assert_eq!(problems(&config), vec![]);
    }

    #[test]
    fn environment_names_checked() {
        for name in ["", "1A", "A-B", "A B", "A=B", "Ä", "$A"] {
            assert_rejected(
                |c| {
                    c.agent_environment.insert(name.into(), "x".into());
                },
                "agent-environment",
                "environment variable name",
            );
        }
    }

    #[test]
    fn interfaces_checked() {
        let interface = InterfaceInfo {
            name: "eth0".into(),
            mac: None,
            address: "10.0.3.5/24".into(),
            gateway: None,
            dns_servers: vec![],
            mtu: None,
        };
        type Change = fn(&mut InterfaceInfo);
        let cases: [(Change, &str, &str); 6] = [
            (
                |i| i.name = "eth 0".into(),
                "network-interfaces[0].name",
                "only printable",
            ),
            (
                |i| i.mac = Some("ff:ff:ff:ff:ff:ff".into()),
                "network-interfaces[0].mac",
                "multicast",
            ),
            (
                |i| i.address = "10.0.3.5".into(),
                "network-interfaces[0].address",
                "prefix length",
            ),
            (
                |i| i.address = "10.0.3.5/33".into(),
                "network-interfaces[0].address",
                "prefix length",
            ),
            (
                |i| i.gateway = Some("gw".into()),
                "network-interfaces[0].gateway",
                "IP address",
            ),
            (
                |i| i.mtu = Some(10),
                "network-interfaces[0].mtu",
                "between 68",
            ),
        ];
        for (change, field, rule) in cases {
            let mut broken = interface.clone();
            change(&mut broken);
            assert_rejected(|c| c.network_interfaces.push(broken), field, rule);
        }
    }

    #[test]
    fn nul_rejected_in_any_string() {
        assert_rejected(|c| c.machine_nonce = "a\0b".into(), "machine-nonce", "NUL");
        assert_rejected(
            |c| c.api_info.ca_cert = CA_CERT.replacen("MII", "M\0II", 1),
            "api-info.ca-cert",
            "NUL",
        );
        assert_rejected(
            |c| c.api_info.password = "pa\0ss".into(),
            "api-info.password",
            "NUL",
        );
        assert_rejected(
            |c| {
                c.agent_environment.insert("A".into(), "x\0".into());
            },
            "agent-environment.A",
            "NUL",
        );
        assert_rejected(
            |c| c.constraints.arch = Some("amd\x0064".into()),
            "constraints.arch",
            "NUL",
        );
    }

    #[test]
    fn line_break_rejected_outside_ca_cert() {
        for line_break in ["\n", "\r", "\u{85}", "\u{2028}", "\u{2029}"] {
            assert_rejected(
                |c| c.api_info.password = format!("a{line_break}b"),
                "api-info.password",
                "single line",
            );
            assert_rejected(
                |c| {
                    c.agent_environment
                        .insert("A".into(), format!("x{line_break}y"));
                },
                "agent-environment.A",
                "single line",
            );
            assert_rejected(
                |c| c.proxy.http = format!("http://p{line_break}:1"),
                "proxy.http",
                "single line",
            );
            assert_rejected(
                |c| c.constraints.arch = Some(format!("a{line_break}")),
                "constraints.arch",
                "single line",
            );
        }
        // A PEM certificate is made of lines.
        let mut config = machine();
        config.api_info.ca_cert = CA_CERT.replace('\n', "\r\n");
        assert_eq!(problems(&config), vec![]);
    }

    #[test]
    fn every_problem_reported_at_once() {
        let mut config = machine();
        config.machine_nonce.clear();
        config.tools.sha256 = "x".into();
        config.tools.size = 0;
        config.api_info.password = "a\nb".into();
        let fields: Vec<String> = problems(&config).into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "api-info.password",
                "machine-nonce",
                "tools.sha256",
                "tools.size"
            ]
        );
        let error = config.validate().unwrap_err();
        assert!(error.is_invalid_input());
        let message = error.to_string();
        assert!(message.starts_with("4 invalid values:"), "{message}");
        assert!(
            message.contains("invalid tools.sha256 \"x\": must be a SHA-256 digest"),
            "{message}"
        );
    }

    #[test]
    fn single_problem_is_plain_invalid() {
        let mut config = machine();
        config.tools.size = 0;
        match config.validate().unwrap_err() {
            crate::Error::Invalid(problem) => assert_eq!(problem.field, "tools.size"),
            other => panic!("expected Error::Invalid, got {other:?}"),
        }
    }
}
