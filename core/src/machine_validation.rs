//! The rules a [`MachineConfig`] must meet before a machine is created.

use crate::error::InvalidValue;
use crate::machine::MachineConfig;

/// Returns every rule `config` breaks, in field order.
pub(crate) fn problems(config: &MachineConfig) -> Vec<InvalidValue> {
    let mut problems = Vec::new();
    if let Err(error) = crate::names::validate_machine_id(&config.machine_id) {
        problems.push(error);
    }
    problems
}
