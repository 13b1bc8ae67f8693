//! Properties that berth's fuzz targets check, shared by the libFuzzer
//! targets in `fuzz_targets/` and by the unit tests below, which replay the
//! checked-in corpus on a stable compiler.
//!
//! Each `check_*` function panics when a property fails, because a panic
//! is what libFuzzer reports as a crash.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use berth::machine::{AgentTools, ControllerInfo, MachineJob, ProxySettings};
use berth::machine_file::parse_machine_config;
use berth::network::{MAX_INTERFACE_NAME_LEN, MAX_MTU, MIN_MTU};
use berth::userdata::{AGENT_CONF_HEADER, CLOUD_CONFIG_HEADER, agent_conf_path};
use berth::{
    Constraints, Error, MachineConfig, NetworkConfig, render_user_data, render_user_data_for_host,
};
use serde::Deserialize;

/// Checks the machine configuration parser on `data` read as UTF-8, and
/// skips other bytes. Parsing never panics. A parsed configuration comes
/// through a JSON round trip unchanged and validates without panicking,
/// and a valid one renders to cloud-config user data.
pub fn check_machine_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = parse_machine_config(text, Path::new("fuzz-input")) else {
        return;
    };

    let json = serde_json::to_string(&config).expect("a parsed configuration serializes as JSON");
    let reparsed =
        parse_machine_config(&json, Path::new("fuzz-input.json")).unwrap_or_else(|error| {
            panic!("the JSON of a parsed configuration does not parse: {error}\n{json}")
        });
    assert_eq!(
        reparsed, config,
        "JSON round trip changed the configuration"
    );

    if config.validate().is_err() {
        return;
    }
    // The hostname is a container name the way managers build it, so that
    // only the configuration decides the outcome.
    let hostname = "berth-machine-0";
    let rendered = render_user_data_for_host(&config, hostname)
        .unwrap_or_else(|error| panic!("a valid configuration failed to render: {error}"));
    assert!(
        rendered.starts_with(CLOUD_CONFIG_HEADER.as_bytes()),
        "user data does not start with {CLOUD_CONFIG_HEADER:?}"
    );

    // `validate()` limits the machine id so that its tag fits a hostname
    // label, so a valid machine always renders with its tag as hostname.
    if let Err(error) = render_user_data(&config) {
        panic!("a valid configuration failed to render with its tag: {error:?}");
    }
}

/// Checks [`NetworkConfig::from_str`](std::str::FromStr) on `data` read as
/// UTF-8: parsing never panics, every accepted value meets the rules, and
/// its `Display` form parses back to an equal value that prints the same.
pub fn check_network(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = text.parse::<NetworkConfig>() else {
        return;
    };
    assert_network_rules(text, &config);

    let printed = config.to_string();
    let reparsed: NetworkConfig = printed.parse().unwrap_or_else(|error| {
        panic!("{printed:?}, printed from {text:?}, does not parse: {error}")
    });
    assert_eq!(reparsed, config, "{text:?} printed as {printed:?}");
    assert_eq!(reparsed.to_string(), printed);
}

fn assert_network_rules(text: &str, config: &NetworkConfig) {
    let device = config.device();
    assert!(!device.is_empty(), "{text:?}: empty device name accepted");
    assert!(
        device.len() <= MAX_INTERFACE_NAME_LEN,
        "{text:?}: device name {device:?} longer than {MAX_INTERFACE_NAME_LEN} bytes accepted"
    );
    assert!(
        device
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != ':'),
        "{text:?}: device name {device:?} with a forbidden character accepted"
    );
    assert!(
        device != "." && device != "..",
        "{text:?}: device name {device:?} accepted"
    );
    if let Some(mtu) = config.mtu() {
        assert!(
            (MIN_MTU..=MAX_MTU).contains(&mtu),
            "{text:?}: MTU {mtu} outside {MIN_MTU}..={MAX_MTU} accepted"
        );
    }
    if let Some(mac) = config.mac() {
        let octets = mac.octets();
        assert_ne!(octets, [0; 6], "{text:?}: all-zero MAC accepted");
        assert_eq!(
            octets[0] & 0x01,
            0,
            "{text:?}: multicast MAC {mac} accepted"
        );
    }
}

/// Words that YAML 1.1, YAML 1.2, the shell or systemd read specially, and
/// pieces of valid values, that [`FuzzText`] strings are assembled from.
const TOKENS: &[&str] = &[
    "on",
    "off",
    "yes",
    "no",
    "y",
    "n",
    "Yes",
    "ON",
    "true",
    "false",
    "null",
    "Null",
    "~",
    "",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "12:30:45",
    "1_000",
    "0x1f",
    "0o17",
    "017",
    "1e3",
    "-1.5",
    ".inf",
    "-.inf",
    ".nan",
    "0b101",
    "+1",
    "-",
    "- ",
    ": ",
    ":",
    "#",
    " #",
    "&a",
    "*a",
    "!!str ",
    "!",
    "%",
    "@",
    "`",
    "|",
    ">",
    "{",
    "}",
    "[",
    "]",
    ",",
    "?",
    "'",
    "\"",
    "\\",
    "$",
    "$(",
    "${",
    ";",
    "=",
    "\t",
    " ",
    "\n",
    "\r",
    "\u{85}",
    "\u{2028}",
    "\u{feff}",
    "\0",
    "---",
    "...",
    "<<",
    "%YAML 1.1",
    "é",
    "\u{7f}",
    "\u{1b}",
    "\u{1F600}",
    "/",
    "/var/lib/x",
    "1",
    "0",
    "machine",
    "lxc",
    "a",
    "_",
    "A",
    "ssh-ed25519 AAAAC3Nza user@host",
    "http://",
    "https://proxy.example:3128/",
    "10.0.0.1:17070",
    "model-",
    "-----BEGIN CERTIFICATE-----",
    "-----END CERTIFICATE-----",
    "%22",
    "*",
    "?*",
    "'\\''",
    "\"\\\"",
];

/// A string built from [`TOKENS`] and arbitrary characters, so that the
/// fuzzer reaches the words that YAML and shells treat specially far more
/// often than with random bytes alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuzzText(pub String);

impl<'a> Arbitrary<'a> for FuzzText {
    fn arbitrary(input: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let pieces = input.int_in_range(0..=8u8)?;
        let mut text = String::new();
        for _ in 0..pieces {
            if input.ratio(3u8, 4u8)? {
                text.push_str(input.choose(TOKENS)?);
            } else {
                text.push(char::arbitrary(input)?);
            }
        }
        Ok(Self(text))
    }
}

impl FuzzText {
    fn into_string(self) -> String {
        self.0
    }
}

/// Changes to a valid base configuration, and the hostname to render with.
/// `None` keeps the base value.
#[derive(Debug, Clone, Arbitrary)]
#[allow(missing_docs)]
pub struct UserDataInput {
    pub hostname: Option<FuzzText>,
    pub machine_id: Option<FuzzText>,
    pub machine_nonce: Option<FuzzText>,
    pub series: Option<FuzzText>,
    pub data_dir: Option<FuzzText>,
    pub log_dir: Option<FuzzText>,
    pub tools_version: Option<FuzzText>,
    pub tools_url: Option<FuzzText>,
    pub tools_sha256: Option<FuzzText>,
    pub password: Option<FuzzText>,
    pub ca_cert_body: Option<FuzzText>,
    pub model_tag: Option<FuzzText>,
    pub state_info: bool,
    pub authorized_keys: Vec<FuzzText>,
    pub agent_environment: Vec<(FuzzText, FuzzText)>,
    pub proxy: [Option<FuzzText>; 4],
    pub apt_proxy: [Option<FuzzText>; 3],
    pub disable_package_commands: bool,
    pub cloud_init_output_log: Option<FuzzText>,
}

/// Returns a valid configuration of machine `1/lxc/0`.
pub fn base_machine() -> MachineConfig {
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
            addrs: vec!["10.0.0.1:17070".into()],
            ca_cert: pem("MIIBszCCAVmgAwIBAgIU"),
            tag: "machine-1-lxc-0".into(),
            password: "s3cret".into(),
            model_tag: None,
        },
        state_info: None,
        authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBerthFuzz user@host".into()],
        proxy: ProxySettings::default(),
        apt_proxy: ProxySettings::default(),
        disable_package_commands: true,
        agent_environment: BTreeMap::new(),
        constraints: Constraints::default(),
        network_interfaces: Vec::new(),
        cloud_init_output_log: PathBuf::from("/var/log/cloud-init-output.log"),
    }
}

fn pem(body: &str) -> String {
    format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
}

fn text(value: Option<FuzzText>, base: &mut String) {
    if let Some(value) = value {
        *base = value.into_string();
    }
}

fn path(value: Option<FuzzText>, base: &mut PathBuf) {
    if let Some(value) = value {
        *base = PathBuf::from(value.into_string());
    }
}

impl UserDataInput {
    /// Applies the changes to [`base_machine`] and returns the
    /// configuration with the hostname to render it with.
    pub fn build(self) -> (MachineConfig, String) {
        let mut machine = base_machine();
        text(self.machine_id, &mut machine.machine_id);
        // The API tag must be the machine's tag; follow the id when it has one.
        if let Ok(tag) = machine.tag() {
            machine.api_info.tag = tag;
        }
        text(self.machine_nonce, &mut machine.machine_nonce);
        text(self.series, &mut machine.series);
        path(self.data_dir, &mut machine.data_dir);
        path(self.log_dir, &mut machine.log_dir);
        text(self.tools_version, &mut machine.tools.version);
        text(self.tools_url, &mut machine.tools.url);
        text(self.tools_sha256, &mut machine.tools.sha256);
        text(self.password, &mut machine.api_info.password);
        if let Some(body) = self.ca_cert_body {
            machine.api_info.ca_cert = pem(&body.0);
        }
        machine.api_info.model_tag = self.model_tag.map(FuzzText::into_string);
        if self.state_info {
            machine.state_info = Some(machine.api_info.clone());
            machine.jobs.push(MachineJob::JobManageModel);
        }
        machine.authorized_keys = self
            .authorized_keys
            .into_iter()
            .map(FuzzText::into_string)
            .collect();
        machine.agent_environment = self
            .agent_environment
            .into_iter()
            .map(|(name, value)| (name.0, value.0))
            .collect();
        let [http, https, ftp, no_proxy] = self.proxy;
        text(http, &mut machine.proxy.http);
        text(https, &mut machine.proxy.https);
        text(ftp, &mut machine.proxy.ftp);
        text(no_proxy, &mut machine.proxy.no_proxy);
        let [http, https, ftp] = self.apt_proxy;
        text(http, &mut machine.apt_proxy.http);
        text(https, &mut machine.apt_proxy.https);
        text(ftp, &mut machine.apt_proxy.ftp);
        machine.disable_package_commands = self.disable_package_commands;
        path(
            self.cloud_init_output_log,
            &mut machine.cloud_init_output_log,
        );

        let hostname = match self.hostname {
            Some(hostname) => hostname.0,
            None => format!("berth-{}", machine.api_info.tag),
        };
        (machine, hostname)
    }
}

/// The parts of the user data whose values are compared with the input.
#[derive(Debug, Deserialize)]
struct ParsedUserData {
    hostname: String,
    #[serde(default)]
    ssh_authorized_keys: Vec<String>,
    write_files: Vec<ParsedFile>,
}

#[derive(Debug, Deserialize)]
struct ParsedFile {
    path: String,
    content: String,
    permissions: String,
}

#[derive(Debug, Deserialize)]
struct ParsedAgentConf {
    nonce: String,
    #[serde(default)]
    values: BTreeMap<String, String>,
}

/// User data that rendered, with what it must read back to.
#[derive(Debug)]
pub struct RenderedUserData {
    /// The whole user data, header included.
    pub text: String,
    /// The hostname it was rendered with.
    pub hostname: String,
    /// Path of the agent configuration file in the machine.
    pub agent_conf_path: String,
    /// The configuration it was rendered from.
    pub machine: MachineConfig,
}

/// Renders the user data of `input` and checks it: rendering either fails
/// with a validation error, or returns `#cloud-config` YAML that
/// serde-saphyr reads back to the input's hostname, authorized keys,
/// nonce and agent environment. Returns the user data when it rendered.
pub fn check_user_data(input: UserDataInput) -> Option<RenderedUserData> {
    let (machine, hostname) = input.build();
    let rendered = match render_user_data_for_host(&machine, &hostname) {
        Ok(rendered) => rendered,
        Err(Error::Invalid(_) | Error::InvalidMany(_)) => return None,
        Err(error) => {
            panic!("rendering failed with an error other than a validation error: {error:?}")
        }
    };
    let text = String::from_utf8(rendered).expect("user data is UTF-8");
    assert!(
        text.starts_with(CLOUD_CONFIG_HEADER),
        "user data does not start with {CLOUD_CONFIG_HEADER:?}"
    );

    let parsed: ParsedUserData = serde_saphyr::from_str(&text)
        .unwrap_or_else(|error| panic!("user data is not readable YAML: {error}\n{text}"));
    assert_eq!(parsed.hostname, hostname, "hostname\n{text}");
    assert_eq!(
        parsed.ssh_authorized_keys, machine.authorized_keys,
        "authorized keys\n{text}"
    );

    let conf_path = agent_conf_path(&machine)
        .expect("a valid configuration has a tag")
        .to_str()
        .expect("a valid data directory is UTF-8")
        .to_owned();
    let conf = parsed
        .write_files
        .iter()
        .find(|file| file.path == conf_path)
        .unwrap_or_else(|| panic!("no write_files entry for {conf_path}\n{text}"));
    assert_eq!(conf.permissions, "0600");
    let body = conf
        .content
        .strip_prefix(AGENT_CONF_HEADER)
        .unwrap_or_else(|| panic!("agent.conf does not start with {AGENT_CONF_HEADER:?}"));
    let agent_conf: ParsedAgentConf = serde_saphyr::from_str(body)
        .unwrap_or_else(|error| panic!("agent.conf is not readable YAML: {error}\n{body}"));
    assert_eq!(agent_conf.nonce, machine.machine_nonce, "nonce\n{body}");
    assert_eq!(
        agent_conf.values, machine.agent_environment,
        "agent environment\n{body}"
    );

    Some(RenderedUserData {
        text,
        hostname,
        agent_conf_path: conf_path,
        machine,
    })
}

/// Builds a [`UserDataInput`] from fuzzer bytes, as `fuzz_target!` does.
pub fn user_data_input(data: &[u8]) -> Option<UserDataInput> {
    UserDataInput::arbitrary_take_rest(Unstructured::new(data)).ok()
}

#[cfg(test)]
mod tests;
