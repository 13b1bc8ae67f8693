//! The traits a backend implements.

use crate::error::Result;
use crate::hardware::HardwareCharacteristics;
use crate::instance::{Instance, InstanceId};
use crate::machine::MachineConfig;
use crate::network::NetworkConfig;
use crate::progress::{NoProgress, Progress};

/// Creates, destroys and lists the containers of one manager name.
///
/// An agent calls a manager from several threads at once, so every
/// implementation is `Send + Sync` and serialises what its backend library
/// cannot do concurrently.
pub trait Manager: Send + Sync {
    /// Creates and starts a container for `machine`, running `series`, with
    /// its network configured by `network`, reporting each step to
    /// `progress`. Returns the running instance and the hardware it got.
    ///
    /// Every input is validated before anything is created. When any step
    /// fails, the steps this call made are undone; an undo failure is
    /// reported beside the cause ([`crate::Error::UndoFailed`]).
    fn create_container_with_progress(
        &self,
        machine: &MachineConfig,
        series: &str,
        network: &NetworkConfig,
        progress: &dyn Progress,
    ) -> Result<(Instance, HardwareCharacteristics)>;

    /// Creates and starts a container for `machine`, as
    /// [`Manager::create_container_with_progress`] does, without reporting
    /// progress.
    fn create_container(
        &self,
        machine: &MachineConfig,
        series: &str,
        network: &NetworkConfig,
    ) -> Result<(Instance, HardwareCharacteristics)> {
        self.create_container_with_progress(machine, series, network, &NoProgress)
    }

    /// Stops and destroys the container `id` and moves its directory aside.
    /// Destroying a container that does not exist succeeds.
    fn destroy_container(&self, id: &InstanceId) -> Result<()>;

    /// Lists every container of this manager, running or not.
    fn list_containers(&self) -> Result<Vec<Instance>>;

    /// Destroys every container of this manager that a create left half
    /// made because its process died, and returns their ids. Containers
    /// whose create is still running in any process, and containers whose
    /// create succeeded, are left alone (see [`crate::pending`]).
    fn collect_garbage(&self) -> Result<Vec<InstanceId>>;
}

/// Returns the directory name prefix shared by every container of manager
/// `manager_name`: `<manager name>-machine-`.
pub fn container_prefix(manager_name: &str) -> String {
    format!("{manager_name}-machine-")
}

/// Prepares the host to run a backend.
pub trait Initialiser: Send + Sync {
    /// Makes the host able to run this backend: packages, daemons, bridge,
    /// storage and kernel features. Idempotent: on a ready host it changes
    /// nothing and succeeds.
    fn initialise(&self) -> Result<()>;
}
