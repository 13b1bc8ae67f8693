//! The backend-neutral contract of berth.
//!
//! A machine agent hosts containers through a [`Manager`]: it creates a
//! container for a machine's configuration, destroys it and lists the
//! containers the manager started. An [`Initialiser`] prepares the host for a
//! backend. Everything here is pure logic or plain file system work: no
//! backend library is linked, so the rules can be tested on any machine.

pub mod config;
pub mod dirs;
pub mod error;
pub mod hardware;
pub mod instance;
pub mod machine;
mod machine_validation;
pub mod manager;
pub mod names;
pub mod network;
pub mod pending;
pub mod progress;
pub mod quoting;
pub mod userdata;

pub use config::ManagerConfig;
pub use dirs::{ContainerDirs, write_cloud_init_file};
pub use error::{Error, InvalidValue, Result};
pub use hardware::HardwareCharacteristics;
pub use instance::{Instance, InstanceId, InstanceStatus};
pub use machine::{Constraints, MachineConfig};
pub use manager::{Initialiser, Manager};
pub use names::{
    container_name, is_container_of, machine_tag, validate_container_name, validate_manager_name,
};
pub use network::{MacAddress, NetworkConfig, NetworkKind};
pub use pending::{CreateGuard, HalfMade};
pub use progress::{NoProgress, Progress, ProgressEvent, Step};
pub use quoting::shell_quote;
pub use userdata::{
    render_user_data, render_user_data_for_host, write_user_data, write_user_data_for_host,
};
