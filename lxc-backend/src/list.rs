//! Listing a manager's containers.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use berth_core::progress::Step;
use berth_core::{Error, Instance, InstanceId, InstanceStatus, Result};

use crate::container::{
    Container, ContainerState, ListKind, defined_container_names, list_containers,
};
use crate::manager::LxcManager;
use crate::template::is_template_name;

/// Maps a liblxc state to the contract's status.
pub fn status_of(state: ContainerState) -> InstanceStatus {
    match state {
        ContainerState::Running | ContainerState::Thawed => InstanceStatus::Running,
        ContainerState::Starting => InstanceStatus::Starting,
        ContainerState::Stopping | ContainerState::Aborting => InstanceStatus::Stopping,
        ContainerState::Stopped => InstanceStatus::Stopped,
        ContainerState::Freezing | ContainerState::Frozen => InstanceStatus::Paused,
        ContainerState::Unknown => InstanceStatus::Unknown,
    }
}

/// Lists the manager's containers, sorted by name.
///
/// The names come from the configuration files in the lxc path (one
/// `stat` each) and from liblxc's list of active containers (its command
/// sockets in `/proc/net/unix`). A defined container that is not active
/// is reported as stopped without opening a handle, because loading a handle parses the
/// configuration and costs about 30 system calls. Only active containers
/// get a handle, for their state and addresses.
pub(crate) fn list(manager: &LxcManager) -> Result<Vec<Instance>> {
    let settings = &manager.settings;
    if !settings.lxc_path.is_dir() {
        return Ok(Vec::new());
    }
    let prefix = format!("{}-", settings.name);
    let list_error = |error| Error::step(&settings.name, Step::List, error);
    let is_own = |name: &String| {
        berth_core::is_container_of(&settings.name, name) && !is_template_name(name)
    };
    let active: BTreeSet<String> = list_containers(&settings.lxc_path, ListKind::Active)
        .map_err(list_error)?
        .into_iter()
        .filter(is_own)
        .collect();
    let defined = defined_container_names(&settings.lxc_path, &prefix).map_err(list_error)?;
    // An active container whose configuration is gone is still listed.
    let names: BTreeSet<String> = defined
        .into_iter()
        .filter(is_own)
        .chain(active.iter().cloned())
        .collect();

    let mut instances = Vec::with_capacity(names.len());
    for name in names {
        let (status, addresses) = if active.contains(&name) {
            active_status(&name, &settings.lxc_path)?
        } else {
            (InstanceStatus::Stopped, Vec::new())
        };
        instances.push(Instance {
            id: InstanceId::new(name)?,
            status,
            addresses,
        });
    }
    Ok(instances)
}

/// Returns the status of the active container `name` and, when it is
/// running, its addresses.
fn active_status(name: &str, lxc_path: &Path) -> Result<(InstanceStatus, Vec<IpAddr>)> {
    let container =
        Container::new(name, lxc_path).map_err(|error| Error::step(name, Step::List, error))?;
    let status = match container.state() {
        Ok(state) => status_of(state),
        Err(error) => {
            tracing::warn!(container = name, %error, "could not read container state");
            InstanceStatus::Unknown
        }
    };
    let mut addresses = Vec::new();
    if status == InstanceStatus::Running {
        match container.ip_addresses() {
            Ok(texts) => {
                addresses.extend(texts.iter().filter_map(|text| text.parse::<IpAddr>().ok()))
            }
            Err(error) => {
                tracing::warn!(container = name, %error, "could not read container addresses")
            }
        }
    }
    Ok((status, addresses))
}
