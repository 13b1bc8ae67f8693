//! An agent's use of berth: it creates a container for a machine, lists the
//! manager's containers and destroys the container.
//!
//! Run as root, on an existing bridge:
//!
//! ```sh
//! cargo run --example agent -- BRIDGE
//! ```

use berth::machine_file::sample_machine_config;
use berth::{Backend, ManagerConfig, NetworkConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bridge = std::env::args().nth(1).ok_or("usage: agent BRIDGE")?;

    // `name` namespaces every container of this manager. Other keys are
    // the backend's own, and unknown ones are logged as warnings.
    let config = ManagerConfig::new()
        .with("name", "example")
        .with("log-dir", "/var/log/juju");
    let manager = berth::new_manager(Backend::Lxc, config)?;

    // An agent gets this from its controller. The sample is valid and
    // points at nothing outside this host.
    let machine = sample_machine_config("1/lxc/0", "bookworm");
    let network = NetworkConfig::bridge(&bridge)?.with_mtu(1500)?;

    let (instance, hardware) = manager.create_container(&machine, &machine.series, &network)?;
    println!("created {} ({}): {hardware}", instance.id, instance.status);

    for listed in manager.list_containers()? {
        println!("listed {} {}", listed.id, listed.status);
    }

    manager.destroy_container(&instance.id)?;
    println!("destroyed {}", instance.id);
    Ok(())
}
