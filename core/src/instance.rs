//! What a manager reports about a container.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::InvalidValue;
use crate::names::validate_container_name;

/// The id of a container: its full container or domain name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(String);

impl InstanceId {
    /// Creates an id from a full container name, checking it as a
    /// container name, so that a hostile name never reaches a backend.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidValue> {
        let name = name.into();
        validate_container_name(&name)?;
        Ok(Self(name))
    }

    /// Returns the container name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for InstanceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The state of a container, as its backend reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    /// Running.
    Running,
    /// Starting, but not yet running.
    Starting,
    /// Stopping.
    Stopping,
    /// Defined and stopped.
    Stopped,
    /// Paused or frozen.
    Paused,
    /// Crashed or in an error state.
    Error,
    /// A state berth does not map, or one it could not read.
    Unknown,
}

impl InstanceStatus {
    /// Returns the status as printed in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Starting => "starting",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Paused => "paused",
            Self::Error => "error",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A container that a manager started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Full container or domain name.
    pub id: InstanceId,
    /// State when the instance was read.
    pub status: InstanceStatus,
    /// IP addresses the backend could read; empty where it could not.
    pub addresses: Vec<IpAddr>,
}

impl Instance {
    /// Creates an instance with no known addresses.
    pub fn new(id: InstanceId, status: InstanceStatus) -> Self {
        Self {
            id,
            status,
            addresses: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_rejects_hostile_names() {
        for name in [
            "Best_#1",
            "SWEET!",
            "almost_lions?",
            "../etc",
            "a/b",
            "",
            "x\n",
        ] {
            assert!(InstanceId::new(name).is_err(), "{name:?} accepted");
        }
        assert_eq!(
            InstanceId::new("juju-machine-0").unwrap().as_str(),
            "juju-machine-0"
        );
    }

    #[test]
    fn status_prints_lowercase() {
        assert_eq!(InstanceStatus::Running.to_string(), "running");
        assert_eq!(
            serde_json::to_string(&InstanceStatus::Stopped).unwrap(),
            "\"stopped\""
        );
    }
}
