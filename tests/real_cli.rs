//! The `berth` command on real containers: the demo, create, list,
//! destroy, gc and its errors. Needs root, liblxc and busybox-static.
//!
//! Each test runs the built binary with its own lxc path, container
//! directories and bridge under a temporary base, named after the test,
//! and removes what a crashed earlier run of the same test left.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth::lxc::bridge;
use berth::lxc::container::{Container, ContainerState, ListKind, list_containers};

/// Prefix of every bridge and directory these tests make.
const TEST_PREFIX: &str = "btcli";

fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let effective_uid = status
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .and_then(|line| line.split_whitespace().nth(2))
        .unwrap_or("unknown")
        .to_owned();
    assert_eq!(
        effective_uid, "0",
        "the command tests create real containers and bridges and must run as root"
    );
}

/// The directories, bridge and manager name of one test.
struct CliEnv {
    base: PathBuf,
    bridge: String,
    manager: String,
}

impl CliEnv {
    fn new(tag: &str) -> Self {
        require_root();
        let env = Self {
            base: std::env::temp_dir().join(format!("berth-{TEST_PREFIX}-{tag}")),
            bridge: format!("{TEST_PREFIX}{tag}"),
            manager: format!("{TEST_PREFIX}{tag}"),
        };
        assert!(
            env.bridge.len() <= 15,
            "bridge name {:?} too long",
            env.bridge
        );
        env.cleanup();
        std::fs::create_dir_all(&env.base).unwrap();
        env
    }

    fn lxc_path(&self) -> PathBuf {
        self.base.join("lxc")
    }

    fn containers_dir(&self) -> PathBuf {
        self.base.join("containers")
    }

    fn removed_dir(&self) -> PathBuf {
        self.base.join("removed")
    }

    /// Runs `berth` with this test's manager name and directories.
    fn berth(&self, args: &[&str]) -> Output {
        self.berth_as(&self.manager, args)
    }

    /// Runs `berth` with manager name `manager` and this test's directories.
    fn berth_as(&self, manager: &str, args: &[&str]) -> Output {
        let settings = [
            format!("lxc-path={}", self.lxc_path().display()),
            format!("containers-dir={}", self.containers_dir().display()),
            format!("removed-dir={}", self.removed_dir().display()),
            format!("log-dir={}", self.base.join("log").display()),
            "shutdown-timeout=2".to_owned(),
        ];
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
        command.args(["--manager-name", manager]);
        for setting in &settings {
            command.args(["--set", setting]);
        }
        command.args(args);
        command.output().expect("run berth")
    }

    /// Runs `berth` and fails the test unless it succeeds; returns stdout.
    fn berth_ok(&self, args: &[&str]) -> String {
        let output = self.berth(args);
        assert!(
            output.status.success(),
            "berth {args:?} failed: {}\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    fn list_names(&self) -> Vec<String> {
        let json: serde_json::Value =
            serde_json::from_str(&self.berth_ok(&["list", "--json"])).expect("list prints JSON");
        json.as_array()
            .expect("list prints an array")
            .iter()
            .map(|instance| instance["id"].as_str().expect("id").to_owned())
            .collect()
    }

    fn write_machine_config(&self, machine_id: &str) -> PathBuf {
        let machine = berth::machine_file::sample_machine_config(machine_id, "bookworm");
        let path = self
            .base
            .join(format!("machine-{}.yaml", machine_id.replace('/', "-")));
        std::fs::write(&path, serde_saphyr::to_string(&machine).unwrap()).unwrap();
        path
    }

    fn cleanup(&self) {
        let lxc_path = self.lxc_path();
        if lxc_path.is_dir() {
            let names = list_containers(&lxc_path, ListKind::All).unwrap_or_default();
            // Clones first: liblxc keeps a template that still has clones.
            let (templates, clones): (Vec<String>, Vec<String>) =
                names.into_iter().partition(|name| name.starts_with('_'));
            for name in clones.into_iter().chain(templates) {
                if let Ok(container) = Container::new(&name, &lxc_path) {
                    if container
                        .state()
                        .is_ok_and(|state| state != ContainerState::Stopped)
                    {
                        let _ = container.stop();
                    }
                    let _ = container.destroy();
                }
            }
        }
        let _ = bridge::delete_link(&self.bridge);
        let locks = berth::lxc::container::lock_file_path(&self.base, "x");
        if let Some(directory) = locks.parent()
            && directory.exists()
        {
            let _ = std::fs::remove_dir_all(directory);
        }
        if self.base.exists() {
            std::fs::remove_dir_all(&self.base)
                .unwrap_or_else(|error| panic!("remove {}: {error}", self.base.display()));
        }
    }
}

impl Drop for CliEnv {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.cleanup();
        }
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

#[test]
fn demo_runs_twice() {
    let env = CliEnv::new("d");
    for run in 1..=2 {
        let stdout = env.berth_ok(&["demo", "--bridge", &env.bridge, "--count", "3"]);
        for index in 0..3 {
            let name = format!("{}-machine-0-lxc-{index}", env.manager);
            let row = stdout
                .lines()
                .find(|line| line.starts_with(&name) && line.contains("running"))
                .unwrap_or_else(|| panic!("run {run}: no running row for {name} in:\n{stdout}"));
            assert!(
                row.contains(&format!("10.251.0.{}", 10 + index)),
                "run {run}: {row}"
            );
            assert!(row.contains("mem=512M"), "run {run}: {row}");
        }
        assert!(
            stdout.contains("#cloud-config"),
            "run {run}: no cloud-init file shown"
        );
        assert!(
            stdout.contains("no container of manager"),
            "run {run}: {stdout}"
        );
        assert!(stdout.contains("step timings:"), "run {run}: {stdout}");

        assert!(env.list_names().is_empty(), "run {run}: containers left");
        assert!(
            entries(&env.containers_dir()).is_empty(),
            "run {run}: directories left"
        );
        assert_eq!(
            entries(&env.removed_dir()).len(),
            3 * run,
            "run {run}: directories not moved aside"
        );
    }
    assert!(
        bridge::link(&env.bridge).unwrap().is_some(),
        "the demo bridge is missing"
    );
}

#[test]
fn create_list_destroy_json() {
    let env = CliEnv::new("c");
    bridge::ensure_bridge(&env.bridge, None).unwrap();
    let mut config = berth::machine_file::sample_machine_config("5", "bookworm");
    config
        .network_interfaces
        .push(berth::machine::InterfaceInfo {
            name: "eth0".into(),
            mac: None,
            address: "10.251.9.5/24".into(),
            gateway: None,
            dns_servers: Vec::new(),
            mtu: None,
        });
    let machine = env.base.join("machine-5.yaml");
    std::fs::write(&machine, serde_saphyr::to_string(&config).unwrap()).unwrap();
    let network = format!("bridge:{},mtu=1400,mac=00:16:3E:AA:bb:05", env.bridge);
    let name = format!("{}-machine-5", env.manager);

    let created: serde_json::Value = serde_json::from_str(&env.berth_ok(&[
        "create",
        "--machine-config",
        machine.to_str().unwrap(),
        "--network",
        &network,
        "--json",
    ]))
    .expect("create prints JSON");
    assert_eq!(created["instance"]["id"], name.as_str());
    assert_eq!(created["instance"]["status"], "running");
    assert_eq!(
        created["instance"]["addresses"],
        serde_json::json!(["10.251.9.5"])
    );
    let hardware = created["hardware_text"].as_str().unwrap();
    assert!(hardware.contains("virt-type=lxc"), "{hardware}");
    assert!(hardware.starts_with("arch="), "{hardware}");

    assert_eq!(env.list_names(), vec![name.clone()]);
    let table = env.berth_ok(&["list"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains(&name), "{table}");

    let config = std::fs::read_to_string(env.lxc_path().join(&name).join("config")).unwrap();
    assert!(
        config.contains("lxc.net.0.hwaddr = 00:16:3e:aa:bb:05"),
        "{config}"
    );
    assert!(config.contains("lxc.net.0.mtu = 1400"), "{config}");

    env.berth_ok(&["destroy", &name]);
    assert!(env.list_names().is_empty());
    // Destroying what is gone succeeds.
    env.berth_ok(&["destroy", &name]);
    assert_eq!(entries(&env.removed_dir()), vec![name]);
}

#[test]
fn invalid_input_creates_nothing() {
    let env = CliEnv::new("e");
    bridge::ensure_bridge(&env.bridge, None).unwrap();
    let machine = env.write_machine_config("6");

    let network = format!("bridge:{},mtu=99999", env.bridge);
    let output = env.berth(&[
        "create",
        "--machine-config",
        machine.to_str().unwrap(),
        "--network",
        &network,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("99999"), "{stderr}");
    assert!(stderr.contains("between 68 and 65535"), "{stderr}");

    let output = env.berth(&[
        "create",
        "--machine-config",
        machine.to_str().unwrap(),
        "--network",
        "bridge:btcli-none",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("btcli-none"), "{stderr}");

    let mut broken = berth::machine_file::sample_machine_config("6", "bookworm");
    broken.machine_nonce.clear();
    broken.tools.sha256 = "not-hex".into();
    let broken_path = env.base.join("broken.json");
    std::fs::write(&broken_path, serde_json::to_string(&broken).unwrap()).unwrap();
    let network = format!("bridge:{}", env.bridge);
    let output = env.berth(&[
        "create",
        "--machine-config",
        broken_path.to_str().unwrap(),
        "--network",
        &network,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("not-hex"),
        "the checksum problem is missing: {stderr}"
    );
    assert!(
        stderr.contains("nonce"),
        "the nonce problem is missing: {stderr}"
    );

    let output = env.berth(&["destroy", "Best_#1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("Best_#1"), "{stderr}");
    assert!(
        stderr.contains("only ASCII letters, digits and '-'"),
        "{stderr}"
    );

    let output = env.berth(&["--backend", "nope", "list"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("lxc or virt"));

    assert!(
        entries(&env.containers_dir()).is_empty(),
        "a rejected create left a directory"
    );
    let containers = list_containers(&env.lxc_path(), ListKind::All).unwrap_or_default();
    assert!(
        containers.iter().all(|name| name.starts_with('_')),
        "a rejected create left containers: {containers:?}"
    );
}

#[test]
fn gc_removes_only_half_made() {
    let env = CliEnv::new("g");
    bridge::ensure_bridge(&env.bridge, None).unwrap();
    let network = format!("bridge:{}", env.bridge);
    for id in ["7", "8"] {
        let machine = env.write_machine_config(id);
        env.berth_ok(&[
            "create",
            "--machine-config",
            machine.to_str().unwrap(),
            "--network",
            &network,
        ]);
    }
    let complete = format!("{}-machine-7", env.manager);
    let half_made = format!("{}-machine-8", env.manager);

    // A create whose process died never wrote its created marker, and
    // no process holds its lock: that is the state this leaves.
    std::fs::remove_file(
        env.containers_dir()
            .join(&half_made)
            .join(berth::pending::CREATED_MARKER_FILE),
    )
    .unwrap();

    let removed: Vec<String> = serde_json::from_str(&env.berth_ok(&["gc", "--json"])).unwrap();
    assert_eq!(removed, vec![half_made.clone()]);
    assert_eq!(env.list_names(), vec![complete.clone()]);
    assert_eq!(entries(&env.containers_dir()), vec![complete.clone()]);
    assert_eq!(entries(&env.removed_dir()), vec![half_made]);

    let again: Vec<String> = serde_json::from_str(&env.berth_ok(&["gc", "--json"])).unwrap();
    assert!(again.is_empty(), "a second gc removed {again:?}");
    env.berth_ok(&["destroy", &complete]);
}

#[test]
fn other_managers_containers_untouched() {
    let env = CliEnv::new("o");
    bridge::ensure_bridge(&env.bridge, None).unwrap();
    let network = format!("bridge:{}", env.bridge);
    // Its containers share the bare prefix `<manager>-` with this test's.
    let other = format!("{}-x", env.manager);
    let machine = env.write_machine_config("6");
    let output = env.berth_as(
        &other,
        &[
            "create",
            "--machine-config",
            machine.to_str().unwrap(),
            "--network",
            &network,
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let foreign = format!("{other}-machine-6");

    assert!(
        env.list_names().is_empty(),
        "list shows another manager's container"
    );
    let output = env.berth(&["destroy", &foreign]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "destroyed another manager's container"
    );
    assert!(stderr.contains("does not belong to manager"), "{stderr}");

    let state = Container::new(&foreign, &env.lxc_path())
        .unwrap()
        .state()
        .unwrap();
    assert_eq!(state, ContainerState::Running);
    let output = env.berth_as(&other, &["destroy", &foreign]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
