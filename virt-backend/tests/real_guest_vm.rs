//! Tier 4: berth's libvirt manager boots a real Debian bookworm guest
//! (systemd and cloud-init, built by guest-image/build.sh and cached under
//! /var/cache/berth-test/guest) under software emulation, and the test
//! checks that the user data berth put on the seed disk has its documented
//! effects inside it.
//!
//! The guest boots Debian's cloud kernel directly, with its root file
//! system on the first virtio disk. A service baked into the image waits
//! for cloud-init and prints what the user data did as `berth-guest:`
//! lines on the serial console, which berth logs into the container
//! directory; the test reads them there. The VM's NIC is on a test bridge
//! with no uplink and gets a static address from the seed's
//! network-config. The agent tools come from an HTTP server in a network
//! namespace on that bridge, so no packet leaves the machine.
//!
//! Needs root, a running libvirtd at `qemu:///system` (`mkdir -p
//! /var/log/libvirt /var/run/libvirt; virtlogd -d; libvirtd -d`),
//! debootstrap and python3; fails, never skips, without them. Run with
//! `--nocapture` to see the phase times.

mod common;
#[path = "common/guest.rs"]
mod guest;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_core::machine::InterfaceInfo;
use berth_core::userdata::render_agent_conf;
use berth_core::{InstanceStatus, MachineConfig, Manager, ManagerConfig, NetworkConfig};
use berth_virt::config::{ImageLocation, ImageSource};
use berth_virt::handle::{Connection, PoolHandle, VolumeHandle};
use berth_virt::image::base_volume_name;
use berth_virt::{VirtInitialiser, VirtManager};
use common::machine;
use common::real_host::{TestBridge, remove_leftovers, require_real_host};
use guest::{
    TOOLS_VERSION, ToolsServer, cloud_init_finished_uptime, guest_image, report_lines,
    report_value, wait_for_text, write_fake_tools,
};
use sha2::{Digest, Sha256};

/// Manager name, so the prefix of every domain and volume of this test.
/// The other real-tier tests use `berthtest`, so neither removes the
/// other's leftovers.
const PREFIX: &str = "berthguest";
/// Storage pool of this test alone, so that it can hold the base volume of
/// the guest image from one run to the next.
const POOL: &str = "berth-guest-test";
const POOL_DIR: &str = "/var/lib/libvirt/images/berth-guest-test";
const BRIDGE: &str = "berthtgbr0";
/// Network namespace of the tools server.
const NETNS: &str = "berth-test-guest-vm";
/// Host end of the tools server's veth.
const SERVER_VETH: &str = "berthtgs0";
const SERVER_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 251, 2, 1);
/// Allows for software emulation on a busy CI host. Boot and cloud-init
/// took 40 to 110 s on a 2-core host under load.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBerthGuestKey tester@berth";
/// Direct kernel boot of the image's cloud kernel: the root file system
/// fills the first virtio disk, and the serial port is the console.
const CMDLINE: &str = "root=/dev/vda rw console=ttyS0";

/// Returns machine `id` at `address` on eth0, fetching the tools from
/// `url` with `sha256`. Package commands are off: the guest has no mirror
/// to reach, and the image already has curl.
fn guest_machine(id: &str, address: &str, url: &str, sha256: &str, size: u64) -> MachineConfig {
    let mut machine = machine(id);
    machine.tools.version = TOOLS_VERSION.into();
    machine.tools.url = url.into();
    machine.tools.sha256 = sha256.into();
    machine.tools.size = size;
    machine.authorized_keys = vec![KEY.into()];
    machine.disable_package_commands = true;
    machine.network_interfaces = vec![InterfaceInfo {
        name: "eth0".into(),
        mac: None,
        address: address.into(),
        gateway: None,
        dns_servers: Vec::new(),
        mtu: None,
    }];
    machine
}

/// Deletes every volume of the test's pool except `keep`, the base volume
/// of the current guest image, which is kept only while its content still
/// has the image's SHA-256 `keep_sha256`, so a damaged copy cannot break
/// every later run.
// NOTE: one run on a busy host left a base volume whose data past the
// first 16 MiB was zeros although the import's digest check passed; the
// cause is not known.
fn remove_other_volumes(connection: &Connection, keep: &str, keep_sha256: &str) {
    let Ok(pool) = connection
        .lookup_storage_pool_by_name(POOL)
        .map(PoolHandle::new)
    else {
        return;
    };
    if !pool.is_active().unwrap_or(false) {
        return;
    }
    let _ = pool.refresh(0);
    for name in pool.list_volumes().unwrap_or_default() {
        let Ok(volume) = pool.lookup_storage_vol_by_name(&name) else {
            continue;
        };
        let volume = VolumeHandle::new(volume);
        if name == keep {
            let path = volume.path().unwrap();
            let digest = guest::run(std::process::Command::new("sha256sum").arg(&path));
            if digest.split_whitespace().next() == Some(keep_sha256) {
                continue;
            }
            println!("base volume {name} differs from the guest image; importing it again");
        }
        volume
            .delete(0)
            .unwrap_or_else(|error| panic!("delete volume {name} of pool {POOL}: {error}"));
    }
}

/// The test's libvirt connection and directory. Dropping it removes the
/// domains and volumes the test made. The pool and the base volume of the
/// current guest image stay as libvirt's copy of the image cache, because
/// importing the 1 GiB image took 40 to 80 s in a debug build.
struct Host {
    connection: Connection,
    dir: tempfile::TempDir,
}

impl Host {
    /// Removes what a crashed earlier run left, and the base volumes of
    /// older guest images.
    fn prepare(image: &guest::GuestImage) -> Self {
        let connection = require_real_host();
        remove_leftovers(&connection, PREFIX, POOL);
        let mut digest = [0u8; 32];
        hex::decode_to_slice(&image.disk_sha256, &mut digest).unwrap();
        let source = ImageSource {
            location: ImageLocation::File(image.disk.clone()),
            sha256: Some(digest),
        };
        remove_other_volumes(
            &connection,
            &base_volume_name("bookworm", &source),
            &image.disk_sha256,
        );
        let dir = tempfile::Builder::new()
            .prefix("berth-test-guest-vm-")
            .tempdir()
            .unwrap();
        Self { connection, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn console_log(&self, name: &str) -> PathBuf {
        self.path("containers").join(name).join("console.log")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        remove_leftovers(&self.connection, PREFIX, POOL);
    }
}

fn config(host: &Host, image: &guest::GuestImage) -> ManagerConfig {
    let path = |name: &str| host.path(name).to_str().unwrap().to_owned();
    ManagerConfig::new()
        .with("name", PREFIX)
        .with("uri", "qemu:///system")
        .with("pool", POOL)
        .with("pool-dir", POOL_DIR)
        .with("containers-dir", path("containers"))
        .with("removed-dir", path("removed"))
        .with("lock-dir", path("locks"))
        .with("image", image.disk.to_str().unwrap())
        .with("image-sha256", image.disk_sha256.as_str())
        .with("kernel", image.kernel.to_str().unwrap())
        .with("initrd", image.initrd.to_str().unwrap())
        .with("cmdline", CMDLINE)
        // Nested KVM is broken on the hosts this runs on: the domain
        // capabilities offer kvm, but a guest kernel then stalls.
        .with("virt-type", "qemu")
}

/// Returns the report value `name`, failing with the whole report when it
/// is missing.
fn value<'a>(report: &'a [String], name: &str) -> &'a str {
    report_value(report, name)
        .unwrap_or_else(|| panic!("no {name:?} line in the guest's report:\n{report:#?}"))
}

#[test]
fn debian_vm_runs_agent() {
    let image = guest_image();
    let host = Host::prepare(&image);
    let bridge = TestBridge::create(BRIDGE, 1500);
    let www = host.path("www");
    std::fs::create_dir_all(www.join("tools")).unwrap();
    let tools = write_fake_tools(&www.join("tools"), &format!("{TOOLS_VERSION}.tgz"));
    let server = ToolsServer::start(NETNS, SERVER_VETH, &bridge.name, SERVER_ADDRESS, 24, &www);
    let url = server.url(&format!("/tools/{TOOLS_VERSION}.tgz"));

    let config = config(&host, &image);
    VirtInitialiser::new(config.clone())
        .unwrap()
        .initialise_with_report()
        .unwrap();
    let manager = VirtManager::new(config).unwrap();
    assert_eq!(manager.platform().virt_type, "qemu");
    let network = NetworkConfig::bridge(&bridge.name).unwrap();

    // The first create imports the base image unless an earlier run left
    // it in the pool.
    let good = guest_machine("0", "10.251.2.10/24", &url, &tools.sha256, tools.size);
    let name = "berthguest-machine-0";
    let started = Instant::now();
    let (instance, hardware) = manager
        .create_container(&good, "bookworm", &network)
        .unwrap();
    let created = started.elapsed();
    assert_eq!(instance.id.as_str(), name);
    assert_eq!(instance.status, InstanceStatus::Running);
    assert_eq!(hardware.virt_type.as_deref(), Some("qemu"));
    let console_path = host.console_log(name);
    wait_for_text(&console_path, "Welcome to", BOOT_TIMEOUT);
    let systemd_up = started.elapsed();
    let (_, console) = wait_for_text(&console_path, "berth-guest: report done", BOOT_TIMEOUT);
    let reported = started.elapsed();
    println!(
        "vm guest {name}: create {:.2} s, systemd welcome at {:.2} s, report after cloud-init at {:.2} s, cloud-init finished at guest uptime {:?} s; image build.sh {:.2} s",
        created.as_secs_f64(),
        systemd_up.as_secs_f64(),
        reported.as_secs_f64(),
        cloud_init_finished_uptime(&console),
        image.elapsed.as_secs_f64()
    );

    let report = report_lines(&console);
    assert_eq!(value(&report, "cloud-init status"), "done", "{console}");
    assert_eq!(value(&report, "hostname"), name);
    assert!(
        report.contains(&format!(
            "authorized-key /home/debian/.ssh/authorized_keys {KEY}"
        )),
        "{report:#?}"
    );
    assert_eq!(value(&report, "nonce"), good.machine_nonce);
    let conf = "/var/lib/juju/agents/machine-0/agent.conf";
    assert_eq!(
        value(&report, "agent-conf"),
        format!("{conf} mode 600 owner root:root")
    );
    let conf_sha256 = hex::encode(Sha256::digest(render_agent_conf(&good).unwrap()));
    assert_eq!(
        value(&report, "agent-conf-sha256"),
        format!("{conf} {conf_sha256}")
    );
    // The report lists both the unpacked version and the machine's link
    // to it.
    let linked = format!(
        "tools /var/lib/juju/tools/machine-0/jujud /var/lib/juju/tools/{TOOLS_VERSION}/jujud"
    );
    assert!(report.contains(&linked), "no {linked:?} in {report:#?}");
    assert_eq!(value(&report, "unit jujud-machine-0.service"), "active");
    assert_eq!(
        value(&report, "jujud-started"),
        "machine --data-dir /var/lib/juju --machine-id 0"
    );
    for line in [
        format!(
            "output-log install agent: SHA-256 of agent tools matches {}",
            tools.sha256
        ),
        "output-log install agent: started jujud-machine-0.service".to_owned(),
    ] {
        assert!(report.contains(&line), "no {line:?} in {report:#?}");
    }
    assert!(
        server
            .log()
            .lines()
            .any(|line| line.starts_with("10.251.2.10 ")
                && line.contains(&format!("\"GET /tools/{TOOLS_VERSION}.tgz HTTP/1.1\" 200"))),
        "the tools server logged no download from 10.251.2.10:\n{}",
        server.log()
    );
    manager.destroy_container(&instance.id).unwrap();

    // A wrong SHA-256: the install script rejects the download, so no tools
    // and no agent appear, cloud-init reports an error, and the output log
    // gives the reason.
    let wrong = "0".repeat(64);
    let bad = guest_machine("1", "10.251.2.11/24", &url, &wrong, tools.size);
    let bad_name = "berthguest-machine-1";
    let started = Instant::now();
    let (bad_instance, _) = manager
        .create_container(&bad, "bookworm", &network)
        .unwrap();
    let created = started.elapsed();
    let bad_console_path = host.console_log(bad_name);
    wait_for_text(&bad_console_path, "Welcome to", BOOT_TIMEOUT);
    let systemd_up = started.elapsed();
    let (_, bad_console) =
        wait_for_text(&bad_console_path, "berth-guest: report done", BOOT_TIMEOUT);
    println!(
        "vm guest {bad_name}: create {:.2} s, systemd welcome at {:.2} s, report after cloud-init at {:.2} s, cloud-init finished at guest uptime {:?} s",
        created.as_secs_f64(),
        systemd_up.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        cloud_init_finished_uptime(&bad_console)
    );
    let bad_report = report_lines(&bad_console);
    assert_eq!(value(&bad_report, "cloud-init status"), "error");
    assert_eq!(value(&bad_report, "hostname"), bad_name);
    assert_ne!(value(&bad_report, "unit jujud-machine-1.service"), "active");
    assert_eq!(value(&bad_report, "jujud-started"), "none");
    assert_eq!(report_value(&bad_report, "tools"), None, "{bad_report:#?}");
    let rejection = format!(
        "output-log install agent: rejected agent tools from {url}: SHA-256 is {}, expected {wrong}; not unpacking them and not starting the agent",
        tools.sha256
    );
    assert!(
        bad_report.contains(&rejection),
        "no {rejection:?} in {bad_report:#?}"
    );
    manager.destroy_container(&bad_instance.id).unwrap();

    assert!(manager.list_containers().unwrap().is_empty());
    let pool = PoolHandle::new(host.connection.lookup_storage_pool_by_name(POOL).unwrap());
    pool.refresh(0).unwrap();
    let left: Vec<String> = pool
        .list_volumes()
        .unwrap()
        .into_iter()
        .filter(|volume| volume.starts_with(PREFIX))
        .collect();
    assert!(left.is_empty(), "volumes left: {left:?}");
}
