//! cloud-init user data for a new machine.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::machine::MachineConfig;

/// Renders the cloud-config user data of `machine`.
pub fn render_user_data(machine: &MachineConfig) -> Result<Vec<u8>> {
    let _ = machine;
    todo!("user data rendering")
}

/// Renders the user data of `machine` and writes it to `<dir>/cloud-init`
/// with [`crate::write_cloud_init_file`]. Returns the path written.
pub fn write_user_data(machine: &MachineConfig, dir: &Path) -> Result<PathBuf> {
    let data = render_user_data(machine)?;
    crate::dirs::write_cloud_init_file(dir, &data)
}
