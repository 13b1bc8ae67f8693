//! `berth demo`: the whole cycle on the embedded busybox image, timed.
//!
//! The demo prepares the host, makes a bridge with no uplink and no
//! address, creates several machine containers in parallel, lists them,
//! shows their cloud-init files, destroys them and checks that nothing of
//! them is left. Running it again works: every step is idempotent or
//! starts from a clean slate.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use berth::machine::InterfaceInfo;
use berth::{
    Backend, HardwareCharacteristics, Instance, MachineConfig, Manager, ManagerConfig,
    NetworkConfig,
};

use super::output::{addresses, print_table};
use super::progress::{ProgressDisplay, format_duration};
use crate::Cli;

/// Bridge the demo creates when none is named.
pub const DEMO_BRIDGE: &str = "berthdemo0";

/// First three octets of the demo's IPv4 subnet. The addresses live only on
/// the demo bridge, which has no uplink.
const DEMO_SUBNET: &str = "10.251.0";

/// Manager name of the demo's containers, so they never mix with others.
const DEMO_MANAGER_NAME: &str = "berth-demo";

/// Records how long each demo step took.
struct Timings(Vec<(String, Duration)>);

impl Timings {
    fn time<T>(
        &mut self,
        step: &str,
        work: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        println!("==> {step}");
        let started = Instant::now();
        let value = work().with_context(|| format!("demo step {step:?} failed"))?;
        let elapsed = started.elapsed();
        println!("    {step}: {}", format_duration(elapsed));
        self.0.push((step.to_owned(), elapsed));
        Ok(value)
    }
}

/// Runs the demo with `count` containers on bridge `bridge`.
pub fn run(cli: &Cli, config: ManagerConfig, count: u32, bridge: &str) -> anyhow::Result<()> {
    if cli.backend != Backend::Lxc {
        bail!(
            "the demo runs on the lxc backend only; drop --backend {}",
            cli.backend
        );
    }
    let network = NetworkConfig::bridge(bridge)?;
    let mut config = config;
    if config.get(berth::config::CONFIG_KEY_NAME) == Some("berth") {
        config.set(berth::config::CONFIG_KEY_NAME, DEMO_MANAGER_NAME);
    }
    let manager_name = config
        .get(berth::config::CONFIG_KEY_NAME)
        .unwrap_or(DEMO_MANAGER_NAME)
        .to_owned();
    let mut timings = Timings(Vec::new());

    timings.time("prepare host and bridge", || {
        let initialiser = berth::new_initialiser(
            Backend::Lxc,
            config.clone().with(berth::CONFIG_KEY_BRIDGE, bridge),
        )?;
        initialiser.initialise()?;
        Ok(())
    })?;

    let manager = timings.time("open manager", || {
        Ok(berth::new_manager(Backend::Lxc, config.clone())?)
    })?;

    timings.time("remove leftovers of an earlier run", || {
        for instance in manager.list_containers()? {
            println!("    destroying leftover {}", instance.id);
            manager.destroy_container(&instance.id)?;
        }
        Ok(())
    })?;

    let progress = ProgressDisplay::new(true);
    let created = timings.time(&format!("create {count} containers in parallel"), || {
        create_all(manager.as_ref(), count, &network, &progress)
    })?;
    for (instance, hardware, elapsed) in &created {
        println!(
            "    {} created and running in {}; {hardware}",
            instance.id,
            format_duration(*elapsed)
        );
    }

    let listed = timings.time("list", || Ok(manager.list_containers()?))?;
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|instance| {
            let hardware = created
                .iter()
                .find(|(made, _, _)| made.id == instance.id)
                .map(|(_, hardware, _)| hardware.to_string())
                .unwrap_or_default();
            vec![
                instance.id.to_string(),
                instance.status.to_string(),
                addresses(instance),
                hardware,
            ]
        })
        .collect();
    print_table(&["NAME", "STATUS", "ADDRESSES", "HARDWARE"], &rows);
    ensure!(
        listed.len() == created.len(),
        "list shows {} containers, {} were created",
        listed.len(),
        created.len()
    );

    let container_dirs = berth::container_dirs_of(&config);
    for (instance, _, _) in &created {
        show_cloud_init(&container_dirs.containers_root().join(instance.id.as_str()))?;
    }

    timings.time(&format!("destroy {count} containers in parallel"), || {
        std::thread::scope(|scope| {
            let handles: Vec<_> = created
                .iter()
                .map(|(instance, _, _)| scope.spawn(|| manager.destroy_container(&instance.id)))
                .collect();
            for handle in handles {
                handle
                    .join()
                    .map_err(|_| anyhow::anyhow!("a destroy thread panicked"))??;
            }
            Ok(())
        })
    })?;

    timings.time("check that nothing is left", || {
        let remaining = manager.list_containers()?;
        ensure!(remaining.is_empty(), "containers left after destroy: {remaining:?}");
        for (instance, _, _) in &created {
            let dir = container_dirs.containers_root().join(instance.id.as_str());
            ensure!(!dir.exists(), "container directory {} is still there", dir.display());
        }
        println!(
            "    no container of manager {manager_name:?} is left; their directories were moved to {}",
            container_dirs.removed_root().display()
        );
        Ok(())
    })?;

    println!("\nstep timings:");
    let rows: Vec<Vec<String>> = timings
        .0
        .iter()
        .map(|(step, elapsed)| vec![step.clone(), format_duration(*elapsed)])
        .collect();
    print_table(&["STEP", "TIME"], &rows);
    Ok(())
}

type CreatedContainer = (Instance, HardwareCharacteristics, Duration);

fn create_all(
    manager: &dyn Manager,
    count: u32,
    network: &NetworkConfig,
    progress: &ProgressDisplay,
) -> anyhow::Result<Vec<CreatedContainer>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .map(|index| {
                scope.spawn(move || {
                    let machine = demo_machine(index);
                    let started = Instant::now();
                    let (instance, hardware) = manager.create_container_with_progress(
                        &machine,
                        &machine.series,
                        network,
                        progress,
                    )?;
                    Ok::<_, berth::Error>((instance, hardware, started.elapsed()))
                })
            })
            .collect();
        let mut created = Vec::new();
        let mut failures = Vec::new();
        for handle in handles {
            match handle.join() {
                Ok(Ok(container)) => created.push(container),
                Ok(Err(error)) => failures.push(berth::error::error_chain(&error)),
                Err(_) => failures.push("a create thread panicked".to_owned()),
            }
        }
        if !failures.is_empty() {
            for (instance, _, _) in &created {
                let _ = manager.destroy_container(&instance.id);
            }
            bail!(
                "{} of {count} creates failed: {}",
                failures.len(),
                failures.join("; ")
            );
        }
        created.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(created)
    })
}

/// Returns the machine config of demo container `index`: 512 MiB and one
/// core, and a static address on the demo bridge's private subnet, so that
/// the list has addresses to show without a DHCP server.
fn demo_machine(index: u32) -> MachineConfig {
    let mut machine =
        berth::machine_file::sample_machine_config(&format!("0/lxc/{index}"), "busybox");
    machine.constraints.mem = Some(512);
    machine.constraints.cpu_cores = Some(1);
    machine.network_interfaces.push(InterfaceInfo {
        name: "eth0".into(),
        mac: None,
        address: format!("{DEMO_SUBNET}.{}/24", 10 + index),
        gateway: None,
        dns_servers: Vec::new(),
        mtu: None,
    });
    machine
}

/// Prints the path, size and first lines of a container's cloud-init file.
fn show_cloud_init(dir: &std::path::Path) -> anyhow::Result<()> {
    let path: PathBuf = dir.join(berth::dirs::CLOUD_INIT_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    println!(
        "--- {} ({} bytes, first lines):",
        path.display(),
        text.len()
    );
    for line in text.lines().take(14) {
        println!("    {line}");
    }
    Ok(())
}
