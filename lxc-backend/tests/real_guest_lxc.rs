//! Tier 4: berth's LXC manager runs a real Debian bookworm guest (systemd
//! and cloud-init, built by guest-image/build.sh and cached under
//! /var/cache/berth-test/guest), and the test checks that the user data
//! berth wrote has its documented effects inside it: hostname, keys, nonce,
//! agent configuration, tools download with its SHA-256 check, and the
//! agent's systemd unit.
//!
//! The container sits on a test bridge with no uplink and a static
//! address. The agent tools come from an HTTP server in a network
//! namespace joined to that bridge, so no packet leaves the machine.
//! Needs root, liblxc, debootstrap and python3; fails, never skips,
//! without them. Run with `--nocapture` to see the phase times.

mod common;
#[path = "common/guest.rs"]
mod guest;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use berth_core::userdata::render_agent_conf;
use berth_core::{InstanceId, InstanceStatus, MachineConfig, Manager, NetworkConfig};
use berth_lxc::config::KEY_IMAGE;
use berth_lxc::{CONSOLE_LOG, LxcManager};
use common::{TestEnv, attach, machine_with_address};
use guest::{
    FAKE_JUJUD_MARKER, TOOLS_VERSION, ToolsServer, guest_image, report_lines, report_value,
    try_attach, wait_for_systemd, wait_for_text, write_fake_tools,
};

/// Network namespace of the tools server.
const NETNS: &str = "berth-test-guest-lxc";
/// Host end of the tools server's veth; the TestEnv prefix `bt` marks it.
const SERVER_VETH: &str = "btguests";
const SERVER_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 251, 1, 1);
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBerthGuestKey tester@berth";

/// Returns machine `id` at `address`, fetching the tools from `url` with
/// `sha256`. Package commands are off: the guest has no mirror to reach,
/// and the image already has curl.
fn guest_machine(id: &str, address: &str, url: &str, sha256: &str, size: u64) -> MachineConfig {
    let mut machine = machine_with_address(id, address);
    machine.tools.version = TOOLS_VERSION.into();
    machine.tools.url = url.into();
    machine.tools.sha256 = sha256.into();
    machine.tools.size = size;
    machine.authorized_keys = vec![KEY.into()];
    machine.disable_package_commands = true;
    machine
}

/// Waits until cloud-init in `name` has finished, with status done or
/// error, and returns `cloud-init status` output. `cloud-init status
/// --wait` returns at once while systemd is still starting, before
/// cloud-init's generator has enabled it, so the wait repeats.
fn wait_for_cloud_init(env: &TestEnv, name: &str) -> String {
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        try_attach(&env.lxc_path(), name, &["cloud-init", "status", "--wait"]);
        let attached = try_attach(&env.lxc_path(), name, &["cloud-init", "status"]);
        let status = attached.stdout.trim().to_owned();
        if status == "status: done" || status == "status: error" {
            if !seen.is_empty() {
                println!("cloud-init in {name} reported {seen:?} before {status:?}");
            }
            return status;
        }
        assert!(
            started.elapsed() < BOOT_TIMEOUT,
            "cloud-init in {name} did not finish within {BOOT_TIMEOUT:?}: {status:?} {}",
            attached.stderr
        );
        seen.push(status);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn debian_container_runs_agent() {
    let env = TestEnv::new("guest", None);
    let image = guest_image();
    let www = env.base.join("www");
    std::fs::create_dir_all(www.join("tools")).unwrap();
    let tools = write_fake_tools(&www.join("tools"), &format!("{TOOLS_VERSION}.tgz"));
    let server = ToolsServer::start(NETNS, SERVER_VETH, &env.bridge, SERVER_ADDRESS, 24, &www);
    let url = server.url(&format!("/tools/{TOOLS_VERSION}.tgz"));

    let manager = LxcManager::new(
        env.config("juju")
            .with(KEY_IMAGE, image.rootfs_tarball.to_str().unwrap()),
    )
    .unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    let lxc_path = env.lxc_path();

    // The first create also builds the template from the tarball.
    let good = guest_machine("0", "10.251.1.10/24", &url, &tools.sha256, tools.size);
    let name = "juju-machine-0";
    let started = Instant::now();
    let (instance, _) = manager
        .create_container(&good, "bookworm", &network)
        .unwrap();
    let created = started.elapsed();
    assert_eq!(instance.id.as_str(), name);
    assert_eq!(instance.status, InstanceStatus::Running);
    let state = wait_for_systemd(&lxc_path, name, BOOT_TIMEOUT);
    let systemd_up = started.elapsed();
    let status = wait_for_cloud_init(&env, name);
    let cloud_init_done = started.elapsed();
    println!(
        "lxc guest {name}: create (template build included) {:.2} s, systemd answers ({state}) at {:.2} s, cloud-init done at {:.2} s; image build.sh {:.2} s",
        created.as_secs_f64(),
        systemd_up.as_secs_f64(),
        cloud_init_done.as_secs_f64(),
        image.elapsed.as_secs_f64()
    );

    let inside = |command: &[&str]| attach(&lxc_path, name, command);
    assert_eq!(
        status,
        "status: done",
        "cloud-init in {name}: {}\n{}",
        try_attach(&lxc_path, name, &["cloud-init", "status", "--long"]).stdout,
        try_attach(&lxc_path, name, &["cat", "/var/log/cloud-init-output.log"]).stdout
    );
    assert_eq!(inside(&["hostname"]).trim(), name);
    assert!(
        inside(&["ip", "-4", "-o", "addr", "show", "eth0"]).contains("10.251.1.10/24"),
        "eth0 lacks its static address"
    );
    let keys = inside(&["cat", "/home/debian/.ssh/authorized_keys"]);
    assert!(
        keys.lines().any(|line| line == KEY),
        "authorized keys: {keys}"
    );
    assert_eq!(
        inside(&["cat", "/var/lib/juju/nonce.txt"]).trim_end(),
        good.machine_nonce
    );
    let conf = "/var/lib/juju/agents/machine-0/agent.conf";
    assert_eq!(
        inside(&["stat", "-c", "%a %U:%G", conf]).trim(),
        "600 root:root"
    );
    assert_eq!(inside(&["cat", conf]), render_agent_conf(&good).unwrap());

    // The tools were downloaded from the server, checked and unpacked, and
    // the unit runs the fake jujud from them.
    assert_eq!(
        inside(&["readlink", "-f", "/var/lib/juju/tools/machine-0/jujud"]).trim(),
        format!("/var/lib/juju/tools/{TOOLS_VERSION}/jujud")
    );
    assert!(
        server
            .log()
            .lines()
            .any(|line| line.starts_with("10.251.1.10 ")
                && line.contains(&format!("\"GET /tools/{TOOLS_VERSION}.tgz HTTP/1.1\" 200"))),
        "the tools server logged no download from 10.251.1.10:\n{}",
        server.log()
    );
    assert_eq!(
        inside(&["systemctl", "is-active", "jujud-machine-0.service"]).trim(),
        "active"
    );
    assert_eq!(
        inside(&["systemctl", "is-enabled", "jujud-machine-0.service"]).trim(),
        "enabled"
    );
    let marker = format!("/var/lib/juju/{FAKE_JUJUD_MARKER}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !try_attach(&lxc_path, name, &["test", "-e", &marker]).success {
        assert!(
            Instant::now() < deadline,
            "the fake jujud wrote no {marker}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        inside(&["cat", &marker]).trim_end(),
        "machine --data-dir /var/lib/juju --machine-id 0"
    );
    let output_log = inside(&["cat", "/var/log/cloud-init-output.log"]);
    for line in [
        format!(
            "install agent: SHA-256 of agent tools matches {}",
            tools.sha256
        ),
        "install agent: started jujud-machine-0.service".to_owned(),
    ] {
        assert!(output_log.contains(&line), "no {line:?} in:\n{output_log}");
    }

    // The image's report service, which the VM test reads from its serial
    // console, printed the same facts on the container's console.
    let console_path = env.dirs().containers_root().join(name).join(CONSOLE_LOG);
    let (_, console) = wait_for_text(&console_path, "berth-guest: report done", BOOT_TIMEOUT);
    let report = report_lines(&console);
    assert_eq!(report_value(&report, "cloud-init status"), Some("done"));
    assert_eq!(
        report_value(&report, "unit jujud-machine-0.service"),
        Some("active")
    );

    // A wrong SHA-256: the install script rejects the download, so neither
    // the tools nor the agent appear, and the output log gives the reason.
    let wrong = "0".repeat(64);
    let bad = guest_machine("1", "10.251.1.11/24", &url, &wrong, tools.size);
    let bad_name = "juju-machine-1";
    let started = Instant::now();
    manager
        .create_container(&bad, "bookworm", &network)
        .unwrap();
    let created = started.elapsed();
    let state = wait_for_systemd(&lxc_path, bad_name, BOOT_TIMEOUT);
    let systemd_up = started.elapsed();
    let status = wait_for_cloud_init(&env, bad_name);
    println!(
        "lxc guest {bad_name}: create (template reused) {:.2} s, systemd answers ({state}) at {:.2} s, cloud-init done at {:.2} s",
        created.as_secs_f64(),
        systemd_up.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let bad_inside = |command: &[&str]| try_attach(&lxc_path, bad_name, command);
    assert_eq!(
        status, "status: error",
        "the failed install is not reported as a cloud-init error"
    );
    assert_ne!(
        bad_inside(&["systemctl", "is-active", "jujud-machine-1.service"])
            .stdout
            .trim(),
        "active"
    );
    assert!(
        !bad_inside(&["test", "-e", &marker]).success,
        "the agent started despite the wrong SHA-256"
    );
    assert!(
        !bad_inside(&[
            "test",
            "-e",
            &format!("/var/lib/juju/tools/{TOOLS_VERSION}")
        ])
        .success,
        "rejected tools were unpacked"
    );
    let output_log = bad_inside(&["cat", "/var/log/cloud-init-output.log"]).stdout;
    let rejection = format!(
        "install agent: rejected agent tools from {url}: SHA-256 is {}, expected {wrong}; not unpacking them and not starting the agent",
        tools.sha256
    );
    assert!(
        output_log.contains(&rejection),
        "no {rejection:?} in:\n{output_log}"
    );

    for name in [name, bad_name] {
        manager
            .destroy_container(&InstanceId::new(name).unwrap())
            .unwrap();
    }
    assert!(manager.list_containers().unwrap().is_empty());
}
