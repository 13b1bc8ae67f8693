//! Listing a manager's containers.

use std::net::IpAddr;

use berth_core::progress::Step;
use berth_core::{Error, Instance, InstanceId, InstanceStatus, Result, validate_container_name};

use crate::container::{Container, ContainerState, ListKind, list_containers};
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

pub(crate) fn list(manager: &LxcManager) -> Result<Vec<Instance>> {
    let settings = &manager.settings;
    if !settings.lxc_path.is_dir() {
        return Ok(Vec::new());
    }
    let prefix = format!("{}-", settings.name);
    let names = list_containers(&settings.lxc_path, ListKind::All)
        .map_err(|error| Error::step(&settings.name, Step::List, error))?;
    let mut instances = Vec::new();
    for name in names {
        if !name.starts_with(&prefix)
            || is_template_name(&name)
            || validate_container_name(&name).is_err()
        {
            continue;
        }
        let container = Container::new(&name, &settings.lxc_path)
            .map_err(|error| Error::step(&name, Step::List, error))?;
        let status = match container.state() {
            Ok(state) => status_of(state),
            Err(error) => {
                tracing::warn!(container = name.as_str(), %error, "could not read container state");
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
                    tracing::warn!(container = name.as_str(), %error, "could not read container addresses")
                }
            }
        }
        let id = InstanceId::new(name)?;
        instances.push(Instance {
            id,
            status,
            addresses,
        });
    }
    Ok(instances)
}
