//! cloud-init user data for a new machine.
//!
//! The user data is `#cloud-config` followed by a YAML document serialized
//! with serde-saphyr from the typed structs below. serde-saphyr quotes every
//! string that a YAML 1.1 reader such as cloud-init's PyYAML would otherwise
//! read as a boolean, number, date or null (`on`, `no`, `2001-12-14`, `~`),
//! so each value reads back as the string it was.
//!
//! The document:
//!
//! - sets the hostname, `manage_etc_hosts` and the locale `C.UTF-8`, because
//!   Debian images do not generate cloud-init's default `en_US.UTF-8` and
//!   cloud-init's config stage fails without it;
//! - installs the authorized SSH keys;
//! - writes the agent proxies to `/etc/profile.d/juju-proxy.sh` and the apt
//!   proxies to `/etc/apt/apt.conf.d/95-juju-proxy`;
//! - updates the package index and installs `curl` and `ca-certificates`,
//!   unless package commands are disabled;
//! - writes the nonce to `<data dir>/nonce.txt`, the agent configuration to
//!   `<data dir>/agents/<tag>/agent.conf` (mode 0600) and the agent's unit
//!   `/etc/systemd/system/jujud-<tag>.service`;
//! - writes an install script and runs it from `runcmd`. The script
//!   downloads the agent tools with curl, rejects them unless their SHA-256
//!   matches, unpacks them into `<data dir>/tools/<version>`, links
//!   `<data dir>/tools/<tag>` to that directory and starts the unit;
//! - appends all of cloud-init's output to the cloud-init output log.
//!
//! Every value is validated first ([`MachineConfig::validate`]). Values in
//! the script go through [`shell_quote`], values in the unit through the
//! systemd quoting functions of [`crate::quoting`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_saphyr::LitString;

use crate::error::{Error, InvalidValue, Result};
use crate::machine::{MachineConfig, MachineJob, ProxySettings};
use crate::machine_validation::tools_version_number;
use crate::names::validate_label;
use crate::quoting::{shell_quote, systemd_environment, systemd_quote_argument};

/// First line of cloud-config user data.
pub const CLOUD_CONFIG_HEADER: &str = "#cloud-config\n";
/// First line of the agent configuration, which the agent reads to pick
/// the file format.
pub const AGENT_CONF_HEADER: &str = "# format 2.0\n";
/// Locale set in the machine. `C.UTF-8` exists on every Debian and Ubuntu
/// system without locale generation.
pub const LOCALE: &str = "C.UTF-8";
/// File in the machine that exports the agent proxies to login shells.
pub const PROXY_PROFILE_PATH: &str = "/etc/profile.d/juju-proxy.sh";
/// apt configuration file in the machine that contains the apt proxies.
pub const APT_PROXY_PATH: &str = "/etc/apt/apt.conf.d/95-juju-proxy";
/// Packages installed unless package commands are disabled: the install
/// script needs curl, and curl needs the CA bundle for https.
pub const PACKAGES: &[&str] = &["curl", "ca-certificates"];

/// Renders the cloud-config user data of `machine`, with the machine's tag
/// (such as `machine-1-lxc-0`) as hostname.
///
/// Backends that know the container name should call
/// [`render_user_data_for_host`] instead, so that the machine's hostname is
/// the container name.
pub fn render_user_data(machine: &MachineConfig) -> Result<Vec<u8>> {
    let tag = machine.tag()?;
    render_user_data_for_host(machine, &tag)
}

/// Renders the cloud-config user data of `machine` with `hostname` as the
/// machine's hostname, usually the full container name.
///
/// Fails with [`Error::Invalid`] or [`Error::InvalidMany`] when the hostname
/// is not a valid hostname label or any value of `machine` breaks a rule.
pub fn render_user_data_for_host(machine: &MachineConfig, hostname: &str) -> Result<Vec<u8>> {
    let mut problems = Vec::new();
    if let Err(error) = validate_label("hostname", hostname) {
        problems.push(error);
    }
    problems.extend(crate::machine_validation::problems(machine));
    match problems.len() {
        0 => {}
        1 => return Err(Error::Invalid(problems.remove(0))),
        _ => return Err(Error::InvalidMany(problems)),
    }

    let document = CloudConfig::build(machine, hostname)?;
    let yaml = to_yaml(&document)?;
    let mut data = Vec::with_capacity(CLOUD_CONFIG_HEADER.len() + yaml.len());
    data.extend_from_slice(CLOUD_CONFIG_HEADER.as_bytes());
    data.extend_from_slice(yaml.as_bytes());
    Ok(data)
}

/// Renders the user data of `machine` and writes it to `<dir>/cloud-init`
/// with [`crate::write_cloud_init_file`]. The hostname is the machine's
/// tag; see [`write_user_data_for_host`]. Returns the path written.
pub fn write_user_data(machine: &MachineConfig, dir: &Path) -> Result<PathBuf> {
    let data = render_user_data(machine)?;
    crate::dirs::write_cloud_init_file(dir, &data)
}

/// Renders the user data of `machine` with `hostname` as the machine's
/// hostname (usually the full container name) and writes it to
/// `<dir>/cloud-init` with [`crate::write_cloud_init_file`]. Returns the
/// path written. Nothing is written when a value is invalid.
pub fn write_user_data_for_host(
    machine: &MachineConfig,
    hostname: &str,
    dir: &Path,
) -> Result<PathBuf> {
    let data = render_user_data_for_host(machine, hostname)?;
    crate::dirs::write_cloud_init_file(dir, &data)
}

/// Renders the content of the agent configuration file
/// `<data dir>/agents/<tag>/agent.conf` of `machine`: the format line,
/// then YAML. `machine` must be valid.
pub fn render_agent_conf(machine: &MachineConfig) -> Result<String> {
    let conf = AgentConf::build(machine)?;
    Ok(format!("{AGENT_CONF_HEADER}{}", to_yaml(&conf)?))
}

/// Returns the path of the agent configuration file inside the machine.
pub fn agent_conf_path(machine: &MachineConfig) -> Result<PathBuf> {
    Ok(machine
        .data_dir
        .join("agents")
        .join(machine.tag()?)
        .join("agent.conf"))
}

/// Returns the path of the install script inside the machine.
pub fn install_script_path(machine: &MachineConfig) -> Result<PathBuf> {
    Ok(machine
        .data_dir
        .join(format!("install-{}.sh", machine.tag()?)))
}

/// Returns the path of the machine agent's systemd unit inside the machine.
pub fn agent_unit_path(machine: &MachineConfig) -> Result<PathBuf> {
    Ok(PathBuf::from("/etc/systemd/system").join(agent_unit_name(&machine.tag()?)))
}

/// Returns the path of the machine agent binary inside the machine:
/// `<data dir>/tools/<tag>/jujud`.
pub fn agent_binary_path(machine: &MachineConfig) -> Result<PathBuf> {
    Ok(machine
        .data_dir
        .join("tools")
        .join(machine.tag()?)
        .join("jujud"))
}

fn agent_unit_name(tag: &str) -> String {
    format!("jujud-{tag}.service")
}

fn to_yaml<T: Serialize>(value: &T) -> Result<String> {
    // Folded block scalars (`>`) would rewrap long single-line values, so
    // only the multi-line file contents, wrapped in `LitString`, use block
    // style.
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    serde_saphyr::to_string_with_options(value, options).map_err(|error| Error::Backend {
        context: "serialize cloud-init user data as YAML".into(),
        source: Box::new(error),
    })
}

/// Returns `path` as UTF-8 text. Validation rejects paths that are not.
fn path_text(field: &str, path: &Path) -> Result<String> {
    path.to_str().map(str::to_owned).ok_or_else(|| {
        InvalidValue::new(field, path.to_string_lossy(), "must be valid UTF-8").into()
    })
}

/// The cloud-config document, in the key order it is written.
#[derive(Debug, Serialize)]
struct CloudConfig<'a> {
    hostname: &'a str,
    manage_etc_hosts: bool,
    locale: &'static str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    ssh_authorized_keys: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    package_update: Option<bool>,
    package_upgrade: bool,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    packages: &'static [&'static str],
    write_files: Vec<WriteFile>,
    runcmd: Vec<Vec<String>>,
    output: Output,
}

/// One entry of cloud-init's `write_files`.
#[derive(Debug, Serialize)]
struct WriteFile {
    path: String,
    content: LitString,
    permissions: &'static str,
    owner: &'static str,
}

impl WriteFile {
    fn new(path: String, content: String, permissions: &'static str) -> Self {
        Self {
            path,
            content: LitString(content),
            permissions,
            owner: "root:root",
        }
    }
}

/// cloud-init's `output` setting.
#[derive(Debug, Serialize)]
struct Output {
    all: String,
}

impl<'a> CloudConfig<'a> {
    fn build(machine: &'a MachineConfig, hostname: &'a str) -> Result<Self> {
        let data_dir = path_text("data-dir", &machine.data_dir)?;
        let mut write_files = Vec::new();

        if let Some(profile) = proxy_profile(&machine.proxy) {
            write_files.push(WriteFile::new(PROXY_PROFILE_PATH.into(), profile, "0644"));
        }
        if let Some(apt) = apt_proxy_conf(&machine.apt_proxy) {
            write_files.push(WriteFile::new(APT_PROXY_PATH.into(), apt, "0644"));
        }
        write_files.push(WriteFile::new(
            format!("{data_dir}/nonce.txt"),
            machine.machine_nonce.clone(),
            "0644",
        ));
        write_files.push(WriteFile::new(
            path_text("data-dir", &agent_conf_path(machine)?)?,
            render_agent_conf(machine)?,
            "0600",
        ));
        write_files.push(WriteFile::new(
            path_text("data-dir", &agent_unit_path(machine)?)?,
            agent_unit(machine)?,
            "0644",
        ));
        let script_path = path_text("data-dir", &install_script_path(machine)?)?;
        write_files.push(WriteFile::new(
            script_path.clone(),
            install_script(machine)?,
            "0700",
        ));

        let packages_enabled = !machine.disable_package_commands;
        let output_log = path_text("cloud-init-output-log", &machine.cloud_init_output_log)?;
        Ok(Self {
            hostname,
            manage_etc_hosts: true,
            locale: LOCALE,
            ssh_authorized_keys: &machine.authorized_keys,
            package_update: packages_enabled.then_some(true),
            package_upgrade: false,
            packages: if packages_enabled { PACKAGES } else { &[] },
            write_files,
            runcmd: vec![vec!["/bin/sh".into(), script_path]],
            output: Output {
                all: format!("| tee -a {}", shell_quote(&output_log)),
            },
        })
    }
}

/// The agent configuration file, in the agent's format 2.0 key spelling.
#[derive(Debug, Serialize)]
struct AgentConf<'a> {
    tag: String,
    datadir: String,
    logdir: String,
    nonce: &'a str,
    jobs: &'a [MachineJob],
    #[serde(rename = "upgradedToVersion")]
    upgraded_to_version: &'a str,
    cacert: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stateaddresses: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    statepassword: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    apiaddresses: &'a [String],
    apipassword: &'a str,
    oldpassword: &'a str,
    values: &'a BTreeMap<String, String>,
}

impl<'a> AgentConf<'a> {
    fn build(machine: &'a MachineConfig) -> Result<Self> {
        let version = tools_version_number(&machine.tools.version).ok_or_else(|| {
            InvalidValue::new(
                "tools.version",
                &machine.tools.version,
                "must be <version>-<os>-<arch>",
            )
        })?;
        let api = &machine.api_info;
        let state = machine.state_info.as_ref();
        Ok(Self {
            tag: machine.tag()?,
            datadir: path_text("data-dir", &machine.data_dir)?,
            logdir: path_text("log-dir", &machine.log_dir)?,
            nonce: &machine.machine_nonce,
            jobs: &machine.jobs,
            upgraded_to_version: version,
            cacert: &api.ca_cert,
            stateaddresses: state.map(|info| info.addrs.as_slice()),
            statepassword: state.map(|info| info.password.as_str()),
            model: api.model_tag.as_deref(),
            apiaddresses: &api.addrs,
            apipassword: &api.password,
            oldpassword: &api.password,
            values: &machine.agent_environment,
        })
    }
}

/// Returns the proxy variables of `proxy` that are set, in lower and upper
/// case, because programs read either spelling.
fn proxy_variables(proxy: &ProxySettings) -> Vec<(&'static str, &str)> {
    let settings = [
        ("http_proxy", "HTTP_PROXY", &proxy.http),
        ("https_proxy", "HTTPS_PROXY", &proxy.https),
        ("ftp_proxy", "FTP_PROXY", &proxy.ftp),
        ("no_proxy", "NO_PROXY", &proxy.no_proxy),
    ];
    let mut variables = Vec::new();
    for (lower, upper, value) in settings {
        if !value.is_empty() {
            variables.push((lower, value.as_str()));
            variables.push((upper, value.as_str()));
        }
    }
    variables
}

/// Renders shell lines that export the proxy variables, each value quoted.
fn proxy_exports(proxy: &ProxySettings) -> String {
    let mut lines = String::new();
    for (name, value) in proxy_variables(proxy) {
        lines.push_str(&format!("export {name}={}\n", shell_quote(value)));
    }
    lines
}

fn proxy_profile(proxy: &ProxySettings) -> Option<String> {
    let exports = proxy_exports(proxy);
    (!exports.is_empty())
        .then(|| format!("# Proxies of the machine agent, for login shells.\n{exports}"))
}

/// Renders the apt configuration for `proxy`, or `None` when no apt proxy
/// is set. Validation rejects `"` in apt proxy values, because apt.conf
/// strings have no escape for it. Every other character is literal there.
fn apt_proxy_conf(proxy: &ProxySettings) -> Option<String> {
    // NOTE: apt has no setting that takes a no_proxy list, so
    // `apt-proxy.no-proxy` is not written; apt reaches every host through
    // the proxy.
    let mut conf = String::new();
    for (scheme, value) in [
        ("http", &proxy.http),
        ("https", &proxy.https),
        ("ftp", &proxy.ftp),
    ] {
        if !value.is_empty() {
            conf.push_str(&format!("Acquire::{scheme}::Proxy \"{value}\";\n"));
        }
    }
    (!conf.is_empty()).then_some(conf)
}

/// Renders the systemd unit of the machine agent.
fn agent_unit(machine: &MachineConfig) -> Result<String> {
    let tag = machine.tag()?;
    let binary = path_text("data-dir", &agent_binary_path(machine)?)?;
    let data_dir = path_text("data-dir", &machine.data_dir)?;

    let mut unit = String::new();
    unit.push_str("[Unit]\n");
    unit.push_str(&format!("Description=juju agent for {tag}\n"));
    unit.push_str("After=network-online.target\n");
    unit.push_str("Wants=network-online.target\n");
    unit.push('\n');
    unit.push_str("[Service]\n");
    for (name, value) in proxy_variables(&machine.proxy) {
        unit.push_str(&format!(
            "Environment={}\n",
            systemd_environment(name, value)
        ));
    }
    for (name, value) in &machine.agent_environment {
        unit.push_str(&format!(
            "Environment={}\n",
            systemd_environment(name, value)
        ));
    }
    let command = [
        binary.as_str(),
        "machine",
        "--data-dir",
        &data_dir,
        "--machine-id",
        &machine.machine_id,
    ];
    let command: Vec<String> = command
        .iter()
        .map(|word| systemd_quote_argument(word))
        .collect();
    unit.push_str(&format!("ExecStart={}\n", command.join(" ")));
    unit.push_str("Restart=on-failure\n");
    unit.push_str("RestartSec=5\n");
    unit.push('\n');
    unit.push_str("[Install]\n");
    unit.push_str("WantedBy=multi-user.target\n");
    Ok(unit)
}

/// Renders the script that downloads, checks and unpacks the agent tools
/// and starts the agent. User values appear only in the assignments at the
/// top, each through [`shell_quote`]. The rest of the script refers to
/// them as quoted variables.
fn install_script(machine: &MachineConfig) -> Result<String> {
    let tag = machine.tag()?;
    let tools_root = path_text("data-dir", &machine.data_dir.join("tools"))?;
    let assignments = [
        ("url", machine.tools.url.clone()),
        ("expected_sha256", machine.tools.sha256.to_ascii_lowercase()),
        ("tools_root", tools_root),
        ("version", machine.tools.version.clone()),
        ("tag", tag.clone()),
        ("unit", agent_unit_name(&tag)),
    ];

    let mut script = String::new();
    script.push_str("#!/bin/sh\n");
    script.push_str("# Downloads the machine agent's tools, rejects them unless their SHA-256\n");
    script.push_str("# matches, unpacks them and starts the agent's systemd unit.\n");
    script.push_str("set -eu\n\n");
    script.push_str(&proxy_exports(&machine.proxy));
    for (name, value) in assignments {
        script.push_str(&format!("{name}={}\n", shell_quote(&value)));
    }
    script.push_str(INSTALL_SCRIPT_BODY);
    Ok(script)
}

/// The fixed part of the install script. It runs in `$tools_root`, so the
/// download's name in the `sha256sum --check` line is a fixed relative
/// name that needs no escaping.
const INSTALL_SCRIPT_BODY: &str = r#"
say() { printf 'install agent: %s\n' "$*"; }
fail() { printf 'install agent: %s\n' "$*" >&2; exit 1; }

command -v curl >/dev/null 2>&1 || fail "curl not found; install the curl package"
mkdir -p "$tools_root"
cd "$tools_root"
download="$version.download"
trap 'rm -f "$download"' EXIT
rm -f "$download"

say "downloading agent tools $version from $url"
curl --fail --silent --show-error --location --retry 3 --output "$download" --url "$url" \
    || fail "download of $url failed"

if ! printf '%s  %s\n' "$expected_sha256" "$download" | sha256sum --check --status -; then
    actual=$(sha256sum "$download" | cut -d ' ' -f 1)
    fail "rejected agent tools from $url: SHA-256 is $actual, expected $expected_sha256; not unpacking them and not starting the agent"
fi
say "SHA-256 of agent tools matches $expected_sha256"

rm -rf "$version.partial"
mkdir "$version.partial"
tar -xzf "$download" -C "$version.partial" --no-same-owner
[ -x "$version.partial/jujud" ] || fail "agent tools from $url hold no executable jujud"
rm -rf "$version"
mv "$version.partial" "$version"
ln -sfn "$version" "$tag"

systemctl daemon-reload
systemctl enable --now "$unit"
say "started $unit"
"#;
